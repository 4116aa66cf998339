"""Design matrices for the models: which rows (a stable split), which columns, and tag profiles.

A model consumes a `DesignSpec`: columns of the feature table plus, optionally, a `TagProfile`
that folds the interest-tag matrix (one column per tag, over ten thousand) into a few dense
components. Trees cannot use a sparse tag one at a time well (each tag is held by few users),
while a persona shows as a direction in tag space: a truncated SVD of the row-normalised tag
matrix (latent semantic analysis, Deerwester et al. 1990) recovers those directions, and the
fused model ranks better with them. The components are fitted on training rows only and saved
with the model, so scoring projects new tags the same way.

The split is a pure function of (customer_id, seed): the same customer lands in the same split
for the in-bank, fused, rescue and uplift models, so none of them is judged on rows another one
trained on, and a re-run on a grown base keeps old customers where they were.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from contracts.errors import ConfigError
from contracts.taxonomy import load_taxonomy
from fusion.features import FeatureManifest, FeatureSet

__all__ = [
    "TEST",
    "TRAIN",
    "VALID",
    "DesignSpec",
    "TagProfile",
    "design_matrix",
    "feature_labels",
    "fit_tag_profile",
    "split_customers",
]

TRAIN, VALID, TEST = 0, 1, 2
F32 = np.ndarray[Any, np.dtype[np.float32]]
I8 = np.ndarray[Any, np.dtype[np.int8]]

# The bank's data dictionary in words a marketer reads; columns it does not name fall back to
# the feature manifest's description, then to the column name with spaces.
BANK_LABELS: dict[str, str] = {
    "age": "age", "gender": "gender", "marital": "marital status", "education": "education",
    "job": "occupation", "city_tier": "city tier", "household_size": "household size",
    "has_children": "has children", "is_local_resident": "local resident",
    "annual_income": "annual income", "tenure_months": "months as a customer",
    "customer_level": "customer level", "n_products": "products held",
    "ukey_holder": "holds a U-key", "online_banking": "uses online banking",
    "payroll": "salary paid here", "credit_card": "has a credit card",
    "credit_card_limit": "credit card limit", "n_debit_cards": "debit cards",
    "wechat_bound": "WeChat banking bound", "sms_alerts": "SMS alerts on",
    "has_relationship_manager": "has a relationship manager",
    "months_since_contact": "months since last contact", "complaints_12m": "complaints (12m)",
    "social_security_card": "social security card", "aum_current": "assets under management",
    "aum_month_avg": "AUM, month average", "aum_year_avg": "AUM, year average",
    "aum_max_12m": "AUM, 12-month high", "demand_deposit": "demand deposits",
    "time_deposit": "time deposits", "time_deposit_count": "time deposits held",
    "wealth_mgmt": "wealth management holdings", "wealth_ratio": "wealth management share",
    "funds": "funds", "insurance": "insurance", "bonds": "bonds",
    "precious_metals": "precious metals", "loan_balance": "loan balance",
    "mortgage_balance": "mortgage balance", "consumer_loan_balance": "consumer loan balance",
    "credit_card_balance": "credit card balance", "n_loans": "loans",
    "txn_count_3m": "transactions (3m)", "txn_amount_3m": "transaction amount (3m)",
    "active_months_12m": "active months (12m)", "salary_amount_3m": "salary received (3m)",
}  # fmt: skip


def split_customers(
    customer_id: np.ndarray[Any, Any], *, seed: int, valid: float = 0.1, test: float = 0.3
) -> I8:
    """Return TRAIN / VALID / TEST (0, 1, 2) per customer, a pure function of (id, seed).

    Uses the splitmix64 finaliser (Steele et al. 2014) on id xor a seed-derived constant, so the
    split is uniform, vectorised and independent of row order.
    """
    if not (0 <= valid < 1 and 0 < test < 1 and valid + test < 1):
        raise ConfigError(
            f"split shares must satisfy 0 <= valid, 0 < test and valid + test < 1; got "
            f"valid={valid}, test={test}",
            setting="split",
        )
    with np.errstate(over="ignore"):
        z = np.asarray(customer_id).astype(np.uint64) ^ np.uint64(
            (0x9E3779B97F4A7C15 * (seed + 1)) & 0xFFFFFFFFFFFFFFFF
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    out = np.full(u.shape, TRAIN, dtype=np.int8)
    out[u >= 1.0 - test - valid] = VALID
    out[u >= 1.0 - test] = TEST
    return out


@dataclass(frozen=True)
class TagProfile:
    """Dense interest components of the tag matrix: a truncated SVD fitted on training rows."""

    tag_ids: np.ndarray[Any, np.dtype[np.int32]]  # row j of `components` belongs to tag_ids[j]
    components: F32  # (n_tags, k): projection of a row-normalised tag vector
    labels: tuple[str, ...]  # per component: the tags that weigh most in it
    numbers: tuple[int, ...] = ()  # component numbers (1 = largest singular value); () = 1..k

    @property
    def names(self) -> list[str]:
        numbers = self.numbers or tuple(range(1, self.components.shape[1] + 1))
        return [f"tag_profile_{i:02d}" for i in numbers]

    def subset(self, keep: Sequence[str]) -> TagProfile | None:
        """Return the profile with only the components named in `keep` (None when none is)."""
        wanted = set(keep)
        index = [j for j, name in enumerate(self.names) if name in wanted]
        if not index:
            return None
        numbers = self.numbers or tuple(range(1, self.components.shape[1] + 1))
        return TagProfile(
            self.tag_ids,
            np.ascontiguousarray(self.components[:, index]),
            tuple(self.labels[j] for j in index),
            tuple(numbers[j] for j in index),
        )

    @classmethod
    def fit(
        cls,
        tags: sp.csr_matrix,
        tag_ids: np.ndarray[Any, Any],
        *,
        k: int = 24,
        seed: int = 0,
        tag_names: Mapping[int, str] | None = None,
    ) -> TagProfile:
        """Return the profile fitted on `tags` (rows without tags are ignored)."""
        normal = _row_normalised(tags)
        held = np.flatnonzero(np.diff(normal.indptr) > 0)
        if k < 1 or len(held) <= k or normal.shape[1] <= k:
            raise ConfigError(
                f"a tag profile of {k} components needs more than {k} customers with tags and "
                f"more than {k} tag columns; got {len(held)} and {normal.shape[1]}. Lower k or "
                "train on more customers.",
                setting="tag_profile_k",
            )
        rng = np.random.default_rng(seed)
        v0 = rng.standard_normal(min(normal[held].shape))
        _, s, vt = svds(normal[held].astype(np.float64), k=k, v0=v0, random_state=seed)
        order = np.argsort(-s, kind="stable")
        components = vt[order].T.astype(np.float32)
        # An SVD's signs are arbitrary: point each component at its heaviest tag, so a profile
        # value grows with the interests its label names.
        flip = np.sign(components[np.abs(components).argmax(axis=0), np.arange(k)])
        components *= np.where(flip == 0, 1, flip).astype(np.float32)
        ids = np.asarray(tag_ids, dtype=np.int32)
        names = tag_names or {}
        labels = tuple(
            "interests like " + ", ".join(names.get(int(ids[j]), f"tag {int(ids[j])}") for j in top)
            for top in np.argsort(-components, axis=0, kind="stable")[:3].T
        )
        return cls(ids, components, labels)

    def transform(self, tags: sp.csr_matrix, tag_ids: np.ndarray[Any, Any]) -> F32:
        """Return the (rows, k) components of `tags`; NaN for rows without tags (no data)."""
        ids = np.asarray(tag_ids)
        if not np.array_equal(ids, self.tag_ids):
            # Another taxonomy build: align by tag id, unknown tags drop out.
            position = {int(t): j for j, t in enumerate(self.tag_ids)}
            target = np.array([position.get(int(t), -1) for t in ids], dtype=np.int64)
            keep = target >= 0
            select = sp.csr_matrix(
                (np.ones(int(keep.sum()), np.float32), (np.flatnonzero(keep), target[keep])),
                shape=(len(ids), len(self.tag_ids)),
            )
            tags = (tags @ select).tocsr()
        # Projecting first and dividing each row by its norm after is the projection of the
        # normalised rows (to float rounding), without building a scaled copy of the tag matrix.
        matrix = sp.csr_matrix(tags, dtype=np.float32)
        norms = _row_norms(matrix)
        out = np.asarray(matrix @ self.components, dtype=np.float32)
        held = norms > 0
        out[held] /= norms[held, None]
        out[~held] = np.nan
        return out

    def to_bytes(self) -> bytes:
        """Return the profile as an .npz document (no pickles)."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            tag_ids=self.tag_ids,
            components=self.components,
            labels=np.array(self.labels, dtype=np.str_),
            numbers=np.array(self.numbers, dtype=np.int32),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TagProfile:
        with np.load(io.BytesIO(data), allow_pickle=False) as saved:
            return cls(
                saved["tag_ids"].astype(np.int32),
                saved["components"].astype(np.float32),
                tuple(str(x) for x in saved["labels"]),
                tuple(int(x) for x in saved["numbers"]),
            )


def fit_tag_profile(
    features: FeatureSet, rows: np.ndarray[Any, Any], *, k: int, seed: int
) -> TagProfile:
    """Return the tag profile of `k` components fitted on `rows`, labelled with the tags' names."""
    names = dict(
        load_taxonomy(features.manifest.taxonomy_version).tags.select("tag_id", "name").iter_rows()
    )
    return TagProfile.fit(features.tags[rows], features.tag_ids, k=k, seed=seed, tag_names=names)


def _row_norms(matrix: sp.csr_matrix) -> F32:
    """Return the Euclidean norm of each row of `matrix` (0 for an empty row)."""
    held = np.flatnonzero(np.diff(matrix.indptr))
    squares = np.zeros(matrix.shape[0], dtype=np.float64)
    if len(held):
        data = np.square(matrix.data[: matrix.indptr[-1]], dtype=np.float64)
        # reduceat over the non-empty rows' starts: each sum runs to the next held row's start,
        # which is where the row ends, since the empty rows between them start there too.
        squares[held] = np.add.reduceat(data, matrix.indptr[held])
    return np.sqrt(squares).astype(np.float32)


def _row_normalised(tags: sp.csr_matrix) -> sp.csr_matrix:
    matrix = sp.csr_matrix(tags, dtype=np.float32)
    norms = _row_norms(matrix)
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    data = matrix.data[: matrix.indptr[-1]] * np.repeat(scale, np.diff(matrix.indptr))
    return sp.csr_matrix((data, matrix.indices[: len(data)], matrix.indptr), shape=matrix.shape)


@dataclass(frozen=True)
class DesignSpec:
    """What a model reads: feature-table columns, then the tag profile's components if any."""

    columns: tuple[str, ...]
    tag_profile: TagProfile | None = None

    @property
    def names(self) -> list[str]:
        profile = self.tag_profile.names if self.tag_profile is not None else []
        return [*self.columns, *profile]

    def select(self, keep: Sequence[str]) -> DesignSpec:
        """Return the spec restricted to `keep`, in the spec's own order."""
        wanted = set(keep)
        profile = None if self.tag_profile is None else self.tag_profile.subset(keep)
        return DesignSpec(tuple(c for c in self.columns if c in wanted), profile)


def design_matrix(features: FeatureSet, spec: DesignSpec, rows: Any = None) -> F32:
    """Return the float32 matrix of `spec` over `rows` of `features` (all rows when None).

    Nulls become NaN, which xgboost treats as missing: "no vendor data" is not "zero usage".
    """
    missing = [c for c in spec.columns if c not in features.table.columns]
    if missing:
        raise ConfigError(
            f"the feature table lacks {len(missing)} column(s) the model needs "
            f"({', '.join(missing[:5])}); rebuild features with the model's taxonomy and "
            "snapshot settings, or retrain",
            setting="features",
        )
    table = features.table if rows is None else features.table[rows]
    dense = table.select(pl.col(c).cast(pl.Float32) for c in spec.columns).to_numpy()
    if spec.tag_profile is None:
        return np.ascontiguousarray(dense, dtype=np.float32)
    tags = features.tags if rows is None else features.tags[rows]
    profile = spec.tag_profile.transform(tags, features.tag_ids)
    # Row-major, as xgboost reads it fastest; filled in place rather than stacked and copied.
    out = np.empty((table.height, len(spec.columns) + profile.shape[1]), dtype=np.float32)
    out[:, : len(spec.columns)] = dense
    out[:, len(spec.columns) :] = profile
    return out


def feature_labels(manifest: FeatureManifest, spec: DesignSpec) -> dict[str, str]:
    """Return a marketer-readable label for every input of `spec`."""
    described = {c.name: c.description for c in manifest.columns}
    labels: dict[str, str] = {}
    for name in spec.columns:
        text = described.get(name, "")
        if name in BANK_LABELS:
            labels[name] = BANK_LABELS[name]
        elif text and not text.startswith(("code of", "1 = ")):
            labels[name] = text.split(" (null", 1)[0]
        else:
            labels[name] = name.replace("_", " ")
    if spec.tag_profile is not None:
        labels.update(zip(spec.tag_profile.names, spec.tag_profile.labels, strict=True))
    return labels

"""Data contracts as great-expectations 1.x suites, and the quarantine report they produce.

GX validates pandas frames (it has no polars support and its SQL path fails on DuckDB), and it
has no expectation over the elements of a LIST column. So each contract first derives, in polars
(vectorised), one plain column per row-level fact - "key is 32 bytes", "every app id exists in the
taxonomy version", "app lists are aligned" - and GX runs its suite over that derived frame. The
derived frame never holds a raw identifier: batch keys are already hashes, and the bank extract's
phones and ID numbers enter only as reject reason flags.

The report names each failed rule, how many rows break it and a few example row numbers, and
never a value: `ContractReport.to_dict()` is what the ledger stores and the vendor sees.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import polars as pl

from contracts.errors import ContractError
from contracts.schemas import (
    BANK_EXTRACT,
    IDENTIFIER_TYPES,
    VENDOR_BATCH,
    VENDOR_BATCH_V2,
    VENDOR_OPRF_BATCH,
    VENDOR_OPRF_BATCH_V2,
    TableSchema,
)
from contracts.taxonomy import Taxonomy

__all__ = [
    "ContractReport",
    "RuleResult",
    "validate_bank_extract",
    "validate_vendor_batch",
    "validate_vendor_oprf_batch",
]

log = logging.getLogger(__name__)
EXAMPLE_ROWS = 5


@dataclass(frozen=True, slots=True)
class RuleResult:
    """The outcome of one contract rule: never a value, only counts and row numbers."""

    rule: str
    description: str
    passed: bool
    failed_rows: int
    example_rows: tuple[int, ...] = ()
    observed: float | int | None = None


@dataclass(frozen=True)
class ContractReport:
    """Every rule's outcome for one frame; `passed` only if all rules passed."""

    contract: str
    rows: int
    rules: tuple[RuleResult, ...]
    batch_id: str | None = None
    engine: str = "great_expectations"
    failed: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "failed", tuple(r.rule for r in self.rules if not r.passed))

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "contract": self.contract,
            "batch_id": self.batch_id,
            "rows": self.rows,
            "passed": self.passed,
            "failed": list(self.failed),
            "rules": [asdict(r) for r in self.rules],
        }

    def summary(self) -> str:
        """Return one line per failed rule, readable by the vendor's engineers."""
        if self.passed:
            return f"{self.contract}: all {len(self.rules)} rules passed on {self.rows:,} rows"
        lines = [f"{self.contract}: {len(self.failed)} of {len(self.rules)} rules failed"]
        for r in self.rules:
            if not r.passed:
                rows = ", ".join(str(i) for i in r.example_rows)
                lines.append(
                    f"- {r.rule}: {r.description}; {r.failed_rows:,} rows"
                    + (f" (e.g. rows {rows})" if rows else "")
                    + (f"; observed {r.observed}" if r.observed is not None else "")
                )
        return "\n".join(lines)

    def raise_if_failed(
        self, fix: str = "fix these rows at the source and send a new batch_id"
    ) -> None:
        """Raise ContractError with the failed rules and `fix`, what the sender should do."""
        if not self.passed:
            raise ContractError(
                f"{self.summary()}\n{fix[:1].upper()}{fix[1:]}",
                contract=self.contract,
                rules=self.failed,
                report=self,
                batch_id=self.batch_id,
            )


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    description: str
    build: Callable[[Any], Any]  # gx.expectations module -> Expectation


@cache
def _gx_context() -> Any:
    """Return an in-memory GX context with analytics and progress bars off (imported lazily)."""
    # GX phones home unless told not to; this platform reaches nothing beyond 127.0.0.1.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    with warnings.catch_warnings():
        # GX 1.x imports the deprecated `sre_constants`; that is its business, not a finding.
        warnings.simplefilter("ignore", DeprecationWarning)
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    context.data_sources.add_pandas("contracts")
    return context


def _run_suite(
    contract: str, derived: pl.DataFrame, rules: Sequence[_Rule], batch_id: str | None
) -> ContractReport:
    context = _gx_context()  # first: it imports GX with its import-time warnings silenced
    import great_expectations as gx
    import great_expectations.expectations as gxe

    source = context.data_sources.get("contracts")
    asset_name = contract.replace("/", "_")
    try:
        asset = source.get_asset(asset_name)
    except LookupError:
        asset = source.add_dataframe_asset(name=asset_name)
    definition = next(
        (d for d in asset.batch_definitions if d.name == "whole"), None
    ) or asset.add_batch_definition_whole_dataframe("whole")
    suite = gx.ExpectationSuite(name=asset_name)
    for rule in rules:
        suite.add_expectation(rule.build(gxe))
    batch = definition.get_batch(batch_parameters={"dataframe": derived.to_pandas()})
    outcome = batch.validate(
        suite,
        result_format={"result_format": "COMPLETE", "partial_unexpected_count": 0},
    )
    results = []
    for rule, res in zip(rules, outcome.results, strict=True):
        detail = res.result or {}
        index = detail.get("unexpected_index_list") or []
        observed = detail.get("observed_value")
        results.append(
            RuleResult(
                rule=rule.name,
                description=rule.description,
                passed=bool(res.success),
                failed_rows=int(
                    detail.get("unexpected_count", 0 if res.success else derived.height)
                ),
                example_rows=tuple(int(i) for i in index[:EXAMPLE_ROWS]),
                observed=observed if isinstance(observed, int | float) else None,
            )
        )
    return ContractReport(
        contract=contract, rows=derived.height, rules=tuple(results), batch_id=batch_id
    )


def _schema_report(
    schema: TableSchema, frame: pl.DataFrame, batch_id: str | None
) -> ContractReport | None:
    try:
        schema.check(frame, batch_id=batch_id)
    except ContractError as error:
        rule = RuleResult(
            rule="schema",
            description=str(error).split(". ")[0],
            passed=False,
            failed_rows=frame.height,
        )
        return ContractReport(
            contract=schema.contract, rows=frame.height, rules=(rule,), batch_id=batch_id
        )
    return None


def _all_in(column: str, known: pl.Series) -> pl.Expr:
    return pl.col(column).list.eval(pl.element().is_in(known.implode())).list.all()


def _aligned(first: str, *others: str) -> pl.Expr:
    n = pl.col(first).list.len()
    return pl.all_horizontal([pl.col(o).list.len() == n for o in others])


def _no_null_elements(*columns: str) -> pl.Expr:
    return pl.all_horizontal(
        [
            pl.col(c).is_not_null()
            & (pl.col(c).list.eval(pl.element().is_null()).list.any().not_())
            for c in columns
        ]
    )


KEY_BYTES = 32


def _key_shape(column: str, width: int) -> pl.Expr:
    """Return whether a row's key is one `width`-byte key or a composite of one per identifier
    type, of the same length as the batch's first row (one layout per batch)."""
    size = pl.col(column).bin.size()
    return size.is_in([width, len(IDENTIFIER_TYPES) * width]) & (size == size.first())


def _identifier_keys_unique(column: str, width: int) -> pl.Expr:
    """Return whether each of a row's identifier keys is unique among the batch's keys of its
    type: a key two rows share would link one customer to two vendor users."""
    # A single key (the mobile number's alone) is `key_unique`'s to check.
    single = pl.col(column).bin.size() == width
    slots = [pl.col(column).bin.slice(i * width, width) for i in range(len(IDENTIFIER_TYPES))]
    return pl.all_horizontal(single | ~slot.is_duplicated() for slot in slots)


def _is_composite(batch: pl.DataFrame, column: str, width: int) -> bool:
    return batch.height > 0 and batch[column].bin.size().max() == len(IDENTIFIER_TYPES) * width


def _is_true(column: str) -> Callable[[Any], Any]:
    return lambda gxe: gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[True])


def _row_count(expected_rows: int) -> _Rule:
    return _Rule(
        "row_count",
        f"row count equals the manifest's {expected_rows:,}",
        lambda gxe: gxe.ExpectTableRowCountToEqual(value=expected_rows),
    )


def validate_vendor_batch(
    batch: pl.DataFrame,
    *,
    taxonomy: Taxonomy,
    expected_rows: int,
    batch_id: str | None = None,
    key_bytes: int = KEY_BYTES,
) -> ContractReport:
    """Return the vendor-batch contract report (schema first, then the GX suite).

    Rules: key present, 32 bytes (version 2: 96, one keyed hash per identifier type) and unique
    within the batch, each identifier's key unique among its type's; every app and tag id exists
    in the batch's taxonomy version; list columns aligned and without nulls; active days in
    1..30, sessions >= 0, tag weights in (0, 1], tags distinct per row; row count equals the
    manifest. `key_bytes` is 16 for the rows the bank opened in the OPRF mode, keyed by their
    labels.
    """
    slots = len(IDENTIFIER_TYPES)
    key_rule = (
        f"key is a 32-byte keyed hash, or {slots} (one per identifier type)"
        if key_bytes == KEY_BYTES
        else f"key is a {key_bytes}-byte OPRF label, or {slots} (one per identifier type)"
    )
    failed_schema = _schema_report(VENDOR_BATCH, batch, batch_id)
    if failed_schema is not None:
        return failed_schema
    apps, tags = taxonomy.apps["app_id"], taxonomy.tags["tag_id"]
    facts = {
        "key_not_null": pl.col("key").is_not_null(),
        "key_32_bytes": _key_shape("key", key_bytes),
        "key_unique": ~pl.col("key").is_duplicated(),
        "identifier_keys_unique": _identifier_keys_unique("key", key_bytes),
        "no_nulls": _no_null_elements(
            "app_ids", "app_days", "app_sessions", "tag_ids", "tag_weights"
        ),
        "apps_aligned": _aligned("app_ids", "app_days", "app_sessions"),
        "tags_aligned": _aligned("tag_ids", "tag_weights"),
        "apps_known": _all_in("app_ids", apps),
        "tags_known": _all_in("tag_ids", tags),
        "days_in_range": (pl.col("app_days").list.min() >= 1)
        & (pl.col("app_days").list.max() <= 30),
        "sessions_in_range": pl.col("app_sessions").list.min() >= 0,
        "weights_in_range": (pl.col("tag_weights").list.min() > 0)
        & (pl.col("tag_weights").list.max() <= 1),
        "tags_distinct": pl.col("tag_ids").list.n_unique() == pl.col("tag_ids").list.len(),
    }
    # Facts are computed in polars (GX has no list expectations); GX then checks each fact holds.
    # An empty list has no min/max (null) and breaks no range rule, so a null fact counts as kept;
    # missing lists are caught by `no_nulls`.
    derived = batch.select(expr.fill_null(True).alias(name) for name, expr in facts.items())
    rules = [
        _Rule("key_not_null", "key is present", _is_true("key_not_null")),
        _Rule("key_32_bytes", key_rule, _is_true("key_32_bytes")),
        _Rule("key_unique", "key is unique within the batch", _is_true("key_unique")),
        _Rule(
            "identifier_keys_unique",
            "each identifier's key is unique among the batch's keys of its type",
            _is_true("identifier_keys_unique"),
        ),
        _Rule("no_nulls", "no list or list element is null", _is_true("no_nulls")),
        _Rule(
            "apps_aligned",
            "app_ids, app_days and app_sessions have equal lengths",
            _is_true("apps_aligned"),
        ),
        _Rule(
            "tags_aligned", "tag_ids and tag_weights have equal lengths", _is_true("tags_aligned")
        ),
        _Rule(
            "apps_known",
            f"every app id exists in taxonomy {taxonomy.version}",
            _is_true("apps_known"),
        ),
        _Rule(
            "tags_known",
            f"every tag id exists in taxonomy {taxonomy.version}",
            _is_true("tags_known"),
        ),
        _Rule("days_in_range", "active days are within 1..30", _is_true("days_in_range")),
        _Rule("sessions_in_range", "sessions are >= 0", _is_true("sessions_in_range")),
        _Rule("weights_in_range", "tag weights are within (0, 1]", _is_true("weights_in_range")),
        _Rule("tags_distinct", "a row lists each tag once", _is_true("tags_distinct")),
        _row_count(expected_rows),
    ]
    contract = (
        VENDOR_BATCH_V2 if _is_composite(batch, "key", key_bytes) else VENDOR_BATCH
    ).contract
    return _run_suite(contract, derived, rules, batch_id)


LABEL_BYTES = 16
# nonce (12) + GCM tag (16) + the smallest payload (layout header, 5 bytes: no app, no tag), and
# the largest (65535 apps of 10 bytes and 65535 tags of 8): matcher/oprf_match.py's layout v1.
SEALED_MIN_BYTES = 12 + 16 + 5
SEALED_MAX_BYTES = SEALED_MIN_BYTES + 0xFFFF * (10 + 8)
# Version 2 rows start with the row key wrapped under each identifier's key: nonce (12), the
# 32-byte key and its GCM tag (16), per identifier type.
WRAPPED_KEY_BYTES = 12 + 32 + 16


def validate_vendor_oprf_batch(
    batch: pl.DataFrame, *, expected_rows: int, batch_id: str | None = None
) -> ContractReport:
    """Return the OPRF vendor-batch contract report (schema first, then the GX suite).

    Rules: label present, 16 bytes (version 2: 48, one per identifier type) and unique within
    the batch, each identifier's label unique among its type's (two rows under one label would
    let one evaluation open both); sealed row present and of a size the payload layout allows
    (version 2: with the wrapped row keys first); row count equals the manifest. The lists
    inside are checked when the bank opens its matched rows (their rules are
    `validate_vendor_batch`'s, keyed by label).
    """
    failed_schema = _schema_report(VENDOR_OPRF_BATCH, batch, batch_id)
    if failed_schema is not None:
        return failed_schema
    size = pl.col("sealed").bin.size()
    composite = _is_composite(batch, "label", LABEL_BYTES)
    wrapped = len(IDENTIFIER_TYPES) * WRAPPED_KEY_BYTES if composite else 0
    facts = {
        "label_not_null": pl.col("label").is_not_null(),
        "label_16_bytes": _key_shape("label", LABEL_BYTES),
        "label_unique": ~pl.col("label").is_duplicated(),
        "identifier_labels_unique": _identifier_keys_unique("label", LABEL_BYTES),
        "sealed_not_null": pl.col("sealed").is_not_null(),
        "sealed_size": size.is_between(SEALED_MIN_BYTES + wrapped, SEALED_MAX_BYTES + wrapped),
    }
    derived = batch.select(expr.fill_null(True).alias(name) for name, expr in facts.items())
    rules = [
        _Rule("label_not_null", "label is present", _is_true("label_not_null")),
        _Rule(
            "label_16_bytes",
            f"label is 16 bytes, or {len(IDENTIFIER_TYPES)} x 16 (one per identifier type)",
            _is_true("label_16_bytes"),
        ),
        _Rule("label_unique", "label is unique within the batch", _is_true("label_unique")),
        _Rule(
            "identifier_labels_unique",
            "each identifier's label is unique among the batch's labels of its type",
            _is_true("identifier_labels_unique"),
        ),
        _Rule("sealed_not_null", "sealed row is present", _is_true("sealed_not_null")),
        _Rule(
            "sealed_size",
            f"sealed row is {SEALED_MIN_BYTES + wrapped:,}..{SEALED_MAX_BYTES + wrapped:,} bytes "
            "(wrapped row keys, nonce, payload, tag)",
            _is_true("sealed_size"),
        ),
        _row_count(expected_rows),
    ]
    contract = (VENDOR_OPRF_BATCH_V2 if composite else VENDOR_OPRF_BATCH).contract
    return _run_suite(contract, derived, rules, batch_id)


def validate_bank_extract(
    extract: pl.DataFrame,
    *,
    phone_reasons: pl.Series,
    max_invalid_phone_share: float = 0.05,
    batch_id: str | None = None,
) -> ContractReport:
    """Return the bank-extract contract report (schema first, then the GX suite).

    Args:
        extract: the bank's customer extract.
        phone_reasons: the reject reason per row from `matcher.identity.normalize_phones`
            (null = valid); the raw phones themselves never reach the suite.
        max_invalid_phone_share: above this share of unusable phones the extract is broken.

    Rules: customer_id present and unique; branch present; age 18..110; mobile-banking flag
    present; every amount, balance, count and deposit column non-negative; unusable phones under
    the given share.
    """
    failed_schema = _schema_report(BANK_EXTRACT, extract, batch_id)
    if failed_schema is not None:
        return failed_schema
    if len(phone_reasons) != extract.height:
        raise ContractError(
            f"phone_reasons has {len(phone_reasons):,} rows, the extract {extract.height:,}; "
            "pass the reasons computed from this extract's phone column",
            contract=BANK_EXTRACT.contract,
        )
    amounts = [
        c
        for c, t in extract.schema.items()
        if t.is_numeric() and any(w in c for w in _NON_NEGATIVE_WORDS)
    ]
    derived = extract.select(
        "customer_id",
        "branch_id",
        "age",
        "mb_registered",
        (
            pl.all_horizontal([pl.col(c).fill_null(0) >= 0 for c in amounts])
            if amounts
            else pl.lit(True)
        ).alias("amounts_non_negative"),
    ).with_columns(phone_invalid=phone_reasons.is_not_null().cast(pl.Float64))
    rules = _bank_extract_rules(
        amounts=len(amounts), max_invalid_phone_share=max_invalid_phone_share
    )
    return _run_suite(BANK_EXTRACT.contract, derived, rules, batch_id)


_NON_NEGATIVE_WORDS = ("aum", "amount", "amt", "balance", "deposit", "count", "cnt", "tenure", "n_")


def _bank_extract_rules(*, amounts: int, max_invalid_phone_share: float) -> list[_Rule]:
    """Return the bank extract's GX rules over its derived frame (`amounts` columns checked)."""
    return [
        _Rule(
            "customer_id_not_null",
            "customer_id is present",
            lambda gxe: gxe.ExpectColumnValuesToNotBeNull(column="customer_id"),
        ),
        _Rule(
            "customer_id_unique",
            "customer_id is unique",
            lambda gxe: gxe.ExpectColumnValuesToBeUnique(column="customer_id"),
        ),
        _Rule(
            "branch_not_null",
            "branch_id is present",
            lambda gxe: gxe.ExpectColumnValuesToNotBeNull(column="branch_id"),
        ),
        _Rule(
            "age_in_range",
            "age is within 18..110",
            lambda gxe: gxe.ExpectColumnValuesToBeBetween(
                column="age", min_value=18, max_value=110
            ),
        ),
        _Rule(
            "mb_flag_not_null",
            "mb_registered is present",
            lambda gxe: gxe.ExpectColumnValuesToNotBeNull(column="mb_registered"),
        ),
        _Rule(
            "amounts_non_negative",
            f"{amounts} amount/balance/count columns are >= 0",
            _is_true("amounts_non_negative"),
        ),
        _Rule(
            "phones_usable",
            f"at most {max_invalid_phone_share:.0%} of phones fail normalisation",
            lambda gxe: gxe.ExpectColumnMeanToBeBetween(
                column="phone_invalid", min_value=0.0, max_value=max_invalid_phone_share
            ),
        ),
    ]

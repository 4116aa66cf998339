"""Scenarios: one model per business objective, each declared with its label and population.

A scenario names its label (a column of the bank's outcome file, a column of the feature
table, or the outcome of a campaign), the population the model is for (conditions on feature
columns, all of which must hold) and the model kind (response or uplift). A bank declares its
own in TOML or JSON; the built-in ones are the demo's:

    [[scenario]]
    name = "credit-card"
    description = "debit-card holders without a credit card who take one"
    kind = "response"
    label = { source = "outcome", column = "took_credit_card" }
    population = [{ column = "credit_card", op = "==", value = 0 }]

A response scenario trains two models on the same rows, in-bank features only and fused, and
registers them as `<model>` and `<model>-in-bank` (model defaults to the name); an uplift one
learns from a campaign (the past A/B file, or a closed campaign of the platform's own).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.errors import ConfigError
from fusion.campaigns.declaration import NAME_PATTERN
from fusion.features import FeatureSet

__all__ = [
    "BUILT_IN",
    "CampaignLabel",
    "Condition",
    "FeatureLabel",
    "OutcomeLabel",
    "Scenario",
    "load_scenarios",
    "scenario_label",
]

_COLUMN = r"^[a-z][a-z0-9_]{0,63}$"
_OPS = {
    "==": pl.Expr.eq, "!=": pl.Expr.ne, "<": pl.Expr.lt, "<=": pl.Expr.le, ">": pl.Expr.gt,
    ">=": pl.Expr.ge,
}  # fmt: skip


class _Declared(BaseModel):
    """Frozen, no unknown keys, no silent coercion of strings to numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Condition(_Declared):
    """One condition on a feature column; a missing value never satisfies it."""

    column: str = Field(pattern=_COLUMN, description="a feature-table column")
    op: Literal["==", "!=", "<", "<=", ">", ">="]
    value: float = Field(allow_inf_nan=False)

    def expression(self) -> pl.Expr:
        return _OPS[self.op](pl.col(self.column), self.value).fill_null(False)


class OutcomeLabel(_Declared):
    """A 0/1 column of the bank's outcome file (customer_id + outcomes; null: unknown)."""

    source: Literal["outcome"]
    column: str = Field(pattern=_COLUMN)


class FeatureLabel(_Declared):
    """A 0/1 column of the feature table itself (the extract's label, e.g. opened_mb)."""

    source: Literal["feature"]
    column: str = Field(pattern=_COLUMN)


class CampaignLabel(_Declared):
    """A campaign's outcome: the past A/B file (campaign left out) or a closed campaign."""

    source: Literal["campaign"]
    campaign: str | None = Field(None, pattern=NAME_PATTERN)
    event: Literal["responded", "converted"] = "responded"


class Scenario(_Declared):
    """One business objective: its label, population and model kind."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,40}$")
    description: str = Field("", max_length=500)
    kind: Literal["response", "uplift"] = "response"
    label: Annotated[OutcomeLabel | FeatureLabel | CampaignLabel, Field(discriminator="source")]
    population: list[Condition] = Field(default_factory=list)
    model: str | None = Field(None, pattern=r"^[a-z][a-z0-9-]{1,40}$")

    @property
    def model_name(self) -> str:
        """Return the registry name of the scenario's (fused) model."""
        return self.model or self.name

    @property
    def in_bank_name(self) -> str:
        """Return the registry name of its in-bank-only model."""
        return f"{self.model_name}-in-bank"

    def population_mask(self, features: FeatureSet) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Return the feature rows the scenario's model is for (every condition holds)."""
        missing = [c.column for c in self.population if c.column not in features.table.columns]
        if missing:
            raise ConfigError(
                f"scenario {self.name}: the feature table has no column {', '.join(missing)}; "
                "name feature columns in its population",
                setting=f"{self.name}.population",
            )
        if not self.population:
            return np.ones(features.table.height, dtype=bool)
        mask = pl.all_horizontal([c.expression() for c in self.population])
        return features.table.select(mask.alias("m"))["m"].to_numpy().astype(bool)


def _outcome(name: str, column: str, description: str, *conditions: Condition) -> Scenario:
    return Scenario(
        name=name,
        description=description,
        label=OutcomeLabel(source="outcome", column=column),
        population=list(conditions),
    )


BUILT_IN: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="mobile-banking",
            description="customers not yet on mobile banking who open it (the acquisition model)",
            label=FeatureLabel(source="feature", column="opened_mb"),
            population=[Condition(column="mb_registered", op="==", value=0)],
            model="acquisition",
        ),
        _outcome(
            "mb-activation",
            "activated_mb",
            "customers registered on mobile banking who become active users",
            Condition(column="mb_registered", op="==", value=1),
        ),
        _outcome(
            "credit-card",
            "took_credit_card",
            "debit-card holders without a credit card who take one",
            Condition(column="credit_card", op="==", value=0),
        ),
        _outcome("aum-growth", "aum_grew", "customers whose assets grow by a fifth or more"),
        Scenario(
            name="food-coupon",
            description="who uses the food-delivery coupon because of the offer (uplift)",
            kind="uplift",
            label=CampaignLabel(source="campaign"),
            model="uplift",
        ),
    )
}


def load_scenarios(source: Path | str | Mapping[str, Any] | None = None) -> dict[str, Scenario]:
    """Return the built-in scenarios, with those a TOML/JSON file or document declares added.

    A declared scenario of a built-in's name replaces it. ConfigError names the first invalid
    field (`scenario[i].field`) and what arrived.
    """
    found = dict(BUILT_IN)
    if source is None:
        return found
    document = _document(source)
    declared = document.get("scenario", [])
    if not isinstance(declared, list):
        raise ConfigError("expected [[scenario]] tables (a list)", setting="scenario")
    for i, item in enumerate(declared):
        try:
            scenario = Scenario.model_validate(item)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(
                f"scenario[{i}].{where}: {first['msg']}; see docs/models.md for the fields",
                setting=f"scenario[{i}].{where}",
            ) from None
        found[scenario.name] = scenario
    return found


def _document(source: Path | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    try:
        text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
        stripped = text.lstrip()
        return dict(json.loads(text) if stripped.startswith("{") else tomllib.loads(text))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"cannot read the scenarios ({type(error).__name__}); give a TOML file of "
            "[[scenario]] tables or the same as JSON",
            setting="scenario",
        ) from None


def scenario_label(
    features: FeatureSet, scenario: Scenario, outcomes: pl.DataFrame | None
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Return the scenario's 0/1 label per feature row, NaN where it is unknown."""
    label = scenario.label
    if isinstance(label, CampaignLabel):
        raise ConfigError(
            f"scenario {scenario.name} learns from a campaign (uplift); train it with the "
            "campaign's outcomes, not a label column",
            setting="label",
        )
    if isinstance(label, FeatureLabel):
        column = features.table.get_column(label.column, default=None)
    else:
        if outcomes is None or label.column not in outcomes.columns:
            raise ConfigError(
                f"scenario {scenario.name} reads column {label.column} of the bank's outcome "
                "file, which was not given or lacks it; pass --outcomes PATH (customer_id and "
                "the outcome columns)",
                setting="outcomes",
            )
        column = features.table.select("customer_id").join(
            outcomes.select(pl.col("customer_id").cast(pl.Int64), label.column),
            on="customer_id", how="left", maintain_order="left",
        )[label.column]  # fmt: skip
    if column is None:
        raise ConfigError(
            f"scenario {scenario.name}: the feature table has no column {label.column}",
            setting="label",
        )
    return column.cast(pl.Float64).fill_null(np.nan).to_numpy()

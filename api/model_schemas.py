"""Request and response bodies of the model routes, named by direction (`*Create` in, `*Public`
out): the registry's versions, and a promotion or rollback with the gate's judgement."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "JudgementPublic",
    "ModelDecisionPublic",
    "ModelPromoteCreate",
    "ModelRollbackCreate",
    "ModelVersionPublic",
    "ModelVersionsPublic",
]

_VERSION = r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{10}$"


class _Strict(BaseModel):
    # Unknown fields are refused, not dropped: a misspelt field must not pass unnoticed.
    model_config = ConfigDict(extra="forbid", strict=True)


class ModelVersionPublic(_Strict):
    name: str
    version: str
    current: bool
    kind: Literal["score", "uplift"]
    snapshot_date: str
    metric: Literal["auc", "qini"]
    value: float | None = Field(description="the version's figure on its own held-out rows")


class ModelVersionsPublic(_Strict):
    versions: list[ModelVersionPublic]


class ModelPromoteCreate(_Strict):
    version: str | None = Field(
        None, pattern=_VERSION, description="the challenger (default: the newest version)"
    )
    override: bool = Field(False, description="move CURRENT even if the gate refuses")
    reason: str | None = Field(
        None, max_length=2000, description="why, in words; required (10+ characters) to override"
    )


class ModelRollbackCreate(_Strict):
    version: str | None = Field(
        None, pattern=_VERSION, description="the version to return to (default: the replaced one)"
    )
    reason: str = Field(min_length=10, max_length=2000, description="why, in words")


class JudgementPublic(_Strict):
    metric: Literal["auc", "qini"]
    method: str
    rows: int
    challenger: float | None
    champion: float | None
    diff: float | None = Field(description="challenger minus champion")
    ci_low: float | None
    ci_high: float | None
    margin: float
    passed: bool


class ModelDecisionPublic(_Strict):
    model: str
    action: Literal["promote", "rollback"]
    from_version: str | None
    to_version: str
    moved: bool
    passed: bool | None = Field(description="whether the gate passed; null: none judged")
    override: bool
    actor: str
    reason: str
    at: str
    judgement: JudgementPublic | None
    message: str

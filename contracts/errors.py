"""The platform's error hierarchy.

    FusionError                     root: catch this to catch everything the platform raises
    ├── ConfigError                 a setting or argument is wrong (also a ValueError); names it
    ├── IdentifierError             an identifier column cannot be processed (also a ValueError)
    ├── InputFileError              a file given as input is missing, a folder, empty or not the
    │                               format asked; `path` names it
    ├── KeyringError                a key is missing, unreadable or has loose file permissions
    │   └── UnknownEpochError       a salt / key epoch id the keyring does not hold
    ├── EnvelopeError               the sender misused seal() (bad manifest, missing key)
    ├── SealedLogError              a sealed log segment cannot be written or read; `path`
    ├── OprfError                   an OPRF input, blind or received element is invalid
    │   └── EvaluationCapError      an epoch's OPRF evaluation budget would be exceeded
    ├── BatchRefused                a sealed batch could not be opened; ONE detail-free refusal
    ├── ContractError               data breaks its contract; carries the quarantine report
    ├── StoreError                  the encrypted DuckDB store cannot be opened or written
    │   └── StoreLockedError        another process holds the store (writing or reading)
    ├── IngestError                 a batch cannot be ingested for a reason other than its content
    │   └── BatchConflictError      a batch_id arrived again with a different digest
    ├── ModelError                  a model artifact is missing, altered or unusable for the data
    ├── QueryError                  analyst SQL gave no result (also a ValueError); `rule` names why
    │   ├── QueryRefused            refused before anything ran; says what may be sent instead
    │   ├── QueryFailed             the checked query failed inside DuckDB
    │   └── QueryTimeout            the query ran past its time limit
    └── CampaignError               a campaign cannot do what was asked; `campaign` names it
        ├── DeclarationError        a campaign declaration is invalid (also a ValueError); `field`
        └── GateRefused             a promotion's gate does not hold; `gate` names the check

Every message says what was expected, what arrived and what to do next. None quotes a raw phone
number, ID number or key: identifiers are described by row number and reason code only. At the
privacy boundary (opening a sealed batch) every failure is the same `BatchRefused`, so a sender
learns nothing; the precise cause goes to the bank's own log through `BatchRefused.cause`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BatchConflictError",
    "BatchRefused",
    "CampaignError",
    "ConfigError",
    "ContractError",
    "DeclarationError",
    "EnvelopeError",
    "EvaluationCapError",
    "FusionError",
    "GateRefused",
    "IdentifierError",
    "IngestError",
    "InputFileError",
    "KeyringError",
    "ModelError",
    "OprfError",
    "QueryError",
    "QueryFailed",
    "QueryRefused",
    "QueryTimeout",
    "SealedLogError",
    "StoreError",
    "StoreLockedError",
    "UnknownEpochError",
]


class FusionError(Exception):
    """Root of every error the platform raises on purpose.

    Errors pickle with their fields (a Dask task's error travels to the client pickled; the
    default exception pickling calls the class with `args` alone, which fails for keyword-only
    fields such as OprfError's `item`).
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(
    cls: type[FusionError], args: tuple[object, ...], state: dict[str, object]
) -> FusionError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class ConfigError(FusionError, ValueError):
    """A setting or argument is invalid; `setting` names it."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class IdentifierError(FusionError, ValueError):
    """An identifier column cannot be normalised or hashed (wrong dtype, empty salt...)."""

    def __init__(self, message: str, *, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


class InputFileError(FusionError):
    """A file given as input is missing, a folder, empty, unreadable or not the format asked.

    `path` is the file as the caller named it; the message says what was expected there.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class KeyringError(FusionError):
    """A key is missing, unreadable, or its file is readable by others."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class UnknownEpochError(KeyringError):
    """A salt or key epoch id that the keyring does not hold."""

    def __init__(self, epoch: str, *, known: tuple[str, ...] = (), kind: str = "salt") -> None:
        listed = ", ".join(known) if known else "none"
        fix = (
            "import the epoch both parties agreed on, or re-key with the current one"
            if kind == "salt"
            else "name an epoch this vendor keyring holds, or start one (fusion vendor rotate "
            "--what oprf)"
        )
        super().__init__(
            f"{kind} epoch {epoch!r} is not in the keyring (known epochs: {listed}); {fix}"
        )
        self.epoch = epoch
        self.known = known


class EnvelopeError(FusionError):
    """The sender asked seal() for something it cannot do."""


class SealedLogError(FusionError):
    """A sealed log segment (the service's request trail) cannot be written or read: it exists
    already, it is not a segment, or a frame does not open. `path` names the file."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class OprfError(FusionError):
    """An OPRF step cannot go on: a received element or a blind is invalid, or an input is.

    `item` says what was wrong ("input", "blind", "blinded element", "evaluated element", "key",
    "rng", "batch", "argument") and `index` where in the batch (None when the whole call is).
    Messages give positions and lengths, never values: inputs are phone numbers.
    """

    def __init__(self, message: str, *, item: str, index: int | None = None) -> None:
        super().__init__(message)
        self.item = item
        self.index = index


class EvaluationCapError(OprfError):
    """The vendor refused a request: it would take the epoch past its evaluation budget.

    The budget (the bank's declared customers plus a margin) keeps the bank from evaluating
    the phone space. Nothing of the refused request was evaluated or counted.
    """

    def __init__(self, *, epoch: str, limit: int, used: int, requested: int) -> None:
        super().__init__(
            f"epoch {epoch!r} allows {limit} OPRF evaluations and {used} are used, so a request "
            f"for {requested} more is refused; the bank should send only its current customers, "
            "or agree a new epoch with the vendor declaring its true customer count",
            item="budget",
        )
        self.epoch = epoch
        self.limit = limit
        self.used = used
        self.requested = requested


class BatchRefused(FusionError):
    """A sealed batch was refused. The message is the same for every cause, on purpose.

    `cause` holds the precise reason for the bank's own log; it is never sent back to the sender.
    """

    MESSAGE = "batch refused: it could not be verified and opened with this bank's keys"

    def __init__(self, cause: str, *, batch_id: str | None = None, vendor: str | None = None):
        super().__init__(self.MESSAGE)
        self.cause = cause
        self.batch_id = batch_id
        self.vendor = vendor


class ContractError(FusionError):
    """Data broke its contract. `report` lists each failed rule, row counts and example rows."""

    def __init__(
        self,
        message: str,
        *,
        contract: str,
        rules: tuple[str, ...] = (),
        report: object = None,
        batch_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.contract = contract
        self.rules = rules
        self.report = report
        self.batch_id = batch_id


class StoreError(FusionError):
    """The encrypted DuckDB store cannot be opened, migrated or written."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class StoreLockedError(StoreError):
    """Another process holds the store, writing or reading (DuckDB allows one writer and no
    reader beside it)."""


class IngestError(FusionError):
    """A batch cannot be ingested for a reason other than its content."""

    def __init__(self, message: str, *, batch_id: str | None = None) -> None:
        super().__init__(message)
        self.batch_id = batch_id


class BatchConflictError(IngestError):
    """A batch_id that is already in the ledger arrived with a different digest."""


class ModelError(FusionError):
    """A model artifact is missing, altered, or does not fit the data it is asked to score."""

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class QueryError(FusionError, ValueError):
    """Analyst SQL gave no result; the caller's to fix (4xx). `rule` names the failed check."""

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


class QueryRefused(QueryError):
    """The SQL was refused before anything ran; `allowed` says what an analyst may send."""

    def __init__(self, detail: str, *, rule: str, allowed: str = "") -> None:
        tail = f". {allowed}" if allowed else ""
        super().__init__(f"query refused ({rule}): {detail}{tail}", rule=rule)
        self.detail = detail
        self.allowed = allowed


class QueryFailed(QueryError):
    """The checked query could not run (DuckDB's message, with the store's alias hidden)."""


class QueryTimeout(QueryError):
    """The query ran past its time limit and was interrupted."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the query ran past its limit of {seconds:g} s and was stopped; filter or aggregate "
            "earlier, join fewer rows, or ask for fewer columns",
            rule="timeout",
        )
        self.seconds = seconds


class CampaignError(FusionError):
    """A campaign cannot do what was asked (unknown, closed, nothing to deliver...)."""

    def __init__(self, message: str, *, campaign: str | None = None) -> None:
        super().__init__(message)
        self.campaign = campaign


class DeclarationError(CampaignError, ValueError):
    """A campaign declaration is invalid; `field` is the dotted path of the first bad field."""

    def __init__(self, message: str, *, field: str, campaign: str | None = None) -> None:
        super().__init__(message, campaign=campaign)
        self.field = field


class GateRefused(CampaignError):
    """A stage promotion was refused: `gate` names the check that failed, `stage` the target."""

    def __init__(self, message: str, *, campaign: str, stage: str, gate: str) -> None:
        super().__init__(message, campaign=campaign)
        self.stage = stage
        self.gate = gate

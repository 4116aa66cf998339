"""The files the two parties exchange in the OPRF mode, and the vendor's side of the exchange.

The bank sends a request (its customers' blinded elements) and the vendor returns an answer
(the same elements times its epoch key), one file each way, in this format (integers big-endian):

    magic     8 bytes   0x89 "BFOPRF" 0x0A
    kind      1 byte    1 = request (blinded elements), 2 = answer (evaluated elements)
    hlen      4 bytes   length of the header
    header    hlen      UTF-8 JSON: {"format": 1, "request_id": "<uuid4>", "epoch_id": "<id>",
                        "count": n}
    elements  32 n      ristretto255 encodings (RFC 9496), in request order

Format 1 is the base mode (RFC 9497 OPRF). Format 2 is the verifiable mode (VOPRF): the header
adds "mode": "voprf" and "proofs": k, and an answer's body goes on after its n evaluated
elements with the n blinded elements of its request, echoed (the bank checks them against the
SHA-256 it kept, instead of blinding its customers again to rebuild them), and k = ceil(n /
65536) batched DLEQ proofs of 64 bytes (`matcher.oprf.prove_blocks`); a request has k = 0.

An answer repeats its request's id, epoch, count and mode. Neither file says anything about a
customer: a blinded element is a uniformly random group element to the vendor (RFC 9497 section
7.2, obliviousness), and an evaluated one is random to anyone without the bank's blinds. Neither
file is encrypted or signed: in the base mode a tampered answer gives labels that match nothing,
which the bank sees as a match of zero, never wrong tags, because a row opens only under the key
derived with its own label; in the verifiable mode the proofs make the bank refuse it.

`answer_request` is the vendor's whole turn: under the epoch's budget lock it reads the stored
count, refuses a request past the cap (`EvaluationBudget`: declared customers x 1.1 + 1000),
evaluates, and stores the new count before it hands the answer back.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from contracts.errors import ConfigError, OprfError
from matcher.atomic import write_atomic
from matcher.keyring import Keyring
from matcher.oprf import ELEMENT_BYTES, PROOF_BYTES, PROOF_ELEMENTS, OprfMode, prove_blocks
from matcher.oprf_match import EvaluationBudget

__all__ = [
    "ANSWER",
    "FORMAT_VERIFIABLE",
    "MAGIC",
    "REQUEST",
    "ElementFile",
    "answer_request",
    "check_output",
]

MAGIC = b"\x89BFOPRF\n"
REQUEST, ANSWER = 1, 2
FORMAT = 1  # base mode; FORMAT_VERIFIABLE: VOPRF, with proofs
FORMAT_VERIFIABLE = 2
_MODE_NAMES = {OprfMode.OPRF: "oprf", OprfMode.VOPRF: "voprf"}
_KINDS = {REQUEST: "request", ANSWER: "answer"}
_MAX_HEADER = 4096
_PREFIX = len(MAGIC) + 1 + 4


@dataclass(frozen=True, slots=True, repr=False)
class ElementFile:
    """One OPRF exchange file: its kind, request id, epoch id and group elements.

    In the verifiable mode an answer also holds its request's blinded elements (`echo`) and one
    proof per block of 65,536 elements (`proofs`).
    """

    kind: int
    request_id: str
    epoch_id: str
    elements: tuple[bytes, ...]
    mode: OprfMode = OprfMode.OPRF
    echo: tuple[bytes, ...] = ()
    proofs: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"kind must be REQUEST or ANSWER, got {self.kind!r}", setting="kind")
        try:
            uuid.UUID(self.request_id)
        except (ValueError, TypeError, AttributeError):
            raise ConfigError("request_id must be a UUID", setting="request_id") from None
        if not isinstance(self.epoch_id, str) or not self.epoch_id.isprintable():
            raise ConfigError("epoch_id must be a printable string", setting="epoch_id")
        if self.mode not in tuple(OprfMode):
            raise ConfigError(f"mode must be an OprfMode, got {self.mode!r}", setting="mode")
        object.__setattr__(self, "mode", OprfMode(self.mode))
        for i, element in enumerate((*self.elements, *self.echo)):
            if not isinstance(element, bytes) or len(element) != ELEMENT_BYTES:
                raise OprfError(
                    f"element {i} of the {self.kind_name} is not {ELEMENT_BYTES} bytes",
                    item="element",
                    index=i,
                )
        verifiable_answer = self.kind == ANSWER and self.mode is OprfMode.VOPRF
        blocks = -(-len(self.elements) // PROOF_ELEMENTS) if verifiable_answer else 0
        echo = len(self.elements) if verifiable_answer else 0
        if len(self.echo) != echo or len(self.proofs) != blocks:
            raise OprfError(
                f"a {self.mode.name} {self.kind_name} of {len(self.elements)} elements holds "
                f"{echo} echoed elements and {blocks} proofs, got {len(self.echo)} and "
                f"{len(self.proofs)}",
                item="proof",
            )
        if any(not isinstance(p, bytes) or len(p) != PROOF_BYTES for p in self.proofs):
            raise OprfError(f"every proof is {PROOF_BYTES} bytes", item="proof")

    @property
    def kind_name(self) -> str:
        return _KINDS[self.kind]

    def __len__(self) -> int:
        return len(self.elements)

    def __repr__(self) -> str:
        return (
            f"ElementFile({self.kind_name}, request_id={self.request_id!r}, "
            f"epoch_id={self.epoch_id!r}, {len(self.elements)} elements)"
        )

    def header(self) -> dict[str, object]:
        fields: dict[str, object] = {
            "format": FORMAT,
            "request_id": self.request_id,
            "epoch_id": self.epoch_id,
            "count": len(self.elements),
        }
        if self.mode is OprfMode.VOPRF:
            fields |= {
                "format": FORMAT_VERIFIABLE,
                "mode": _MODE_NAMES[self.mode],
                "proofs": len(self.proofs),
            }
        return fields

    def write(self, path: Path) -> int:
        """Write the file (0600, atomically: `matcher.atomic`); return its size in bytes."""
        header = json.dumps(self.header(), sort_keys=True).encode("utf-8")
        body = b"".join(
            [
                MAGIC,
                bytes([self.kind]),
                len(header).to_bytes(4, "big"),
                header,
                *self.elements,
                *self.echo,
                *self.proofs,
            ]
        )
        write_atomic(path, body, mode=0o600)
        return len(body)

    @classmethod
    def read(cls, path: Path, *, kind: int) -> ElementFile:
        """Return the file at `path`, which must be of `kind`; OprfError says what is wrong."""
        what = _KINDS.get(kind, "exchange")
        data = Path(path).read_bytes()

        def bad(reason: str) -> OprfError:
            return OprfError(
                f"{path} is not a readable OPRF {what} file: {reason}; ask its sender to write "
                "it again with `fusion match --mode oprf` (request) or `fusion vendor evaluate` "
                "(answer)",
                item=f"{what} file",
            )

        if len(data) < _PREFIX or data[: len(MAGIC)] != MAGIC:
            raise bad("it does not start with the OPRF exchange magic")
        if data[len(MAGIC)] != kind:
            got = _KINDS.get(data[len(MAGIC)], "unknown")
            raise bad(f"it is a {got} file, not a {what}")
        hlen = int.from_bytes(data[len(MAGIC) + 1 : _PREFIX], "big")
        if hlen > _MAX_HEADER or _PREFIX + hlen > len(data):
            raise bad("its header length is out of range")
        try:
            header = json.loads(data[_PREFIX : _PREFIX + hlen])
        except (ValueError, UnicodeDecodeError):
            raise bad("its header is not JSON") from None
        mode, count, proofs = _read_header(header, bad)
        body = data[_PREFIX + hlen :]
        echoed = count if kind == ANSWER and mode is OprfMode.VOPRF else 0
        size = (count + echoed) * ELEMENT_BYTES + proofs * PROOF_BYTES
        if len(body) != size:
            raise bad(f"it declares {count!r} elements but holds {len(body)} bytes of them")
        elements = _split(body, 0, count, ELEMENT_BYTES)
        echo = _split(body, count * ELEMENT_BYTES, echoed, ELEMENT_BYTES)
        proof = _split(body, (count + echoed) * ELEMENT_BYTES, proofs, PROOF_BYTES)
        try:
            return cls(kind, header["request_id"], header["epoch_id"], elements, mode, echo, proof)
        except (ConfigError, OprfError) as exc:
            raise bad(str(exc)) from None


def _split(body: bytes, start: int, count: int, size: int) -> tuple[bytes, ...]:
    return tuple(body[start + i * size : start + (i + 1) * size] for i in range(count))


def _read_header(header: object, bad: Callable[[str], OprfError]) -> tuple[OprfMode, int, int]:
    """Return (mode, element count, proof count) of a parsed header, or raise `bad(reason)`."""
    fields = {"format", "request_id", "epoch_id", "count"}
    verifiable = fields | {"mode", "proofs"}
    if not isinstance(header, dict) or (
        (header.get("format"), set(header))
        not in ((FORMAT, fields), (FORMAT_VERIFIABLE, verifiable))
    ):
        raise bad(
            f"its header must hold exactly {', '.join(sorted(fields))} (format 1), or also "
            "mode and proofs (format 2)"
        )
    mode = OprfMode.VOPRF if header["format"] == FORMAT_VERIFIABLE else OprfMode.OPRF
    count, proofs = header["count"], header.get("proofs", 0)
    if header.get("mode", "oprf") != _MODE_NAMES[mode]:
        raise bad(f"format {header['format']} is mode {_MODE_NAMES[mode]}, not {header['mode']!r}")
    for name, value in (("count", count), ("proofs", proofs)):
        if type(value) is not int or value < 0:
            raise bad(f"its {name} must be an integer >= 0, got {value!r}")
    return mode, count, proofs


def check_output(path: Path, *, what: str = "answer") -> None:
    """Raise ConfigError unless an exchange file can be written at `path` (creating its folder).

    The vendor runs it before `answer_request`: an answer counts against the epoch's budget
    once evaluated, so an output that cannot be written must be found before that, not after.
    """
    path = Path(path)
    spent = "; nothing was evaluated or counted" if what == "answer" else ""
    if path.is_dir():
        raise ConfigError(
            f"the {what} file's path is a folder ({path}); name a file in it, e.g. "
            f"{path / f'{what}.oprf'}{spent}",
            setting="out",
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A probe file, not os.access: it also catches read-only mounts and a superuser.
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.probe."):
            pass
    except OSError as error:
        raise ConfigError(
            f"the {what} file cannot be written ({path}: {error.strerror}); name a file in a "
            f"folder you can write to{spent}",
            setting="out",
        ) from error


def answer_request(
    keyring: Keyring,
    request: ElementFile,
    *,
    declared_customers: int | None = None,
    workers: int | None = None,
) -> tuple[ElementFile, EvaluationBudget]:
    """Return (the answer, the epoch's budget after it): the vendor evaluates a bank's request.

    A verifiable request (mode VOPRF) is answered with the batched DLEQ proofs that every element
    was evaluated under the epoch's key, whose public half the vendor's batches publish.

    Args:
        keyring: the vendor's keyring; it holds the epoch's key and budget file.
        request: the bank's request file.
        declared_customers: the bank's customer count as agreed out of band. Required for an
            epoch's first answer, when it fixes the epoch's cap; afterwards it may be left out,
            and a different value is refused (a cap is raised by agreeing a new epoch).
        workers: threads for the evaluation; every core by default.

    Raises:
        EvaluationCapError: the request would pass the epoch's cap; nothing is evaluated.
        OprfError: an element is not a valid group element; nothing is counted.
        ConfigError: no declared count for a new epoch, or a different one for an old epoch.
    """
    if request.kind != REQUEST:
        raise ConfigError("answer_request takes a request file", setting="request")
    key = keyring.oprf_key(request.epoch_id)
    with keyring.oprf_budget(request.epoch_id) as stored:
        fields = stored.read()
        if fields is None:
            if declared_customers is None:
                raise ConfigError(
                    f"epoch {request.epoch_id!r} has answered nothing yet: give the bank's "
                    "declared customer count (--declared-customers), which fixes its cap",
                    setting="declared_customers",
                )
            budget = EvaluationBudget(request.epoch_id, declared_customers)
        else:
            budget = EvaluationBudget.from_dict(fields)
            if declared_customers is not None and declared_customers != budget.declared_customers:
                raise ConfigError(
                    f"epoch {request.epoch_id!r} was declared for {budget.declared_customers:,} "
                    f"customers at its first answer, not {declared_customers:,}; a cap is never "
                    "raised within an epoch: start a new one (fusion vendor rotate --what oprf)",
                    setting="declared_customers",
                )
        evaluated = budget.answer(key, request.elements, workers=workers)
        proofs: list[bytes] = []
        if request.mode is OprfMode.VOPRF:  # proved before counted: a failure counts nothing
            proofs = prove_blocks(key, request.elements, evaluated, workers=workers)
        stored.write(budget.to_dict())  # counted before the answer leaves
    echo = request.elements if request.mode is OprfMode.VOPRF else ()
    answer = ElementFile(
        ANSWER,
        request.request_id,
        request.epoch_id,
        tuple(evaluated),
        request.mode,
        echo,
        tuple(proofs),
    )
    return answer, budget

"""Keys on disk: one folder per party, one 0600 file per secret, a plain index of public facts.

Layout of a keyring folder (mode 0700):

    keyring.json                       index: role, vendor id, key ids, public keys (hex), epochs
    hpke.<kid>.key                     bank: HPKE private key: X25519, 32 raw bytes (RFC 7748);
                                       MLKEM768-X25519, 96 raw bytes (`matcher.kem`)
    signing.<kid>.key                  vendor: Ed25519 private key, 32 raw bytes (RFC 8032 seed)
    salt.<epoch_id>.key                both: salt epoch, 32 raw bytes
    oprf.<epoch_id>.key                vendor: OPRF key of an epoch, ristretto255 scalar, 32 bytes
    oprf.<epoch_id>.budget.json        vendor: OPRF evaluations answered in the epoch (0600)
    store.key                          bank: DuckDB store key, 32 raw bytes
    store.branch.<branch_id>.key       bank: per-branch snapshot key, 32 raw bytes
    store.head-office.key              bank: head-office snapshot key, 32 raw bytes

Every secret is raw bytes rather than PEM: each is exactly 32 bytes (a hybrid HPKE key 96), so a
file of any other size is damaged, and no parser sits between the disk and the key. Every file
is written atomically (`matcher.atomic`: temp file in the same folder, fsync, os.replace, fsync
of the folder) with mode 0600, and a secret file whose mode lets group or others in is
refused, as ssh refuses a loose private key.
Ids become file names, so they are limited to letters, digits, '.', '_' and '-'.

Nothing here prints, logs or puts a key in a repr or an exception; messages name files and ids.
Key ids: the bank's HPKE keys are "bank-hpke-1", "bank-hpke-2"...; a vendor's signing keys are
"<vendor_id>-sign-1"...; salt epochs are "e<yyyy>-<mm>-<n>" ("e2026-11-1"), OPRF epochs
"o<yyyy>-<mm>-<n>". Rotation adds a key
and makes it current; old keys stay readable so batches sealed before a rotation still open.
A kid never silently changes keys: importing other bytes under a kid already held needs
`replace=True`, so a substituted bank or vendor key cannot slip in under a familiar name.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contracts.errors import ConfigError, KeyringError, UnknownEpochError
from matcher import kem
from matcher.atomic import atomic_path, write_atomic
from matcher.kem import RecipientPrivateKey, RecipientPublicKey, Suite
from matcher.keyed_hash import SALT_BYTES, SaltEpoch
from matcher.oprf_budget import OprfBudgetFile

if TYPE_CHECKING:
    from matcher.oprf import OprfServerKey

__all__ = ["INDEX_NAME", "Keyring", "init_local_pair", "pair_locally"]

INDEX_NAME = "keyring.json"
INDEX_FORMAT = "bankfusion-keyring/1"
SECRET_BYTES = 32
PUBLIC_BYTES = 32
ROLES = ("bank", "vendor")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LOOSE = stat.S_IRWXG | stat.S_IRWXO
_AUDIT_TRAIL_INFO = b"bankfusion audit trail v1"  # HKDF info: the trail key, and only it


def _check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ConfigError(
            f"{what} must be 1-64 letters, digits, '.', '_' or '-' (starting with a letter or "
            f"digit), got {value!r}",
            setting=what,
        )
    return value


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _new_index(role: str, vendor_id: str | None) -> dict[str, Any]:
    """Return the index of a keyring of `role` that holds no key yet."""
    index: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "role": role,
        "vendor_id": vendor_id,
        "salt": {"current": None, "epochs": []},
    }
    if role == "bank":
        return index | {
            "hpke": {"current": None, "keys": []},
            "vendors": {},
            "store": {"main": False, "branches": [], "head_office": False},
        }
    return index | {
        "signing": {"current": None, "keys": []},
        "recipients": [],
        "oprf": {"current": None, "epochs": []},
    }


class Keyring:
    """A party's keys in a 0700 folder. Create one with `Keyring.init`, open it with `Keyring.open`.

    Methods that need the other role's keys raise KeyringError. Lookups of ids the keyring does
    not hold raise KeyringError (UnknownEpochError for salt epochs); none of them shows a key.
    """

    __slots__ = ("_index", "_path", "_staging")

    def __init__(self, path: Path, index: dict[str, Any]) -> None:
        self._path = path
        self._index = index
        self._staging = False  # while init builds the folder, the index is written once, last

    # -- creating and opening ---------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: Path | str,
        *,
        role: Literal["bank", "vendor"],
        vendor_id: str | None = None,
        now: datetime | None = None,
    ) -> Keyring:
        """Return a new keyring created at `path` (which must not exist, or be an empty folder).

        A bank keyring starts with an HPKE key pair, a salt epoch and the store key; a vendor
        keyring with a signing key and an OPRF epoch (it imports the bank's HPKE key and salt
        epoch later).
        The folder is built beside `path` and renamed into place, so a crash leaves no half
        keyring. `now` names the first salt epoch (default: the current UTC time).
        """
        path = Path(path)
        if role not in ROLES:
            raise ConfigError(f"role must be 'bank' or 'vendor', got {role!r}", setting="role")
        if role == "vendor":
            _check_id(vendor_id, "vendor_id")
        elif vendor_id is not None:
            raise ConfigError("a bank keyring takes no vendor_id", setting="vendor_id")
        if path.exists() and not (path.is_dir() and not any(path.iterdir())):
            raise KeyringError(
                f"{path} already exists; a keyring is never overwritten. Keep using the keyring "
                "there (the other commands of this --run open it), or give --run a new folder",
                path=str(path),
            )
        # The whole folder is one atomic_path: built under a temporary name beside `path`, every
        # file flushed, then renamed into place (POSIX rename replaces an empty folder).
        with atomic_path(path) as staging:
            staging.mkdir(mode=0o700)
            os.chmod(staging, 0o700)  # mkdir's mode passes through the umask
            keyring = cls(staging, _new_index(role, vendor_id))
            keyring._staging = True
            if role == "bank":
                keyring.rotate("hpke")
                keyring.new_salt_epoch(now=now)
                keyring._store_key_file("store.key", "main")
            else:
                keyring.rotate("signing")
                keyring.new_oprf_epoch(now=now)
            keyring._staging = False
            keyring._save_index()
        keyring._path = path
        return keyring

    @classmethod
    def open(cls, path: Path | str) -> Keyring:
        """Return the keyring stored at `path`; refuses a folder that group or others can enter."""
        path = Path(path)
        index_path = path / INDEX_NAME
        if not index_path.is_file():
            raise KeyringError(
                f"no keyring at {path} ({INDEX_NAME} is missing); check --run, or create one: "
                "`fusion keys init` for the bank, `fusion vendor keygen` for the vendor",
                path=str(path),
            )
        if path.stat().st_mode & _LOOSE:
            raise KeyringError(
                f"keyring folder {path} is open to group or others; run: chmod 700 {path}",
                path=str(path),
            )
        try:
            index = json.loads(index_path.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyringError(
                f"{index_path} is not valid JSON ({exc}); restore it from the keyring backup",
                path=str(index_path),
            ) from None
        if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
            raise KeyringError(
                f"{index_path} is not a {INDEX_FORMAT} index; it was written by another tool or "
                "version",
                path=str(index_path),
            )
        return cls(path, index)

    @property
    def path(self) -> Path:
        """The keyring folder."""
        return self._path

    @property
    def role(self) -> Literal["bank", "vendor"]:
        """ "bank" or "vendor"."""
        role: Literal["bank", "vendor"] = self._index["role"]
        return role

    @property
    def vendor_id(self) -> str | None:
        """The vendor's id on a vendor keyring; None on the bank's."""
        vendor_id: str | None = self._index["vendor_id"]
        return vendor_id

    def __repr__(self) -> str:
        return (
            f"Keyring(path={str(self._path)!r}, role={self.role!r}, vendor_id={self.vendor_id!r})"
        )

    # -- rotation ---------------------------------------------------------------------------

    def rotate(
        self,
        what: Literal["hpke", "signing", "salt", "oprf"],
        *,
        now: datetime | None = None,
        suite: Suite | str = Suite.X25519,
    ) -> str:
        """Return the id of a new current key ("hpke": bank, "signing" and "oprf": vendor,
        "salt": both).

        Old keys stay on disk and readable, so batches sealed before the rotation still open.
        `suite` is the HPKE suite of a new bank key: X25519, or the post-quantum hybrid
        MLKEM768-X25519 (`matcher.kem`).
        """
        if what == "salt":
            return self.new_salt_epoch(now=now).epoch_id
        if what == "oprf":
            return self.new_oprf_epoch(now=now)
        if what not in ("hpke", "signing"):
            # Name only what this keyring's own command accepts, not the other party's keys.
            usable = (
                "hpke or salt (fusion keys rotate --what hpke|salt)"
                if self.role == "bank"
                else "signing or oprf (fusion vendor rotate --what signing|oprf)"
            )
            raise ConfigError(
                f"a {self.role} keyring rotates {usable}, got {what!r}", setting="what"
            )
        entry: dict[str, str] = {}
        if what == "hpke":
            self._require("bank", "rotate the HPKE key")
            section, prefix = self._index["hpke"], "bank-hpke-"
            chosen = Suite.parse(suite)
            raw, public = kem.generate(chosen)
            if chosen is not Suite.X25519:  # an entry without "suite" is X25519
                entry["suite"] = chosen.value
        else:
            self._require("vendor", "rotate the signing key")
            section, prefix = self._index["signing"], f"{self.vendor_id}-sign-"
            signing_key = Ed25519PrivateKey.generate()
            raw, public = signing_key.private_bytes_raw(), _raw_public(signing_key.public_key())
        kid = self._next_id(prefix, self._kids(section["keys"]))
        self._write_secret(f"{what}.{kid}.key", raw)
        section["keys"].append({"kid": kid, "public": public.hex(), **entry})
        section["current"] = kid
        self._save_index()
        return kid

    # -- bank: HPKE recipient keys ----------------------------------------------------------

    def current_recipient(self) -> tuple[str, RecipientPrivateKey]:
        """Return (kid, private key) of the bank's current HPKE key."""
        self._require("bank", "hold HPKE private keys")
        kid = self._index["hpke"]["current"]
        return kid, self.recipient_private(kid)

    def recipient_private(self, kid: str) -> RecipientPrivateKey:
        """Return the bank's HPKE private key `kid` (current or rotated out), of its suite."""
        self._require("bank", "hold HPKE private keys")
        self._find(self._index["hpke"]["keys"], kid, "HPKE key")
        suite = self.recipient_suite(kid)
        raw = self._read_secret(f"hpke.{kid}.key", size=suite.private_bytes)
        try:
            return kem.private_key(suite, raw)
        finally:
            raw[:] = bytes(len(raw))

    def recipient_public_bytes(self, kid: str | None = None) -> tuple[str, bytes]:
        """Return (kid, raw bytes) of a bank HPKE public key (default: current) for vendors."""
        self._require("bank", "export HPKE public keys")
        kid = kid or self._index["hpke"]["current"]
        return kid, bytes.fromhex(self._find(self._index["hpke"]["keys"], kid, "HPKE key"))

    def recipient_suite(self, kid: str) -> Suite:
        """Return the HPKE suite of bank key `kid` (the bank's own, or one a vendor imported)."""
        self._find(self._recipient_entries(), kid, "bank HPKE public key")
        entry = next(e for e in self._recipient_entries() if e["kid"] == kid)
        return Suite(entry.get("suite", Suite.X25519.value))

    def accepted_suites(self) -> frozenset[Suite]:
        """Return the HPKE suites the bank's policy accepts for incoming batches (default: all)."""
        self._require("bank", "hold the batch policy")
        names = self._index.get("policy", {}).get("accepted_suites")
        return frozenset(Suite) if names is None else frozenset(Suite(n) for n in names)

    def set_accepted_suites(self, suites: Iterable[Suite | str]) -> frozenset[Suite]:
        """Make the bank accept batches of `suites` only; return them. Refused if it holds no key
        of any of them (no vendor could then seal a batch it accepts)."""
        self._require("bank", "set the batch policy")
        chosen = frozenset(Suite.parse(s, setting="accepted suite") for s in suites)
        held = {self.recipient_suite(kid) for kid in self._kids(self._index["hpke"]["keys"])}
        if not chosen & held:
            wanted = ", ".join(sorted(chosen)) or "none"
            raise ConfigError(
                f"the bank would accept suites {wanted} but holds no HPKE key of them; rotate "
                "to one first (fusion keys rotate --what hpke --suite MLKEM768-X25519)",
                setting="accepted_suites",
            )
        self._index["policy"] = {"accepted_suites": sorted(chosen)}
        self._save_index()
        return chosen

    # -- vendor: the bank's HPKE public keys ------------------------------------------------

    def import_recipient(
        self,
        kid: str,
        public_bytes: bytes,
        *,
        replace: bool = False,
        suite: Suite | str = Suite.X25519,
    ) -> None:
        """Record the bank's HPKE public key `kid` of `suite` (raw bytes); it becomes the newest.

        Importing the same key again changes nothing; other bytes under a kid already held are
        refused unless `replace` (the bank re-issued that kid), which swaps them in as newest.
        """
        self._require("vendor", "import the bank's HPKE keys")
        _check_id(kid, "kid")
        chosen = Suite.parse(suite)
        raw = self._public_bytes(
            public_bytes, f"{chosen} public key {kid!r}", size=chosen.public_bytes
        )
        kem.public_key(chosen, raw)  # refuses bytes that are no key of the suite
        extra = {} if chosen is Suite.X25519 else {"suite": chosen.value}
        self._add_public(self._index["recipients"], kid, raw, "bank HPKE key", replace, extra)

    def recipient_public(self, kid: str) -> RecipientPublicKey:
        """Return the bank HPKE public key `kid` (a vendor's imported one, or the bank's own)."""
        public = self._find(self._recipient_entries(), kid, "bank HPKE public key")
        return kem.public_key(self.recipient_suite(kid), bytes.fromhex(public))

    def current_recipient_public(
        self, suite: Suite | str | None = None
    ) -> tuple[str, RecipientPublicKey]:
        """Return (kid, key) of the newest bank HPKE public key (on a bank: its current one).

        With `suite`, the newest one of that suite (a vendor sealing to the bank's hybrid key).
        """
        if self.role == "bank" and suite is None:
            kid = self._index["hpke"]["current"]
        else:
            entries = self._recipient_entries()
            if suite is not None:
                wanted = Suite.parse(suite)
                entries = [e for e in entries if self.recipient_suite(e["kid"]) is wanted]
            if not entries:
                raise KeyringError(
                    f"no bank HPKE key{f' of suite {suite}' if suite else ''} imported yet; ask "
                    "the bank for its public key and call import_recipient (`fusion keys "
                    "pair-vendor` does it for a local run)",
                    path=str(self._path),
                )
            kid = entries[-1]["kid"]
        return kid, self.recipient_public(kid)

    # -- vendor: own signing keys -----------------------------------------------------------

    def current_signer(self) -> tuple[str, Ed25519PrivateKey]:
        """Return (kid, private key) of the vendor's current Ed25519 signing key."""
        self._require("vendor", "hold signing keys")
        kid = self._index["signing"]["current"]
        self._find(self._index["signing"]["keys"], kid, "signing key")
        raw = self._read_secret(f"signing.{kid}.key")
        try:
            return kid, Ed25519PrivateKey.from_private_bytes(raw)
        finally:
            raw[:] = bytes(len(raw))

    def signer_public_bytes(self, kid: str | None = None) -> tuple[str, bytes]:
        """Return (kid, 32 raw bytes) of a vendor signing public key (default: current)."""
        self._require("vendor", "export signing public keys")
        kid = kid or self._index["signing"]["current"]
        return kid, bytes.fromhex(self._find(self._index["signing"]["keys"], kid, "signing key"))

    # -- bank: trusted vendor keys ----------------------------------------------------------

    def trust_vendor(
        self, vendor_id: str, kid: str, public_bytes: bytes, *, replace: bool = False
    ) -> None:
        """Trust `public_bytes` (raw Ed25519) as vendor `vendor_id`'s signing key `kid`.

        Same rule as import_recipient: other bytes under a trusted kid need `replace`.
        """
        self._require("bank", "trust vendor keys")
        _check_id(vendor_id, "vendor_id")
        _check_id(kid, "kid")
        raw = self._public_bytes(public_bytes, f"signing key {kid!r}")
        entries = self._index["vendors"].setdefault(vendor_id, [])
        self._add_public(entries, kid, raw, f"signing key of vendor {vendor_id!r}", replace)

    def vendor_public(self, vendor_id: str, kid: str) -> Ed25519PublicKey:
        """Return the trusted signing key `kid` of vendor `vendor_id`."""
        self._require("bank", "hold trusted vendor keys")
        entries = self._index["vendors"].get(vendor_id)
        if not entries:
            raise KeyringError(
                f"vendor {vendor_id!r} has no trusted signing key; trust its public key first "
                "(a local run: `fusion keys pair-vendor`)",
                path=str(self._path),
            )
        public = self._find(entries, kid, f"signing key of vendor {vendor_id!r}")
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))

    def trusted_vendors(self) -> tuple[str, ...]:
        """Return the ids of the vendors whose signing keys the bank trusts, sorted."""
        self._require("bank", "hold trusted vendor keys")
        return tuple(sorted(v for v, entries in self._index["vendors"].items() if entries))

    # -- both: salt epochs ------------------------------------------------------------------

    def new_salt_epoch(
        self, epoch_id: str | None = None, *, now: datetime | None = None
    ) -> SaltEpoch:
        """Return a new random salt epoch, now current (id default: "e<yyyy>-<mm>-<n>" of `now`)."""
        if epoch_id is None:
            when = (now or datetime.now(UTC)).astimezone(UTC)
            epoch_id = self._next_id(f"e{when:%Y-%m}-", self.salt_epochs())
        epoch = SaltEpoch.generate(_check_id(epoch_id, "epoch_id"))
        self.import_salt(epoch)
        return epoch

    def import_salt(self, epoch: SaltEpoch, *, make_current: bool = True) -> None:
        """Store a salt epoch agreed out of band; importing the same epoch twice changes nothing.

        Refuses an id the keyring already holds with a different salt: one id, one salt.
        """
        _check_id(epoch.epoch_id, "epoch_id")
        section = self._index["salt"]
        if epoch.epoch_id in section["epochs"]:
            if not secrets.compare_digest(self.salt(epoch.epoch_id).salt, epoch.salt):
                raise KeyringError(
                    f"salt epoch {epoch.epoch_id!r} is already in the keyring with a different "
                    "salt; epochs are never replaced: agree on a new epoch id",
                    path=str(self._path),
                )
        else:
            self._write_secret(f"salt.{epoch.epoch_id}.key", epoch.salt)
            section["epochs"].append(epoch.epoch_id)
        if make_current:
            section["current"] = epoch.epoch_id
        self._save_index()

    def salt(self, epoch_id: str) -> SaltEpoch:
        """Return salt epoch `epoch_id`; UnknownEpochError lists the epochs held."""
        if epoch_id not in self._index["salt"]["epochs"]:
            raise UnknownEpochError(str(epoch_id), known=self.salt_epochs())
        raw = self._read_secret(f"salt.{epoch_id}.key")
        return SaltEpoch(epoch_id=epoch_id, salt=bytes(raw))

    def export_salt(self, epoch_id: str) -> SaltEpoch:
        """Return salt epoch `epoch_id` to hand to the other party over an agreed channel."""
        return self.salt(epoch_id)

    def current_salt(self) -> SaltEpoch:
        """Return the current salt epoch."""
        current = self._index["salt"]["current"]
        if current is None:
            raise KeyringError(
                "this keyring holds no salt epoch yet; import the epoch agreed with the bank: "
                "`fusion keys pair-vendor` in a run folder holding both keyrings, otherwise "
                "the bank hands it over in its key ceremony",
                path=str(self._path),
            )
        return self.salt(current)

    def salt_epochs(self) -> tuple[str, ...]:
        """Return the ids of the salt epochs held, oldest first."""
        return tuple(self._index["salt"]["epochs"])

    # -- vendor: OPRF keys, one per epoch ---------------------------------------------------

    def new_oprf_epoch(self, epoch_id: str | None = None, *, now: datetime | None = None) -> str:
        """Return the id of a new OPRF epoch with a fresh random key, now current.

        The key never leaves this keyring: the bank learns F_k only through blinded requests,
        counted per epoch (`oprf_budget`). Id default: "o<yyyy>-<mm>-<n>" of `now`.
        """
        self._require("vendor", "hold OPRF keys")
        section = self._oprf_section()
        if epoch_id is None:
            when = (now or datetime.now(UTC)).astimezone(UTC)
            epoch_id = self._next_id(f"o{when:%Y-%m}-", section["epochs"])
        _check_id(epoch_id, "epoch_id")
        if epoch_id in section["epochs"]:
            raise KeyringError(
                f"OPRF epoch {epoch_id!r} already exists; epochs are never replaced: choose a "
                "new id",
                path=str(self._path),
            )
        from matcher.oprf import OprfServerKey  # rbcl loads libsodium: only when OPRF is used

        self._write_secret(f"oprf.{epoch_id}.key", OprfServerKey.generate().scalar)
        section["epochs"].append(epoch_id)
        section["current"] = epoch_id
        self._save_index()
        return epoch_id

    def oprf_key(self, epoch_id: str) -> OprfServerKey:
        """Return the OPRF key of epoch `epoch_id`; UnknownEpochError lists the epochs held."""
        self._require("vendor", "hold OPRF keys")
        if epoch_id not in self.oprf_epochs():
            raise UnknownEpochError(str(epoch_id), known=self.oprf_epochs(), kind="OPRF")
        from matcher.oprf import OprfServerKey

        raw = self._read_secret(f"oprf.{epoch_id}.key")
        try:
            return OprfServerKey(bytes(raw))
        finally:
            raw[:] = bytes(len(raw))

    def current_oprf_epoch(self) -> str:
        """Return the id of the current OPRF epoch."""
        self._require("vendor", "hold OPRF keys")
        current: str | None = self._oprf_section()["current"]
        if current is None:
            raise KeyringError(
                "this vendor keyring holds no OPRF epoch yet; start one with "
                "`fusion vendor rotate --what oprf`",
                path=str(self._path),
            )
        return current

    def oprf_epochs(self) -> tuple[str, ...]:
        """Return the ids of the OPRF epochs held, oldest first (none on a bank keyring)."""
        if self.role != "vendor":
            return ()
        return tuple(self._oprf_section()["epochs"])

    @contextmanager
    def oprf_budget(self, epoch_id: str) -> Iterator[OprfBudgetFile]:
        """Hold epoch `epoch_id`'s budget file locked (one writer at a time) while in the block.

        Yields an `OprfBudgetFile` whose `read()` returns the stored budget fields (None before
        the first answer) and `write(fields)` replaces them atomically.
        """
        self.oprf_key(epoch_id)  # the epoch must exist (and its key file be sound)
        lock_path = self._path / f"oprf.{epoch_id}.budget.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield OprfBudgetFile(self._path / f"oprf.{epoch_id}.budget.json")
        finally:
            os.close(fd)  # closing releases the lock

    def _oprf_section(self) -> dict[str, Any]:
        # Keyrings made before the OPRF mode have no section: it appears with the first epoch.
        section: dict[str, Any] = self._index.setdefault("oprf", {"current": None, "epochs": []})
        return section

    # -- bank: DuckDB store keys ------------------------------------------------------------

    def store_key(self) -> str:
        """Return the DuckDB store key: 32 random bytes, standard base64 (ENCRYPTION_KEY)."""
        self._require("bank", "hold store keys")
        return self._store_key_file("store.key", "main")

    def branch_store_key(self, branch_id: str) -> str:
        """Return branch `branch_id`'s snapshot key (base64), created on first use."""
        self._require("bank", "hold store keys")
        _check_id(branch_id, "branch_id")
        return self._store_key_file(f"store.branch.{branch_id}.key", "branches", branch_id)

    def head_office_key(self) -> str:
        """Return the head-office snapshot key (base64), created on first use."""
        self._require("bank", "hold store keys")
        return self._store_key_file("store.head-office.key", "head_office")

    def audit_trail_key(self) -> bytes:
        """Return the key of the service's sealed request trail: HKDF-SHA256 of the store key.

        Derived, not stored: whoever may read the store may read the trail, and rotating the
        store key (a new keyring) starts a trail only the new key opens.
        """
        self._require("bank", "hold store keys")
        raw = bytearray(base64.b64decode(self._store_key_file("store.key", "main")))
        try:
            return HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=_AUDIT_TRAIL_INFO
            ).derive(bytes(raw))
        finally:
            raw[:] = bytes(len(raw))

    # -- internals --------------------------------------------------------------------------

    def _store_key_file(self, name: str, slot: str, branch_id: str | None = None) -> str:
        store = self._index["store"]
        known = branch_id in store[slot] if branch_id is not None else store[slot]
        if not known:
            self._write_secret(name, secrets.token_bytes(SECRET_BYTES))
            if branch_id is not None:
                store[slot].append(branch_id)
            else:
                store[slot] = True
            self._save_index()
        raw = self._read_secret(name)
        try:
            return base64.b64encode(raw).decode("ascii")
        finally:
            raw[:] = bytes(len(raw))

    def _require(self, role: str, action: str) -> None:
        if self.role != role:
            raise KeyringError(
                f"a {self.role} keyring cannot {action}; that is the {role}'s keyring's job",
                path=str(self._path),
            )

    def _recipient_entries(self) -> list[dict[str, str]]:
        entries: list[dict[str, str]] = (
            self._index["hpke"]["keys"] if self.role == "bank" else self._index["recipients"]
        )
        return entries

    @staticmethod
    def _kids(entries: list[dict[str, str]]) -> list[str]:
        return [entry["kid"] for entry in entries]

    @staticmethod
    def _next_id(prefix: str, taken: list[str] | tuple[str, ...]) -> str:
        n = 1 + sum(1 for kid in taken if kid.startswith(prefix))
        while f"{prefix}{n}" in taken:
            n += 1
        return f"{prefix}{n}"

    def _find(self, entries: list[dict[str, str]], kid: str, what: str) -> str:
        for entry in entries:
            if entry["kid"] == kid:
                return entry["public"]
        known = ", ".join(self._kids(entries)) or "none"
        raise KeyringError(
            f"{what} {kid!r} is not in this keyring (known: {known})", path=str(self._path)
        )

    def _add_public(
        self,
        entries: list[dict[str, str]],
        kid: str,
        public: bytes,
        what: str,
        replace: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        for entry in list(entries):
            if entry["kid"] == kid:
                if entry["public"] == public.hex() and entry.get("suite") == (extra or {}).get(
                    "suite"
                ):
                    return
                if not replace:
                    raise KeyringError(
                        f"{what} {kid!r} is already held with different key bytes; a kid never "
                        "changes keys silently. If its owner re-issued that kid (a re-created "
                        "keyring), confirm it out of band and pass replace=True",
                        path=str(self._path),
                    )
                entries.remove(entry)
        entries.append({"kid": kid, "public": public.hex(), **(extra or {})})
        self._save_index()

    @staticmethod
    def _public_bytes(public_bytes: bytes, what: str, *, size: int = PUBLIC_BYTES) -> bytes:
        if not isinstance(public_bytes, bytes | bytearray) or len(public_bytes) != size:
            got = len(public_bytes) if isinstance(public_bytes, bytes | bytearray) else "no bytes"
            raise ConfigError(f"{what} must be {size} raw bytes, got {got}", setting="public_bytes")
        return bytes(public_bytes)

    def _write_secret(self, name: str, data: bytes) -> None:
        write_atomic(self._path / name, data, mode=0o600, make_parent=False)

    def _read_secret(self, name: str, *, size: int = SECRET_BYTES) -> bytearray:
        path = self._path / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KeyringError(
                f"key file {path} is listed in {INDEX_NAME} but missing; restore it from the "
                "keyring backup",
                path=str(path),
            ) from None
        except OSError as exc:
            raise KeyringError(
                f"cannot read key file {path} ({exc.strerror}); key files are regular files, "
                "never symlinks",
                path=str(path),
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise KeyringError(f"key file {path} is not a regular file", path=str(path))
            if info.st_mode & _LOOSE:
                raise KeyringError(
                    f"key file {path} is readable by group or others (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}",
                    path=str(path),
                )
            if info.st_size != size:
                raise KeyringError(
                    f"key file {path} holds {info.st_size} bytes, expected {size}; it is "
                    "damaged: restore it from the keyring backup",
                    path=str(path),
                )
            buf = bytearray(size)
            if os.readv(fd, [buf]) != size:
                raise KeyringError(f"key file {path} changed while being read", path=str(path))
        finally:
            os.close(fd)
        return buf

    def _save_index(self) -> None:
        if self._staging:
            return
        body = json.dumps(self._index, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        write_atomic(self._path / INDEX_NAME, body, mode=0o600, make_parent=False)


assert SALT_BYTES == SECRET_BYTES  # salts and OPRF keys (32-byte scalars): the same reader


def init_local_pair(
    bank_path: Path, vendor_path: Path, *, vendor_id: str
) -> tuple[Keyring, Keyring]:
    """Return a new bank keyring and a new vendor keyring, already paired (`pair_locally`)."""
    bank = Keyring.init(bank_path, role="bank")
    vendor = Keyring.init(vendor_path, role="vendor", vendor_id=vendor_id)
    pair_locally(bank, vendor)
    return bank, vendor


def pair_locally(bank: Keyring, vendor: Keyring) -> None:
    """Give each of two keyrings on one machine what the parties exchange out of band.

    The bank trusts the vendor's current signing key; the vendor imports the bank's current HPKE
    public key and every salt epoch of the bank, the bank's current one as current. For the demo,
    tests and benchmarks; in production these travel by the parties' key ceremony.
    """
    kid, public = vendor.signer_public_bytes()
    bank.trust_vendor(str(vendor.vendor_id), kid, public)
    hpke_kid, hpke_public = bank.recipient_public_bytes()
    vendor.import_recipient(hpke_kid, hpke_public, suite=bank.recipient_suite(hpke_kid))
    for epoch_id in bank.salt_epochs():
        vendor.import_salt(bank.export_salt(epoch_id), make_current=False)
    vendor.import_salt(bank.export_salt(bank.current_salt().epoch_id), make_current=True)

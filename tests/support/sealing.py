"""A bank and a vendor with paired keyrings, who write manifests and seal and open batches."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from matcher.envelope import OpenedBatch, open_sealed, seal
from matcher.keyring import Keyring
from matcher.manifest import FORMAT_VERSION, BatchKeys, Manifest

__all__ = ["CHUNK", "KEY_FIELDS", "NOW", "Parties", "make_parties", "pair"]

NOW = datetime(2026, 11, 3, 9, 30, 15, 123456, tzinfo=UTC)
CHUNK = 64
KEY_FIELDS = ("vendor_id", "signing_kid", "recipient_kid", "salt_epoch")


@dataclass
class Parties:
    """A paired bank and vendor whose files live under `root` (opened payloads in root/opened)."""

    bank: Keyring
    vendor: Keyring
    root: Path

    def manifest(self, **overrides: object) -> Manifest:
        """Return a valid unsealed manifest of the vendor's current keys, with `overrides`."""
        fields: dict[str, object] = {
            "batch_id": str(uuid.uuid4()),
            "vendor_id": self.vendor.vendor_id,
            "signing_kid": self.vendor.current_signer()[0],
            "recipient_kid": self.vendor.current_recipient_public()[0],
            "salt_epoch": self.vendor.current_salt().epoch_id,
            "created_at": NOW,
            "rows": 1234,
            "taxonomy_version": "2026.11",
            "contract": "vendor_batch/v1",
            "counts": {"app_entries": 7, "tag_entries": 11},
        }
        fields |= overrides
        keys = BatchKeys(**{name: fields.pop(name) for name in KEY_FIELDS})  # type: ignore[arg-type]
        return Manifest.new(keys=keys, **fields)  # type: ignore[arg-type]

    def seal(
        self,
        data: bytes,
        *,
        name: str = "batch",
        chunk_size: int = CHUNK,
        version: int = FORMAT_VERSION,
        **overrides: object,
    ) -> Path:
        """Return the path of `data` sealed by the vendor for the bank, as root/<name>.sealed."""
        payload = self.root / f"{name}.parquet"
        payload.write_bytes(data)
        sealed = self.root / f"{name}.sealed"
        seal(
            payload,
            sealed,
            manifest=self.manifest(**overrides),
            recipient=self.vendor.current_recipient_public()[1],
            signer=self.vendor.current_signer()[1],
            chunk_size=chunk_size,
            format_version=version,
        )
        return sealed

    def open(
        self, sealed: Path, *, check: bool = True, **keys: Callable
    ) -> tuple[OpenedBatch, bytes]:
        """Return the opened batch and its payload, opened by the bank (or by the `keys` given)."""
        out = self.root / "opened" / "payload.parquet"
        opened = open_sealed(
            sealed,
            out,
            recipient_keys=keys.get("recipient_keys", self.bank.recipient_private),
            vendor_keys=keys.get("vendor_keys", self.bank.vendor_public),
            check_payload_digest=check,
        )
        return opened, out.read_bytes()


def pair(bank: Keyring, vendor: Keyring) -> None:
    """Make the bank trust the vendor's signing key and give the vendor the bank's public keys."""
    bank.trust_vendor(str(vendor.vendor_id), *vendor.signer_public_bytes())
    vendor.import_recipient(*bank.recipient_public_bytes())
    vendor.import_salt(bank.current_salt())


def make_parties(root: Path) -> Parties:
    """Return a new bank and vendor-a with keyrings under root/keys, paired."""
    bank = Keyring.init(root / "keys" / "bank", role="bank", now=NOW)
    vendor = Keyring.init(root / "keys" / "vendor", role="vendor", vendor_id="vendor-a")
    pair(bank, vendor)
    (root / "opened").mkdir()
    return Parties(bank, vendor, root)

"""A bank and a vendor keyring paired on one machine, with the bank's inbox and store."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from fusion.ingest import Inbox
from fusion.store import Store
from matcher.keyring import init_local_pair
from matcher.manifest import BatchKeys

__all__ = ["LocalPair"]


class LocalPair:
    """A bank and a vendor keyring paired as `fusion keys pair-vendor` pairs them.

    Everything lives under `root`: the keyrings, and the bank's inbox and store in root/bank.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bank, self.vendor = init_local_pair(
            root / "bank-keys", root / "vendor-keys", vendor_id="vendor-a"
        )
        self.inbox = Inbox(root / "bank").ensure()
        self.store_path = root / "bank" / "fusion.duckdb"

    def store(self, *, read_only: bool = False) -> Store:
        """Return the bank's store, opened with the bank's store key."""
        return Store.open(self.store_path, key=self.bank.store_key(), read_only=read_only)

    def sealing_keys(self, epoch: str) -> tuple[BatchKeys, Ed25519PrivateKey, X25519PublicKey]:
        """Return a batch's manifest keys for `epoch`, the vendor's signer and the bank's key."""
        signing_kid, signer = self.vendor.current_signer()
        recipient_kid, recipient = self.vendor.current_recipient_public()
        keys = BatchKeys(
            vendor_id="vendor-a",
            signing_kid=signing_kid,
            recipient_kid=recipient_kid,
            salt_epoch=epoch,
        )
        return keys, signer, recipient

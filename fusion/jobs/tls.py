"""TLS for a client of the bank's cluster: its PEM files, or Dask's config, never plain text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distributed.security import Security

from contracts.errors import ConfigError

__all__ = ["TlsFiles", "client_security"]


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """PEM files for a client of the bank's cluster: its CA, this client's certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def security(self) -> Security:
        """Return Dask's security settings for a client with these files, encryption required."""
        for what, path in (("ca_file", self.ca_file), ("cert_file", self.cert_file),
                           ("key_file", self.key_file)):  # fmt: skip
            if not Path(path).is_file():
                raise ConfigError(
                    f"TLS {what} {str(path)!r} is not a readable file; give the PEM files the "
                    "cluster's CA issued for this client (docs/cluster.md)",
                    setting=what,
                )
        return Security(
            require_encryption=True,
            tls_ca_file=str(self.ca_file),
            tls_client_cert=str(self.cert_file),
            tls_client_key=str(self.key_file),
        )


def client_security(tls: TlsFiles | None) -> Security:
    """Return the client's TLS settings: the files given, else Dask's config; refuse neither."""
    if tls is not None:
        return tls.security()
    security = Security(require_encryption=True)
    # Security sets its fields from Dask's config at run time; mypy cannot see them.
    if not getattr(security, "tls_ca_file", None) or not getattr(security, "tls_client_cert", None):
        raise ConfigError(
            "a tls:// cluster needs the cluster CA and this client's certificate and key: set "
            "distributed.comm.tls.ca-file, distributed.comm.tls.client.cert and "
            "distributed.comm.tls.client.key in Dask's config (or DASK_DISTRIBUTED__COMM__TLS__* "
            "variables), or pass the PEM files (docs/cluster.md)",
            setting="cluster",
        )
    return security

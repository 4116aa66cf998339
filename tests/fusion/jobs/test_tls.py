"""A tls:// cluster needs the client's certificates, from files or Dask's config."""

from __future__ import annotations

from pathlib import Path

import dask.config
import pytest

from contracts.errors import ConfigError
from fusion.jobs.runner import parse_cluster
from fusion.jobs.tls import TlsFiles


def test_tls_needs_a_ca_and_client_certificate(tmp_path: Path):
    blank = {
        "distributed.comm.tls.ca-file": None,
        "distributed.comm.tls.client.cert": None,
        "distributed.comm.tls.client.key": None,
    }
    with dask.config.set(blank), pytest.raises(ConfigError, match="ca-file"):
        parse_cluster("tls://10.1.2.3:8786")
    missing = TlsFiles(ca_file=tmp_path / "ca.pem", cert_file=tmp_path / "c", key_file=tmp_path)
    with pytest.raises(ConfigError, match="ca_file") as caught:
        parse_cluster("tls://10.1.2.3:8786", tls=missing)
    assert caught.value.setting == "ca_file"

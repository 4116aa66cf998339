"""Hostile request bodies and parameters on a real server: no 500, small 422s naming the field,
strict types, no future outcomes, no docs with --public, no query strings in the access log."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from typer.testing import CliRunner

from api import ApiSettings
from api.app import MAX_REPORTED_ERRORS
from contracts.errors import ConfigError
from fusion.retention import Retention
from fusion.runfolder import RunFolder
from labs.cli import app as cli
from tests.support.polling import eventually
from tests.support.server import ServedRun, Tokens, bearer, issue_tokens

# JSON has no NaN or Infinity, but Python's parser (and so FastAPI's) reads them; 1e400 is
# read as Infinity.
HOSTILE_NUMBERS = ("NaN", "Infinity", "-Infinity", "1e400")


def _known(served: ServedRun) -> int:
    scores = pl.read_parquet(RunFolder(served.run).scores / "acquisition.parquet")
    return int(scores["customer_id"][0])


def _post(served: ServedRun, path: str, text: str, token: str) -> httpx.Response:
    """POST raw JSON text (httpx would refuse to encode NaN)."""
    headers = {**bearer(token), "Content-Type": "application/json"}
    return httpx.post(f"{served.url}{path}", content=text, headers=headers, timeout=60)


def _bodies(served: ServedRun, value: str) -> list[tuple[str, str, str, list[object]]]:
    """(path, raw body, token, the field the 422 must name) with `value` in one field."""
    tokens = served.tokens
    outcome = f'"customer_id": {_known(served)}, "treatment": true, "responded": false'
    return [
        ("/v1/scores", f'{{"customer_ids": [{value}]}}', tokens.campaign_tool,
         ["body", "customer_ids", 0]),
        ("/v1/scores", f'{{"customer_ids": [1], "boost": {value}}}', tokens.admin,
         ["body", "boost"]),
        ("/v1/outcomes", f'{{"campaign_id": "c", "outcomes": [{{"customer_id": {value}, '
         '"treatment": true, "responded": false}]}', tokens.campaign_tool,
         ["body", "outcomes", 0, "customer_id"]),
        ("/v1/outcomes", f'{{"campaign_id": "c", "outcomes": [{{{outcome}, '
         f'"occurred_at": {value}}}]}}', tokens.campaign_tool,
         ["body", "outcomes", 0, "occurred_at"]),
        ("/v1/outcomes", f'{{"campaign_id": {value}, "outcomes": [{{{outcome}}}]}}',
         tokens.admin, ["body", "campaign_id"]),
        ("/v1/query", f'{{"sql": {value}}}', tokens.analyst, ["body", "sql"]),
        ("/v1/query", f'{{"sql": "SELECT 1 AS one", "limit": {value}}}', tokens.head_office,
         ["body", "limit"]),
    ]  # fmt: skip


@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
def test_nan_and_infinity_in_a_body_get_a_small_422_naming_the_field(served: ServedRun, value: str):
    for path, text, token, field in _bodies(served, value):
        answer = _post(served, path, text, token)
        assert answer.status_code == 422, (path, text, answer.text)
        body = answer.json()
        assert field in [error["loc"] for error in body["detail"]], (path, body)
        assert all(set(error) == {"loc", "msg", "type"} for error in body["detail"])
        assert value.lstrip("-") not in answer.text and "inf" not in answer.text.lower()


@pytest.mark.parametrize(
    "occurred_at",
    ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2099-01-01T00:00:00Z",
     "9999-12-31T23:59:59", "+10000-01-01T00:00:00", "2026-13-01T00:00:00", 1_700_000_000,
     True],
)  # fmt: skip
def test_an_outcome_time_out_of_range_or_in_the_future_gets_422(
    served: ServedRun, occurred_at: object
):
    body = {
        "campaign_id": "dates",
        "outcomes": [
            {"customer_id": _known(served), "treatment": True, "responded": False},
            {
                "customer_id": _known(served),
                "treatment": True,
                "responded": True,
                "occurred_at": occurred_at,
            },
        ],
    }
    answer = _post(served, "/v1/outcomes", json.dumps(body), served.tokens.campaign_tool)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    named = str(detail) if isinstance(detail, str) else str([e["loc"] for e in detail])
    assert "occurred_at" in named and "1" in named, detail


def test_an_outcome_within_the_clock_skew_is_recorded_and_one_past_it_is_not(served: ServedRun):
    skew = served.settings.outcome_clock_skew
    now = datetime.now(UTC)
    headers = bearer(served.tokens.campaign_tool)

    def post(at: datetime) -> httpx.Response:
        outcome = {"customer_id": _known(served), "treatment": False, "responded": False}
        body = {"campaign_id": "skew", "outcomes": [{**outcome, "occurred_at": at.isoformat()}]}
        return httpx.post(f"{served.url}/v1/outcomes", json=body, headers=headers)

    assert post(now + skew / 2).status_code == 201
    # An offset counts: the same instant written in +08:00 is just as far ahead.
    late = post((now + skew + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=8))))
    assert late.status_code == 422 and "in the future" in late.json()["detail"]
    assert post(now - timedelta(days=3)).status_code == 201


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/scores", {"customer_ids": ["1000000010"]}),
        ("/v1/scores", {"customer_ids": [True]}),
        ("/v1/scores", {"customer_ids": [1.0]}),
        ("/v1/outcomes", {"campaign_id": "c", "outcomes": [
            {"customer_id": 1, "treatment": "yes", "responded": False}]}),
        ("/v1/outcomes", {"campaign_id": "c", "outcomes": [
            {"customer_id": 1, "treatment": 1, "responded": False}]}),
        ("/v1/outcomes", {"campaign_id": "c", "outcomes": [
            {"customer_id": 1, "treatment": True, "responded": "false"}]}),
        ("/v1/outcomes", {"campaign_id": "c\n", "outcomes": [
            {"customer_id": 1, "treatment": True, "responded": False}]}),
        ("/v1/outcomes", {"campaign_id": 7, "outcomes": [
            {"customer_id": 1, "treatment": True, "responded": False}]}),
    ],
)  # fmt: skip
def test_lax_values_are_refused_not_converted(served: ServedRun, path: str, body: Any):
    answer = httpx.post(f"{served.url}{path}", json=body, headers=bearer(served.tokens.admin))
    assert answer.status_code == 422, answer.text


def test_a_branch_with_a_trailing_newline_is_refused(served: ServedRun):
    headers = bearer(served.tokens.campaign_tool)
    url = f"{served.url}/v1/lists/rescue"
    assert httpx.get(url, params={"branch": "B001"}, headers=headers).status_code == 200
    for branch in ("B001\n", "B001\r\n", "\nB001", "B001 "):
        answer = httpx.get(url, params={"branch": branch}, headers=headers)
        assert answer.status_code == 422, (branch, answer.text)


def test_unknown_fields_are_refused_with_a_small_answer(served: ServedRun):
    # Just under the 1 MiB body cap: tens of thousands of made-up keys.
    keys = 80_000
    extra = ",".join(f'"k{i:06d}":0' for i in range(keys))
    text = '{"customer_ids": [1], ' + extra + "}"
    assert len(text) < served.settings.max_body_bytes
    answer = _post(served, "/v1/scores", text, served.tokens.campaign_tool)
    assert answer.status_code == 422
    assert len(answer.content) < 4_000
    body = answer.json()
    assert len(body["detail"]) == MAX_REPORTED_ERRORS
    assert body["more_errors"] == keys - MAX_REPORTED_ERRORS
    assert body["detail"][0] == {
        "loc": ["body", "k000000"],
        "msg": "Extra inputs are not permitted",
        "type": "extra_forbidden",
    }
    # A huge key comes back cut short, not whole.
    text = '{"customer_ids": [1], "' + "k" * 500_000 + '": 0}'
    answer = _post(served, "/v1/scores", text, served.tokens.campaign_tool)
    assert answer.status_code == 422 and len(answer.content) < 1_000


def test_a_malformed_body_gets_422_without_its_text(served: ServedRun):
    secret = "s3cr3t-" + "x" * 40
    for text in (f'{{"sql": "{secret}"', f"[{secret}]", f'"{secret}"', ""):
        answer = _post(served, "/v1/query", text, served.tokens.analyst)
        assert answer.status_code == 422, answer.text
        assert secret not in answer.text


def test_docs_are_served_on_loopback_by_default(served: ServedRun):
    assert served.settings.serves_docs
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(f"{served.url}{path}").status_code == 200, path


@dataclass(frozen=True)
class _Process:
    url: str
    tokens: Tokens
    stdout: Path
    stderr: Path


@pytest.fixture(scope="module")
def public_serve(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Process]:
    """`fusion serve --public` in its own process on a copy of the demo run, logs to files."""
    root = tmp_path_factory.mktemp("public")
    run = root / "run"
    shutil.copytree(demo_run, run, symlinks=True)
    tokens = issue_tokens(run)
    stdout, stderr = root / "stdout.log", root / "stderr.log"
    command = [sys.executable, "-m", "labs.cli", "serve", "--run", str(run), "--port", "0"]
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [*command, "--public"], stdout=out, stderr=err, env={**os.environ, "NO_COLOR": "1"}
        )
    try:

        def started() -> str | None:
            assert process.poll() is None, stderr.read_text()
            found = re.search(r"running on (http://127\.0\.0\.1:\d+)", stderr.read_text())
            return found.group(1) if found else None

        url = eventually(started, timeout=60, interval=0.1, what="fusion serve to start")
        yield _Process(url, tokens, stdout, stderr)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def test_docs_are_off_by_default_with_public(public_serve: _Process):
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert httpx.get(f"{public_serve.url}{path}").status_code == 404, path
    assert httpx.get(f"{public_serve.url}/healthz").status_code == 200


def test_the_access_log_keeps_no_query_string(public_serve: _Process):
    secret = public_serve.tokens.admin
    with httpx.Client(base_url=public_serve.url) as client:
        refused = client.get(f"/metrics?token={secret}")
        assert refused.status_code == 401
        listed = client.get(
            "/v1/lists/rescue?branch=B001&format=csv&marker=query-marker",
            headers=bearer(public_serve.tokens.campaign_tool),
        )
        assert listed.status_code == 200

    def logged() -> str | None:
        text = public_serve.stdout.read_text()
        return text if '"GET /v1/lists/rescue HTTP/1.1" 200' in text else None

    text = eventually(logged, timeout=10, interval=0.05, what="the access log lines")
    assert '"GET /metrics HTTP/1.1" 401' in text
    logs = text + public_serve.stderr.read_text()
    assert secret not in logs and "token=" not in logs and "query-marker" not in logs


@pytest.mark.parametrize(
    ("public", "docs", "served_docs"),
    [(False, None, True), (True, None, False), (True, True, True), (False, False, False)],
)
def test_the_docs_switch_follows_the_bind_unless_set(
    public: bool, docs: bool | None, served_docs: bool
):
    settings = ApiSettings(run=Path("r"), allow_non_loopback=public, docs=docs)
    assert settings.serves_docs is served_docs


def test_a_negative_clock_skew_is_refused():
    with pytest.raises(ConfigError, match="outcome_clock_skew must be >= 0"):
        ApiSettings(run=Path("r"), outcome_clock_skew=timedelta(seconds=-1))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_query_response_bytes", 0, "max_query_response_bytes must be >= 1"),
        ("max_query_response_bytes", 1.5, "max_query_response_bytes must be >= 1"),
        ("quarantine_retention", 2 << 30, "quarantine_retention must be a Retention"),
        ("archive_retention", None, "archive_retention must be a Retention"),
        ("query_limits", {"max_rows": 5}, "query_limits must be a QueryLimits"),
    ],
)
def test_response_and_retention_settings_are_checked_at_start(
    field: str, value: object, message: str
):
    with pytest.raises(ConfigError, match=message) as refused:
        ApiSettings(run=Path("r"), **{field: value})  # type: ignore[arg-type]
    assert refused.value.setting == field


def test_retention_defaults_are_the_documented_bounds():
    settings = ApiSettings(run=Path("r"))
    assert settings.quarantine_retention == Retention(max_bytes=2 << 30, max_age=timedelta(30))
    assert settings.archive_retention == Retention(max_bytes=16 << 30, max_age=timedelta(365))
    assert settings.max_query_response_bytes == 8 << 20


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--quarantine-size", "lots"], "--quarantine-size must be a size"),
        (["--archive-days", "-1"], "--archive-days must be >= 0"),
    ],
)
def test_fusion_serve_refuses_a_bad_retention_before_serving(
    tmp_path: Path, options: list[str], message: str
):
    result = CliRunner().invoke(cli, ["serve", "--run", str(tmp_path), *options])
    assert result.exit_code != 0
    assert message in result.output

"""OPRF-mode PSI on a real world, through the store: exact intersection, same tags as salted.

One world, one store, both modes: the salted run and the OPRF run of the same snapshot must
give the same matched customers (the true intersection) and the same features; the bank opens
only the rows of its own customers, the vendor's budget caps the evaluations, and every
malformed answer, extract or batch is refused or quarantined with nothing half-written.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from contracts.errors import ConfigError, EvaluationCapError, OprfError
from contracts.schemas import VENDOR_OPRF_BATCH, MatchMode
from contracts.taxonomy import load_taxonomy
from fusion.features import build_features
from fusion.ingest import ingest_file
from fusion.jobs import ClusterEngine, Engine
from fusion.match import load_extract, match
from fusion.oprf_psi import finish_match, request_match
from fusion.store import Store
from labs.world import WorldConfig, WorldFiles, generate_world
from matcher.envelope import seal
from matcher.identity import normalize_phones
from matcher.keyed_hash import hmac_digest, keyed_hash
from matcher.manifest import Manifest
from matcher.oprf import OprfMode, blind_evaluate, evaluate
from matcher.oprf_exchange import ANSWER, REQUEST, ElementFile, answer_request
from matcher.oprf_match import derive_row_keys, open_rows_by_identifier, oprf_input
from matcher.pack import PackOptions, build_oprf_batch, pack_users
from matcher.psi import DEFAULT_PRIORITY, customer_identifiers
from tests.support.local_pair import LocalPair

pytestmark = pytest.mark.slow  # stores, sealed batches and OPRF exchanges end to end

SNAPSHOT = date(2026, 9, 30)
DATA_TIME = datetime(2026, 9, 30, 6, tzinfo=UTC)
NOW = datetime(2026, 10, 1, 9, tzinfo=UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldFiles:
    out = tmp_path_factory.mktemp("oprf-world")
    generate_world(WorldConfig(customers=2_000, seed=13, snapshot_date=SNAPSHOT), out)
    return WorldFiles(out)


class Parties(LocalPair):
    """A paired bank and vendor on one machine, who send batches through the bank's inbox."""

    def send(
        self,
        users: Path,
        *,
        mode: MatchMode,
        name: str,
        when: datetime = DATA_TIME,
        verifiable: bool = True,
    ) -> str:
        sealed = self.inbox.inbox / name
        options = PackOptions(verifiable=verifiable)
        packed = pack_users(
            users, sealed, keyring=self.vendor, now=when, mode=mode, options=options
        )
        with self.store() as store:
            outcome = ingest_file(sealed, store=store, keyring=self.bank, inbox=self.inbox, now=NOW)
        assert outcome.status == "loaded", outcome
        return packed.batch_id

    def send_frame(self, batch: pl.DataFrame, *, name: str) -> tuple[str, str]:
        """Seal any OPRF-mode frame as the vendor would and ingest it; return (id, status)."""
        payload, sealed = self.root / f"{name}.parquet", self.inbox.inbox / f"{name}.sealed"
        batch.write_parquet(payload)
        keys, signer, recipient = self.sealing_keys(self.vendor.current_oprf_epoch())
        manifest = Manifest.new(
            batch_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"test-oprf-batch/{name}")),
            keys=keys,
            created_at=DATA_TIME,
            rows=batch.height,
            taxonomy_version=load_taxonomy().version,
            contract=VENDOR_OPRF_BATCH.contract,
            mode=MatchMode.OPRF,
        )
        seal(payload, sealed, manifest=manifest, recipient=recipient, signer=signer)
        with self.store() as store:
            outcome = ingest_file(sealed, store=store, keyring=self.bank, inbox=self.inbox, now=NOW)
        return manifest.batch_id, outcome.status

    def exchange(
        self,
        extract: pl.DataFrame,
        *,
        declared: int | None = None,
        epoch: str | None = None,
        engine: Engine | None = None,
    ) -> tuple[ElementFile, ElementFile]:
        """Run request -> files on disk -> vendor answer; return (request, answer) as read."""
        with self.store() as store:
            _, request = request_match(
                store,
                extract,
                epoch_id=epoch or self.vendor.current_oprf_epoch(),
                snapshot_date=SNAPSHOT,
                now=NOW,
                engine=engine,
                job_dir=None if engine is None else self.root / "jobs",
            )
        request.write(self.root / "request.oprf")
        sent = ElementFile.read(self.root / "request.oprf", kind=REQUEST)
        # The bank declares the evaluations it needs: one per customer and usable identifier.
        answer, _ = answer_request(self.vendor, sent, declared_customers=declared or len(sent))
        answer.write(self.root / "answer.oprf")
        return sent, ElementFile.read(self.root / "answer.oprf", kind=ANSWER)


def _vendor_lists(store: Store, epoch: str) -> pl.DataFrame:
    """Each matched customer's vendor lists (apps and tags) in the given epoch's match."""
    return (
        store.execute(
            "SELECT m.customer_id, a.app_ids, a.app_days, a.app_sessions, t.tag_ids, "
            "t.tag_weights FROM matches AS m "
            "JOIN vendor_apps AS a ON a.key = m.key AND a.batch_id = m.batch_id "
            "JOIN vendor_tags AS t ON t.key = m.key AND t.batch_id = m.batch_id "
            "WHERE m.salt_epoch = ? ORDER BY m.customer_id",
            [epoch],
        )
        .pl()
        .with_columns(pl.col("tag_weights").cast(pl.List(pl.Float32)))
    )


def test_the_oprf_match_is_the_true_intersection_with_the_salted_runs_tags(
    world: WorldFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    parties = Parties(tmp_path)
    extract = pl.read_parquet(world.customers)
    truth = set(pl.read_parquet(world.intersection)["customer_id"].to_list())
    salt = parties.bank.current_salt().epoch_id
    oprf = parties.vendor.current_oprf_epoch()

    parties.send(world.vendor_users, mode=MatchMode.SALTED, name="salted.sealed")
    batch = parties.send(world.vendor_users, mode=MatchMode.OPRF, name="oprf.sealed")
    with parties.store() as store:
        load_extract(
            store, extract, epoch=parties.bank.current_salt(), snapshot_date=SNAPSHOT, now=NOW
        )
        salted = match(store, epoch_id=salt, snapshot_date=SNAPSHOT, now=NOW)
        vendor_rows = store.execute("SELECT count(*) FROM vendor_oprf_rows").fetchone()
        mode = store.execute("SELECT mode FROM batches WHERE batch_id = ?", [batch]).fetchone()
    assert salted.matched == len(truth) and mode == ("oprf",)

    with caplog.at_level(logging.DEBUG):
        request, answer = parties.exchange(extract)
        with parties.store() as store:
            done = finish_match(store, extract, answer, now=NOW)
            matched = store.execute(
                "SELECT customer_id FROM matches WHERE salt_epoch = ?", [oprf]
            ).pl()
            left = store.execute("SELECT count(*) FROM vendor_oprf_rows").fetchone()
            seeds = store.execute(
                "SELECT count(blind_seed), count(finished_at) FROM oprf_requests"
            ).fetchone()
            reasons = store.execute(
                "SELECT reasons FROM match_runs WHERE salt_epoch = ?", [oprf]
            ).fetchone()
            salted_lists, oprf_lists = _vendor_lists(store, salt), _vendor_lists(store, oprf)
            features = {
                epoch: build_features(store, snapshot_date=SNAPSHOT, salt_epoch=epoch).table
                for epoch in (salt, oprf)
            }

    # The exact intersection, and for each matched customer the same lists as the salted run.
    assert set(matched["customer_id"].to_list()) == truth and done.run.matched == len(truth)
    assert salted_lists.equals(oprf_lists) and salted_lists.height == len(truth)
    assert features[salt].equals(features[oprf])
    # Every usable identifier was blinded once; the vendor's rows: opened = matched, the rest
    # dropped; the OPRF run counts the salted run's links and conflicts.
    assert len(request) == sum(c["keyed"] for c in salted.by_identifier.values())
    assert salted.keyed == done.run.keyed and done.run.by_identifier == salted.by_identifier
    assert done.run.conflicts == salted.conflicts > 0
    assert vendor_rows is not None and done.vendor_rows == vendor_rows[0]
    assert done.opened == len(truth) and done.dropped == vendor_rows[0] - len(truth)
    assert left == (0,) and seeds == (0, 1)  # nothing sealed kept, the seed erased
    assert reasons is not None and f'"dropped_unopened": {done.dropped}' in reasons[0]

    # No raw phone in the store, the exchange files or the log.
    phones = normalize_phones(extract["phone"]).values.drop_nulls().to_list()[:300]
    blobs = [(tmp_path / name).read_bytes() for name in ("request.oprf", "answer.oprf")]
    raw = (tmp_path / "bank" / "fusion.duckdb").read_bytes()
    for phone in phones:
        assert phone not in caplog.text and phone.encode() not in raw
        assert all(phone.encode() not in blob for blob in blobs)


def test_the_bank_cannot_open_a_row_of_a_user_it_never_had_evaluated(
    world: WorldFiles, tmp_path: Path
):
    parties = Parties(tmp_path)
    extract = pl.read_parquet(world.customers)
    users = pl.read_parquet(world.vendor_users)
    parties.send(world.vendor_users, mode=MatchMode.OPRF, name="oprf.sealed")
    with parties.store() as store:
        sealed = store.execute("SELECT label, sealed FROM vendor_oprf_rows").pl()
    _, answer = parties.exchange(extract)
    with parties.store() as store:
        finish_match(store, extract, answer, now=NOW)

    # A vendor user who is not a bank customer: its label is none the bank derived, and no key
    # the bank holds opens its row; the salted key of its phone or a guessed label do not either.
    bank_phones = set(normalize_phones(extract["phone"]).values.drop_nulls().to_list())
    outsider = next(
        p for p in normalize_phones(users["phone"]).values.drop_nulls() if p not in bank_phones
    )
    key = parties.vendor.oprf_key(answer.epoch_id)
    (label,), _ = derive_row_keys(evaluate(key, [outsider.encode()], mode=OprfMode.VOPRF))
    row = sealed.filter(pl.col("label").bin.slice(0, 16) == label)
    assert row.height == 1  # the vendor sealed it (its phone label first) ...
    blob, composite = row["sealed"][0], row["label"][0]
    # ... and the bank never derived its label
    assert all(label not in known for known in _bank_labels(parties))
    salted = keyed_hash(pl.Series([outsider]), parties.bank.current_salt(), domain="mobile")[0]
    # What the bank's evaluations gave it: the keys of its own customers' identifiers.
    own = [oprf_input("mobile", p) for p in sorted(bank_phones)[:300]]
    own += [oprf_input("id_number", i) for i in extract["id_number"].str.to_uppercase()[:100]]
    _, own_keys = derive_row_keys(evaluate(key, own, mode=OprfMode.VOPRF))
    for guess in [*own_keys, salted, bytes(32)]:
        for kind in DEFAULT_PRIORITY:
            with pytest.raises(OprfError):
                open_rows_by_identifier([blob], [composite], [kind], [guess])
    # ... and after the match the store no longer holds it at all.
    with parties.store() as store:
        assert store.execute("SELECT count(*) FROM vendor_oprf_rows").fetchone() == (0,)


def _bank_labels(parties: Parties) -> set[bytes]:
    with parties.store() as store:
        rows = store.execute(
            "SELECT key FROM customers WHERE salt_epoch = ? AND key IS NOT NULL",
            [parties.vendor.current_oprf_epoch()],
        ).fetchall()
    return {bytes(r[0]) for r in rows}


def test_the_vendor_caps_evaluations_per_epoch_and_counts_nothing_it_refuses(
    world: WorldFiles, tmp_path: Path
):
    parties = Parties(tmp_path)
    extract = pl.read_parquet(world.customers)
    # The bank declared far fewer customers than it now asks for: the request is refused whole.
    with pytest.raises(EvaluationCapError, match="allows 1110 OPRF evaluations"):
        parties.exchange(extract, declared=100)
    epoch = parties.vendor.current_oprf_epoch()
    with parties.vendor.oprf_budget(epoch) as stored:
        assert stored.read() is None  # refused before anything was counted or stored
    # Declared honestly (one evaluation per customer and usable identifier): answered, counted.
    found = customer_identifiers(extract, DEFAULT_PRIORITY)
    need = sum(found.by_identifier[kind]["ok"] for kind in DEFAULT_PRIORITY)
    first, _ = parties.exchange(extract, declared=need)
    with parties.vendor.oprf_budget(epoch) as stored:
        fields = stored.read()
    assert fields is not None and fields["used"] == len(first)
    # A second full request in the same epoch passes the cap (x1.1 + 1000 is a margin, not a
    # second allowance) and is refused; a changed declaration is refused too.
    with pytest.raises(EvaluationCapError):
        parties.exchange(extract, declared=need)
    with pytest.raises(ConfigError, match="never raised within an epoch"):
        parties.exchange(extract, declared=need * 10)
    # A new epoch starts a new budget.
    parties.vendor.rotate("oprf")
    assert len(parties.exchange(extract, declared=need)[1]) == len(first)


def test_answers_are_used_once_for_the_extract_they_were_made_from(
    world: WorldFiles, tmp_path: Path
):
    parties = Parties(tmp_path)
    extract = pl.read_parquet(world.customers)
    _, answer = parties.exchange(extract)
    with parties.store() as store:
        # No batch yet: refused before anything is written, and the request stays pending.
        with pytest.raises(ConfigError, match="same answer"):
            finish_match(store, extract, answer, now=NOW)
    # A request made before any batch is in the base mode, so the batch is too.
    parties.send(world.vendor_users, mode=MatchMode.OPRF, name="oprf.sealed", verifiable=False)
    with parties.store() as store:
        # Another extract (one phone changed) is refused: the answer is for the other phones.
        other = extract.with_columns(
            phone=pl.when(pl.col("customer_id") == extract["customer_id"][0])
            .then(pl.lit("13912345678"))
            .otherwise(pl.col("phone"))
        )
        with pytest.raises(ConfigError, match="not the one request"):
            finish_match(store, other, answer, now=NOW)
        # An answer whose element was altered is refused, and the request stays pending.
        elements = (b"\xff" * 32, *answer.elements[1:])  # not a ristretto255 encoding
        bad = ElementFile(ANSWER, answer.request_id, answer.epoch_id, elements)
        with pytest.raises(OprfError):
            finish_match(store, extract, bad, now=NOW)
        # A short answer or one for another epoch does not fit the request.
        short = ElementFile(ANSWER, answer.request_id, answer.epoch_id, answer.elements[:-1])
        with pytest.raises(OprfError, match="does not fit"):
            finish_match(store, extract, short, now=NOW)
        assert store.execute("SELECT count(*) FROM matches").fetchone() == (0,)
        done = finish_match(store, extract, answer, now=NOW)
        assert done.opened > 0
        with pytest.raises(OprfError, match="already answered and used"):
            finish_match(store, extract, answer, now=NOW)
        stranger = ElementFile(ANSWER, "1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b", answer.epoch_id, ())
        with pytest.raises(OprfError, match="no OPRF request"):
            finish_match(store, extract, stranger, now=NOW)


def _oprf_run(
    parties: Parties, world: WorldFiles, engine: Engine | None
) -> tuple[int, int, int, pl.DataFrame]:
    """Return (matched, opened, dropped, matched customers' vendor lists) of one OPRF match."""
    extract = pl.read_parquet(world.customers)
    parties.send(world.vendor_users, mode=MatchMode.OPRF, name="oprf.sealed")
    _, answer = parties.exchange(extract, engine=engine)
    with parties.store() as store:
        done = finish_match(
            store,
            extract,
            answer,
            now=NOW,
            engine=engine,
            job_dir=None if engine is None else parties.root / "jobs",
        )
        lists = _vendor_lists(store, answer.epoch_id)
    return done.run.matched, done.opened, done.dropped, lists


def test_blinding_and_finalising_on_a_cluster_give_the_same_matches(
    world: WorldFiles, tmp_path: Path, cluster: ClusterEngine
):
    in_process = _oprf_run(Parties(tmp_path / "in-process"), world, None)
    on_cluster = _oprf_run(Parties(tmp_path / "cluster"), world, cluster)
    truth = set(pl.read_parquet(world.intersection)["customer_id"].to_list())
    assert in_process[:3] == on_cluster[:3] and in_process[0] == len(truth)
    assert set(on_cluster[3]["customer_id"].to_list()) == truth
    assert on_cluster[3].equals(in_process[3])
    # The job files (blinded elements, labels, the chunks of phones) are gone with the jobs.
    assert not any((tmp_path / "cluster" / "jobs").rglob("*.parquet"))


def test_an_answer_to_a_request_blinded_the_old_way_is_refused(world: WorldFiles, tmp_path: Path):
    parties = Parties(tmp_path)
    extract = pl.read_parquet(world.customers)
    _, answer = parties.exchange(extract)
    found = customer_identifiers(extract, DEFAULT_PRIORITY)
    lines = "\n".join(
        f"{c}:{oprf_input(kind, v).decode()}"
        for kind in DEFAULT_PRIORITY
        for c, v in found.frame.filter(pl.col(f"{kind}_status") == "ok")
        .sort("customer_id")
        .select("customer_id", kind)
        .iter_rows()
    )
    with parties.store() as store:
        (seed,) = store.execute(
            "SELECT blind_seed FROM oprf_requests WHERE request_id = ?", [answer.request_id]
        ).fetchone()
        # What an earlier version stored: the inputs MAC without the blinding's label.
        store.execute(
            "UPDATE oprf_requests SET inputs_mac = ? WHERE request_id = ?",
            [hmac_digest(bytes(seed), lines.encode()), answer.request_id],
        )
        with pytest.raises(ConfigError, match="drew its blinds another way"):
            finish_match(store, extract, answer, now=NOW)


def test_a_batch_whose_matched_rows_do_not_open_or_break_the_contract_is_quarantined(
    world: WorldFiles, tmp_path: Path
):
    parties = Parties(tmp_path)
    extract = pl.read_parquet(world.customers)
    users = pl.read_parquet(world.vendor_users)
    key = parties.vendor.oprf_key(parties.vendor.current_oprf_epoch())
    good, _, _, _ = build_oprf_batch(users, key)
    # Rows sealed for other labels: each label keeps its row's bytes but gets its neighbour's.
    rolled = good["sealed"].to_list()
    swapped = good.with_columns(sealed=pl.Series([rolled[-1], *rolled[:-1]], dtype=pl.Binary))
    unknown_tag = users.with_columns(tag_ids=pl.col("tag_ids").list.eval(pl.element() + 10**7))
    broken, _, _, _ = build_oprf_batch(unknown_tag, key)
    ids = {}
    for name, frame in {"good": good, "swapped": swapped, "broken": broken}.items():
        ids[name], status = parties.send_frame(frame, name=name)
        assert status == "loaded"  # sealed rows pass the arrival contract: shapes only
    _, answer = parties.exchange(extract)
    with parties.store() as store:
        done = finish_match(store, extract, answer, now=NOW)
        ledger = dict(store.execute("SELECT batch_id, status FROM batches").fetchall())
        loaded = store.execute("SELECT DISTINCT batch_id FROM vendor_apps").fetchall()
        report = store.execute(
            "SELECT report FROM batches WHERE batch_id = ?", [ids["broken"]]
        ).fetchone()
    assert done.quarantined == {
        ids["swapped"]: ("matched_rows_open",),
        ids["broken"]: ("tags_known",),
    }
    assert ledger[ids["swapped"]] == ledger[ids["broken"]] == "quarantined"
    assert ledger[ids["good"]] == "loaded" and loaded == [(ids["good"],)]
    # Batches of the mobile number alone: only the customers matched by phone.
    truth = pl.read_parquet(world.intersection).filter(pl.col("id_type") == "mobile")
    assert done.run.matched == truth.height
    assert report is not None and "tags_known" in report[0]


def test_an_oprf_batch_breaking_its_arrival_contract_is_quarantined(
    world: WorldFiles, tmp_path: Path
):
    parties = Parties(tmp_path)
    key = parties.vendor.oprf_key(parties.vendor.current_oprf_epoch())
    batch, _, _, _ = build_oprf_batch(pl.read_parquet(world.vendor_users).head(200), key)
    twice = pl.concat([batch, batch.head(3)])
    _, status = parties.send_frame(twice, name="twice")
    assert status == "quarantined"
    short = batch.with_columns(sealed=pl.col("sealed").bin.slice(0, 20))
    _, status = parties.send_frame(short, name="short")
    assert status == "quarantined"
    with parties.store() as store:
        reasons = [
            r[0] for r in store.execute("SELECT reasons FROM batches ORDER BY reasons").fetchall()
        ]
        assert store.execute("SELECT count(*) FROM vendor_oprf_rows").fetchone() == (0,)
    assert reasons == ['["label_unique"]', '["sealed_size"]']


def test_an_answer_with_one_point_under_another_key_is_refused(world: WorldFiles, tmp_path: Path):
    """The verifiable mode: the vendor's batch publishes its key, so an answer that evaluates one
    customer under another key (to single them out) fails its proof and changes nothing."""
    parties = Parties(tmp_path)
    extract = pl.read_parquet(world.customers).head(400)
    parties.send(world.vendor_users, mode=MatchMode.OPRF, name="oprf.sealed")
    request, answer = parties.exchange(extract)
    assert request.mode is answer.mode is OprfMode.VOPRF and len(answer.proofs) == 1
    other = parties.vendor.oprf_key(parties.vendor.rotate("oprf"))
    split = list(answer.elements)
    split[7] = blind_evaluate(other, [request.elements[7]])[0]
    forged = ElementFile(
        ANSWER, answer.request_id, answer.epoch_id, tuple(split), answer.mode, answer.echo,
        answer.proofs,
    )  # fmt: skip
    with parties.store() as store, pytest.raises(OprfError, match="fails its VOPRF proof"):
        finish_match(store, extract, forged, now=NOW)
    with parties.store() as store:
        assert store.execute("SELECT count(*) FROM matches").fetchone() == (0,)
        done = finish_match(store, extract, answer, now=NOW)  # still pending: the true answer
    assert done.run.matched > 0

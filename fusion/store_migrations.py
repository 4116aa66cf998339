"""The store's schema as numbered migrations: the tables every store file holds, step by step.

`fusion.store.Store.open` applies the pending steps in one transaction when it opens a file for
writing; `schema_migrations` records each step applied. A later step adds tables or columns and
never rewrites an earlier one, so a file written by any build migrates forward.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "SCHEMA_MIGRATIONS_DDL", "SCHEMA_VERSION", "Migration"]


@dataclass(frozen=True)
class Migration:
    """One schema step: `statements` run in order, in the transaction of every pending step."""

    version: int
    name: str
    statements: tuple[str, ...]


SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMP NOT NULL
)"""

_LATEST_VIEW = """
CREATE VIEW {view} AS
SELECT v.*
FROM {table} AS v
JOIN batches AS b ON b.batch_id = v.batch_id
WHERE b.status = 'loaded'
QUALIFY row_number() OVER (
    PARTITION BY v.salt_epoch, v.key
    ORDER BY b.finished_at DESC NULLS LAST, v.batch_id DESC
) = 1"""

# Timestamps are naive UTC. No index on `key`: an ART index speeds up base-table point lookups
# but not lookups through the *_latest views, makes the file several times larger and inserts
# slower, and every consumer reads through the views or scans whole batches.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="ledger, vendor data, taxonomy, customers, matches, audit log",
        statements=(
            """
            CREATE TABLE batches (
                batch_id VARCHAR PRIMARY KEY,
                vendor_id VARCHAR,
                sealed_sha256 VARCHAR NOT NULL,
                status VARCHAR NOT NULL CHECK (
                    status IN ('received', 'loaded', 'quarantined', 'duplicate', 'refused')
                ),
                rows BIGINT,
                salt_epoch VARCHAR,
                taxonomy_version VARCHAR,
                mode VARCHAR,
                reasons VARCHAR,
                report VARCHAR,
                received_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP
            )""",
            """
            CREATE TABLE vendor_apps (
                key BLOB NOT NULL,
                salt_epoch VARCHAR,
                batch_id VARCHAR,
                app_ids INTEGER[],
                app_days SMALLINT[],
                app_sessions INTEGER[]
            )""",
            """
            CREATE TABLE vendor_tags (
                key BLOB NOT NULL,
                salt_epoch VARCHAR,
                batch_id VARCHAR,
                tag_ids INTEGER[],
                tag_weights FLOAT[]
            )""",
            _LATEST_VIEW.format(view="vendor_apps_latest", table="vendor_apps"),
            _LATEST_VIEW.format(view="vendor_tags_latest", table="vendor_tags"),
            """
            CREATE TABLE tax_categories (
                taxonomy_version VARCHAR NOT NULL,
                category_id SMALLINT NOT NULL,
                code VARCHAR NOT NULL,
                name VARCHAR NOT NULL,
                name_zh VARCHAR,
                PRIMARY KEY (taxonomy_version, category_id)
            )""",
            """
            CREATE TABLE tax_apps (
                taxonomy_version VARCHAR NOT NULL,
                app_id INTEGER NOT NULL,
                category_id SMALLINT NOT NULL,
                name VARCHAR NOT NULL,
                popularity_rank INTEGER,
                PRIMARY KEY (taxonomy_version, app_id)
            )""",
            """
            CREATE TABLE tax_tags (
                taxonomy_version VARCHAR NOT NULL,
                tag_id INTEGER NOT NULL,
                category_id SMALLINT NOT NULL,
                topic VARCHAR,
                name VARCHAR NOT NULL,
                PRIMARY KEY (taxonomy_version, tag_id)
            )""",
            # Keyed hashes only: the raw phone and ID number never enter the store.
            """
            CREATE TABLE customers (
                customer_id BIGINT NOT NULL,
                branch_id VARCHAR NOT NULL,
                key BLOB,
                salt_epoch VARCHAR,
                snapshot_date DATE
            )""",
            """
            CREATE TABLE matches (
                customer_id BIGINT NOT NULL,
                key BLOB NOT NULL,
                salt_epoch VARCHAR,
                batch_id VARCHAR,
                matched_at TIMESTAMP
            )""",
            # "at" is a reserved word in DuckDB (AT TIME ZONE): name it in quotes in SQL.
            """
            CREATE TABLE audit_log (
                "at" TIMESTAMP NOT NULL,
                actor VARCHAR NOT NULL,
                role VARCHAR,
                action VARCHAR NOT NULL,
                detail VARCHAR,
                rows BIGINT,
                status VARCHAR
            )""",
        ),
    ),
    Migration(
        version=2,
        name="matching: batch data dates, customer key status, match runs",
        statements=(
            # The vendor's data date (manifest created_at): point-in-time features pick the
            # newest batch created on or before a snapshot date.
            "ALTER TABLE batches ADD COLUMN created_at TIMESTAMP",
            # ok | invalid | duplicated: only 'ok' customers carry a key and can match.
            "ALTER TABLE customers ADD COLUMN key_status VARCHAR",
            "ALTER TABLE matches ADD COLUMN snapshot_date DATE",
            """
            CREATE TABLE match_runs (
                run_id VARCHAR PRIMARY KEY,
                salt_epoch VARCHAR NOT NULL,
                snapshot_date DATE NOT NULL,
                customers BIGINT NOT NULL,
                keyed BIGINT NOT NULL,
                invalid BIGINT NOT NULL,
                duplicated BIGINT NOT NULL,
                matched BIGINT NOT NULL,
                reasons VARCHAR,
                finished_at TIMESTAMP NOT NULL
            )""",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        version=3,
        name="service: API tokens (hashes only), campaign outcomes",
        statements=(
            # A token is shown once; only its SHA-256 is kept. `branches` is a comma-separated
            # list for analysts (NULL: every branch), `vendor_id` ties a vendor token to a signer.
            """
            CREATE TABLE api_tokens (
                token_id VARCHAR PRIMARY KEY,
                token_sha256 BLOB NOT NULL UNIQUE,
                role VARCHAR NOT NULL CHECK (
                    role IN ('vendor', 'analyst', 'campaign_tool', 'admin')
                ),
                branches VARCHAR,
                vendor_id VARCHAR,
                label VARCHAR,
                created_at TIMESTAMP NOT NULL,
                revoked_at TIMESTAMP
            )""",
            # Contact and response results a campaign tool reports back, for evaluation and
            # retraining; one row per (campaign, customer), the newest report wins.
            """
            CREATE TABLE outcomes (
                campaign_id VARCHAR NOT NULL,
                customer_id BIGINT NOT NULL,
                treatment BOOLEAN NOT NULL,
                contacted BOOLEAN,
                responded BOOLEAN NOT NULL,
                occurred_at TIMESTAMP,
                recorded_at TIMESTAMP NOT NULL,
                token_id VARCHAR NOT NULL
            )""",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        version=4,
        name="OPRF mode: sealed vendor rows until matched, the bank's pending requests",
        statements=(
            # A vendor row sealed under F_k(phone): the bank opens the matched ones at match time
            # (into vendor_apps/vendor_tags, keyed by label) and then drops every row of the
            # batch, so nothing of a non-matched user stays beyond its count (match_runs).
            """
            CREATE TABLE vendor_oprf_rows (
                label BLOB NOT NULL,
                sealed BLOB NOT NULL,
                salt_epoch VARCHAR NOT NULL,
                batch_id VARCHAR NOT NULL
            )""",
            # A request sent and not yet answered: the seed its blinds are drawn from (erased
            # when the answer is used) and a MAC under that seed of the ids it blinded, so the
            # answer is applied to the same customers. Never a phone.
            """
            CREATE TABLE oprf_requests (
                request_id VARCHAR PRIMARY KEY,
                salt_epoch VARCHAR NOT NULL,
                snapshot_date DATE NOT NULL,
                customers BIGINT NOT NULL,
                blinded BIGINT NOT NULL,
                inputs_mac BLOB NOT NULL,
                blind_seed BLOB,
                created_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP
            )""",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        version=5,
        name="service: the verdict of every upload, for its vendor after a restart",
        statements=(
            # One row per upload the service's ingest worker judged. A refused file is ledgered
            # under its digest, never the batch id it claimed, so without this row its vendor's
            # GET /v1/batches/{id} would be a 404 after a restart. `status` only: a refusal's
            # cause stays in the ledger and the bank's log. `ledger_id` is the ledger row the
            # verdict wrote or found (NULL when it failed, or for a refused file found in the
            # inbox at start, whose digest the service did not take).
            """
            CREATE TABLE uploads (
                upload_id VARCHAR PRIMARY KEY,
                vendor_id VARCHAR,
                claimed_batch_id VARCHAR,
                ledger_id VARCHAR,
                status VARCHAR NOT NULL CHECK (
                    status IN ('loaded', 'quarantined', 'duplicate', 'refused', 'failed')
                ),
                received_at TIMESTAMP NOT NULL,
                judged_at TIMESTAMP NOT NULL
            )""",
        ),
    ),
)
_EVENTS = "'delivered', 'contacted', 'reached', 'responded', 'converted', 'complained', 'opted_out'"
_STAGES = "'draft', 'whitelist', 'pilot', 'ab', 'full', 'closed'"
MIGRATIONS += (
    Migration(
        version=6,
        name="campaigns: declarations, stages, suppressions, plans, assignments, contacts, "
        "deliveries, outcome events; the marketer role",
        statements=(
            # A declaration is stored as its canonical JSON; `salt` keys its assignment (32
            # random bytes drawn at creation, never shown). `version` counts re-declarations.
            f"""
            CREATE TABLE campaigns (
                campaign_id VARCHAR PRIMARY KEY,
                version INTEGER NOT NULL,
                declaration VARCHAR NOT NULL,
                salt BLOB NOT NULL,
                stage VARCHAR NOT NULL CHECK (stage IN ({_STAGES})),
                created_at TIMESTAMP NOT NULL,
                created_by VARCHAR NOT NULL,
                updated_at TIMESTAMP NOT NULL
            )""",
            # Every promotion: who, when, and the gate's checks as JSON.
            f"""
            CREATE TABLE campaign_stages (
                campaign_id VARCHAR NOT NULL,
                from_stage VARCHAR NOT NULL,
                to_stage VARCHAR NOT NULL CHECK (to_stage IN ({_STAGES})),
                promoted_at TIMESTAMP NOT NULL,
                actor VARCHAR NOT NULL,
                checks VARCHAR
            )""",
            # Do-not-disturb, opt-out, complaints...: a customer is suppressed from `since` to
            # `until` (NULL: until lifted).
            """
            CREATE TABLE suppressions (
                list_name VARCHAR NOT NULL,
                customer_id BIGINT NOT NULL,
                since DATE NOT NULL,
                until DATE,
                reason VARCHAR,
                source VARCHAR
            )""",
            # One row per plan of one campaign's stage: the window and what every rule removed.
            f"""
            CREATE TABLE plans (
                plan_id VARCHAR PRIMARY KEY,
                campaign_id VARCHAR NOT NULL,
                campaign_version INTEGER NOT NULL,
                stage VARCHAR NOT NULL CHECK (stage IN ({_STAGES})),
                window_start DATE NOT NULL,
                window_end DATE NOT NULL,
                audience BIGINT NOT NULL,
                assigned BIGINT NOT NULL,
                treatment BIGINT NOT NULL,
                control BIGINT NOT NULL,
                removed VARCHAR NOT NULL,
                srm_p_value DOUBLE,
                created_at TIMESTAMP NOT NULL,
                actor VARCHAR NOT NULL
            )""",
            # A customer's arm in a campaign, fixed at its first plan. No key index: uniqueness
            # of (campaign_id, customer_id) is kept by the planner's anti-join, and an index
            # would make a million-row plan several times slower to write.
            """
            CREATE TABLE assignments (
                campaign_id VARCHAR NOT NULL,
                customer_id BIGINT NOT NULL,
                plan_id VARCHAR NOT NULL,
                stage VARCHAR NOT NULL,
                arm VARCHAR NOT NULL CHECK (arm IN ('treatment', 'control')),
                branch_id VARCHAR NOT NULL,
                decile SMALLINT,
                stratum VARCHAR NOT NULL,
                expected_value DOUBLE,
                window_start DATE NOT NULL,
                window_end DATE NOT NULL,
                contact_day DATE,
                assigned_at TIMESTAMP NOT NULL
            )""",
            # Every touch delivered (campaign or journey), by channel and day: the frequency cap
            # and the cooling-off period read this.
            """
            CREATE TABLE contacts (
                customer_id BIGINT NOT NULL,
                source VARCHAR NOT NULL,
                channel VARCHAR NOT NULL,
                day DATE NOT NULL,
                delivery_version INTEGER
            )""",
            # One file set per delivery version; `sha256` of each branch's Parquet file.
            """
            CREATE TABLE deliveries (
                campaign_id VARCHAR NOT NULL,
                version INTEGER NOT NULL,
                plan_id VARCHAR NOT NULL,
                stage VARCHAR NOT NULL,
                channel VARCHAR NOT NULL,
                branch_id VARCHAR NOT NULL,
                rows BIGINT NOT NULL,
                sha256 VARCHAR NOT NULL,
                created_at TIMESTAMP NOT NULL,
                PRIMARY KEY (campaign_id, version, branch_id)
            )""",
            # Funnel events; `event_key` makes a resent event harmless.
            f"""
            CREATE TABLE outcome_events (
                event_key VARCHAR NOT NULL,
                campaign_id VARCHAR NOT NULL,
                customer_id BIGINT NOT NULL,
                event VARCHAR NOT NULL CHECK (event IN ({_EVENTS})),
                amount DOUBLE,
                occurred_at TIMESTAMP NOT NULL,
                received_at TIMESTAMP NOT NULL,
                source VARCHAR NOT NULL
            )""",
            # The role list is a CHECK constraint: the table is rebuilt with 'marketer' added.
            """
            CREATE TABLE api_tokens_v6 (
                token_id VARCHAR PRIMARY KEY,
                token_sha256 BLOB NOT NULL UNIQUE,
                role VARCHAR NOT NULL CHECK (
                    role IN ('vendor', 'analyst', 'campaign_tool', 'marketer', 'admin')
                ),
                branches VARCHAR,
                vendor_id VARCHAR,
                label VARCHAR,
                created_at TIMESTAMP NOT NULL,
                revoked_at TIMESTAMP
            )""",
            "INSERT INTO api_tokens_v6 SELECT * FROM api_tokens",
            "DROP TABLE api_tokens",
            "ALTER TABLE api_tokens_v6 RENAME TO api_tokens",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        version=7,
        name="campaign metrics: per-customer amounts after a campaign, with their pre-period",
        statements=(
            # An amount measured per assigned customer after the campaign (e.g. the AUM month
            # average of the month after its window) and the same amount before assignment,
            # which the readout's CUPED adjustment takes as its covariate. The newest
            # measurement of a (campaign, metric, customer) replaces the older one.
            """
            CREATE TABLE campaign_metrics (
                campaign_id VARCHAR NOT NULL,
                customer_id BIGINT NOT NULL,
                metric VARCHAR NOT NULL,
                value DOUBLE NOT NULL,
                pre_value DOUBLE,
                measured_at TIMESTAMP NOT NULL,
                recorded_at TIMESTAMP NOT NULL,
                PRIMARY KEY (campaign_id, metric, customer_id)
            )""",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        version=8,
        name="snapshot keys: a version per rotation, every key handed to an analyst",
        statements=(
            # Version n of every snapshot key is in force from its row on (no row: version 1,
            # the keyring's own keys). `fusion publish --rotate-keys` adds a row; keys are
            # derived from the store key, so no key is stored here.
            """
            CREATE TABLE snapshot_key_versions (
                version INTEGER PRIMARY KEY,
                created_at TIMESTAMP NOT NULL,
                actor VARCHAR NOT NULL
            )""",
            # One row per handout (`fusion snapshot grant`): who got which snapshot's key at
            # which version, sealed to which public key (its SHA-256). Never the key.
            """
            CREATE TABLE snapshot_grants (
                granted_at TIMESTAMP NOT NULL,
                actor VARCHAR NOT NULL,
                snapshot VARCHAR NOT NULL,
                label VARCHAR NOT NULL,
                key_version INTEGER NOT NULL,
                recipient_sha256 VARCHAR NOT NULL
            )""",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        version=9,
        name="batch suites and VOPRF keys: the HPKE suite and the OPRF public key of each batch",
        statements=(
            # The suite a batch's data key was wrapped with (NULL: refused before it was read),
            # and the VOPRF public key an OPRF batch published, hex (NULL: base mode).
            "ALTER TABLE batches ADD COLUMN suite VARCHAR",
            "ALTER TABLE batches ADD COLUMN oprf_public_key VARCHAR",
            # A verifiable request: the key its answer's proofs are checked against, and the
            # SHA-256 of the blinded elements sent, which the answer echoes.
            "ALTER TABLE oprf_requests ADD COLUMN oprf_public_key VARCHAR",
            "ALTER TABLE oprf_requests ADD COLUMN blinded_sha256 BLOB",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        version=10,
        name="model promotions: every move of a model's CURRENT, who, when, why and the gate",
        statements=(
            # One row per promotion or rollback asked for, moved or refused; `judgement` is the
            # gate's comparison as JSON (NULL when none was judged: a rollback).
            """
            CREATE TABLE model_promotions (
                promotion_id VARCHAR PRIMARY KEY,
                model VARCHAR NOT NULL,
                action VARCHAR NOT NULL CHECK (action IN ('promote', 'rollback')),
                from_version VARCHAR,
                to_version VARCHAR NOT NULL,
                moved BOOLEAN NOT NULL,
                passed BOOLEAN,
                override BOOLEAN NOT NULL,
                actor VARCHAR NOT NULL,
                reason VARCHAR NOT NULL,
                judgement VARCHAR,
                "at" TIMESTAMP NOT NULL  -- quoted: AT is a keyword
            )""",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        version=11,
        name="matching on several identifiers: the identifier of each match, the run's priority",
        statements=(
            # The identifier type that made each match (mobile, id_number, device_id); NULL for
            # a match of phone keys on both sides, the only kind there was before.
            "ALTER TABLE matches ADD COLUMN id_type VARCHAR",
            # The declared priority (types, highest first, comma-separated), the links a match
            # of higher priority overruled, and per type: customers keyed, linked, matched
            # (added beyond the types before it) and conflicts, as JSON. Counts only.
            "ALTER TABLE match_runs ADD COLUMN identifiers VARCHAR",
            "ALTER TABLE match_runs ADD COLUMN conflicts BIGINT",
            "ALTER TABLE match_runs ADD COLUMN by_identifier VARCHAR",
            # An OPRF request's priority: its inputs are each type's values in turn (NULL: a
            # request of the mobile number alone, made before several identifiers existed).
            "ALTER TABLE oprf_requests ADD COLUMN identifiers VARCHAR",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        version=12,
        name="journeys: the event log, strategies and their stages, customer state per strategy, "
        "node visits, touches and daily runs",
        statements=(
            # Customers' app and account milestones, log-ins and answers to touches; `event_key`
            # makes a resent event harmless, `received_at` makes reads point-in-time.
            """
            CREATE TABLE journey_events (
                event_key VARCHAR NOT NULL,
                customer_id BIGINT NOT NULL,
                event VARCHAR NOT NULL CHECK (event IN (
                    'download', 'first_open', 'register', 'bind_card', 'first_transaction',
                    'assets_10k', 'login', 'exposure', 'click', 'opt_out')),
                occurred_at TIMESTAMP NOT NULL,
                touch_id VARCHAR,
                received_at TIMESTAMP NOT NULL,
                source VARCHAR NOT NULL
            )""",
            # A strategy as its canonical JSON; `salt` keys its traffic share and arms.
            f"""
            CREATE TABLE journey_strategies (
                strategy_id VARCHAR PRIMARY KEY,
                version INTEGER NOT NULL,
                declaration VARCHAR NOT NULL,
                salt BLOB NOT NULL,
                stage VARCHAR NOT NULL CHECK (stage IN ({_STAGES})),
                created_at TIMESTAMP NOT NULL,
                created_by VARCHAR NOT NULL,
                updated_at TIMESTAMP NOT NULL
            )""",
            f"""
            CREATE TABLE journey_strategy_stages (
                strategy_id VARCHAR NOT NULL,
                from_stage VARCHAR NOT NULL,
                to_stage VARCHAR NOT NULL CHECK (to_stage IN ({_STAGES})),
                promoted_at TIMESTAMP NOT NULL,
                actor VARCHAR NOT NULL,
                checks VARCHAR
            )""",
            # One row per (strategy, customer): where the customer is in the flow, since when,
            # and the day it is next looked at (NULL once finished). No key index, as for
            # assignments: the engine's anti-join keeps the pair unique.
            """
            CREATE TABLE journey_state (
                strategy_id VARCHAR NOT NULL,
                customer_id BIGINT NOT NULL,
                version INTEGER NOT NULL,
                stage VARCHAR NOT NULL,
                arm VARCHAR NOT NULL CHECK (arm IN ('treatment', 'control')),
                branch_id VARCHAR NOT NULL,
                entered_on DATE NOT NULL,
                node_id VARCHAR NOT NULL,
                node_since DATE NOT NULL,
                due_on DATE,
                finished_on DATE,
                finish_reason VARCHAR
            )""",
            # Every node a customer entered, and the day: the readout's per-node counts.
            """
            CREATE TABLE journey_visits (
                strategy_id VARCHAR NOT NULL,
                customer_id BIGINT NOT NULL,
                node_id VARCHAR NOT NULL,
                day DATE NOT NULL,
                arm VARCHAR NOT NULL
            )""",
            # Every touch a run emitted: delivered (treatment) or held out (control: recorded,
            # never sent, never in `contacts`).
            """
            CREATE TABLE journey_touches (
                touch_id VARCHAR NOT NULL,
                strategy_id VARCHAR NOT NULL,
                node_id VARCHAR NOT NULL,
                customer_id BIGINT NOT NULL,
                branch_id VARCHAR NOT NULL,
                channel VARCHAR NOT NULL,
                content_id VARCHAR NOT NULL,
                offer_id VARCHAR,
                day DATE NOT NULL,
                arm VARCHAR NOT NULL CHECK (arm IN ('treatment', 'control')),
                delivered BOOLEAN NOT NULL
            )""",
            # One row per day run, written in the run's transaction: a day with a row is done.
            """
            CREATE TABLE journey_runs (
                day DATE PRIMARY KEY,
                started_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP NOT NULL,
                strategies VARCHAR NOT NULL,
                entered BIGINT NOT NULL,
                moved BIGINT NOT NULL,
                delivered BIGINT NOT NULL,
                held_out BIGINT NOT NULL,
                blocked BIGINT NOT NULL,
                counts VARCHAR NOT NULL
            )""",
        ),
    ),
)
MIGRATIONS += (
    Migration(
        version=13,
        name="vendor rows: keyed hashes, labels and sealed rows stored uncompressed",
        statements=(
            # A keyed hash, an OPRF label or a sealed row is random bytes: DuckDB's default
            # (dictionary + FSST) cannot shrink them, and trying was a large part of the CPU
            # an ingest spends loading (README, "Benchmarks"). The tables are rebuilt with
            # those columns declared uncompressed and their rows copied; readers see the same
            # columns and rows, and the file the same size.
            "DROP VIEW vendor_apps_latest",
            "DROP VIEW vendor_tags_latest",
            """
            CREATE TABLE vendor_apps_v13 (
                key BLOB NOT NULL USING COMPRESSION uncompressed,
                salt_epoch VARCHAR,
                batch_id VARCHAR,
                app_ids INTEGER[],
                app_days SMALLINT[],
                app_sessions INTEGER[]
            )""",
            "INSERT INTO vendor_apps_v13 SELECT key, salt_epoch, batch_id, app_ids, app_days,"
            " app_sessions FROM vendor_apps",
            "DROP TABLE vendor_apps",
            "ALTER TABLE vendor_apps_v13 RENAME TO vendor_apps",
            """
            CREATE TABLE vendor_tags_v13 (
                key BLOB NOT NULL USING COMPRESSION uncompressed,
                salt_epoch VARCHAR,
                batch_id VARCHAR,
                tag_ids INTEGER[],
                tag_weights FLOAT[]
            )""",
            "INSERT INTO vendor_tags_v13 SELECT key, salt_epoch, batch_id, tag_ids, tag_weights"
            " FROM vendor_tags",
            "DROP TABLE vendor_tags",
            "ALTER TABLE vendor_tags_v13 RENAME TO vendor_tags",
            _LATEST_VIEW.format(view="vendor_apps_latest", table="vendor_apps"),
            _LATEST_VIEW.format(view="vendor_tags_latest", table="vendor_tags"),
            """
            CREATE TABLE vendor_oprf_rows_v13 (
                label BLOB NOT NULL USING COMPRESSION uncompressed,
                sealed BLOB NOT NULL USING COMPRESSION uncompressed,
                salt_epoch VARCHAR NOT NULL,
                batch_id VARCHAR NOT NULL
            )""",
            "INSERT INTO vendor_oprf_rows_v13 SELECT label, sealed, salt_epoch, batch_id"
            " FROM vendor_oprf_rows",
            "DROP TABLE vendor_oprf_rows",
            "ALTER TABLE vendor_oprf_rows_v13 RENAME TO vendor_oprf_rows",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

"""The journey vocabulary shared by the engine (fusion/journeys) and the synthetic world (labs):
milestones, lifecycle stages, journey channels, and the schemas of the event log and of touches.

A new customer walks download -> first open -> register -> bind card -> first transaction ->
assets over 10k (the milestones, in order). Log-ins after registering feed retention. A touch
(a push, an SMS, an in-app pop-up, a CRM task) is answered by exposure, click and opt-out events
that name the touch they answer.
"""

from __future__ import annotations

import polars as pl

from contracts.schemas import TableSchema

__all__ = [
    "ANSWER_EVENTS",
    "JOURNEY_CHANNELS",
    "JOURNEY_EVENTS",
    "JOURNEY_EVENT_LOG",
    "JOURNEY_TOUCHES",
    "LIFECYCLE_STAGES",
    "MILESTONES",
    "STAGE_OF_MILESTONE",
]

# In the order a customer reaches them; a later milestone implies the earlier ones.
MILESTONES = (
    "download",
    "first_open",
    "register",
    "bind_card",
    "first_transaction",
    "assets_10k",
)
# How a customer answers a touch (each names the touch by `touch_id`).
ANSWER_EVENTS = ("exposure", "click", "opt_out")
# Everything the event log accepts: milestones, repeated log-ins, answers to touches.
JOURNEY_EVENTS = (*MILESTONES, "login", *ANSWER_EVENTS)

# acquire: until registered; activate: registered, card not yet bound; grow: card bound on.
LIFECYCLE_STAGES = ("acquire", "activate", "grow")
STAGE_OF_MILESTONE = {
    "download": "acquire",
    "first_open": "acquire",
    "register": "activate",
    "bind_card": "grow",
    "first_transaction": "grow",
    "assets_10k": "grow",
}

JOURNEY_CHANNELS = ("in_app_popup", "app_push", "sms", "crm_task")

# One row per event. `event_key` makes a resent event harmless (the log keeps the first);
# `touch_id` is set on answer events only.
JOURNEY_EVENT_LOG = TableSchema(
    contract="journey_event_log_v1",
    columns={
        "event_key": pl.String(),
        "customer_id": pl.Int64(),
        "event": pl.String(),
        "occurred_at": pl.Datetime("us"),
        "touch_id": pl.String(),
    },
)

# One row per touch the engine emits for a day: what the channels deliver.
JOURNEY_TOUCHES = TableSchema(
    contract="journey_touches_v1",
    columns={
        "touch_id": pl.String(),
        "strategy_id": pl.String(),
        "node_id": pl.String(),
        "customer_id": pl.Int64(),
        "branch_id": pl.String(),
        "channel": pl.String(),
        "content_id": pl.String(),
        "offer_id": pl.String(),
        "day": pl.Date(),
        "arm": pl.String(),
    },
)

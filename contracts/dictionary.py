"""The analysts' data dictionary: what every analyst view and every column of one means.

One meaning per column name across all views (`customer_id` is the same thing everywhere), so
the dictionary is two maps: `VIEWS` (view name -> what one row is) and `COLUMNS` (column name ->
what it holds). The bank extract's feature columns (`BANK_FEATURES`) are the bank's data mart
dictionary; the vendor's list columns come from the vendor batch contract
(`contracts.schemas.VENDOR_BATCH`), whose every column but the key is described here.

The published snapshots' `COMMENT ON` statements, docs/dictionary.md and the service's
dictionary are all generated from these maps (`fusion.analyst_views`); `describe_column` raises
for a name it does not know, so a column added to a view without a description fails the
publish and the tests instead of reaching analysts unexplained.
"""

from __future__ import annotations

from contracts.errors import ConfigError

__all__ = [
    "BANK_FEATURES",
    "COLUMNS",
    "VENDOR_LIST_COLUMNS",
    "VIEWS",
    "describe_column",
    "describe_view",
]

# What one row of each analyst view is. Availability (head office, branch copies, only once the
# data exists) is the view definitions' business (`fusion.analyst_views`).
VIEWS: dict[str, str] = {
    "customers": "One row per bank customer and extract snapshot: the customer's branch, whether "
    "the phone could be keyed, and whether the vendor holds the customer (matched).",
    "features": "The bank extract's features per customer and snapshot, as the bank delivered "
    "them (never a phone or ID number): demographics, relationship, assets, channels.",
    "matches": "One row per customer the vendor also holds, per snapshot: the vendor batch the "
    "match used and when it was made.",
    "apps": "App usage of matched customers from the vendor batch their match used: three "
    "aligned lists (app ids, active days, sessions), one element per app.",
    "app_usage": "App usage of matched customers, one row per customer and app: the lists of "
    "`apps` unnested and named from the taxonomy.",
    "tags": "Interest tags of matched customers from the vendor batch their match used: two "
    "aligned lists (tag ids, weights).",
    "categories": "The taxonomy's 26 app categories.",
    "app_catalog": "The taxonomy's apps, each in one category.",
    "tag_catalog": "The taxonomy's interest tags, each under one category and topic.",
    "scores": "The base as last scored: one row per customer and ranking (acquisition: the "
    "chance to open mobile banking; rescue: the same among customers the in-bank model rejects; "
    "uplift: the predicted gain from the food-delivery coupon).",
    "lists": "Target lists per branch as last written: one row per listed customer, in list order.",
    "campaigns": "One row per declared campaign: its version, stage and declaration.",
    "campaign_assignments": "One row per customer assigned to a campaign: arm (treatment or "
    "control), stage, stratum and planned contact day.",
    "campaign_events": "Funnel events campaigns reported back (delivered, contacted, reached, "
    "responded, converted, complained, opted out), one row per event.",
}

# The bank's data mart, as its extract delivers it (contracts.schemas.BANK_EXTRACT pins a few
# of these; the extract suite checks the ranges of the rest).
BANK_FEATURES: dict[str, str] = {
    "age": "Age in years at the snapshot date.",
    "gender": "Gender as the bank records it.",
    "marital": "Marital status.",
    "education": "Highest education level.",
    "job": "Occupation group.",
    "city_tier": "Tier of the customer's city (1 = largest cities).",
    "household_size": "People in the customer's household.",
    "has_children": "Whether the customer has children.",
    "is_local_resident": "Whether the customer is registered as a resident of the branch's city.",
    "annual_income": "Declared annual income, yuan.",
    "tenure_months": "Months since the customer's first product with the bank.",
    "customer_level": "The bank's customer level (1 = mass market, higher = more valuable).",
    "n_products": "Number of the bank's products the customer holds.",
    "ukey_holder": "Whether the customer holds a U-key (USB security token) for online banking.",
    "online_banking": "Whether the customer has online (web) banking.",
    "payroll": "Whether the customer's salary is paid into the bank.",
    "credit_card": "Whether the customer holds the bank's credit card.",
    "credit_card_limit": "Credit card limit, yuan (0 without a card).",
    "n_debit_cards": "Number of debit cards held.",
    "wechat_bound": "Whether a card is bound to the bank's WeChat account.",
    "sms_alerts": "Whether the customer receives SMS account alerts.",
    "has_relationship_manager": "Whether a relationship manager looks after the customer.",
    "months_since_contact": "Months since the bank last contacted the customer.",
    "complaints_12m": "Complaints the customer made in the last 12 months.",
    "social_security_card": "Whether the customer's social security card is with the bank.",
    "aum_current": "Assets under management at the snapshot date, yuan.",
    "aum_month_avg": "Average daily assets under management over the last month, yuan.",
    "aum_year_avg": "Average daily assets under management over the last 12 months, yuan.",
    "aum_max_12m": "Highest assets under management in the last 12 months, yuan.",
    "demand_deposit": "Demand (current account) deposits, yuan.",
    "time_deposit": "Time deposits, yuan.",
    "time_deposit_count": "Number of time deposits held.",
    "wealth_mgmt": "Wealth management products held, yuan.",
    "wealth_ratio": "Share of assets held in wealth management products (0-1).",
    "funds": "Mutual funds held through the bank, yuan.",
    "insurance": "Insurance products bought through the bank, yuan.",
    "bonds": "Bonds held through the bank, yuan.",
    "precious_metals": "Precious metals held through the bank, yuan.",
    "loan_balance": "Outstanding balance of all loans, yuan.",
    "mortgage_balance": "Outstanding mortgage balance, yuan.",
    "consumer_loan_balance": "Outstanding consumer loan balance, yuan.",
    "credit_card_balance": "Outstanding credit card balance, yuan.",
    "n_loans": "Number of loans held.",
    "counter_txn_count_3m": "Transactions at a branch counter in the last 3 months.",
    "counter_txn_amount_3m": "Amount moved at a branch counter in the last 3 months, yuan.",
    "counter_days_since_last": "Days since the last branch counter transaction.",
    "atm_txn_count_3m": "ATM transactions in the last 3 months.",
    "atm_txn_amount_3m": "Amount moved at ATMs in the last 3 months, yuan.",
    "atm_days_since_last": "Days since the last ATM transaction.",
    "online_txn_count_3m": "Online (web) banking transactions in the last 3 months.",
    "online_txn_amount_3m": "Amount moved through online banking in the last 3 months, yuan.",
    "online_days_since_last": "Days since the last online banking transaction.",
    "mobile_txn_count_3m": "Mobile banking transactions in the last 3 months.",
    "mobile_txn_amount_3m": "Amount moved through mobile banking in the last 3 months, yuan.",
    "mobile_days_since_last": "Days since the last mobile banking transaction.",
    "pos_txn_count_3m": "Card payments at points of sale in the last 3 months.",
    "pos_txn_amount_3m": "Amount paid by card at points of sale in the last 3 months, yuan.",
    "pos_days_since_last": "Days since the last point-of-sale payment.",
    "quickpay_txn_count_3m": "Quick payments (third-party payment apps) in the last 3 months.",
    "quickpay_txn_amount_3m": "Amount paid by quick payment in the last 3 months, yuan.",
    "quickpay_days_since_last": "Days since the last quick payment.",
    "txn_count_3m": "All transactions in the last 3 months.",
    "txn_amount_3m": "Amount of all transactions in the last 3 months, yuan.",
    "max_single_txn_amount_3m": "Largest single transaction in the last 3 months, yuan.",
    "salary_amount_3m": "Salary received in the last 3 months, yuan.",
    "inflow_amount_3m": "Money into the customer's accounts in the last 3 months, yuan.",
    "outflow_amount_3m": "Money out of the customer's accounts in the last 3 months, yuan.",
    "transfer_in_count_3m": "Incoming transfers in the last 3 months.",
    "transfer_out_count_3m": "Outgoing transfers in the last 3 months.",
    "utility_payment_count_3m": "Utility bills paid in the last 3 months.",
    "active_months_12m": "Months with at least one transaction in the last 12.",
    "mb_registered": "Whether the customer is registered for mobile banking.",
    "opened_mb": "Whether the customer opened mobile banking after the snapshot (the label the "
    "acquisition model learns; empty where not yet known).",
}

# The vendor batch's list columns (contracts.schemas.VENDOR_BATCH, all but the key).
VENDOR_LIST_COLUMNS: dict[str, str] = {
    "app_ids": "Ids of the apps the customer used (see app_catalog), aligned with app_days and "
    "app_sessions.",
    "app_days": "Active days in the last 30, per app of app_ids.",
    "app_sessions": "Sessions in the last 30 days, per app of app_ids.",
    "tag_ids": "Ids of the customer's interest tags (see tag_catalog), aligned with tag_weights.",
    "tag_weights": "Interest strength in (0, 1], per tag of tag_ids.",
}

COLUMNS: dict[str, str] = {
    "customer_id": "The bank's customer id (never a phone or ID number).",
    "branch_id": "The customer's branch at that snapshot.",
    "snapshot_date": "Date of the bank extract the row belongs to.",
    "salt_epoch": "The key epoch the customer was keyed and matched under.",
    "key_status": "Whether the phone could be keyed: ok, invalid (not a valid mobile number) or "
    "duplicated (shared by several customers; never matched).",
    "matched": "Whether the vendor holds the customer at that snapshot (a row in matches).",
    "batch_id": "The vendor batch the match used: the newest loaded one created on or before "
    "the snapshot date.",
    "matched_at": "When the match was made (UTC).",
    "taxonomy_version": "Version of the app and tag taxonomy.",
    "category_id": "Id of the app category (see categories).",
    "category_code": "Short code of the app category.",
    "category_name": "Name of the app category.",
    "category_name_zh": "Name of the app category in Chinese.",
    "app_id": "Id of the app (see app_catalog).",
    "app_name": "Name of the app.",
    "popularity_rank": "Rank of the app by users within its category (1 = most used).",
    "active_days": "Active days in the last 30 on that app.",
    "sessions": "Sessions in the last 30 days on that app.",
    "tag_id": "Id of the interest tag (see tag_catalog).",
    "tag_topic": "Topic of the interest tag within its category.",
    "tag_name": "Name of the interest tag.",
    "ranking": "Which scoring the row comes from: acquisition, rescue or uplift.",
    "score": "The model's score: a probability for acquisition and rescue, the predicted "
    "uplift (gain in response probability) for uplift. Higher is better.",
    "decile": "Decile of the score, 1 = the best tenth.",
    "reason_1": "The strongest reason for the score, in words (lists' deciles only).",
    "reason_2": "The second reason for the score, in words (lists' deciles only).",
    "reason_3": "The third reason for the score, in words (lists' deciles only).",
    "model_version": "Version of the registered model that scored the row.",
    "list_name": "The target list: mobile-banking, rescue or food-coupon.",
    "list_rank": "Position in the branch's list, 1 = call first.",
    "campaign_id": "The campaign's name.",
    "version": "How many times the campaign was declared (1 = as first declared).",
    "stage": "Campaign stage: draft, whitelist, pilot, ab, full or closed.",
    "declaration": "The campaign's declaration as JSON (audience, objective, channel, stages).",
    "created_at": "When the row was created (UTC).",
    "created_by": "Who declared the campaign.",
    "updated_at": "When the campaign last changed (UTC).",
    "arm": "Treatment (contacted) or control (held out).",
    "stratum": "The assignment stratum: branch and score decile.",
    "window_start": "First day of the planned contact window.",
    "window_end": "Last day of the planned contact window.",
    "contact_day": "The planned day of contact (treatment only).",
    "assigned_at": "When the customer was assigned (UTC).",
    "event": "Funnel event: delivered, contacted, reached, responded, converted, complained or "
    "opted_out.",
    "amount": "Value of a conversion, yuan (other events: empty).",
    "occurred_at": "When the event happened (UTC).",
    "received_at": "When the bank recorded the event (UTC).",
    **VENDOR_LIST_COLUMNS,
    **BANK_FEATURES,
}


def describe_view(view: str) -> str:
    """Return what one row of analyst view `view` is; ConfigError when the dictionary lacks it."""
    return _described(VIEWS, view, f"analyst view {view!r}", "VIEWS")


def describe_column(column: str) -> str:
    """Return what column `column` holds; ConfigError when the dictionary lacks it."""
    return _described(
        COLUMNS, column, f"column {column!r}", "COLUMNS (or BANK_FEATURES for an extract column)"
    )


def _described(entries: dict[str, str], name: str, what: str, where: str) -> str:
    if name not in entries:
        raise ConfigError(
            f"{what} has no description in the data dictionary; add one to {where} in "
            "contracts/dictionary.py before it reaches analysts",
            setting=where.split()[0],
        )
    return entries[name]

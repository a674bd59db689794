"""The fraud example's data checks: what its raw payments and offline feature tables must hold.

The rules are what ``docs/data_model.md`` promises: amounts are positive euros, a fraud rate is
a share, a profile's income is not negative, a record arrives no earlier than its event, and the
interval's rows are stamped inside it. (The customer windows have no table to check: they are
stream feature views computed from the raw payments, which are checked here.) :func:`features.data_checks.check_frame` applies them.
"""

from __future__ import annotations

from features.data_checks import Bound, TableCheck

__all__ = ["RAW_TRANSACTIONS", "TABLE_CHECKS"]

#: The offline feature tables (``examples.fraud.feature_jobs.TABLE_SORT``).
TABLE_CHECKS: dict[str, TableCheck] = {
    "customer_profile": TableCheck(
        "customer_profile",
        {"customer_id": "bigint", "event_timestamp": "timestamp", "created_timestamp": "timestamp", "income": "double",
         "age_band": "string", "home_country": "string", "date": "string"},
        ("customer_id", "event_timestamp", "created_timestamp"),
        (Bound("income", low=0), Bound("created_timestamp", other="event_timestamp"))),
    "merchant_stats": TableCheck(
        "merchant_stats",
        {"merchant_id": "bigint", "event_timestamp": "timestamp", "created_timestamp": "timestamp", "category": "string",
         "country": "string", "txn_count_30d": "bigint", "amt_mean_30d": "double", "fraud_rate_30d": "double",
         "date": "string"},
        ("merchant_id", "event_timestamp", "created_timestamp", "txn_count_30d", "fraud_rate_30d"),
        (Bound("txn_count_30d", low=0), Bound("amt_mean_30d", low=0), Bound("fraud_rate_30d", low=0, high=1))),
}

#: Raw payments as ``examples.fraud.feature_jobs.read_raw`` returns them (already cast to its schema).
RAW_TRANSACTIONS = TableCheck(
    "raw transactions",
    {"transaction_id": "bigint", "customer_id": "bigint", "merchant_id": "bigint", "amount": "double", "channel": "string",
     "event_timestamp": "timestamp", "arrival_timestamp": "timestamp"},
    ("transaction_id", "customer_id", "merchant_id", "amount", "channel", "event_timestamp", "arrival_timestamp"),
    (Bound("amount", low=0, strict_low=True), Bound("arrival_timestamp", other="event_timestamp"),
     Bound("channel", allowed=("pos", "ecom"))),
)

"""The fraud example's data checks: what its raw payments and offline feature tables must hold.

The rules are what ``docs/data_model.md`` promises: amounts are positive euros, counts of a
window include the anchoring transaction, a fraud rate is a share, a profile's income is not
negative, a record arrives no earlier than its event, and the interval's rows are stamped
inside it. :func:`features.data_checks.check_frame` applies them.
"""

from __future__ import annotations

from features.data_checks import Bound, TableCheck

__all__ = ["RAW_TRANSACTIONS", "TABLE_CHECKS"]

_WINDOWS = ("1h", "24h", "7d")


def _agg_table() -> TableCheck:
    types = {"customer_id": "bigint", "event_timestamp": "timestamp", "date": "string"}
    bounds: list[Bound] = []
    for w in _WINDOWS:
        types.update({f"txn_count_{w}": "bigint", f"amt_sum_{w}": "double", f"amt_mean_{w}": "double",
                      f"amt_max_{w}": "double", f"created_{w}": "timestamp"})
        bounds += [Bound(f"txn_count_{w}", low=1), Bound(f"amt_sum_{w}", low=0, strict_low=True),
                   Bound(f"amt_mean_{w}", low=0, strict_low=True), Bound(f"amt_max_{w}", low=0, strict_low=True)]
    bounds += [Bound("txn_count_24h", other="txn_count_1h"), Bound("txn_count_7d", other="txn_count_24h")]
    return TableCheck("customer_txn_agg", types, tuple(c for c in types if c != "date"), tuple(bounds))


#: The offline feature tables (``examples.fraud.feature_jobs.TABLE_SORT``).
TABLE_CHECKS: dict[str, TableCheck] = {
    "customer_txn_agg": _agg_table(),
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

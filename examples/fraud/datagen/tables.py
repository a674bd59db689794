"""From a :class:`~examples.fraud.datagen.DatagenConfig` to the four raw Arrow tables.

Every concern draws from its own random stream, spawned from the seed in a fixed order, so that
the scenario streams (used only for what happens from the drift start on) never shift the draws
of the baseline. Times are int64 microseconds since the Unix epoch (UTC) until they become
``timestamp[us, tz=UTC]`` Arrow columns; money is in euros (EUR).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from examples.fraud.datagen import catalog as cat
from examples.fraud.datagen.entities import (
    Customers,
    GroupedSampler,
    MerchantPicker,
    Merchants,
    ProfileRows,
    make_crypto_merchants,
    make_customers,
    make_income_shift,
    make_merchants,
    profile_rows,
)
from examples.fraud.datagen.events import (
    Transactions,
    Window,
    apply_amount_shift,
    apply_new_category,
    arrival_delays_us,
    base_transactions,
)
from examples.fraud.datagen.fraud import (
    BURST_ROW_SHARE,
    CARD_TESTING_BURST,
    Bursts,
    burst_content,
    burst_sizes,
    burst_transactions,
    isolated_fraud,
    label_delays_us,
)

if TYPE_CHECKING:
    from examples.fraud.datagen import DatagenConfig

# Appending a name keeps every earlier stream as it was; never reorder.
STREAMS = (
    "customers",
    "merchants",
    "transactions",
    "bursts",
    "fraud",
    "arrivals",
    "labels",
    "covariate_shift",
    "new_category",
    "concept_drift",
)
TIMESTAMP = pa.timestamp("us", tz="UTC")
_EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class RawTables:
    """The four raw tables, each sorted by the timestamp it is partitioned on."""

    profiles: pa.Table
    merchants: pa.Table
    transactions: pa.Table
    labels: pa.Table

    def counts(self) -> dict[str, int]:
        """Row count per table, for the manifest."""
        return {
            "customer_profiles_rows": self.profiles.num_rows,
            "merchants_rows": self.merchants.num_rows,
            "transactions_rows": self.transactions.num_rows,
            "labels_rows": self.labels.num_rows,
        }


def random_streams(seed: int) -> dict[str, np.random.Generator]:
    """One independent PCG64 generator per name in :data:`STREAMS`."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.Generator(np.random.PCG64(s)) for name, s in zip(STREAMS, children)}


def day_start_us(day: dt.date) -> int:
    """Microseconds since the epoch at 00:00 UTC of ``day``."""
    return (day - _EPOCH).days * cat.DAY_US


def build_tables(config: DatagenConfig) -> RawTables:
    """Simulate the world ``config`` describes and return it as Arrow tables."""
    rng = random_streams(config.seed)
    window = Window(day_start_us(config.start), config.days, day_start_us(config.drift_date))
    customers = make_customers(rng["customers"], config.n_customers, window.start_us, window.days)
    merchants = make_merchants(rng["merchants"], config.n_merchants, window.start_us)
    picker = MerchantPicker(merchants)
    sizes = burst_sizes(rng["bursts"], round(config.rows * BURST_ROW_SHARE))
    n_base = config.rows - int(sizes.sum())
    base = base_transactions(rng["transactions"], n_base, customers, picker, window)
    bursts = burst_transactions(rng["bursts"], sizes, customers, picker, window)
    scenario = str(config.scenario.value)
    merchants, burst_txn = _drift_payments(
        scenario, rng, window, customers, merchants, base, bursts
    )
    card_testing = (scenario == "concept_drift") & (base.event_us >= window.drift_us)
    u = rng["fraud"].random(n_base)
    base_fraud = isolated_fraud(u, base, customers, merchants.country_idx, card_testing)
    txn = base.concat(burst_txn)
    is_fraud = np.concatenate([base_fraud, np.ones(len(burst_txn), bool)])
    shift = None
    if scenario == "covariate_shift":
        apply_amount_shift(rng["covariate_shift"], txn, window)
        shift = make_income_shift(rng["covariate_shift"], customers, window.drift_us)
    arrival_us = txn.event_us + arrival_delays_us(rng["arrivals"], len(txn))
    label_us = txn.event_us + label_delays_us(rng["labels"], is_fraud)
    order = np.argsort(txn.event_us, kind="stable")
    txn_table = transactions_table(txn.take(order), arrival_us[order])
    return RawTables(
        profiles=profiles_table(profile_rows(customers, shift), customers),
        merchants=merchants_table(merchants),
        transactions=txn_table,
        labels=labels_table(txn_table, is_fraud[order], label_us[order]),
    )


def _drift_payments(
    scenario: str,
    rng: dict[str, np.random.Generator],
    window: Window,
    customers: Customers,
    merchants: Merchants,
    base: Transactions,
    bursts: Bursts,
) -> tuple[Merchants, Transactions]:
    """Apply new_category (to ``base``, in place) or concept_drift (to the bursts) after the
    drift start; returns the merchants (new ones appended) and the burst payments."""
    if scenario == "new_category":
        crypto = make_crypto_merchants(
            rng["new_category"], max(5, merchants.n // 50), window.drift_us
        )
        sampler = GroupedSampler(np.zeros(crypto.n, np.int64), crypto.popularity, 1)
        apply_new_category(rng["new_category"], base, customers, sampler, merchants.n, window)
        return merchants.concat(crypto), bursts.txn
    if scenario == "concept_drift":
        txn = bursts.txn
        testing = burst_content(
            rng["concept_drift"],
            txn.customer,
            txn.event_us,
            customers,
            MerchantPicker(merchants),
            CARD_TESTING_BURST,
        )
        return merchants, txn.where(bursts.burst_start_us >= window.drift_us, testing)
    return merchants, bursts.txn


def _timestamps(us: np.ndarray) -> pa.Array:
    """A ``timestamp[us, tz=UTC]`` array from int64 microseconds since the epoch."""
    return pa.array(us.astype(np.int64), type=TIMESTAMP)


def _names(names: tuple[str, ...], idx: np.ndarray) -> pa.Array:
    """A string array: ``names[i]`` for each ``i`` in ``idx``."""
    return pa.array(names).take(pa.array(idx.astype(np.int32)))


def transactions_table(txn: Transactions, arrival_us: np.ndarray) -> pa.Table:
    """``transactions/`` rows (sorted by event time); ids count from 1 in that order."""
    return pa.table(
        {
            "transaction_id": pa.array(np.arange(1, len(txn) + 1, dtype=np.int64)),
            "customer_id": pa.array(txn.customer.astype(np.int64) + 1),
            "merchant_id": pa.array(txn.merchant.astype(np.int64) + 1),
            "amount": pa.array(txn.amount_eur.astype(np.float64)),
            "channel": _names(("pos", "ecom"), txn.ecom.astype(np.int32)),
            "event_timestamp": _timestamps(txn.event_us),
            "arrival_timestamp": _timestamps(arrival_us),
        }
    )


def labels_table(transactions: pa.Table, is_fraud: np.ndarray, label_us: np.ndarray) -> pa.Table:
    """``labels/`` rows, one per transaction, sorted by label time then transaction id."""
    ids = transactions["transaction_id"].to_numpy()
    order = np.lexsort((ids, label_us))
    return pa.table(
        {
            "transaction_id": pa.array(ids[order]),
            "is_fraud": pa.array(is_fraud[order].astype(np.int8)),
            "transaction_timestamp": transactions["event_timestamp"].take(pa.array(order)),
            "label_timestamp": _timestamps(label_us[order]),
        }
    )


def profiles_table(rows: ProfileRows, customers: Customers) -> pa.Table:
    """``customer_profiles/`` rows sorted by valid_from then customer id."""
    order = np.lexsort((rows.customer_idx, rows.valid_from_us))
    idx = rows.customer_idx[order]
    return pa.table(
        {
            "customer_id": pa.array(idx.astype(np.int64) + 1),
            "income": pa.array(rows.income_eur[order].astype(np.float64)),
            "age_band": _names(cat.AGE_BANDS, customers.age_idx[idx]),
            "home_country": _names(cat.CUSTOMER_COUNTRIES, customers.country_idx[idx]),
            "valid_from": _timestamps(rows.valid_from_us[order]),
            "recorded_at": _timestamps(rows.recorded_at_us[order]),
        }
    )


def merchants_table(merchants: Merchants) -> pa.Table:
    """``merchants/`` rows in id order."""
    return pa.table(
        {
            "merchant_id": pa.array(np.arange(1, merchants.n + 1, dtype=np.int64)),
            "category": _names(cat.CATEGORY_NAMES, merchants.category_idx),
            "country": _names(cat.MERCHANT_COUNTRIES, merchants.country_idx),
            "onboarded_at": _timestamps(merchants.onboarded_us),
        }
    )

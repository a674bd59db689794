"""Fraud in the synthetic card data: compromised-card bursts, isolated fraud and chargebacks.

Two fraud regimes exist. ``stolen card`` (the baseline, and every scenario before its drift
start): bursts of 3-8 large, often foreign, card-not-present payments in risky categories within
an hour, plus isolated fraud whose odds rise with an unusually large amount, a foreign merchant,
a risky category, e-commerce and night time. ``card testing`` (concept_drift after its drift
start): bursts and isolated fraud move to small domestic grocery and pharmacy payments.

Money is in euros (EUR); times are int64 microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from examples.fraud.datagen import catalog as cat
from examples.fraud.datagen.entities import Customers, MerchantPicker
from examples.fraud.datagen.events import Transactions, Window, sample_event_times, ticket_eur

BURST_ROW_SHARE = 0.004  # share of all transactions that belong to compromised-card bursts
BURST_MIN_SIZE, BURST_MAX_SIZE = 3, 8
BURST_SPAN_US = cat.HOUR_US
LEGIT_LABEL_DELAY_US = 30 * cat.DAY_US  # the chargeback window closes after 30 days
CHARGEBACK_MIN_DAYS, CHARGEBACK_MAX_DAYS = 1.0, 30.0
CARD_TEST_CATEGORIES = ("grocery", "pharmacy")


@dataclass(frozen=True)
class BurstStyle:
    """What the payments of one fraud burst look like.

    ``categories``/``weights``: where the card is used; ``ecom_share`` None keeps each
    category's usual channel mix; ``abroad_share``: chance of a merchant in a fraud country;
    ``ticket_eur`` None means the category's median scaled by ``ticket_factor`` and the
    customer's spending level, else a fixed median (EUR) whatever the customer's income.
    """

    categories: tuple[str, ...]
    weights: tuple[float, ...]
    ecom_share: float | None
    abroad_share: float
    ticket_factor: float
    ticket_eur: float | None
    log_sigma: float


STOLEN_CARD_BURST = BurstStyle(
    categories=("electronics", "online_gaming", "jewelry", "online_retail", "travel"),
    weights=(0.35, 0.25, 0.15, 0.15, 0.10),
    ecom_share=0.8,
    abroad_share=0.6,
    ticket_factor=2.5,
    ticket_eur=None,
    log_sigma=0.6,
)
CARD_TESTING_BURST = BurstStyle(
    categories=CARD_TEST_CATEGORIES,
    weights=(0.55, 0.45),
    ecom_share=None,
    abroad_share=0.03,
    ticket_factor=1.0,
    ticket_eur=4.5,
    log_sigma=0.7,
)


@dataclass(frozen=True)
class FraudOdds:
    """Log-odds of isolated fraud: intercept plus one weight per transaction feature."""

    intercept: float
    log_ratio: float  # per unit of log(amount / the customer's ordinary ticket)
    foreign: float  # merchant country differs from the customer's home country
    risky: float  # electronics, online gaming, jewelry
    card_test_category: float  # grocery, pharmacy
    ecom: float
    night: float  # 00:00-06:00 UTC


STOLEN_CARD_ODDS = FraudOdds(
    intercept=-6.99,
    log_ratio=0.8,
    foreign=1.5,
    risky=1.0,
    card_test_category=0.0,
    ecom=0.5,
    night=0.6,
)
CARD_TESTING_ODDS = FraudOdds(
    intercept=-7.34,
    log_ratio=-1.0,
    foreign=-1.5,
    risky=-1.0,
    card_test_category=2.0,
    ecom=0.4,
    night=0.6,
)
# Both intercepts put isolated fraud at ~0.33% of payments at the default sizes (1M rows), so
# that with the bursts (~0.4%) about 0.7% of payments are fraud in either regime.


def burst_sizes(rng: np.random.Generator, target_rows: int) -> np.ndarray:
    """Sizes (3-8 payments) of the bursts, totalling at most ``target_rows`` payments."""
    sizes = rng.integers(BURST_MIN_SIZE, BURST_MAX_SIZE + 1, target_rows // BURST_MIN_SIZE + 1)
    return sizes[np.cumsum(sizes) <= target_rows]


@dataclass(frozen=True)
class Bursts:
    """Compromised-card payments: the rows, and when each row's burst started (us)."""

    txn: Transactions
    burst_start_us: np.ndarray


def burst_transactions(
    rng: np.random.Generator,
    sizes: np.ndarray,
    customers: Customers,
    picker: MerchantPicker,
    window: Window,
) -> Bursts:
    """Bursts of ``sizes`` payments each, for one customer within an hour, stolen-card style."""
    burst = np.repeat(np.arange(len(sizes)), sizes)
    n = len(burst)
    start = sample_event_times(rng, len(sizes), window, cat.FRAUD_HOUR_WEIGHTS)
    holder = customers.sample(rng.random(len(sizes)))
    offset = rng.integers(0, BURST_SPAN_US, n)
    offset = offset[np.lexsort((offset, burst))]
    event = np.minimum(start[burst] + offset, window.end_us - 1)
    txn = burst_content(rng, holder[burst], event, customers, picker, STOLEN_CARD_BURST)
    return Bursts(txn=txn, burst_start_us=start[burst])


def burst_content(
    rng: np.random.Generator,
    customer: np.ndarray,
    event_us: np.ndarray,
    customers: Customers,
    picker: MerchantPicker,
    style: BurstStyle,
) -> Transactions:
    """Merchant, channel and amount of fraud payments in ``style`` for these cards and times."""
    n = len(customer)
    names = list(cat.CATEGORY_NAMES)
    choices = np.array([names.index(c) for c in style.categories])
    cdf = np.cumsum(style.weights) / np.sum(style.weights)
    category = choices[np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)]
    usual = np.minimum(cat.CATEGORY_ECOM_SHARE[category] * customers.ecom_affinity[customer], 0.99)
    ecom = rng.random(n) < (usual if style.ecom_share is None else style.ecom_share)
    countries = list(cat.MERCHANT_COUNTRIES)
    fraud_country = np.array([countries.index(c) for c in cat.FRAUD_MERCHANT_COUNTRIES])
    abroad = rng.random(n) < style.abroad_share
    far = fraud_country[rng.integers(0, len(fraud_country), n)]
    merchant = picker.pick(
        category, np.where(abroad, far, customers.country_idx[customer]), rng.random(n)
    )
    z = rng.standard_normal(n)
    ordinary = cat.TYPICAL_TICKET_EUR * customers.spend_scale(customer, event_us)
    if style.ticket_eur is None:
        log_ratio = np.log(
            style.ticket_factor * cat.CATEGORY_MEDIAN_EUR[category] / cat.TYPICAL_TICKET_EUR
        )
        log_ratio = log_ratio + style.log_sigma * z
    else:
        log_ratio = np.log(
            np.maximum(np.round(style.ticket_eur * np.exp(style.log_sigma * z), 2), 0.5) / ordinary
        )
    amount = ticket_eur(customers, customer, event_us, log_ratio)
    return Transactions(customer, merchant, category, ecom, amount, log_ratio, event_us)


def isolated_fraud(
    u: np.ndarray,
    txn: Transactions,
    customers: Customers,
    merchant_country: np.ndarray,
    card_testing: np.ndarray,
) -> np.ndarray:
    """Which ordinary payments are fraud: ``u`` (uniform [0, 1)) below the payment's odds.

    ``card_testing`` marks rows judged by :data:`CARD_TESTING_ODDS` instead of the stolen-card
    odds; ``merchant_country`` indexes MERCHANT_COUNTRIES per merchant.
    """
    stolen = _fraud_log_odds(txn, customers, merchant_country, STOLEN_CARD_ODDS)
    testing = _fraud_log_odds(txn, customers, merchant_country, CARD_TESTING_ODDS)
    log_odds = np.where(card_testing, testing, stolen)
    return u < 1.0 / (1.0 + np.exp(-log_odds))


def _fraud_log_odds(
    txn: Transactions, customers: Customers, merchant_country: np.ndarray, odds: FraudOdds
) -> np.ndarray:
    """Log-odds of fraud for every row under ``odds``."""
    foreign = merchant_country[txn.merchant] != customers.country_idx[txn.customer]
    card_test = np.isin(txn.category, [cat.category_index(c) for c in CARD_TEST_CATEGORIES])
    night = (txn.event_us // cat.HOUR_US) % 24 < cat.NIGHT_HOURS_END
    return np.asarray(
        odds.intercept
        + odds.log_ratio * txn.log_ratio
        + odds.foreign * foreign
        + odds.risky * cat.CATEGORY_RISKY[txn.category]
        + odds.card_test_category * card_test
        + odds.ecom * txn.ecom
        + odds.night * night
    )


def label_delays_us(rng: np.random.Generator, is_fraud: np.ndarray) -> np.ndarray:
    """Time (us) from payment to label: a chargeback after 1-30 days (mode ~5, mean ~8) for
    fraud, the close of the 30-day chargeback window for legitimate payments."""
    days = np.clip(
        1.0 + rng.gamma(2.2, 3.0, len(is_fraud)), CHARGEBACK_MIN_DAYS, CHARGEBACK_MAX_DAYS
    )
    chargeback_us = np.round(days * cat.DAY_US).astype(np.int64)
    return np.where(is_fraud, chargeback_us, LEGIT_LABEL_DELAY_US)

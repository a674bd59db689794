"""Card transactions of the synthetic data: when, who, where, how much, and when they arrive.

Vectorised numpy only. Money is in euros (EUR); times are int64 microseconds since the Unix
epoch (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from examples.fraud.datagen import catalog as cat
from examples.fraud.datagen.entities import Customers, GroupedSampler, MerchantPicker

LATE_SHARE = 0.03  # records that reach the platform minutes to hours after the card was used
MAX_LATE_US = 48 * cat.HOUR_US
AMOUNT_SHIFT_MEDIAN = 1.6  # covariate_shift: post-drift ticket sizes, times this
NEW_CATEGORY_ADOPTERS = 0.35  # new_category: share of customers who start using it
NEW_CATEGORY_USE = 0.45  # ... and the share of an adopter's post-drift payments that go there


@dataclass(frozen=True)
class Window:
    """The simulated period: ``days`` UTC days from ``start_us``; scenarios act from ``drift_us``."""

    start_us: int
    days: int
    drift_us: int

    @property
    def end_us(self) -> int:
        """First microsecond after the window."""
        return self.start_us + self.days * cat.DAY_US

    def day_cdf(self) -> np.ndarray:
        """Cumulative share of card activity per day of the window (weekly seasonality)."""
        weekday = (np.arange(self.days) + (self.start_us // cat.DAY_US + 3)) % 7  # 1970-01-01: Thu
        weights = cat.WEEKDAY_WEIGHTS[weekday]
        return np.asarray(np.cumsum(weights) / weights.sum())


def sample_event_times(
    rng: np.random.Generator, n: int, window: Window, hour_weights: np.ndarray
) -> np.ndarray:
    """``n`` event times (us): weekday-weighted day, ``hour_weights``-weighted hour, uniform within."""
    day = np.minimum(
        np.searchsorted(window.day_cdf(), rng.random(n), side="right"), window.days - 1
    )
    hour_cdf = np.cumsum(hour_weights) / hour_weights.sum()
    hour = np.minimum(np.searchsorted(hour_cdf, rng.random(n), side="right"), 23)
    within = rng.integers(0, cat.HOUR_US, n)
    return np.asarray(window.start_us + day * cat.DAY_US + hour * cat.HOUR_US + within)


@dataclass
class Transactions:
    """Columns of transaction rows in generation order (not yet sorted by time).

    ``log_ratio`` is log(amount / the customer's ordinary ticket at that time): how unusual the
    amount is for this card holder, independent of scenario-wide price shifts.
    """

    customer: np.ndarray
    merchant: np.ndarray
    category: np.ndarray
    ecom: np.ndarray
    amount_eur: np.ndarray
    log_ratio: np.ndarray
    event_us: np.ndarray

    def __len__(self) -> int:
        return len(self.customer)

    def concat(self, other: Transactions) -> Transactions:
        """These rows followed by ``other``'s."""
        return Transactions(
            *(np.concatenate([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self))
        )

    def take(self, order: np.ndarray) -> Transactions:
        """The rows at positions ``order``."""
        return Transactions(*(getattr(self, f.name)[order] for f in fields(self)))

    def where(self, mask: np.ndarray, other: Transactions) -> Transactions:
        """``other``'s rows where ``mask`` holds, these rows elsewhere (same length)."""
        return Transactions(
            *(np.where(mask, getattr(other, f.name), getattr(self, f.name)) for f in fields(self))
        )


def ticket_eur(
    customers: Customers, customer: np.ndarray, at_us: np.ndarray, log_ratio: np.ndarray
) -> np.ndarray:
    """Amount in EUR (cents, >= 0.01) of a ticket ``exp(log_ratio)`` times the customer's ordinary."""
    ordinary = cat.TYPICAL_TICKET_EUR * customers.spend_scale(customer, at_us)
    return np.asarray(np.maximum(np.round(ordinary * np.exp(log_ratio), 2), 0.01))


def base_transactions(
    rng: np.random.Generator, n: int, customers: Customers, picker: MerchantPicker, window: Window
) -> Transactions:
    """``n`` ordinary payments of the baseline world, spread over the window."""
    customer = customers.sample(rng.random(n))
    event = sample_event_times(rng, n, window, cat.HOUR_WEIGHTS)
    category = customers.sample_categories(customer, rng.random(n))
    p_ecom = cat.CATEGORY_ECOM_SHARE[category] * customers.ecom_affinity[customer]
    ecom = rng.random(n) < np.minimum(p_ecom, 0.99)
    domestic = rng.random(n) < np.where(ecom, 0.75, 0.96)
    country = np.where(domestic, customers.country_idx[customer], -1)
    merchant = picker.pick(category, country, rng.random(n))
    log_ratio = np.log(cat.CATEGORY_MEDIAN_EUR[category] / cat.TYPICAL_TICKET_EUR)
    log_ratio = log_ratio + cat.CATEGORY_LOG_SIGMA[category] * rng.standard_normal(n)
    amount = ticket_eur(customers, customer, event, log_ratio)
    return Transactions(customer, merchant, category, ecom, amount, log_ratio, event)


def apply_amount_shift(rng: np.random.Generator, txn: Transactions, window: Window) -> None:
    """covariate_shift: every payment from the drift start on costs about 1.6 times as much."""
    factor = rng.lognormal(np.log(AMOUNT_SHIFT_MEDIAN), 0.15, len(txn))
    post = txn.event_us >= window.drift_us
    txn.amount_eur[post] = np.round(txn.amount_eur[post] * factor[post], 2)


def apply_new_category(
    rng: np.random.Generator,
    txn: Transactions,
    customers: Customers,
    crypto: GroupedSampler,
    first_crypto: int,
    window: Window,
) -> None:
    """new_category: from the drift start, adopters spend a share of payments at crypto exchanges.

    ``crypto`` samples among the new merchants, whose indices start at ``first_crypto``.
    """
    n = len(txn)
    adopter = rng.random(customers.n) < NEW_CATEGORY_ADOPTERS
    use, pick, channel, z = rng.random(n), rng.random(n), rng.random(n), rng.standard_normal(n)
    sel = (txn.event_us >= window.drift_us) & adopter[txn.customer] & (use < NEW_CATEGORY_USE)
    new = cat.NEW_CATEGORY
    txn.category[sel] = cat.NEW_CATEGORY_INDEX
    txn.merchant[sel] = first_crypto + crypto.sample(np.zeros(sel.sum(), np.int64), pick[sel])
    txn.ecom[sel] = channel[sel] < new.ecom_share
    txn.log_ratio[sel] = np.log(new.median_eur / cat.TYPICAL_TICKET_EUR) + new.log_sigma * z[sel]
    txn.amount_eur[sel] = ticket_eur(
        customers, txn.customer[sel], txn.event_us[sel], txn.log_ratio[sel]
    )


def arrival_delays_us(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds (us) from card use to arrival: ~2 s for most, minutes to 48 h for ~3% (heavy tail).

    Never under 50 ms, the authorisation round trip: a payment is scored before it is recorded,
    so a training row at the payment's own time never has it in its windows, as serving doesn't."""
    late = rng.random(n) < LATE_SHARE
    fast_s = np.clip(rng.lognormal(np.log(2.0), 0.8, n), 0.05, 30.0)
    late_min = np.clip(rng.lognormal(np.log(20.0), 1.6, n), 2.0, MAX_LATE_US / cat.MINUTE_US)
    delay_us = np.where(late, late_min * cat.MINUTE_US, fast_s * cat.SECOND_US)
    return np.round(delay_us).astype(np.int64)

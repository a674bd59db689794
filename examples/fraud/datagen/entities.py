"""Customers, their profile versions and merchants for the synthetic card-fraud data.

All sampling is vectorised numpy. Money is in euros (EUR); times are int64 microseconds since
the Unix epoch (UTC). Indices (customer, merchant, country, category) are 0-based positions;
the public ids written to Parquet are these positions plus one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from examples.fraud.datagen import catalog as cat

NO_UPDATE_US = np.iinfo(np.int64).max
PROFILE_UPDATE_SHARE = 0.10  # customers with one later income update inside the window
SIGNUP_SPAN_DAYS = 365  # customers signed up within this many days before the window


class GroupedSampler:
    """Draws one item from a chosen weighted group per request, for many requests at once.

    Items are laid out group by group on a line where group ``g`` covers ``(g, g + 1]`` in
    proportion to the items' weights, so one ``searchsorted`` answers every request.
    """

    def __init__(self, group: np.ndarray, weight: np.ndarray, n_groups: int) -> None:
        order = np.lexsort((np.arange(len(group)), group))
        g = group[order].astype(np.int64)
        w = weight[order].astype(np.float64)
        self.counts = np.bincount(g, minlength=n_groups)
        self._ends = np.cumsum(self.counts)
        self._starts = self._ends - self.counts
        totals = np.bincount(g, weights=w, minlength=n_groups)
        normalised = w / np.where(totals[g] > 0, totals[g], 1.0)
        running = np.cumsum(normalised)
        before = np.concatenate([[0.0], running])[self._starts]
        within = running - before[g]
        within[self._ends[self.counts > 0] - 1] = 1.0
        self._keys = g + within
        self._items = order

    def sample(self, group: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One item index per request; ``group`` must name non-empty groups, ``u`` is in [0, 1)."""
        pos = np.searchsorted(self._keys, group + u, side="right")
        pos = np.clip(pos, self._starts[group], self._ends[group] - 1)
        return np.asarray(self._items[pos])


@dataclass(frozen=True)
class Customers:
    """Card holders: demographics, spending habits and their (at most one) baseline income update.

    ``income_eur`` is the annual income of the first profile version; ``update_*`` describe the
    later version (``update_us`` is :data:`NO_UPDATE_US` where there is none).
    """

    age_idx: np.ndarray
    country_idx: np.ndarray
    income_eur: np.ndarray
    signup_us: np.ndarray
    signup_recorded_us: np.ndarray
    activity_cdf: np.ndarray
    spend_noise: np.ndarray
    ecom_affinity: np.ndarray
    categories: GroupedSampler
    update_us: np.ndarray
    update_income_eur: np.ndarray
    update_recorded_us: np.ndarray

    @property
    def n(self) -> int:
        """Number of customers."""
        return len(self.age_idx)

    def sample(self, u: np.ndarray) -> np.ndarray:
        """Customer indices, busy customers more often; ``u`` uniform in [0, 1)."""
        return np.minimum(np.searchsorted(self.activity_cdf, u, side="right"), self.n - 1)

    def sample_categories(self, customer: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A category index per payment, from each customer's own category mix."""
        return self.categories.sample(customer, u) % len(cat.CATEGORIES)

    def income_at(self, customer: np.ndarray, at_us: np.ndarray) -> np.ndarray:
        """Annual income (EUR) of each customer in effect at ``at_us`` (baseline versions)."""
        updated = at_us >= self.update_us[customer]
        return np.asarray(
            np.where(updated, self.update_income_eur[customer], self.income_eur[customer])
        )

    def spend_scale(self, customer: np.ndarray, at_us: np.ndarray) -> np.ndarray:
        """Multiplier on a category's median ticket (EUR) for these customers at these times."""
        relative = self.income_at(customer, at_us) / cat.REFERENCE_INCOME_EUR
        return np.asarray(relative**cat.INCOME_SPEND_ELASTICITY * self.spend_noise[customer])


def delay_us(
    rng: np.random.Generator, n: int, median_h: float, min_h: float, max_h: float
) -> np.ndarray:
    """Lognormal delays in microseconds with the given median, clipped to [min_h, max_h] hours."""
    hours = np.clip(rng.lognormal(np.log(median_h), 1.0, n), min_h, max_h)
    return np.round(hours * cat.HOUR_US).astype(np.int64)


def make_customers(rng: np.random.Generator, n: int, start_us: int, days: int) -> Customers:
    """Sample ``n`` customers who signed up before ``start_us`` and a window of ``days`` days."""
    age = rng.choice(len(cat.AGE_BANDS), size=n, p=cat.AGE_BAND_WEIGHTS)
    country = rng.choice(len(cat.CUSTOMER_COUNTRIES), size=n, p=cat.CUSTOMER_COUNTRY_WEIGHTS)
    median = cat.AGE_BAND_MEDIAN_INCOME_EUR[age] * cat.COUNTRY_INCOME_FACTOR[country]
    income = np.round(median * rng.lognormal(0.0, cat.INCOME_LOG_SIGMA, n), -1)
    signup = start_us - rng.integers(cat.DAY_US, SIGNUP_SPAN_DAYS * cat.DAY_US, n)
    signup_recorded = signup + delay_us(rng, n, 0.1, 0.001, 12.0)
    activity = rng.lognormal(0.0, 1.0, n)
    activity_cdf = np.cumsum(activity) / activity.sum()
    spend_noise = rng.lognormal(0.0, 0.25, n)
    ecom_affinity = cat.AGE_BAND_ECOM_AFFINITY[age] * rng.lognormal(0.0, 0.2, n)
    categories = _category_preferences(rng, n)
    updated = rng.random(n) < PROFILE_UPDATE_SHARE
    update_at = start_us + rng.integers(0, days * cat.DAY_US, n)
    update_income = np.round(income * rng.lognormal(0.03, 0.18, n), -1)
    update_recorded = update_at + delay_us(rng, n, 10.0, 1.0, 120.0)
    return Customers(
        age_idx=age,
        country_idx=country,
        income_eur=income,
        signup_us=signup,
        signup_recorded_us=signup_recorded,
        activity_cdf=activity_cdf,
        spend_noise=spend_noise,
        ecom_affinity=ecom_affinity,
        categories=categories,
        update_us=np.where(updated, update_at, NO_UPDATE_US),
        update_income_eur=update_income,
        update_recorded_us=update_recorded,
    )


def _category_preferences(rng: np.random.Generator, n: int) -> GroupedSampler:
    """Per-customer category mix: personal habits (Dirichlet) blended with the population mix."""
    k = len(cat.CATEGORIES)
    share = cat.CATEGORY_TXN_SHARE / cat.CATEGORY_TXN_SHARE.sum()
    habits = rng.dirichlet(share * 10.0, size=n) if n else np.empty((0, k))
    mix = 0.7 * np.nan_to_num(habits) + 0.3 * share
    return GroupedSampler(np.repeat(np.arange(n), k), mix.ravel(), n)


@dataclass(frozen=True)
class IncomeShift:
    """Extra profile versions of the covariate-shift scenario: income times ``factor`` from ``at_us``."""

    shifted: np.ndarray
    at_us: np.ndarray
    recorded_us: np.ndarray
    factor: np.ndarray


def make_income_shift(rng: np.random.Generator, customers: Customers, drift_us: int) -> IncomeShift:
    """Move the income of most customers up by about a third within 3 days after ``drift_us``."""
    n = customers.n
    shifted = rng.random(n) < 0.6
    at = drift_us + rng.integers(0, 3 * cat.DAY_US, n)
    recorded = at + delay_us(rng, n, 10.0, 1.0, 120.0)
    factor = rng.lognormal(np.log(1.35), 0.1, n)
    return IncomeShift(shifted=shifted, at_us=at, recorded_us=recorded, factor=factor)


@dataclass(frozen=True)
class ProfileRows:
    """Rows of ``customer_profiles/``: one per customer and profile version."""

    customer_idx: np.ndarray
    income_eur: np.ndarray
    valid_from_us: np.ndarray
    recorded_at_us: np.ndarray


def profile_rows(customers: Customers, shift: IncomeShift | None) -> ProfileRows:
    """All profile versions: sign-up, baseline updates and, when given, the income shift."""
    everyone = np.arange(customers.n)
    upd = np.flatnonzero(customers.update_us != NO_UPDATE_US)
    idx = [everyone, upd]
    income = [customers.income_eur, customers.update_income_eur[upd].copy()]
    valid = [customers.signup_us, customers.update_us[upd]]
    recorded = [customers.signup_recorded_us, customers.update_recorded_us[upd]]
    if shift is not None:
        moved = upd[shift.shifted[upd] & (customers.update_us[upd] >= shift.at_us[upd])]
        income[1][np.isin(upd, moved)] *= shift.factor[moved]
        s = np.flatnonzero(shift.shifted)
        idx.append(s)
        income.append(customers.income_at(s, shift.at_us[s]) * shift.factor[s])
        valid.append(shift.at_us[s])
        recorded.append(shift.recorded_us[s])
    return ProfileRows(
        customer_idx=np.concatenate(idx),
        income_eur=np.round(np.concatenate(income), -1),
        valid_from_us=np.concatenate(valid),
        recorded_at_us=np.concatenate(recorded),
    )


@dataclass(frozen=True)
class Merchants:
    """Merchants with a category, a country (index into MERCHANT_COUNTRIES) and a popularity."""

    category_idx: np.ndarray
    country_idx: np.ndarray
    onboarded_us: np.ndarray
    popularity: np.ndarray

    @property
    def n(self) -> int:
        """Number of merchants."""
        return len(self.category_idx)

    def concat(self, other: Merchants) -> Merchants:
        """These merchants followed by ``other`` (whose indices shift by ``self.n``)."""
        return Merchants(
            *(np.concatenate([a, b]) for a, b in zip(self._columns(), other._columns()))
        )

    def _columns(self) -> tuple[np.ndarray, ...]:
        return (self.category_idx, self.country_idx, self.onboarded_us, self.popularity)


class MerchantPicker:
    """Chooses merchants of a category, in a given country when one exists there."""

    def __init__(self, merchants: Merchants) -> None:
        k = len(cat.ALL_CATEGORIES)
        self._k = k
        self._by_category = GroupedSampler(merchants.category_idx, merchants.popularity, k)
        cell = merchants.country_idx * k + merchants.category_idx
        self._by_cell = GroupedSampler(cell, merchants.popularity, len(cat.MERCHANT_COUNTRIES) * k)

    def pick(self, category: np.ndarray, country: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Merchant indices; ``country`` -1 (or a country without such merchants) means anywhere."""
        cell = np.maximum(country, 0) * self._k + category
        local = (country >= 0) & (self._by_cell.counts[cell] > 0)
        out = self._by_category.sample(category, u)
        out[local] = self._by_cell.sample(cell[local], u[local])
        return out


def make_merchants(rng: np.random.Generator, n: int, start_us: int) -> Merchants:
    """``n`` merchants onboarded up to three years before ``start_us``.

    Every category has a merchant, and the busiest (home country, category) pairs get one
    each before the rest are drawn at random, so small catalogues still serve most payments
    domestically.
    """
    k = len(cat.CATEGORIES)
    volume = np.outer(cat.CUSTOMER_COUNTRY_WEIGHTS, cat.CATEGORY_TXN_SHARE).ravel()
    top = np.argsort(-volume, kind="stable")[: min((n - k) // 2, volume.size)]
    weights = cat.CATEGORY_TXN_SHARE**0.7 / (cat.CATEGORY_TXN_SHARE**0.7).sum()
    drawn = rng.choice(k, size=n - k - len(top), p=weights)
    domestic = rng.random(n) < cat.DOMESTIC_MERCHANT_SHARE
    home = rng.choice(len(cat.CUSTOMER_COUNTRIES), size=n, p=cat.CUSTOMER_COUNTRY_WEIGHTS)
    abroad = len(cat.CUSTOMER_COUNTRIES) + rng.choice(
        len(cat.FOREIGN_MERCHANT_COUNTRIES), size=n, p=cat.FOREIGN_MERCHANT_COUNTRY_WEIGHTS
    )
    country = np.where(domestic, home, abroad)
    country[k : k + len(top)] = top // k
    shuffle = rng.permutation(n)
    return Merchants(
        category_idx=np.concatenate([np.arange(k), top % k, drawn])[shuffle],
        country_idx=country[shuffle],
        onboarded_us=start_us - rng.integers(cat.DAY_US, 3 * 365 * cat.DAY_US, n),
        popularity=rng.lognormal(0.0, 1.2, n),
    )


def make_crypto_merchants(rng: np.random.Generator, n: int, drift_us: int) -> Merchants:
    """``n`` merchants of the new category, onboarded in the two days before ``drift_us``."""
    names = list(cat.MERCHANT_COUNTRIES)
    countries = np.array([names.index(c) for c in cat.CRYPTO_MERCHANT_COUNTRIES])
    pick = rng.choice(len(countries), size=n, p=cat.CRYPTO_MERCHANT_COUNTRY_WEIGHTS)
    return Merchants(
        category_idx=np.full(n, cat.NEW_CATEGORY_INDEX),
        country_idx=countries[pick],
        onboarded_us=drift_us - rng.integers(cat.HOUR_US, 2 * cat.DAY_US, n),
        popularity=rng.lognormal(0.0, 1.0, n),
    )

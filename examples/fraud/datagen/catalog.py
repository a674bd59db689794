"""Static tables behind the synthetic card-fraud data: who the customers are, where merchants
sit, what each merchant category sells and when people shop.

Everything here is a constant; the sampling lives in :mod:`examples.fraud.datagen.entities`,
:mod:`examples.fraud.datagen.events` and :mod:`examples.fraud.datagen.fraud`. Money is in euros (EUR),
times are microseconds since the Unix epoch (UTC) unless a name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US

AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_BAND_WEIGHTS = np.array([0.10, 0.20, 0.20, 0.18, 0.17, 0.15])
# Median gross annual income (EUR) per age band, before the country factor.
AGE_BAND_MEDIAN_INCOME_EUR = np.array([21_000.0, 37_000.0, 47_000.0, 51_000.0, 46_000.0, 29_000.0])
# Younger customers shop online more often; multiplies a category's e-commerce share.
AGE_BAND_ECOM_AFFINITY = np.array([1.35, 1.25, 1.05, 0.9, 0.75, 0.55])
INCOME_LOG_SIGMA = 0.45

# Home countries of the card holders (ISO 3166 alpha-2): 12 EU countries and a few others.
EU_CUSTOMER_COUNTRIES = ("DE", "FR", "IT", "ES", "NL", "BE", "PL", "AT", "PT", "SE", "IE", "FI")
CUSTOMER_COUNTRIES = EU_CUSTOMER_COUNTRIES + ("GB", "CH", "US")
CUSTOMER_COUNTRY_WEIGHTS = np.array(
    [0.22, 0.18, 0.13, 0.11, 0.07, 0.05, 0.06, 0.04, 0.03, 0.03, 0.02, 0.02, 0.02, 0.01, 0.01]
)
COUNTRY_INCOME_FACTOR = np.array(
    [1.10, 1.00, 0.85, 0.80, 1.15, 1.05, 0.60, 1.10, 0.65, 1.10, 1.20, 1.05, 1.10, 1.60, 1.30]
)
# Countries that only merchants live in (online shops, marketplaces, resorts, exchanges).
FOREIGN_MERCHANT_COUNTRIES = ("CN", "TR", "AE", "HK", "MT", "CY", "EE", "LT")
FOREIGN_MERCHANT_COUNTRY_WEIGHTS = np.array([0.22, 0.14, 0.10, 0.12, 0.12, 0.10, 0.10, 0.10])
MERCHANT_COUNTRIES = CUSTOMER_COUNTRIES + FOREIGN_MERCHANT_COUNTRIES
# Share of merchants located in the customers' countries (the rest are foreign-only).
DOMESTIC_MERCHANT_SHARE = 0.85
# Countries that fraudsters' merchants sit in: the foreign-only ones plus a few large markets.
FRAUD_MERCHANT_COUNTRIES = ("US", "GB", "CN", "TR", "AE", "HK", "MT", "CY")


@dataclass(frozen=True)
class MerchantCategory:
    """One merchant category and how card holders use it.

    ``txn_share`` is the share of all transactions, ``median_eur`` and ``log_sigma`` shape a
    lognormal ticket size (EUR) for a customer of typical income, ``ecom_share`` is the chance
    that a purchase is card-not-present, ``risky`` marks categories that fraudsters favour.
    """

    name: str
    txn_share: float
    median_eur: float
    log_sigma: float
    ecom_share: float
    risky: bool = False


CATEGORIES = (
    MerchantCategory("grocery", 0.24, 32.0, 0.70, 0.05),
    MerchantCategory("restaurants", 0.14, 28.0, 0.60, 0.10),
    MerchantCategory("fuel", 0.10, 55.0, 0.40, 0.02),
    MerchantCategory("clothing", 0.08, 60.0, 0.70, 0.35),
    MerchantCategory("pharmacy", 0.06, 18.0, 0.60, 0.10),
    MerchantCategory("transport", 0.07, 12.0, 0.70, 0.30),
    MerchantCategory("online_retail", 0.08, 45.0, 0.80, 0.95),
    MerchantCategory("subscriptions", 0.04, 13.0, 0.30, 0.98),
    MerchantCategory("home_garden", 0.04, 70.0, 0.80, 0.25),
    MerchantCategory("electronics", 0.04, 180.0, 0.90, 0.55, risky=True),
    MerchantCategory("travel", 0.03, 350.0, 0.90, 0.70),
    MerchantCategory("hotels", 0.02, 220.0, 0.70, 0.60),
    MerchantCategory("online_gaming", 0.02, 25.0, 1.00, 0.99, risky=True),
    MerchantCategory("jewelry", 0.01, 400.0, 0.90, 0.30, risky=True),
    MerchantCategory("health_beauty", 0.03, 35.0, 0.60, 0.30),
)
# The category that only the ``new_category`` scenario introduces, after the drift start. Not
# flagged risky: its fraud comes from large, card-not-present, often foreign tickets.
NEW_CATEGORY = MerchantCategory("crypto_exchange", 0.0, 150.0, 1.00, 0.97)
ALL_CATEGORIES = CATEGORIES + (NEW_CATEGORY,)
NEW_CATEGORY_INDEX = len(CATEGORIES)
CRYPTO_MERCHANT_COUNTRIES = ("MT", "CY", "EE", "LT", "DE", "GB")
CRYPTO_MERCHANT_COUNTRY_WEIGHTS = np.array([0.30, 0.20, 0.15, 0.10, 0.15, 0.10])

CATEGORY_NAMES = tuple(c.name for c in ALL_CATEGORIES)
CATEGORY_TXN_SHARE = np.array([c.txn_share for c in CATEGORIES])
CATEGORY_MEDIAN_EUR = np.array([c.median_eur for c in ALL_CATEGORIES])
CATEGORY_LOG_SIGMA = np.array([c.log_sigma for c in ALL_CATEGORIES])
CATEGORY_ECOM_SHARE = np.array([c.ecom_share for c in ALL_CATEGORIES])
CATEGORY_RISKY = np.array([c.risky for c in ALL_CATEGORIES])


def category_index(name: str) -> int:
    """Position of a category in :data:`ALL_CATEGORIES`."""
    return CATEGORY_NAMES.index(name)


# Ticket size (EUR) that a customer of reference income considers ordinary; the fraud model
# measures "unusually large" against it.
TYPICAL_TICKET_EUR = 40.0
REFERENCE_INCOME_EUR = 40_000.0
# Elasticity of ticket size with respect to income.
INCOME_SPEND_ELASTICITY = 0.4

# Relative card activity per hour of day (UTC, which is close to local time for most
# customers): quiet at night, peaks at lunch and in the early evening.
HOUR_WEIGHTS = np.array(
    [0.6, 0.35, 0.25, 0.2, 0.2, 0.3, 0.8, 1.8, 3.0, 3.8, 4.3, 4.9]  # 00:00-11:59
    + [5.6, 5.3, 4.6, 4.5, 4.9, 5.6, 6.0, 5.7, 4.9, 3.9, 2.6, 1.4]  # 12:00-23:59
)
# Fraud bursts are spread more evenly over the day and favour the night.
FRAUD_HOUR_WEIGHTS = HOUR_WEIGHTS**0.3 * np.where(np.arange(24) < 6, 3.0, 1.0)
NIGHT_HOURS_END = 6  # hours [0, 6) count as night
# Relative activity per weekday, Monday first: Friday and Saturday are busiest.
WEEKDAY_WEIGHTS = np.array([0.95, 0.97, 1.0, 1.03, 1.15, 1.12, 0.78])

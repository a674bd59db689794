"""Training entry points of the driver example, over a point-in-time training frame.

The frame has one row per requested trip: the join keys, ``event_timestamp`` (the request time),
the request-time column ``trip_distance_km``, the six features by their plain names as
``FeatureStore.get_historical_features(features=FEATURE_REFS)`` returns them, and the labels.
Each entry point returns a fitted scikit-learn ``Pipeline`` whose ``feature_names_in_`` is
:data:`INPUTS`, so serving can build its input from the same names.
"""

from __future__ import annotations

import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["COMPLETION_LABEL", "DURATION_LABEL", "FEATURE_REFS", "INPUTS", "fit_completion", "fit_duration"]

FEATURE_REFS: tuple[str, ...] = (
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
    "customer_daily_profile:current_balance",
    "customer_daily_profile:avg_passenger_count",
    "customer_daily_profile:lifetime_trip_count",
)
"""The features both models read, as Feast references (the ``driver_activity`` service)."""

INPUTS: tuple[str, ...] = (*(ref.split(":")[1] for ref in FEATURE_REFS), "trip_distance_km")
"""Model inputs in order: the six features, then the trip distance (km) known at request time."""

COMPLETION_LABEL = "completed"
"""1 when the requested trip was completed, 0 when it was cancelled."""

DURATION_LABEL = "trip_minutes"
"""Duration of a completed trip (minutes); NaN for a cancelled one."""


def fit_completion(frame: pd.DataFrame) -> Pipeline:
    """Logistic regression of ``completed`` on :data:`INPUTS`; rows without a known label are left out.

    Missing features (a driver or customer with no row within the view's TTL) are imputed with
    the training median.
    """
    known = _labelled(frame, COMPLETION_LABEL)
    labels = known[COMPLETION_LABEL].astype("int64")
    if labels.nunique() < 2:
        raise ValueError(f"{COMPLETION_LABEL!r} has a single class ({labels.unique().tolist()}) in "
                         f"{len(labels)} labelled rows; train on a longer window")
    model = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler()),
                      ("classify", LogisticRegression(max_iter=1000))])
    return model.fit(known.loc[:, list(INPUTS)], labels)


def fit_duration(frame: pd.DataFrame) -> Pipeline:
    """Ridge regression of ``trip_minutes`` (minutes) on :data:`INPUTS`, over completed trips.

    Linear on purpose: on the example's data it is as accurate as gradient-boosted trees (the
    distance term dominates the distance x party-size interaction) and fits in milliseconds.
    Inputs are standardised so the ridge penalty weighs each of them alike.
    """
    known = _labelled(frame, DURATION_LABEL)
    model = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler()),
                      ("regress", Ridge(alpha=1.0))])
    return model.fit(known.loc[:, list(INPUTS)], known[DURATION_LABEL].astype("float64"))


def _labelled(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Rows of ``frame`` whose ``label`` is known, after checking every input column is there."""
    missing = [c for c in (*INPUTS, label) if c not in frame.columns]
    if missing:
        raise ValueError(f"training frame lacks columns {missing}; it has {list(frame.columns)}")
    known = frame[frame[label].notna()]
    if known.empty:
        raise ValueError(f"no row of the {len(frame)}-row training frame has a known {label!r}")
    return known

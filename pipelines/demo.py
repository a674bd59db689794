"""``tidemark demo``: the loop as far as it exists — data, features, a training frame."""

from __future__ import annotations

import time
from datetime import timedelta

import pandas as pd

from features.settings import Settings


def run_demo(settings: Settings, *, rows: int, seed: int) -> pd.DataFrame:
    """Generate ``rows`` transactions, build the feature tables, and print a training frame summary."""
    from features.feature_jobs import build_features
    from features.feature_views import DEFAULT_FEATURES
    from features.sdk import FeatureClient
    from features.spark import spark_session
    from pipelines.datagen import DatagenConfig, generate
    from pipelines.training_data import labelled_transactions, last_event_time

    print(f"tidemark demo: state in {settings.home}")
    print("1/3 generating raw events …")
    print(generate(settings.raw_dir, DatagenConfig(rows=rows, seed=seed)).table())
    print("2/3 building feature tables on Spark …")
    print(build_features(spark_session(settings.spark), settings.raw_dir, settings.offline_dir).table())
    print("3/3 building a point-in-time training frame through Feast …")
    client = FeatureClient(settings)
    client.apply()
    cutoff = last_event_time(settings.raw_dir) - timedelta(days=1)
    entities = labelled_transactions(settings.raw_dir, label_cutoff=cutoff, sample=50_000, seed=seed)
    started = time.perf_counter()
    frame = client.training_frame(entities, DEFAULT_FEATURES)
    seconds = time.perf_counter() - started
    print(_summary(frame, cutoff, seconds))
    return frame


def _summary(frame: pd.DataFrame, cutoff: pd.Timestamp, seconds: float) -> str:
    features = [c for c in frame.columns if c not in
                {"transaction_id", "customer_id", "merchant_id", "amount", "channel", "event_timestamp", "is_fraud"}]
    lines = [
        (f"training frame: {len(frame):,} rows × {len(features)} features in {seconds:.1f} s "
        f"(labels known by {cutoff:%Y-%m-%d %H:%M} UTC)"),
        (f"  prediction times {frame['event_timestamp'].min():%Y-%m-%d} … {frame['event_timestamp'].max():%Y-%m-%d}, "
        f"fraud rate {frame['is_fraud'].mean():.2%}"),
        "  feature                     non-null   mean (numeric) / top value",
    ]
    for col in features:
        series = frame[col]
        if pd.api.types.is_numeric_dtype(series):
            shown = f"{series.mean():,.3f}"
        else:
            top = series.value_counts()
            shown = f"{top.index[0]} ({top.iloc[0] / max(series.notna().sum(), 1):.0%})" if len(top) else "-"
        lines.append(f"  {col:<27} {series.notna().mean():>7.1%}   {shown}")
    return "\n".join(lines)

"""``tidemark demo``: the loop as far as it exists — data, features, a training frame, online
reads, a drift check of recent traffic against the training window, and a model trained,
registered in MLflow as the challenger, gated against the champion and promoted.

The generated days end yesterday (UTC), so "now" is right after the data and the online store
serves what a live system would: the latest value per entity, within each view's TTL.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pandas as pd

from features.settings import Settings

if TYPE_CHECKING:
    from features.sdk import FeatureClient


def run_demo(settings: Settings, *, rows: int, seed: int) -> pd.DataFrame:
    """Generate ``rows`` transactions, build the feature tables, and print a training frame summary."""
    from features.feature_jobs import build_features
    from features.feature_views import DEFAULT_FEATURES
    from features.sdk import FeatureClient
    from features.spark import spark_session
    from pipelines.datagen import DatagenConfig, generate
    from pipelines.training_data import labelled_transactions, last_event_time

    days = DatagenConfig.days
    print(f"tidemark demo: state in {settings.home}")
    print("1/6 generating raw events …")
    start = datetime.now(UTC).date() - timedelta(days=days)
    print(generate(settings.raw_dir, DatagenConfig(rows=rows, seed=seed, start=start, days=days)).table())
    print("2/6 building feature tables on Spark …")
    print(build_features(spark_session(settings.spark), settings.raw_dir, settings.offline_dir).table())
    print("3/6 building a point-in-time training frame through Feast …")
    client = FeatureClient(settings)
    client.apply()
    cutoff = last_event_time(settings.raw_dir) - timedelta(days=1)
    entities = labelled_transactions(settings.raw_dir, label_cutoff=cutoff, sample=50_000, seed=seed)
    started = time.perf_counter()
    frame = client.training_frame(entities, DEFAULT_FEATURES)
    seconds = time.perf_counter() - started
    print(_summary(frame, cutoff, seconds))
    print("4/6 materializing to the online store (Redis) and reading it back …")
    _online_demo(client, entities[["customer_id", "merchant_id"]].tail(1_000).reset_index(drop=True))
    print("5/6 drift: one month of the frame against a profile of the months before …")
    _drift_demo(frame, cutoff)
    print("6/6 training the fraud model and registering it in MLflow …")
    _model_demo(settings, client, seed)
    return frame


def _model_demo(settings: Settings, client: FeatureClient, seed: int) -> None:
    """Train on (a sample of) every mature label, register the challenger, then promote it: as the
    first champion, or through the gate when an earlier run left a champion."""
    from pipelines import model_registry
    from pipelines.gate import evaluate_gate
    from pipelines.train_job import train_and_register
    from pipelines.training import TrainConfig

    outcome = train_and_register(settings, TrainConfig(seed=seed, max_rows=120_000), feature_client=client)
    print("  " + outcome.summary().replace("\n", "\n  "))
    ml = model_registry.connect(settings)
    name, version = settings.model_name, str(outcome.version.version)
    if model_registry.alias_version(ml, name, model_registry.CHAMPION) is None:
        model_registry.promote(ml, name, version, first=True)
        print(f"  v{version} promoted: the model's first champion")
    else:
        verdict = evaluate_gate(settings, model_name=name, version=version, feature_client=client)
        print(f"  gate v{version} vs champion v{verdict.champion}: {'pass' if verdict.passed else 'fail'} "
              f"({verdict.reason})")
        if verdict.passed:
            done = model_registry.promote(ml, name, version)
            print(f"  v{done.champion} is champion, v{done.previous} previous-champion")
    print(f"  see it in the MLflow UI: `tidemark mlflow-ui` (store {settings.tracking_uri})")


def _drift_demo(frame: pd.DataFrame, cutoff: pd.Timestamp) -> None:
    """Profile the older part of the training frame and compare the 30 days that end 30 days before
    the label cutoff (later rows are labelled only when they are chargebacks, so the frame's last
    month is a biased sample, not drift)."""
    from monitoring.drift import ReferenceProfile, compare

    columns = [c for c in frame.columns if c not in {"transaction_id", "customer_id", "merchant_id",
                                                     "event_timestamp", "is_fraud"}]
    end = cutoff - pd.Timedelta(days=30)
    start = end - pd.Timedelta(days=30)
    t = frame["event_timestamp"]
    older, recent = frame[t < start], frame[(t >= start) & (t < end)]
    started = time.perf_counter()
    report = compare(ReferenceProfile.fit(older[columns]), recent[columns])
    print(f"  {len(columns)} columns, {len(older):,} reference rows, {len(recent):,} current rows, "
          f"fit + compare in {time.perf_counter() - started:.2f} s; drifted: "
          f"{', '.join(report.drifted_columns) or 'none'}")
    for c in sorted(report.columns, key=lambda c: -(c.psi or 0))[:3]:
        print(f"  {c.column:<20} psi {c.psi or 0:.3f}  {c.test} effect {c.effect or 0:.3f}  {c.rule or ''}")


def _online_demo(client: FeatureClient, entities: pd.DataFrame) -> None:
    """Materialize up to now, then time single-entity and batch reads of the default features."""
    from features.feature_views import DEFAULT_FEATURES

    for result in client.materialize_incremental(datetime.now(UTC)):
        print(f"  {result.view:<20} {result.counts}")
    client.online_features(entities.head(1), DEFAULT_FEATURES)  # connect, resolve the views
    timings: list[float] = []
    for i in range(min(200, len(entities))):
        started = time.perf_counter_ns()
        client.online_features(entities.iloc[i:i + 1], DEFAULT_FEATURES)
        timings.append((time.perf_counter_ns() - started) / 1e6)
    batch_started = time.perf_counter()
    batch = client.online_features(entities, DEFAULT_FEATURES)
    batch_ms = (time.perf_counter() - batch_started) * 1e3
    found = ", ".join(f"{view} {share:.0%}" for view, share in batch.found.mean().items())
    print(f"  online_features, {len(DEFAULT_FEATURES)} features: one entity p50 "
          f"{pd.Series(timings).median():.2f} ms; {len(entities):,} entities in {batch_ms:.1f} ms")
    print(f"  found within TTL: {found}")


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

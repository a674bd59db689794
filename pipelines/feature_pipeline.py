"""The ``feature_pipeline`` DAG's work, one function per task; each takes its data interval.

    build_interval(start, end)     the project's ``feature_jobs.build`` over the interval's UTC
                                   dates (and LATE_DAYS before, for late arrivals): raw events
                                   ──► offline tables, checked first (a failure writes nothing)
    materialize(end)               offline ──► Redis, incrementally up to the interval's end
    check_online(end)              freshness (every view materialized up to ``end``) and
                                   consistency: for the entities the project's
                                   ``feature_jobs.sample_entities`` draws from the interval, the
                                   online values equal the offline point-in-time values at the
                                   instant of the read

Stream feature views have no materialized interval: ``materialize`` rebuilds their window state
as of ``end`` from their event history (pushes keep it current between runs), and the check
compares their windows online and offline at one instant.

A project without ``feature_jobs`` (``tidemark.yaml``) builds its tables itself: its runs only
materialize and check freshness.

An interval ``[start, end)`` covers the UTC dates from ``start``'s to the date of the last
instant before ``end``, so a daily run at midnight builds exactly one day and a re-run of a past
interval rebuilds the same partitions from the same raw data.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from features.errors import FeatureStoreError
from pipelines.training_data import utc_timestamp

if TYPE_CHECKING:
    from features.materialize import MaterializeResult
    from features.sdk import FeatureClient
    from tidemark.settings import Settings

__all__ = ["BuildReport", "ConsistencyError", "OnlineCheck", "build_interval", "check_online", "interval_dates",
           "materialize", "reload_online"]

log = logging.getLogger(__name__)

LATE_DAYS = 3  # days before the interval rebuilt with it, for payments that arrived late


class ConsistencyError(FeatureStoreError):
    """The online store is stale, or serves values the offline store would not give for now."""


class BuildReport(Protocol):
    """What a project's ``feature_jobs.build`` returns: a text for logs, a record for the DAG."""

    def table(self) -> str: ...

    def record(self) -> dict[str, Any]: ...


def _utc(moment: datetime) -> datetime:
    return utc_timestamp(moment).to_pydatetime()


def interval_dates(start: datetime, end: datetime) -> tuple[date, date]:
    """The UTC dates ``[first, last]`` that the interval ``[start, end)`` touches."""
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise ValueError(f"the interval must end after it starts, got {start.isoformat()} .. {end.isoformat()}")
    return start.date(), (end - timedelta(microseconds=1)).date()


def build_interval(settings: Settings, start: datetime, end: datetime, *,
                   late_days: int = LATE_DAYS) -> BuildReport | None:
    """Build the offline feature partitions of the interval's dates, and of the ``late_days``
    before them, with the project's ``feature_jobs.build`` (``fn(settings, first, last)``, UTC
    dates, inclusive), which checks the data first (:class:`features.errors.DataCheckError`, and
    nothing written, when a check fails). None when the project declares no build job.

    The days before are rebuilt because events arrive late (up to days after the event) into
    their event day's raw partition; a deterministic build changes only what late rows changed,
    and the point-in-time join still hides each late row until it arrived (its created time).
    """
    from pipelines.project import settings_project

    if late_days < 0:
        raise ValueError(f"late_days must be >= 0, got {late_days}")
    first, last = interval_dates(start, end)
    first -= timedelta(days=late_days)
    build = settings_project(settings).hook("build")
    if build is None:
        log.info("the project declares no feature_jobs.build: nothing built for %s .. %s", first, last)
        return None
    summary: BuildReport = build(settings, first, last)
    log.info("%s", summary.table())
    return summary


def materialize(settings: Settings, end: datetime, *, client: FeatureClient | None = None) -> list[MaterializeResult]:
    """Load what changed in the offline store into Redis, up to ``end`` (late rows included)."""
    from features.sdk import FeatureClient

    client = client or FeatureClient(settings)
    client.apply()
    return client.materialize_incremental(_utc(end), progress=False)


def reload_online(settings: Settings, end: datetime, *, client: FeatureClient | None = None) -> list[MaterializeResult]:
    """Empty the online store's Redis database and load it again from the offline tables, every
    view's newest row up to ``end`` within its TTL (a view without TTL from its first row): after
    history was rebuilt (a backfill). A rebuilt row keeps its event and arrival times, so
    newest-wins writes never let it replace the value that is loaded already. The canary state
    lives in the same database: refused while a canary runs."""
    from features.online_store import connect
    from features.sdk import FeatureClient
    from pipelines import canary

    running = canary.status(settings)
    if running.mode != "off":
        raise canary.CanaryError(f"a canary of v{running.challenger_version} is running; reloading the online "
                                     "store would drop its state: roll it back or let it finish first")
    client = client or FeatureClient(settings)
    client.apply()
    connect(client.store.config.online_store).writer.flushdb()
    log.warning("online store emptied for a reload up to %s", end)
    return client.materialize(datetime(1970, 1, 1, tzinfo=UTC), _utc(end), progress=False)


@dataclass
class OnlineCheck:
    """What :func:`check_online` compared: entities, values, and every mismatch (view, key, column)."""

    entities: int
    values: int
    mismatches: list[str] = field(default_factory=list)
    stale_views: list[str] = field(default_factory=list)
    read_at: datetime | None = None
    pending: int = 0  # entities left out: offline rows that arrived after the interval's end

    @property
    def passed(self) -> bool:
        return not self.mismatches and not self.stale_views

    def summary(self) -> dict[str, Any]:
        return {"entities": self.entities, "pending": self.pending, "values": self.values,
                "mismatches": len(self.mismatches),
                "stale_views": self.stale_views, "read_at": self.read_at.isoformat() if self.read_at else None,
                "examples": self.mismatches[:10]}


def check_online(settings: Settings, start: datetime, end: datetime, *, sample: int = 200, seed: int = 0,
                 client: FeatureClient | None = None, raise_on_failure: bool = True) -> OnlineCheck:
    """Freshness and online/offline consistency after :func:`materialize` of ``end``.

    Freshness: every view has been materialized up to ``end`` or later. Consistency: for up to
    ``sample`` entity rows that the project's ``feature_jobs.sample_entities`` draws from the
    interval (seeded), the online values of its models' features equal, exactly, the offline
    point-in-time values at the instant of the read (the same TTLs apply to both). A row the hook
    marks ``pending`` (a record of it arrived after ``end``) is left out and counted:
    materializing to ``end`` rightly did not load it, the next run will. Without the hook, only
    freshness is checked. Raises :class:`ConsistencyError` listing what differs.

    One instant: the online values are judged (TTLs, stream views' windows) at ``read_at``, the
    moment just before the Redis read, and the offline values are computed for ``read_at`` too.
    Reading online at the wall clock instead would let an event cross a window's edge between the
    two (a 1-hour window drops an event every few seconds on a busy store): a flaky check.
    """
    from features.sdk import FeatureClient
    from pipelines.project import settings_project

    client = client or FeatureClient(settings)
    stale = _stale_views(client, _utc(end))
    project = settings_project(settings)
    sample_entities = project.hook("sample_entities")
    read_at = datetime.now(UTC)
    entities = (sample_entities(settings, start, end, sample=sample, seed=seed, read_at=read_at)
                if sample_entities is not None else pd.DataFrame())
    late = (entities.pop("pending").astype(bool).to_numpy() if "pending" in entities.columns
            else np.zeros(len(entities), dtype=bool))
    check = OnlineCheck(len(entities), 0, stale_views=stale)
    if len(entities):
        refs = list(dict.fromkeys(r for m in project.models for r in client.resolve_features(m.features)[0]))
        online = client.online_features(entities, refs, at=read_at).frame
        offline = client.training_frame(entities.assign(event_timestamp=pd.Timestamp(read_at)), refs)
        assert isinstance(offline, pd.DataFrame)  # as_spark=False
        check.read_at = read_at
        check.pending = int(late.sum())
        features = [f.split(":", 1)[1] for f in refs]
        check.values = int((~late).sum()) * len(features)
        keep = ~late
        check.mismatches = _mismatches(entities[keep].reset_index(drop=True), online[keep].reset_index(drop=True),
                                       offline[keep].reset_index(drop=True), features)
    log.info("online check of %s .. %s: %s", start, end, check.summary())
    if raise_on_failure and not check.passed:
        raise ConsistencyError(
            f"online store check failed after materializing to {end.isoformat()}: "
            + (f"views not materialized up to the interval's end: {', '.join(stale)}; " if stale else "")
            + (f"{len(check.mismatches)} of {check.values} values differ from the offline store, e.g. "
               + "; ".join(check.mismatches[:5]) + "; " if check.mismatches else "")
            + "re-run the materialize task of this interval; if it persists, compare the view's definition "
              "in Redis with the registry (`tidemark features list`)")
    return check


def _stale_views(client: FeatureClient, end: datetime) -> list[str]:
    """Views whose newest materialization ends before ``end``. Stream feature views are never
    stale in this sense: they are not materialized up to a time, their windows are computed at
    each read from the events pushed and backfilled (their values are compared instead)."""
    from features.materialize import last_materialized_end
    from features.stream_views import is_stream_view

    stale = []
    for fv in client.feature_views():
        if is_stream_view(fv):
            continue
        newest = last_materialized_end(fv)
        if newest is None or _utc(newest) < end:
            stale.append(f"{fv.name} (materialized to {newest.isoformat() if newest else 'never'})")
    return stale


def _mismatches(entities: pd.DataFrame, online: pd.DataFrame, offline: pd.DataFrame,
                features: list[str]) -> list[str]:
    out = []
    for column in features:
        got, want = _plain(online[column]), _plain(offline[column])
        for i in np.flatnonzero([not _same(g, w) for g, w in zip(got, want, strict=True)]):
            keys = ", ".join(f"{k}={v}" for k, v in entities.iloc[int(i)].items())
            out.append(f"{column} of {keys}: online {got[i]!r}, offline {want[i]!r}")
    return out


def _same(got: Any, want: Any) -> bool:
    """Equal; floats to 1e-9 relative: a stream view's sum is added up in another order online
    (numpy) than offline (Spark), which may change its last bit. Copied values stay exact."""
    if isinstance(got, float) and isinstance(want, float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    return bool(got == want)


def _plain(series: pd.Series) -> list[Any]:
    """Values as Python objects, every kind of missing as None (so None == None)."""
    return [None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in series.astype(object)]

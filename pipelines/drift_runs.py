"""The drift job's MLflow runs: one per model, champion version and UTC day, one step per window.

    window [start, end)  ──►  its day: the UTC date of its last instant (an hourly window
                               23:00..00:00 belongs to the day it starts on)
                          ──►  the day's run, found by its tags
                               (tidemark.model, tidemark.champion_version, tidemark.drift_day)
                               with search_runs, resumed; else created, named
                               "drift <model> v<version> <YYYY-MM-DD>"
                          ──►  metrics at step = minutes from the day's 00:00 UTC to the window's
                               end (60 … 1440 for hourly windows), timestamp = the window's end;
                               files under windows/<HHMM-HHMM>/
                          ──►  tags: the newest window's verdict, the day's judged and drifted
                               windows; the run ended (FINISHED) until the next window resumes it

A year of hourly windows is 365 runs per champion version, not 8,760, and the UI charts each
column's drift over the day.

Re-judging a window (an Airflow retry or clear, ``tidemark drift`` on a past hour) overwrites its
files and its entries in the day's window tags; its metrics are logged again at the same step and
timestamp. MLflow drops a point equal to one it has, so a re-run on the same data adds nothing; a
re-run on changed data (late log rows) adds a second point at that step, and the files and tags
hold the newer judgement. Two writers opening the same day at once (the DAG and the CLI) may each
create a run; everyone then resumes the oldest, so only that moment's window lands in a second run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = ["DAY_TAG", "DriftWindow", "day_run", "day_run_name", "window_tags"]

MODEL_TAG = "tidemark.model"
VERSION_TAG = "tidemark.champion_version"
DAY_TAG = "tidemark.drift_day"
JUDGED_TAG = "drift.day.windows"            # the day's judged windows, "0000-0100,0100-0200,…"
DRIFTED_TAG = "drift.day.drifted"           # those whose decision was "drift"
DRIFTED_COUNT_TAG = "drift.day.drifted_windows"
_NEWEST_END = "interval_end"


@dataclass(frozen=True)
class DriftWindow:
    """One judged interval ``[start, end)``, both UTC, and where it sits in its day's run."""

    start: pd.Timestamp
    end: pd.Timestamp

    @property
    def day(self) -> date:
        """The UTC date of the window's last instant."""
        return (self.end - pd.Timedelta(microseconds=1)).date()

    @property
    def step(self) -> int:
        """Minutes from the day's 00:00 UTC to the window's end: 1..1440."""
        midnight = pd.Timestamp(self.day, tz="UTC")
        return int((self.end - midnight) // pd.Timedelta(minutes=1))

    @property
    def timestamp_ms(self) -> int:
        """The window's end, in milliseconds since the epoch (the metrics' timestamp)."""
        return int(self.end.value // 1_000_000)

    @property
    def label(self) -> str:
        """``HHMM-HHMM`` (a day's end is ``2400``; a start on an earlier day carries its date)."""
        first = f"{self.start:%H%M}" if self.start.date() == self.day else f"{self.start:%Y%m%dT%H%M}"
        minutes = self.step
        return f"{first}-{minutes // 60:02d}{minutes % 60:02d}"

    @property
    def artifact_path(self) -> str:
        """Where the window's files go in the day's run."""
        return f"windows/{self.label}"


def day_run_name(model: str, version: str, day: date) -> str:
    """The run's name in the UI: ``drift fraud-detector v3 2026-12-07``."""
    return f"drift {model} v{version} {day.isoformat()}"


def day_run(client: MlflowClient, experiment_id: str, model: str, version: str, window: DriftWindow) -> str:
    """The id of the run for ``model``'s champion ``version`` on ``window``'s day: found by its
    tags (the oldest, if a race made two), else created. The run is left as it was (not started)."""
    tags = {MODEL_TAG: model, VERSION_TAG: version, DAY_TAG: window.day.isoformat()}
    query = " and ".join(f"tags.`{k}` = {_quoted(v)}" for k, v in tags.items())
    found = client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time ASC"],
                               max_results=1)
    if found:
        return str(found[0].info.run_id)
    created = client.create_run(experiment_id, run_name=day_run_name(model, version, window.day), tags=tags)
    client.set_terminated(created.info.run_id, "FINISHED")  # open only while a window is being logged
    return str(created.info.run_id)


def window_tags(run: Run, window: DriftWindow, decision: str, newest: dict[str, str]) -> dict[str, str]:
    """The tags to set on the day's ``run`` after judging ``window``: the day's judged and drifted
    windows (a re-judged window replaces its old verdict), and ``newest`` (the verdict's own tags)
    when no later window of the day has been judged yet."""
    judged = _labels(run.data.tags.get(JUDGED_TAG)) | {window.label}
    drifted = _labels(run.data.tags.get(DRIFTED_TAG)) - {window.label}
    if decision == "drift":
        drifted.add(window.label)
    tags = {JUDGED_TAG: ",".join(sorted(judged)), DRIFTED_TAG: ",".join(sorted(drifted)),
            DRIFTED_COUNT_TAG: str(len(drifted))}
    before = run.data.tags.get(_NEWEST_END)
    if before is None or pd.Timestamp(before) <= window.end:
        tags.update(newest)
    return tags


def _labels(text: str | None) -> set[str]:
    return {part for part in (text or "").split(",") if part}


def _quoted(value: str) -> str:
    """A search_runs string literal: MLflow's filter grammar has no escapes, so a value holding a
    single quote is written in double quotes."""
    return f'"{value}"' if "'" in value else f"'{value}'"


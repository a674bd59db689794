"""An Evidently HTML data drift report, for people who read Evidently's dashboards.

The reference data is not stored, only its :class:`~monitoring.profile.ReferenceProfile`, so the
report compares two *samples*:

* reference: drawn from the profile, column by column. A numeric column samples the stored KS
  support with the weights of its cumulative counts (the empirical distribution of the stored
  reference, itself a uniform sample above ``ks_cap`` values); a categorical column samples its
  categories with the weights of their counts. Each column gets its reference share of nulls.
  Columns are drawn independently: the sample keeps every marginal distribution, not the joint
  one, which is all a per-column drift test looks at.
* current: a uniform random sample of the current rows.

The statistics in Evidently's dashboard are its own (its default tests, or ``method``) on these
samples; the exact tidemark statistics are in :class:`~monitoring.drift.DriftReport`. Given that
report (and the job's :class:`Verdict`), the page opens with tidemark's per-column verdicts, its
rule and its decision, marked as the decision, and Evidently's dataset-level share threshold is
set to tidemark's: a reader of the page sees the same count, share and threshold as the decision,
the MLflow tags and the chart (``<table id="tidemark-verdicts" data-drifted=… data-columns=…
data-share-threshold=…>``).
Evidently is imported inside :func:`evidently_html`: importing it takes seconds.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.category_text import category_text
from monitoring.drift import DriftReport
from monitoring.errors import DriftInputError
from monitoring.profile import CategoricalProfile, NumericProfile, ReferenceProfile, numeric_values
from monitoring.verdict_html import Verdict, verdict_section
from tidemark.extras import require

__all__ = ["Verdict", "current_sample", "evidently_html", "reference_sample"]


@dataclass
class _Samples:
    reference: pd.DataFrame
    current: pd.DataFrame
    numerical: list[str]
    categorical: list[str]
    current_rows: int
    missing: list[str] = field(default_factory=list)   # profiled, absent from the current data
    all_null: list[str] = field(default_factory=list)  # no value on one side: nothing to test


def evidently_html(profile: ReferenceProfile, current: pd.DataFrame, path: str | Path, *,
                   sample_rows: int = 50_000, seed: int = 0, method: str | None = None,
                   report: DriftReport | None = None, verdict: Verdict | None = None) -> Path:
    """Write Evidently's data drift report (``DataDriftPreset``) of ``current`` against ``profile``.

    At most ``sample_rows`` rows are drawn on each side (seeded by ``seed``); ``method`` is an
    Evidently stat test name for every column (``"psi"``, ``"ks"``, ``"wasserstein"``, …), or
    None for Evidently's defaults. Profiled columns absent from ``current``, and columns that are
    all null on one side, are left out of Evidently's part and named in a note at its top.
    ``report``: tidemark's exact comparison, shown above Evidently's dashboard as the verdict;
    ``verdict``: the decision it led to and its share threshold (Evidently's ``drift_share`` too).
    Returns the path of the HTML file.
    """
    require("evidently", "monitoring", "writing the drift report's HTML page")
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    if sample_rows < 1:
        raise DriftInputError(f"sample_rows={sample_rows}; draw at least one row per side")
    samples = _samples(profile, current, sample_rows, seed)
    definition = DataDefinition(numerical_columns=samples.numerical, categorical_columns=samples.categorical)
    share = verdict.drift_share if verdict is not None else 0.5  # 0.5: Evidently's default
    snapshot = Report([DataDriftPreset(method=method, drift_share=share)]).run(
        current_data=Dataset.from_pandas(samples.current, data_definition=definition),
        reference_data=Dataset.from_pandas(samples.reference, data_definition=definition),
    )
    top = (verdict_section(report, verdict) if report is not None else "") + _note(profile, samples, seed)
    page = _with_note(snapshot.get_html_str(as_iframe=False), top)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


def reference_sample(profile: ReferenceProfile, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """``rows`` rows drawn from the profile's per-column distributions (numeric float64 with NaN,
    categorical text with None), nulls in their reference share."""
    data: dict[str, object] = {}
    for name, col in profile.columns.items():
        if isinstance(col, NumericProfile):
            values = np.full(rows, np.nan)
            if col.ks_n:
                values = col.support[_draw(col.cum_counts, rows, rng)]
            data[name] = _with_nulls(values, col.nulls / col.rows if col.rows else 0.0, rng)
        else:
            cats = np.array(col.categories + (None,), dtype=object)
            total = int(col.counts.sum())
            picks = _draw(np.cumsum(col.counts), rows, rng) if total else np.full(rows, len(col.categories))
            labels = cats[picks]
            data[name] = _with_nulls(labels, col.nulls / col.rows if col.rows else 0.0, rng)
    return pd.DataFrame(data)


def current_sample(profile: ReferenceProfile, current: pd.DataFrame, rows: int, rng: np.random.Generator
                   ) -> pd.DataFrame:
    """A uniform sample of at most ``rows`` rows of the profiled columns present in ``current``,
    typed as the profile reads them (numeric float64 with NaN, categorical text with None)."""
    if len(current) > rows:
        current = current.iloc[np.sort(rng.choice(len(current), size=rows, replace=False))]
    data: dict[str, object] = {}
    for name, col in profile.columns.items():
        if name not in current.columns:
            continue
        series = current[name]
        if isinstance(col, CategoricalProfile):
            text = category_text(series)
            data[name] = text.astype(object).where(text.notna(), None).to_numpy()
        else:
            data[name] = numeric_values(name, series)
    return pd.DataFrame(data)


def _samples(profile: ReferenceProfile, current: pd.DataFrame, sample_rows: int, seed: int) -> _Samples:
    if not isinstance(current, pd.DataFrame):
        raise DriftInputError(f"evidently_html takes a pandas DataFrame, not {type(current).__name__}; "
                              "read a sample of the data first (e.g. pandas.read_parquet)")
    if current.empty:
        raise DriftInputError("the current data has no rows; nothing to compare (check the time window)")
    ref_rng, cur_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    reference = reference_sample(profile, min(sample_rows, max(profile.rows, 1)), ref_rng)
    cur = current_sample(profile, current, sample_rows, cur_rng)
    missing = [c for c in profile.columns if c not in cur.columns]
    all_null = [c for c in cur.columns if reference[c].isna().all() or cur[c].isna().all()]
    keep = [c for c in cur.columns if c not in all_null]
    if not keep:
        raise DriftInputError(f"no profiled column has values on both sides (profiled: {list(profile.columns)}; "
                              f"current columns: {list(current.columns)[:20]}); nothing to report")
    numerical = [c for c in keep if isinstance(profile.columns[c], NumericProfile)]
    categorical = [c for c in keep if c not in numerical]
    return _Samples(reference[keep], cur[keep], numerical, categorical, len(current), missing, all_null)


def _draw(cum_counts: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Indices drawn with weights ``diff(cum_counts)``: exact integer arithmetic, no float ``p``."""
    return np.searchsorted(cum_counts, rng.integers(0, int(cum_counts[-1]), size=rows), side="right")


def _with_nulls(values: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    nulls = round(len(values) * share)
    if nulls:
        values = values.copy()
        values[rng.choice(len(values), size=nulls, replace=False)] = None if values.dtype == object else np.nan
    return values


def _note(profile: ReferenceProfile, samples: _Samples, seed: int) -> str:
    sampled_ks = [n for n, c in profile.columns.items() if isinstance(c, NumericProfile) and c.sampled]
    lines = [(
        f"tidemark: reference = {len(samples.reference):,} rows drawn from the stored profile of "
        f"{profile.rows:,} rows (created {profile.created_at}), column by column; current = "
        f"{len(samples.current):,} of {samples.current_rows:,} rows, uniform sample (seed {seed}). "
        "Evidently's dashboard below shows its own tests on these samples; the exact statistics are "
        "tidemark's (above, and report.json), and the decision is tidemark's."
    )]
    if sampled_ks:
        lines.append(f"Numeric reference drawn from a {profile.ks_cap:,}-value sample of the column: "
                     + ", ".join(sampled_ks) + ".")
    if samples.missing:
        lines.append("Not in the current data (left out): " + ", ".join(samples.missing) + ".")
    if samples.all_null:
        lines.append("All null on one side (left out): " + ", ".join(samples.all_null) + ".")
    return "".join(f"<p style=\"margin:4px 0\">{html.escape(line)}</p>" for line in lines)


def _with_note(page: str, note: str) -> str:
    """Put the note at the top of the page, above Evidently's dashboard."""
    block = ("<div style=\"font-family:sans-serif;font-size:14px;padding:8px 16px;background:#fff8e1;"
             f"border-bottom:1px solid #e0c068\">{note}</div>")
    head, body, rest = page.partition("<body>")
    return f"{head}{body}\n{block}{rest}" if body else block + page

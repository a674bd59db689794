"""tidemark's verdict as an HTML section: the top of the Evidently drift report page.

Evidently's dashboard tests samples with its own methods and thresholds, so its count of drifted
columns can differ from tidemark's exact one. This section states tidemark's per-column verdicts,
the column rule, the share rule and the decision, first on the page, so that the page, the
decision, the chart and the MLflow tags give one answer. Its table carries the figures as data
attributes for scripts and tests::

    <table id="tidemark-verdicts" data-drifted="15" data-columns="23" data-share="0.652174"
           data-share-threshold="0.3" data-decision="drift">
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from monitoring.drift import ColumnDrift, DriftReport

__all__ = ["Verdict", "verdict_section"]


@dataclass(frozen=True)
class Verdict:
    """What the job decided about the report's interval."""

    decision: str                 # e.g. drift | no_drift | insufficient_data
    drift_share: float            # the share of drifted columns at which the interval drifts
    judged: bool = True           # False: too few rows, the columns were not judged
    reasons: tuple[str, ...] = field(default_factory=tuple)


def verdict_section(report: DriftReport, verdict: Verdict | None) -> str:
    """The section's HTML: a headline, the rules, the reasons and one row per column."""
    t = report.thresholds
    drifted, total = len(report.drifted_columns), len(report.columns)
    threshold = verdict.drift_share if verdict is not None else None
    head = (f"tidemark's decision: {verdict.decision}. " if verdict is not None else "tidemark's comparison. ")
    head += f"{drifted} of {total} columns drifted (share {report.drift_share:.2f}"
    head += f"; the interval drifts at a share of at least {threshold:g})." if threshold is not None else ")."
    if verdict is not None and not verdict.judged:
        head += " The columns were not judged (too few rows): the verdicts below are for information."
    rule = (f"A column drifts when its PSI >= {t.psi:g}, or when its Benjamini–Hochberg adjusted p-value "
            f"< {t.alpha:g} and its effect is large enough (KS D >= {t.ks_d:g}, total variation >= "
            f"{t.tvd:g}), or when it is missing. Exact statistics on all {report.rows_current:,} current "
            f"rows against the reference profile ({report.rows_reference:,} rows). This is the decision; "
            "Evidently's dashboard below is a second look on samples and may count differently.")
    parts = [f"<p style=\"margin:4px 0;font-weight:bold\">{html.escape(head)}</p>",
             f"<p style=\"margin:4px 0\">{html.escape(rule)}</p>"]
    parts += [f"<p style=\"margin:4px 0\">{html.escape(r)}</p>" for r in (verdict.reasons if verdict else ())]
    attrs = {"drifted": drifted, "columns": total, "share": f"{report.drift_share:.6f}",
             "share-threshold": "" if threshold is None else f"{threshold:g}",
             "decision": verdict.decision if verdict else ""}
    parts.append(_table(report.columns, " ".join(f'data-{k}="{html.escape(str(v))}"' for k, v in attrs.items())))
    return "".join(parts)


def _table(columns: list[ColumnDrift], attrs: str) -> str:
    head = "".join(f"<th style=\"text-align:left;padding:2px 8px\">{h}</th>"
                   for h in ("column", "kind", "PSI", "test", "statistic", "adjusted p", "drifted", "rule"))
    rows = "".join(_row(c) for c in sorted(columns, key=lambda c: (not c.drifted, -(c.psi or 0.0))))
    return (f"<table id=\"tidemark-verdicts\" {attrs} style=\"border-collapse:collapse;margin:6px 0\">"
            f"<tr>{head}</tr>{rows}</table>")


def _row(c: ColumnDrift) -> str:
    cells = (c.column, c.kind, _num(c.psi), c.test or c.status, _num(c.statistic), _num(c.p_value_adjusted, "{:.2g}"),
             "yes" if c.drifted else "no", c.rule or "")
    style = " style=\"color:#b00020\"" if c.drifted else ""
    return f"<tr{style}>" + "".join(f"<td style=\"padding:2px 8px\">{html.escape(v)}</td>" for v in cells) + "</tr>"


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "" if value is None else fmt.format(value)

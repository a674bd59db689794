"""A PNG bar chart of a drift report: one bar of PSI per column, drifted columns in red.

PSI spans orders of magnitude (0.001 is noise, 0.2 is drift, 5 is a different distribution), so
the axis is logarithmic, clipped below at ``PSI_FLOOR``. Each bar is labelled with its PSI and
the column's effect size (KS D for numeric, total variation for categorical). Columns without a
PSI (missing from the current data, or all null) get a label instead of a bar.

matplotlib is imported inside :func:`drift_chart`, and the figure is drawn on its own Agg canvas,
so the caller's pyplot state and backend are left alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes

    from monitoring.drift import ColumnDrift, DriftReport

__all__ = ["PSI_FLOOR", "drift_chart"]

PSI_FLOOR = 1e-4
_DRIFTED, _STABLE, _NO_BAR = "#d62728", "#7f9fbf", "#999999"


def drift_chart(report: DriftReport, path: str | Path) -> Path:
    """Draw ``report`` as a horizontal bar chart of PSI per column and save it as PNG at ``path``.

    Drifted columns come first, then by PSI, largest on top; the figure grows with the number of
    columns (about 0.28 inch per column). Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = sorted(report.columns, key=lambda c: (not c.drifted, -(c.psi if c.psi is not None else 1e9)))
    fig = Figure(figsize=(10, 2.0 + 0.28 * max(len(columns), 3)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    handles = _bars(ax, columns, report.thresholds.psi)
    ax.set_title(f"Drift against the reference profile: {len(report.drifted_columns)} of {len(columns)} columns "
                 f"drifted ({report.drift_share:.0%})\n{report.rows_current:,} current rows, "
                 f"{report.rows_reference:,} reference rows (profile of {report.profile_created_at})",
                 fontsize=10, loc="left")
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, format="png")
    return target


def _bars(ax: Axes, columns: list[ColumnDrift], threshold: float) -> list[Artist]:
    """Draw the bars and labels; return the legend handles."""
    from matplotlib.patches import Patch

    y = list(range(len(columns)))
    heights = [max(c.psi, PSI_FLOOR) if c.psi is not None else PSI_FLOOR for c in columns]
    colors = [_NO_BAR if c.psi is None else _DRIFTED if c.drifted else _STABLE for c in columns]
    base = PSI_FLOOR / 10  # bars start left of the floor, so a PSI at the floor still shows
    ax.barh(y, [h - base for h in heights], left=base, color=colors, height=0.7)
    ax.set_xscale("log")
    top = max(max(heights), threshold) * 30  # room for the labels right of the longest bar
    ax.set_xlim(base, top)
    ax.set_ylim(len(columns) - 0.5, -0.5)  # first column on top
    ax.set_yticks(y, [_short(c.column) for c in columns], fontsize=8)
    for tick, c in zip(ax.get_yticklabels(), columns, strict=True):
        tick.set_color(_DRIFTED if c.drifted else "black")
    for yi, height, c in zip(y, heights, columns, strict=True):
        ax.text(height * 1.15, yi, _label(c), va="center", fontsize=7, color="#333333",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5})
    line = ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"PSI threshold {threshold:g}")
    ax.set_xlabel(f"PSI (log scale; values below {PSI_FLOOR:g} drawn at {PSI_FLOOR:g})", fontsize=9)
    ax.grid(axis="x", which="major", alpha=0.3)
    return [Patch(color=_DRIFTED, label="drifted"), Patch(color=_STABLE, label="not drifted"),
            Patch(color=_NO_BAR, label="no PSI (missing / empty)"), line]


def _label(c: ColumnDrift) -> str:
    if c.psi is None:
        return c.rule or c.status
    parts = [f"PSI {c.psi:.3g}"]
    if c.effect is not None:
        parts.append(f"{'KS D' if c.test == 'ks' else 'TVD'} {c.effect:.3f}")
    if c.p_value_adjusted is not None:
        parts.append(f"p_adj {c.p_value_adjusted:.2g}")
    return " · ".join(parts)


def _short(name: str, limit: int = 32) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"

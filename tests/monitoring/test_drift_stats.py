"""Drift statistics against a direct reading of their definitions (and scipy), and bad input.

The ``direct_*`` functions below are deliberately naive: they recompute each statistic from
the raw reference and current values exactly as the issue defines it (quantile edges, bin
``searchsorted(edges, x, side="right")``, proportions floored at 1e-4, ...), with no profile and
no counts. ``compare(ReferenceProfile.fit(ref), cur)`` must agree with them to 1e-9.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from monitoring.drift import DriftReport, DriftThresholds, ReferenceProfile, compare
from monitoring.errors import DriftInputError
from monitoring.profile import NumericProfile
from monitoring.stats import benjamini_hochberg

TOL = 1e-9
EPS = 1e-4
BINS = 10

# A value equal to an edge belongs to the bin above it (bin = searchsorted(edges, x, side="right")):
# integer-valued data put many values on quantile edges, so tests cover that case on its own.


# --- direct readings of the definitions ---------------------------------------------------------


def direct_edges(ref: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Unique values of numpy.quantile(ref, k/B), k = 1..B-1 (linear), NaNs dropped."""
    present = ref[~np.isnan(ref)]
    if not len(present):
        return np.zeros(0)
    with np.errstate(invalid="ignore"):
        edges = np.quantile(present, [k / bins for k in range(1, bins)])
    return np.unique(edges[~np.isnan(edges)])


def direct_psi_from_bins(ref_bins: np.ndarray, cur_bins: np.ndarray, n_bins: int) -> float:
    """Proportions per bin (each floored at eps, no renormalisation), then the PSI sum."""
    total = 0.0
    p_ref_all = np.bincount(ref_bins, minlength=n_bins) / len(ref_bins)
    p_cur_all = np.bincount(cur_bins, minlength=n_bins) / len(cur_bins)
    for p_ref, p_cur in zip(p_ref_all, p_cur_all, strict=True):
        p_ref, p_cur = max(p_ref, EPS), max(p_cur, EPS)
        total += (p_cur - p_ref) * math.log(p_cur / p_ref)
    return total


def direct_numeric_psi(ref: np.ndarray, cur: np.ndarray, bins: int = BINS) -> float:
    """PSI over the quantile bins of the values and one more bin for the nulls (the last)."""
    edges = direct_edges(ref, bins)
    null_bin = len(edges) + 1
    ref_bins = np.where(np.isnan(ref), null_bin, np.searchsorted(edges, np.where(np.isnan(ref), 0.0, ref), side="right"))
    cur_bins = np.where(np.isnan(cur), null_bin, np.searchsorted(edges, np.where(np.isnan(cur), 0.0, cur), side="right"))
    return direct_psi_from_bins(ref_bins, cur_bins, null_bin + 1)


def direct_ks(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """(D, asymptotic p) from scipy on the non-null values."""
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    d = float(sps.ks_2samp(ref, cur).statistic)
    return d, float(sps.ks_2samp(ref, cur, method="asymp").pvalue)


def stored_ks_sample(col: NumericProfile) -> np.ndarray:
    """The KS reference the profile keeps, rebuilt from ``support`` and ``cum_counts``."""
    return np.repeat(col.support, np.diff(np.concatenate([[0], col.cum_counts])))


def text_of(value: Any) -> str | None:
    """A category as text, None for a null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def direct_category_counts(ref: list[Any], cur: list[Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Reference categories (as text), and counts per category plus one "unseen" bin."""
    ref_text = [t for t in map(text_of, ref) if t is not None]
    cur_text = [t for t in map(text_of, cur) if t is not None]
    categories = sorted(set(ref_text))
    ref_counts = np.array([ref_text.count(c) for c in categories] + [0])
    seen = set(categories)
    cur_counts = np.array([cur_text.count(c) for c in categories] + [sum(t not in seen for t in cur_text)])
    return categories, ref_counts, cur_counts


def direct_categorical_psi(ref: list[Any], cur: list[Any]) -> float:
    """PSI over the categories, the "unseen" bin, and one more bin for the nulls."""
    _, ref_counts, cur_counts = direct_category_counts(ref, cur)
    ref_counts = np.append(ref_counts, sum(text_of(v) is None for v in ref))
    cur_counts = np.append(cur_counts, sum(text_of(v) is None for v in cur))
    ref_bins = np.repeat(np.arange(len(ref_counts)), ref_counts)
    cur_bins = np.repeat(np.arange(len(cur_counts)), cur_counts)
    return direct_psi_from_bins(ref_bins, cur_bins, len(ref_counts))


def direct_chi2(ref: list[Any], cur: list[Any]) -> tuple[float, float]:
    _, ref_counts, cur_counts = direct_category_counts(ref, cur)
    table = np.vstack([ref_counts, cur_counts])
    result = sps.chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False)
    return float(result.statistic), float(result.pvalue)


def close(a: float | None, b: float) -> bool:
    """Equal to 1e-9; NaN matches NaN (scipy's asymptotic p-value is NaN when both samples have 1 value)."""
    if a is not None and math.isnan(a) and math.isnan(b):
        return True
    return a is not None and math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


def report_of(ref: pd.DataFrame, cur: Any, **fit: Any) -> DriftReport:
    return compare(ReferenceProfile.fit(ref, **fit), cur)


# --- strategies ---------------------------------------------------------------------------------

SPECIAL = [0.0, -0.0, 1.0, -1.0, 2.5, -7.25, 1e-300, np.inf, -np.inf, np.nan]
GENERATED_KINDS = ["normal", "rounded", "small_ints", "lognormal_neg", "constant", "mixed_special"]


def generated_column(seed: int, n: int, kind: str, shift: float) -> np.ndarray:
    """Seeded numpy data: continuous, heavily tied, negative, constant, or with NaN and ±inf."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(shift, 1.0, n)
    if kind == "rounded":  # many ties, and quantile edges that fall on data values
        return np.round(rng.normal(shift, 2.0, n), 1)
    if kind == "small_ints":  # heavy duplicates
        return rng.integers(-3, 3, n).astype(np.float64) + np.round(shift)
    if kind == "lognormal_neg":
        return -rng.lognormal(shift, 1.0, n)
    if kind == "constant":
        return np.full(n, 3.0 + np.round(shift))
    values = rng.normal(shift, 1.0, n)
    values[rng.random(n) < 0.1] = np.nan
    values[rng.random(n) < 0.05] = np.inf
    values[rng.random(n) < 0.05] = -np.inf
    return values


@st.composite
def numeric_columns(draw: st.DrawFn) -> np.ndarray:
    """Short literal columns (1-3 or up to 30 values, with specials) or seeded generated ones (up to 3,000)."""
    if draw(st.booleans()):
        value = st.one_of(st.sampled_from(SPECIAL), st.integers(-3, 3).map(float),
                          st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
        return np.array(draw(st.lists(value, min_size=1, max_size=draw(st.sampled_from([3, 30])))),
                        dtype=np.float64)
    return generated_column(draw(st.integers(0, 2**32 - 1)), draw(st.integers(1, 3000)),
                            draw(st.sampled_from(GENERATED_KINDS)), draw(st.sampled_from([0.0, 0.3, 2.0])))


def compared_numeric(ref: np.ndarray, cur: np.ndarray, **fit: Any) -> tuple[Any, NumericProfile]:
    profile = ReferenceProfile.fit(pd.DataFrame({"x": ref}), **fit)
    report = compare(profile, pd.DataFrame({"x": cur}))
    col = profile.columns["x"]
    assert isinstance(col, NumericProfile)
    return report.column("x"), col


def both_present(ref: np.ndarray, cur: np.ndarray) -> bool:
    return bool((~np.isnan(ref)).any() and (~np.isnan(cur)).any())


# --- numeric PSI --------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(ref=numeric_columns(), cur=numeric_columns())
@example(ref=np.arange(11.0), cur=np.arange(11.0) + 0.5)
def test_numeric_psi_matches_definition(ref: np.ndarray, cur: np.ndarray) -> None:
    assume(both_present(ref, cur))
    result, _ = compared_numeric(ref, cur)
    assert close(result.psi, direct_numeric_psi(ref, cur)), (result.psi, direct_numeric_psi(ref, cur))


def test_numeric_psi_value_on_an_edge_goes_to_the_bin_above() -> None:
    # ref 0..10: edges 1, 2, ..., 9, each a data value. By the definition bin 0 is (-inf, 1) and
    # holds {0}, so p_ref = 1/11 where every current value (0.5) lands; counted as values <= 1,
    # bin 0 would hold {0, 1} (p_ref = 2/11) and give a different PSI.
    ref, cur = np.arange(11.0), np.full(20, 0.5)
    result, col = compared_numeric(ref, cur)
    np.testing.assert_array_equal(col.edges, direct_edges(ref))
    np.testing.assert_array_equal(col.bin_counts, [1, 1, 1, 1, 1, 1, 1, 1, 1, 2])
    assert close(result.psi, direct_numeric_psi(ref, cur))


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), tens=st.integers(0, 200), last=st.sampled_from([2, 4, 8, 10]),
       n_cur=st.integers(1, 2000), shift=st.floats(-2, 2), scale=st.floats(0.1, 10))
def test_numeric_psi_matches_definition_when_no_value_sits_on_an_edge(seed: int, tens: int, last: int, n_cur: int,
                                                                     shift: float, scale: float) -> None:
    # Away from values on edges (tested separately) the rest of PSI -- edges, eps floor, formula --
    # must hold exactly. With n - 1 coprime to 10, no quantile position (n - 1) k / 10 is a whole
    # number, so on distinct continuous data every edge lies strictly between two values.
    rng = np.random.default_rng(seed)
    ref, cur = rng.normal(0, 1, 10 * tens + last), rng.normal(shift, scale, n_cur)
    edges = direct_edges(ref)
    assume(not np.isin(ref, edges).any() and not np.isin(cur, edges).any())
    result, col = compared_numeric(ref, cur)
    np.testing.assert_array_equal(col.edges, edges)
    assert close(result.psi, direct_numeric_psi(ref, cur))


@given(ref=numeric_columns())
@settings(max_examples=80, deadline=None)
def test_numeric_edges_are_the_unique_quantiles(ref: np.ndarray) -> None:
    profile = ReferenceProfile.fit(pd.DataFrame({"x": ref}))
    col = profile.columns["x"]
    assert isinstance(col, NumericProfile)
    np.testing.assert_array_equal(col.edges, direct_edges(ref))
    assert int(col.bin_counts.sum()) == int((~np.isnan(ref)).sum())


def test_constant_column_has_one_edge_and_no_psi_on_the_same_constant() -> None:
    ref = np.full(50, 4.0)
    result, col = compared_numeric(ref, np.full(30, 4.0))
    np.testing.assert_array_equal(col.edges, [4.0])
    assert result.psi == 0.0
    assert result.statistic == 0.0
    assert not result.drifted


def test_constant_column_psi_is_positive_when_current_values_fall_below() -> None:
    result, _ = compared_numeric(np.full(50, 4.0), np.full(30, 3.0))
    assert close(result.psi, direct_numeric_psi(np.full(50, 4.0), np.full(30, 3.0)))
    assert result.psi is not None and result.psi > 1


def test_constant_column_that_changes_is_caught_by_ks() -> None:
    # Whatever the bin rule, a constant column that moves has D = 1 and drifts.
    for cur in (np.full(30, 3.0), np.full(30, 5.0)):
        result, _ = compared_numeric(np.full(50, 4.0), cur)
        assert result.statistic == 1.0
        assert result.drifted


# --- numeric KS ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(ref=numeric_columns(), cur=numeric_columns())
@example(ref=np.array([np.inf, 1.0, -np.inf]), cur=np.array([0.0, 1.0]))
@example(ref=np.array([2.0]), cur=np.array([2.0, 2.0, np.nan]))
def test_ks_matches_scipy(ref: np.ndarray, cur: np.ndarray) -> None:
    result, col = compared_numeric(ref, cur)
    if not both_present(ref, cur):
        assert result.status == "empty" and result.statistic is None
        return
    d, p = direct_ks(ref, cur)
    assert result.ks_reference == "exact" and not col.sampled
    assert close(result.statistic, d), (result.statistic, d)
    assert close(result.effect, d)
    assert close(result.p_value, p), (result.p_value, p)


@settings(max_examples=120, deadline=None)
@given(ref=numeric_columns(), cur=numeric_columns(), ks_cap=st.integers(1, 40), seed=st.integers(0, 99))
def test_ks_above_cap_matches_scipy_on_the_stored_sample(ref: np.ndarray, cur: np.ndarray, ks_cap: int,
                                                         seed: int) -> None:
    present = np.sort(ref[~np.isnan(ref)])
    assume(len(present) > ks_cap and (~np.isnan(cur)).any())
    result, col = compared_numeric(ref, cur, ks_cap=ks_cap, seed=seed)
    sample = stored_ks_sample(col)
    assert col.sampled and result.ks_reference == "sample"
    assert len(sample) == ks_cap == col.ks_n
    # a sample of the reference values, without replacement
    values, counts = np.unique(present, return_counts=True)
    s_values, s_counts = np.unique(sample, return_counts=True)
    assert np.isin(s_values, values).all()
    assert (s_counts <= counts[np.searchsorted(values, s_values)]).all()
    d, p = direct_ks(sample, cur)
    assert close(result.statistic, d) and close(result.p_value, p)
    # PSI still uses every reference value, not the sample
    assert int(col.bin_counts.sum()) == len(present)


def test_ks_cap_is_exact_at_the_cap() -> None:
    ref = np.arange(40.0)
    result, col = compared_numeric(ref, ref + 0.5, ks_cap=40)
    assert not col.sampled and result.ks_reference == "exact"
    np.testing.assert_array_equal(stored_ks_sample(col), ref)


# --- other numeric figures ----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(ref=numeric_columns(), cur=numeric_columns())
def test_null_and_out_of_range_shares(ref: np.ndarray, cur: np.ndarray) -> None:
    result, _ = compared_numeric(ref, cur)
    assert result.null_share_reference == pytest.approx(np.isnan(ref).mean(), abs=TOL)
    assert result.null_share_current == pytest.approx(np.isnan(cur).mean(), abs=TOL)
    assert result.rows_current == len(cur)
    if both_present(ref, cur):
        r, c = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
        assert result.out_of_range_share == pytest.approx(((c < r.min()) | (c > r.max())).mean(), abs=TOL)


def test_infinite_values() -> None:
    ref = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0] * 10)
    cur = np.array([np.inf, -np.inf, 0.0, 1.0, np.nan, 2.0] * 10)
    result, _ = compared_numeric(ref, cur)
    assert result.status == "compared"
    assert result.out_of_range_share == pytest.approx(2 / 5)
    assert result.null_share_current == pytest.approx(1 / 6)
    assert close(result.statistic, direct_ks(ref, cur)[0])
    assert result.psi is not None and math.isfinite(result.psi)
    # an infinite reference value widens the range
    result, _ = compared_numeric(np.append(ref, np.inf), cur)
    assert result.out_of_range_share == pytest.approx(1 / 5)
    json.dumps(report_of(pd.DataFrame({"x": ref}), pd.DataFrame({"x": cur})).to_dict(), allow_nan=False)


# --- categorical PSI and chi² -------------------------------------------------------------------

CATEGORY_VALUES = st.one_of(st.sampled_from(["a", "b", "c", "dd", "1", "é"]), st.integers(0, 4), st.none())


@settings(max_examples=150, deadline=None)
@given(ref=st.lists(CATEGORY_VALUES, min_size=1, max_size=60),
       cur=st.lists(st.one_of(CATEGORY_VALUES, st.sampled_from(["new", "zz"])), min_size=1, max_size=60))
@example(ref=["a"], cur=["a", "a"])
@example(ref=["a", 1, "1"], cur=["new", 1])
def test_categorical_psi_and_chi2_match_definition(ref: list[Any], cur: list[Any]) -> None:
    report = report_of(pd.DataFrame({"c": pd.Series(ref, dtype=object)}),
                       pd.DataFrame({"c": pd.Series(cur, dtype=object)}))
    result = report.column("c")
    assert result.kind == "categorical"
    categories, ref_counts, cur_counts = direct_category_counts(ref, cur)
    assert result.null_share_reference == pytest.approx(sum(text_of(v) is None for v in ref) / len(ref))
    assert result.null_share_current == pytest.approx(sum(text_of(v) is None for v in cur) / len(cur))
    if ref_counts.sum() == 0 or cur_counts.sum() == 0:
        assert result.status == "empty" and result.psi is None
        return
    assert close(result.psi, direct_categorical_psi(ref, cur)), (result.psi, direct_categorical_psi(ref, cur))
    statistic, p = direct_chi2(ref, cur)
    assert result.test == "chi2"
    assert close(result.statistic, statistic) and close(result.p_value, p), (result.statistic, statistic)
    assert result.unseen_share == pytest.approx(cur_counts[-1] / cur_counts.sum(), abs=TOL)
    p_ref, p_cur = ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()
    assert close(result.effect, float(np.abs(p_ref - p_cur).sum() / 2))
    unseen = {t for t in map(text_of, cur) if t is not None and t not in categories}
    assert set(result.unseen_examples) <= unseen and (bool(result.unseen_examples) == bool(unseen))


def test_categorical_chi2_against_scipy_on_a_large_table() -> None:
    rng = np.random.default_rng(3)
    cats = [f"k{i}" for i in range(30)]
    ref = rng.choice(cats, 20_000, p=np.linspace(1, 2, 30) / np.linspace(1, 2, 30).sum())
    cur = rng.choice([*cats[5:], "u1", "u2"], 15_000)
    result = report_of(pd.DataFrame({"c": ref}), pd.DataFrame({"c": cur})).column("c")
    statistic, p = direct_chi2(list(ref), list(cur))
    assert close(result.statistic, statistic)
    assert math.isclose(result.p_value or 0.0, p, rel_tol=1e-9, abs_tol=1e-300)
    assert close(result.psi, direct_categorical_psi(list(ref), list(cur)))
    assert result.unseen_share == pytest.approx(np.isin(cur, ["u1", "u2"]).mean())


# --- Benjamini–Hochberg -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from([0.0, 1e-12, 0.01, 0.04, 0.05, 0.5, 1.0]), st.floats(0, 1)),
                min_size=1, max_size=60))
def test_benjamini_hochberg_matches_scipy(p: list[float]) -> None:
    ours = benjamini_hochberg(np.array(p))
    np.testing.assert_allclose(ours, sps.false_discovery_control(np.array(p), method="bh"), rtol=0, atol=1e-12)


def test_benjamini_hochberg_skips_nan() -> None:
    p = np.array([0.01, np.nan, 0.04, 0.03, np.nan])
    ours = benjamini_hochberg(p)
    assert np.isnan(ours[[1, 4]]).all()
    np.testing.assert_allclose(ours[[0, 2, 3]], sps.false_discovery_control(p[[0, 2, 3]], method="bh"))


def test_report_adjusts_p_values_across_compared_columns() -> None:
    rng = np.random.default_rng(5)
    n = 400
    ref = pd.DataFrame({f"x{i}": rng.normal(0, 1, n) for i in range(6)} | {"c": rng.choice(list("abc"), n),
                                                                            "gone": rng.normal(0, 1, n)})
    cur = pd.DataFrame({f"x{i}": rng.normal(0.05 * i, 1, n) for i in range(6)} | {"c": rng.choice(list("abcd"), n)})
    report = report_of(ref, cur)
    compared = [c for c in report.columns if c.status == "compared"]
    raw = np.array([c.p_value for c in compared])
    expected = sps.false_discovery_control(raw, method="bh")
    np.testing.assert_allclose([c.p_value_adjusted for c in compared], expected, rtol=1e-12)
    assert report.column("gone").p_value_adjusted is None


# --- decision rules -----------------------------------------------------------------------------


def test_psi_rule_fires() -> None:
    rng = np.random.default_rng(1)
    result = report_of(pd.DataFrame({"x": rng.normal(0, 1, 5000)}),
                       pd.DataFrame({"x": rng.normal(1.0, 1, 5000)})).column("x")
    assert result.psi is not None and result.psi >= 0.2
    assert result.drifted and result.rule is not None and result.rule.startswith("psi")


def test_p_value_and_effect_rule_fires_below_the_psi_threshold() -> None:
    rng = np.random.default_rng(2)
    report = report_of(pd.DataFrame({"x": rng.normal(0, 1, 20_000), "c": rng.choice(["a", "b"], 20_000)}),
                       pd.DataFrame({"x": rng.normal(0.3, 1, 20_000),
                                     "c": rng.choice(["a", "b"], 20_000, p=[0.62, 0.38])}))
    x, c = report.column("x"), report.column("c")
    assert x.psi is not None and x.psi < 0.2 and x.effect is not None and x.effect >= 0.1
    assert x.p_value_adjusted is not None and x.p_value_adjusted < 0.05
    assert x.drifted and x.rule is not None and x.rule.startswith("ks")
    assert c.psi is not None and c.psi < 0.2 and c.effect is not None and c.effect >= 0.1
    assert c.drifted and c.rule is not None and c.rule.startswith("chi2")


def test_p_value_alone_with_a_tiny_effect_does_not_drift_on_a_large_sample() -> None:
    rng = np.random.default_rng(4)
    n = 2_000_000
    ref = pd.DataFrame({"x": rng.normal(0, 1, n)})
    cur = pd.DataFrame({"x": rng.normal(0.01, 1, n)})
    result = report_of(ref, cur, ks_cap=n).column("x")
    assert result.ks_reference == "exact"
    assert result.p_value_adjusted is not None and result.p_value_adjusted < 0.05
    assert result.effect is not None and result.effect < 0.1
    assert result.psi is not None and result.psi < 0.2
    assert not result.drifted and result.rule is None


def test_thresholds_are_configurable() -> None:
    rng = np.random.default_rng(1)
    profile = ReferenceProfile.fit(pd.DataFrame({"x": rng.normal(0, 1, 5000)}))
    cur = pd.DataFrame({"x": rng.normal(1.0, 1, 5000)})
    lenient = compare(profile, cur, thresholds=DriftThresholds(psi=100, alpha=1e-300, ks_d=1.0))
    assert not lenient.column("x").drifted
    assert compare(profile, cur).column("x").drifted


# --- reports: JSON and profile round trip -------------------------------------------------------


def mixed_frames(n: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def frame(shift: float, extra: bool) -> pd.DataFrame:
        x = rng.normal(shift, 1, n)
        x[rng.random(n) < 0.05] = np.nan
        spiky = np.round(rng.normal(shift, 1, n), 1)
        spiky[:3] = [np.inf, -np.inf, np.nan]
        data = {
            "x": x, "spiky": spiky, "count": rng.poisson(3 + shift, n),
            "all_nan": np.full(n, np.nan),
            "color": pd.Series(rng.choice(["red", "green", "blue", *(["teal"] if extra else [])], n),
                               dtype=object).where(rng.random(n) > 0.02),
            "flag": rng.random(n) < 0.3 + shift / 10,
            "code": rng.integers(0, 5 + extra, n),
        }
        if extra:
            data["new_col"] = np.zeros(n)
        return pd.DataFrame(data)

    return frame(0.0, False), frame(0.5, True)


def test_to_dict_is_json_serialisable_without_nan() -> None:
    ref, cur = mixed_frames()
    report = report_of(ref, cur.drop(columns=["count"]), categorical=["code"], ks_cap=500)
    text = json.dumps(report.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["extra_columns"] == ["new_col"]
    assert {c["column"]: c["status"] for c in back["columns"]}["count"] == "missing"
    assert back["drifted_columns"] == report.drifted_columns


def test_profile_round_trip_gives_identical_reports() -> None:
    ref, cur = mixed_frames()
    profile = ReferenceProfile.fit(ref, categorical=["code"], ks_cap=500)
    again = ReferenceProfile.from_bytes(profile.to_bytes())
    assert again.rows == profile.rows and again.created_at == profile.created_at
    assert list(again.columns) == list(profile.columns)
    for name, col in profile.columns.items():
        other = again.columns[name]
        assert type(other) is type(col)
        for key, value in vars(col).items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(getattr(other, key), value)
            elif isinstance(value, float) and math.isnan(value):
                assert math.isnan(getattr(other, key))
            else:
                assert getattr(other, key) == value, (name, key)
    assert compare(again, cur).to_dict() == compare(profile, cur).to_dict()


def test_chunk_size_does_not_change_the_report() -> None:
    ref, cur = mixed_frames(n=300)
    profile = ReferenceProfile.fit(ref, categorical=["code"])
    whole = compare(profile, cur).to_dict()
    for chunk_rows in (1, 7, 77, 299):
        assert compare(profile, cur, chunk_rows=chunk_rows).to_dict() == whole, chunk_rows


# --- bad input (issue §5) -----------------------------------------------------------------------


def test_empty_current_frame_is_an_input_error() -> None:
    profile = ReferenceProfile.fit(pd.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"]}))
    with pytest.raises(DriftInputError, match="no rows"):
        compare(profile, pd.DataFrame({"x": pd.Series([], dtype=float), "c": pd.Series([], dtype=object)}))
    with pytest.raises(DriftInputError):
        compare(profile, pd.DataFrame())


def test_missing_column_is_schema_drift() -> None:
    profile = ReferenceProfile.fit(pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"]}))
    report = compare(profile, pd.DataFrame({"x": [1.0, 2.0, 3.0]}))
    c = report.column("c")
    assert c.status == "missing" and c.drifted
    assert c.rule is not None and "schema" in c.rule
    assert c.psi is None and c.p_value_adjusted is None
    assert report.column("x").status == "compared"
    assert report.drifted_columns == ["c"]


def test_every_column_missing_is_schema_drift_not_an_empty_frame() -> None:
    profile = ReferenceProfile.fit(pd.DataFrame({"x": [1.0, 2.0, 3.0]}))
    report = compare(profile, pd.DataFrame({"renamed_x": [1.0, 2.0]}))
    assert report.rows_current == 2
    assert report.column("x").status == "missing" and report.column("x").drifted
    assert report.extra_columns == ["renamed_x"]


def test_extra_columns_are_listed() -> None:
    profile = ReferenceProfile.fit(pd.DataFrame({"x": [1.0, 2.0, 3.0]}))
    report = compare(profile, pd.DataFrame({"x": [1.0, 2.0], "zeta": [1, 2], "alpha": ["a", "b"]}))
    assert report.extra_columns == ["alpha", "zeta"]
    assert [c.column for c in report.columns] == ["x"]


def test_all_nan_column_in_current() -> None:
    profile = ReferenceProfile.fit(pd.DataFrame({"x": [1.0, 2.0, 3.0, np.nan], "c": ["a", "b", None, "a"]}))
    report = compare(profile, pd.DataFrame({"x": [np.nan] * 3, "c": [None] * 3}))
    for name in ("x", "c"):
        col = report.column(name)
        assert col.status == "empty" and col.drifted, name
        assert col.null_share_current == 1.0 and col.null_share_reference == 0.25
        assert col.rule is not None and "null" in col.rule
    json.dumps(report.to_dict(), allow_nan=False)


def test_all_nan_column_in_reference() -> None:
    ref = pd.DataFrame({"x": [np.nan] * 4, "c": pd.Series([None] * 4, dtype=object), "ok": [1.0, 2.0, 3.0, 4.0]})
    profile = ReferenceProfile.fit(ref)
    again = ReferenceProfile.from_bytes(profile.to_bytes())
    for cur in (pd.DataFrame({"x": [np.nan] * 2, "c": [None] * 2, "ok": [1.0, 2.0]}),
                pd.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"], "ok": [1.0, 2.0]})):
        report = compare(again, cur)
        assert compare(profile, cur).to_dict() == report.to_dict()
        for name in ("x", "c"):
            col = report.column(name)
            assert col.status == "empty" and col.psi is None and col.null_share_reference == 1.0
        assert report.column("ok").status == "compared"
        json.dumps(report.to_dict(), allow_nan=False)
    both_empty = compare(profile, pd.DataFrame({"x": [np.nan], "c": [None], "ok": [1.0]}))
    assert not both_empty.column("x").drifted and not both_empty.column("c").drifted


def test_mixed_types_in_an_object_column_are_compared_as_text() -> None:
    ref = pd.DataFrame({"m": pd.Series([1, "a", 2.5, None, "2.5", "1", "a"] * 5, dtype=object)})
    cur = pd.DataFrame({"m": pd.Series([1, "a", "b", 2.5, None, "2.5"] * 5, dtype=object)})
    profile = ReferenceProfile.fit(ref)
    col = profile.columns["m"]
    assert col.kind == "categorical"
    assert col.categories == ("1", "2.5", "a")
    np.testing.assert_array_equal(col.counts, [10, 10, 10])  # 1 and "1" are one category
    result = compare(profile, cur).column("m")
    assert close(result.psi, direct_categorical_psi(list(ref["m"]), list(cur["m"])))
    assert close(result.statistic, direct_chi2(list(ref["m"]), list(cur["m"]))[0])
    assert result.unseen_examples == ["b"]


def test_mixed_types_are_text_whatever_the_row_order() -> None:
    ref = pd.DataFrame({"m": pd.Series([1, True, 1.0, "a"] * 10, dtype=object)})
    cur = pd.DataFrame({"m": pd.Series([True, 1.0, 1, "a"] * 10, dtype=object)})
    profile = ReferenceProfile.fit(ref)
    assert profile.columns["m"].categories == ("1", "True", "a")  # 1.0 is the code 1, as in a float column
    result = compare(profile, cur).column("m")
    assert result.psi == 0.0 and result.unseen_share == 0.0 and not result.drifted


def test_text_in_a_numeric_column_is_an_input_error_naming_the_column() -> None:
    profile = ReferenceProfile.fit(pd.DataFrame({"amount": [1.0, 2.0, 3.0], "c": ["a", "b", "c"]}))
    bad = pd.DataFrame({"amount": pd.Series([1.0, "oops", 2], dtype=object), "c": ["a", "b", "c"]})
    with pytest.raises(DriftInputError, match="'amount'.*oops"):
        compare(profile, bad)
    # numbers held in an object column are fine
    fine = compare(profile, pd.DataFrame({"amount": pd.Series([1.0, 2, "3"], dtype=object), "c": ["a"] * 3}))
    assert fine.column("amount").statistic == 0.0


def test_integer_codes_passed_as_categorical() -> None:
    rng = np.random.default_rng(8)
    ref = pd.DataFrame({"code": rng.integers(0, 6, 3000)})
    cur = pd.DataFrame({"code": rng.integers(0, 7, 2000)})
    profile = ReferenceProfile.fit(ref, categorical=["code"])
    assert profile.columns["code"].kind == "categorical"
    assert profile.columns["code"].categories == tuple(str(i) for i in range(6))
    result = compare(profile, cur).column("code")
    assert result.test == "chi2"
    assert close(result.psi, direct_categorical_psi(list(ref["code"]), list(cur["code"])))
    statistic, p = direct_chi2(list(ref["code"]), list(cur["code"]))
    assert close(result.statistic, statistic) and close(result.p_value, p)
    assert result.unseen_examples == ["6"]
    assert ReferenceProfile.fit(ref).columns["code"].kind == "numeric"  # integers default to numeric


def test_integer_codes_with_nulls_in_current_are_the_same_categories() -> None:
    # nullable integers in the reference, floats with NaN in current (as pandas reads them back):
    # the same categories, and the same share of nulls (missing is a PSI bin of its own)
    ref = pd.DataFrame({"code": pd.Series(np.arange(300) % 5, dtype="Int64").where(np.arange(300) % 7 > 0)})
    cur = pd.DataFrame({"code": pd.Series(np.arange(200) % 5, dtype=np.float64).where(np.arange(200) % 7 > 0)})
    result = report_of(ref, cur, categorical=["code"]).column("code")
    assert result.unseen_share == 0.0
    assert not result.drifted


# --- Parquet input ------------------------------------------------------------------------------


def write_parquet(frame: pd.DataFrame, path: Path, row_group_size: int = 1500, *,
                  pandas_metadata: bool = True) -> Path:
    """Write with pyarrow; without pandas metadata the file reads back like one Spark wrote."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if not pandas_metadata:
        table = table.replace_schema_metadata(None)
    pq.write_table(table, path, row_group_size=row_group_size, coerce_timestamps="us",
                   allow_truncated_timestamps=True)
    return path


def test_parquet_path_gives_the_same_report_as_the_frame(tmp_path: Path) -> None:
    ref, cur = mixed_frames(n=5000, seed=11)
    profile = ReferenceProfile.fit(ref, categorical=["code"], ks_cap=2000)
    expected = compare(profile, cur).to_dict()
    path = write_parquet(cur, tmp_path / "current.parquet")
    assert compare(profile, path, chunk_rows=1000).to_dict() == expected
    assert compare(profile, str(path)).to_dict() == expected
    folder = tmp_path / "dataset"
    folder.mkdir()
    write_parquet(cur.iloc[:2000], folder / "part-0.parquet")
    write_parquet(cur.iloc[2000:], folder / "part-1.parquet")
    assert compare(profile, folder, chunk_rows=1000).to_dict() == expected


def test_empty_parquet_file_is_an_input_error(tmp_path: Path) -> None:
    ref, cur = mixed_frames(n=100)
    path = write_parquet(cur.iloc[:0], tmp_path / "empty.parquet")
    with pytest.raises(DriftInputError):
        compare(ReferenceProfile.fit(ref), path)
    with pytest.raises(DriftInputError, match="no Parquet data"):
        compare(ReferenceProfile.fit(ref), tmp_path / "nowhere.parquet")


def test_parquet_timestamps_give_the_same_report_as_the_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    start = pd.Timestamp("2024-01-01")

    def frame(n: int) -> pd.DataFrame:
        stamps = start + pd.to_timedelta(rng.integers(0, 86_400 * 30, n), unit="s")
        when = pd.Series(stamps).where(rng.random(n) > 0.05)  # NaT are nulls
        return pd.DataFrame({"when": when, "when_tz": when.dt.tz_localize("Europe/Paris"), "x": rng.normal(0, 1, n)})

    ref, cur = frame(3000), frame(2500)
    profile = ReferenceProfile.fit(ref)
    expected = compare(profile, cur)
    assert expected.column("when").null_share_current == pytest.approx(cur["when"].isna().mean())
    assert not expected.column("when").drifted
    assert expected.column("when_tz").out_of_range_share is not None
    assert expected.column("when_tz").out_of_range_share < 0.01
    path = write_parquet(cur, tmp_path / "current.parquet")
    assert compare(profile, path, chunk_rows=1000).to_dict() == expected.to_dict()


def test_parquet_integer_codes_with_nulls_give_the_same_report_as_the_frame(tmp_path: Path) -> None:
    n = 3000
    codes = pd.Series(np.arange(n) % 4, dtype="Int64")
    rows = np.arange(n)
    cur = pd.DataFrame({"code": codes.where((rows < 2000) | (rows % 7 > 0))})  # nulls in the last batches only
    profile = ReferenceProfile.fit(pd.DataFrame({"code": np.arange(n) % 4}), categorical=["code"])
    expected = compare(profile, cur)
    assert expected.column("code").unseen_share == 0.0
    path = write_parquet(cur, tmp_path / "codes.parquet", pandas_metadata=False)
    assert compare(profile, path, chunk_rows=1000).to_dict() == expected.to_dict()


# --- review findings ------------------------------------------------------------------------------


def test_hive_partition_values_stay_text(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ref = pd.DataFrame({"x": np.arange(100.0), "region": ["eu", "us"] * 50, "day": ["01", "02"] * 50})
    profile = ReferenceProfile.fit(ref)
    pq.write_to_dataset(pa.Table.from_pandas(ref), str(tmp_path / "hive"), partition_cols=["region", "day"])
    report = compare(profile, tmp_path / "hive")
    assert report.column("day").unseen_share == 0 and not report.column("day").drifted
    assert report.column("x").statistic == 0


@pytest.mark.parametrize("current", [
    pd.Series([3.0, 4.0, None] * 20, dtype=object),
    pd.Series(pd.Categorical([3.0, 4.0, None] * 20)),
    pd.Series([3, 4, None] * 20, dtype="Int64"),
])
def test_a_code_is_one_category_whatever_the_dtype(current: pd.Series) -> None:
    profile = ReferenceProfile.fit(pd.DataFrame({"code": [3.0, 4.0, np.nan] * 20}), categorical=["code"])
    result = compare(profile, pd.DataFrame({"code": current})).column("code")
    assert result.unseen_share == 0 and result.psi == pytest.approx(0, abs=1e-12) and not result.drifted


@pytest.mark.parametrize("blob", [b"", b"PK\x03\x04 truncated", None])
def test_a_damaged_profile_blob_is_a_profile_error(blob: bytes | None) -> None:
    from monitoring.errors import ProfileError

    whole = ReferenceProfile.fit(pd.DataFrame({"x": np.arange(50.0)})).to_bytes()
    with pytest.raises(ProfileError, match="cannot read the reference profile"):
        ReferenceProfile.from_bytes(whole[: len(whole) // 2] if blob is None else blob)


def test_a_column_that_was_all_null_and_now_has_values_drifts() -> None:
    profile = ReferenceProfile.fit(pd.DataFrame({"x": [np.nan] * 5, "y": np.arange(5.0)}))
    result = compare(profile, pd.DataFrame({"x": np.arange(5.0), "y": np.arange(5.0)})).column("x")
    assert result.status == "empty" and result.drifted and "reference was all null" in result.rule


def test_missing_is_a_psi_bin_a_mostly_null_column_is_not_judged_on_its_few_values() -> None:
    """97 % null on both sides, 20-odd values a little apart: not drift. A column whose null
    share goes from none to 30 %: drift, by PSI, whatever its values do."""
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"x": np.where(rng.random(8_000) < 0.97, np.nan, rng.gamma(2.0, 30.0, 8_000)),
                        "y": rng.normal(size=8_000)})
    cur = pd.DataFrame({"x": np.where(rng.random(700) < 0.97, np.nan, rng.gamma(2.0, 36.0, 700)),
                        "y": np.where(rng.random(700) < 0.3, np.nan, rng.normal(size=700))})
    report = report_of(ref, cur)
    assert not report.column("x").drifted, report.column("x")
    y = report.column("y")
    assert y.drifted and y.rule is not None and y.rule.startswith("psi"), y

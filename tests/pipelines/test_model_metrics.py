"""Unit tests for pipelines/model_metrics.py, checked against computations written out here."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.model_metrics import HIGHER_IS_BETTER, METRICS, calibration_error, recall_at_fpr, score_metrics


def sample(n: int = 400, seed: int = 0, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ~15 % fraud and informative but imperfect scores in (0, 1)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(np.int64)
    scores = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.5 * y - 1.5)))
    return y, (np.round(scores, 1) if ties else scores)


def mann_whitney_auc(y: np.ndarray, p: np.ndarray) -> float:
    """P(score of a fraud row > score of a legitimate row), ties counting half."""
    pos, neg = p[y == 1][:, None], p[y == 0][None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Mean over fraud rows of the precision among the rows scored at least as high (distinct scores)."""
    assert np.unique(p).size == p.size
    hits = y[np.argsort(-p)]
    precision_at_k = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(precision_at_k[hits == 1].mean())


def equal_mass_ece(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    """ECE over ``bins`` equal slices of the rows sorted by score (no ties, n divisible by bins)."""
    order = np.argsort(p)
    parts = zip(np.array_split(y[order], bins), np.array_split(p[order], bins), strict=True)
    return float(sum(part_y.size * abs(part_y.mean() - part_p.mean()) for part_y, part_p in parts) / y.size)


# --- score_metrics ---------------------------------------------------------------------------------


def test_score_metrics_returns_every_metric() -> None:
    metrics = score_metrics(*sample())
    assert tuple(metrics) == METRICS
    assert set(HIGHER_IS_BETTER) == set(METRICS)
    assert all(type(v) is float for v in metrics.values())


@pytest.mark.parametrize("ties", [False, True])
def test_roc_auc_is_the_mann_whitney_statistic(ties: bool) -> None:
    y, p = sample(ties=ties)
    assert score_metrics(y, p)["roc_auc"] == pytest.approx(mann_whitney_auc(y, p), abs=1e-12)


def test_pr_auc_is_the_mean_precision_at_each_fraud_row() -> None:
    y, p = sample()
    assert score_metrics(y, p)["pr_auc"] == pytest.approx(average_precision(y, p), abs=1e-12)


def test_log_loss_is_the_mean_cross_entropy_in_nats() -> None:
    y, p = sample()
    by_hand = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert score_metrics(y, p)["log_loss"] == pytest.approx(by_hand, rel=1e-12)


def test_log_loss_stays_finite_for_certain_wrong_scores() -> None:
    metrics = score_metrics(np.array([0, 1, 0, 1]), np.array([1.0, 0.0, 0.2, 0.8]))
    assert np.isfinite(metrics["log_loss"])
    assert metrics["log_loss"] == pytest.approx((2 * -np.log(1e-7) - 2 * np.log(0.8)) / 4, rel=1e-6)


def test_ranking_metrics_see_differences_between_tiny_scores() -> None:
    # a confident model's legitimate rows sit far below 1e-7; clipping must not tie them with fraud
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([1e-12, 2e-12, 1e-11, 1e-9, 1e-8])
    metrics = score_metrics(y, p)
    assert (metrics["roc_auc"], metrics["pr_auc"], metrics["recall_at_1pct_fpr"]) == (1.0, 1.0, 1.0)


def test_recall_at_1pct_fpr_allows_one_legitimate_row_in_a_hundred() -> None:
    # 200 legitimate rows: at most 2 may be flagged. Score order, top down:
    # 3 fraud, 2 legitimate, 4 fraud | 1 legitimate, 3 fraud, then the other 197 legitimate rows
    y = np.array([1] * 3 + [0] * 2 + [1] * 4 + [0] + [1] * 3 + [0] * 197)
    p = np.linspace(0.99, 0.01, y.size)
    assert score_metrics(y, p)["recall_at_1pct_fpr"] == pytest.approx(7 / 10)


def test_scores_may_come_as_lists_and_labels_as_bools() -> None:
    y, p = sample()
    assert score_metrics(y.astype(bool).tolist(), p.tolist()) == score_metrics(y, p)  # type: ignore[arg-type]


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_only_is_refused(label: int) -> None:
    with pytest.raises(ValueError, match="one class only"):
        score_metrics(np.full(10, label), np.linspace(0, 1, 10))


@pytest.mark.parametrize("n_scores", [9, 11])
def test_mismatched_lengths_are_refused(n_scores: int) -> None:
    with pytest.raises(ValueError, match=f"10 labels but {n_scores} scores"):
        score_metrics(np.array([0, 1] * 5), np.linspace(0, 1, n_scores))


# --- recall_at_fpr ---------------------------------------------------------------------------------

HAND_LABELS = np.array([1, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0])
HAND_SCORES = np.array([0.95, 0.92, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03])


@pytest.mark.parametrize(("fpr", "recall"), [
    (0.0, 0.25),    # above 0.92: only the 0.95 fraud row
    (0.09, 0.25),   # one legitimate row would already be 10 %
    (0.1, 0.5),     # down to 0.9: 0.92 flagged
    (0.39, 0.5),    # three legitimate rows (0.8, 0.7, 0.6) catch nothing more
    (0.4, 0.75),    # four (down to 0.5): the third fraud row
    (0.59, 0.75),
    (0.6, 1.0),     # six (0.4 and 0.3 too), down to 0.2: the last fraud row
    (1.0, 1.0),
])
def test_recall_at_fpr_by_hand(fpr: float, recall: float) -> None:
    assert recall_at_fpr(HAND_LABELS, HAND_SCORES, fpr) == recall


def test_recall_at_fpr_cannot_split_a_tie() -> None:
    y = np.array([1, 0, 1, 0, 0, 0])
    p = np.array([0.9, 0.9, 0.5, 0.3, 0.2, 0.1])  # the top fraud row ties with a legitimate one
    assert recall_at_fpr(y, p, 0.0) == 0.0
    assert recall_at_fpr(y, p, 0.24) == 0.0
    assert recall_at_fpr(y, p, 0.25) == 1.0  # one legitimate row flagged: both fraud rows above 0.3


def test_recall_at_fpr_sees_thresholds_between_collinear_roc_points() -> None:
    """Tied fraud/legitimate pairs put ROC points on a straight line; roc_curve's default drops
    the middle ones, and one of them is the best threshold under 1 % FPR."""
    labels = np.array([1, 0] * 4 + [0] * 196 + [1] * 6)
    scores = np.array([0.9, 0.9, 0.8, 0.8, 0.7, 0.7, 0.6, 0.6, *np.linspace(0.1, 0.5, 196), *[0.05] * 6])
    # 200 legitimate rows: 1 % allows two of them, so the threshold 0.8 catches 2 of 10 fraud rows
    assert recall_at_fpr(labels, scores, 0.01) == pytest.approx(0.2)


# --- calibration_error -----------------------------------------------------------------------------


def test_a_calibrated_score_has_almost_no_calibration_error() -> None:
    rng = np.random.default_rng(7)
    p = rng.random(200_000)
    y = (rng.random(p.size) < p).astype(np.int64)  # Bernoulli(p)
    assert calibration_error(y, p) < 0.01


def test_a_miscalibrated_score_has_a_larger_calibration_error() -> None:
    rng = np.random.default_rng(7)
    p = rng.random(200_000)
    y = (rng.random(p.size) < p).astype(np.int64)
    calibrated = calibration_error(y, p)
    overconfident = calibration_error(y, p**3)  # E|p - p^3| over U(0, 1) = 1/4
    assert overconfident > 0.2 > 10 * calibrated
    assert calibration_error(y, p / 2) == pytest.approx(0.25, abs=0.01)  # E|p - p/2| = 1/4


def test_equal_scores_make_one_bin() -> None:
    y = np.array([1] + [0] * 9)
    assert calibration_error(y, np.full(10, 0.3)) == pytest.approx(abs(0.1 - 0.3), abs=1e-12)
    y, _ = sample()
    assert calibration_error(y, np.full(y.size, 0.05)) == pytest.approx(abs(y.mean() - 0.05), abs=1e-12)


@pytest.mark.parametrize("bins", [1, 2, 5, 10])
def test_calibration_error_is_the_weighted_gap_over_equal_mass_bins(bins: int) -> None:
    y, p = sample(n=1000, seed=3)
    assert calibration_error(y, p, bins=bins) == pytest.approx(equal_mass_ece(y, p, bins), abs=1e-12)


def test_ties_straddling_a_bin_edge_stay_in_one_bin() -> None:
    # bins=2 would cut after row 5, inside the run of 0.5s: the cut moves to its start
    p = np.array([0.1] * 3 + [0.5] * 4 + [0.9] * 3)
    y = np.array([0, 0, 1] + [1, 0, 1, 1] + [1, 1, 1])
    by_hand = (abs(1 - 0.3) + abs(6 - (2.0 + 2.7))) / 10
    assert calibration_error(y, p, bins=2) == pytest.approx(by_hand, abs=1e-12)
    order = np.random.default_rng(0).permutation(p.size)
    assert calibration_error(y[order], p[order], bins=2) == pytest.approx(by_hand, abs=1e-12)


def test_more_bins_than_rows_compares_row_by_row() -> None:
    y = np.array([0, 1, 1])
    p = np.array([0.2, 0.6, 0.9])
    assert calibration_error(y, p, bins=10) == pytest.approx((0.2 + 0.4 + 0.1) / 3, abs=1e-12)

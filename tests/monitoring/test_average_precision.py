"""Average precision and its vectorised class-stratified bootstrap (monitoring/average_precision.py)."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.average_precision import average_precision, bootstrap_average_precision, resample_counts


def scored(rng: np.random.Generator, n: int = 3_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = (rng.random(n) < 0.05).astype(np.int8)
    s = np.round(rng.normal(size=n) + 1.5 * y, 1)  # rounded: many tied scores
    return s, y, rng.choice([1.0, 3.0], n)


def test_a_replicate_is_the_average_precision_of_the_rows_it_resampled() -> None:
    """Counts per row weigh a row as often as it was drawn: the same as repeating the rows."""
    s, y, w = scored(np.random.default_rng(1))
    boot = bootstrap_average_precision(s, y, w, replicates=5, seed=2)
    counts = resample_counts(np.random.default_rng(2), y.astype(np.int64), 5)  # the draws it made
    assert (counts[:, y == 1].sum(axis=1) == y.sum()).all()  # class-stratified: every replicate has all frauds
    for replicate, row in zip(boot, counts, strict=True):
        idx = np.repeat(np.arange(len(y)), row.astype(np.int64))
        assert replicate == pytest.approx(average_precision(s[idx], y[idx], w[idx]), rel=1e-12)


def test_its_standard_error_is_that_of_a_loop_over_resamples() -> None:
    """The loop the drift job used before (resample each class, recompute): the same spread."""
    s, y, w = scored(np.random.default_rng(3))
    rng = np.random.default_rng(4)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    looped = [average_precision(s[idx], y[idx], w[idx]) for idx in (
        np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))] for _ in range(400))]
    boot = bootstrap_average_precision(s, y, w, replicates=400, seed=5)
    assert len(boot) == 400 and np.isfinite(boot).all()
    # the sd of an sd estimate from 400 replicates is ~3.5 %: 20 % apart would be a different statistic
    assert np.std(boot, ddof=1) == pytest.approx(np.std(looped, ddof=1), rel=0.2)
    assert np.mean(boot) == pytest.approx(np.mean(looped), abs=3 * np.std(looped) / np.sqrt(400) * 1.5)


def test_the_same_seed_gives_the_same_replicates_and_bad_input_says_why() -> None:
    s, y, w = scored(np.random.default_rng(6), n=200)
    a = bootstrap_average_precision(s, y, w, replicates=50, seed=7)
    assert np.array_equal(a, bootstrap_average_precision(s, y, w, replicates=50, seed=7))
    with pytest.raises(ValueError, match="equally long"):
        bootstrap_average_precision(s, y[:-1], w, replicates=50)
    with pytest.raises(ValueError, match="replicates"):
        bootstrap_average_precision(s, y, w, replicates=0)

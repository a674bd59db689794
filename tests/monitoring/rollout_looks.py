"""What the rollout statistics' tests share: the level, the looks of a step, Prometheus-like buckets."""

from __future__ import annotations

import numpy as np

ALPHA = 0.05
LOOKS = 20
EDGES = np.r_[np.geomspace(0.005, 5.0, 30), np.inf]  # Prometheus-like latency buckets, seconds


def binned(values: np.ndarray) -> np.ndarray:
    """Latencies (seconds) counted per bucket of :data:`EDGES`."""
    return np.bincount(np.searchsorted(EDGES, values), minlength=len(EDGES))

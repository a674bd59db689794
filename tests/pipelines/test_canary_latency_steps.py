"""Which looks of a rollout compare the variants' latencies (pipelines.canary.controller)."""

from __future__ import annotations

import pytest

from monitoring.rollout import CanaryPolicy
from pipelines.canary.controller import latency_compared
from serving.canary_state import CanaryState


@pytest.mark.parametrize(("mode", "weight", "compared"), [
    ("shadow", 0.0, True),     # the shadow scores every request: both variants run warm
    ("canary", 5.0, False),    # one call in twenty: the challenger's code runs cache-cold
    ("canary", 25.0, True),
    ("canary", 50.0, True),
    ("canary", 100.0, False),  # the champion serves nothing to compare with
])
def test_latency_is_compared_in_shadow_and_from_the_policys_share_up_to_100(mode: str, weight: float,
                                                                          compared: bool) -> None:
    state = CanaryState(model="m", mode=mode, weight_pct=weight, challenger_version="2", canary_id="c1")  # type: ignore[arg-type]
    assert latency_compared(state, CanaryPolicy()) is compared


def test_the_share_is_the_policys() -> None:
    at_5 = CanaryState(model="m", mode="canary", weight_pct=5.0, challenger_version="2", canary_id="c1")
    assert latency_compared(at_5, CanaryPolicy(min_latency_share_pct=5.0))
    with pytest.raises(ValueError, match="min_latency_share_pct"):
        CanaryPolicy(min_latency_share_pct=101)

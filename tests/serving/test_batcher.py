"""MicroBatcher: concurrent requests share forward passes and get exactly their own scores."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import torch

from examples.fraud.model import FraudModel, ModelSpec, build_module
from serving.batcher import MicroBatcher
from serving.errors import OverloadedError


def _model(device: str = "cpu") -> FraudModel:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"amount": rng.gamma(2, 30, 400), "channel": rng.choice(["pos", "ecom"], 400)})
    spec = ModelSpec.fit(frame, ["amount"], ["channel"], hidden=(16,), min_count=1)
    torch.manual_seed(0)
    return FraudModel(spec, build_module(spec)).to(device)


def _rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"amount": rng.gamma(2, 30, n), "channel": rng.choice(["pos", "ecom", "moto"], n)})


def test_concurrent_requests_get_their_own_scores_in_shared_batches():
    model = _model()
    batcher = MicroBatcher(model, max_batch=64, max_wait_us=2_000)
    requests = [_rows(1 + i % 5, i) for i in range(200)]
    try:
        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda f: batcher.score(*model.encode(f)), requests))
    finally:
        batcher.close()
    for frame, scores in zip(requests, got, strict=True):
        np.testing.assert_allclose(scores, model.predict_proba(frame), rtol=1e-6)
    stats = batcher.stats
    assert stats.rows == sum(len(f) for f in requests)
    assert stats.batches < len(requests)           # some requests shared a forward pass
    assert max(stats.sizes) <= 64 + 4              # a batch closes at max_batch (plus the last request)


def test_a_lone_request_waits_at_most_max_wait():
    model = _model()
    batcher = MicroBatcher(model, max_batch=256, max_wait_us=20_000)
    try:
        numeric, codes = model.encode(_rows(1, 0))
        started = time.perf_counter()
        batcher.score(numeric, codes)
        waited = time.perf_counter() - started
    finally:
        batcher.close()
    assert 0.015 < waited < 0.5


def test_cpu_default_does_not_wait_for_company():
    model = _model()
    batcher = MicroBatcher(model)
    try:
        assert batcher.max_wait_s == 0
        numeric, codes = model.encode(_rows(1, 0))
        started = time.perf_counter()
        for _ in range(50):
            batcher.score(numeric, codes)
        assert (time.perf_counter() - started) / 50 < 0.01
    finally:
        batcher.close()


def test_a_full_queue_refuses_at_once():
    model = _model()
    gate = threading.Event()

    class Slow(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model.module

        def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
            gate.wait(5)
            return self.inner(numeric, codes)

    batcher = MicroBatcher(FraudModel(model.spec, Slow()), max_batch=1, max_queue=3)
    numeric, codes = model.encode(_rows(1, 0))
    futures = [batcher.submit(numeric, codes)]
    time.sleep(0.05)  # the worker holds the first item
    futures += [batcher.submit(numeric, codes) for _ in range(3)]
    with pytest.raises(OverloadedError, match="waiting for the model"):
        batcher.submit(numeric, codes)
    gate.set()
    assert all(f.result(timeout=5).shape == (1,) for f in futures)
    batcher.close()


def test_a_failing_forward_fails_every_waiter_and_the_worker_survives():
    model = _model()
    broken = [True]

    class Flaky(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model.module

        def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
            if broken[0]:
                raise RuntimeError("CUDA error: device-side assert (simulated)")
            return self.inner(numeric, codes)

    batcher = MicroBatcher(FraudModel(model.spec, Flaky()))
    numeric, codes = model.encode(_rows(3, 0))
    with pytest.raises(RuntimeError, match="simulated"):
        batcher.score(numeric, codes)
    broken[0] = False
    np.testing.assert_allclose(batcher.score(numeric, codes), model.predict_proba(_rows(3, 0)), rtol=1e-6)
    batcher.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_on_cuda_scores_equal_cpu():
    cpu, gpu = _model(), _model("cuda")
    batcher = MicroBatcher(gpu)
    try:
        frame = _rows(300, 1)
        np.testing.assert_allclose(batcher.score(*gpu.encode(frame)), cpu.predict_proba(frame), rtol=1e-4)
        assert batcher.max_wait_s > 0
    finally:
        batcher.close()

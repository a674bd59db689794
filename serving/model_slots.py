"""The models a server runs: one slot per alias (``champion``, ``challenger``), swapped in place.

    refresh():  alias ──MlflowClient──► version ──(new?)──► download, load the native module,
                warm it with one forward pass ──► swap the slot (one reference assignment)

Requests read a slot once and keep that :class:`LoadedModel` for the whole request, so a swap
never splits a request between versions and never drops one. A version that fails to download,
load or warm leaves the slot as it was; the failure is kept in :attr:`ModelSlots.errors` for
``/readyz`` and the logs, and that version is tried again after a backoff that doubles from
``refresh_s`` up to ``max_backoff_s`` (a broken version is not downloaded every poll). When the
``champion`` alias disappears, the last loaded champion keeps serving (a deleted alias must not
take a fleet down) and :attr:`ModelSlots.missing` names it, for ``/readyz`` and ``/metrics``; any
other alias that disappears empties its slot (the canary is over). The request path calls the PyTorch module directly (not the pyfunc
wrapper, which costs 1–3 ms per call) through :class:`serving.fraud_model.FraudModel`, so the
model's own preprocessing still applies.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.redaction import redact
from serving.batcher import MicroBatcher
from serving.errors import ModelFormatError
from serving.fraud_model import FraudModel

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["LoadedModel", "ModelSlots"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded, warmed model version."""

    name: str
    alias: str
    version: str
    model: FraudModel
    features: tuple[str, ...]         # online feature references, ``view:feature``
    request_columns: tuple[str, ...]  # model inputs that come with the request, not the store
    loaded_at: float                  # time.time()
    batcher: MicroBatcher | None = None  # shares forward passes across concurrent requests

    def predict_proba(self, inputs: pd.DataFrame | Mapping[str, np.ndarray], *, timeout_s: float = 5.0) -> np.ndarray:
        """P(fraud) per row, through the micro-batcher when there is one (``timeout_s`` bounds the
        wait for it; without a batcher the call runs in this thread)."""
        if self.batcher is None:
            return self.model.predict_proba(inputs)
        return self.batcher.score(*self.model.encode(inputs), timeout_s=timeout_s)


class ModelSlots:
    """Champion and challenger of ``name``, loaded from the MLflow registry on ``refresh()``."""

    def __init__(self, client: MlflowClient, name: str, *, aliases: tuple[str, ...] = ("champion", "challenger"),
                 device: str | None = None, batching: dict[str, int] | None = None,
                 direct: tuple[str, ...] = (), base_backoff_s: float = 10.0, max_backoff_s: float = 600.0) -> None:
        """``batching``: MicroBatcher options (``max_batch``, ``max_wait_us``, ``max_queue``), or
        None to call each model directly; aliases in ``direct`` are always called directly, in the
        request's own thread. A version that failed to load is tried again after
        ``base_backoff_s``, doubling per failure up to ``max_backoff_s`` (seconds)."""
        self.client, self.name, self.aliases, self.device = client, name, aliases, device
        self.batching, self.direct = batching, direct
        self._slots: dict[str, LoadedModel | None] = dict.fromkeys(aliases)
        self.errors: dict[str, str] = {}
        self.missing: set[str] = set()  # aliases gone from the registry whose last model still serves
        self.base_backoff_s, self.max_backoff_s = base_backoff_s, max_backoff_s
        self._failed: dict[str, tuple[str, int, float]] = {}  # alias -> (version, failures, next try: monotonic)
        self._lock = threading.Lock()  # one refresh at a time; reads don't take it

    def get(self, alias: str) -> LoadedModel | None:
        """The model serving ``alias`` now (None if the alias is unset or never loaded)."""
        return self._slots.get(alias)

    def refresh(self) -> list[str]:
        """Resolve every alias; load and swap in versions that changed. Returns what changed,
        e.g. ``["champion: v3 -> v4"]``. Never raises for one bad version: see :attr:`errors`."""
        changes: list[str] = []
        with self._lock:
            for alias in self.aliases:
                current = self._slots[alias]
                try:
                    version = self._resolve(alias)
                except Exception as exc:  # noqa: BLE001  (registry unreachable: keep serving what we have)
                    self.errors[alias] = f"could not resolve {self.name}@{alias}: {redact(str(exc))}"
                    log.warning(self.errors[alias])
                    continue
                if version is None:
                    changes += self._alias_gone(alias, current)
                    continue
                if alias in self.missing:
                    self.missing.discard(alias)
                    log.info("%s@%s is set again (v%s)", self.name, alias, version)
                if version == (current.version if current else None):
                    continue
                if not self._due(alias, version):
                    continue
                try:
                    loaded = self._load(alias, version)
                except Exception as exc:  # noqa: BLE001  (any load or warm failure keeps the old model)
                    retry_s = self._backoff(alias, version)
                    self.errors[alias] = f"{self.name} v{version} ({alias}) failed to load: {redact(str(exc))}"
                    log.error("%s; still serving %s; next try in %.1f s", self.errors[alias],
                              f"v{current.version}" if current else "nothing for this alias", retry_s)
                    continue
                self._failed.pop(alias, None)
                self._slots[alias] = loaded  # the swap: requests in flight keep their reference
                if current is not None and current.batcher is not None:
                    _close_later(current.batcher)
                self.errors.pop(alias, None)
                changes.append(f"{alias}: v{current.version if current else None} -> v{version}")
                log.info("%s@%s now serves v%s", self.name, alias, version)
        return changes

    def _alias_gone(self, alias: str, current: LoadedModel | None) -> list[str]:
        """The registry has no ``alias`` any more: keep serving the champion, empty another slot."""
        self.errors.pop(alias, None)
        self._failed.pop(alias, None)
        if alias == "champion" and current is not None:
            if alias not in self.missing:
                log.error("%s@%s is gone from the registry; still serving v%s until the alias is set again "
                          "(`tidemark promote`)", self.name, alias, current.version)
                self.missing.add(alias)
            return []
        self._slots[alias] = None
        if current is not None and current.batcher is not None:
            _close_later(current.batcher)
        return [f"{alias}: v{current.version} -> none"] if current is not None else []

    def _due(self, alias: str, version: str) -> bool:
        """Whether ``version`` may be tried now: not within the backoff of its last failure."""
        failed = self._failed.get(alias)
        return failed is None or failed[0] != version or time.monotonic() >= failed[2]

    def _backoff(self, alias: str, version: str) -> float:
        """Record a failed load of ``version``; returns the seconds until it is tried again."""
        previous = self._failed.get(alias)
        failures = previous[1] + 1 if previous is not None and previous[0] == version else 1
        wait = min(self.max_backoff_s, self.base_backoff_s * 2 ** (failures - 1))
        self._failed[alias] = (version, failures, time.monotonic() + wait)
        return wait

    def _resolve(self, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def _load(self, alias: str, version: str) -> LoadedModel:
        import mlflow.artifacts
        from mlflow.models import Model

        mv = self.client.get_model_version(self.name, version)
        params = self.client.get_run(str(mv.run_id)).data.params if mv.run_id else {}
        if "features" not in params:
            raise ModelFormatError(f"v{version} has no 'features' param in its run; register models with "
                                   "`tidemark train` so serving knows which online features to read")
        with tempfile.TemporaryDirectory() as tmp:
            # resolved by this client: a "models:/" URI would go to MLflow's process-wide registry,
            # which nothing in a `tidemark serve` process points at tidemark's
            source = self.client.get_model_version_download_uri(self.name, version)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp,
                                                             tracking_uri=self.client.tracking_uri))
            artifacts = Model.load(str(local)).flavors.get("python_function", {}).get("artifacts", {})
            if "spec" not in artifacts or "weights" not in artifacts:
                raise ModelFormatError(f"v{version} is not a tidemark fraud model (no spec/weights artifacts)")
            model = FraudModel.load(local / artifacts["spec"]["path"], local / artifacts["weights"]["path"],
                                    device=self.device)
        features = tuple(f for f in params["features"].split(",") if f)
        stored = {ref.split(":", 1)[1] for ref in features}
        request = tuple(c for c in model.spec.columns if c not in stored)
        _warm(model)
        batched = self.batching is not None and alias not in self.direct
        batcher = MicroBatcher(model.module, name=f"{alias}-v{version}", **(self.batching or {})) if batched else None
        return LoadedModel(self.name, alias, version, model, features, request, time.time(), batcher)


def _close_later(batcher: MicroBatcher, grace_s: float = 30.0) -> None:
    """Stop a swapped-out model's batcher once requests that already hold it are done."""
    timer = threading.Timer(grace_s, batcher.close)
    timer.daemon = True
    timer.start()


def _warm(model: FraudModel) -> None:
    """One forward pass on an all-missing row: allocates buffers, proves the module runs."""
    row = pd.DataFrame({c: [np.nan] for c in model.spec.columns})
    for c in model.spec.categorical:
        row[c.name] = pd.Series([None], dtype="object")
    score = model.predict_proba(row)
    if not np.isfinite(score).all():
        raise ModelFormatError(f"warm-up scored {score[0]} for an all-missing row; the weights are unusable")

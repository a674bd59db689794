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
other alias that disappears empties its slot (the canary is over).

A version is loaded only with its model contract (:class:`serving.model_contract.ModelContract`,
stored as a version tag): it says which features to read and what the model predicts. The request
path calls the model natively where its flavour allows (:mod:`serving.predictors`: a PyTorch
module, a scikit-learn estimator), not through the pyfunc wrapper, which costs 1–3 ms per call.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.redaction import redact
from serving.batcher import MicroBatcher
from serving.errors import ModelFormatError
from serving.model_contract import ModelContract
from serving.predictors import Predictor, predict, predictor_for

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["LoadedModel", "ModelSlots", "load_version"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded, warmed model version and its contract."""

    name: str
    alias: str
    version: str
    model: Predictor
    contract: ModelContract
    loaded_at: float                  # time.time()
    batcher: MicroBatcher | None = None  # shares forward calls across concurrent requests

    @property
    def features(self) -> tuple[str, ...]:
        """Online feature references, ``view:feature``."""
        return self.contract.features

    @property
    def request_columns(self) -> tuple[str, ...]:
        """Model inputs that come with the request, not the store."""
        return self.contract.request_columns

    def predict(self, inputs: pd.DataFrame | Mapping[str, np.ndarray], *, timeout_s: float = 5.0) -> np.ndarray:
        """The task's prediction per row (binary: P(positive); multiclass: (n, k) probabilities;
        regression: values), through the micro-batcher when there is one (``timeout_s`` bounds
        the wait for it; without a batcher the call runs in this thread)."""
        if self.batcher is None:
            return predict(self.model, inputs)
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
        self.refreshed_at: float | None = None  # time.time() of the last refresh that resolved every alias

    def get(self, alias: str) -> LoadedModel | None:
        """The model serving ``alias`` now (None if the alias is unset or never loaded)."""
        return self._slots.get(alias)

    def refresh(self) -> list[str]:
        """Resolve every alias; load and swap in versions that changed. Returns what changed,
        e.g. ``["champion: v3 -> v4"]``. Never raises for one bad version: see :attr:`errors`."""
        changes: list[str] = []
        with self._lock:
            resolved = True
            for alias in self.aliases:
                current = self._slots[alias]
                try:
                    version = self._resolve(alias)
                except Exception as exc:  # noqa: BLE001  (registry unreachable: keep serving what we have)
                    self.errors[alias] = f"could not resolve {self.name}@{alias}: {redact(str(exc))}"
                    log.warning(self.errors[alias])
                    resolved = False
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
            if resolved:
                self.refreshed_at = time.time()
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
        model, contract = load_version(self.client, self.name, version, device=self.device, warm=True)
        batched = self.batching is not None and alias not in self.direct
        batcher = MicroBatcher(model, name=f"{alias}-v{version}", **(self.batching or {})) if batched else None
        return LoadedModel(self.name, alias, version, model, contract, time.time(), batcher)


def load_version(client: MlflowClient, name: str, version: str, *, device: str | None = None,
                 warm: bool = False) -> tuple[Predictor, ModelContract]:
    """Registered ``version`` of ``name`` as serving runs it (the fastest path its flavour allows),
    with its contract; ``warm``: one call first, which must give what the task promises. Raises
    :class:`~serving.errors.ContractMissingError` before any download for a version without one."""
    import mlflow.artifacts
    from mlflow.models import Model

    mv = client.get_model_version(name, version)
    contract = ModelContract.of_version(name, version, mv.tags)
    with tempfile.TemporaryDirectory() as tmp:
        # resolved by this client: a "models:/" URI would go to MLflow's process-wide registry,
        # which nothing in a `tidemark serve` process points at tidemark's
        source = client.get_model_version_download_uri(name, version)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp,
                                                         tracking_uri=client.tracking_uri))
        meta = Model.load(str(local))
        model = predictor_for(local, meta.flavors, contract, device=device)
        example = _input_example(meta, local) if warm else None
    if warm:
        _warm(model, contract, example)
    return model, contract


def _close_later(batcher: MicroBatcher, grace_s: float = 30.0) -> None:
    """Stop a swapped-out model's batcher once requests that already hold it are done."""
    timer = threading.Timer(grace_s, batcher.close)
    timer.daemon = True
    timer.start()


def _input_example(meta: Any, local: Path) -> pd.DataFrame | None:
    """The input example logged with the model, if any (MLflow stores it beside the model)."""
    try:
        example = meta.load_input_example(str(local))
    except Exception:  # noqa: BLE001  (an unreadable example only costs the warm-up its realism)
        return None
    return example if isinstance(example, pd.DataFrame) and len(example) else None


def _warm(model: Predictor, contract: ModelContract, example: pd.DataFrame | None) -> None:
    """One call before the model serves: allocates buffers, proves it runs and gives what its
    task promises. On the logged input example when there is one, else on an all-missing row."""
    if example is not None and all(c in example.columns for c in contract.inputs):
        rows: pd.DataFrame = example[list(contract.inputs)].head(2)
    else:
        rows = pd.DataFrame({c: pd.Series([None], dtype="object") if c in contract.text_columns else [np.nan]
                             for c in contract.inputs})
    out = predict(model, rows)
    expected = (len(rows), contract.width) if contract.task == "multiclass" else (len(rows),)
    if out.shape != expected or not np.isfinite(out).all():
        raise ModelFormatError(f"warm-up predicted {out!r:.80} (shape {out.shape}) for {len(rows)} rows; expected "
                               f"finite values of shape {expected} for a {contract.task} model")

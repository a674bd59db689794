"""The canary's labelled traffic: prediction-log scores joined to the labels known at a look.

    prediction log (offline/prediction_log/model=<name>, hourly Parquet) ── rows of the canary's two versions,
        │   scored in [started_at, now], with the label source's row ids (the contract's)
        │   shadow mode: request logged as champion + shadow  ──► paired (same row, both models)
        │   canary mode: champion or challenger by routing key ──► unpaired, stratum = UTC hour scored
        ▼
    label source ── newest label per row known by ``now`` (pipelines.labels.known_labels)
        ▼
    monitoring.rollout.LabelledScores ──► decide() ──► PR-AUC challenger − champion

Point in time: a label that became known after ``now`` is not used, however the files were
written; a replayed look sees what the controller saw then. A row scored more than once by one
variant (a retried request) counts once, its first score.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from monitoring.rollout import LabelledScores
from pipelines.labels import known_labels
from pipelines.training_data import utc_timestamp
from serving.model_contract import ModelContract
from serving.prediction_log_schema import CHALLENGER, CHAMPION, SCORE, SHADOW, log_files, model_log_root, read_log

if TYPE_CHECKING:
    from serving.canary_state import CanaryState
    from tidemark.settings import Settings

__all__ = ["canary_predictions", "labelled_canary_traffic", "log_files"]

log = logging.getLogger(__name__)

_HOUR_US = 3_600_000_000


def labelled_canary_traffic(settings: Settings, state: CanaryState, now: datetime,
                            contract: ModelContract | None = None) -> LabelledScores:
    """The canary's scored rows since ``state.started_at`` with labels known at ``now`` (UTC), from
    the champion's contract's label source (``contract``, default: read from the registry).

    Only rows of the state's champion version (variant ``champion``) and challenger version
    (``challenger``, ``shadow``) count. Empty when nothing is labelled yet, the log or the label
    source does not exist, the state has no start time, or the model is not a binary classifier
    (the canary's label test is PR-AUC; a regressor's or a multiclass model's rollout is judged
    by errors and latency, and the gate judged its metric before it).
    """
    if not state.started_at or not state.champion_version or not state.challenger_version:
        return LabelledScores()
    contract = contract or _contract(settings, state)
    source = contract.label
    if source is None or contract.task != "binary":
        return LabelledScores()
    started, ids = utc_timestamp(state.started_at), list(source.join_keys)
    rows = canary_predictions(model_log_root(settings.offline_dir, settings.model_name), started,
                              utc_timestamp(now), state.champion_version, state.challenger_version, ids)
    if rows.empty or not Path(source.table).exists():
        return LabelledScores()
    labels = known_labels(source, cutoff=now, since=started.to_pydatetime())
    labels = labels.assign(label=contract.is_positive(labels[source.label].to_numpy()))
    return _as_labelled_scores(rows.merge(labels[[*ids, "label"]], on=ids, how="inner"), ids)


def _contract(settings: Settings, state: CanaryState) -> ModelContract:
    from pipelines import model_registry

    version = model_registry.model_version(model_registry.connect(settings), settings.model_name,
                                           str(state.champion_version))
    return ModelContract.of_version(settings.model_name, str(version.version), version.tags)


def canary_predictions(root: Path, started: pd.Timestamp, now: pd.Timestamp, champion_version: str,
                       challenger_version: str, ids: list[str]) -> pd.DataFrame:
    """Prediction-log rows of the two versions scored in ``[started, now]`` (UTC) that name their
    label row (``ids``, the label source's row ids).

    Columns: the log's :data:`~serving.prediction_log_schema.META` and ``ids``; ``role`` is
    ``champion`` or ``challenger`` (the shadow's rows are the challenger's). Reads only the
    ``date=`` folders of the window and only these columns, each file cast to that schema (a file
    without a column reads it as null).
    """
    variant, version = ds.field("variant"), ds.field("model_version")
    wanted = (((variant == CHAMPION) & (version == champion_version))
              | (variant.isin([CHALLENGER, SHADOW]) & (version == challenger_version)))
    for key in ids:
        wanted &= ~ds.field(key).is_null()
    table = read_log(root, started, now, {k: pa.int64() for k in ids}, wanted, end_inclusive=True)
    role = pc.if_else(pc.equal(table["variant"], CHAMPION), CHAMPION, CHALLENGER)
    return table.append_column("role", role).to_pandas()


def _as_labelled_scores(rows: pd.DataFrame, ids: list[str]) -> LabelledScores:
    """Pairs where one request scored a row with both models; every other row unpaired."""
    rows = rows[np.isfinite(rows[SCORE].to_numpy(np.float64))].sort_values("event_timestamp", kind="stable")
    champion = rows[rows["role"] == CHAMPION].drop_duplicates(ids)
    challenger = rows[rows["role"] == CHALLENGER].drop_duplicates(ids)
    pairs = champion.merge(challenger, on=["request_id", *ids], suffixes=("_a", "_b"))
    paired = pd.MultiIndex.from_frame(pairs[ids]) if len(ids) > 1 else pd.Index(pairs[ids[0]])

    def alone(side: pd.DataFrame) -> pd.DataFrame:
        keys = pd.MultiIndex.from_frame(side[ids]) if len(ids) > 1 else pd.Index(side[ids[0]])
        return side[~keys.isin(paired)]

    alone_a, alone_b = alone(champion), alone(challenger)
    return LabelledScores(
        paired_champion=pairs[f"{SCORE}_a"].to_numpy(np.float64),
        paired_challenger=pairs[f"{SCORE}_b"].to_numpy(np.float64),
        paired_labels=pairs["label_a"].to_numpy(np.int8),
        champion_scores=alone_a[SCORE].to_numpy(np.float64), champion_labels=alone_a["label"].to_numpy(np.int8),
        challenger_scores=alone_b[SCORE].to_numpy(np.float64),
        challenger_labels=alone_b["label"].to_numpy(np.int8),
        champion_strata=_hour(alone_a), challenger_strata=_hour(alone_b))


def _hour(rows: pd.DataFrame) -> np.ndarray:
    """UTC hours since the epoch at which the rows were scored: the strata of unpaired rows."""
    us = rows["event_timestamp"].to_numpy("datetime64[us]").astype(np.int64)
    return us // _HOUR_US

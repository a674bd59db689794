"""The canary's labelled traffic: prediction-log scores joined to the fraud labels known at a look.

    prediction log (offline/prediction_log/model=<name>, hourly Parquet) ── rows of the canary's two versions,
        │   scored in [started_at, now], with a transaction_id
        │   shadow mode: request logged as champion + shadow  ──► paired (same payment, both models)
        │   canary mode: champion or challenger by customer   ──► unpaired, stratum = UTC hour scored
        ▼
    raw/labels ── newest label per payment known by ``now`` (pipelines.training_data.known_labels)
        ▼
    serving.canary_stats.LabelledScores ──► decide() ──► PR-AUC challenger − champion

Point in time: a label that became known after ``now`` is not used, however the files were
written; a replayed look sees what the controller saw then. A payment scored more than once by
one variant (a retried request) counts once, its first score.
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

from pipelines.training_data import known_labels, utc_timestamp
from serving.canary_stats import LabelledScores
from serving.prediction_log_schema import log_files, model_log_root

if TYPE_CHECKING:
    from features.settings import Settings
    from serving.canary_state import CanaryState

__all__ = ["LOG_COLUMNS", "canary_predictions", "labelled_canary_traffic", "log_files"]

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, SHADOW = "champion", "challenger", "shadow"
# What is read of the log, with the type every file is read as (files may lack some, or differ).
LOG_COLUMNS = pa.schema([("event_timestamp", pa.timestamp("us", tz="UTC")), ("request_id", pa.string()),
                         ("transaction_id", pa.int64()), ("score", pa.float64()), ("variant", pa.string()),
                         ("model_version", pa.string())])
_HOUR_US = 3_600_000_000


def labelled_canary_traffic(settings: Settings, state: CanaryState, now: datetime) -> LabelledScores:
    """The canary's scored payments since ``state.started_at`` with labels known at ``now`` (UTC).

    Only rows of the state's champion version (variant ``champion``) and challenger version
    (``challenger``, ``shadow``) count. Empty when nothing is labelled yet, the log or the labels
    folder does not exist, or the state has no start time.
    """
    if not state.started_at or not state.champion_version or not state.challenger_version:
        return LabelledScores()
    started = utc_timestamp(state.started_at)
    rows = canary_predictions(model_log_root(settings.offline_dir, settings.model_name), started, utc_timestamp(now),
                              state.champion_version, state.challenger_version)
    label_dir = settings.raw_dir / "labels"
    if rows.empty or not label_dir.exists():
        return LabelledScores()
    labels = known_labels(label_dir, label_cutoff=now, labels_from=started)
    rows = rows.merge(labels, on="transaction_id", how="inner")
    return _as_labelled_scores(rows)


def canary_predictions(root: Path, started: pd.Timestamp, now: pd.Timestamp, champion_version: str,
                       challenger_version: str) -> pd.DataFrame:
    """Prediction-log rows of the two versions scored in ``[started, now]`` (UTC) that name a payment.

    Columns of :data:`LOG_COLUMNS`; ``role`` is ``champion`` or ``challenger`` (the shadow's rows
    are the challenger's). Reads only the ``date=`` folders of the window and only these columns,
    each file cast to :data:`LOG_COLUMNS` (a file without a column reads it as null).
    """
    files = log_files(root, started, now)
    if not files:
        return pd.DataFrame(columns=[*LOG_COLUMNS.names, "role"])
    when, variant, version = ds.field("event_timestamp"), ds.field("variant"), ds.field("model_version")
    wanted = ((when >= started.to_pydatetime()) & (when <= now.to_pydatetime())
              & ~ds.field("transaction_id").is_null()
              & (((variant == CHAMPION) & (version == champion_version))
                 | (variant.isin([CHALLENGER, SHADOW]) & (version == challenger_version))))
    table = ds.dataset(files, schema=LOG_COLUMNS, format="parquet").to_table(filter=wanted)
    role = pc.if_else(pc.equal(table["variant"], CHAMPION), CHAMPION, CHALLENGER)
    return table.append_column("role", role).to_pandas()


def _as_labelled_scores(rows: pd.DataFrame) -> LabelledScores:
    """Pairs where one request scored a payment with both models; every other payment unpaired."""
    rows = rows[np.isfinite(rows["score"].to_numpy(np.float64))].sort_values("event_timestamp", kind="stable")
    champion = rows[rows["role"] == CHAMPION].drop_duplicates("transaction_id")
    challenger = rows[rows["role"] == CHALLENGER].drop_duplicates("transaction_id")
    pairs = champion.merge(challenger, on=["request_id", "transaction_id"], suffixes=("_a", "_b"))
    paired_ids = pairs["transaction_id"]
    alone_a = champion[~champion["transaction_id"].isin(paired_ids)]
    alone_b = challenger[~challenger["transaction_id"].isin(paired_ids)]
    return LabelledScores(
        paired_champion=pairs["score_a"].to_numpy(np.float64), paired_challenger=pairs["score_b"].to_numpy(np.float64),
        paired_labels=pairs["is_fraud_a"].to_numpy(np.int8),
        champion_scores=alone_a["score"].to_numpy(np.float64), champion_labels=alone_a["is_fraud"].to_numpy(np.int8),
        challenger_scores=alone_b["score"].to_numpy(np.float64),
        challenger_labels=alone_b["is_fraud"].to_numpy(np.int8),
        champion_strata=_hour(alone_a), challenger_strata=_hour(alone_b))


def _hour(rows: pd.DataFrame) -> np.ndarray:
    """UTC hours since the epoch at which the rows were scored: the strata of unpaired rows."""
    us = rows["event_timestamp"].to_numpy("datetime64[us]").astype(np.int64)
    return us // _HOUR_US

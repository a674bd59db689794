"""Where each model's prediction log lives and what every row holds: the one module that the
writer (:mod:`serving.prediction_log`) and every reader (drift, the canary, replays) import.

    $TIDEMARK_HOME/offline/prediction_log/
        model=<name>/date=YYYY-MM-DD/hour=HH/part-<UTC write time>-<uuid>.parquet

One dataset per registered model (``model=`` is a hive partition, so ``spark.read.parquet`` or
``pyarrow.dataset(..., partitioning="hive")`` of the whole folder gives a ``model`` column). Every
row holds :data:`META` (when it was scored, the request, the variant and version that answered,
``score``: P(positive), the top class's probability or the value), the model contract's join keys,
request fields and the feature values it saw, and, when the request named them, the label source's
row ids (int64, null where absent). A multiclass model adds ``predicted_class`` and
``proba_<class>`` columns.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = ["CHALLENGER", "CHAMPION", "META", "SCORE", "SHADOW", "log_files", "model_log_root", "prediction_column_names",
           "prediction_columns", "read_log"]

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pyarrow.dataset as ds

    from serving.model_contract import ModelContract

FOLDER = "prediction_log"
#: The column of a model's score: binary P(positive), regression the value, multiclass the top class's probability.
SCORE = "score"
#: The values of ``variant``: who answered (the shadow's rows are the challenger scoring the champion's requests).
CHAMPION, CHALLENGER, SHADOW = "champion", "challenger", "shadow"
#: What every row holds besides the model's own columns, as readers read it.
META = pa.schema([("event_timestamp", pa.timestamp("us", tz="UTC")), ("request_id", pa.string()),
                  ("variant", pa.string()), ("model_version", pa.string()), (SCORE, pa.float64())])


def model_log_root(offline_dir: Path, model: str) -> Path:
    """The folder of ``model``'s prediction log (its name percent-escaped where a path would break)."""
    return offline_dir / FOLDER / f"model={quote(model, safe='')}"


def log_files(root: Path, started: pd.Timestamp, now: pd.Timestamp) -> list[str]:
    """Parquet files under the ``date=`` folders of ``root`` from ``started`` to ``now``; hidden and
    temporary files (``.part-….tmp``) skipped."""
    files: list[str] = []
    day = started.normalize()
    while day <= now:
        folder = root / f"date={day.date().isoformat()}"
        if folder.is_dir():
            files += sorted(str(p) for p in folder.rglob("*.parquet") if not p.name.startswith((".", "_")))
        day += timedelta(days=1)
    return files


def read_log(root: Path, start: pd.Timestamp, end: pd.Timestamp, columns: Mapping[str, pa.DataType],
             where: ds.Expression, *, end_inclusive: bool = False) -> pa.Table:
    """The log rows under ``root`` scored from ``start`` to ``end`` (UTC; ``end`` excluded unless
    ``end_inclusive``) that match ``where``, as :data:`META` plus ``columns``. Reads only the
    ``date=`` folders of the window and only those columns, each file cast to that schema (a file
    without a column reads it as null), so every reader sees one layout."""
    import pyarrow.dataset as pads

    schema = pa.schema([*zip(META.names, META.types, strict=True), *((k, t) for k, t in columns.items()
                                                                     if k not in META.names)])
    files = log_files(root, start, end)
    if not files:
        return schema.empty_table()
    when = pads.field("event_timestamp")
    window = (when >= start.to_pydatetime()) & ((when <= end.to_pydatetime()) if end_inclusive
                                                 else (when < end.to_pydatetime()))
    return pads.dataset(files, schema=schema, format="parquet").to_table(filter=window & where)


def prediction_column_names(contract: ModelContract) -> list[str]:
    """The columns a reader takes a model's predictions from: ``proba_<class>`` per class for a
    multiclass model, else :data:`SCORE`."""
    return [f"proba_{c}" for c in contract.classes] if contract.task == "multiclass" else [SCORE]


def prediction_columns(contract: ModelContract, predictions: np.ndarray) -> dict[str, np.ndarray]:
    """The prediction log's columns for a model's predictions: ``score`` (binary: P(positive);
    regression: the value; multiclass: the top class's probability), and for multiclass also
    ``predicted_class`` and one ``proba_<class>`` column per class."""
    if contract.task != "multiclass":
        return {SCORE: predictions}
    top = predictions.argmax(axis=1)
    out: dict[str, np.ndarray] = {SCORE: predictions[np.arange(len(top)), top],
                                  "predicted_class": np.asarray(contract.classes, dtype=object)[top]}
    out.update({f"proba_{c}": predictions[:, i] for i, c in enumerate(contract.classes)})
    return out

"""Generic helpers of training frames: a frame's identity and UTC timestamps."""

from __future__ import annotations

import hashlib
from datetime import datetime

import pandas as pd

__all__ = ["frame_sha256", "utc_timestamp"]


def frame_sha256(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's columns, dtypes and values, in row order (the index is ignored): the
    training frame's identity in lineage, whoever built the frame."""
    digest = hashlib.sha256(repr([(c, str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def utc_timestamp(moment: datetime | pd.Timestamp | str) -> pd.Timestamp:
    """``moment`` as a UTC ``pd.Timestamp`` (naive values are read as UTC)."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")

"""Category values as text, one rule for every place that compares categories.

Training, serving and drift profiles must agree on what a category is: the code 3, the string
"3" and the float 3.0 (what pandas makes of an integer column once it holds a null) are one
category, "3". Everything else is ``str(value)``; nulls stay null.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["as_text", "category_text"]


def as_text(value: Any) -> str:
    """One category value as text: whole floats as integers ("3", as a float column of integer
    codes reads), everything else as ``str``."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def category_text(series: pd.Series) -> pd.Series:
    """Categories as text, element-wise (nulls stay null); ``monitoring.profile.factorized_text`` is
    the fast form for counting.

    Integer codes that pandas turned into floats because of a null read as "3", not "3.0".
    """
    if isinstance(series.dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(series.dtype):
        return series.astype(object).map(as_text, na_action="ignore").astype("string")
    if pd.api.types.is_float_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        whole = np.isfinite(values) & (np.trunc(values) == values) & (np.abs(values) < 2.0**53)
        if whole.any():
            text = series.astype("string").to_numpy(dtype=object)
            text[whole] = values[whole].astype(np.int64).astype(str)
            return pd.Series(text, index=series.index, dtype="string")
    return series.astype("string")

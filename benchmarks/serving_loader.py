"""benchmarks/serving.py as a module for the scripts beside it that reuse its set-up and load runs
(serving_flavours.py, canary_under_load.py). Its file name is the ``serving`` package's, so it is
loaded by path under the name ``serving_bench``, at the importing script's import: the load
generator runs in a spawned process that imports that script as its main module and must find
``serving_bench`` (its functions are pickled by that name)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

__all__ = ["load_serving_bench"]


def load_serving_bench() -> Any:
    """benchmarks/serving.py, loaded as ``serving_bench`` (once per process)."""
    if "serving_bench" in sys.modules:
        return sys.modules["serving_bench"]
    spec = importlib.util.spec_from_file_location("serving_bench", Path(__file__).resolve().parent / "serving.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["serving_bench"] = module
    spec.loader.exec_module(module)
    return module

"""Makes the packages named in ``TIDEMARK_TEST_BLOCKED_IMPORTS`` (comma-separated) unimportable in
this interpreter and in every Python process it starts, as if their extra were not installed.

A test puts this folder first on ``PYTHONPATH`` for a subprocess (``tidemark serve``, say), so
the process runs as on a node installed without those packages: ``import pyspark`` raises
``ModuleNotFoundError`` and ``importlib.util.find_spec("pyspark")`` is None (a ``None`` entry in
``sys.modules`` is Python's own way of saying "not importable").
"""

from __future__ import annotations

import os
import sys

for _name in filter(None, os.environ.get("TIDEMARK_TEST_BLOCKED_IMPORTS", "").split(",")):
    sys.modules[_name] = None  # type: ignore[assignment]

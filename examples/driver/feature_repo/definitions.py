"""Feast definitions of the driver example for the ``feast`` CLI.

The ``feast`` CLI imports this file and collects module-level Feast objects; the data folder is
``$TIDEMARK_HOME/driver_example/data``, where ``python -m examples.driver.datagen`` writes.
"""

from __future__ import annotations

import os
from pathlib import Path

from examples.driver.features import driver_definitions

_DATA_DIR = Path(os.environ.get("TIDEMARK_HOME", ".tidemark")) / "driver_example" / "data"

# Keyed by kind as well as name: a source and its view share a name, and the CLI finds objects
# by scanning module attributes, so one must not shadow the other.
for _obj in driver_definitions(_DATA_DIR):
    globals()[f"{type(_obj).__name__.lower()}_{_obj.name}"] = _obj

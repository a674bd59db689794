"""The default MLflow store (SQLite under ``$TIDEMARK_HOME``) opened for the first time by several
processes at once, as an Airflow task and the CLI do on a fresh home: every one gets the store."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

_OPEN = """
import sys, time
from pathlib import Path
from pipelines import model_registry
from tidemark.settings import Settings, SparkSettings
while time.time() < float(sys.argv[2]):  # all of them at once
    time.sleep(0.005)
client = model_registry.connect(Settings(home=Path(sys.argv[1]), spark=SparkSettings()))
print(len(client.search_experiments()))
"""


def test_processes_opening_a_new_store_at_once_all_get_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    start = time.time() + 8  # after each has imported MLflow
    procs = [subprocess.Popen([sys.executable, "-c", _OPEN, str(home), str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
             for _ in range(4)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert all(code == 0 for code, _, _ in results), [err[-2000:] for code, _, err in results if code]
    assert {out.strip() for _, out, _ in results} == {"1"}  # the Default experiment, once

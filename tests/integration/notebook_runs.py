"""Running docs/notebooks/quickstart.ipynb with nbclient on this environment's "python3" kernel,
for the tests that assert on its outputs (``test_notebook.py``, and ``test_dag_runs.py``, which
runs it on the world the DAGs built)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tidemark.settings import Settings

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "docs" / "notebooks" / "quickstart.ipynb"
CELL_TIMEOUT_S = 300


def kernel_env(settings: Settings | None) -> dict[str, str]:
    """This process's environment without tidemark's or MLflow's settings (MLflow's fluent API
    exports what tests set), plus ``settings`` as a user sets them."""
    from features.spark import BASE_CONF

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEMARK_", "MLFLOW_"))}
    if settings is not None:
        # as the test session's Spark: C1 only, the optimising JIT costs more than it saves on tiny jobs
        java = BASE_CONF["spark.driver.extraJavaOptions"] + " -XX:TieredStopAtLevel=1"
        env.update({"TIDEMARK_HOME": str(settings.home), "TIDEMARK_REDIS_URL": settings.redis_url or "",
                    "TIDEMARK_SPARK_MASTER": "local[2]", "TIDEMARK_SPARK_SHUFFLE_PARTITIONS": "4",
                    "TIDEMARK_SPARK_DRIVER_MEMORY": "1g",
                    "TIDEMARK_SPARK_CONF": json.dumps({"spark.driver.extraJavaOptions": java})})
    return env


def execute(nb: Any, env: dict[str, str]) -> Any:
    """Run ``nb`` in place on the "python3" kernel (this environment's ipykernel), from docs/notebooks."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute(env=env)
    return nb


def stdout(nb: Any, cell_id: str) -> str:
    """What a cell printed and displayed as text (stderr, where Spark and MLflow log, left out)."""
    cell = next(c for c in nb.cells if c.get("id") == cell_id)
    return "".join(out.get("text", "") if out.output_type == "stream" and out.name == "stdout"
                   else out.get("data", {}).get("text/plain", "") for out in cell.outputs)

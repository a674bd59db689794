"""docs/notebooks/quickstart.ipynb: committed clean, and, with no ``TIDEMARK_HOME``, looking where
`make demo` writes and saying what to run when there is nothing yet. Its full run, with every
output asserted, is in ``test_dag_runs.py``, on the world the DAGs built (a champion, the drift
DAG's report and MLflow runs, a materialized online store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.notebook_runs import NOTEBOOK, REPO, execute, kernel_env, stdout

pytestmark = pytest.mark.integration


def test_committed_notebook_is_clean() -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_without_tidemark_home_or_a_report(tmp_path: Path) -> None:
    """Opened from docs/notebooks with no TIDEMARK_HOME, the notebook looks where `make demo` writes;
    on a home without drift reports or an MLflow store, those cells say what to run instead."""
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = {c.get("id"): c for c in nb.cells}
    switch = nbformat.v4.new_code_cell(  # stands in for the cells that need data
        "import pandas as pd\nfrom tidemark.settings import Settings\n"
        f"os.environ['TIDEMARK_HOME'] = {str(tmp_path)!r}\nsettings = Settings.from_env()", id="test-empty-home")
    nb.cells = [cells["home"], switch, cells["drift"], cells["mlflow"]]
    execute(nb, kernel_env(None))
    assert stdout(nb, "home").strip() == f"TIDEMARK_HOME = {REPO / '.tidemark'}"
    assert stdout(nb, "drift").startswith(f"No drift report yet under {tmp_path / 'reports' / 'drift' / 'fraud-detector'}.")
    assert "drift_monitor" in stdout(nb, "drift") and "`make demo`" in stdout(nb, "drift")
    assert stdout(nb, "mlflow").strip() == f"No MLflow store yet at {tmp_path / 'mlflow.db'}: `make demo` creates it."
    assert list(tmp_path.iterdir()) == []  # looking created nothing

"""The install parts (pyproject's extras) hold what their nodes run, and no more.

The closure is read from the installed distributions' own metadata (each one's ``Requires-Dist``
with its markers evaluated), so it is what ``pip install 'tidemark[serving]'`` would install.
"""

from __future__ import annotations

import importlib.metadata as md
import re

import pytest
from packaging.requirements import Requirement

from tidemark.extras import EXTRAS, MissingExtraError, require


def _name(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def closure(dist: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """The distributions ``dist[extras]`` installs, itself included (normalised names)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(_name(dist), extras)]
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        for line in md.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
                todo.append((_name(req.name), frozenset(req.extras)))
    return {name for name, _ in seen}


HEAVY = {"apache-airflow", "pyspark", "evidently", "psycopg"}


def test_a_serving_node_installs_no_airflow_spark_evidently_or_postgres_driver() -> None:
    serving = closure("tidemark", frozenset({"serving"}))
    assert not serving & HEAVY, sorted(serving & HEAVY)
    assert {"starlette", "uvicorn", "prometheus-client", "torch", "mlflow", "feast", "redis", "httpx"} <= serving


def test_all_installs_every_part_and_each_part_provides_its_modules() -> None:
    everything = closure("tidemark", frozenset({"all"}))
    assert HEAVY <= everything
    providers = md.packages_distributions()
    for extra, modules in EXTRAS.items():
        part = closure("tidemark", frozenset({extra}))  # Feast and MLflow already bring uvicorn
        for module in modules:
            assert {_name(d) for d in providers[module]} & part, (extra, module, sorted(part)[:20])


def test_a_missing_part_names_the_extra_that_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pyspark", None)  # as on a node without it
    with pytest.raises(MissingExtraError, match=r"building features needs pyspark.*pip install 'tidemark\[spark\]'"):
        require("pyspark", "spark", "building features")
    with pytest.raises(ImportError):  # callers that catch ImportError still do
        require("pyspark", "spark", "building features")
    require("numpy", "serving", "anything")  # installed: no error
    with pytest.raises(ValueError, match="unknown extra"):
        require("numpy", "gpu", "anything")

"""The fraud example's project folder: what the platform reads from it, without importing it."""

from __future__ import annotations

from pathlib import Path

from tidemark.settings import BUNDLED_PROJECT, Settings, SparkSettings


def test_the_repo_holds_its_files_beside_the_package() -> None:
    import examples.fraud

    assert BUNDLED_PROJECT == Path(examples.fraud.__file__).resolve().parent / "feature_repo"
    assert {p.name for p in BUNDLED_PROJECT.iterdir()} >= {"feature_store.yaml", "definitions.py", "tidemark.yaml"}


def test_its_definitions_follow_the_clients_home(tmp_path: Path) -> None:
    from features.sdk import repo_objects

    settings = Settings(home=tmp_path / "home", spark=SparkSettings())
    found = repo_objects(BUNDLED_PROJECT, settings)
    names = [o.name for o in found]
    assert len(names) == len(set(names)) and {"customer", "merchant", "customer_profile", "merchant_stats"} <= set(names)
    tables = {o.name: o.batch_source.path for o in found if getattr(o, "batch_source", None) is not None}
    raw = {n for n in tables if n == "customer_txn" or n == "transactions"}
    assert all(p.startswith(str(settings.offline_dir)) for n, p in tables.items() if n not in raw)
    # the customer windows are one stream view over one push source, computed from the raw payments
    assert "customer_txn" in tables and not any(n.startswith("customer_txn_") for n in tables)
    assert {tables[n] for n in raw} == {str(settings.raw_dir / "transactions")}
    (push,) = [o for o in found if type(o).__name__ == "PushSource"]
    assert push.name == "transactions" and push.batch_source.created_timestamp_column == "arrival_timestamp"


def test_its_project_file_names_its_entry_points(tmp_path: Path) -> None:
    from pipelines.project import settings_project

    project = settings_project(Settings(home=tmp_path / "home", spark=SparkSettings()))
    assert callable(project.hook("build")) and callable(project.hook("sample_entities"))
    assert [m.name for m in project.models] == ["fraud-detector"]

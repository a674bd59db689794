"""FeatureClient opens a Feast repo as ``feast`` does: its own feature_store.yaml, and the repo's
definitions as they are now (an edited view is applied on open, never served stale)."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from features.feast_repo import FINGERPRINT_TAG, recorded_fingerprint
from features.sdk import FeatureClient
from tests.integration.online_repo import make_history
from tidemark.settings import Settings, SparkSettings

pytestmark = pytest.mark.integration

ENGINE = "features.materialize_engine.TidemarkSparkEngine"


def write_repo(repo: Path, data: Path, *, ttl_hours: int, description: str = "") -> None:
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: client_repo\nprovider: local\n"
        "registry:\n  path: ${TIDEMARK_HOME}/team/registry.db\n  cache_ttl_seconds: 5\n"
        "offline_store:\n  type: features.offline_store.SparkAsofOfflineStore\n"
        "  filter_by_created_timestamp: false\n"
        "online_store:\n  type: features.online_store.PackedRedisOnlineStore\n  write_timeout_ms: 7000\n"
        f"batch_engine:\n  type: {ENGINE}\n  partitions: 3\n"
        "entity_key_serialization_version: 3\n")
    (repo / "definitions.py").write_text(
        "from datetime import timedelta\nfrom pathlib import Path\n\n"
        "from tests.integration.online_repo import definitions\n\n"
        f"customer, cust_stats, cust_profile = definitions(Path({str(data)!r}), "
        f"stats_ttl=timedelta(hours={ttl_hours}))\n"
        f"cust_stats.description = {description!r}\n")


@pytest.fixture
def team(tmp_path, redis_url, spark):
    make_history(tmp_path / "data", customers=20, rows=200)
    settings = Settings(home=tmp_path / "home", spark=SparkSettings(master="local[2]", shuffle_partitions=4),
                        redis_url=redis_url, online_timeout_ms=77)
    return tmp_path, settings


def test_the_repos_yaml_configures_the_client_with_tidemarks_settings_filling_the_gaps(team):
    root, settings = team
    write_repo(root / "repo", root / "data", ttl_hours=24)
    config = FeatureClient(settings, repo_path=root / "repo").store.config
    # the yaml's own settings reach the RepoConfig ...
    assert config.project == "client_repo"
    assert config.registry.path == str(settings.home / "team" / "registry.db")  # ${TIDEMARK_HOME} = settings.home
    assert config.registry.cache_ttl_seconds == 5
    assert config.offline_store.filter_by_created_timestamp is False
    assert config.online_store.write_timeout_ms == 7000
    assert config.batch_engine_config == {"type": ENGINE, "partitions": 3}
    # ... and tidemark's settings only what it leaves open
    assert config.online_store.url == settings.redis_url and config.online_store.timeout_ms == 77
    assert config.offline_store.spark_conf["spark.master"] == "local[2]"


def test_an_edited_view_is_applied_on_open_with_the_plan_logged(team, caplog):
    root, settings = team
    repo = root / "repo"
    write_repo(repo, root / "data", ttl_hours=24)
    first = FeatureClient(settings, repo_path=repo)
    assert first.feature_view("cust_stats").ttl == timedelta(hours=24)  # a fresh registry: applied
    assert recorded_fingerprint(first.store)

    write_repo(repo, root / "data", ttl_hours=48, description="two days now")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="features.feast_repo"):
        edited = FeatureClient(settings, repo_path=repo)
        fv = edited.feature_view("cust_stats")
    assert fv.ttl == timedelta(hours=48) and fv.description == "two days now"
    plan = "\n".join(r.getMessage() for r in caplog.records if r.name == "features.feast_repo")
    assert "Updated feature view cust_stats" in plan and "ttl: seconds: 86400\n -> seconds: 172800" in plan
    assert "cust_profile" not in plan and "Created" not in plan  # only what changed

    caplog.clear()
    registry = settings.home / "team" / "registry.db"
    written = registry.stat().st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="features.feast_repo"):
        again = FeatureClient(settings, repo_path=repo)
        store = again.store
    said = [r for r in caplog.records if r.name == "features.feast_repo"]
    assert not said and registry.stat().st_mtime_ns == written  # unchanged: nothing applied or logged
    assert store.registry.get_project("client_repo").tags[FINGERPRINT_TAG] == recorded_fingerprint(edited.store)


def test_a_registry_applied_by_feast_itself_is_checked_once_and_left_alone(team, caplog):
    """``feast apply`` records no fingerprint: the first open plans, finds nothing to change, and
    only records it; later opens are cheap."""
    from feast import FeatureStore

    from features.feast_repo import repo_config
    from features.sdk import repo_objects

    root, settings = team
    repo = root / "repo"
    write_repo(repo, root / "data", ttl_hours=24)
    (settings.home / "team").mkdir(parents=True)
    feast_store = FeatureStore(repo_path=str(repo), config=repo_config(repo, settings))
    feast_store.apply(repo_objects(repo, settings))
    assert recorded_fingerprint(feast_store) is None
    with caplog.at_level(logging.WARNING, logger="features.feast_repo"):
        client = FeatureClient(settings, repo_path=repo)
        assert client.feature_view("cust_stats").ttl == timedelta(hours=24)
    # nothing to apply, nothing said (other loggers may speak: Feast's registry cache refreshes by time)
    assert not [r for r in caplog.records if r.name == "features.feast_repo"] and recorded_fingerprint(client.store)
    registry = settings.home / "team" / "registry.db"
    written = registry.stat().st_mtime_ns
    assert FeatureClient(settings, repo_path=repo).feature_view("cust_stats").ttl == timedelta(hours=24)
    assert registry.stat().st_mtime_ns == written  # the next open only compares

"""Settings come from TIDEMARK_* variables, typed, with errors that say what to set."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidemark.errors import ConfigError
from tidemark.settings import Settings, SparkSettings


def test_defaults_put_state_under_dot_tidemark(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.home == (tmp_path / ".tidemark").resolve()
    assert settings.offline_dir == settings.home / "offline"
    assert settings.spark.master == "local[*]"


def test_values_are_read_and_typed():
    settings = Settings.from_env({
        "TIDEMARK_HOME": "/srv/tm", "TIDEMARK_SPARK_MASTER": "spark://h:7077",
        "TIDEMARK_SPARK_SHUFFLE_PARTITIONS": "32",
        "TIDEMARK_SPARK_CONF": '{"spark.driver.maxResultSize": "2g"}',
    })
    assert settings.home == Path("/srv/tm")
    assert settings.spark.shuffle_partitions == 32
    assert settings.spark.extra_conf == {"spark.driver.maxResultSize": "2g"}


@pytest.mark.parametrize("env, fragment", [
    ({"TIDEMARK_SPARK_SHUFFLE_PARTITIONS": "many"}, "positive integer"),
    ({"TIDEMARK_SPARK_SHUFFLE_PARTITIONS": "0"}, "positive integer"),
    ({"TIDEMARK_SPARK_CONF": "spark.x=1"}, "valid JSON"),
    ({"TIDEMARK_SPARK_CONF": "[1]"}, "JSON object"),
])
def test_bad_values_are_named(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_env(env)


def test_online_store_defaults_to_the_embedded_redis(tmp_path):
    settings = Settings.from_env({"TIDEMARK_HOME": str(tmp_path)})
    assert settings.redis_url is None
    assert settings.redis_dir == tmp_path / "redis"
    assert settings.online_timeout_ms == 50


def test_external_redis_and_online_timeout_are_read():
    settings = Settings.from_env({"TIDEMARK_REDIS_URL": "redis://cache:6379/2", "TIDEMARK_ONLINE_TIMEOUT_MS": "120"})
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.online_timeout_ms == 120


def test_canary_minimums_are_read():
    assert (Settings.from_env({}).canary_min_dwell_s, Settings.from_env({}).canary_min_samples) == (300, 1_000)
    settings = Settings.from_env({"TIDEMARK_CANARY_MIN_DWELL_S": "60", "TIDEMARK_CANARY_MIN_SAMPLES": "250"})
    assert (settings.canary_min_dwell_s, settings.canary_min_samples) == (60, 250)
    assert (Settings.from_env({}).canary_look_every_s, Settings.from_env({"TIDEMARK_CANARY_LOOK_EVERY_S": "20"})
            .canary_look_every_s) == (300, 20)
    with pytest.raises(ConfigError, match="TIDEMARK_CANARY_MIN_SAMPLES.*positive integer"):
        Settings.from_env({"TIDEMARK_CANARY_MIN_SAMPLES": "0"})
    assert Settings.from_env({"TIDEMARK_CANARY_MAX_P99_RATIO": "1.5"}).canary_max_p99_ratio == 1.5
    for bad in ("0.9", "nan", "inf", "fast"):
        with pytest.raises(ConfigError, match="TIDEMARK_CANARY_MAX_P99_RATIO.*ratio >= 1"):
            Settings.from_env({"TIDEMARK_CANARY_MAX_P99_RATIO": bad})


def test_empty_redis_url_means_embedded():
    assert Settings.from_env({"TIDEMARK_REDIS_URL": ""}).redis_url is None


@pytest.mark.parametrize("raw", ["0", "-5", "fast"])
def test_bad_online_timeout_is_named(raw):
    with pytest.raises(ConfigError, match="TIDEMARK_ONLINE_TIMEOUT_MS.*positive integer"):
        Settings.from_env({"TIDEMARK_ONLINE_TIMEOUT_MS": raw})


def test_spark_settings_travel_through_the_offline_store_config():
    """The Feast offline store starts Spark on first use (never for online reads) with tidemark's
    settings, which reach it as Spark configuration keys."""
    from features.spark import conf_settings, settings_conf

    settings = SparkSettings(master="local[3]", driver_memory="3g", shuffle_partitions=6,
                             extra_conf={"spark.sql.ansi.enabled": "true"})
    conf = settings_conf(settings)
    assert conf["spark.master"] == "local[3]" and conf["spark.sql.shuffle.partitions"] == "6"
    assert conf_settings(conf) == settings
    assert conf_settings({}) == SparkSettings()


def test_drift_metrics_go_under_home_unless_set(tmp_path):
    default = Settings.from_env({"TIDEMARK_HOME": str(tmp_path)})
    assert default.textfile_dir == tmp_path.resolve() / "reports" / "prometheus"
    assert default.pushgateway_url is None
    chosen = Settings.from_env({"TIDEMARK_HOME": str(tmp_path), "TIDEMARK_PROMETHEUS_TEXTFILE_DIR": "/var/lib/ne",
                                "TIDEMARK_PUSHGATEWAY_URL": "http://user:secret@pgw:9091"})
    assert chosen.textfile_dir == Path("/var/lib/ne")
    assert chosen.pushgateway_url == "http://user:secret@pgw:9091"
    assert "secret" not in repr(chosen)  # a URL may carry credentials

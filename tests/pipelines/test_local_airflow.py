"""What ``LocalAirflow`` says when Airflow's components do not come up: where to look, and the end
of their log, without the admin password ``airflow standalone`` prints into it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.local_airflow import AirflowComponentsError, LocalAirflow
from tests.integration.headless_browser import free_port
from tidemark.settings import Settings, SparkSettings


def test_a_timeout_names_the_log_and_quotes_it_without_the_password(tmp_path: Path) -> None:
    airflow = LocalAirflow(Settings(home=tmp_path, spark=SparkSettings()), free_port())  # never started
    airflow.log.parent.mkdir(parents=True)
    airflow.log.write_text("standalone | Starting Airflow Standalone\n"
                           "standalone | Simple auth manager | Password for user 'admin': s3cretXYZ\n"
                           "scheduler  | Starting the scheduler\n")
    with pytest.raises(AirflowComponentsError) as caught:
        airflow.wait_ready(["drift_monitor"], timeout_s=1)
    message = str(caught.value)
    assert str(airflow.log) in message and "Starting the scheduler" in message
    assert "s3cretXYZ" not in message and "Password for user 'admin': ***" in message

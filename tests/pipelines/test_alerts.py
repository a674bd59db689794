"""The DAGs' notifier: which outcomes make a message, and the webhook channel against a real HTTP
receiver on loopback (the DAG runs that send them: tests/integration/test_dag_runs.py)."""

from __future__ import annotations

import email
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.integration.mail_receiver import MailReceiver
from tests.integration.webhook_receiver import Receiver


@pytest.fixture
def alerts(airflow_home: Any) -> Any:
    """The module, imported once Airflow is configured for the tests (see tests/conftest.py)."""
    from pipelines.dags import alerts

    return alerts


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    found = Receiver()
    monkeypatch.setenv("AIRFLOW_CONN_TIDEMARK_WEBHOOK", json.dumps({"conn_type": "http", "host": found.url}))
    yield found
    found.close()


def _context(returned: Any = None, **ti: Any) -> dict[str, Any]:
    """What a task callback gets, as far as the events read it."""
    fields = {"dag_id": "drift_monitor", "task_id": "request_retrain", "try_number": 1, "map_index": -1,
              "run_id": "scheduled__2026-12-07T10:00:00+00:00", "log_url": "http://airflow/log", **ti}
    instance = SimpleNamespace(**fields, xcom_pull=lambda **_: returned)
    return {"ti": instance, "run_id": fields["run_id"]}


def test_the_webhook_gets_slack_compatible_json(alerts: Any, receiver: Receiver):
    summary = {"decision": "drift", "model": "m", "champion_version": "3", "interval_start": "a", "interval_end": "b",
               "reasons": ["inputs: 2 of 5 columns drifted"], "drifted_columns": ["x", "y"], "report_dir": "/r",
               "mlflow_run_id": "abc"}
    alerts.TidemarkNotifier(alerts.drift_found)(_context(summary))
    (body,) = receiver.bodies
    assert list(body) == ["text"]
    assert body["text"].startswith("tidemark: drift in m (champion v3), a .. b: retrain requested")
    assert "- inputs: 2 of 5 columns drifted" in body["text"] and "drifted columns: x, y" in body["text"]
    assert "log: http://airflow/log" in body["text"]


def test_outcomes_that_need_no_one_send_nothing(alerts: Any, receiver: Receiver):
    notifier = alerts.TidemarkNotifier
    notifier(alerts.drift_found)(_context({"decision": "no_drift"}))
    notifier(alerts.gate_refused)(_context({"gate_passed": True, "version": "4"}))
    notifier(alerts.canary_decided)(_context({"action": "hold", "reasons": []}))
    notifier(alerts.canary_decided)(_context({"action": "advance", "reasons": []}))
    assert receiver.bodies == []
    notifier(alerts.gate_refused)(_context({"gate_passed": False, "version": "4", "model": "m",
                                             "gate_reason": "pr_auc 0.41 < champion 0.47 - margin 0.02"}))
    notifier(alerts.canary_decided)(_context({"action": "rollback", "model": "m", "reasons": ["errors: 6% vs 0%"]}))
    texts = [b["text"] for b in receiver.bodies]
    assert texts[0].startswith("tidemark: the gate refused m challenger v4: pr_auc 0.41")
    assert texts[1].startswith("tidemark: the canary of m rolled back\n- errors: 6% vs 0%")


def test_a_failed_task_names_the_dag_the_task_and_the_error(alerts: Any, receiver: Receiver):
    context = _context(dag_id="feature_pipeline", task_id="build_features", try_number=3)
    context["exception"] = ValueError("5 negative amounts")
    alerts.TidemarkNotifier(alerts.task_failed)(context)
    (body,) = receiver.bodies
    assert body["text"].startswith("tidemark: feature_pipeline.build_features failed (try 3): ValueError: 5 negative")


def test_a_broken_channel_is_logged_and_never_raises(alerts: Any, receiver: Receiver, caplog: pytest.LogCaptureFixture):
    receiver.status = 500
    alerts.TidemarkNotifier(alerts.task_failed)(_context())  # the task's outcome must not change because of this
    assert len(receiver.bodies) == 1
    assert "could not send a notification by webhook" in caplog.text and "500" in caplog.text


def test_without_connections_nothing_is_sent(alerts: Any, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture):
    monkeypatch.delenv("AIRFLOW_CONN_TIDEMARK_WEBHOOK", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_TIDEMARK_SMTP", raising=False)
    alerts.TidemarkNotifier(alerts.task_failed)(_context())
    assert "could not send" not in caplog.text


@pytest.mark.parametrize(("connection", "url"), [
    ({"host": "https://hooks.slack.com/services/T/B/X"}, "https://hooks.slack.com/services/T/B/X"),
    ({"host": "ignored", "extra": json.dumps({"url": "https://chat.example/hook"})}, "https://chat.example/hook"),
    ({"host": "chat.example", "port": 8443, "schema": "https"}, "https://chat.example:8443"),
    ({"host": "chat.example"}, "https://chat.example"),
])
def test_the_webhook_url_comes_from_the_connection(alerts: Any, connection: dict[str, Any], url: str):
    from airflow.sdk import Connection

    assert alerts.webhook_url(Connection(conn_id="tidemark_webhook", conn_type="http", **connection)) == url


def test_the_mail_channel_sends_through_airflows_smtp_provider(alerts: Any, receiver: Receiver,
                                                               monkeypatch: pytest.MonkeyPatch):
    """Both channels configured: the webhook and a real SMTP server on loopback get the message."""
    mail = MailReceiver()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_TIDEMARK_SMTP", json.dumps({
            "conn_type": "smtp", "host": "127.0.0.1", "port": mail.port,
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.com",
                      "to": "ml-team@example.com, oncall@example.com", "timeout": 10, "retry_limit": 0}}))
        alerts.TidemarkNotifier(alerts.gate_refused)(_context({"gate_passed": False, "version": "7", "model": "m",
                                                               "gate_reason": "pr_auc <0.41> below"}))
    finally:
        mail.stop()
    (sender, recipients, text), = mail.messages
    assert sender == "airflow@example.com" and sorted(recipients) == ["ml-team@example.com", "oncall@example.com"]
    message = email.message_from_string(text)
    assert message["Subject"].startswith("tidemark: the gate refused m challenger v7")
    (html,) = [part.get_payload(decode=True).decode() for part in message.walk() if part.get_content_type() == "text/html"]
    assert html.startswith("<pre>tidemark: the gate refused") and "pr_auc &lt;0.41&gt; below" in html
    assert [b["text"].split("\n")[0] for b in receiver.bodies] == [
        "tidemark: the gate refused m challenger v7: pr_auc <0.41> below; the champion stays"]

"""Who hears what the four DAGs do: one Airflow notifier on their callbacks, two channels.

    event                          callback
    ─────────────────────────────  ───────────────────────────────────────────────────────────────
    a task's last try failed       every DAG's ``on_failure_callback`` (``default_args``)
    drift found                    ``drift_monitor.request_retrain`` succeeded (it runs only on drift)
    a gate refused a challenger    ``retrain.train_and_gate`` succeeded with ``gate_passed`` false
    a canary rolled back/promoted  ``canary_rollout.step`` succeeded with that action

Channels, each on when its Airflow Connection exists (configure them in the UI, ``airflow
connections add``, or ``AIRFLOW_CONN_<ID>`` variables, like any provider's):

``tidemark_webhook``
    Slack-compatible JSON (``{"text": …}``) POSTed to the connection's URL: its ``extra``'s
    ``url``, else its host when that holds a whole URL (``https://hooks.slack.com/services/…``),
    else ``schema://host:port``. Slack's incoming webhooks, Mattermost, Rocket.Chat and most chat
    tools take it. ``extra``'s ``timeout_s`` (default 10) bounds the call.
``tidemark_smtp``
    E-mail through Airflow's SMTP provider (:class:`~airflow.providers.smtp.notifications.smtp.SmtpNotifier`)
    with the connection's host, port and login; the recipients are its ``extra``'s ``to`` (a
    comma-separated string or a list) and the sender its ``from_email``.

A channel that fails (the webhook answers 500, the mail server is down) is logged as an error and
the other channel still gets the message; the task's own outcome never changes because of a
notification. Nothing is sent, and nothing is logged above debug, when neither connection exists.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier

from pipelines.dags.common import defined_connection

__all__ = ["SMTP_CONN_ID", "WEBHOOK_CONN_ID", "TidemarkNotifier", "canary_decided", "drift_found", "gate_refused",
           "on_failure", "task_failed"]

log = logging.getLogger(__name__)

WEBHOOK_CONN_ID = "tidemark_webhook"
SMTP_CONN_ID = "tidemark_smtp"
_DEFAULT_TIMEOUT_S = 10.0

Event = Callable[[Mapping[str, Any]], str | None]


class TidemarkNotifier(BaseNotifier):
    """Sends ``event(context)``'s message, when it has one, to every configured channel."""

    def __init__(self, event: Event, *, webhook_conn_id: str = WEBHOOK_CONN_ID, smtp_conn_id: str = SMTP_CONN_ID) -> None:
        super().__init__()
        self.event = event
        self.webhook_conn_id = webhook_conn_id
        self.smtp_conn_id = smtp_conn_id

    def notify(self, context: Any) -> None:
        message = self.event(context)
        if message is None:
            return
        for name, send in (("webhook", self._webhook), ("smtp", self._smtp)):
            try:
                send(message, context)
            except Exception:  # one channel's failure must not silence the other, nor fail the task
                log.exception("tidemark could not send a notification by %s: %s", name, message.splitlines()[0])

    def _webhook(self, message: str, context: Any) -> None:
        connection = defined_connection(self.webhook_conn_id)
        if connection is None:
            return
        extra = connection.extra_dejson or {}
        request = urllib.request.Request(webhook_url(connection), data=json.dumps({"text": message}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=float(extra.get("timeout_s", _DEFAULT_TIMEOUT_S))) as answer:
            answer.read()  # urlopen raises HTTPError for a 4xx/5xx answer

    def _smtp(self, message: str, context: Any) -> None:
        connection = defined_connection(self.smtp_conn_id)
        if connection is None:
            return
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        extra = connection.extra_dejson or {}
        to = extra.get("to")
        if not to:
            raise ValueError(f"the {self.smtp_conn_id} connection names no recipients: set its extra's \"to\"")
        SmtpNotifier(to=to, from_email=extra.get("from_email"), smtp_conn_id=self.smtp_conn_id,
                     subject=message.partition("\n")[0], html_content=f"<pre>{_escape(message)}</pre>").notify(context)


def webhook_url(connection: Any) -> str:
    """The URL a webhook connection names (see the module docstring)."""
    extra = connection.extra_dejson or {}
    if extra.get("url"):
        return str(extra["url"])
    host = str(connection.host or "")
    if "://" in host:
        return host
    if not host:
        raise ValueError(f"the {connection.conn_id} connection has no URL: put it in the host field or extra's \"url\"")
    port = f":{connection.port}" if connection.port else ""
    return f"{connection.schema or 'https'}://{host}{port}"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _returned(context: Mapping[str, Any]) -> Any:
    """What the task of ``context`` returned (its XCom)."""
    ti = context["ti"]
    index = getattr(ti, "map_index", -1)
    if index is not None and index >= 0:  # one instance of a mapped task (drift_monitor: one per model)
        return ti.xcom_pull(task_ids=ti.task_id, key="return_value", map_indexes=index)
    return ti.xcom_pull(task_ids=ti.task_id, key="return_value")


def _where(context: Mapping[str, Any]) -> str:
    ti = context["ti"]
    log_url = getattr(ti, "log_url", None)
    return f"run {context.get('run_id') or ti.run_id}" + (f"\nlog: {log_url}" if log_url else "")


# -- events: a message, or None when the outcome is not worth a person's attention --------------

def task_failed(context: Mapping[str, Any]) -> str | None:
    ti = context["ti"]
    error = context.get("exception")
    return (f"tidemark: {ti.dag_id}.{ti.task_id} failed (try {ti.try_number})"
            + (f": {type(error).__name__}: {error}" if error else "") + f"\n{_where(context)}")


def drift_found(context: Mapping[str, Any]) -> str | None:
    summary = _returned(context) or {}
    if summary.get("decision") != "drift":
        return None
    columns = summary.get("drifted_columns") or []
    return (f"tidemark: drift in {summary.get('model')} (champion v{summary.get('champion_version')}), "
            f"{summary.get('interval_start')} .. {summary.get('interval_end')}: retrain requested\n"
            + "\n".join(f"- {reason}" for reason in summary.get("reasons", []))
            + (f"\ndrifted columns: {', '.join(columns)}" if columns else "")
            + (f"\nreport: {summary['report_dir']}" if summary.get("report_dir") else "")
            + (f"\nMLflow run: {summary['mlflow_run_id']}" if summary.get("mlflow_run_id") else "")
            + f"\n{_where(context)}")


def gate_refused(context: Mapping[str, Any]) -> str | None:
    outcome = _returned(context) or {}
    if outcome.get("gate_passed", True):
        return None
    return (f"tidemark: the gate refused {outcome.get('model') or 'the'} challenger v{outcome.get('version')}: "
            f"{outcome.get('gate_reason')}; the champion stays\n{_where(context)}")


def canary_decided(context: Mapping[str, Any]) -> str | None:
    outcome = _returned(context) or {}
    action = outcome.get("action")
    if action == "rollback":
        what = "rolled back"
    elif action == "promoted":
        what = "promoted: the challenger is the champion"
    else:
        return None
    return (f"tidemark: the canary of {outcome.get('model')} {what}\n"
            + "\n".join(f"- {reason}" for reason in outcome.get("reasons", [])) + f"\n{_where(context)}")


def on_failure() -> list[TidemarkNotifier]:
    """Every DAG's ``on_failure_callback`` (in its ``default_args``: a task's last try failed)."""
    return [TidemarkNotifier(task_failed)]

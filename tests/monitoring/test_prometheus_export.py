"""A drift run's metrics: the node_exporter textfile parses and holds the run's numbers, is replaced
whole, and the Pushgateway gets the same metrics by PUT (a real HTTP server on loopback); a
monitoring system that is away never fails the run."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitoring.drift import DriftReport, ReferenceProfile, compare
from monitoring.prometheus_export import DRIFT_METRICS, DriftRun, publish, push, textfile_path, write_textfile

ROWS = 2_000
MODEL = "team-model"


@pytest.fixture(scope="module")
def report() -> DriftReport:
    """Three columns, one of which drifts (its mean moves by a standard deviation)."""
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"a": rng.normal(0, 1, ROWS), "b": rng.normal(5, 2, ROWS),
                              "kind": rng.choice(["x", "y"], ROWS)})
    current = reference.assign(a=rng.normal(1, 1, ROWS))
    found = compare(ReferenceProfile.fit(reference), current)
    assert found.drifted_columns == ["a"]
    return found


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted({"model": MODEL, **labels}.items())))]


def test_the_textfile_holds_the_runs_share_columns_and_decision(report: DriftReport, tmp_path: Path) -> None:
    run = DriftRun(MODEL, "drift", rows=ROWS, share_threshold=0.2, finished_at=1_765_000_000.0, report=report)
    path = write_textfile(run, tmp_path / "prom")
    assert path == tmp_path / "prom" / "tidemark_drift_team-model.prom"
    samples = _samples(path.read_text())
    assert _value(samples, "tidemark_drift_share") == pytest.approx(report.drift_share) == pytest.approx(1 / 3)
    assert _value(samples, "tidemark_drift_columns") == 3 and _value(samples, "tidemark_drift_columns_drifted") == 1
    assert _value(samples, "tidemark_drift_share_threshold") == 0.2 and _value(samples, "tidemark_drift_rows") == ROWS
    assert _value(samples, "tidemark_drift_last_run_timestamp_seconds") == 1_765_000_000.0
    assert {d: _value(samples, "tidemark_drift_decision", decision=d) for d in ("drift", "no_drift", "insufficient_data")} \
        == {"drift": 1.0, "no_drift": 0.0, "insufficient_data": 0.0}
    for column in report.columns:
        assert _value(samples, "tidemark_drift_statistic", column=column.column, test="psi") == pytest.approx(column.psi)
        assert _value(samples, "tidemark_drift_statistic", column=column.column, test=column.test) \
            == pytest.approx(column.statistic)
        assert _value(samples, "tidemark_drift_column_drifted", column=column.column) == float(column.drifted)
    assert {name for name, _ in samples} == {name for name, _, _ in DRIFT_METRICS}  # the declared list is complete
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_a_run_without_enough_rows_exports_no_share(tmp_path: Path) -> None:
    run = DriftRun(MODEL, "insufficient_data", rows=12, share_threshold=0.2, finished_at=1.0)
    samples = _samples(write_textfile(run, tmp_path).read_text())
    assert not any(name in {"tidemark_drift_share", "tidemark_drift_statistic"} for name, _ in samples)
    assert _value(samples, "tidemark_drift_decision", decision="insufficient_data") == 1.0
    assert _value(samples, "tidemark_drift_rows") == 12


def test_the_next_run_replaces_the_file_and_models_keep_their_own(report: DriftReport, tmp_path: Path) -> None:
    write_textfile(DriftRun(MODEL, "drift", ROWS, 0.2, 1.0, report), tmp_path)
    write_textfile(DriftRun(MODEL, "no_drift", 700, 0.2, 2.0), tmp_path)
    write_textfile(DriftRun("other/model", "no_drift", 5, 0.2, 3.0), tmp_path)
    samples = _samples(textfile_path(tmp_path, MODEL).read_text())
    assert _value(samples, "tidemark_drift_rows") == 700 and "tidemark_drift_share" not in {n for n, _ in samples}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tidemark_drift_other_model.prom", "tidemark_drift_team-model.prom"]


class _Gateway(BaseHTTPRequestHandler):
    """A Pushgateway's push endpoint: records each request, answers 200 (or ``status``)."""

    requests: ClassVar[list[tuple[str, str, bytes]]] = []
    status: ClassVar[int] = 200

    def _record(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).requests.append((self.command, self.path, body))
        self.send_response(self.status)
        self.end_headers()

    do_PUT = do_POST = _record

    def log_message(self, *args: object) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, type[_Gateway]]]:
    handler = type("Gateway", (_Gateway,), {"requests": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_push_puts_the_run_in_its_models_group(report: DriftReport, gateway: tuple[str, type[_Gateway]]) -> None:
    url, handler = gateway
    push(DriftRun(MODEL, "drift", ROWS, 0.2, 5.0, report), url)
    [(method, path, body)] = handler.requests
    assert (method, path) == ("PUT", f"/metrics/job/tidemark_drift/model/{MODEL}")  # PUT: replaces the group
    samples = _samples(body.decode())
    assert _value(samples, "tidemark_drift_share") == pytest.approx(report.drift_share)


def test_publish_warns_and_goes_on_when_the_gateway_fails(report: DriftReport, gateway: tuple[str, type[_Gateway]],
                                                          tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url, handler = gateway
    handler.status = 500
    run = DriftRun(MODEL, "drift", ROWS, 0.2, 5.0, report)
    with caplog.at_level(logging.WARNING, logger="monitoring.prometheus_export"):
        problems = publish(run, textfile_dir=tmp_path, pushgateway_url=url)
    assert len(handler.requests) == 1 and len(problems) == 1 and "Pushgateway failed" in problems[0]
    assert "Pushgateway failed" in caplog.text and "the drift run itself succeeded" in caplog.text
    assert textfile_path(tmp_path, MODEL).exists()  # the textfile does not depend on the push


def test_publish_survives_an_unreachable_gateway_and_an_unwritable_folder(tmp_path: Path) -> None:
    closed = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    port = closed.server_address[1]
    closed.server_close()  # nothing listens there now
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    problems = publish(DriftRun(MODEL, "no_drift", 1, 0.2, 1.0), textfile_dir=blocker,
                       pushgateway_url=f"http://127.0.0.1:{port}")
    assert [p.split(" failed")[0] for p in problems] == [
        f"writing the drift metrics under {blocker}", f"pushing the drift metrics of {MODEL!r} to the Pushgateway"]


def test_no_textfile_dir_and_no_gateway_do_nothing(tmp_path: Path) -> None:
    assert publish(DriftRun(MODEL, "no_drift", 1, 0.2, 1.0), textfile_dir=None, pushgateway_url=None) == []

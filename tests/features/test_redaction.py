"""Credentials never reach a message or a log line: the one redaction helper."""

from __future__ import annotations

import logging

import pytest

from features.redaction import RedactingFilter, redact, redact_url

SECRET = "hunter2"


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://default:hunter2@10.0.0.5:6379/0", "redis://default:***@10.0.0.5:6379/0"),
    ("redis://:hunter2@10.0.0.5:6379", "redis://:***@10.0.0.5:6379"),
    ("rediss://u:hunter2@h:6380/1?ssl_cert_reqs=none", "rediss://u:***@h:6380/1?ssl_cert_reqs=none"),
    ("postgresql+psycopg://mlflow:hunter2@db:5432/mlflow", "postgresql+psycopg://mlflow:***@db:5432/mlflow"),
    ("redis://10.0.0.5:6379/0?password=hunter2&db=1", "redis://10.0.0.5:6379/0?password=***&db=1"),
    ("10.0.0.5:6379,db=0,ssl=true,password=hunter2", "10.0.0.5:6379,db=0,ssl=true,password=***"),
    ("redis://10.0.0.5:6379/0", "redis://10.0.0.5:6379/0"),
    ("sqlite:////tmp/home/mlflow.db", "sqlite:////tmp/home/mlflow.db"),
])
def test_urls_keep_where_and_lose_the_secret(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert SECRET not in redact_url(url)


def test_text_quoting_several_urls_is_redacted_everywhere() -> None:
    text = ("Redis at redis://default:hunter2@a:1/0 failed (ConnectionError: Error connecting to "
            "redis://x:hunter2@b:2); tracking store postgresql://m:hunter2@db/m")
    assert SECRET not in redact(text)
    assert redact(text).count("***") == 3 and "a:1/0" in redact(text)


def test_the_filter_redacts_messages_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.redaction")
    handler = caplog.handler
    handler.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="tests.redaction"):
            logger.info("connecting to %s", "redis://default:hunter2@h:6379/0")
            try:
                raise RuntimeError("could not reach redis://default:hunter2@h:6379/0")
            except RuntimeError:
                logger.exception("failed")
        formatted = "\n".join(handler.format(r) for r in caplog.records)
    finally:
        handler.removeFilter(handler.filters[-1])
    assert SECRET not in formatted
    assert "redis://default:***@h:6379/0" in formatted and "RuntimeError" in formatted

"""Credentials out of anything a person or a client can read: URLs, messages, log lines.

Every place that formats a connection string (a Redis URL, an MLflow tracking URI, a Spark
Connect URL) calls :func:`redact_url`; text that may quote one (an exception from a client
library, a log record) goes through :func:`redact`. Both keep the host, port, database and
user, so a message still says *where*, and replace the secret with ``***``::

    redis://default:hunter2@10.0.0.5:6379/0        -> redis://default:***@10.0.0.5:6379/0
    postgresql://mlflow:pw@db/mlflow?sslmode=require -> postgresql://mlflow:***@db/mlflow?sslmode=require
    redis://10.0.0.5:6379/0?password=hunter2       -> redis://10.0.0.5:6379/0?password=***
    10.0.0.5:6379,db=0,password=hunter2            -> 10.0.0.5:6379,db=0,password=***   (Feast's form)
"""

from __future__ import annotations

import logging
import re
from typing import Final

__all__ = ["RedactingFilter", "redact", "redact_url"]

MASK: Final = "***"

# scheme://user:secret@host  (the user part may be empty: redis://:secret@host)
_USERINFO: Final = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<secret>[^\s@/]*)(?=@)")
# password=secret in a query string or in Feast's "host:port,password=…" connection string
_KEYED: Final = re.compile(r"(?P<head>(?:\b|_)(?:password|passwd|pwd|secret|token|access_key|secret_key)=)"
                           r"(?P<secret>[^\s&,;'\"]+)", re.IGNORECASE)


def redact_url(url: str | None) -> str:
    """``url`` with any password (in its user part or as a ``password=`` parameter) masked."""
    return "" if url is None else redact(url)


def redact(text: str) -> str:
    """``text`` with every credential of a URL or ``key=value`` secret in it masked."""
    if "@" not in text and "=" not in text:  # the common case: nothing that could hold a secret
        return text
    text = _USERINFO.sub(lambda m: m.group("head") + MASK, text)
    return _KEYED.sub(lambda m: m.group("head") + MASK, text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks credentials in every record that passes through its handler,
    whichever library wrote it (``tidemark serve`` installs it on the root handlers): the
    message is formatted once, redacted, and the record's arguments dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True

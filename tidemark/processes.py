"""Child processes that start their own workers: stopped as a group."""

from __future__ import annotations

import os
import signal
import subprocess

__all__ = ["stop_group"]


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """Stop ``proc`` and every process of its group (started with ``start_new_session=True``):
    SIGTERM, then SIGKILL after ``grace_s``. Nothing to do when it has already gone."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass

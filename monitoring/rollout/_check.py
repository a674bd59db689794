"""The rollout statistics' argument check: bad arguments raise ``ValueError`` saying which."""

from __future__ import annotations


def check(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``."""
    if not ok:
        raise ValueError(message)

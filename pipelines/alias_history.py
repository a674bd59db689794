"""Alias history: every move of ``champion``, ``challenger`` and ``previous-champion``, kept on the
registered model itself (MLflow keeps none: mlflow/mlflow#2169), so the MLflow UI shows it.

    registered model "fraud-detector"
    ├── tag  tidemark.alias_history.000001  {"at":"…Z","alias":"challenger","version":"1",…}
    ├── tag  tidemark.alias_history.000002  {"at":"…Z","alias":"champion","version":"1",…}
    └── description  <the model's own text>
                     <!-- tidemark:alias-history -->   + a Markdown table of the last 20 moves

One tag per move, keyed by a zero-padded sequence number (so the UI lists them in order), valued
compact JSON: ``at`` (UTC), ``alias``, ``version`` (None: the alias was deleted), ``previous``
(who held it before), ``action`` (register, promote, rollback, canary-rollback, …), ``actor``
(``airflow:<dag>/<run>/<task>`` inside an Airflow task, else ``user:<os user>``) and ``reason``
(gate verdict, canary evidence, rollback reason). ``canary-rollback`` records a canary that ended
without moving an alias (the challenger keeps it, version == previous).

Append-only: an entry is never rewritten; the next number is one past the highest stored. The
registry has no compare-and-set, so two writers at the same moment can pick the same number and
the later one overwrites the earlier entry. Alias moves of one model are meant to run one at a
time (the canary DAG runs with ``max_active_runs=1``; ``promote`` re-reads the champion just
before moving it), which is what keeps the sequence whole.

Sizes: MLflow's SQL schema stores a registered model's tag values and its description as
VARCHAR(5000) (PostgreSQL and MySQL enforce it; SQLite does not), so an entry is kept under
:data:`MAX_ENTRY_CHARS` (the reason is shortened) and the description under
:data:`MAX_DESCRIPTION_CHARS` (fewer table rows).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["MAX_DESCRIPTION_CHARS", "MAX_ENTRY_CHARS", "PREFIX", "AliasMove", "Move", "actor", "describe",
           "read", "record", "rollback_target"]

log = logging.getLogger(__name__)

PREFIX = "tidemark.alias_history."
MAX_ENTRY_CHARS = 4_000        # under VARCHAR(5000) of registered_model_tags.value
MAX_DESCRIPTION_CHARS = 4_900  # under VARCHAR(5000) of registered_models.description
TABLE_ROWS = 20
MARKER = "<!-- tidemark:alias-history -->"
_DIGITS = 6
_CHAMPION = "champion"


@dataclass(frozen=True)
class Move:
    """One alias change to record: ``alias`` now points at ``version`` (None: deleted); ``previous``
    held it before (None: nobody)."""

    alias: str
    version: str | None
    previous: str | None


@dataclass(frozen=True)
class AliasMove:
    """One recorded entry of the history."""

    seq: int
    at: str                   # UTC, ISO 8601
    alias: str
    version: str | None
    previous: str | None
    action: str
    actor: str
    reason: str

    def to_json(self) -> str:
        """The tag value: compact JSON, the reason shortened to stay under :data:`MAX_ENTRY_CHARS`."""
        body = {"at": self.at, "alias": self.alias, "version": self.version, "previous": self.previous,
                "action": self.action, "actor": self.actor, "reason": self.reason}
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        reason = self.reason
        while len(text) > MAX_ENTRY_CHARS and reason:  # escapes make the JSON longer than the text: loop
            reason = reason[:max(0, len(reason) - (len(text) - MAX_ENTRY_CHARS) - 1)]
            body["reason"] = reason + "…"
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        return text

    @classmethod
    def from_tag(cls, key: str, value: str) -> AliasMove:
        """Parse one ``tidemark.alias_history.NNNNNN`` tag; ValueError if it isn't one."""
        body: dict[str, Any] = json.loads(value)
        if not isinstance(body, dict):
            raise TypeError(f"{key}: not a JSON object")
        return cls(int(key[len(PREFIX):]), str(body["at"]), str(body["alias"]), _opt(body.get("version")),
                   _opt(body.get("previous")), str(body.get("action", "")), str(body.get("actor", "")),
                   str(body.get("reason", "")))

    def as_dict(self) -> dict[str, Any]:
        """The entry with its sequence number, for JSON output."""
        return {"seq": self.seq, **json.loads(self.to_json())}


def actor() -> str:
    """Who moves an alias now: the Airflow DAG run and task when run as an Airflow task (Airflow
    exports ``AIRFLOW_CTX_*`` to a task's environment), else the OS user."""
    dag, run, task = (os.environ.get(f"AIRFLOW_CTX_{k}") for k in ("DAG_ID", "DAG_RUN_ID", "TASK_ID"))
    if dag and run:
        return f"airflow:{dag}/{run}" + (f"/{task}" if task else "")
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "user:unknown"


def read(client: MlflowClient, name: str) -> list[AliasMove]:
    """The model's alias history, oldest first (entries that don't parse are skipped, with a warning)."""
    return _parse(client.get_registered_model(name).tags)


def record(client: MlflowClient, name: str, moves: Sequence[Move], *, action: str, reason: str = "") -> list[AliasMove]:
    """Append ``moves`` (one operation: same time, actor and reason) to ``name``'s history, then
    refresh the table in its description. Call after the aliases moved: the history says what happened."""
    model = client.get_registered_model(name)
    seqs = [int(k[len(PREFIX):]) for k in model.tags if k.startswith(PREFIX) and k[len(PREFIX):].isdigit()]
    first = max(seqs, default=0) + 1
    at, who = datetime.now(UTC).isoformat(timespec="seconds"), actor()
    added = [AliasMove(first + i, at, m.alias, m.version, m.previous, action, who, reason) for i, m in enumerate(moves)]
    for entry in added:
        client.set_registered_model_tag(name, f"{PREFIX}{entry.seq:0{_DIGITS}d}", entry.to_json())
    history = _parse(model.tags) + added
    client.update_registered_model(name, description=describe(model.description or "", history))
    return added


def describe(description: str, history: Sequence[AliasMove]) -> str:
    """``description`` (its own text, before any earlier table) followed by a Markdown table of the
    newest moves, as many of the last :data:`TABLE_ROWS` as fit :data:`MAX_DESCRIPTION_CHARS`."""
    own = description.split(MARKER, 1)[0].rstrip()
    rows = [_row(m) for m in reversed(history[-TABLE_ROWS:])]
    head = f"{MARKER}\n**Alias history** (newest first; every move: `tidemark models history`)\n\n" \
           "| # | time (UTC) | alias | version | was | action | actor | reason |\n|---|---|---|---|---|---|---|---|\n"
    while rows:
        text = f"{own}\n\n{head}" + "\n".join(rows) if own else head + "\n".join(rows)
        if len(text) <= MAX_DESCRIPTION_CHARS:
            return text
        rows.pop()
    return own[:MAX_DESCRIPTION_CHARS]


def rollback_target(history: Sequence[AliasMove], current: str | None) -> str | None:
    """The version a rollback restores when ``previous-champion`` is gone (a first rollback deletes
    it): the newest champion in ``history`` that is not ``current`` and whose last time as champion
    did not end in a rollback. So each further rollback steps one healthy champion further back,
    never forward to a version production already rejected; a rolled-back version that was later
    promoted again (with a fresh gate) and then replaced by a promotion counts as healthy again.
    None: no such version."""
    ended_by_rollback: dict[str, bool] = {}
    for move in history:  # oldest first: the last tenure of each version decides
        if move.alias != _CHAMPION:
            continue
        if move.previous is not None and move.previous != move.version:
            ended_by_rollback[move.previous] = move.action == "rollback"
        if move.version is not None:
            ended_by_rollback.pop(move.version, None)  # champion again: its tenure is open
    for move in reversed(history):
        if move.alias == _CHAMPION and move.version is not None and move.version != current \
                and ended_by_rollback.get(move.version) is False:
            return move.version
    return None


def _parse(tags: dict[str, str]) -> list[AliasMove]:
    out = []
    for key in sorted(k for k in tags if k.startswith(PREFIX)):
        try:
            out.append(AliasMove.from_tag(key, tags[key]))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("alias history entry %s unreadable, skipped: %s", key, exc)
    return sorted(out, key=lambda m: m.seq)


def _row(m: AliasMove) -> str:
    reason = m.reason if len(m.reason) <= 80 else m.reason[:79] + "…"
    cells = [str(m.seq), m.at.replace("+00:00", ""), m.alias, m.version or "(deleted)", m.previous or "-", m.action,
             m.actor, reason]
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)

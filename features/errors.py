"""Errors raised by the feature store.

    TidemarkError                       (tidemark.errors, the shared kernel)
    ├── ConfigError                     (tidemark.errors) a setting is missing or invalid
    └── FeatureStoreError
        ├── ConfigError                 the feature store's configuration is bad or missing
        │   │                           (also a tidemark.errors.ConfigError)
        │   └── UnresolvedEntityError   a view's entity is not registered yet: no join keys
        ├── DataNotFoundError           raw data or an offline table is missing
        ├── EntityFrameError            the entity dataframe is unusable
        │   ├── MissingColumnError      a join key or the timestamp column is absent
        │   └── TimestampTypeError      a timestamp column holds something else
        ├── EventError                  a pushed event is unusable (names the row and column)
        ├── UnknownPushSourceError      a push names a push source no stream view reads
        ├── UnknownFeatureError         a feature reference is not registered
        ├── UnknownFeatureServiceError  a FeatureService name is not registered
        ├── PartitionCommitError        a partitioned write could not be committed
        ├── OfflineWriteError           rows written to a view's source do not fit it
        ├── DataCheckError              a feature build's input or output broke a data check
        └── OnlineStoreError            the online store (Redis) failed a read or a write
            ├── OnlineStoreUnavailable  Redis is down, unreachable or slower than the timeout
            └── CorruptValueError       a stored value is not a well-formed tidemark value

Every message says what was wrong and what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from tidemark import errors as kernel
from tidemark.errors import TidemarkError

__all__ = ["ConfigError", "CorruptValueError", "DataCheckError", "DataNotFoundError", "EntityFrameError", "EventError",
           "FeatureStoreError", "MissingColumnError", "OfflineWriteError", "OnlineStoreError", "OnlineStoreUnavailable",
           "PartitionCommitError", "TidemarkError", "TimestampTypeError", "UnknownFeatureError",
           "UnknownFeatureServiceError", "UnknownPushSourceError"]


class FeatureStoreError(TidemarkError):
    """Root of the feature store's errors."""


class ConfigError(FeatureStoreError, kernel.ConfigError):
    """The feature store's configuration is missing or invalid (a Feast definition it can't serve,
    no redis-server to start, a bad date range). Both a :class:`FeatureStoreError` (callers that
    fall back when the store fails keep doing so) and a :class:`tidemark.errors.ConfigError`.
    ``TidemarkError`` is re-exported here from :mod:`tidemark.errors`, where it now lives."""


class UnresolvedEntityError(ConfigError):
    """A feature view names an entity that neither its ``apply`` call nor the registry defines, so
    its join keys (which key its online values) are unknown. ``feast apply`` accepts such a view;
    the online store registers it, and can store its values, once the entity is applied."""


class DataNotFoundError(FeatureStoreError):
    """Raw data or an offline feature table that a job needs does not exist."""


class EntityFrameError(FeatureStoreError):
    """The entity dataframe passed to a point-in-time join cannot be used."""


class MissingColumnError(EntityFrameError):
    """A join key or the event timestamp column is missing from the entity dataframe."""


class TimestampTypeError(EntityFrameError):
    """A column that must hold timestamps holds something else."""


class EventError(FeatureStoreError):
    """A pushed event cannot be stored: a join key, the event time or an aggregated value is
    missing, of the wrong type, NaN, or too far in the future. Nothing of the push was stored;
    ``row`` and ``column`` say where (row: position in the pushed rows)."""

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None) -> None:
        where = f"row {row}, column {column!r}: " if row is not None and column else (
            f"column {column!r}: " if column else "")
        super().__init__(f"{where}{message}. Nothing of this push was stored; fix the rows and push again "
                         "(a retry is safe: events count once per event id)")
        self.row = row
        self.column = column


class DataCheckError(FeatureStoreError):
    """Raw data of an interval or the feature rows built from it broke a data check (schema,
    nulls, ranges); nothing of the interval was published. ``failures``: one line per rule."""

    def __init__(self, message: str, failures: list[str] | None = None) -> None:
        super().__init__(message)
        self.failures = list(failures or [])


def _near(name: str, known: Iterable[str]) -> tuple[list[str], list[str], str]:
    """Known names sorted, the up to 3 close to ``name``, and the "did you mean" hint for them."""
    ordered = sorted(known)
    near = difflib.get_close_matches(name, ordered, n=3, cutoff=0.5)
    return ordered, near, (f"did you mean {', '.join(repr(n) for n in near)}? " if near else "")


class UnknownFeatureError(FeatureStoreError):
    """A feature reference names a feature view or feature that is not registered."""

    def __init__(self, reference: str, known: Iterable[str]) -> None:
        known, near, hint = _near(reference, known)
        shown = ", ".join(known[:20]) + (" …" if len(known) > 20 else "")
        super().__init__(
            f"unknown feature {reference!r}; {hint}known: {shown}. "
            "References look like 'feature_view:feature'; run `tidemark features list` to see them all."
        )
        self.reference = reference
        self.near_matches = near


class UnknownFeatureServiceError(FeatureStoreError):
    """A FeatureService name is not registered in the Feast repo."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known, near, hint = _near(name, known)
        super().__init__(f"unknown feature service {name!r}; {hint}known: {', '.join(known) or 'none'}. "
                         "Define it in the Feast repo (FeatureService(name=..., features=[...])) and apply it, "
                         "or pass 'view:feature' references instead")
        self.name = name
        self.near_matches = near


class UnknownPushSourceError(FeatureStoreError):
    """A push names a push source that no registered stream feature view reads."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known, near, hint = _near(name, known)
        super().__init__(f"no stream feature view reads push source {name!r}; {hint}known: "
                         f"{', '.join(known) or 'none'}. Declare a StreamFeatureView over it and apply it")
        self.name = name
        self.near_matches = near


class PartitionCommitError(FeatureStoreError):
    """A staged partitioned write could not be moved into place."""


class OfflineWriteError(FeatureStoreError):
    """Rows written to a feature view's offline source (push, ``write_to_offline_store``) do not
    fit it: other columns or types than the source's, or a source that is not a Parquet path."""


class OnlineStoreError(FeatureStoreError):
    """The online store failed a read or a write."""


class OnlineStoreUnavailable(OnlineStoreError):
    """Redis did not answer within the configured timeout (down, unreachable, or too slow).

    The client reconnects on the next call; nothing is retried silently.
    """


class CorruptValueError(OnlineStoreError):
    """A value in Redis is not a well-formed tidemark value for the feature view that owns the key.

    Readers serve such a value as missing and report it (:mod:`features.corrupt_values`); writers
    refuse to overwrite a value that is not theirs."""

    def __init__(self, key: bytes | str, why: str) -> None:
        shown = key.decode(errors="backslashreplace") if isinstance(key, bytes) else key
        super().__init__(
            f"online value at key {shown!r} is unusable: {why}. Delete the key (or the view's keys "
            "with `feast apply` after a change) and materialize again."
        )
        self.key = key

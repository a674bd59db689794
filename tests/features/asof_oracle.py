"""A deliberately naive pandas reference for the point-in-time join, row by row.

It states the semantics directly (see ``features.asof_join``) and is used to check the Spark
implementation on random histories. For each entity row it returns the set of acceptable
feature tuples: more than one only when several rows tie on (event, created) exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pandas as pd


def acceptable_values(
    entities: pd.DataFrame,
    features: pd.DataFrame,
    *,
    keys: Sequence[str],
    ts: str,
    ev: str,
    cr: str | None,
    values: Sequence[str],
    ttl: timedelta | None,
    filter_by_created: bool,
) -> list[set[tuple]]:
    """Per entity row, the feature tuples a correct join may return (``{None}`` = no match)."""
    out: list[set[tuple]] = []
    for _, row in entities.iterrows():
        t = row[ts]
        cand = features
        for k in keys:
            cand = cand[cand[k].notna() & (cand[k] == row[k])] if pd.notna(row[k]) else cand.iloc[0:0]
        cand = cand[cand[ev].notna()]
        if pd.isna(t):
            cand = cand.iloc[0:0]
        else:
            cand = cand[cand[ev] <= t]
            if filter_by_created and cr is not None:
                cand = cand[cand[cr].isna() | (cand[cr] <= t)]
            if ttl is not None:
                cand = cand[cand[ev] >= t - ttl]
        if cand.empty:
            out.append({None})
            continue
        top_ev = cand[ev].max()
        cand = cand[cand[ev] == top_ev]
        if cr is not None and cand[cr].notna().any():
            cand = cand[cand[cr] == cand[cr].max()]
        out.append({_tuple(r, values) for _, r in cand.iterrows()})
    return out


def _tuple(row: pd.Series, values: Sequence[str]) -> tuple:
    return tuple(None if pd.isna(row[v]) else row[v] for v in values)

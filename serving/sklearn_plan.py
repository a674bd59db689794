"""A fitted scikit-learn pipeline's preprocessing as plain array steps, checked against the pipeline.

A ``Pipeline(ColumnTransformer(...), LogisticRegression())`` answers one row in ~5–10 ms, almost
all of it the ColumnTransformer's per-call DataFrame handling and each step's input validation,
not arithmetic. Serving one row at a time pays that on every request. :func:`compile_pipeline`
reads the fitted steps once, at load, and returns a :class:`CompiledPipeline` that does the same
arithmetic on numpy arrays (tens of microseconds), then hands the final estimator its matrix as
the pipeline would:

    request columns ──► ColumnTransformer's column groups ──► imputers, scalers, encoders
                        (by name or position, as fitted)        (their fitted statistics)
                    ──► float64 matrix ──► final estimator's predict_proba / predict (its own code)

Supported steps: ``Pipeline``, ``ColumnTransformer`` (``drop``, ``passthrough``, a remainder),
``SimpleImputer`` (no indicator), ``StandardScaler``, ``MinMaxScaler``, ``RobustScaler``,
``MaxAbsScaler``, ``OneHotEncoder`` and ``OrdinalEncoder`` (no infrequent categories), and an
identity ``FunctionTransformer``. The final estimator can be anything: a linear model is computed
here, a LightGBM model by its booster on one thread, any other by its own method. Any other step, or a
compiled plan that does not give the pipeline's own answers on probe rows built from its fitted
categories (with nulls and an unseen value where the pipeline accepts them) to 1e-12, means no
plan: the caller keeps calling the pipeline, which is always right, only slower.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from serving.errors import ModelInputError

__all__ = ["CompiledPipeline", "compile_pipeline"]

log = logging.getLogger(__name__)

Step = Callable[[np.ndarray], np.ndarray]  # (n, k) -> (n, m)

_UNSEEN = "\x00tidemark-unseen\x00"  # a category no encoder was fitted on
_NUMBER_PROBES = (0.0, 1.5, -2.25, 1234.5, 7.0, -0.125, 42.0, 3.0e-4)


class _Unsupported(Exception):
    """A step the compiler does not translate (the pipeline keeps serving)."""


@dataclass
class _Compiler:
    """Compiles steps and notes, per input column, the categories its encoders were fitted on (the
    probe rows use them)."""

    inputs: tuple[str, ...]
    text: frozenset[str]
    categories: dict[str, list[Any]] = field(default_factory=dict)

    def top(self, estimator: Any) -> tuple[Callable[[Sequence[np.ndarray]], np.ndarray], Any]:
        """(preprocessing of the input columns, final estimator) of a fitted ``Pipeline``."""
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline

        if not isinstance(estimator, Pipeline):
            if self.text:
                raise _Unsupported("an estimator without preprocessing, with text inputs")
            return _stack, estimator
        if len(estimator.steps) < 2:
            raise _Unsupported("a Pipeline of one step")
        *steps, (_, final) = estimator.steps
        if final is None or _is(final, "passthrough") or getattr(final, "feature_names_in_", None) is not None:
            raise _Unsupported("the final step is not an estimator fitted on arrays")
        first = steps[0][1]
        if isinstance(first, ColumnTransformer):
            grouped = self.column_transformer(first)
            rest = self.chain([t for _, t in steps[1:]], columns=None)
            return (lambda columns: rest(grouped(columns))), final
        whole = self.chain([t for _, t in steps], columns=list(range(len(self.inputs))))
        return (lambda columns: whole(_stack(columns))), final

    def chain(self, transformers: list[Any], *, columns: list[int] | None) -> Step:
        """Steps in order; ``columns`` (the inputs the first reads) tells encoders which inputs
        their categories belong to, which holds while the steps before them keep the columns."""
        compiled = [self.step(t, columns) for t in transformers if t is not None and not _is(t, "passthrough")]

        def run(x: np.ndarray) -> np.ndarray:
            for step in compiled:
                x = step(x)
            return x

        return run

    def column_transformer(self, ct: Any) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
        fitted_names = list(getattr(ct, "feature_names_in_", self.inputs))
        if fitted_names != list(self.inputs):
            raise _Unsupported("the ColumnTransformer was fitted on other columns")
        groups: list[tuple[list[int], Step]] = []
        for _, transformer, selection in ct.transformers_:
            if _is(transformer, "drop"):
                continue
            picked = _positions(selection, fitted_names)
            if picked:
                groups.append((picked, self.step(transformer, picked)))
        if not groups:
            raise _Unsupported("the ColumnTransformer keeps no column")

        def run(columns: Sequence[np.ndarray]) -> np.ndarray:
            parts = [step(_stack([columns[i] for i in picked])) for picked, step in groups]
            return np.hstack([_float(p) for p in parts]) if len(parts) > 1 else _float(parts[0])

        return run

    def step(self, transformer: Any, columns: list[int] | None) -> Step:
        """One fitted transformer; ``columns``: which inputs it reads (None: a later step)."""
        from sklearn import impute, pipeline, preprocessing

        if _is(transformer, "passthrough"):
            return _identity
        if isinstance(transformer, pipeline.Pipeline):
            return self.chain([t for _, t in transformer.steps], columns=columns)
        if isinstance(transformer, preprocessing.FunctionTransformer):
            if transformer.func is None and not transformer.validate:
                return _identity
            raise _Unsupported("FunctionTransformer with a function")
        if isinstance(transformer, impute.SimpleImputer):
            return _imputer(transformer)
        if isinstance(transformer, preprocessing.StandardScaler | preprocessing.MinMaxScaler
                      | preprocessing.RobustScaler | preprocessing.MaxAbsScaler):
            return _scaler(transformer)
        if isinstance(transformer, preprocessing.OneHotEncoder | preprocessing.OrdinalEncoder):
            if columns is not None:
                for i, cats in zip(columns, transformer.categories_, strict=False):
                    self.categories.setdefault(self.inputs[i], []).extend(cats.tolist())
            return _encoder(transformer)
        raise _Unsupported(f"{type(transformer).__name__} is not translated")


@dataclass(frozen=True)
class CompiledPipeline:
    """``matrix(columns)``: the float64 matrix the pipeline's final estimator would get;
    ``predict(matrix)``: that estimator's answer (its predict_proba or predict), computed here for
    linear models and by the estimator's own method otherwise."""

    matrix: Callable[[Sequence[np.ndarray]], np.ndarray]
    predict: Callable[[np.ndarray], np.ndarray]


def compile_pipeline(estimator: Any, inputs: tuple[str, ...], text: frozenset[str], *,
                     method: str) -> CompiledPipeline | None:
    """The plan of ``estimator`` (a fitted Pipeline over the columns ``inputs``, ``text`` among
    them strings), or None where it has a step the plan lacks or the plan and the pipeline's own
    ``method`` disagree on probe rows."""
    compiler = _Compiler(inputs, text)
    try:
        matrix, final = compiler.top(estimator)
    except _Unsupported as exc:
        log.info("serving the %s through its own code: %s", type(estimator).__name__, exc)
        return None
    # The estimator's own method on a matrix, unless it was fitted on a DataFrame (it would warn)
    native = None if getattr(final, "feature_names_in_", None) is not None else getattr(final, method)
    candidates = [p for p in (_linear(final, method) or _booster(final, method), native) if p is not None]
    if not candidates:
        log.info("serving the %s through its own code: its final step has no direct form", type(estimator).__name__)
        return None
    for predict in candidates:
        plan = CompiledPipeline(matrix, predict)
        problem = _disagreement(plan, estimator, method, compiler)
        if problem is None:
            return plan
    log.warning("serving the %s through its own code: the compiled plan %s", type(estimator).__name__, problem)
    return None


def _disagreement(plan: CompiledPipeline, estimator: Any, method: str, compiler: _Compiler) -> str | None:
    """None when the plan gives the pipeline's answers on the probe rows, else what went wrong."""
    for with_missing in (True, False):
        columns = _probe_columns(compiler, with_missing)
        frame = pd.DataFrame(dict(zip(compiler.inputs, columns, strict=True)))
        try:
            with warnings.catch_warnings():  # "unknown categories ... encoded as all zeros": probed on purpose
                warnings.simplefilter("ignore", UserWarning)
                expected = np.asarray(getattr(estimator, method)(frame), dtype=np.float64)
        except (ValueError, TypeError):  # the pipeline refuses nulls or unseen values: probe without them
            continue
        try:
            got = np.asarray(plan.predict(plan.matrix(columns)), dtype=np.float64)
        except (ValueError, TypeError, ModelInputError) as exc:
            return f"failed where the pipeline answered ({type(exc).__name__}: {exc})"
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-12, atol=1e-12, equal_nan=True):
            return "answered differently from the pipeline on probe rows"
        return None
    return "could not be checked: the pipeline refused every probe row"


def _probe_columns(compiler: _Compiler, with_missing: bool) -> list[np.ndarray]:
    """16 rows: fitted categories (and None, an unseen value) for text, assorted numbers (and NaN)."""
    rows = 16
    columns = []
    for j, name in enumerate(compiler.inputs):
        if name in compiler.text:
            seen = [c for c in compiler.categories.get(name, []) if isinstance(c, str)] or ["a"]
            pool: list[Any] = [*seen, *([None, _UNSEEN] if with_missing else [])]
            values = np.empty(rows, dtype=object)
            values[:] = list(itertools.islice(itertools.cycle(pool[j % len(pool):] + pool[:j % len(pool)]), rows))
            columns.append(values)
        else:
            pool_n = [*_NUMBER_PROBES, *([np.nan] if with_missing else [])]
            numbers = [pool_n[(i * 3 + j) % len(pool_n)] for i in range(rows)]
            known = [c for c in compiler.categories.get(name, []) if isinstance(c, int | float) and not _is_nan(c)]
            numbers[: len(known)] = known[:rows]  # numeric categories of an encoder: the values it knows
            columns.append(np.asarray(numbers, dtype=np.float64))
    return columns


def _linear(estimator: Any, method: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """A linear model's answer without its per-call validation (~0.25 ms a call): the arithmetic of
    ``LogisticRegression.predict_proba`` (expit for two classes, softmax for more) or of a linear
    regressor's ``predict``; None for anything else."""
    from scipy.special import expit, softmax
    from sklearn.base import is_classifier, is_regressor
    from sklearn.linear_model import LogisticRegression

    coef, intercept = getattr(estimator, "coef_", None), getattr(estimator, "intercept_", None)
    if not isinstance(coef, np.ndarray) or intercept is None or coef.dtype.kind != "f":
        return None
    if method == "predict_proba" and isinstance(estimator, LogisticRegression):
        weights, bias = coef.T, np.asarray(intercept)
        if len(estimator.classes_) <= 2:
            def binary(x: np.ndarray) -> np.ndarray:
                p = expit((x @ weights + bias).ravel())
                return np.column_stack([1 - p, p])
            return binary
        return lambda x: softmax(x @ weights + bias, axis=1)
    if method == "predict" and is_regressor(estimator) and not is_classifier(estimator) and coef.ndim == 1:
        offset = float(np.ravel(intercept)[0])
        return lambda x: x @ coef + offset
    return None


def _booster(estimator: Any, method: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """A LightGBM scikit-learn model's booster on one thread: the same trees and the same numbers
    as its ``predict_proba`` / ``predict``, which on one row spends ~10 ms starting a thread pool and
    checking its input (~0.2 ms this way); None for anything else."""
    if not type(estimator).__module__.startswith("lightgbm."):
        return None
    booster = getattr(estimator, "booster_", None)
    if booster is None or (method == "predict_proba") != hasattr(estimator, "classes_"):
        return None
    if method == "predict" or len(estimator.classes_) > 2:
        return lambda x: np.asarray(booster.predict(x, num_threads=1), dtype=np.float64)

    def binary(x: np.ndarray) -> np.ndarray:
        p = np.asarray(booster.predict(x, num_threads=1), dtype=np.float64)
        return np.column_stack([1 - p, p])

    return binary


# --- the translated steps -------------------------------------------------------------------------


def _is(step: Any, word: str) -> bool:
    return isinstance(step, str) and step == word


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _stack(columns: Sequence[np.ndarray]) -> np.ndarray:
    if all(c.dtype != object for c in columns):
        return np.column_stack(columns).astype(np.float64, copy=False)
    out = np.empty((len(columns[0]), len(columns)), dtype=object)
    for j, c in enumerate(columns):
        out[:, j] = c
    return out


def _float(x: np.ndarray) -> np.ndarray:
    try:
        return x.astype(np.float64, copy=False)
    except (TypeError, ValueError):
        raise ModelInputError("the model's preprocessing left text where its estimator needs numbers") from None


def _positions(selection: Any, names: list[str]) -> list[int]:
    if isinstance(selection, str | int) or callable(selection):
        raise _Unsupported("a scalar or callable column selection")  # 1-D input: a text vectoriser's
    if isinstance(selection, slice):
        if any(isinstance(b, str) for b in (selection.start, selection.stop)):
            raise _Unsupported("a column slice by name")
        return list(range(len(names)))[selection]
    picked = np.asarray(selection)
    if picked.size == 0:
        return []
    if picked.dtype == bool:
        return np.flatnonzero(picked).tolist()
    if picked.dtype.kind in "iu":
        return picked.tolist()
    try:
        return [names.index(str(c)) for c in picked]
    except ValueError:
        raise _Unsupported("a column selection naming a column the pipeline was not fitted on") from None


def _missing_mask(x: np.ndarray, missing: Any) -> np.ndarray:
    """scikit-learn's own rule (``sklearn.utils._mask``): NaN matches only NaN, None only None."""
    if missing is None:
        return np.asarray(x == None)  # elementwise on an object array (`is None` would not be)
    if isinstance(missing, float) and np.isnan(missing):
        return np.isnan(x) if x.dtype != object else np.frompyfunc(_is_nan, 1, 1)(x).astype(bool)
    return np.asarray(x == missing)


def _imputer(imputer: Any) -> Step:
    if imputer.add_indicator:
        raise _Unsupported("SimpleImputer(add_indicator=True)")
    stats = np.asarray(imputer.statistics_)
    if stats.dtype != object and np.isnan(stats).any():
        raise _Unsupported("a SimpleImputer column with no statistic (all missing when fitted)")
    missing = imputer.missing_values

    def run(x: np.ndarray) -> np.ndarray:
        mask = _missing_mask(x, missing)
        if not mask.any():
            return x
        out = x.astype(object if stats.dtype == object else np.float64, copy=True)
        rows, cols = np.nonzero(mask)
        out[rows, cols] = stats[cols]
        return out

    return run


def _scaler(scaler: Any) -> Step:
    from sklearn import preprocessing

    if isinstance(scaler, preprocessing.StandardScaler):
        shift = scaler.mean_ if scaler.with_mean else None
        divide = scaler.scale_ if scaler.with_std else None
        return _affine(shift, divide, None, None)
    if isinstance(scaler, preprocessing.RobustScaler):
        return _affine(scaler.center_ if scaler.with_centering else None,
                       scaler.scale_ if scaler.with_scaling else None, None, None)
    if isinstance(scaler, preprocessing.MaxAbsScaler):
        return _affine(None, scaler.scale_, None, None)
    clip = scaler.feature_range if scaler.clip else None
    return _affine(None, None, (scaler.scale_, scaler.min_), clip)


def _affine(shift: np.ndarray | None, divide: np.ndarray | None, scale_add: tuple[np.ndarray, np.ndarray] | None,
            clip: tuple[float, float] | None) -> Step:
    """The scalers' own operation order (subtract, then divide; or multiply, then add), so the floats
    are the ones scikit-learn computes."""

    def run(x: np.ndarray) -> np.ndarray:
        out = x.astype(np.float64, copy=True)
        if shift is not None:
            out -= shift
        if divide is not None:
            out /= divide
        if scale_add is not None:
            out *= scale_add[0]
            out += scale_add[1]
        if clip is not None:
            np.clip(out, clip[0], clip[1], out=out)
        return out

    return run


def _lookup(categories: np.ndarray) -> tuple[dict[Any, int], int | None]:
    """Category -> position, and the position of NaN (a dict can't find NaN by value)."""
    index: dict[Any, int] = {}
    nan_at = None
    for i, c in enumerate(categories.tolist()):
        if _is_nan(c):
            nan_at = i
        else:
            index.setdefault(c, i)
    return index, nan_at


def _position(value: Any, index: dict[Any, int], nan_at: int | None) -> int | None:
    if _is_nan(value):
        return nan_at
    try:
        return index.get(value)
    except TypeError:  # unhashable: unseen
        return None


def _encoder(encoder: Any) -> Step:
    from sklearn.preprocessing import OneHotEncoder

    if any(c is not None for c in getattr(encoder, "infrequent_categories_", []) or []):
        raise _Unsupported(f"{type(encoder).__name__} with infrequent categories")
    lookups = [_lookup(np.asarray(c)) for c in encoder.categories_]
    if isinstance(encoder, OneHotEncoder):
        return _one_hot(encoder, lookups)
    return _ordinal(encoder, lookups)


def _one_hot(encoder: Any, lookups: list[tuple[dict[Any, int], int | None]]) -> Step:
    if encoder.handle_unknown not in ("ignore", "error", "infrequent_if_exist"):
        raise _Unsupported(f"OneHotEncoder(handle_unknown={encoder.handle_unknown!r})")
    unknown_is_error = encoder.handle_unknown == "error"
    sizes = [len(c) for c in encoder.categories_]
    drop = encoder.drop_idx_ if encoder.drop_idx_ is not None else [None] * len(sizes)
    widths = [n - (d is not None) for n, d in zip(sizes, drop, strict=True)]
    offsets = np.concatenate([[0], np.cumsum(widths)]).astype(int)

    def run(x: np.ndarray) -> np.ndarray:
        out = np.zeros((x.shape[0], int(offsets[-1])), dtype=np.float64)
        for j, ((index, nan_at), dropped) in enumerate(zip(lookups, drop, strict=True)):
            for i, value in enumerate(x[:, j].tolist()):
                at = _position(value, index, nan_at)
                if at is None:
                    if unknown_is_error:
                        raise ModelInputError(f"the model's encoder was not fitted on the value {value!r:.40}")
                    continue
                if dropped is not None:
                    if at == dropped:
                        continue
                    at -= at > dropped
                out[i, offsets[j] + at] = 1.0
        return out

    return run


def _ordinal(encoder: Any, lookups: list[tuple[dict[Any, int], int | None]]) -> Step:
    use_encoded = encoder.handle_unknown == "use_encoded_value"
    unknown_value = float(encoder.unknown_value) if use_encoded else np.nan
    missing_value = float(encoder.encoded_missing_value)

    def run(x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape, dtype=np.float64)
        for j, (index, nan_at) in enumerate(lookups):
            for i, value in enumerate(x[:, j].tolist()):
                at = _position(value, index, nan_at)
                if _is_nan(value):
                    out[i, j] = missing_value
                elif at is not None:
                    out[i, j] = at
                elif use_encoded:
                    out[i, j] = unknown_value
                else:
                    raise ModelInputError(f"the model's encoder was not fitted on the value {value!r:.40}")
        return out

    return run

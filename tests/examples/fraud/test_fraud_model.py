"""Unit tests for the fraud model (examples/fraud/model.py) and its pyfunc wrapper: pure, CPU only."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.fraud.model import CategoricalInput, FraudModel, ModelSpec, NumericInput, build_module
from examples.fraud.pyfunc import FraudPyfunc, unwrap
from serving.errors import ModelFormatError, ModelInputError

NUMERIC = ["amount", "hour"]
CATEGORICAL = ["channel", "country"]


def training_frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Payments: a skewed amount (EUR), a symmetric hour, a common and a long-tailed category."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.0, 1.5, n)
    amount[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({
        "amount": amount,
        "hour": rng.normal(12.0, 3.0, n),
        "channel": rng.choice(["web", "app", "pos"], n, p=[0.5, 0.3, 0.2]),
        "country": rng.choice(["DE", "FR", "NL", "LU", "MT"], n, p=[0.6, 0.3, 0.08, 0.015, 0.005]),
    })


def fitted_model(seed: int = 0, **fit_options: object) -> FraudModel:
    options: dict[str, object] = {"hidden": (16, 8), "dropout": 0.1, "min_count": 20, **fit_options}
    spec = ModelSpec.fit(training_frame(), NUMERIC, CATEGORICAL, **options)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    return FraudModel(spec, build_module(spec))


@cache
def shared_model() -> FraudModel:
    """One fitted model for the property test (hypothesis can't take function-scoped fixtures)."""
    return fitted_model()


def scoring_frame(n: int = 50, seed: int = 1) -> pd.DataFrame:
    frame = training_frame(n, seed)
    frame.loc[0, "amount"] = np.nan
    frame.loc[1, "country"] = None
    frame.loc[2, "channel"] = "never-seen"
    return frame


# --- ModelSpec.fit: numeric columns ---------------------------------------------------------------


def test_a_skewed_non_negative_column_is_scaled_on_log1p() -> None:
    frame = training_frame()
    spec = ModelSpec.fit(frame, ["amount"], [])
    (amount,) = spec.numeric
    finite = frame["amount"].dropna().to_numpy()
    assert amount.log is True
    assert amount.mean == pytest.approx(np.log1p(finite).mean(), rel=1e-12)
    assert amount.std == pytest.approx(np.log1p(finite).std(), rel=1e-12)


def test_a_symmetric_column_is_scaled_as_is() -> None:
    frame = training_frame()
    (hour,) = ModelSpec.fit(frame, ["hour"], []).numeric
    assert hour == NumericInput("hour", log=False, mean=pytest.approx(frame["hour"].mean(), rel=1e-12),
                                std=pytest.approx(frame["hour"].std(ddof=0), rel=1e-12))


def test_a_skewed_column_with_negative_values_is_not_logged() -> None:
    values = np.random.default_rng(3).lognormal(3.0, 1.5, 500)
    values[0] = -1.0  # a refund: log1p would not be defined
    (col,) = ModelSpec.fit(pd.DataFrame({"x": values}), ["x"], []).numeric
    assert pd.Series(values).skew() > 2.0
    assert col.log is False
    assert col.mean == pytest.approx(values.mean(), rel=1e-12)


def test_a_constant_column_gets_std_one() -> None:
    (col,) = ModelSpec.fit(pd.DataFrame({"x": [4.5] * 30}), ["x"], []).numeric
    assert col == NumericInput("x", log=False, mean=4.5, std=1.0)


def test_an_all_missing_column_gets_mean_zero_std_one() -> None:
    (col,) = ModelSpec.fit(pd.DataFrame({"x": [np.nan, None, np.inf] * 5}), ["x"], []).numeric
    assert col == NumericInput("x", log=False, mean=0.0, std=1.0)


def test_missing_and_infinite_values_are_left_out_of_the_fit() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, np.nan, np.inf, -np.inf, None]})
    (col,) = ModelSpec.fit(frame, ["x"], []).numeric
    assert (col.log, col.mean) == (False, 2.0)
    assert col.std == pytest.approx(np.std([1.0, 2.0, 3.0]))


def test_fit_names_the_columns_the_frame_lacks() -> None:
    with pytest.raises(ModelInputError, match=r"\['nope', 'gone'\]"):
        ModelSpec.fit(training_frame(), ["amount", "nope"], ["gone"])


def test_fit_keeps_the_network_shape_as_plain_numbers() -> None:
    spec = ModelSpec.fit(training_frame(), NUMERIC, CATEGORICAL, hidden=(np.int64(32), 16), dropout=np.float32(0.25))
    assert spec.hidden == (32, 16) and all(type(h) is int for h in spec.hidden)
    assert type(spec.dropout) is float and spec.dropout == 0.25
    assert spec.columns == [*NUMERIC, *CATEGORICAL]


# --- ModelSpec.fit and encode: categorical columns ------------------------------------------------


def test_rare_unseen_and_missing_categories_share_code_zero() -> None:
    train = pd.DataFrame({"c": ["b"] * 25 + ["a"] * 20 + ["rare"] * 19 + [None] * 40})
    spec = ModelSpec.fit(train, [], ["c"], min_count=20)
    assert spec.categorical[0].vocabulary == ("a", "b")  # sorted; "rare" (19 < 20) and nulls left out
    _, codes = spec.encode(pd.DataFrame({"c": ["a", "b", "rare", "unseen", None, np.nan, pd.NA]}))
    assert codes.dtype == np.int64
    assert codes[:, 0].tolist() == [1, 2, 0, 0, 0, 0, 0]


def test_a_code_and_its_text_are_one_category() -> None:
    # 12 + 12 rows: only the merged count reaches min_count
    train = pd.DataFrame({"c": pd.Series([3] * 12 + ["3"] * 12 + [4] * 5, dtype=object)})
    spec = ModelSpec.fit(train, [], ["c"], min_count=20)
    assert spec.categorical[0].vocabulary == ("3",)
    _, codes = spec.encode(pd.DataFrame({"c": pd.Series([3, "3", np.int64(3), 4, "4"], dtype=object)}))
    assert codes[:, 0].tolist() == [1, 1, 1, 0, 0]
    _, int_codes = spec.encode(pd.DataFrame({"c": [3, 4]}))
    assert int_codes[:, 0].tolist() == [1, 0]


def test_an_integer_code_read_as_float_is_the_same_category() -> None:
    """A null makes pandas turn an integer column into floats: 3 must stay "3", not "3.0"."""
    spec = ModelSpec.fit(pd.DataFrame({"c": [3] * 25}), [], ["c"], min_count=20)
    _, codes = spec.encode(pd.DataFrame({"c": [3.0, np.nan, 4.0]}))
    assert codes[:, 0].tolist() == [1, 0, 0]


def test_the_embedding_width_follows_the_vocabulary_size() -> None:
    frame = pd.DataFrame({"none": [None] * 180, "nine": [f"v{i % 9}" for i in range(180)],
                          "many": [f"v{i}" for i in range(180)]})
    spec = ModelSpec.fit(frame, [], ["none", "nine", "many"], min_count=1)
    by_name = {c.name: c for c in spec.categorical}
    assert by_name["none"] == CategoricalInput("none", (), 2)
    assert len(by_name["nine"].vocabulary) == 9 and by_name["nine"].dim == round(1.6 * 10 ** 0.56)
    assert len(by_name["many"].vocabulary) == 180 and by_name["many"].dim == 16


# --- encode ---------------------------------------------------------------------------------------


def test_encode_returns_raw_numeric_values_and_codes() -> None:
    model = fitted_model()
    frame = scoring_frame()
    numeric, codes = model.encode(frame)
    assert numeric.dtype == np.float32 and numeric.shape == (len(frame), 2)
    assert codes.dtype == np.int64 and codes.shape == (len(frame), 2)
    np.testing.assert_array_equal(numeric, frame[NUMERIC].to_numpy(dtype=np.float32))  # NaN where missing
    assert np.isnan(numeric[0, 0])
    vocab = model.spec.categorical[1].vocabulary
    expected = [vocab.index(v) + 1 if v in vocab else 0 for v in frame["country"]]
    assert codes[:, 1].tolist() == expected
    assert codes[1, 1] == 0 and codes[2, 0] == 0


def test_encode_names_every_missing_column() -> None:
    model = fitted_model()
    with pytest.raises(ModelInputError, match=r"lacks columns \['hour', 'country'\]"):
        model.encode(scoring_frame().drop(columns=["hour", "country"]))


def test_text_in_a_numeric_column_is_an_input_error() -> None:
    frame = scoring_frame().astype({"amount": object})
    frame.loc[3, "amount"] = "twelve euros"
    with pytest.raises(ModelInputError, match="'amount' must be numeric"):
        fitted_model().encode(frame)


def test_numbers_written_as_text_are_read_as_numbers() -> None:
    spec = fitted_model().spec
    numeric, _ = spec.encode(pd.DataFrame({"amount": ["12.5", None, "7"], "hour": [1, 2, 3],
                                           "channel": ["web"] * 3, "country": ["DE"] * 3}))
    np.testing.assert_array_equal(numeric[:, 0], np.array([12.5, np.nan, 7.0], dtype=np.float32))


def test_extra_columns_and_column_order_do_not_matter() -> None:
    model = fitted_model()
    frame = scoring_frame()
    shuffled = frame.assign(extra=np.arange(len(frame)), note="x")[["note", "country", "hour", "extra",
                                                                    "channel", "amount"]]
    for got, want in zip(model.encode(shuffled), model.encode(frame), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(model.predict_proba(shuffled), model.predict_proba(frame))


def test_the_frame_index_does_not_matter() -> None:
    model = fitted_model()
    frame = scoring_frame()
    reindexed = frame.set_axis(np.arange(len(frame))[::-1] * 7 + 1000)
    np.testing.assert_array_equal(model.predict_proba(reindexed), model.predict_proba(frame))


# --- to_json / from_json --------------------------------------------------------------------------


def test_the_spec_survives_json() -> None:
    spec = fitted_model().spec
    text = spec.to_json()
    assert ModelSpec.from_json(text) == spec
    assert ModelSpec.from_json(text).to_json() == text


def test_a_spec_without_columns_survives_json() -> None:
    spec = ModelSpec((), (), hidden=(), dropout=0.0)
    assert ModelSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("change", [{"format": 1}, {"format": 3}, {"format": "2"}, {"format": None}])
def test_an_unknown_spec_format_is_a_format_error(change: dict[str, object]) -> None:
    import json

    raw = json.loads(fitted_model().spec.to_json())
    raw.update(change)
    with pytest.raises(ModelFormatError, match="format .* is not 2"):
        ModelSpec.from_json(json.dumps(raw))


# --- build_module: preprocessing inside the network -----------------------------------------------


def test_the_module_carries_the_spec_preprocessing_and_shape() -> None:
    spec = fitted_model().spec
    module = build_module(spec)
    assert module.log_mask.tolist() == [c.log for c in spec.numeric]
    np.testing.assert_array_equal(module.mean.numpy(), np.array([c.mean for c in spec.numeric], np.float32))
    np.testing.assert_array_equal(module.std.numpy(), np.array([c.std for c in spec.numeric], np.float32))
    assert [(e.num_embeddings, e.embedding_dim) for e in module.embeddings] == \
        [(len(c.vocabulary) + 1, c.dim) for c in spec.categorical]
    linears = [m for m in module.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == \
        [(2 * 2 + sum(c.dim for c in spec.categorical), 16), (16, 8), (8, 1)]


def linear_model(log: bool, weight: tuple[float, float], bias: float = 0.0) -> FraudModel:
    """One numeric column, no hidden layer: logit = w_x * scaled(x) + w_missing * isnan(x) + bias."""
    spec = ModelSpec((NumericInput("x", log=log, mean=1.5, std=2.0),), (), hidden=(), dropout=0.0)
    module = build_module(spec)
    (layer,) = module.mlp
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weight]))
        layer.bias.fill_(bias)
    return FraudModel(spec, module)


def logits(model: FraudModel, values: list[float]) -> np.ndarray:
    numeric, codes = model.encode(pd.DataFrame({"x": values}))
    with torch.inference_mode():
        return model.module(torch.from_numpy(numeric), torch.from_numpy(codes)).numpy().astype(np.float64)


@pytest.mark.parametrize("log", [False, True])
def test_the_module_scales_clips_and_imputes_as_documented(log: bool) -> None:
    model = linear_model(log, weight=(1.0, 0.0))
    values = [0.0, 3.0, 10.0, 1e6, -4.0, -1e9, np.inf, -np.inf, np.nan]
    x = np.array(values)
    with np.errstate(invalid="ignore"):
        raw = np.log1p(np.maximum(x, 0.0)) if log else x
    expected = np.where(np.isnan(x), 0.0, np.clip((raw - 1.5) / 2.0, -8.0, 8.0))
    np.testing.assert_allclose(logits(model, values), expected, rtol=1e-6, atol=1e-6)


def test_the_missing_indicator_separates_a_missing_value_from_the_mean() -> None:
    # a missing value is imputed at the mean (scaled 0), so only the indicator tells the two apart
    mean = 1.5
    with_indicator = linear_model(log=False, weight=(0.7, -2.0), bias=0.25)
    np.testing.assert_allclose(logits(with_indicator, [mean, np.nan]), [0.25, 0.25 - 2.0], rtol=1e-6)
    without = linear_model(log=False, weight=(0.7, 0.0), bias=0.25)
    first, second = logits(without, [mean, np.nan])
    assert first == second


def test_the_network_input_differs_only_in_the_indicator_for_missing_vs_mean() -> None:
    model = fitted_model()
    amount = model.spec.numeric[0]
    assert amount.log
    seen: list[torch.Tensor] = []
    model.module.mlp.register_forward_pre_hook(lambda _module, args: seen.append(args[0].clone()))
    frame = pd.DataFrame({"amount": [np.nan, math.expm1(amount.mean)], "hour": 12.0, "channel": "web",
                          "country": "DE"})
    model.predict_proba(frame)
    (inputs,) = seen
    missing_row, mean_row = inputs.numpy()
    assert (missing_row[2], mean_row[2]) == (1.0, 0.0)  # columns: scaled amount, hour, then indicators
    np.testing.assert_allclose(missing_row[[0, *range(3, inputs.shape[1])]],
                               mean_row[[0, *range(3, inputs.shape[1])]], atol=1e-6)
    assert missing_row[0] == 0.0


def test_missing_values_give_finite_probabilities() -> None:
    model = fitted_model()
    frame = scoring_frame().assign(amount=np.nan, hour=None, channel=None, country=None)
    proba = model.predict_proba(frame)
    assert np.isfinite(proba).all() and ((proba >= 0) & (proba <= 1)).all()
    assert np.unique(proba).size == 1  # every row is the same all-missing input


# --- FraudModel -----------------------------------------------------------------------------------


def test_predict_proba_is_the_sigmoid_of_the_module() -> None:
    model = fitted_model()
    frame = scoring_frame()
    proba = model.predict_proba(frame)
    numeric, codes = model.encode(frame)
    with torch.no_grad():
        # in float64, so scores don't saturate to exactly 1.0 (ties) for large logits
        direct = torch.sigmoid(model.module(torch.from_numpy(numeric), torch.from_numpy(codes)).double()).numpy()
    assert proba.dtype == np.float64 and proba.shape == (len(frame),)
    np.testing.assert_array_equal(proba, direct)
    assert ((proba > 0) & (proba < 1)).all()


def test_predict_proba_scores_in_batches_like_in_one_go() -> None:
    model = fitted_model()
    frame = scoring_frame(53)
    whole = model.predict_proba(frame)
    for batch_size in (1, 7, 52, 53, 1000):
        np.testing.assert_allclose(model.predict_proba(frame, batch_size=batch_size), whole, rtol=1e-6, atol=1e-9)


def test_predict_proba_of_no_rows_is_empty() -> None:
    proba = fitted_model().predict_proba(scoring_frame().iloc[:0])
    assert proba.shape == (0,) and proba.dtype == np.float64


def test_scoring_runs_without_dropout() -> None:
    model = fitted_model(dropout=0.9)
    frame = scoring_frame()
    assert not model.module.training
    np.testing.assert_array_equal(model.predict_proba(frame), model.predict_proba(frame))
    assert model.device == torch.device("cpu")
    assert model.to("cpu") is model


def test_save_and_load_give_identical_predictions(tmp_path: Path) -> None:
    model = fitted_model()
    artifacts = model.save(tmp_path / "model")
    assert artifacts == {"spec": str(tmp_path / "model" / "spec.json"),
                         "weights": str(tmp_path / "model" / "weights.pt")}
    loaded = FraudModel.load(artifacts["spec"], artifacts["weights"], device="cpu")
    assert loaded.spec == model.spec
    assert loaded.device == torch.device("cpu") and not loaded.module.training
    frame = scoring_frame()
    np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))


def test_weights_of_another_spec_are_a_format_error(tmp_path: Path) -> None:
    model = fitted_model()
    other = fitted_model(min_count=1)  # a longer country vocabulary: a bigger embedding
    assert len(other.spec.categorical[1].vocabulary) > len(model.spec.categorical[1].vocabulary)
    mine, theirs = model.save(tmp_path / "mine"), other.save(tmp_path / "theirs")
    with pytest.raises(ModelFormatError, match="not saved with the spec"):
        FraudModel.load(mine["spec"], theirs["weights"], device="cpu")
    wider = fitted_model(hidden=(32,)).save(tmp_path / "wider")
    with pytest.raises(ModelFormatError, match="not saved with the spec"):
        FraudModel.load(mine["spec"], wider["weights"], device="cpu")


def test_weights_of_a_same_shaped_model_are_a_format_error(tmp_path: Path) -> None:
    """Another fit with the same vocabulary sizes and layers has weights of the same shapes: they
    would load, with the other model's scaling silently replacing this spec's."""
    model = fitted_model()
    spec = ModelSpec.fit(training_frame().assign(amount=lambda f: f["amount"] * 3), NUMERIC, CATEGORICAL,
                         hidden=(16, 8), min_count=20)
    assert spec != model.spec and spec.columns == model.spec.columns
    twin = FraudModel(spec, build_module(spec))
    mine, theirs = model.save(tmp_path / "mine"), twin.save(tmp_path / "twin")
    with pytest.raises(ModelFormatError, match="not saved with the spec"):
        FraudModel.load(mine["spec"], theirs["weights"], device="cpu")


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04truncated zip"])
def test_unreadable_weights_are_a_format_error(tmp_path: Path, content: bytes) -> None:
    artifacts = fitted_model().save(tmp_path)
    Path(artifacts["weights"]).write_bytes(content)
    with pytest.raises(ModelFormatError, match="weights at"):
        FraudModel.load(artifacts["spec"], artifacts["weights"], device="cpu")


def test_missing_weights_are_a_format_error(tmp_path: Path) -> None:
    artifacts = fitted_model().save(tmp_path)
    with pytest.raises(ModelFormatError):
        FraudModel.load(artifacts["spec"], tmp_path / "elsewhere.pt", device="cpu")


# --- property: arbitrary raw values never break scoring ---------------------------------------------

numeric_values = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
category_values = st.one_of(st.none(), st.text(max_size=6), st.sampled_from(["web", "app", "DE", "FR", "3"]))


@st.composite
def raw_frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 12))
    column = {name: st.lists(numeric_values, min_size=n, max_size=n) for name in NUMERIC}
    column |= {name: st.lists(category_values, min_size=n, max_size=n) for name in CATEGORICAL}
    return pd.DataFrame({name: pd.Series(draw(values), dtype=object) for name, values in column.items()})


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # beyond float32: ±inf
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=raw_frames())
def test_arbitrary_values_encode_and_score_to_probabilities(frame: pd.DataFrame) -> None:
    model = shared_model()
    numeric, codes = model.encode(frame)
    assert numeric.shape == (len(frame), 2) and codes.shape == (len(frame), 2)
    for j, cat in enumerate(model.spec.categorical):
        assert ((codes[:, j] >= 0) & (codes[:, j] <= len(cat.vocabulary))).all()
    proba = model.predict_proba(frame, batch_size=5)
    assert proba.shape == (len(frame),)
    assert np.isfinite(proba).all() and ((proba >= 0) & (proba <= 1)).all()


# --- the pyfunc wrapper ---------------------------------------------------------------------------


def test_load_context_loads_the_saved_model(tmp_path: Path) -> None:
    model = fitted_model()
    pyfunc = FraudPyfunc()
    pyfunc.load_context(SimpleNamespace(artifacts=model.save(tmp_path)))
    frame = scoring_frame()
    assert pyfunc.fraud_model.spec == model.spec
    out = pyfunc.predict(None, frame)
    assert list(out.columns) == ["fraud_probability"]
    np.testing.assert_array_equal(out["fraud_probability"].to_numpy(), model.predict_proba(frame))


def test_a_pyfunc_before_load_context_says_so() -> None:
    with pytest.raises(RuntimeError, match="before MLflow called load_context"):
        FraudPyfunc().fraud_model  # noqa: B018


def test_unwrap_returns_the_fraud_model() -> None:
    pyfunc = FraudPyfunc()
    pyfunc.model = fitted_model()
    assert unwrap(SimpleNamespace(unwrap_python_model=lambda: pyfunc)) is pyfunc.model


def test_unwrap_refuses_other_models() -> None:
    class OtherModel:
        pass

    with pytest.raises(ModelFormatError, match="is a OtherModel, not a tidemark FraudPyfunc"):
        unwrap(SimpleNamespace(unwrap_python_model=OtherModel))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.none(), st.sampled_from(["pos", "ecom", "3", "moto", ""]), st.integers(0, 5),
                          st.floats(allow_nan=True, allow_infinity=False, width=32)), min_size=1, max_size=40))
def test_request_sized_encoding_equals_the_batch_path(values: list) -> None:
    """Small frames look categories up value by value; big ones build a Categorical: same codes."""
    spec = ModelSpec.fit(pd.DataFrame({"c": ["pos", "ecom", "3", "0"] * 10, "x": np.arange(40.0)}), ["x"], ["c"],
                         min_count=1)
    small = pd.DataFrame({"c": pd.Series(values, dtype=object), "x": 1.0})
    big = pd.concat([small] * (300 // len(values) + 1), ignore_index=True)  # over the small-frame limit
    assert len(big) > 256
    _, small_codes = spec.encode(small)
    _, big_codes = spec.encode(big)
    np.testing.assert_array_equal(small_codes[:, 0], big_codes[: len(values), 0])

"""The prediction service's compiled pipeline (mlops_serving.compiled) answers bit for bit as the
pipeline's own predict_proba, and is refused (the pipeline then scores) whenever it could not."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from mlops.config import load_schema
from mlops.data import _source_with_weeks, make_features, make_target
from mlops.modeling import build_pipeline, model_input
from mlops_serving.compiled import FOREST_MAX_ROWS, CompiledPipeline, NotCompilable, compile_pipeline


@pytest.fixture(scope="module")
def fitted() -> tuple[Pipeline, object]:
    """The project's pipeline fitted on two genuine weeks (fewer trees: quick); model input of
    three other weeks, with missing and unknown values mixed in."""
    schema = load_schema()
    source, weeks = _source_with_weeks(schema)
    train = source[weeks.isin(["2013-W02", "2013-W03"])]
    keep, y = make_target(train, schema)
    pipeline = build_pipeline(schema, {"max_iter": 30, "max_leaf_nodes": 31, "random_state": 0})
    pipeline.fit(model_input(make_features(train, schema), schema)[keep], y[keep])
    rows = source[weeks.isin(["2013-W05", "2013-W27", "2013-W50"])].copy()
    rows.loc[rows.index[::7], "dest"] = None
    rows.loc[rows.index[1::11], "carrier"] = "ZZ"  # a carrier the encoder does not know
    rows.loc[rows.index[2::5], "temp"] = np.nan
    return pipeline, model_input(make_features(rows, schema), schema)


def test_the_compiled_pipeline_answers_bit_for_bit(fitted) -> None:
    pipeline, X = fitted
    compiled = compile_pipeline(pipeline, X.iloc[:5])
    assert isinstance(compiled, CompiledPipeline)
    expected = pipeline.predict_proba(X)
    assert np.array_equal(compiled.predict_proba(X), expected)
    for i in range(0, len(X), 997):  # one row at a time, as single-row requests are scored
        assert np.array_equal(compiled.predict_proba(X.iloc[[i]]), expected[[i]])


def test_the_trees_evaluated_together_answer_bit_for_bit(fitted) -> None:
    """The vectorised trees (mlops_serving.compiled._Forest, used up to FOREST_MAX_ROWS rows) give
    every row of three weeks, with missing and unknown values, the pipeline's probability, in
    batches of the sizes the service scores and all at once."""
    pipeline, X = fitted
    compiled = compile_pipeline(pipeline, X.iloc[:5])
    expected = pipeline.predict_proba(X)
    assert np.array_equal(compiled.predict_proba(X, forest=True), expected)
    for size in (1, 8, FOREST_MAX_ROWS):
        for start in range(0, len(X), 1499):
            rows = X.iloc[start:start + size]
            assert np.array_equal(compiled.predict_proba(rows), expected[start:start + len(rows)])


def test_the_trees_evaluated_together_at_thresholds_and_extremes(fitted) -> None:
    """Values exactly at every split threshold of a numeric feature (``<=`` goes left), just
    around it, infinities and missing values: the vectorised trees decide as sklearn's."""
    pipeline, X = fitted
    compiled = compile_pipeline(pipeline, X.iloc[:5])
    data = compiled.matrix(X.iloc[:1])
    forest = compiled.forest
    probes = []
    for f, thresholds in forest.thresholds.items():
        finite = thresholds[np.isfinite(thresholds)]
        values = np.concatenate([finite, np.nextafter(finite, -np.inf), np.nextafter(finite, np.inf),
                                 [np.inf, -np.inf, np.nan, np.finfo(np.float64).max]])
        block = np.repeat(data, len(values), axis=0)
        block[:, f] = values
        probes.append(block)
    block = np.concatenate(probes)
    assert len(forest.thresholds) > 5 and len(block) > 1000
    # sklearn's tree predictors on the same (already encoded) array
    assert np.array_equal(forest.raw(block), compiled._raw(block))


def test_another_shape_is_scored_by_the_pipeline_itself(fitted) -> None:
    pipeline, X = fitted
    other = Pipeline([("encode", pipeline.named_steps["encode"]), ("model", LogisticRegression())])
    with pytest.raises(NotCompilable):
        CompiledPipeline(other)
    assert compile_pipeline(other, X.iloc[:5]) is None
    assert compile_pipeline(LogisticRegression(), X.iloc[:5]) is None


def test_a_compiled_pipeline_that_differs_is_refused(fitted, monkeypatch) -> None:
    pipeline, X = fitted
    real = CompiledPipeline.matrix

    def shifted(self, frame):  # noqa: ANN001 - a compiled form that reads one feature wrong
        out = real(self, frame)
        out[:, -1] += 1.0
        return out

    monkeypatch.setattr(CompiledPipeline, "matrix", shifted)
    assert compile_pipeline(pipeline, X.iloc[:50]) is None

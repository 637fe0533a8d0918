"""The served pipeline's ``predict_proba`` without sklearn's per-call overhead.

On one row, ``Pipeline.predict_proba`` of the project's model (``mlops.modeling.build_pipeline``: a
ColumnTransformer with an OrdinalEncoder on the categoricals, then a
HistGradientBoostingClassifier, which re-encodes the categoricals with a ColumnTransformer of its
own) spends about 7 ms in input checks, dataframe detection, column selection by name and the two
encoders, and well under 1 ms in the trees. :class:`CompiledPipeline` reads the fitted pipeline
once (the two encoders folded into one lookup table per categorical column) and then only fills a
float array and calls the classifier's own tree predictors, summing them in the same order and
linking them with the same loss as ``predict_proba``: the probabilities are bit for bit the
pipeline's. The rows are checked before (:mod:`mlops_serving.rows`), features come from
``mlops.data.make_features`` and ``mlops.modeling.model_input`` as everywhere else.

:func:`compile_pipeline` refuses (``None``) any pipeline not of that exact shape, and any whose
compiled answers differ in the last bit from the pipeline's on the version's logged input
example (and the same rows with every value missing or unknown); the service then scores with
the pipeline itself.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger("mlops_serving.compiled")


class NotCompilable(Exception):
    """The pipeline is not of the shape :class:`CompiledPipeline` reproduces."""


def _encoder_tables(encoder: Any) -> list[dict[Any, float]]:
    """``category -> code`` of an OrdinalEncoder that encodes unknown and missing values as NaN."""
    from sklearn.preprocessing import OrdinalEncoder

    if type(encoder) is not OrdinalEncoder or getattr(encoder, "_infrequent_enabled", False):
        raise NotCompilable(f"not a plain OrdinalEncoder: {encoder!r}")
    if encoder.handle_unknown != "use_encoded_value" or not math.isnan(encoder.unknown_value) or \
            not math.isnan(encoder.encoded_missing_value):
        raise NotCompilable("the encoder does not map unknown and missing values to NaN")
    return [{value: float(code) for code, value in enumerate(cats) if not _is_nan(value)}
            for cats in encoder.categories_]


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _passthrough(transformer: Any) -> bool:
    from sklearn.preprocessing import FunctionTransformer

    return transformer == "passthrough" or (type(transformer) is FunctionTransformer and transformer.func is None)


class CompiledPipeline:
    """``predict_proba`` of a fitted ``Pipeline([("encode", ColumnTransformer), ("model",
    HistGradientBoostingClassifier)])`` on model-input frames (see module doc)."""

    def __init__(self, pipeline: Any) -> None:
        import numpy as np
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.pipeline import Pipeline
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

        if type(pipeline) is not Pipeline or len(pipeline.steps) != 2:
            raise NotCompilable("not a two-step Pipeline")
        encode, model = pipeline.steps[0][1], pipeline.steps[1][1]
        if type(encode) is not ColumnTransformer or type(model) is not HistGradientBoostingClassifier:
            raise NotCompilable("not ColumnTransformer + HistGradientBoostingClassifier")
        # The pipeline's encoder: its output columns, each a categorical (with its table) or a
        # number passed through.
        columns: list[tuple[str, dict[Any, float] | None]] = []
        for name, transformer, selected in encode.transformers_:
            if transformer == "drop" or (not isinstance(selected, slice) and len(selected) == 0):
                continue
            if not all(isinstance(c, str) for c in selected):
                raise NotCompilable(f"transformer {name!r} selects columns by position")
            if _passthrough(transformer):
                columns += [(c, None) for c in selected]
            else:
                columns += list(zip(selected, _encoder_tables(transformer)))
        if [c for c, _ in columns] != list(encode.get_feature_names_out()):
            raise NotCompilable("the encoder's output columns are not its transformers' in order")
        # The classifier's own encoder: categorical outputs re-coded by what it saw in training,
        # then the numbers; the trees read that order.
        pre = model._preprocessor
        if pre is None:
            mask = np.zeros(len(columns), dtype=bool)
            inner: list[dict[Any, float]] = []
        else:
            steps = {name: (t, sel) for name, t, sel in pre.transformers_}
            encoder, mask = steps["encoder"]
            numbers, numeric_mask = steps["numerical"]
            mask = np.asarray(mask, dtype=bool)
            if set(steps) - {"encoder", "numerical", "remainder"} or steps.get("remainder", ("drop",))[0] != "drop" \
                    or not np.array_equal(~mask, np.asarray(numeric_mask, dtype=bool)):
                raise NotCompilable("the classifier's preprocessor is not encoder + numbers")
            inner = _encoder_tables(encoder)
            del numbers
        if len(mask) != len(columns) or any(table is None for (_, table), m in zip(columns, mask) if m):
            raise NotCompilable("the classifier's categorical features are not the encoded columns")
        order = [i for i in range(len(columns)) if mask[i]] + [i for i in range(len(columns)) if not mask[i]]
        nan = float("nan")
        self.categorical: list[tuple[int, str, dict[Any, float]]] = []
        self.numeric: list[tuple[int, str]] = []
        codes = iter(inner)
        for position, i in enumerate(order):
            name, table = columns[i]
            if mask[i]:
                second = next(codes)  # pipeline code -> classifier code (NaN: unseen in training)
                self.categorical.append((position, name, {value: second.get(code, nan) for value, code in table.items()}))
            elif table is not None:  # encoded by the pipeline, a number for the classifier
                self.categorical.append((position, name, table))
            else:
                self.numeric.append((position, name))
        self.n_features = len(order)
        self.model = model
        self.known_cat_bitsets, self.f_idx_map = model._bin_mapper.make_known_categories_bitsets()
        self.n_threads = _openmp_effective_n_threads()

    def matrix(self, X: "pd.DataFrame") -> "np.ndarray":
        """The classifier's input array of model-input rows."""
        import numpy as np

        out = np.empty((len(X), self.n_features), dtype=np.float64)
        nan = float("nan")
        for position, name, table in self.categorical:
            out[:, position] = [table.get(v, nan) if isinstance(v, str) else nan for v in X[name].tolist()]
        for position, name in self.numeric:
            out[:, position] = X[name].to_numpy(dtype=np.float64)
        return out

    def predict_proba(self, X: "pd.DataFrame") -> "np.ndarray":
        """The pipeline's ``predict_proba(X)``, bit for bit (HistGradientBoostingClassifier's
        ``_raw_predict`` and loss link on the encoded array)."""
        import numpy as np

        model = self.model
        data = self.matrix(X)
        raw = np.zeros((len(data), model.n_trees_per_iteration_), dtype=model._baseline_prediction.dtype, order="F")
        raw += model._baseline_prediction
        for predictors in model._predictors:
            for k, predictor in enumerate(predictors):
                raw[:, k] += predictor.predict(data, self.known_cat_bitsets, self.f_idx_map, self.n_threads)
        return model._loss.predict_proba(raw)


def compile_pipeline(pipeline: Any, example: "pd.DataFrame") -> CompiledPipeline | None:
    """The compiled pipeline when it answers exactly as ``pipeline.predict_proba`` on the model-input
    rows ``example``, on the same rows with every value missing and with every category unknown;
    None (with the reason logged) otherwise."""
    import numpy as np

    try:
        compiled = CompiledPipeline(pipeline)
    except Exception as exc:  # noqa: BLE001 - never a reason to refuse a version: score with the pipeline
        log.info("scoring with the pipeline itself (%s: %s)", type(exc).__name__, exc)
        return None
    missing, unknown = example.copy(), example.copy()
    for column in example.columns:  # missing as model_input gives it: NaN
        missing[column] = np.full(len(example), np.nan, dtype=example[column].dtype)
    for _, name, _ in compiled.categorical:
        unknown[name] = np.full(len(example), "\x00unknown", dtype=object)
    for rows in (example, missing, unknown):
        try:
            expected, got = pipeline.predict_proba(rows), compiled.predict_proba(rows)
        except Exception as exc:  # noqa: BLE001 - any failure means: do not use it
            log.warning("scoring with the pipeline itself: the compiled one failed (%s: %s)", type(exc).__name__, exc)
            return None
        if expected.shape != got.shape or not np.array_equal(expected, got, equal_nan=True):
            log.warning("scoring with the pipeline itself: the compiled one differs from it on the example")
            return None
    return compiled

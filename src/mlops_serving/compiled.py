"""The served pipeline's ``predict_proba`` without sklearn's per-call overhead.

On one row, ``Pipeline.predict_proba`` of the project's model (``mlops.modeling.build_pipeline``: a
ColumnTransformer with an OrdinalEncoder on the categoricals, then a
HistGradientBoostingClassifier, which re-encodes the categoricals with a ColumnTransformer of its
own) spends about 7 ms in input checks, dataframe detection, column selection by name and the two
encoders, and well under 1 ms in the trees. :class:`CompiledPipeline` reads the fitted pipeline
once (the two encoders folded into one lookup table per categorical column) and then only fills a
float array and evaluates the classifier's trees (on a few rows all together with numpy,
:class:`_Forest`, where one Cython call per tree would cost more than the trees; on more rows by
the classifier's own tree predictors), summing them in the same order and linking them with the
same loss as ``predict_proba``: the probabilities are bit for bit the pipeline's. The rows are checked before (:mod:`mlops_serving.rows`), features come from
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


#: A categorical feature's bin of a missing or unseen value (codes are 0..255).
_CAT_MISSING_BIN = 256
#: Tree levels between two compactions of the (row, tree) pairs not yet at a leaf.
_COMPACT_EVERY = 4
#: Up to this many rows the trees are evaluated together (:class:`_Forest`); more rows by sklearn's
#: own predictors, one call per tree (their per-call cost is then small against the rows').
FOREST_MAX_ROWS = 64


class _Forest:
    """All of a HistGradientBoosting model's trees, evaluated together with a few numpy calls per
    tree level (one Cython call per tree costs more than the trees on a few rows).

    Each feature's value is first turned into a bin: a numeric one by the sorted thresholds of
    every split on it (``searchsorted``: the bin is how many thresholds are below the value, so
    ``value <= threshold[j]`` exactly when ``bin <= j``; +inf is always a threshold, so NaN, which
    sorts last, gets a bin of its own); a categorical one is its code (0..255) or 256 when missing
    or unseen. Every split node holds a table ``bin -> goes left`` built from its threshold, or
    its category bitsets, and its ``missing_go_to_left``, with the decisions of sklearn's
    ``_predict_one_from_raw_data``. The leaves' values are summed tree by tree in the predictors'
    order (``np.add.accumulate``, sequential), so the sums are bit for bit ``_raw_predict``'s.
    """

    def __init__(self, model: Any, categorical: set[int], n_features: int) -> None:
        import numpy as np

        known, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
        trees = [p for predictors in model._predictors for p in predictors]
        if any(len(predictors) != model.n_trees_per_iteration_ for predictors in model._predictors):
            raise NotCompilable("an iteration without one tree per output")
        self.n_iter, self.k = len(model._predictors), model.n_trees_per_iteration_
        self.baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
        if self.baseline.shape != (self.k,):
            raise NotCompilable("baseline is not one value per output")
        # Every threshold of every split on each numeric feature, and +inf.
        cuts: dict[int, set[float]] = {}
        for tree in trees:
            nodes = tree.nodes
            split = nodes[nodes["is_leaf"] == 0]
            for f, is_cat in zip(split["feature_idx"].tolist(), split["is_categorical"].tolist()):
                if bool(is_cat) != (f in categorical):
                    raise NotCompilable(f"feature {f}: categorical splits do not match the categorical columns")
            for f, t in zip(split["feature_idx"].tolist(), split["num_threshold"].tolist()):
                if f not in categorical:
                    if math.isnan(t):
                        raise NotCompilable(f"feature {f}: a NaN threshold")
                    cuts.setdefault(f, set()).add(t)
        self.thresholds = {f: np.array(sorted(ts | {math.inf}), dtype=np.float64) for f, ts in cuts.items()}
        self.categorical = sorted(f for f in categorical if f < n_features)
        self.n_features = n_features
        index = {f: {t: j for j, t in enumerate(ts.tolist())} for f, ts in self.thresholds.items()}
        # The leaves' table (never decides: a leaf sends every row to itself), as wide as any bin.
        width = max([_CAT_MISSING_BIN + 1, *(len(ts) + 1 for ts in self.thresholds.values())])
        tables: list[np.ndarray] = [np.zeros(width, dtype=np.uint8)]
        offset = width
        n_nodes = sum(len(t.nodes) for t in trees)
        feature = np.zeros(n_nodes, dtype=np.intp)
        table = np.zeros(n_nodes, dtype=np.intp)
        child = np.empty(2 * n_nodes, dtype=np.intp)  # [2n]: where n sends a row going right, [2n+1]: left
        value = np.zeros(n_nodes, dtype=np.float64)
        roots, depth, base = [], 0, 0
        cat_bins = np.arange(_CAT_MISSING_BIN, dtype=np.intp)
        for tree in trees:
            nodes, raw_bitsets = tree.nodes, tree.raw_left_cat_bitsets
            roots.append(base)
            depth = max(depth, int(nodes["depth"].max()))
            for n, node in enumerate(nodes.tolist()):
                g = base + n
                row = dict(zip(nodes.dtype.names, node))
                if row["is_leaf"]:
                    value[g] = row["value"]
                    child[2 * g] = child[2 * g + 1] = g
                    continue
                f, missing_left = int(row["feature_idx"]), int(bool(row["missing_go_to_left"]))
                if f >= n_features:
                    raise NotCompilable(f"a split on feature {f} of {n_features}")
                if row["is_categorical"]:
                    left = (raw_bitsets[row["bitset_idx"], cat_bins // 32] >> (cat_bins % 32)) & 1
                    seen = (known[f_idx_map[f], cat_bins // 32] >> (cat_bins % 32)) & 1
                    decide = np.where(left == 1, 1, np.where(seen == 1, 0, missing_left))
                    decide = np.append(decide, missing_left)  # bin 256: missing or unseen
                else:
                    j = index[f][row["num_threshold"]]
                    decide = (np.arange(len(self.thresholds[f]) + 1) <= j).astype(np.intp)
                    decide[-1] = missing_left  # the NaN bin
                feature[g], table[g] = f, offset
                tables.append(decide.astype(np.uint8))
                offset += len(decide)
                child[2 * g] = base + int(row["right"])
                child[2 * g + 1] = base + int(row["left"])
            base += len(nodes)
        self.decide = np.concatenate(tables)
        self.feature, self.table, self.child, self.value = feature, table, child, value
        self.roots = np.array(roots, dtype=np.intp)
        self.is_split = child[1::2] != np.arange(n_nodes)
        self.depth = depth

    def bins(self, data: "np.ndarray") -> "np.ndarray":
        """Each feature's bin (see class doc) of the classifier's input array."""
        import numpy as np

        out = np.zeros(data.shape, dtype=np.intp)
        for f, thresholds in self.thresholds.items():
            out[:, f] = np.searchsorted(thresholds, data[:, f], side="left")
        for f in self.categorical:
            codes = data[:, f]
            missing = np.isnan(codes) | (codes < 0)
            out[:, f] = np.where(missing, _CAT_MISSING_BIN, np.where(missing, 0, codes)).astype(np.intp)
        return out

    def raw(self, data: "np.ndarray") -> "np.ndarray":
        """``_raw_predict`` of the classifier's input array: shape (rows, outputs), F order."""
        import numpy as np

        n, trees = len(data), len(self.roots)
        bins = self.bins(data).ravel()
        node = np.tile(self.roots, n)  # (row, tree) -> the node it has reached
        start = np.repeat(np.arange(n, dtype=np.intp) * self.n_features, trees)
        feature, table, decide, child = self.feature, self.table, self.decide, self.child
        reached, where = node, None  # every (row, tree); where the pairs still going down are in it
        for level in range(self.depth):
            if level and level % _COMPACT_EVERY == 0:  # go on with the pairs not yet at a leaf
                if where is None:
                    reached = node
                else:
                    reached[where] = node
                going = np.flatnonzero(self.is_split.take(node))
                where = going if where is None else where.take(going)
                node, start = node.take(going), start.take(going)
                if not len(node):
                    break
            at = feature.take(node)
            at += start
            step = table.take(node)
            step += bins.take(at)
            node <<= 1
            node += decide.take(step)
            node = child.take(node)
        if where is None:
            reached = node
        else:
            reached[where] = node
        acc = np.empty((n, self.n_iter + 2, self.k), dtype=np.float64)
        acc[:, 0, :] = 0.0  # as _raw_predict: zeros, += baseline, += each tree in order
        acc[:, 1, :] = self.baseline
        acc[:, 2:, :] = self.value.take(reached).reshape(n, self.n_iter, self.k)
        return np.asfortranarray(np.add.accumulate(acc, axis=1)[:, -1, :])


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
        tree_categorical = {p for p, _, _ in self.categorical if mask[order[p]]}
        for p, name, table in self.categorical:
            if p in tree_categorical and not all(c.is_integer() and 0 <= c < _CAT_MISSING_BIN
                                                 for c in table.values() if not math.isnan(c)):
                raise NotCompilable(f"{name}: a category code outside 0..255")
        self.forest = _Forest(model, tree_categorical, self.n_features)
        self.known_cat_bitsets, self.f_idx_map = model._bin_mapper.make_known_categories_bitsets()
        self.n_threads = _openmp_effective_n_threads()

    def matrix(self, X: "pd.DataFrame") -> "np.ndarray":
        """The classifier's input array of model-input rows."""
        import numpy as np

        from mlops.data import few_row_columns

        columns = few_row_columns(X, [name for _, name, _ in self.categorical], [name for _, name in self.numeric])
        out = np.empty((len(X), self.n_features), dtype=np.float64)
        nan = float("nan")
        for position, name, table in self.categorical:
            out[:, position] = [table.get(v, nan) if isinstance(v, str) else nan
                                for v in columns[name].to_numpy(dtype=object).tolist()]
        for position, name in self.numeric:
            out[:, position] = columns[name].to_numpy(dtype=np.float64)
        return out

    def predict_proba(self, X: "pd.DataFrame", forest: bool | None = None) -> "np.ndarray":
        """The pipeline's ``predict_proba(X)``, bit for bit (HistGradientBoostingClassifier's
        ``_raw_predict`` and loss link on the encoded array). The trees are evaluated together
        (:class:`_Forest`) up to ``FOREST_MAX_ROWS`` rows, else by the classifier's predictors;
        ``forest`` forces either."""
        data = self.matrix(X)
        if forest is None:
            forest = len(data) <= FOREST_MAX_ROWS
        return self.model._loss.predict_proba(self.forest.raw(data) if forest else self._raw(data))

    def _raw(self, data: "np.ndarray") -> "np.ndarray":
        """``_raw_predict`` by the classifier's own tree predictors."""
        import numpy as np

        model = self.model
        raw = np.zeros((len(data), model.n_trees_per_iteration_), dtype=model._baseline_prediction.dtype, order="F")
        raw += model._baseline_prediction
        for predictors in model._predictors:
            for k, predictor in enumerate(predictors):
                raw[:, k] += predictor.predict(data, self.known_cat_bitsets, self.f_idx_map, self.n_threads)
        return raw


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
        for forest in (True, False):  # both ways of evaluating the trees
            try:
                expected, got = pipeline.predict_proba(rows), compiled.predict_proba(rows, forest=forest)
            except Exception as exc:  # noqa: BLE001 - any failure means: do not use it
                log.warning("scoring with the pipeline itself: the compiled one failed (%s: %s)",
                            type(exc).__name__, exc)
                return None
            if expected.shape != got.shape or not np.array_equal(expected, got, equal_nan=True):
                log.warning("scoring with the pipeline itself: the compiled one differs from it on the example")
                return None
    return compiled

"""Request rows: checked against the data set's schema, then scored by the package's own code.

Scoring uses exactly what training, ``evaluate`` and drift use: ``mlops.data.make_features`` on
the raw columns, then ``mlops.modeling.model_input``, then the pipeline's ``predict_proba``. There is
no second feature path; the checks here only refuse what that path would silently misread.

What a row may hold (``mlops.served.request_columns``): the raw columns known before departure.
- A required column absent from the row: 422 ``missing``.
- A column the schema does not declare, or an outcome column (``leaking``, the target's column):
  422 ``unknown column`` / ``outcome column`` (refused rather than ignored, so a client that sends a
  whole batch row learns that those values are never used).
- A wrong JSON type (a string for a number, a number for a category, a bool anywhere, a time that
  does not parse): 422 ``wrong type``. ``null`` is accepted for features (scored as missing, like
  an empty cell in a batch) but not for the row key and the time column.
- A category the served model was not fitted with: 422 ``unknown category``. The pipeline's encoder
  would score it as missing (``handle_unknown="use_encoded_value"``), i.e. silently as a different
  flight: the service refuses it and names the values it knows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlops.config import Schema

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class RowError(ValueError):
    """A request row the service refuses (HTTP 422)."""

    def __init__(self, index: int | None, field: str | None, problem: str) -> None:
        self.index, self.field, self.problem = index, field, problem
        where = f"row {index}" if index is not None else "body"
        super().__init__(f"{where}{f', field {field!r}' if field else ''}: {problem}")

    def detail(self) -> dict[str, Any]:
        """The 422 answer's body."""
        return {"error": str(self), "row": self.index, "field": self.field, "problem": self.problem}


@dataclass(frozen=True)
class RowSpec:
    """What a row may and must hold, computed once from the schema."""

    required: tuple[str, ...]
    accepted: tuple[str, ...]
    kinds: dict[str, str]
    nullable: frozenset[str]
    outcome: frozenset[str]

    @classmethod
    def from_schema(cls, schema: Schema) -> "RowSpec":
        """The spec of ``schema`` (see module doc)."""
        from mlops.served import request_columns

        required, optional = request_columns(schema)
        kinds = {c: schema.columns[c].dtype for c in [*required, *optional]}
        strict = {*schema.row_key, schema.time_column}
        return cls(tuple(required), tuple([*required, *optional]), kinds,
                   frozenset(c for c in kinds if c not in strict),
                   frozenset({*schema.leaking, schema.target_column}))


def _type_problem(value: Any, kind: str) -> str | None:
    """Why ``value`` is not a JSON value of schema dtype ``kind`` (None: it is)."""
    if isinstance(value, bool):
        return f"a boolean is not a {kind}"
    if kind in ("int", "float"):
        if not isinstance(value, (int, float)):
            return f"expected a number, got {type(value).__name__}"
        if isinstance(value, float) and not math.isfinite(value):
            return "expected a finite number"
        if kind == "int" and isinstance(value, float) and not value.is_integer():
            return f"expected a whole number, got {value}"
        return None
    if kind == "datetime":
        if not isinstance(value, str):
            return f"expected an ISO 8601 time as a string, got {type(value).__name__}"
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return f"{value!r} is not an ISO 8601 time"
        return None
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    return None


def check_rows(rows: Any, spec: RowSpec, categories: dict[str, frozenset[str]], max_rows: int) -> list[dict]:
    """The request's rows when every one is acceptable; RowError naming the first bad row and field.
    A row count over ``max_rows`` is a ValueError (HTTP 413)."""
    if not isinstance(rows, list) or not rows:
        raise RowError(None, "rows", "expected a non-empty list of rows")
    if len(rows) > max_rows:
        raise OverflowError(f"{len(rows)} rows in one request; at most {max_rows} (SERVING_MAX_ROWS)")
    required, kinds, nullable, outcome = spec.required, spec.kinds, spec.nullable, spec.outcome
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RowError(i, None, f"expected an object of columns, got {type(row).__name__}")
        for name in required:
            if name not in row:
                raise RowError(i, name, "missing")
        for name, value in row.items():
            kind = kinds.get(name)
            if kind is None:
                raise RowError(i, name, "outcome column: not known before departure, never accepted"
                               if name in outcome else "unknown column: not in the data set's schema")
            if value is None:
                if name not in nullable:
                    raise RowError(i, name, "missing (null): the row key and time columns need a value")
                continue
            problem = _type_problem(value, kind)
            if problem:
                raise RowError(i, name, f"wrong type: {problem}")
            known = categories.get(name)
            if known is not None and value not in known:
                raise RowError(i, name, f"unknown category {value!r}: the served model knows "
                                        f"{sorted(known)}")
    return rows


def frame(rows: list[dict], spec: RowSpec) -> "pd.DataFrame":
    """The rows as a raw batch frame (absent optional columns as missing)."""
    import pandas as pd

    return pd.DataFrame.from_records(rows, columns=list(spec.accepted))


def predict(model: Any, raw: "pd.DataFrame", schema: Schema) -> "np.ndarray":
    """Delay probabilities of raw rows: the same feature code as training and evaluate; ``model``
    is the pipeline or its compiled form (:mod:`mlops_serving.compiled`)."""
    from mlops.data import make_features
    from mlops.modeling import model_input

    return model.predict_proba(model_input(make_features(raw, schema), schema))[:, 1]


def model_categories(model: Any, schema: Schema) -> dict[str, frozenset[str]]:
    """The categories the pipeline's encoder was fitted with, by column (empty when it has none)."""
    from sklearn.preprocessing import OrdinalEncoder

    found: dict[str, frozenset[str]] = {}
    for step in getattr(model, "named_steps", {}).values():
        for _, encoder, columns in getattr(step, "transformers_", []):
            if isinstance(encoder, OrdinalEncoder):
                for column, cats in zip(columns, encoder.categories_):
                    if column in schema.categorical:
                        found[column] = frozenset(str(c) for c in cats)
    return found

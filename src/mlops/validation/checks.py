"""The checks of a parsed batch. Each records its verdict in a :class:`Findings`; a failure names
the check, the columns and, where a row is to blame, the line of the file.

Groups (``checks=`` of :func:`mlops.validate.validate_batch`): ``schema`` (columns, dtypes and
the temporal integrity, always run), ``quality`` (nulls, ranges, categories), ``anomalies``
(duplicates, the row key within the batch and against the accepted batches, outliers) and
``distribution`` (label rate and volume against the accepted history, Evidently drift against the
accepted reference).
"""

from __future__ import annotations

import re
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from mlops import batches, config
from mlops.config import Schema
from mlops.validation.calendar import expected_dates, week_bounds
from mlops.validation.findings import Findings, Stop
from mlops.validation.sniff import ParsedBatch

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlops.validation.accepted_index import AcceptedIndex

_ISO_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}")
_THOUSANDS = re.compile(r"^\s*[+-]?\d{1,3}(,\d{3})+(\.\d+)?\s*$")


def _first(mask: "pd.Series | np.ndarray") -> int:
    """Position of the first True."""
    import numpy as np

    return int(np.flatnonzero(np.asarray(mask))[0])


# --- file name -----------------------------------------------------------------------------------
def check_batch_name(found: Findings, week: str, path_name: str) -> None:
    """The file is named by the ISO week its rows belong to (``2013-W07.csv``)."""
    try:
        week_bounds(week)
    except ValueError as exc:
        raise found.stop("temporal.batch_name", f"the file name {path_name!r} does not name an ISO "
                         f"week: {exc}; batches are named like 2013-W07.csv") from None


# --- schema --------------------------------------------------------------------------------------
def _name_hint(missing: list[str], header: list[str]) -> str:
    near = {m: h for m in missing for h in header if h != m and h.strip().lower() == m.lower()}
    if not near:
        return ""
    return " (the header has " + ", ".join(f"{h!r} for {m!r}" for m, h in near.items()) + ")"


def _display(name: str, header: list[str]) -> str:
    return name if name.strip() else f"(unnamed column {header.index(name) + 1})"


def check_schema(found: Findings, batch: ParsedBatch, schema: Schema) -> None:
    """Required columns, the extra-column policy and dtypes; stops when columns or dtypes are
    wrong (every later check relies on them)."""
    import pandas as pd

    df, header = batch.frame, batch.header
    missing = [c for c in schema.columns if c not in header]
    if missing:
        found.fail("schema.missing_columns", f"required column(s) missing: {missing}"
                   + _name_hint(missing, header), missing, 1)
    extra = [h for h in header if h not in schema.columns]
    if extra:
        shown = [_display(h, header) for h in extra]
        detail = f"column(s) the schema ({schema.path}) does not declare: {shown}"
        if schema.extra_columns == "reject":
            found.fail("schema.extra_columns", f"{detail} (the schema's header.extra_columns is "
                       "reject)", shown, 1, extra_columns=shown)
        else:
            found.warn("schema.extra_columns", f"{detail}; ignored", shown, extra_columns=shown)
    wrong: dict[str, str] = {}
    lines: dict[str, int] = {}
    for name, spec in schema.columns.items():
        if name not in df.columns:
            continue
        col = df[name]
        if col.isna().all():
            continue  # entirely null: reported by the quality check
        if spec.dtype in ("int", "float"):
            if pd.api.types.is_bool_dtype(col):
                wrong[name] = f"expected {spec.dtype}, got true/false values"
                lines[name] = batch.line_of(_first(col.notna()))
                continue
            numbers = col if pd.api.types.is_numeric_dtype(col) else pd.to_numeric(col, errors="coerce")
            bad = col.notna() & numbers.isna()
            if bad.any():
                pos = _first(bad)
                value = col.iloc[pos]
                hint = " (a thousands separator?)" if _THOUSANDS.match(str(value)) else ""
                wrong[name] = (f"expected {spec.dtype}, got {value!r}{hint} at line "
                               f"{batch.line_of(pos)} ({int(bad.sum())} such value(s))")
                lines[name] = batch.line_of(pos)
            elif spec.dtype == "int":
                frac = numbers.notna() & (numbers != numbers.round())
                if frac.any():
                    pos = _first(frac)
                    wrong[name] = (f"expected int, got fractional value {col.iloc[pos]!r} at line "
                                   f"{batch.line_of(pos)}")
                    lines[name] = batch.line_of(pos)
        elif spec.dtype == "datetime":
            parsed = pd.to_datetime(col, utc=True, errors="coerce", format="ISO8601")
            bad = col.notna() & parsed.isna()
            # An ISO date that does not exist (2013-02-31) is the temporal check's to report.
            bad &= ~col.astype("string").str.match(_ISO_DATE.pattern).fillna(False).astype(bool)
            if bad.any():
                pos = _first(bad)
                wrong[name] = (f"expected an ISO date-time, got {col.iloc[pos]!r} at line "
                               f"{batch.line_of(pos)} ({int(bad.sum())} such value(s))")
                lines[name] = batch.line_of(pos)
    if wrong:
        first = min(lines.values()) if lines else None
        found.fail("schema.dtype", "; ".join(f"{k}: {v}" for k, v in wrong.items()), list(wrong),
                   first)
    if missing or wrong:
        raise Stop("schema")
    found.ok("schema", column_count=len(schema.columns))


# --- temporal integrity --------------------------------------------------------------------------
def _example(batch: ParsedBatch, mask: Any, *columns: str) -> str:
    pos = _first(mask)
    values = ", ".join(f"{c}={batch.frame[c].iloc[pos]}" for c in columns)
    return f"line {batch.line_of(pos)}: {values}"


def check_temporal(found: Findings, batch: ParsedBatch, schema: Schema, week: str,
                   min_day_ratio: float = 0.0) -> None:
    """Every row's local time lies in the named ISO week and in the data set's date range, its
    calendar columns form a real date and agree with that time; the batch covers every day of
    its week that the data set expects (``time.expected_days``), none cut short (fewer rows than
    ``min_day_ratio`` times the batch's median day)."""
    import pandas as pd

    df, tcol, tz = batch.frame, schema.time_column, schema.timezone
    raw = df[tcol]
    ts = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    impossible = raw.notna() & ts.isna()
    failed = False
    if impossible.any():
        found.fail("temporal.calendar_date", f"{tcol}: {int(impossible.sum())} value(s) are not real "
                   f"calendar dates, e.g. {_example(batch, impossible, tcol)}", [tcol],
                   batch.line_of(_first(impossible)))
        failed = True
    parts = schema.time_parts
    if {"year", "month", "day"} <= set(parts):
        cols = [parts["year"], parts["month"], parts["day"]]
        ymd = {p: pd.to_numeric(df[parts[p]], errors="coerce") for p in ("year", "month", "day")}
        complete = ymd["year"].notna() & ymd["month"].notna() & ymd["day"].notna()
        dates = pd.to_datetime(pd.DataFrame(ymd).where(complete, 2000), errors="coerce")
        unreal = complete & dates.isna()
        if unreal.any():
            found.fail("temporal.calendar_date", f"{'/'.join(cols)}: {int(unreal.sum())} row(s) are "
                       f"not real calendar dates, e.g. {_example(batch, unreal, *cols)}", cols,
                       batch.line_of(_first(unreal)))
            failed = True
    no_time = raw.isna()
    if no_time.any():
        found.fail("temporal.no_time", f"{tcol}: {int(no_time.sum())} row(s) have no time, so no "
                   f"week, e.g. line {batch.line_of(_first(no_time))}", [tcol],
                   batch.line_of(_first(no_time)))
        failed = True
    local = ts.dt.tz_convert(tz).dt.tz_localize(None)
    valid = ts.notna()
    first, last = schema.date_range
    if first or last:
        lo = pd.Timestamp(first) if first else pd.Timestamp.min
        hi = pd.Timestamp(last) + timedelta(days=1) if last else pd.Timestamp.max
        outside = valid & ((local < lo) | (local >= hi))
        if outside.any():
            span = f"{first or '...'}..{last or '...'}"
            found.fail("temporal.date_range", f"{tcol}: {int(outside.sum())} row(s) outside the data "
                       f"set's dates {span} ({tz}), e.g. {_example(batch, outside, tcol)}", [tcol],
                       batch.line_of(_first(outside)))
            failed = True
    monday, sunday = week_bounds(week)
    start, end = pd.Timestamp(monday), pd.Timestamp(sunday) + timedelta(days=1)
    elsewhere = valid & ((local < start) | (local >= end))
    if elsewhere.any():
        iso = local[elsewhere].dt.isocalendar()
        labels = (iso["year"].astype(str) + "-W" + iso["week"].astype(str).str.zfill(2))
        counts = labels.value_counts().sort_index()
        weeks = ", ".join(f"{w} ({n} rows)" for w, n in counts.head(5).items())
        found.fail("temporal.week", f"{tcol}: {int(elsewhere.sum())} of {len(df)} row(s) are not in "
                   f"week {week} ({monday}..{sunday}, {tz}) that the file name states; they are "
                   f"in {weeks}; e.g. {_example(batch, elsewhere, tcol)}", [tcol],
                   batch.line_of(_first(elsewhere)), weeks_found=dict(counts.head(20)))
        failed = True
    failed = _check_coverage(found, local[valid], schema, week, tcol, min_day_ratio) or failed
    mismatched: dict[str, Any] = {}
    for part, column in parts.items():
        stated = pd.to_numeric(df[column], errors="coerce")
        actual = getattr(local.dt, part)
        differ = valid & stated.notna() & (stated != actual)
        if differ.any():
            mismatched[column] = differ
    if mismatched:
        union = next(iter(mismatched.values()))
        for mask in mismatched.values():
            union = union | mask
        pos = _first(union)
        stamp = local.iloc[pos]
        detail = "; ".join(f"{c}: {int(m.sum())} row(s)" for c, m in mismatched.items())
        found.fail("temporal.parts", f"calendar column(s) disagree with {tcol} in {tz}: {detail}; "
                   f"e.g. line {batch.line_of(pos)}: "
                   + ", ".join(f"{c}={df[c].iloc[pos]}" for c in mismatched)
                   + f" but {tcol}={raw.iloc[pos]} is {stamp:%Y-%m-%d %H:%M} local",
                   [*mismatched, tcol], batch.line_of(pos))
        failed = True
    if not failed:
        found.ok("temporal", week=week, first=str(local.min()), last=str(local.max()))


def _check_coverage(found: Findings, local: "pd.Series", schema: Schema, week: str, tcol: str,
                    min_day_ratio: float) -> bool:
    """A partial or re-cut delivery: an expected day without rows, or one with far fewer rows
    than the batch's median day. True when it failed."""
    import statistics

    expected = expected_dates(week, schema)
    if not expected:
        return False
    counts = local.dt.normalize().value_counts()  # per day, no date object per row
    counts.index = counts.index.date
    missing = [d for d in expected if d not in counts.index]
    how = f"time.expected_days: {schema.expected_days} in {schema.path}"
    if missing:
        shown = ", ".join(f"{d:%a} {d}" for d in missing[:7])
        found.fail("temporal.missing_days", f"{tcol}: no row on {len(missing)} of the {len(expected)} day(s) "
                   f"of week {week} the data set expects ({how}): {shown} ({schema.timezone}); a partial "
                   f"extract or a week cut across files? Deliver the whole week in one file", [tcol],
                   missing_days=[str(d) for d in missing])
        return True
    rows = [int(counts[d]) for d in expected]
    median = statistics.median(rows)
    short = [(d, n) for d, n in zip(expected, rows) if n < min_day_ratio * median]
    if short:
        shown = ", ".join(f"{d:%a} {d}: {n} rows" for d, n in short[:7])
        found.fail("temporal.partial_day", f"{tcol}: {len(short)} day(s) of week {week} cut short: {shown}, "
                   f"under {min_day_ratio:g} x the {median:g} rows of the batch's median day "
                   f"(min_day_row_ratio); a partial extract?", [tcol],
                   short_days={str(d): n for d, n in short})
        return True
    return False


# --- quality -------------------------------------------------------------------------------------
def check_quality(found: Findings, batch: ParsedBatch, schema: Schema, th: dict[str, float]) -> None:
    """Null shares, ranges and categories per column."""
    import pandas as pd

    df = batch.frame
    n = len(df)
    all_null, too_many, out_of_range, unknown = [], {}, {}, {}
    first_line: dict[str, int] = {}
    for name, spec in schema.columns.items():
        if name not in df.columns:
            continue
        col = df[name]
        nulls = int(col.isna().sum())
        if nulls == n and not spec.allow_all_null:
            all_null.append(name)
            continue
        limit = spec.max_null_share if spec.max_null_share is not None else th["max_null_share"]
        if nulls / n > limit:
            too_many[name] = f"{nulls / n:.1%} null > {limit:.1%}"
        if spec.range and pd.api.types.is_numeric_dtype(col):
            lo, hi = spec.range
            bad = (col < lo) | (col > hi)
            outside = int(bad.sum())
            if outside / n > th["max_out_of_range_share"]:
                too = col[bad]
                first_line[name] = batch.line_of(_first(bad))
                out_of_range[name] = (f"{outside} value(s) outside [{lo:g}, {hi:g}] "
                                      f"(min {too.min():g}, max {too.max():g}; first at line "
                                      f"{first_line[name]})")
        if spec.categories:
            vals = col.astype("object")
            bad = col.notna() & ~vals.astype(str).isin(spec.categories)
            if bad.sum() / n > th["max_unknown_category_share"]:
                values = sorted(vals[bad].astype(str).unique())[:5]
                first_line[name] = batch.line_of(_first(bad))
                unknown[name] = (f"{bad.sum() / n:.1%} unknown > "
                                 f"{th['max_unknown_category_share']:.1%} (e.g. {values}; first at "
                                 f"line {first_line[name]})")
    if all_null:
        found.fail("quality.all_null", f"column(s) entirely null: {all_null}", all_null)
    if too_many:
        found.fail("quality.null_share", "; ".join(f"{k}: {v}" for k, v in too_many.items()),
                   list(too_many))
    if out_of_range:
        found.fail("quality.range", "; ".join(f"{k}: {v}" for k, v in out_of_range.items()),
                   list(out_of_range), min(first_line[c] for c in out_of_range))
    if unknown:
        found.fail("quality.unknown_categories",
                   "; ".join(f"{k}: {v}" for k, v in unknown.items()), list(unknown),
                   min(first_line[c] for c in unknown))
    if not (all_null or too_many or out_of_range or unknown):
        found.ok("quality", rows=n)


# --- anomalies -----------------------------------------------------------------------------------
def _key_text(batch: ParsedBatch, pos: int, schema: Schema) -> str:
    return ", ".join(f"{c}={batch.frame[c].iloc[pos]}" for c in schema.row_key)


def check_row_key(found: Findings, batch: ParsedBatch, schema: Schema, week: str, sha: str,
                  index: "AcceptedIndex | None") -> None:
    """Each row once: the row key is complete, unique within the batch and in no accepted batch."""
    import numpy as np

    from mlops.validation.accepted_index import row_key_hashes

    if not schema.row_key:
        found.skip("row_key", "the schema declares no row_key")
        return
    df, key = batch.frame, list(schema.row_key)
    incomplete = np.zeros(len(df), dtype=bool)
    cols = []  # one column's mask at a time, not a frame of them
    for c in key:
        nulls = df[c].isna().to_numpy()
        if nulls.any():
            cols.append(c)
            incomplete |= nulls
        del nulls
    if incomplete.any():
        pos = _first(incomplete)
        found.fail("row_key.missing", f"{int(incomplete.sum())} row(s) lack part of the row key "
                   f"({', '.join(key)}), e.g. line {batch.line_of(pos)}", cols, batch.line_of(pos))
    hashes = row_key_hashes(df, schema)
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    same = np.flatnonzero(ordered[1:] == ordered[:-1])
    failed = bool(incomplete.any())
    if len(same):
        dup_positions = np.unique(np.concatenate([order[same], order[same + 1]]))
        a, b = sorted((int(order[same[0]]), int(order[same[0] + 1])))
        found.fail("row_key.duplicates", f"{len(dup_positions)} row(s) share their key "
                   f"({', '.join(key)}) with another row of the batch, e.g. lines "
                   f"{batch.line_of(a)} and {batch.line_of(b)}: {_key_text(batch, a, schema)}",
                   key, batch.line_of(a), lines=[batch.line_of(int(p)) for p in dup_positions[:20]])
        failed = True
    if index is not None:
        clashes = index.clashes(hashes, week, sha)
        if clashes:
            total = len(np.unique(np.concatenate([c.positions for c in clashes])))
            first = clashes[0]
            pos = int(first.positions[0])
            where = "; ".join(f"{len(c.positions)} in batch {c.week} "
                              f"({batches.accepted_dir() / c.file})" for c in clashes[:5])
            found.fail("row_key.accepted", f"{total} row(s) are already accepted: {where}; e.g. line "
                       f"{batch.line_of(pos)}: {_key_text(batch, pos, schema)} is in batch "
                       f"{first.week}", key, batch.line_of(pos),
                       accepted_in={c.week: len(c.positions) for c in clashes})
            failed = True
    if not failed:
        found.ok("row_key", columns=key, accepted_batches=len(index.entries) if index else None)


def _duplicated(df: "pd.DataFrame", subset: list[str] | None) -> "np.ndarray":
    """``df.duplicated(subset)`` (keep the first) with one column's labels in memory at a time:
    pandas holds an int64 label array per column, more than the frame's size on a wide batch.

    The same labels as pandas (``pd.factorize`` of each column, NaN its own value), folded into
    one group id per row after each column and renumbered, so equal ids mean equal rows."""
    import numpy as np
    import pandas as pd

    if subset is not None and set(subset) - set(df.columns):
        raise KeyError(sorted(set(subset) - set(df.columns)))
    ids = np.zeros(len(df), dtype="int64")
    for name, col in df.items():
        if subset is not None and name not in subset:
            continue
        labels, uniques = pd.factorize(col.values)
        ids = ids * (len(uniques) + 1) + (labels.astype("int64") + 1)
        del labels
        ids = pd.factorize(ids)[0].astype("int64")  # < len(df): the next product cannot overflow
    return pd.Series(ids).duplicated(keep="first").to_numpy()


def check_anomalies(found: Findings, batch: ParsedBatch, schema: Schema, th: dict[str, float],
                    reference: "pd.DataFrame | None") -> None:
    """Duplicated rows and extreme outliers of numeric features (calendar columns exempt)."""
    import pandas as pd

    df = batch.frame
    n = len(df)
    subset = list(schema.duplicate_subset) if schema.duplicate_subset else None
    duplicated = _duplicated(df, subset)
    dups = int(duplicated.sum())
    if dups / n > th["max_duplicate_share"]:
        found.fail("anomalies.duplicates",
                   f"{dups} duplicate row(s) = {dups / n:.1%} > {th['max_duplicate_share']:.1%}, "
                   f"the first at line {batch.line_of(_first(duplicated))}",
                   list(subset or []), batch.line_of(_first(duplicated)), duplicates=dups)
    base = reference if reference is not None else df
    outliers: dict[str, str] = {}
    exempt = set(schema.calendar_columns)
    for name in schema.numeric:
        if (name not in df.columns or name in exempt or not pd.api.types.is_numeric_dtype(df[name])
                or not schema.columns[name].outlier_check or name not in base.columns):
            continue
        ref_col = pd.to_numeric(base[name], errors="coerce").dropna()
        if ref_col.empty:
            continue
        # Fences 3 x the 1-99 % span beyond that span: robust for skewed and zero-inflated
        # columns (precipitation, visibility) where IQR fences flag ordinary weather.
        lo, hi = ref_col.quantile(0.01), ref_col.quantile(0.99)
        span = hi - lo
        if span <= 0:
            continue
        col = df[name]
        share = float(((col < lo - 3 * span) | (col > hi + 3 * span)).sum()) / n
        if share > th["max_outlier_share"]:
            outliers[name] = f"{share:.1%} beyond 3x the 1-99% span of the reference"
    if outliers:
        found.fail("anomalies.outliers", "; ".join(f"{k}: {v}" for k, v in outliers.items()),
                   list(outliers))
    if dups / n <= th["max_duplicate_share"] and not outliers:
        found.ok("anomalies", duplicates=dups, exempt_from_outliers=sorted(exempt))


# --- history: label and volume -------------------------------------------------------------------
def reference_weeks(week: str, accepted: list[str]) -> list[str]:
    """The accepted weeks a batch is compared with: the newest ``REFERENCE_WEEKS`` before it (or,
    for a batch older than all of them, the oldest ones after it); never its own week."""
    others = [w for w in sorted(accepted) if w != week]
    earlier = [w for w in others if w < week]
    if earlier:
        return earlier[-config.REFERENCE_WEEKS:]
    return others[:config.REFERENCE_WEEKS]


def _odds_ratio(rate: float, past: float) -> float:
    """How many times the odds of ``rate`` differ from those of ``past`` (>= 1, either way)."""
    odds = [float("inf") if r >= 1 else r / (1 - r) for r in (rate, past)]
    low, high = min(odds), max(odds)
    if low == high:
        return 1.0
    return float("inf") if low == 0 or high == float("inf") else high / low


def check_label_and_volume(found: Findings, batch: ParsedBatch, schema: Schema, week: str,
                           th: dict[str, float], history: list[dict[str, Any]]) -> None:
    """The batch's rows per day and positive-label rate against the accepted history."""
    import statistics

    from mlops.validation.accepted_index import batch_figures

    if not history:
        found.skip("label", "no accepted batch yet to compare the label rate with")
        found.skip("volume", "no accepted batch yet to compare the row count with")
        return
    mine = batch_figures(batch.frame, schema, week)
    weeks = [h["week"] for h in history]
    span = weeks[0] if len(weeks) == 1 else f"{weeks[0]}..{weeks[-1]}"
    per_day = [h["rows"] / h["days"] for h in history if h.get("days")]
    if mine["days"] and per_day:
        usual = statistics.median(per_day)
        ratio = mine["rows"] / mine["days"] / usual
        info = {"rows": mine["rows"], "days": mine["days"], "rows_per_day": round(ratio * usual, 1),
                "history_rows_per_day": round(usual, 1), "ratio": round(ratio, 3),
                "history": weeks, "limits": [th["min_row_count_ratio"], th["max_row_count_ratio"]]}
        if not th["min_row_count_ratio"] <= ratio <= th["max_row_count_ratio"]:
            found.fail("volume.row_count", f"{mine['rows']} rows over {mine['days']} day(s) = "
                       f"{mine['rows'] / mine['days']:.0f} per day, {ratio:.2f} x the "
                       f"{usual:.0f} per day of the accepted batches {span} (allowed "
                       f"{th['min_row_count_ratio']:g}..{th['max_row_count_ratio']:g} x)", [], **info)
        else:
            found.ok("volume", **info)
    else:
        found.skip("volume", "no day of this batch lies in the data set's date range")
    labelled = sum(h["labelled"] for h in history)
    if mine["labelled"] and labelled:
        rate = mine["positives"] / mine["labelled"]
        past = sum(h["positives"] for h in history) / labelled
        ratio = _odds_ratio(rate, past)
        info = {"rate": round(rate, 4), "history_rate": round(past, 4),
                "odds_ratio": round(ratio, 3) if ratio != float("inf") else None,
                "history": weeks, "limit": th["max_target_odds_ratio"]}
        if ratio > th["max_target_odds_ratio"]:
            found.fail("label.target_rate", f"{schema.target_name} rate {rate:.3f} ({mine['positives']} "
                       f"of {mine['labelled']} labelled rows) against {past:.3f} in the accepted "
                       f"batches {span}: the odds differ by a factor "
                       f"{'infinite' if ratio == float('inf') else f'{ratio:.1f}'} > "
                       f"{th['max_target_odds_ratio']:g}", [schema.target_column], **info)
        else:
            found.ok("label", **info)
    else:
        found.skip("label", "no labelled row to compare")


# --- distribution --------------------------------------------------------------------------------
def read_reference(weeks: list[str], schema: Schema) -> "pd.DataFrame | None":
    """The raw feature columns of the accepted ``weeks``, sampled to ``MLOPS_REFERENCE_ROWS``."""
    import pandas as pd

    from mlops.data import read_batch

    paths = [batches.accepted_path(w) for w in weeks]
    frames = [read_batch(p, schema, columns=schema.raw_feature_columns) for p in paths if p.is_file()]
    if not frames:
        return None
    ref = pd.concat(frames, ignore_index=True)
    return ref.sample(n=min(len(ref), config.reference_rows()), random_state=0)


def check_distribution(found: Findings, batch: ParsedBatch, schema: Schema, th: dict[str, float],
                       reference: "pd.DataFrame | None", weeks: list[str],
                       html: bool | None) -> Any:
    """Drift of the monitored features against the accepted reference. Returns the Evidently
    snapshot when one was made (``html`` True; or None and the check failed), else None."""
    from mlops.data import make_features
    from mlops.column_drift import drift_columns, evidently_drift
    from mlops.validation.driftstats import dataset_drift

    cur = make_features(batch.frame, schema)
    cols = drift_columns(schema, list(cur.columns))
    if reference is None:
        found.skip("distribution", "no accepted batch yet to compare with")
        return summary_snapshot(cur, schema, cols) if html else None
    ref = make_features(reference, schema)
    limit = th["max_drift_share"]
    snapshot, engine = None, "numpy (Evidently's default tests, see mlops.validation.driftstats)"
    res = None if html else dataset_drift(cur, ref, list(schema.categorical), cols)
    if res is None or (html is None and res["share"] >= limit):
        # Only the monitored columns: keeps validation fast; the drift step reports all features.
        # Evidently's correlation plots warn on constant columns: noise for the user.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            snapshot, res = evidently_drift(cur, ref, schema, cols, limit, report_all=False)
        engine = "evidently"
    info = {"drift_share": res["share"], "drifted_columns": res["drifted_columns"],
            "reference_rows": len(ref), "reference_weeks": weeks, "threshold": limit,
            "engine": engine, "column_scores": res["columns"]}
    if res["share"] >= limit:
        found.fail("distribution", f"{res['share']:.0%} of columns drifted from the accepted "
                   f"reference {', '.join(weeks)} (limit {limit:.0%})", res["drifted_columns"], **info)
    elif res["drifted_columns"]:
        found.warn("distribution", f"drifted columns {res['drifted_columns']}", res["drifted_columns"],
                   **info)
    else:
        found.ok("distribution", **info)
    return snapshot


def summary_snapshot(cur: "pd.DataFrame", schema: Schema, cols: list[str]) -> Any:
    """Evidently data summary of a batch that has nothing to be compared with yet."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataSummaryPreset

    cats = [c for c in cols if c in schema.categorical]
    nums = [c for c in cols if c not in cats]
    from mlops.column_drift import html_safe_categories

    data = html_safe_categories(cur[cols], schema, cats)
    definition = DataDefinition(numerical_columns=nums, categorical_columns=cats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Report([DataSummaryPreset(columns=cols)]).run(
            Dataset.from_pandas(data, data_definition=definition), None)

"""Validation of a weekly batch: readable CSV, schema (columns, dtypes), quality (nulls, ranges,
categories), anomalies (duplicates, outliers) and distribution (Evidently drift against recently
accepted data). Writes ``reports/<week>/validation.json|.html``. A failing batch is MOVED to
``quarantine/`` with its reports and :class:`BatchValidationError` is raised."""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import config, metrics
from mlops.config import Schema, load_schema
from mlops.errors import BatchConflictError, BatchNotValidatedError, BatchValidationError
from mlops.util import (WEEK_RE, atomic_write_bytes, atomic_write_text, file_lock, sha256_file,
                        to_jsonable, week_of, write_json)

if TYPE_CHECKING:
    import pandas as pd

_MAGIC = [(b"PAR1", "Parquet"), (b"PK\x03\x04", "ZIP/XLSX"), (b"\x1f\x8b", "gzip"),
          (b"\x89PNG", "PNG"), (b"%PDF", "PDF"), (b"SQLite format", "SQLite"),
          (b"\xd0\xcf\x11\xe0", "XLS/OLE"), (b"ARROW1", "Arrow/Feather")]
REFERENCE_WEEKS = 4


class _Failure(Exception):
    """A check failed; ends validation early when later checks cannot run."""


class _Run:
    """Results of the checks of one batch."""

    def __init__(self, path: Path, week: str) -> None:
        self.path, self.week = path, week
        self.checks: dict[str, dict[str, Any]] = {}
        self.failures: list[tuple[str, list[str], str]] = []
        self.warnings: list[str] = []

    def ok(self, name: str, **info: Any) -> None:
        self.checks[name] = {"status": "passed", **info}

    def warn(self, name: str, detail: str, **info: Any) -> None:
        self.checks[name] = {"status": "warning", "detail": detail, **info}
        self.warnings.append(f"{name}: {detail}")

    def skip(self, name: str, detail: str) -> None:
        self.checks[name] = {"status": "skipped", "detail": detail}

    def fail(self, name: str, detail: str, columns: list[str] | None = None, **info: Any) -> None:
        cols = sorted(columns or [])
        self.checks[name] = {"status": "failed", "detail": detail, "columns": cols, **info}
        self.failures.append((name, cols, detail))


def resolve_batch(path: str | Path) -> Path:
    """A batch path, or a week label meaning ``landing/<week>.csv``."""
    p = Path(path)
    if not p.exists() and WEEK_RE.match(str(path)):
        return config.landing_dir() / f"{path}.csv"
    return p.expanduser().absolute()


def _read_bytes(run: _Run) -> bytes:
    p = run.path
    if not p.exists():
        run.fail("readable", f"no such file: {p}")
        raise _Failure
    if not p.is_file():
        run.fail("readable", f"not a regular file: {p}")
        raise _Failure
    try:
        data = p.read_bytes()
    except OSError as exc:
        run.fail("readable", f"cannot read: {exc.strerror or exc}")
        raise _Failure from exc
    run.ok("readable", bytes=len(data))
    return data


def _parse_csv(run: _Run, data: bytes, schema: Schema) -> "pd.DataFrame":
    import pandas as pd

    from mlops.data import read_batch

    if not data.strip():
        run.fail("empty_file", "the file is empty (0 bytes or only whitespace)")
        raise _Failure
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            run.fail("format", f"not a CSV file: looks like {kind}")
            raise _Failure
    if b"\x00" in data[:65536]:
        run.fail("format", "not a CSV file: binary content (NUL bytes)")
        raise _Failure
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        run.fail("format", f"not UTF-8 text at byte {exc.start}")
        raise _Failure from exc
    head = text.lstrip()[:1]
    if head in ("{", "["):
        run.fail("format", "not a CSV file: looks like JSON")
        raise _Failure
    if head == "<":
        run.fail("format", "not a CSV file: looks like XML/HTML")
        raise _Failure
    rows = csv.reader(io.StringIO(text))
    try:
        header = next(rows)
        n = len(header)
        bad: list[int] = []
        count = 0
        for i, row in enumerate(rows, start=2):
            if not row:
                continue
            count += 1
            if len(row) != n:
                bad.append(i)
    except csv.Error as exc:
        run.fail("corrupt", f"unparseable CSV: {exc}")
        raise _Failure from exc
    if n < 2:
        run.fail("format", f"not a CSV file with the schema's columns: header has {n} field(s)")
        raise _Failure
    if count == 0:
        run.fail("header_only", "the file has a header but no data rows")
        raise _Failure
    if bad:
        truncated = not text.endswith("\n") and bad[-1] >= count
        what = "truncated file" if truncated else "corrupt rows"
        run.fail("truncated" if truncated else "corrupt", f"{what}: {len(bad)} row(s) with a field count other than {n}, "
                            f"first at line {bad[0]}", lines=bad[:20])
        raise _Failure
    try:
        df = read_batch(io.StringIO(text), schema)
    except (ValueError, pd.errors.ParserError) as exc:
        run.fail("corrupt", f"pandas cannot parse the CSV: {exc}")
        raise _Failure from exc
    run.ok("format", rows=len(df), column_count=len(df.columns))
    return df


def _check_schema(run: _Run, df: "pd.DataFrame", schema: Schema) -> None:
    import pandas as pd

    missing = [c for c in schema.columns if c not in df.columns]
    if missing:
        run.fail("schema.missing_columns", f"required column(s) missing: {missing}", missing)
    wrong: dict[str, str] = {}
    for name, spec in schema.columns.items():
        if name not in df.columns:
            continue
        col = df[name]
        non_null = col.dropna()
        if non_null.empty:
            continue  # entirely null: reported by the quality check
        if spec.dtype in ("int", "float"):
            if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                wrong[name] = f"expected {spec.dtype}, got {col.dtype} (e.g. {non_null.iloc[0]!r})"
            elif spec.dtype == "int" and not (non_null == non_null.round()).all():
                wrong[name] = "expected int, got fractional values"
        elif spec.dtype == "datetime":
            parsed = pd.to_datetime(non_null, utc=True, errors="coerce", format="ISO8601")
            if parsed.isna().any():
                bad = non_null[parsed.isna()].iloc[0]
                wrong[name] = f"expected datetime, got {bad!r}"
    if wrong:
        run.fail("schema.dtype", "; ".join(f"{k}: {v}" for k, v in wrong.items()), list(wrong))
    if not missing and not wrong:
        run.ok("schema", column_count=len(schema.columns))


def _check_quality(run: _Run, df: "pd.DataFrame", schema: Schema, th: dict[str, float]) -> None:
    import pandas as pd

    n = len(df)
    all_null, too_many, out_of_range, unknown = [], {}, {}, {}
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
            outside = int(((col < lo) | (col > hi)).sum())
            if outside / n > th["max_out_of_range_share"]:
                too = col[(col < lo) | (col > hi)]
                out_of_range[name] = (f"{outside} value(s) outside [{lo:g}, {hi:g}] "
                                      f"(min {too.min():g}, max {too.max():g})")
        if spec.categories:
            vals = col.dropna().astype(str)
            unk = vals[~vals.isin(spec.categories)]
            if len(unk) / n > th["max_unknown_category_share"]:
                unknown[name] = (f"{len(unk) / n:.1%} unknown > {th['max_unknown_category_share']:.1%}"
                                 f" (e.g. {sorted(unk.unique())[:5]})")
    if all_null:
        run.fail("quality.all_null", f"column(s) entirely null: {all_null}", all_null)
    if too_many:
        run.fail("quality.null_share", "; ".join(f"{k}: {v}" for k, v in too_many.items()),
                 list(too_many))
    if out_of_range:
        run.fail("quality.range", "; ".join(f"{k}: {v}" for k, v in out_of_range.items()),
                 list(out_of_range))
    if unknown:
        run.fail("quality.unknown_categories",
                 "; ".join(f"{k}: {v}" for k, v in unknown.items()), list(unknown))
    if not (all_null or too_many or out_of_range or unknown):
        run.ok("quality", rows=n)


def _reference(schema: Schema, week: str) -> "pd.DataFrame | None":
    """Recently accepted batches (before this week) as raw reference, or None."""
    import pandas as pd

    from mlops.data import read_batch

    files = [p for p in sorted(config.accepted_dir().glob("*.csv")) if week_of(p) != week]
    earlier = [p for p in files if week_of(p) < week] or files
    chosen = earlier[-REFERENCE_WEEKS:]
    if not chosen:
        return None
    frames = [read_batch(p, schema, columns=schema.raw_feature_columns) for p in chosen]
    ref = pd.concat(frames, ignore_index=True)
    return ref.sample(n=min(len(ref), config.reference_rows()), random_state=0)


def _check_anomalies(run: _Run, df: "pd.DataFrame", schema: Schema, th: dict[str, float],
                     reference: "pd.DataFrame | None") -> None:
    import pandas as pd

    n = len(df)
    subset = list(schema.duplicate_subset) if schema.duplicate_subset else None
    dups = int(df.duplicated(subset=subset).sum())
    if dups / n > th["max_duplicate_share"]:
        run.fail("anomalies.duplicates",
                 f"{dups} duplicate row(s) = {dups / n:.1%} > {th['max_duplicate_share']:.1%}",
                 list(subset or []), duplicates=dups)
    base = reference if reference is not None else df
    outliers: dict[str, str] = {}
    for name in schema.numeric:
        if (name not in df.columns or not pd.api.types.is_numeric_dtype(df[name])
                or not schema.columns[name].outlier_check):
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
        run.fail("anomalies.outliers", "; ".join(f"{k}: {v}" for k, v in outliers.items()),
                 list(outliers))
    if dups / n <= th["max_duplicate_share"] and not outliers:
        run.ok("anomalies", duplicates=dups)


def _check_distribution(run: _Run, df: "pd.DataFrame", schema: Schema, th: dict[str, float],
                        reference: "pd.DataFrame | None") -> Any:
    from mlops.data import make_features
    from mlops.drift import drift_columns, evidently_drift

    cur = make_features(df, schema)
    if reference is None:
        run.skip("distribution", "no accepted batch yet to compare with")
        return _summary_snapshot(cur, schema, drift_columns(schema, list(cur.columns)))
    ref = make_features(reference, schema)
    cols = drift_columns(schema, list(cur.columns))
    # Only the monitored columns: keeps validation fast; the drift step reports all features.
    snapshot, res = evidently_drift(cur, ref, schema, cols, th["max_drift_share"],
                                    report_all=False)
    info = {"drift_share": res["share"], "drifted_columns": res["drifted_columns"],
            "reference_rows": len(ref), "threshold": th["max_drift_share"]}
    if res["share"] >= th["max_drift_share"]:
        run.fail("distribution", f"{res['share']:.0%} of columns drifted from the accepted "
                                 f"reference (limit {th['max_drift_share']:.0%})",
                 res["drifted_columns"], **info)
    elif res["drifted_columns"]:
        run.warn("distribution", f"drifted columns {res['drifted_columns']}", **info)
    else:
        run.ok("distribution", **info)
    return snapshot


def _summary_snapshot(cur: "pd.DataFrame", schema: Schema, cols: list[str]) -> Any:
    """Evidently data summary of a batch that has nothing to be compared with yet."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataSummaryPreset

    cats = [c for c in cols if c in schema.categorical]
    nums = [c for c in cols if c not in cats]
    data = cur[cols].copy()
    for c in cats:
        data[c] = data[c].astype("object")
    definition = DataDefinition(numerical_columns=nums, categorical_columns=cats)
    return Report([DataSummaryPreset(columns=cols)]).run(
        Dataset.from_pandas(data, data_definition=definition), None)


def _summary_html(result: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v.get('status', ''))}</td>"
        f"<td>{html.escape(str(v.get('detail', '')))}</td>"
        f"<td>{html.escape(', '.join(v.get('columns', []) or []))}</td></tr>"
        for k, v in result["checks"].items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Validation "
            f"{html.escape(result['batch'])}</title></head><body><h1>Validation of "
            f"{html.escape(result['path'])}: {html.escape(result['status'])}</h1>"
            f"<table border='1'><tr><th>check</th><th>status</th><th>detail</th><th>columns"
            f"</th></tr>{rows}</table></body></html>\n")


def _write_html(path: Path, result: dict[str, Any], snapshot: Any) -> None:
    """The check table, followed by the Evidently report of this content when one was made.

    The Evidently part is kept in a hidden sidecar named by content hash, so that checks run
    separately (e.g. one Airflow task per check) all end up in one page.
    """
    sidecar = path.with_name(f".{path.stem}.evidently-{(result.get('sha256') or 'none')[:16]}.html")
    if snapshot is not None:
        tmp = path.with_name(f".{path.name}.tmp")
        snapshot.save_html(str(tmp))
        os.replace(tmp, sidecar)
    table = _summary_html(result)
    if sidecar.exists():
        body = sidecar.read_text(encoding="utf-8")
        inner = table.split("<body>", 1)[1].rsplit("</body>", 1)[0]
        if "<body>" in body:
            table = body.replace("<body>", f"<body>{inner}", 1)
    atomic_write_text(path, table)


def _merge_previous(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Fold in an earlier report of the same content (checks run separately or in parallel):
    the union of the checks, failed if any of them failed."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return result
    if not result.get("sha256") or old.get("sha256") != result["sha256"]:
        return result
    merged = dict(result)
    merged["checks"] = {**old.get("checks", {}), **result["checks"]}
    merged["checks_run"] = sorted(set(old.get("checks_run", [])) | set(result["checks_run"]))
    merged["warnings"] = list(dict.fromkeys([*old.get("warnings", []), *result["warnings"]]))
    failed = [k for k, v in merged["checks"].items() if v.get("status") == "failed"]
    merged["failed_checks"] = failed
    merged["status"] = "failed" if failed else "passed"
    if failed and "error" not in merged:
        merged["error"] = old.get("error")
    return merged


def _quarantine(path: Path, week: str) -> Path | None:
    """Move the batch into quarantine/ (never overwriting an earlier rejected file)."""
    if not path.is_file():
        return None
    qdir = config.quarantine_dir()
    if path.resolve().parent == qdir.resolve():
        return path
    stem = week
    if (qdir / f"{stem}.csv").exists():
        stem = f"{week}.{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}"
    dest = qdir / f"{stem}.csv"
    if path.resolve().parent == config.accepted_dir().resolve():
        shutil.copy2(path, dest)  # accepted data is never removed by validation
    else:
        shutil.move(str(path), dest)
    return dest


def validate_batch(path: str | Path, checks: list[str] | None = None,
                   **thresholds: float) -> dict[str, Any]:
    """Validate one batch file (or week label in landing/) and return the result dict.

    ``checks``: subset of ``config.VALIDATION_CHECKS`` (default all); the file format and the
    schema are always checked (the other checks need them). Checks run in separate calls on the
    same content are merged into one report. Thresholds: the ``validate`` entries of
    :data:`mlops.config.THRESHOLDS` as keyword arguments. Raises BatchValidationError after
    quarantining.
    """
    th = config.resolve_thresholds("validate", thresholds)
    wanted = list(checks) if checks else list(config.VALIDATION_CHECKS)
    bad_checks = set(wanted) - set(config.VALIDATION_CHECKS)
    if bad_checks:
        raise ValueError(f"unknown checks {sorted(bad_checks)}; known: {config.VALIDATION_CHECKS}")
    t0 = time.perf_counter()
    schema = load_schema()
    path = resolve_batch(path)
    week = week_of(path)
    run = _Run(path, week)
    sha = None
    snapshot = None
    try:
        data = _read_bytes(run)
        sha = hashlib.sha256(data).hexdigest()
        df = _parse_csv(run, data, schema)
        # Always: every other check needs the declared columns and dtypes.
        _check_schema(run, df, schema)
        if run.failures:
            raise _Failure
        if "quality" in wanted:
            _check_quality(run, df, schema, th)
        need_ref = "anomalies" in wanted or "distribution" in wanted
        reference = _reference(schema, week) if need_ref and not run.failures else None
        if "anomalies" in wanted:
            _check_anomalies(run, df, schema, th, reference)
        if "distribution" in wanted and not run.failures:
            snapshot = _check_distribution(run, df, schema, th, reference)
        elif "distribution" in wanted:
            run.skip("distribution", "skipped after earlier failures")
    except _Failure:
        pass
    status = "failed" if run.failures else "passed"
    report_dir = config.reports_dir() / week
    result: dict[str, Any] = {
        "batch": week, "path": str(path), "status": status, "sha256": sha,
        "checks": run.checks, "checks_run": wanted, "thresholds": th,
        "warnings": run.warnings, "schema": schema.path,
        "rows": run.checks.get("format", {}).get("rows"),
        "failed_checks": [f[0] for f in run.failures],
        "validated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "report_json": str(report_dir / "validation.json"),
        "report_html": str(report_dir / "validation.html"),
    }
    if run.failures:
        check, cols, detail = run.failures[0]
        also = [f[0] for f in run.failures[1:]]
        if also:
            detail = f"{detail} (also failed: {', '.join(also)})"
        result["error"] = {"check": check, "columns": cols, "detail": detail}
        qpath = _quarantine(path, week)
        if qpath is not None:
            result["quarantined_to"] = str(qpath)
            stem = qpath.name[: -len(".csv")]
            result["report_json"] = str(qpath.parent / f"{stem}.validation.json")
            result["report_html"] = str(qpath.parent / f"{stem}.validation.html")
    result["seconds"] = round(time.perf_counter() - t0, 3)
    accepted_exists = (config.accepted_dir() / f"{week}.csv").exists()
    if run.failures and not result.get("quarantined_to") and accepted_exists:
        # Keep the accepted week's passing report; file this rejection under quarantine/.
        stem = f"{week}.{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}"
        result["report_json"] = str(config.quarantine_dir() / f"{stem}.validation.json")
        result["report_html"] = str(config.quarantine_dir() / f"{stem}.validation.html")
    result = to_jsonable(result)
    targets = [(Path(result["report_json"]), Path(result["report_html"]))]
    if not (run.failures and accepted_exists):
        targets.append((report_dir / "validation.json", report_dir / "validation.html"))
    with file_lock(f"report-{week}"):
        for js, page in dict.fromkeys(targets):
            page.parent.mkdir(parents=True, exist_ok=True)
            merged = _merge_previous(js, result)
            write_json(js, merged)
            _write_html(page, merged, snapshot)
    if run.failures:
        metrics.incr("validation.failed_batches")
        err = result["error"]
        raise BatchValidationError(str(path), err["check"], err["columns"], err["detail"],
                                   result.get("quarantined_to"), result["report_json"])
    return result


def accept_batch(path: str | Path) -> str:
    """Copy a batch that passed validation (same content) into ``accepted/``; return its path.

    Idempotent for the same content; a different batch for an accepted week is refused.
    """
    path = resolve_batch(path)
    week = week_of(path)
    report = config.reports_dir() / week / "validation.json"
    if not path.is_file():
        raise BatchNotValidatedError(f"{path}: no such batch file")
    if path.resolve().parent == config.quarantine_dir().resolve():
        raise BatchNotValidatedError(f"{path}: a quarantined batch is never accepted")
    sha = sha256_file(path)
    try:
        record = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BatchNotValidatedError(f"{path}: no validation report {report}; validate first") from exc
    if record.get("status") != "passed" or record.get("sha256") != sha:
        raise BatchNotValidatedError(
            f"{path}: last validation ({report}) is {record.get('status')} for "
            f"{'this' if record.get('sha256') == sha else 'other'} content; validate first")
    dest = config.accepted_dir() / f"{week}.csv"
    with file_lock("accepted"):
        if dest.exists():
            if sha256_file(dest) == sha:
                return str(dest)
            raise BatchConflictError(f"{path}: week {week} is already accepted with different "
                                     f"content ({dest}); accepted data is never overwritten")
        atomic_write_bytes(dest, path.read_bytes())
    return str(dest)

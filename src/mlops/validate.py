"""Validation of a weekly batch, and its acceptance.

:func:`validate_batch` reads the file (:mod:`mlops.validation.sniff`), runs the checks
(:mod:`mlops.validation.checks`: schema, temporal integrity, quality, anomalies and the row key,
label and volume, distribution) and writes the report (:mod:`mlops.validation.report`). A failing
batch is MOVED to ``quarantine/`` beside its report and :class:`BatchValidationError` is raised.
:func:`accept_batch` copies a batch whose latest validation passed into ``accepted/`` and adds it
to the index of accepted row keys. Folders: :mod:`mlops.batches`.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlops import batches, config, metrics
from mlops.config import load_schema
from mlops.errors import BatchConflictError, BatchNotValidatedError, BatchValidationError
from mlops.util import file_lock, sha256_file, to_jsonable, week_of
from mlops.validation import checks as check, report, sniff
from mlops.validation.findings import ALWAYS, Findings, Stop


def _run_checks(found: Findings, path: Path, week: str, wanted: list[str],
                th: dict[str, float], html: bool | None) -> tuple[str | None, Any]:
    """Run the checks in order; return the content hash and the Evidently snapshot (or None)."""
    from mlops.validation.accepted_index import AcceptedIndex

    schema = load_schema()
    sha, snapshot = None, None
    try:
        data = sniff.read_bytes(found, path, th["max_batch_bytes"])
        sha = hashlib.sha256(data).hexdigest()
        check.check_batch_name(found, week, path.name)
        batch = sniff.parse(found, data, schema)
        del data  # the frame is all the checks need: the file's bytes do not stay for the peak
        found.group = "schema"
        check.check_schema(found, batch, schema)
        if "quality" in wanted:
            found.group = "quality"
            check.check_quality(found, batch, schema, th)
        found.group = "schema"
        check.check_temporal(found, batch, schema, week, th["min_day_row_ratio"])
        index = (AcceptedIndex.load(schema)
                 if "anomalies" in wanted or "distribution" in wanted else None)
        ref_weeks = check.reference_weeks(week, list(index.entries)) if index else []
        reference = (check.read_reference(ref_weeks, schema)
                     if index and ref_weeks and not found.failed else None)
        if "anomalies" in wanted:
            found.group = "anomalies"
            check.check_anomalies(found, batch, schema, th, reference)
            check.check_row_key(found, batch, schema, week, sha, index)
        if "distribution" in wanted and index is not None:
            found.group = "distribution"
            history = [{**index.entries[w], "week": w} for w in ref_weeks]
            check.check_label_and_volume(found, batch, schema, week, th, history)
            if not found.failed:
                snapshot = check.check_distribution(found, batch, schema, th, reference,
                                                    ref_weeks, html)
            else:
                found.skip("distribution", "skipped after earlier failures")
    except Stop:
        pass
    return sha, snapshot


def validate_batch(path: str | Path, checks: list[str] | None = None, html: bool | None = None,
                   **thresholds: float) -> dict[str, Any]:
    """Validate one batch file (or week label in landing/) and return the result dict.

    ``checks``: groups of ``config.VALIDATION_CHECKS`` (default all); the file, schema and
    temporal checks always run. ``html``: write Evidently's report into ``validation.html``
    (True), never (False), or only when the distribution check fails (None, the default: the
    decision itself needs no Evidently import, see :mod:`mlops.validation.driftstats`).
    Thresholds: the ``validate`` entries of :data:`mlops.config.THRESHOLDS`. The result is this
    run's; ``report_status`` is the report's verdict over every group's latest result. Raises
    BatchValidationError after quarantining.
    """
    th = config.resolve_thresholds("validate", thresholds)
    wanted = list(checks) if checks else list(config.VALIDATION_CHECKS)
    unknown = set(wanted) - set(config.VALIDATION_CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; known: {config.VALIDATION_CHECKS}")
    t0 = time.perf_counter()
    path = batches.resolve(path)
    week = week_of(path)
    found = Findings()
    sha, snapshot = _run_checks(found, path, week, wanted, th, html)
    schema_path = load_schema().path
    run: dict[str, Any] = {
        "batch": week, "path": str(path), "sha256": sha,
        "status": "failed" if found.failed else "passed",
        "checks": found.checks, "checks_run": sorted(wanted), "thresholds": th,
        "schema": schema_path, "rows": found.checks.get("format", {}).get("rows"),
        "failed_checks": [f.check for f in found.failures],
        "warnings": [f"{k}: {v['detail']}" for k, v in found.checks.items()
                     if v["status"] == "warning"],
        "extra_columns": found.checks.get("schema.extra_columns", {}).get("extra_columns", []),
        "validated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    error = report.error_of(found.checks)
    if error:
        run["error"] = error
    accepted_exists = batches.accepted_path(week).exists()
    targets: list[tuple[Path, Path]] = []
    if found.failed:
        moved = batches.quarantine(path, week, sha)
        if moved is not None:
            run["quarantined_to"] = str(moved)
            targets.append(batches.quarantine_report(moved))
        elif accepted_exists:
            targets.append(batches.rejection_report(week))
        # The accepted week keeps its report; a name that is no week gets none.
        if not accepted_exists and "temporal.batch_name" not in found.checks:
            targets.append(batches.week_report(week))
    else:
        if batches.in_quarantine(path):
            targets.append(batches.quarantine_report(path))
        targets.append(batches.week_report(week))
    if not targets:
        targets.append(batches.week_report(week))
    run["report_json"], run["report_html"] = (str(p) for p in targets[0])
    run["seconds"] = round(time.perf_counter() - t0, 3)
    run = to_jsonable(run)
    groups = set(ALWAYS) | set(wanted)
    with file_lock(f"report-{week}"):
        for js, page in dict.fromkeys(targets):
            merged = report.merge(report.read(js), run, groups)
            report.write(js, page, merged, snapshot, groups)
            run.setdefault("report_status", merged["status"])
    _push_verdict(week, run.get("error"))
    if found.failed:
        err = run["error"]
        raise BatchValidationError(str(path), err["check"], err["columns"], err["detail"],
                                   run.get("quarantined_to"), run["report_json"],
                                   line=err.get("line"))
    return run


def _push_verdict(week: str, error: dict[str, Any] | None) -> None:
    """Push the verdict (job ``mlops_validation``, POST: the latest rejection stays when a later
    batch passes) and how many batches sit in quarantine."""
    quarantined = len(list(batches.quarantine_dir().glob(f"*{batches.SUFFIX}")))
    samples = [metrics.Sample("mlops_validation_batch_rejected", 1 if error else 0),
               metrics.Sample("mlops_validation_quarantined_batches", quarantined)]
    if error:
        samples += [metrics.Sample("mlops_validation_last_rejection_timestamp_seconds", time.time()),
                    metrics.Sample("mlops_validation_last_rejection_info", 1,
                                   {"week": week, "check": str(error.get("check"))})]
    metrics.push("validation", samples, replace=False)


def accept_batch(path: str | Path) -> str:
    """Copy a batch whose latest validation passed (same content) into ``accepted/``; return
    its path.

    Idempotent for the same content. Refused: a different batch for an accepted week, and rows
    whose key is already in an accepted batch (checked again here, under the acceptance lock, so
    that two batches validated at the same time cannot both bring the same row).
    """
    from mlops.data import read_batch
    from mlops.validation.accepted_index import AcceptedIndex, row_key_hashes
    from mlops.validation.calendar import week_bounds

    schema = load_schema()
    path = batches.resolve(path)
    week = week_of(path)
    if not path.is_file():
        raise BatchNotValidatedError(f"{path}: no such batch file")
    try:
        week_bounds(week)
    except ValueError as exc:
        raise BatchNotValidatedError(f"{path}: {exc}") from None
    sha = sha256_file(path)
    dest = batches.accepted_path(week)

    def conflict() -> BatchConflictError:
        return BatchConflictError(f"{path}: week {week} is already accepted with different content "
                                  f"({dest}); accepted data is never overwritten")

    report_json = batches.week_report(week)[0]
    record = report.read(report_json)
    if record is None:
        raise BatchNotValidatedError(f"{path}: no validation report {report_json}; validate first")
    if record.get("status") != "passed" or record.get("sha256") != sha:
        which = "this" if record.get("sha256") == sha else "other"
        failed = record.get("failed_checks") or []
        raise BatchNotValidatedError(
            f"{path}: the latest validation ({report_json}) is {record.get('status')} for {which} "
            f"content{f' (failed: {failed})' if failed else ''}; validate first")
    with batches.accepting():
        if dest.exists():
            if sha256_file(dest) == sha:
                return str(dest)
            raise conflict()
        index = AcceptedIndex.load(schema, locked=True)
        frame = read_batch(path, schema, columns=index.columns())
        clashes = index.clashes(row_key_hashes(frame, schema), week, sha) if schema.row_key else []
        if clashes:
            where = "; ".join(f"{len(c.positions)} in batch {c.week} ({batches.accepted_dir() / c.file})"
                              for c in clashes[:5])
            raise BatchConflictError(f"{path}: row(s) with keys ({', '.join(schema.row_key)}) are "
                                     f"already accepted: {where}")
        stored = batches.store_accepted(path, week)
        index.add(week, stored, frame, sha)
    return str(stored)

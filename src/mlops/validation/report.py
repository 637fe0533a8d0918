"""The validation report of a batch: ``validation.json`` holds the latest truth for the batch's
current content and the history of every earlier run; ``validation.html`` shows both, followed by
the Evidently report of that content when one was made.

Latest truth: a run replaces every result of the check groups it ran (the file and schema
groups always run), so validating again after a fix (new content) or with other thresholds
(same content) rewrites the verdict. Groups it did not run keep their latest result for the
same content (the data_validation_dag runs one group per task, in parallel); results for other
content survive only in the history.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from mlops.util import atomic_write_text, durable_replace, to_jsonable, write_json
from mlops.validation.findings import GROUPS

HISTORY_LIMIT = 50


def read(path: Path) -> dict[str, Any] | None:
    """A report, or None when it is missing or unreadable (then it is rewritten from scratch)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    """One run as the history keeps it."""
    return {k: run.get(k) for k in ("validated_at", "path", "sha256", "status", "checks_run",
                                    "failed_checks", "error", "thresholds")}


def _order(name_entry: tuple[str, dict[str, Any]]) -> int:
    group = name_entry[1].get("group")
    return GROUPS.index(group) if group in GROUPS else len(GROUPS)


def error_of(checks: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The first failed check (in execution order) as ``{check, columns, detail, line}``."""
    failed = [(k, v) for k, v in checks.items() if v.get("status") == "failed"]
    if not failed:
        return None
    name, entry = failed[0]
    detail = entry.get("detail", "")
    also = [k for k, _ in failed[1:]]
    if also:
        detail = f"{detail} (also failed: {', '.join(also)})"
    return {"check": name, "columns": entry.get("columns", []), "detail": detail,
            "line": entry.get("line")}


def merge(previous: dict[str, Any] | None, run: dict[str, Any], groups: set[str]) -> dict[str, Any]:
    """The report after ``run`` (which ran ``groups``), given the report before it."""
    history = list((previous or {}).get("history") or [])
    if previous and "history" not in previous:  # a report written before histories were kept
        history.append(run_summary(previous))
    history.append(run_summary(run))
    kept: dict[str, dict[str, Any]] = {}
    if previous and run.get("sha256") and previous.get("sha256") == run["sha256"]:
        kept = {k: v for k, v in (previous.get("checks") or {}).items()
                if isinstance(v, dict) and v.get("group") in GROUPS and v["group"] not in groups
                and k not in run["checks"]}
    checks = dict(sorted({**kept, **run["checks"]}.items(), key=_order))
    ran = sorted({v["group"] for v in checks.values() if v.get("group") not in ("file", "schema")}
                 | set(run.get("checks_run") or []))
    report = dict(run)
    report.update(
        checks=checks, checks_run=ran,
        failed_checks=[k for k, v in checks.items() if v.get("status") == "failed"],
        warnings=[f"{k}: {v.get('detail')}" for k, v in checks.items()
                  if v.get("status") == "warning"],
        history=history[-HISTORY_LIMIT:])
    report["status"] = "failed" if report["failed_checks"] else "passed"
    # This run's failures first, in the order it ran them (as its error said), then the others.
    error = error_of({**run["checks"], **kept})
    if error:
        report["error"] = error
    else:
        report.pop("error", None)
    return to_jsonable(report)


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    return html.escape("" if value is None else str(value))


def _page(report: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{_cell(k)}</td><td>{_cell(v.get('group'))}</td><td>{_cell(v.get('status'))}</td>"
        f"<td>{_cell(v.get('detail', ''))}</td><td>{_cell(v.get('columns'))}</td>"
        f"<td>{_cell(v.get('line'))}</td></tr>"
        for k, v in report["checks"].items())
    scores = (report["checks"].get("distribution") or {}).get("column_scores") or {}
    drift = "".join(
        f"<tr><td>{_cell(c)}</td><td>{_cell(s.get('method'))}</td><td>{s.get('score', 0):.4f}</td>"
        f"<td>{_cell(s.get('threshold'))}</td><td>{_cell(s.get('drifted'))}</td></tr>"
        for c, s in scores.items())
    runs = "".join(
        f"<tr><td>{_cell(h.get('validated_at'))}</td><td>{_cell((h.get('sha256') or '')[:12])}</td>"
        f"<td>{_cell(h.get('checks_run'))}</td><td>{_cell(h.get('status'))}</td>"
        f"<td>{_cell(h.get('failed_checks'))}</td></tr>"
        for h in reversed(report.get("history") or []))
    drift_table = (f"<h2>Column drift against the reference</h2><table border='1'><tr><th>column"
                   f"</th><th>method</th><th>score</th><th>threshold</th><th>drifted</th></tr>"
                   f"{drift}</table>") if drift else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Validation "
            f"{_cell(report['batch'])}</title></head><body><h1>Validation of "
            f"{_cell(report['path'])}: {_cell(report['status'])}</h1>"
            f"<table border='1'><tr><th>check</th><th>group</th><th>status</th><th>detail</th>"
            f"<th>columns</th><th>line</th></tr>{rows}</table>{drift_table}"
            f"<h2>History (newest first)</h2><table border='1'><tr><th>validated at</th>"
            f"<th>content</th><th>checks</th><th>status</th><th>failed</th></tr>{runs}</table>"
            f"</body></html>\n")


def _sidecar(page: Path, sha: str | None) -> Path:
    return page.with_name(f".{page.stem}.evidently-{(sha or 'none')[:16]}.html")


def write(json_path: Path, html_path: Path, report: dict[str, Any], snapshot: Any,
          groups: set[str]) -> None:
    """Write the report and its page. The Evidently part is kept in a hidden sidecar named by
    content hash, so that groups validated separately (``groups``: those of this run) end up on
    one page; a distribution check run without Evidently drops the older Evidently part."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(json_path, report)
    sidecar = _sidecar(html_path, report.get("sha256"))
    if snapshot is not None:
        tmp = html_path.with_name(f".{html_path.name}.tmp")
        snapshot.save_html(str(tmp))
        durable_replace(tmp, sidecar)
    elif "distribution" in groups:
        sidecar.unlink(missing_ok=True)
    for old in html_path.parent.glob(f".{html_path.stem}.evidently-*.html"):
        if old != sidecar:
            old.unlink(missing_ok=True)
    page = _page(report)
    if sidecar.exists():
        body = sidecar.read_text(encoding="utf-8")
        inner = page.split("<body>", 1)[1].rsplit("</body>", 1)[0]
        if "<body>" in body:
            page = body.replace("<body>", f"<body>{inner}", 1)
    atomic_write_text(html_path, page)

"""The project's Grafana dashboards as data: their panels and every PromQL query they run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import requests

from testkit.promql import substitute_grafana_vars

GRAFANA = Path(__file__).resolve().parents[3] / "observability" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def panels(dashboard: dict) -> list[dict]:
    """All panels, including those nested in rows."""
    out = []
    for p in dashboard.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def variable_query(var: dict) -> str:
    """The PromQL a query variable runs: `query_result(Q)` runs Q; `label_values(metric, label)`
    runs `count by (label) (metric)` (Grafana asks the series API, which answers the same label sets)."""
    query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
    if query.startswith("query_result("):
        return query[len("query_result("):-1]
    metric, label = query[len("label_values("):-1].rsplit(",", 1)
    return f"count by ({label.strip()}) ({metric.strip()})"


def query_result_lines(result: list[dict]) -> list[str]:
    """The options Grafana's Prometheus data source makes of a `query_result(...)` answer (the
    `result` of /api/v1/query): `name{k="v",...} value timestamp_ms` per series."""
    out = []
    for series in result:
        labels = dict(series["metric"])
        name = labels.pop("__name__", "")
        inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
        out.append(f"{name}{{{inner}}} {series['value'][1]} {int(float(series['value'][0]) * 1000)}")
    return out


def variable_options(var: dict, lines: list[str]) -> list[tuple[str, str]]:
    """(text, value) of each option Grafana makes of a query variable's lines with the variable's
    regex: named groups `text` and `value`, a missing value being the text (Grafana 7.4+, "Filter
    variables with regex"); lines it does not match are left out. JavaScript's `(?<name>` is
    Python's `(?P<name>`."""
    body = var["regex"][1:].rsplit("/", 1)[0]
    pattern = re.compile(body.replace("(?<", "(?P<"))
    out = []
    for line in lines:
        match = pattern.search(line)
        if match:
            out.append((match.group("text"), match.group("value") or match.group("text")))
    return out


def defaults(dashboard: dict) -> dict[str, str]:
    """Each template variable's default value (``current.value``), as Grafana opens the dashboard."""
    out = {}
    for var in dashboard.get("templating", {}).get("list", []):
        value = var.get("current", {}).get("value")
        if value in ("$__all", ["$__all"]):
            out[var["name"]] = var.get("allValue") or ".*"  # "All" (without allValue: every value, as `.*`)
        elif isinstance(value, str):
            out[var["name"]] = value
    return out


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable of every dashboard."""
    return [(f"{name} {title} {ref}", expr)
            for (name, title, ref), expr in panel_targets()]


def panel_targets(values: dict[str, str] | None = None) -> list[tuple[tuple[str, str, str], str]]:
    """((dashboard file, panel title, refId), PromQL) of every panel target and query variable
    of every dashboard, with the variables at ``values`` (default: each dashboard's defaults)."""
    out = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        chosen = values if values is not None else defaults(dashboard)
        for sub in panels(dashboard):
            for target in sub.get("targets", []):
                out.append(((path.name, sub["title"], target["refId"]), substitute_grafana_vars(target["expr"], chosen)))
        for var in dashboard.get("templating", {}).get("list", []):
            out.append(((path.name, f"variable {var['name']}", "var"), substitute_grafana_vars(variable_query(var), chosen)))
    return out


def has_value(prometheus: str, expr: str, start: float, end: float) -> bool:
    """Whether `expr` has a sample in [start, end] at Prometheus."""
    resp = requests.get(f"{prometheus}/api/v1/query_range", timeout=30,
                        params={"query": expr, "start": start, "end": end, "step": 15})
    assert resp.status_code == 200, (expr, resp.text[:500])
    return any(not math.isnan(float(v)) for series in resp.json()["data"]["result"] for _, v in series["values"])


def serving_panel(expr: str) -> bool:
    """A panel of what the prediction service served: it has data once requests were made and a
    served week was measured, which tests/stack/test_stack_9_served.py does (and checks these panels then)."""
    return "mlops_serving_" in expr or "mlops_served_" in expr

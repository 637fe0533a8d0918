"""The project's Grafana dashboards as data: their panels and every PromQL query they run."""

from __future__ import annotations

import json
import math
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


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable of every dashboard."""
    out = []
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        for p in panels(d):
            for t in p.get("targets", []):
                out.append((f"{path.name} panel {p['id']} {t['refId']}", substitute_grafana_vars(t["expr"])))
        for v in d.get("templating", {}).get("list", []):
            query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            if query.startswith("label_values("):
                metric = query[len("label_values("):].rsplit(",", 1)[0].strip()
                out.append((f"{path.name} variable {v['name']}", metric))
    return out


def panel_targets() -> list[tuple[tuple[str, str, str], str]]:
    """((dashboard file, panel title, refId), PromQL) of every panel target and query variable
    (`label_values(metric, label)`) of every dashboard."""
    out = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for sub in [panel, *panel.get("panels", [])]:
                for target in sub.get("targets", []):
                    out.append(((path.name, sub["title"], target["refId"]), substitute_grafana_vars(target["expr"])))
        for var in dashboard.get("templating", {}).get("list", []):
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            metric, label = query[len("label_values("):-1].rsplit(",", 1)
            out.append(((path.name, f"variable {var['name']}", "var"), f"count by ({label.strip()}) ({metric.strip()})"))
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

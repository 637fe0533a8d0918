"""The project's Grafana dashboards as data: their panels and every PromQL query they run."""

from __future__ import annotations

import json
from pathlib import Path

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

"""Grafana provisioning and dashboards (no Grafana binary here: structural checks + promtool)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from testkit.grafana import DASHBOARDS, GRAFANA, dashboard_queries, panels
from testkit.promql import substitute_grafana_vars


def _datasource() -> dict:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    return ds


def test_datasource_has_a_fixed_uid() -> None:
    ds = _datasource()
    assert ds["type"] == "prometheus" and ds["uid"] == "mlops-prometheus"
    assert ds["url"] == "${MLOPS_PROMETHEUS_URL}"  # set per stack, see test_compose.py


def test_dashboard_provider_reads_its_folder_from_the_environment() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "mlops.yml").read_text())
    (provider,) = doc["providers"]
    assert doc["apiVersion"] == 1 and provider["type"] == "file"
    assert provider["options"]["path"] == "${MLOPS_GRAFANA_DASHBOARDS}"


def test_three_dashboards() -> None:
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS}
    assert titles == {"Airflow", "Celery workers", "ML model"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    uid = _datasource()["uid"]
    d = json.loads(path.read_text())
    assert d.get("uid") and len(d["uid"]) <= 40 and d.get("title"), path
    assert "${DS_" not in path.read_text(), "import placeholders are not filled by provisioning"
    ps = panels(d)
    assert ps, path
    assert len({p["id"] for p in ps}) == len(ps), "duplicate panel ids"
    for p in ps:
        where = f"{path.name} panel {p['id']} ({p.get('title')})"
        assert p.get("title") and {"x", "y", "w", "h"} <= set(p["gridPos"]), where
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": uid}, where
        assert p["targets"], where
        for t in p["targets"]:
            assert t.get("datasource", p["datasource"])["uid"] == uid, where
            assert t["expr"].strip() and t["refId"], where
    for v in d.get("templating", {}).get("list", []):
        assert v["datasource"]["uid"] == uid, v["name"]
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)


def test_every_panel_query_parses(promtool: str, tmp_path: Path) -> None:
    """Run each query through promtool as a recording rule; report every one that fails."""
    queries = dashboard_queries()
    assert len(queries) > 30
    bad = []
    for i, (where, expr) in enumerate(queries):
        rules = {"groups": [{"name": "q", "rules": [{"record": f"dashboard:query_{i}", "expr": expr}]}]}
        path = tmp_path / f"q{i}.yml"
        path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool, "check", "rules", *(str(tmp_path / f"q{i}.yml") for i in range(len(queries)))],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        for i, (where, expr) in enumerate(queries):
            one = subprocess.run([promtool, "check", "rules", str(tmp_path / f"q{i}.yml")],
                                 capture_output=True, text=True, timeout=30)
            if one.returncode != 0:
                bad.append(f"{where}: {expr}: {one.stdout.strip()} {one.stderr.strip()}")
    assert not bad, "\n".join(bad)


def test_a_broken_query_is_reported(promtool: str, tmp_path: Path) -> None:
    path = tmp_path / "q.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": [
        {"record": "dashboard:query", "expr": substitute_grafana_vars("sum(rate(x[$__rate_interval])")}]}]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0

"""Grafana provisioning and dashboards (no Grafana binary here: structural checks + promtool)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from testkit.grafana import (DASHBOARDS, GRAFANA, dashboard_queries, panels, query_result_lines, variable_options,
                             variable_query)
from testkit.promql import metric_names, substitute_grafana_vars


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


# The ML dashboard shows one data set at a time. The flights push their results without a
# `dataset` label; any other data set pushes with dataset="NAME" (src/mlops/metrics.py).
ML_DASHBOARD = GRAFANA / "dashboards" / "ml-model.json"
DATASET_MATCHER = 'dataset=~"$dataset"'
# A pushed ML result (the prediction service's own /metrics, mlops_serving_*, carry no data set).
PUSHED_SELECTOR = re.compile(r"\b(mlops_(?!serving_)\w+)\s*(\{[^{}]*\})?")
SYNTHETIC = "synthetic_drift"


def _dataset_variable() -> dict:
    (var,) = [v for v in json.loads(ML_DASHBOARD.read_text())["templating"]["list"] if v["name"] == "dataset"]
    return var


def _ml_targets() -> list[tuple[str, str]]:
    """(panel title and refId, raw expression) of every ML dashboard target reading a pushed result."""
    d = json.loads(ML_DASHBOARD.read_text())
    return [(f"{p['title']} {t['refId']}", t["expr"]) for p in panels(d) for t in p.get("targets", [])
            if PUSHED_SELECTOR.search(t["expr"])]


def test_every_pushed_ml_result_is_read_for_the_chosen_data_set() -> None:
    """One query variable `dataset`, one value at a time, the flights by default; every selector of a
    pushed result, on every dashboard, carries the variable's matcher (no panel mixes data sets)."""
    var = _dataset_variable()
    assert var["type"] == "query" and var["query"]["query"].startswith("query_result(")
    assert not var["multi"] and not var["includeAll"], "one data set at a time"
    assert var["current"]["text"] == "flights"
    targets = _ml_targets()
    assert len(targets) >= 25
    unfiltered = []
    for path in DASHBOARDS:
        for p in panels(json.loads(path.read_text())):
            for t in p.get("targets", []):
                for m in PUSHED_SELECTOR.finditer(t["expr"]):
                    if DATASET_MATCHER not in (m.group(2) or ""):
                        unfiltered.append(f"{path.name} {p['title']} {t['refId']}: {m.group(0)}")
    assert not unfiltered, "\n".join(unfiltered)


def test_the_dataset_variable_and_every_ml_panel_evaluated_per_data_set(promtool: str, tmp_path: Path) -> None:
    """Evaluated by Prometheus' engine (`promtool test rules`) on series of both data sets: the
    variable's query lists the flights (value: the empty label) and synthetic_drift; with each of
    the two options Grafana makes of it substituted, every ML panel query has data when that data
    set pushed and none when only the other one did; the champion's holdout ROC AUC shows the
    flights' 0.71 or the synthetic 1.0, never their max."""
    var = _dataset_variable()
    variable_expr = variable_query(var)
    # What the variable's query answers (checked by promtool below), as Grafana lists it.
    answer = [{"metric": {"dataset": "flights", "value": "^$"}, "value": [300, "1"]},
              {"metric": {"dataset": SYNTHETIC}, "value": [300, "1"]}]
    found = [{"labels": "{" + ", ".join(f'{k}="{v}"' for k, v in s["metric"].items()) + "}", "value": 1}
             for s in answer]
    options = dict(variable_options(var, query_result_lines(answer)))
    assert options == {"flights": "^$", SYNTHETIC: SYNTHETIC}, options
    assert var["current"]["value"] == options["flights"]

    targets = [(where, substitute_grafana_vars(expr, {"dataset": options[name]}), name)
               for where, expr in _ml_targets() for name in options]
    names = sorted({n for _, expr, _ in targets for n in metric_names(expr)} | {"mlops_last_success_timestamp_seconds"})
    labels = 'job="mlops_test", signal="data", recipe="weekly", version="1", dag_id="ml_pipeline_dag"'
    flights = [{"series": f"{n}{{{labels}}}", "values": "0.71x10"} for n in names]
    synthetic = [{"series": f'{n}{{{labels}, dataset="{SYNTHETIC}"}}', "values": "1x10"} for n in names]

    def has_data(pushed: set[str]) -> list[dict]:
        return [{"expr": f"clamp_max(count({expr}), 1)", "eval_time": "5m",
                 "exp_samples": [{"labels": "{}", "value": 1}] if name in pushed else []}
                for _, expr, name in targets]

    holdout = 'max(mlops_champion_holdout_roc_auc{dataset=~"$dataset"})'
    assert any(expr == holdout for _, expr in _ml_targets())
    both = [{"expr": variable_expr, "eval_time": "5m", "exp_samples": found},
            {"expr": substitute_grafana_vars(holdout, {"dataset": options["flights"]}), "eval_time": "5m",
             "exp_samples": [{"labels": "{}", "value": 0.71}]},
            {"expr": substitute_grafana_vars(holdout, {"dataset": options[SYNTHETIC]}), "eval_time": "5m",
             "exp_samples": [{"labels": "{}", "value": 1}]}]
    doc = {"rule_files": [], "evaluation_interval": "1m", "tests": [
        {"name": "both data sets pushed", "interval": "1m", "input_series": flights + synthetic,
         "promql_expr_test": both + has_data({"flights", SYNTHETIC})},
        {"name": "only the flights pushed", "interval": "1m", "input_series": flights,
         "promql_expr_test": has_data({"flights"})},
        {"name": "only synthetic_drift pushed", "interval": "1m", "input_series": synthetic,
         "promql_expr_test": has_data({SYNTHETIC})},
    ]}
    path = tmp_path / "dataset_test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]

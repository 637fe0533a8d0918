"""Observability on the live test stack: every Grafana panel has data, `make demo`'s closing
summary, the Pushgateway's and Alertmanager's HTTP surface.

Every panel of the three Grafana dashboards has data:

After the session's pipeline run and the retraining its drift check triggered (`runs`), each panel
query (observability/grafana/dashboards/*.json, Grafana's variables at their defaults: every DAG,
the flights' ML results) is evaluated by the stack's real Prometheus over the time since those runs
started, as Grafana would draw it: at least one series must have a value. Airflow's metrics reach
that Prometheus through the statsd-exporter test double the test stack runs, the ML results through
the stack's Pushgateway, Celery's through Flower. No Grafana binary exists here: the queries are the panels' own.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from testkit.grafana import has_value, panel_targets, serving_panel

# Panel targets allowed to be empty after a pipeline run and its retraining, with the reason.
ALLOWED_EMPTY = {
    ("ml-model.json", "Champion ROC AUC on the newest batch", "A"):
        "measured by a drift check that finds a champion; the session's first pipeline run registers "
        "its first champion after its check_drift (the alert test fills it)",
    ("ml-model.json", "Champion ROC AUC: holdout at training, each new batch", "B"):
        "the same series (mlops_drift_champion_roc_auc)",
    ("airflow.json", "Oldest queued task per queue", "A"):
        "a series only while a task instance is queued: on this stack a task waits for well under the "
        "5 s between two scrapes (test_stack_9_alerts holds one queued and sees it)",
}


def test_every_panel_has_data_after_a_pipeline_and_a_retraining(dags_ready, runs) -> None:
    assert runs["ml"]["state"] == "success" and runs["retrain"] and runs["retrain"]["state"] == "success"
    targets = [(key, expr) for key, expr in panel_targets() if not serving_panel(expr)]
    assert len(targets) > 40 and {k for k, _ in targets} >= set(ALLOWED_EMPTY), "a listed panel no longer exists"
    prometheus = dags_ready.cfg.prometheus_url
    deadline = time.monotonic() + 60  # a few scrapes after the last push
    while True:
        empty = [(key, expr) for key, expr in targets
                 if key not in ALLOWED_EMPTY and not has_value(prometheus, expr, runs["t0"], time.time())]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert not empty, "panels without data:\n" + "\n".join(f"{k}: {e}" for k, e in empty)


def test_the_ml_dashboard_shows_one_data_set_at_a_time(dags_ready, runs, monkeypatch) -> None:
    """The ML dashboard's `dataset` variable on the stack's real Prometheus: a probe data set's
    champion pushed through mlops.metrics (its grouping label `dataset`, as any data set other than
    the flights) becomes an option beside the flights; the champion holdout panel shows the flights'
    champion (as their group at the Pushgateway holds it) by default and the probe's own value with
    the probe chosen, never their max. The probe's group is deleted afterwards."""
    from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

    from mlops import metrics
    from testkit.grafana import DASHBOARDS, query_result_lines, variable_options, variable_query
    from testkit.promql import substitute_grafana_vars

    stack = dags_ready
    prometheus, probe, probe_auc = stack.cfg.prometheus_url, "dashboard_probe", 0.987654
    pusher = stack.cfg.web_login("pushgateway", "pusher")
    (path,) = [p for p in DASHBOARDS if p.name == "ml-model.json"]
    (var,) = json.loads(path.read_text())["templating"]["list"]
    holdout = 'max(mlops_champion_holdout_roc_auc{dataset=~"$dataset"})'

    def query(expr: str) -> list[dict]:
        resp = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()["data"]["result"]

    @retry(retry=retry_if_result(lambda options: probe not in options), stop=stop_after_delay(60), wait=wait_fixed(2),
           retry_error_callback=lambda state: state.outcome.result())
    def options() -> dict[str, str]:
        return dict(variable_options(var, query_result_lines(query(variable_query(var)))))

    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", stack.cfg.pushgateway_url)
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_USER", pusher[0])
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_PASSWORD", pusher[1])
    group = f"{stack.cfg.pushgateway_url}/metrics/job/mlops_champion/dataset/{probe}"
    try:
        assert metrics.push("champion", [metrics.Sample("mlops_champion_holdout_roc_auc", probe_auc)],
                            grouping={"dataset": probe})
        found = options()
        assert found.get(probe) == probe and found.get("flights") == var["current"]["value"], found
        # The flights' champion group as the Pushgateway holds it (no dataset label).
        groups = requests.get(f"{stack.cfg.pushgateway_url}/api/v1/metrics", auth=pusher, timeout=10).json()["data"]
        (flights,) = [float(m["value"]) for g in groups if g["labels"].get("job") == "mlops_champion"
                      and not g["labels"].get("dataset") for m in g["mlops_champion_holdout_roc_auc"]["metrics"]]
        assert flights != probe_auc
        shown = {name: query(substitute_grafana_vars(holdout, {"dataset": value})) for name, value in found.items()}
        assert [float(s["value"][1]) for s in shown["flights"]] == [pytest.approx(flights)], shown
        assert [float(s["value"][1]) for s in shown[probe]] == [pytest.approx(probe_auc)], shown
    finally:
        assert requests.delete(group, auth=pusher, timeout=10).status_code == 202


def test_demo_shows_the_auc_the_drift_share_and_the_firing_alerts(dags_ready, runs, capsys) -> None:
    """What `make demo` prints at its end (stack/demo.py), on the session's runs: the Prometheus
    queries with their values over the runs and graph URLs, and the alerts that are firing (the
    session's summer week drifted)."""
    from stack import demo

    demo.metrics_and_alerts(dags_ready.cfg, runs["t0"])
    out = capsys.readouterr().out
    for _, query in demo.DEMO_QUERIES:
        assert query in out, out
    queries = dict(demo.DEMO_QUERIES)
    # The flights' champions only: the session also runs synthetic_drift (test_stack_3_datasets),
    # whose champion scores 1.0.
    holdout = out.split(f"{queries['champion ROC AUC on its holdout week (each champion)']}  ->  ", 1)[1].split("\n", 1)[0]
    assert 0.5 < float(holdout.split(" -> ")[-1]) < 1, holdout
    share = out.split(f"{queries['drift share of each checked batch']}  ->  ", 1)[1].split("\n", 1)[0]
    assert 0 <= float(share.split(" -> ")[-1]) <= 1, share
    assert f"{dags_ready.cfg.prometheus_url}/graph?g0.expr=max%28mlops_drift_share%7Bdataset%3D%22%22%7D%29" in out
    assert "MlDriftDetected (warning): The latest batch drifted" in out, out
    assert "receivers: critical: webhook; warning: webhook" in out


def test_demo_shows_the_served_monitoring_of_the_served_week(dags_ready, runs) -> None:
    """`make demo`'s realised-AUC table (stack/demo_serving.py) is the served_monitoring_dag result
    of the week the demo served, not of whichever run came first: the session's pipeline accepted
    its first weeks and the drift week, and the run and result picked are the drift week's."""
    from stack.api import Airflow
    from stack.demo_serving import monitored_weeks, monitoring_run

    api = Airflow(dags_ready.cfg, *dags_ready.login("admin"))
    week = runs["drift_week"]
    assert min(runs["weeks"]) < week, runs["weeks"]  # earlier weeks were accepted in the same session
    run, result = monitoring_run(api, week, runs["t0"])
    assert run["state"] == "success", run
    assert week in monitored_weeks(api, run), run
    assert result is not None and result["week"] == week, result


def test_pushgateway_and_alertmanager_have_no_lifecycle_or_admin_api(stack) -> None:
    """No HTTP shutdown or wipe of the Pushgateway (its lifecycle and admin APIs are off);
    Alertmanager has no such switch: its /-/reload stays (for its logins, on 127.0.0.1, docs/security.md)."""
    pushgateway, alertmanager = stack.cfg.pushgateway_url, stack.cfg.alertmanager_url
    # Even with a login (anonymous calls get 401: test_stack_4_grants.py).
    pusher, admin = stack.cfg.web_login("pushgateway", "pusher"), stack.cfg.web_login("alertmanager", "admin")
    assert requests.put(f"{pushgateway}/-/quit", auth=pusher, timeout=10).status_code == 403
    assert requests.put(f"{pushgateway}/api/v1/admin/wipe", auth=pusher, timeout=10).status_code == 404
    assert requests.get(f"{pushgateway}/-/ready", auth=pusher, timeout=10).status_code == 200
    assert requests.post(f"{alertmanager}/-/quit", auth=admin, timeout=10).status_code == 404
    assert requests.post(f"{alertmanager}/-/reload", auth=admin, timeout=10).status_code == 200
    status = requests.get(f"{alertmanager}/api/v2/status", auth=admin, timeout=10).json()
    assert status["cluster"]["status"] == "disabled", status["cluster"]

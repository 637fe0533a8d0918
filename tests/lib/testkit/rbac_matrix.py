"""RBAC matrix of the FAB auth manager with the users and roles of airflow/rbac.yaml: the checks
the native stack (tests/stack/test_stack_2_rbac.py) and the compose stack
(tests/compose/test_compose_3_rbac.py) both collect, each with its own `dags_ready` fixture."""

from __future__ import annotations

import requests

ML_DAGS = {"ml_pipeline_dag", "model_retraining_dag"}


def test_anonymous_and_wrong_password_get_401(dags_ready) -> None:
    stack = dags_ready
    assert stack.api("GET", "/dags", role=None).status_code == 401
    user, password = stack.login("admin")
    assert requests.get(f"{stack.cfg.api_url}/api/v2/dags", auth=(user, password), timeout=30).status_code == 401
    resp = requests.post(f"{stack.cfg.api_url}/auth/token", json={"username": user, "password": password + "x"},
                         timeout=30)
    assert resp.status_code == 401


def test_viewer_reads_but_cannot_trigger_pause_or_clear(dags_ready) -> None:
    stack = dags_ready
    dags = stack.api("GET", "/dags", role="viewer")
    assert dags.status_code == 200
    assert {"data_validation_dag", *ML_DAGS} <= {d["dag_id"] for d in dags.json()["dags"]}
    assert stack.api("GET", "/dags/ml_pipeline_dag/dagRuns", role="viewer").status_code == 200
    trigger = stack.api("POST", "/dags/ml_pipeline_dag/dagRuns", role="viewer", json={"logical_date": None})
    assert trigger.status_code == 403
    pause = stack.api("PATCH", "/dags/ml_pipeline_dag", role="viewer", json={"is_paused": True})
    assert pause.status_code == 403
    clear = stack.api("POST", "/dags/ml_pipeline_dag/clearTaskInstances", role="viewer",
                      json={"dry_run": True, "only_failed": True})
    assert clear.status_code == 403


def test_ml_engineer_sees_only_its_two_dags(dags_ready) -> None:
    stack = dags_ready
    dags = stack.api("GET", "/dags", role="ml")
    assert dags.status_code == 200
    assert {d["dag_id"] for d in dags.json()["dags"]} == ML_DAGS
    assert stack.api("GET", "/dags/data_validation_dag", role="ml").status_code in (403, 404)
    assert stack.api("GET", "/dags/data_validation_dag/dagRuns", role="ml").status_code in (403, 404)
    trigger = stack.api("POST", "/dags/data_validation_dag/dagRuns", role="ml", json={"logical_date": None})
    assert trigger.status_code in (403, 404)
    assert stack.api("GET", "/dags/model_retraining_dag", role="ml").status_code == 200


def test_pause_rights_per_role(dags_ready) -> None:
    stack = dags_ready
    # The ML engineer may edit its DAG (pause and unpause), the Op any DAG.
    for role, dag_id in (("ml", "model_retraining_dag"), ("op", "data_validation_dag")):
        for paused in (True, False):
            resp = stack.api("PATCH", f"/dags/{dag_id}", role=role, json={"is_paused": paused})
            assert resp.status_code == 200 and resp.json()["is_paused"] is paused, (role, resp.text)


def test_only_admin_manages_users(dags_ready) -> None:
    stack = dags_ready
    base = f"{stack.cfg.api_url}/auth/fab/v1/users"

    def call(method: str, role: str, url: str = base, **kw) -> int:
        headers = {"Authorization": f"Bearer {stack.token(role)}"}
        return requests.request(method, url, headers=headers, timeout=30, **kw).status_code

    for role in ("op", "ml", "viewer"):
        assert call("GET", role) == 403, role
    new_user = {"username": "rbac_probe", "password": "probe-" + stack.cfg.env["AIRFLOW_JWT_SECRET"][:12],
                "first_name": "r", "last_name": "p", "email": "rbac_probe@localhost.invalid",
                "roles": [{"name": "Viewer"}]}
    assert call("POST", "op", json=new_user) == 403
    assert call("GET", "admin") == 200
    assert call("POST", "admin", json=new_user) in (200, 201)
    assert call("DELETE", "admin", url=f"{base}/rbac_probe") in (200, 204)

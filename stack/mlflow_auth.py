"""MLflow's logins, set up idempotently at every `up` through MLflow's auth REST API.

The server runs `mlflow server --app-name basic-auth` with `default_permission = READ` (a logged-in
user reads everything; anonymous calls get 401). The admin comes from MLFLOW_ADMIN_USER /
MLFLOW_ADMIN_PASSWORD (MLflow creates it at its first start from the rendered auth config). This
module then makes sure that
- the pipeline service account (MLFLOW_PIPELINE_USER) and the read-only viewer account
  (MLFLOW_VIEWER_USER, which Prometheus scrapes /metrics with) exist with the passwords of `.env`;
- the experiment and the registered model of the pipeline exist (created by the admin, so that no
  other logged-in user can create them first and own them);
- the pipeline account holds PIPELINE_PERMISSION on both (register versions, move aliases), the
  prediction service's account (MLFLOW_SERVING_USER) SERVING_PERMISSION (read only).

`python -m stack.mlflow_auth` does the same for any MLflow server from the environment alone
(MLFLOW_TRACKING_URI, the MLFLOW_* logins, MLOPS_MODEL_NAME, MLOPS_EXPERIMENT): for the compose stack.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import requests

from stack.run import StackError

# EDIT: read, create runs and model versions, set tags and aliases; no delete, no permission
# management (MANAGE would add both).
PIPELINE_PERMISSION = "EDIT"
# The prediction service's account: reads the alias and the versions' artifacts, changes nothing.
SERVING_PERMISSION = "READ"
# maintenance_dag's account: deletes old runs of the experiment and old model versions that hold no
# alias (MANAGE is the only permission that may delete a run or a model version: EDIT cannot). It
# moves no alias and registers nothing (mlops.retention; docs/security.md).
MAINTENANCE_PERMISSIONS = {"experiment": "MANAGE", "registered_model": "MANAGE"}
API2 = "/api/2.0/mlflow"
API3 = "/api/3.0/mlflow"


@dataclass
class MlflowAdmin:
    """MLflow's REST API as the admin."""

    base: str
    auth: tuple[str, str]

    def call(self, method: str, path: str, expect: tuple[int, ...] = (200,), **kwargs) -> requests.Response:
        """One request; StackError naming the call unless the status is one of `expect`."""
        try:
            resp = requests.request(method, self.base + path, auth=self.auth, timeout=30, **kwargs)
        except requests.RequestException as exc:
            raise StackError(f"MLflow {method} {path}: {exc}") from exc
        if resp.status_code not in expect:
            raise StackError(f"MLflow {method} {path} as {self.auth[0]}: HTTP {resp.status_code} {resp.text[:300]}")
        return resp


def login_works(base: str, user: str, password: str) -> bool:
    """True when the MLflow server at `base` accepts this login (GET users/current)."""
    try:
        resp = requests.get(f"{base}{API2}/users/current", auth=(user, password), timeout=30)
    except requests.RequestException as exc:
        raise StackError(f"MLflow at {base}: {exc}") from exc
    if resp.status_code not in (200, 401):
        raise StackError(f"MLflow users/current as {user}: HTTP {resp.status_code} {resp.text[:300]}")
    return resp.status_code == 200


def _ensure_user(admin: MlflowAdmin, user: str, password: str) -> str | None:
    """The account exists with this password; a line saying what changed, or None."""
    if login_works(admin.base, user, password):
        return None
    exists = admin.call("GET", f"{API2}/users/get", expect=(200, 404), params={"username": user}).status_code == 200
    if exists:
        admin.call("PATCH", f"{API2}/users/update-password", json={"username": user, "password": password})
        return f"MLflow user {user}: password set from .env"
    admin.call("POST", f"{API2}/users/create", json={"username": user, "password": password})
    return f"MLflow user {user}: created"


def _ensure_grant(admin: MlflowAdmin, user: str, resource_type: str, resource_id: str, label: str,
                  permission: str = PIPELINE_PERMISSION) -> str | None:
    """`user` holds exactly `permission` on one resource; a line when it changed."""
    have = admin.call("GET", f"{API3}/users/permissions/get",
                      params={"username": user, "resource_type": resource_type, "resource_id": resource_id}).json()
    if have.get("permission") == permission:
        return None
    body = {"username": user, "resource_type": resource_type, "resource_id": resource_id}
    admin.call("POST", f"{API3}/users/permissions/revoke", expect=(200, 404), json=body)
    admin.call("POST", f"{API3}/users/permissions/grant", json={**body, "permission": permission})
    return f"MLflow user {user}: {permission} on {label} (was {have.get('permission')})"


def pipeline_resources(e: dict[str, str]) -> list[tuple[str, str]]:
    """(experiment, registered model) of every data set of configs/ (mlops.dataset): the
    flights' from `e` (MLOPS_EXPERIMENT, MLOPS_MODEL_NAME), each other's from its file."""
    from mlops.dataset import DEFAULT_DATASET, known_names, resolve

    found = [(e.get("MLOPS_EXPERIMENT") or e["MLOPS_MODEL_NAME"], e["MLOPS_MODEL_NAME"])]
    for name in known_names():
        if name != DEFAULT_DATASET:
            dataset = resolve(name)
            if (dataset.experiment_name, dataset.model_name) not in found:
                found.append((dataset.experiment_name, dataset.model_name))
    return found


def _ensure_resources(admin: MlflowAdmin, e: dict[str, str], experiment: str, model: str) -> list[str]:
    """One data set's experiment and registered model, created by the admin, and the grants."""
    changes: list[str] = []
    resp = admin.call("GET", f"{API2}/experiments/get-by-name", expect=(200, 404), params={"experiment_name": experiment})
    if resp.status_code == 200:
        experiment_id = resp.json()["experiment"]["experiment_id"]
    else:
        experiment_id = admin.call("POST", f"{API2}/experiments/create", json={"name": experiment}).json()["experiment_id"]
        changes.append(f"MLflow experiment {experiment}: created (id {experiment_id})")
    if admin.call("GET", f"{API2}/registered-models/get", expect=(200, 404), params={"name": model}).status_code == 404:
        admin.call("POST", f"{API2}/registered-models/create", json={"name": model})
        changes.append(f"MLflow registered model {model}: created")
    for resource_type, resource_id, label in (("experiment", experiment_id, f"experiment {experiment}"),
                                              ("registered_model", model, f"registered model {model}")):
        for user, permission in ((e["MLFLOW_PIPELINE_USER"], PIPELINE_PERMISSION),
                                 (e["MLFLOW_SERVING_USER"], SERVING_PERMISSION),
                                 (e["MLFLOW_MAINTENANCE_USER"], MAINTENANCE_PERMISSIONS[resource_type])):
            line = _ensure_grant(admin, user, resource_type, resource_id, label, permission)
            if line:
                changes.append(line)
    return changes


def ensure_accounts(base: str, e: dict[str, str], source: str) -> list[str]:
    """Apply the accounts, the pipeline's experiment and model and its grants on the MLflow server
    at `base`, from the variables `e` (read from `source`); return the changes."""
    if not login_works(base, e["MLFLOW_ADMIN_USER"], e["MLFLOW_ADMIN_PASSWORD"]):
        raise StackError(
            f"MLflow refused the admin login {e['MLFLOW_ADMIN_USER']} from {source}: MLflow sets the admin "
            "password only when it creates the user store; if you changed MLFLOW_ADMIN_PASSWORD since, put the "
            "old one back (or change it through MLflow's users/update-password API)")
    admin = MlflowAdmin(base, (e["MLFLOW_ADMIN_USER"], e["MLFLOW_ADMIN_PASSWORD"]))
    changes = [line for line in (
        _ensure_user(admin, e["MLFLOW_PIPELINE_USER"], e["MLFLOW_PIPELINE_PASSWORD"]),
        _ensure_user(admin, e["MLFLOW_VIEWER_USER"], e["MLFLOW_VIEWER_PASSWORD"]),
        _ensure_user(admin, e["MLFLOW_SERVING_USER"], e["MLFLOW_SERVING_PASSWORD"]),
        _ensure_user(admin, e["MLFLOW_MAINTENANCE_USER"], e["MLFLOW_MAINTENANCE_PASSWORD"]),
    ) if line]
    for experiment, model in pipeline_resources(e):
        changes += _ensure_resources(admin, e, experiment, model)
    return changes


VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_ADMIN_USER", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_PIPELINE_USER",
             "MLFLOW_PIPELINE_PASSWORD", "MLFLOW_VIEWER_USER", "MLFLOW_VIEWER_PASSWORD", "MLFLOW_SERVING_USER", "MLFLOW_SERVING_PASSWORD",
             "MLFLOW_MAINTENANCE_USER", "MLFLOW_MAINTENANCE_PASSWORD",
             "MLOPS_MODEL_NAME")


def main() -> int:
    """Apply the accounts from the environment; print the changes; exit 1 naming what failed."""
    missing = [name for name in VARIABLES if not os.environ.get(name)]
    if missing:
        print(f"mlflow_auth: error: environment variables not set: {', '.join(missing)}", file=sys.stderr)
        return 1
    try:
        changes = ensure_accounts(os.environ["MLFLOW_TRACKING_URI"].rstrip("/"), dict(os.environ), "the environment")
    except StackError as exc:
        print(f"mlflow_auth: error: {exc}", file=sys.stderr)
        return 1
    for line in changes:
        print(f"mlflow_auth: {line}")
    print(f"mlflow_auth: accounts and grants in sync ({len(changes)} changes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The approval gate before a champion moves: a human-in-the-loop branch (providers-standard's
``HITLBranchOperator``) between the evaluation and the deploying task.

* Switched by the Airflow Variable ``mlops_require_approval`` (else env ``MLOPS_REQUIRE_APPROVAL``;
  default off). Off: the gate approves at once without asking, so the DAGs run unattended as
  before.
* No deploy proposed (no decision recorded by this run's evaluation, or one that keeps the
  champion): the gate is skipped, never asked.
* On: the task shows the decision that ``evaluate`` recorded in MLflow for this run (candidate
  and champion versions and ROC AUC on the same holdout week, gain and margin, the drift signals
  of a retraining, links to the MLflow run and the reports) and waits in ``awaiting_input``
  (no worker slot) for Approve or Reject. A timeout (Variable ``mlops_approval_timeout``, env
  ``MLOPS_APPROVAL_TIMEOUT``, seconds; default 86400) answers Reject (the ``defaults``).
* Who may answer: the FAB permission ``can_edit`` on ``HITL Detail`` (Admin and Op; not Viewer,
  not the MLEngineer role: see airflow/rbac.yaml). Airflow refuses the others with 403.
* Approve branches to the deploying task; Reject records the reason on the candidate version
  (tag ``rejected_reason``) and branches to ``reject_task_id`` (the retraining's
  ``rollback_model``) or skips the deploy (the weekly pipeline).
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator, HITLOperator
from airflow.sdk import Param

log = logging.getLogger("mlops_airflow")

APPROVE = "Approve"
REJECT = "Reject"
APPROVAL_XCOM_KEY = "approval"
SWITCH_VARIABLE, SWITCH_ENV = "mlops_require_approval", "MLOPS_REQUIRE_APPROVAL"
TIMEOUT_VARIABLE, TIMEOUT_ENV = "mlops_approval_timeout", "MLOPS_APPROVAL_TIMEOUT"
DEFAULT_TIMEOUT_S = 86400.0
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def approval_required() -> bool:
    """The switch: Variable ``mlops_require_approval``, else env ``MLOPS_REQUIRE_APPROVAL``;
    off by default. A value that is not a boolean fails the task (never read as "off")."""
    from airflow.sdk import Variable

    from mlops_airflow.config import ConfigurationError

    raw = Variable.get(SWITCH_VARIABLE, default=None)
    where = f"Airflow Variable {SWITCH_VARIABLE!r}"
    if raw is None:
        raw, where = os.environ.get(SWITCH_ENV, ""), f"environment variable {SWITCH_ENV}"
    value = str(raw).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{where} must be true or false, got {raw!r}")


def response_timeout() -> timedelta:
    """How long the gate waits for an answer before it counts as Reject."""
    from airflow.sdk import Variable

    from mlops_airflow.config import ConfigurationError

    raw = Variable.get(TIMEOUT_VARIABLE, default=None)
    where = f"Airflow Variable {TIMEOUT_VARIABLE!r}"
    if raw is None or not str(raw).strip():
        raw, where = os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S, f"environment variable {TIMEOUT_ENV}"
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not 0 < seconds < 366 * 86400:  # also refuses NaN
        raise ConfigurationError(f"{where} must be a number of seconds in (0, 31622400), got {raw!r}")
    return timedelta(seconds=seconds)


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec) if isinstance(value, float) else str(value)


def describe(decision: dict[str, Any], drift: dict[str, Any] | None, links: dict[str, str]) -> str:
    """The Markdown body of the approval request."""
    lines = [
        f"**Candidate v{decision['version']}** vs **champion "
        f"{'v' + str(decision['champion_version']) if decision.get('champion_version') else '(none)'}** "
        f"on holdout week {decision.get('holdout_week')}",
        "",
        "| | ROC AUC |", "|---|---|",
        f"| candidate v{decision['version']} | {_fmt(decision.get('roc_auc'))} |",
        f"| champion {_fmt(decision.get('champion_version'))} | {_fmt(decision.get('champion_roc_auc'))} |",
        "",
        f"Gain {_fmt(decision.get('gain'), '+.4f')}, margin {_fmt(decision.get('margin'))}.",
        f"Decision recorded by `{decision.get('by')}`: {decision.get('reason')}",
    ]
    if drift:
        fired = drift.get("fired") or []
        lines += ["", f"**Drift** on {drift.get('week')}: {', '.join(fired) or 'none fired'}"
                      f" ({drift.get('summary', '')})"]
    if links:
        lines += ["", *[f"- [{name}]({url})" for name, url in links.items()]]
    lines += ["", "Approve deploys the candidate; Reject keeps the champion (give a reason). "
                  "No answer before the timeout counts as Reject."]
    return "\n".join(lines)


def _links(decision: dict[str, Any]) -> dict[str, str]:
    """Where to look: the candidate's MLflow run and model version, the holdout week's report."""
    from mlops import config

    links: dict[str, str] = {}
    base = (os.environ.get("MLFLOW_UI_URL") or os.environ.get("MLFLOW_TRACKING_URI") or "").rstrip("/")
    if base.startswith("http") and decision.get("run_id"):
        links["MLflow run"] = f"{base}/#/runs/{decision['run_id']}"
    if base.startswith("http"):
        links["Model version"] = f"{base}/#/models/{config.model_name()}/versions/{decision['version']}"
    week = decision.get("holdout_week")
    if week:
        links["Validation report"] = f"file://{config.reports_dir() / week / 'validation.html'}"
    return links


class DeployApprovalOperator(HITLBranchOperator):
    """Approve/Reject before ``deploy_task_id`` (see the module doc).

    :param evaluate_task_id: the evaluating task (no result: nothing proposed, skipped at once).
    :param drift_from: where the drift result is: ``"conf"`` (a retraining's ``conf["drift"]``)
        or a task id whose XCom ``drift`` holds it (the pipeline's ``check_drift``).
    """

    def __init__(self, *, deploy_task_id: str, evaluate_task_id: str,
                 reject_task_id: str | None = None, drift_from: str | None = None,
                 **kwargs: Any) -> None:
        from airflow.sdk.definitions.param import ParamsDict

        kwargs.setdefault("subject", "Deploy the candidate model?")
        # Set again from the Variable when the gate asks; given here so that the task's
        # execution_timeout (default_args) keeps bounding the work before the wait.
        kwargs.setdefault("response_timeout", timedelta(seconds=DEFAULT_TIMEOUT_S))
        params = ParamsDict(kwargs.pop("params", None) or {})
        params["reason"] = Param("", type="string",
                                 description="why (recorded on the candidate when rejected)")
        super().__init__(options=[APPROVE, REJECT], defaults=[REJECT], params=params, **kwargs)
        self.deploy_task_id = deploy_task_id
        self.evaluate_task_id = evaluate_task_id
        self.reject_task_id = reject_task_id
        self.drift_from = drift_from

    def _decision(self, context: Any) -> dict[str, Any] | None:
        from mlops_airflow.config import configure_mlflow
        from mlops_airflow.tasks import fail_fast, run_key

        configure_mlflow()
        from mlops.promotion import recorded_decision

        with fail_fast():
            return recorded_decision(run_key(context["ti"]))

    def _drift(self, context: Any) -> dict[str, Any] | None:
        if self.drift_from == "conf":
            return (context["dag_run"].conf or {}).get("drift")
        if self.drift_from:
            from mlops_airflow.drift import DRIFT_XCOM_KEY

            return context["ti"].xcom_pull(task_ids=self.drift_from, key=DRIFT_XCOM_KEY)
        return None

    def execute(self, context: Any) -> Any:
        """Skip (no deploy proposed), approve at once (gate off) or ask (gate on), on the run's
        data set."""
        from mlops_airflow.dataset import run_dataset

        with run_dataset(context):
            return self._ask(context)

    def _ask(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowSkipException

        if not context["ti"].xcom_pull(task_ids=self.evaluate_task_id):
            raise AirflowSkipException("no evaluation in this run: no deploy proposed")
        decision = self._decision(context)
        if not decision or not decision.get("deploy"):
            raise AirflowSkipException(
                "no deploy proposed: " + (decision["reason"] if decision else
                                          "this run's evaluation recorded no decision"))
        ti = context["ti"]
        if not approval_required():
            log.info("Approval gate off (%s): deploying v%s", SWITCH_VARIABLE, decision["version"])
            ti.xcom_push(key=APPROVAL_XCOM_KEY, value={"approved": True, "gate": "off",
                                                       "version": decision["version"]})
            return self.do_branch(context, self.deploy_task_id)
        self.response_timeout = response_timeout()
        self.subject = (f"Deploy v{decision['version']} of the model as champion "
                        f"({ti.dag_id})?")
        self.body = describe(decision, self._drift(context), _links(decision))
        ti.xcom_push(key=APPROVAL_XCOM_KEY, value={"asked": True, "version": decision["version"]})
        log.info("Asking for approval (timeout %s):\n%s", self.response_timeout, self.body)
        return HITLOperator.execute(self, context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """Act on the answer: Approve → the deploying task; Reject (or the timeout) → the
        reason on the candidate, then the reject task (or nothing)."""
        from mlops_airflow.dataset import run_dataset

        with run_dataset(context):
            return self._answered(context, event)

    def _answered(self, context: Any, event: dict[str, Any]) -> Any:
        answer = HITLOperator.execute_complete(self, context, event)
        decision = self._decision(context)
        if not decision or not decision.get("deploy"):  # the record changed while waiting
            return self.do_branch(context, self.reject_task_id)
        approved = answer["chosen_options"] == [APPROVE]
        user = answer.get("responded_by_user") or {}
        who = user.get("name") or user.get("id")
        reason = str((answer.get("params_input") or {}).get("reason") or "").strip()
        if not approved:
            reason = (f"rejected by {who}: {reason or 'no reason given'}" if who else
                      f"no answer within the approval timeout ({response_timeout()})")
        outcome = {"approved": approved, "by": who, "reason": reason or None,
                   "version": decision["version"], "timed_out": bool(event.get("timedout")),
                   "responded_at": answer["responded_at"].isoformat()
                   if hasattr(answer["responded_at"], "isoformat") else answer["responded_at"]}
        context["ti"].xcom_push(key=APPROVAL_XCOM_KEY, value=outcome)
        if approved:
            log.info("Approved by %s: deploying v%s", who, decision["version"])
            return self.do_branch(context, self.deploy_task_id)
        from mlops_airflow.tasks import fail_fast

        from mlops.registry import reject_candidate

        log.warning("Not approved: %s", reason)
        with fail_fast():
            reject_candidate(str(decision["version"]), reason)
        return self.do_branch(context, self.reject_task_id)

"""Promotion: the one owner of "does this candidate replace the champion, and why".

* :func:`decide` is the rule: a candidate replaces the champion when there is none, or when its
  ROC AUC on the holdout week beats the champion's on the same rows by at least
  ``deploy_margin`` (:data:`mlops.config.THRESHOLDS`). A version that was rolled back is never
  deployed again, and the champion itself is never "redeployed".
* :func:`evaluate_candidate` scores a candidate and the champion (:mod:`mlops.evaluate`) and
  attaches the decision: ``result["decision"]`` travels with the evaluation (XCom, CLI output).
* :func:`deploy` acts on a decision: it moves the aliases (:mod:`mlops.registry`) only when the
  decision was made against the current champion, otherwise it evaluates again first.
* :func:`record_decision` writes the decision on the candidate version (tags ``decision`` and
  ``decision_by``) and :func:`recorded_decision` reads it back: a deploying step acts on what
  was recorded in MLflow by the step that evaluated, never on a decision handed to it.
* :func:`select_best` picks the retraining's candidate among the recipes, on their validation
  week (which precedes the holdout week, so the holdout stays unseen by the choice).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from mlops import config, metrics, registry, tracking
from mlops.errors import RegistryError
from mlops.evaluate import evaluate_model
from mlops.util import to_jsonable


def decide(version: str, auc: float, champion_version: str | None, champion_auc: float | None,
           holdout_week: str, margin: float, rolled_back: str | None = None) -> dict[str, Any]:
    """The promotion decision for one candidate: ``deploy`` (bool), ``reason`` and the figures
    it rests on (``gain``, ``margin``, both ROC AUCs, the holdout week)."""
    gain = None if champion_auc is None else auc - champion_auc
    base = {"version": str(version), "champion_version": champion_version,
            "holdout_week": holdout_week, "roc_auc": auc, "champion_roc_auc": champion_auc,
            "gain": gain, "margin": margin}
    if rolled_back:
        return {**base, "deploy": False,
                "reason": f"v{version} was rolled back before ({rolled_back}): never redeployed"}
    if champion_version is None:
        return {**base, "deploy": True,
                "reason": f"no champion yet: v{version} (roc_auc {auc:.4f} on {holdout_week}) "
                          f"becomes the first"}
    if str(champion_version) == str(version):
        return {**base, "deploy": False, "reason": f"v{version} is already the champion"}
    verdict = "beats" if gain >= margin else "does not beat"
    return {**base, "deploy": gain >= margin,
            "reason": f"v{version} roc_auc {auc:.4f} vs champion v{champion_version} "
                      f"{champion_auc:.4f} on {holdout_week}: gain {gain:+.4f} {verdict} the "
                      f"margin {margin}"}


def _decision_of(evaluation: dict[str, Any], margin: float) -> dict[str, Any]:
    info = registry.version_info(evaluation["version"])
    rolled_back = info["tags"].get("rolled_back") if info["tags"].get("rolled_back_at") else None
    champ = evaluation.get("champion_metrics")
    return decide(evaluation["version"], evaluation["metrics"]["roc_auc"],
                  evaluation.get("champion_version"), champ["roc_auc"] if champ else None,
                  evaluation["holdout_week"], margin, rolled_back=rolled_back)


def evaluate_candidate(version: str | int, holdout_week: str | None = None,
                       deploy_margin: float | None = None) -> dict[str, Any]:
    """:func:`mlops.evaluate.evaluate_model` plus the promotion ``decision``."""
    margin = config.threshold("deploy_margin", deploy_margin)
    evaluation = evaluate_model(version, holdout_week=holdout_week)
    decision = _decision_of(evaluation, margin)
    champion = evaluation.get("champion_metrics") or {}
    metrics.push("evaluation", [
        metrics.Sample("mlops_evaluation_candidate_version", float(evaluation["version"])),
        metrics.Sample("mlops_evaluation_candidate_roc_auc", evaluation["metrics"]["roc_auc"]),
        metrics.Sample("mlops_evaluation_champion_roc_auc", champion.get("roc_auc")),
        metrics.Sample("mlops_evaluation_deploy", 1 if decision["deploy"] else 0),
    ])
    return to_jsonable({**evaluation, "decision": decision})


def deploy(version: str | int, evaluation: dict[str, Any] | None = None,
           deploy_margin: float | None = None) -> dict[str, Any]:
    """Make ``version`` the champion if the decision says so.

    The decision in ``evaluation`` is used when it was made for this version against the
    current champion (with ``deploy_margin``, when given, applied to the same scores); otherwise
    the candidate is evaluated now, on its holdout week.
    """
    version = str(version)
    margin = config.threshold("deploy_margin",
                              deploy_margin if deploy_margin is not None else
                              ((evaluation or {}).get("decision") or {}).get("margin"))
    champion = registry.champion_version()
    fresh = (evaluation is not None and str(evaluation.get("version")) == version
             and evaluation.get("champion_version") == champion and "metrics" in evaluation)
    if not fresh:
        evaluation = evaluate_candidate(version, deploy_margin=margin)
    decision = _decision_of(evaluation, margin)
    result = {"version": version, "deployed": False, "champion_version": champion,
              "previous_version": registry.aliases().get(registry.PREVIOUS),
              "reason": decision["reason"], "decision": decision}
    if decision["deploy"]:
        moved = registry.set_champion(version, decision["reason"], expected_champion=champion)
        result = {**result, "deployed": moved["moved"], "champion_version": moved["champion_version"],
                  "previous_version": moved["previous_version"], "reason": moved["reason"]}
    metrics.push("deployment", [metrics.Sample("mlops_deployment_candidate_version", float(version)),
                                metrics.Sample("mlops_deployment_deployed", 1 if result["deployed"] else 0)])
    return to_jsonable(result)


DECISION_TAG = "decision"
DECISION_BY_TAG = "decision_by"
REJECTED_TAG = "rejected_reason"


def record_decision(evaluation: dict[str, Any], by: str) -> dict[str, Any]:
    """Record ``evaluation["decision"]`` on the candidate version, as made by ``by`` (e.g. an
    Airflow ``dag_id/run_id``); returns the recorded decision."""
    if "'" in by:
        raise RegistryError(f"decision owner {by!r} must not contain a quote")
    decision = {**evaluation["decision"], "by": by,
                "run_id": evaluation.get("run_id"),
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    client = tracking.setup()
    name, version = config.model_name(), str(evaluation["version"])
    client.set_model_version_tag(name, version, DECISION_TAG, json.dumps(to_jsonable(decision)))
    client.set_model_version_tag(name, version, DECISION_BY_TAG, by)
    return to_jsonable(decision)


def recorded_decision(by: str) -> dict[str, Any] | None:
    """The decision recorded by ``by`` (:func:`record_decision`), or None when it recorded none.
    Several versions (a re-evaluation in the same run): the newest record wins."""
    if "'" in by:
        raise RegistryError(f"decision owner {by!r} must not contain a quote")
    client = tracking.setup()
    try:
        found = client.search_model_versions(
            f"name = '{config.model_name()}' and tags.{DECISION_BY_TAG} = '{by}'")
    except Exception as exc:
        if registry.is_not_found(exc):
            return None
        raise
    records = []
    for mv in found:
        try:
            record = json.loads((mv.tags or {}).get(DECISION_TAG) or "null")
        except ValueError:
            record = None
        if isinstance(record, dict) and record.get("by") == by and str(record.get("version")) == str(mv.version):
            records.append(record)
    return max(records, key=lambda r: r.get("at") or "") if records else None


def deploy_recorded(by: str, deploy_margin: float | None = None) -> dict[str, Any]:
    """:func:`deploy` on the decision ``by`` recorded (its candidate, champion and scores);
    nothing moves when no decision was recorded or it was not to deploy (``acted`` false)."""
    decision = recorded_decision(by)
    if decision is None:
        return {"deployed": False, "acted": False, "version": None,
                "reason": f"no decision recorded by {by}"}
    if not decision.get("deploy"):
        return {"deployed": False, "acted": False, "version": decision["version"],
                "reason": decision["reason"], "decision": decision}
    champ_auc = decision.get("champion_roc_auc")
    evaluation = {"version": str(decision["version"]), "holdout_week": decision["holdout_week"],
                  "champion_version": decision.get("champion_version"),
                  "metrics": {"roc_auc": decision["roc_auc"]},
                  "champion_metrics": None if champ_auc is None else {"roc_auc": champ_auc},
                  "decision": decision}
    result = deploy(decision["version"], evaluation=evaluation,
                    deploy_margin=deploy_margin if deploy_margin is not None else decision.get("margin"))
    return {**result, "acted": True}


def select_best(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """The candidate with the best validation ROC AUC (ties: the earlier recipe).

    ``candidates`` are training results of :func:`mlops.train.train_model` with a validation
    week; one without a validation score is chosen only when no candidate has one.
    """
    usable = [c for c in candidates if c]
    if not usable:
        raise ValueError("no candidate to choose from")

    def key(item: tuple[int, dict[str, Any]]) -> tuple[int, float, int]:
        index, cand = item
        val = (cand.get("validation") or {}).get("metrics", {}).get("roc_auc")
        return (0, 0.0, index) if val is None else (1, float(val), -index)

    return max(enumerate(usable), key=key)[1]

"""Model-registry lifecycle with MLflow 3 aliases (``champion``, ``previous``) and version tags;
never the deprecated stages. Every operation is idempotent: rerunning it does not move an alias
again."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from mlops import config, metrics, tracking
from mlops.errors import RegistryError
from mlops.util import file_lock, to_jsonable

CHAMPION = "champion"
PREVIOUS = "previous"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _alias_version(client: Any, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(config.model_name(), alias).version)
    except MlflowException:
        return None


def _describe(client: Any, version: str) -> dict[str, Any]:
    mv = client.get_model_version(config.model_name(), version)
    run_metrics: dict[str, float] = {}
    if mv.run_id:
        try:
            run_metrics = dict(client.get_run(mv.run_id).data.metrics)
        except Exception:
            run_metrics = {}
    return {"version": str(mv.version), "run_id": mv.run_id, "aliases": list(mv.aliases or []),
            "tags": dict(mv.tags or {}), "metrics": run_metrics,
            "model_uri": f"models:/{config.model_name()}@{CHAMPION}"}


def get_champion() -> dict[str, Any] | None:
    """The version behind alias ``champion`` (with its training metrics), or None."""
    client = tracking.setup()
    version = _alias_version(client, CHAMPION)
    return to_jsonable(_describe(client, version)) if version else None


def get_previous() -> dict[str, Any] | None:
    """The version behind alias ``previous``, or None."""
    client = tracking.setup()
    version = _alias_version(client, PREVIOUS)
    return to_jsonable(_describe(client, version)) if version else None


def _publish(client: Any, version: str) -> None:
    metrics.gauge("model.champion_version", float(version))
    tags = client.get_model_version(config.model_name(), version).tags or {}
    if "holdout_roc_auc" in tags:
        metrics.gauge("model.champion_auc", float(tags["holdout_roc_auc"]))


def backup_champion() -> dict[str, Any]:
    """Point alias ``previous`` at the current champion (tag ``backup_of_champion_at``)."""
    client = tracking.setup()
    with file_lock("registry"):
        return _backup(client)


def _backup(client: Any) -> dict[str, Any]:
    champion = _alias_version(client, CHAMPION)
    previous = _alias_version(client, PREVIOUS)
    if champion is None:
        return {"backed_up": False, "previous_version": previous, "champion_version": None,
                "reason": "no champion to back up"}
    if previous == champion:
        return {"backed_up": False, "previous_version": previous, "champion_version": champion,
                "reason": "previous already points at the champion"}
    client.set_registered_model_alias(config.model_name(), PREVIOUS, champion)
    client.set_model_version_tag(config.model_name(), champion, "backup_of_champion_at", _now())
    return {"backed_up": True, "previous_version": champion, "champion_version": champion,
            "replaced_previous": previous, "reason": "champion backed up"}


def deploy(version: str | int, evaluation: dict[str, Any] | None = None,
           deploy_margin: float | None = None) -> dict[str, Any]:
    """Make ``version`` the champion if it beats the current one by ``deploy_margin`` (or there is
    none).

    The evaluation is reused when it was made against the current champion; otherwise (or when
    absent) the candidate is evaluated now. The old champion is backed up as ``previous``.
    """
    from mlops.evaluate import evaluate_model

    version = str(version)
    margin = config.threshold("deploy_margin", deploy_margin)
    client = tracking.setup()
    with file_lock("registry"):
        try:
            mv = client.get_model_version(config.model_name(), version)
        except Exception as exc:
            raise RegistryError(f"model {config.model_name()} has no version {version}") from exc
        champion = _alias_version(client, CHAMPION)
        base = {"version": version, "margin": margin,
                "previous_version": _alias_version(client, PREVIOUS)}
        if champion == version:
            return {**base, "deployed": False, "champion_version": champion,
                    "reason": "already champion"}
        if (mv.tags or {}).get("rolled_back_at"):
            return {**base, "deployed": False, "champion_version": champion,
                    "reason": f"version {version} was rolled back: {mv.tags.get('rolled_back')}"}
        if (evaluation is None or str(evaluation.get("version", version)) != version
                or evaluation.get("champion_version") != champion):
            evaluation = evaluate_model(version, deploy_margin=margin)
        cand = evaluation["metrics"]["roc_auc"]
        champ_metrics = evaluation.get("champion_metrics")
        if champion is None:
            beats, reason = True, "no champion yet"
        else:
            gain = cand - champ_metrics["roc_auc"]
            beats = gain >= margin
            reason = (f"roc_auc {cand:.4f} vs champion {champ_metrics['roc_auc']:.4f} on "
                      f"{evaluation['holdout_week']}: gain {gain:+.4f}, margin {margin}")
        if not beats:
            return to_jsonable({**base, "deployed": False, "champion_version": champion,
                                "candidate_auc": cand, "reason": reason})
        backup = _backup(client)
        client.set_registered_model_alias(config.model_name(), CHAMPION, version)
        client.set_model_version_tag(config.model_name(), version, "deployed_at", _now())
        client.set_model_version_tag(config.model_name(), version, "deployed_reason", reason)
        if champion:
            client.set_model_version_tag(config.model_name(), version, "replaced_version",
                                         champion)
    _publish(client, version)
    return to_jsonable({**base, "deployed": True, "champion_version": version,
                        "previous_version": backup.get("previous_version"),
                        "candidate_auc": cand, "reason": reason})


def rollback(reason: str, candidate: str | int | None = None) -> dict[str, Any]:
    """Move ``champion`` back to the ``previous`` version and record why on both versions.

    ``candidate``: a retrained version that lost its comparison. When it never became champion
    (the usual case) the champion stays where it is and only the candidate is tagged
    ``rejected_reason``/``rejected_at``; when it is the champion itself (same data and parameters
    give the same version) nothing moves. Without ``candidate`` the champion is demoted to
    ``previous``, which must exist.
    """
    if not reason or not str(reason).strip():
        raise RegistryError("rollback needs a reason")
    client = tracking.setup()
    with file_lock("registry"):
        champion = _alias_version(client, CHAMPION)
        previous = _alias_version(client, PREVIOUS)
        if candidate is not None:
            candidate = str(candidate)
            kept = {"rolled_back": False, "champion_version": champion, "demoted_version": None,
                    "candidate_version": candidate}
            if candidate != champion:
                name = config.model_name()
                client.set_model_version_tag(name, candidate, "rejected_reason", str(reason))
                client.set_model_version_tag(name, candidate, "rejected_at", _now())
                return {**kept, "reason": str(reason)}
            return {**kept, "reason": f"candidate v{candidate} is the champion itself: nothing "
                                      f"to roll back ({reason})"}
        if champion is None:
            raise RegistryError(f"model {config.model_name()}: no champion to roll back")
        if previous is None:
            raise RegistryError(f"model {config.model_name()}: no previous version to roll back to")
        if previous == champion:
            return {"rolled_back": False, "champion_version": champion, "demoted_version": None,
                    "reason": "previous is the champion itself: nothing to roll back to"}
        when = _now()
        name = config.model_name()
        client.set_model_version_tag(name, champion, "rolled_back", str(reason))
        client.set_model_version_tag(name, champion, "rolled_back_at", when)
        client.set_registered_model_alias(name, CHAMPION, previous)
        client.set_model_version_tag(name, previous, "restored_at", when)
        client.set_model_version_tag(name, previous, "restored_reason", str(reason))
        client.set_registered_model_tag(name, "last_rollback",
                                        f"{when} v{champion} -> v{previous}: {reason}")
    _publish(client, previous)
    return {"rolled_back": True, "champion_version": previous, "demoted_version": champion,
            "reason": str(reason)}

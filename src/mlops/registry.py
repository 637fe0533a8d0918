"""Model registry with MLflow 3 aliases (``champion``, ``previous``) and version tags; never the
deprecated stages. This module only registers versions, moves aliases and writes tags: whether a
candidate should become champion is decided in :mod:`mlops.promotion`.

Fail closed: only MLflow's RESOURCE_DOES_NOT_EXIST means "absent" (no registered model yet, no
such version). Any other MLflow error (server down, timeout, database error) propagates, so an
Airflow task keeps its normal retries and an outage is never read as "no champion".

Every operation is idempotent: rerunning it does not register or move anything again. Across
worker hosts, the Airflow pool ``model_registry`` (one slot, ``airflow/pools.yaml``) serialises
the tasks that call the writing functions; the local file lock taken here only guards concurrent
``mlops`` CLI calls on one machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from mlops import config, metrics, model_store, tracking
from mlops.errors import RegistryError
from mlops.util import file_lock, to_jsonable

CHAMPION = "champion"
PREVIOUS = "previous"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def is_not_found(exc: BaseException) -> bool:
    """True only for MLflow's RESOURCE_DOES_NOT_EXIST (the one error that means "absent")."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST"


@contextlib.contextmanager
def registry_lock() -> Iterator[None]:
    """Serialise registry writes of ``mlops`` commands on this host (see the module doc)."""
    with file_lock("registry"):
        yield


def aliases(client: Any = None) -> dict[str, str]:
    """``{alias: version}`` of the registered model; empty when the model is not registered yet.

    Read from the registered model itself: a missing alias is simply not in the mapping, so no
    error code has to be interpreted (MLflow reports a missing alias as INVALID_PARAMETER_VALUE).
    """
    client = client or tracking.setup()
    try:
        model = client.get_registered_model(config.model_name())
    except Exception as exc:
        if is_not_found(exc):
            return {}
        raise
    return {str(k): str(v) for k, v in (model.aliases or {}).items()}


def champion_version(client: Any = None) -> str | None:
    """The version behind alias ``champion``, or None when there is none."""
    return aliases(client).get(CHAMPION)


def version_info(version: str | int, client: Any = None) -> dict[str, Any]:
    """Version, run id, aliases, tags and training-run metrics of one registered version.

    A version that does not exist is a :class:`RegistryError` (deterministic); any other MLflow
    error propagates.
    """
    client = client or tracking.setup()
    name = config.model_name()
    try:
        mv = client.get_model_version(name, str(version))
    except Exception as exc:
        if is_not_found(exc):
            raise RegistryError(f"model {name} has no version {version}") from exc
        raise
    run_metrics: dict[str, float] = {}
    if mv.run_id:
        try:
            run_metrics = dict(client.get_run(mv.run_id).data.metrics)
        except Exception as exc:
            if not is_not_found(exc):
                raise
    return to_jsonable({"version": str(mv.version), "run_id": mv.run_id,
                        "aliases": list(mv.aliases or []), "tags": dict(mv.tags or {}),
                        "metrics": run_metrics, "model_uri": f"models:/{name}/{mv.version}"})


def _alias_info(alias: str) -> dict[str, Any] | None:
    client = tracking.setup()
    version = aliases(client).get(alias)
    if version is None:
        return None
    return {**version_info(version, client),
            "model_uri": f"models:/{config.model_name()}@{alias}"}


def get_champion() -> dict[str, Any] | None:
    """The version behind alias ``champion`` (tags, training metrics), or None."""
    return _alias_info(CHAMPION)


def get_previous() -> dict[str, Any] | None:
    """The version behind alias ``previous``, or None."""
    return _alias_info(PREVIOUS)


def register(run_id: str, fingerprint: str, tags: dict[str, str]) -> dict[str, Any]:
    """Register the model logged by ``run_id`` as a version, once per fingerprint.

    A version whose ``fingerprint`` tag matches is returned as it is (``registered: False``), so
    rerunning a training or a retraining never registers a duplicate.
    """
    import mlflow

    client = tracking.setup()
    name = config.model_name()
    with registry_lock():
        found = _version_with_fingerprint(client, fingerprint)
        if found is not None:
            return {"version": found, "registered": False}
        # The digest the loaders verify (mlops.model_store), taken from the logged files by the
        # registering account and recorded with the version in the same call.
        digest = model_store.artifact_digest(f"runs:/{run_id}/model", client=client)
        mv = mlflow.register_model(f"runs:/{run_id}/model", name,
                                   tags={"fingerprint": fingerprint, **tags, model_store.DIGEST_TAG: digest})
        version = str(mv.version)
    return {"version": version, "registered": True}


def _version_with_fingerprint(client: Any, fingerprint: str) -> str | None:
    try:
        found = client.search_model_versions(
            f"name = '{config.model_name()}' and tags.fingerprint = '{fingerprint}'")
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise
    return str(min(int(mv.version) for mv in found)) if found else None


def _publish(client: Any, version: str) -> None:
    """The champion now in service (job ``mlops_champion``), after its alias moved."""
    tags = client.get_model_version(config.model_name(), version).tags or {}
    auc = tags.get("holdout_roc_auc")
    metrics.push("champion", [metrics.Sample("mlops_champion_version", float(version)),
                              metrics.Sample("mlops_champion_holdout_roc_auc",
                                             float(auc) if auc else None)], success=False)


def _push_rollback(result: dict[str, Any]) -> dict[str, Any]:
    """The rollback's outcome (job ``mlops_rollback``); returns ``result``."""
    candidate = result.get("candidate_version")
    metrics.push("rollback", [metrics.Sample("mlops_rollback_rolled_back", 1 if result["rolled_back"] else 0),
                              metrics.Sample("mlops_rollback_candidate_version",
                                             float(candidate) if candidate else None)])
    return result


def backup_champion() -> dict[str, Any]:
    """Point alias ``previous`` at the current champion (tag ``backup_of_champion_at``)."""
    client = tracking.setup()
    with registry_lock():
        return _backup(client)


def _backup(client: Any) -> dict[str, Any]:
    now = aliases(client)
    champion, previous = now.get(CHAMPION), now.get(PREVIOUS)
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


def set_champion(version: str | int, reason: str,
                 expected_champion: str | None = None) -> dict[str, Any]:
    """Move ``champion`` to ``version`` (the old champion becomes ``previous``) and record why.

    ``expected_champion``: the champion the decision was made against; when the alias points
    elsewhere by now, nothing moves (``moved: False``) and the caller has to decide again.
    """
    version = str(version)
    client = tracking.setup()
    name = config.model_name()
    with registry_lock():
        version_info(version, client)  # RegistryError when the version does not exist
        champion = champion_version(client)
        if champion == version:
            return {"moved": False, "version": version, "champion_version": champion,
                    "previous_version": aliases(client).get(PREVIOUS),
                    "reason": "already champion"}
        if champion != expected_champion:
            return {"moved": False, "version": version, "champion_version": champion,
                    "previous_version": aliases(client).get(PREVIOUS),
                    "reason": f"the champion is v{champion}, not v{expected_champion} as decided"}
        backup = _backup(client)
        client.set_registered_model_alias(name, CHAMPION, version)
        client.set_model_version_tag(name, version, "deployed_at", _now())
        client.set_model_version_tag(name, version, "deployed_reason", reason)
        if champion:
            client.set_model_version_tag(name, version, "replaced_version", champion)
    _publish(client, version)
    return {"moved": True, "version": version, "champion_version": version,
            "previous_version": backup.get("previous_version"), "reason": reason}


def reject_candidate(version: str | int, reason: str) -> dict[str, Any]:
    """Record on a candidate that was not deployed why (tags ``rejected_reason``/``rejected_at``,
    e.g. an approver's Reject); the aliases do not move."""
    if not reason or not str(reason).strip():
        raise RegistryError("a rejection needs a reason")
    client = tracking.setup()
    name = config.model_name()
    version_info(version, client)
    client.set_model_version_tag(name, str(version), "rejected_reason", str(reason))
    client.set_model_version_tag(name, str(version), "rejected_at", _now())
    return {"version": str(version), "reason": str(reason)}


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
    name = config.model_name()
    with registry_lock():
        now = aliases(client)
        champion, previous = now.get(CHAMPION), now.get(PREVIOUS)
        if candidate is not None:
            candidate = str(candidate)
            kept = {"rolled_back": False, "champion_version": champion, "demoted_version": None,
                    "candidate_version": candidate}
            if candidate != champion:
                version_info(candidate, client)
                client.set_model_version_tag(name, candidate, "rejected_reason", str(reason))
                client.set_model_version_tag(name, candidate, "rejected_at", _now())
                return _push_rollback({**kept, "reason": str(reason)})
            return _push_rollback({**kept, "reason": f"candidate v{candidate} is the champion itself: "
                                                     f"nothing to roll back ({reason})"})
        if champion is None:
            raise RegistryError(f"model {name}: no champion to roll back")
        if previous is None:
            raise RegistryError(f"model {name}: no previous version to roll back to")
        if previous == champion:
            return _push_rollback({"rolled_back": False, "champion_version": champion, "demoted_version": None,
                                   "reason": "previous is the champion itself: nothing to roll back to"})
        when = _now()
        client.set_model_version_tag(name, champion, "rolled_back", str(reason))
        client.set_model_version_tag(name, champion, "rolled_back_at", when)
        client.set_registered_model_alias(name, CHAMPION, previous)
        client.set_model_version_tag(name, previous, "restored_at", when)
        client.set_model_version_tag(name, previous, "restored_reason", str(reason))
        client.set_registered_model_tag(name, "last_rollback",
                                        f"{when} v{champion} -> v{previous}: {reason}")
    _publish(client, previous)
    return _push_rollback({"rolled_back": True, "champion_version": previous, "demoted_version": champion,
                           "reason": str(reason)})

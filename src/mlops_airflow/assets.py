"""The lifecycle's Airflow Assets, declared once: what the DAGs produce (``outlets``) and what
they are scheduled on. Their events carry the week, the version and the decision as ``extra``."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias

GROUP = "mlops"

#: A week's labelled batch accepted by validation (extra: ``week``).
ACCEPTED_BATCHES = Asset(name="accepted_batches", uri="mlops://flights/accepted_batches", group=GROUP)
#: The training table built by the preprocess stage (extra: ``weeks``).
TRAINING_TABLE = Asset(name="training_table", uri="mlops://flights/training_table", group=GROUP)
#: The registered model's alias ``champion`` (extra: ``version``, ``decision``).
CHAMPION = Asset(name="champion", uri="mlops://flights/champion", group=GROUP)
#: A drift decision that fired (extra: ``week``, ``signals``).
DRIFT = Asset(name="drift", uri="mlops://flights/drift", group=GROUP)
#: Carries the extra weeks' events when one run accepts several weeks (one ``accepted_batches``
#: event per week; the task's own outlet carries the first).
ACCEPTED_BATCHES_MORE = AssetAlias(name="accepted_batches_more", group=GROUP)


def _tagged(extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` with ``dataset`` when the task runs on a data set other than the flights (the
    flights' events keep the extras of a single data set)."""
    from mlops.metrics import dataset_grouping

    return {**extra, **dataset_grouping()}


def accepted_events(outlet_events: Any, weeks: list[str]) -> None:
    """One ``accepted_batches`` event per accepted week, ``extra={"week": week}``."""
    if not weeks:
        return
    outlet_events[ACCEPTED_BATCHES].extra = _tagged({"week": weeks[0]})
    for week in weeks[1:]:
        outlet_events[ACCEPTED_BATCHES_MORE].add(ACCEPTED_BATCHES, extra=_tagged({"week": week}))


def table_event(outlet_events: Any, weeks: list[str]) -> None:
    """The ``training_table`` event: the weeks this run added (``week``: the newest)."""
    outlet_events[TRAINING_TABLE].extra = _tagged({"weeks": weeks, "week": weeks[-1] if weeks else None})


def champion_event(outlet_events: Any, result: dict[str, Any], decision: str) -> None:
    """The ``champion`` event: the version in service after the task, the candidate and the
    decision (``deploy``, ``kept``, ``rollback``)."""
    extra = {"version": result.get("champion_version"),
             "candidate_version": result.get("version") if decision != "rollback"
             else result.get("candidate_version"),
             "decision": decision, "reason": result.get("reason")}
    holdout = (result.get("decision") or {}).get("holdout_week")
    if holdout:
        extra["week"] = holdout
    outlet_events[CHAMPION].extra = _tagged({k: v for k, v in extra.items() if v is not None})


def drift_event(outlet_events: Any, result: dict[str, Any]) -> None:
    """The ``drift`` event: the week and the signals that fired."""
    outlet_events[DRIFT].extra = _tagged({"week": result.get("week"), "signals": list(result.get("fired") or [])})

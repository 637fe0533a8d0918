"""The year replay: the model lifecycle over 2013-W01..W52 in one process, without Airflow.

Week by week it calls the functions the DAG tasks call: ``mlops.data.replay`` (the batch
arrives), ``validate_batch``/``accept_batch``, ``run_preprocess`` (DVC), the weekly ``train`` +
``evaluate`` (register, promotion decision), ``detect_drift`` (data, model and label signals
against the champion), the weekly ``deploy`` and, when a signal fired, the retraining
(``backup_champion``, every recipe of ``configs/recipes.yaml`` with its validation score,
``select_best``, register, evaluate, deploy or rollback with its reason). The first champion
comes from the first pipeline run, when 2013-W01..W09 have arrived: trained on W01..W08, held
out on W09.

For every week from W09 it records the champion in service after the week and that champion's
ROC AUC on the *following* week (which the next week's model-drift signal measures anyway).
Two reference policies on the same data:

* ``frozen``: the first champion (W01..W08), never replaced;
* ``always_deploy``: retrain the weekly recipe on all weeks every week and always deploy. Its
  model of week W (every week up to W) is the weekly candidate of week W+1 (same rows, same
  recipe, held out on W+1), so its next-week AUC is that candidate's holdout score: no extra fit.

Prints one JSON object: ``mean_next_week_auc`` (``policy``, ``frozen``, ``always_deploy`` over
weeks 9-51), ``retrains``, ``deploys``, ``rollbacks``, ``regressions`` (deployments after which
the new champion scored at least 0.01 below the one it replaced on the following week),
``drift_weeks`` (week and the signals that fired), ``wall_s``, the thresholds and recipes used and
per-week details; writes ``lifecycle.png`` (and ``lifecycle.json``) into ``--out``.

``--dataset NAME|PATH`` replays another data set (``configs/NAME.yaml`` or a schema file) with
its own model name (``NAME_classifier``) and recipes. For a generated data set with known drifts
(``configs/synthetic_drift.yaml``) it adds ``drift_truth`` (the configured drifts: the week each
begins, its kind), ``detection_delay_weeks`` (per true drift: weeks from its first week until a
signal fired, null when none did before the next drift), ``false_alarms`` (weeks where a signal
fired with no drift under way in that week or the 2 weeks before; ``false_alarm_weeks`` lists
them) and writes ``lifecycle-NAME.png|json``.

Run: .venv/bin/python benchmarks/lifecycle.py [--out benchmarks/out] [--last 2013-W52]
     [--dataset synthetic_drift]
Thresholds come from mlops.config.THRESHOLDS (override with MLOPS_<NAME> in the environment).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIRST_CHAMPION_WEEK = "2013-W09"   # the first pipeline run: W01..W09 have arrived
SCORED = ("2013-W09", "2013-W51")  # weeks whose champion is scored on the following week
REGRESSION = 0.01


def _say(msg: str) -> None:
    print(f"[lifecycle] {msg}", file=sys.stderr, flush=True)


def weeks_of_year(last: str) -> list[str]:
    return [f"2013-W{n:02d}" for n in range(1, 53) if f"2013-W{n:02d}" <= last]


def generator_spec() -> Any:
    """The generator settings of the data set in use (None: a data set read from files)."""
    from mlops.config import load_schema
    from mlops.synthetic import spec_of

    schema = load_schema()
    return spec_of(schema.source, schema.path) if "generator" in schema.source else None


def truth_scores(state: "Replay", spec: Any) -> dict[str, Any]:
    """Drift detection against the configured drifts of a generated data set."""
    from mlops.synthetic import drift_truth

    truth = drift_truth(spec)
    fired = sorted(w for w, r in state.weeks.items() if r["fired"])
    number = {w: int(w[-2:]) for w in fired}
    delays: dict[str, int | None] = {}
    for i, drift in enumerate(truth):
        start = int(drift["week"][-2:])
        end = int(truth[i + 1]["week"][-2:]) if i + 1 < len(truth) else 99
        hits = [number[w] - start for w in fired if start <= number[w] < end]
        delays[drift["week"]] = min(hits) if hits else None
    # A drift is under way from its first week through its last (gradual: width_weeks).
    active = {int(d["week"][-2:]) + k for d in truth for k in range(d["width_weeks"])}
    false = [w for w in fired if not any(number[w] - lag in active for lag in (0, 1, 2))]
    return {"drift_truth": [{"week": d["week"], "kind": d["kind"],
                             "width_weeks": d["width_weeks"]} for d in truth],
            "detection_delay_weeks": delays, "false_alarms": len(false),
            "false_alarm_weeks": false}


def next_week(week: str) -> str:
    year, num = week.split("-W")
    return f"{year}-W{int(num) + 1:02d}"


class Replay:
    """State of the replay: the champion after each week, deployments, retrainings."""

    def __init__(self) -> None:
        self.weeks: dict[str, dict[str, Any]] = {}
        self.deployments: list[dict[str, Any]] = []
        self.retrainings: list[dict[str, Any]] = []
        self.frozen: str | None = None
        self.rejected: list[dict[str, Any]] = []


def arrive(week: str) -> bool:
    """Replay, validate and accept one batch; False when it was rejected (quarantined)."""
    from mlops.data import replay
    from mlops.errors import BatchValidationError
    from mlops.batches import mark_processed
    from mlops.validate import accept_batch, validate_batch

    replay(from_week=week, until_week=week)
    path = Path(os.environ["MLOPS_DATA_DIR"]) / "landing" / f"{week}.csv"
    try:
        validate_batch(path)
        accept_batch(path)
        return True
    except BatchValidationError as exc:
        _say(f"{week}: rejected: {exc}")
        return False
    finally:
        mark_processed([week])


def retrain(week: str, drift: dict[str, Any]) -> dict[str, Any]:
    """model_retraining_dag's tasks in order; returns the outcome with its reason."""
    from mlops.config import load_recipes
    from mlops.promotion import deploy, evaluate_candidate, select_best
    from mlops.registry import backup_champion, rollback
    from mlops.train import register_candidate, train_model

    backup_champion()
    candidates = [train_model(recipe=name, validate=True, register=False)
                  for name in load_recipes()]
    best = register_candidate(select_best(candidates))
    evaluation = evaluate_candidate(best["version"], holdout_week=best["holdout_week"])
    decision = evaluation["decision"]
    if decision["deploy"]:
        done = deploy(best["version"], evaluation=evaluation)
        outcome = "deploy" if done["deployed"] else "rollback"
        reason = done["reason"]
        if not done["deployed"]:
            rollback(reason, candidate=best["version"])
    else:
        outcome, reason = "rollback", rollback(decision["reason"],
                                               candidate=best["version"])["reason"]
    return {"week": week, "fired": drift["fired"], "outcome": outcome, "reason": reason,
            "recipe": best["recipe"], "version": best["version"],
            "candidates": [{"recipe": c["recipe"],
                            "validation_roc_auc": (c.get("validation") or {}).get(
                                "metrics", {}).get("roc_auc"),
                            "holdout_roc_auc": c["metrics"]["roc_auc"], "reused": c["reused"]}
                           for c in candidates]}


def run(last: str) -> tuple[Replay, dict[str, float]]:
    """Replay every week up to ``last``; return the state and the wall time of each step."""
    from mlops.drift import detect_drift
    from mlops.evaluate import score_version, week_rows
    from mlops.preprocess import run_preprocess
    from mlops.promotion import deploy, evaluate_candidate
    from mlops.registry import champion_version, version_info
    from mlops.train import register_candidate, train_model

    state = Replay()
    timing: dict[str, float] = {}

    def timed(step: str, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timing[step] = timing.get(step, 0.0) + time.perf_counter() - t0

    for week in weeks_of_year(last):
        t0 = time.perf_counter()
        if not timed("validate", arrive, week):
            state.rejected.append({"week": week})
            continue
        if week < FIRST_CHAMPION_WEEK:
            continue
        timed("preprocess", run_preprocess)
        before = champion_version()
        trained = timed("train", train_model, register=False)
        trained = timed("evaluate", register_candidate, trained)
        evaluation = timed("evaluate", evaluate_candidate, trained["version"],
                           holdout_week=trained["holdout_week"])
        drift = timed("drift", detect_drift, week=week)
        row: dict[str, Any] = {"week": week, "champion_before": before,
                               "weekly_candidate": trained["version"],
                               "weekly_holdout_auc": trained["metrics"]["roc_auc"],
                               "weekly_decision": evaluation["decision"]["reason"],
                               "fired": drift["fired"], "drift": drift["signals"]}
        # The previous week's champion (the one in service until now) on this week.
        prev = state.weeks.get(_prev_scored(state, week))
        if prev is not None:
            model_sig = drift["signals"]["model"]
            prev["next_week_auc"] = (model_sig["roc_auc"] if before == prev["champion"]
                                     else score_version(prev["champion"], week_rows(week))["roc_auc"])
            prev["always_deploy_next_week_auc"] = trained["metrics"]["roc_auc"]
            prev["frozen_next_week_auc"] = timed(
                "score", lambda: score_version(state.frozen, week_rows(week))["roc_auc"])
            for dep in prev.get("deployments", []):
                replaced = dep["replaced"]
                dep["next_week_auc"] = prev["next_week_auc"] if dep["version"] == prev[
                    "champion"] else score_version(dep["version"], week_rows(week))["roc_auc"]
                dep["replaced_next_week_auc"] = (None if replaced is None else score_version(
                    replaced, week_rows(week))["roc_auc"])
        deployments = []
        if evaluation["decision"]["deploy"]:
            done = timed("deploy", deploy, trained["version"], evaluation=evaluation)
            if done["deployed"]:
                deployments.append({"week": week, "version": trained["version"],
                                    "replaced": before, "by": "weekly",
                                    "reason": done["reason"]})
        if drift["fired"]:
            champion_then = champion_version()
            outcome = timed("retrain", retrain, week, drift)
            state.retrainings.append(outcome)
            if outcome["outcome"] == "deploy":
                deployments.append({"week": week, "version": outcome["version"],
                                    "replaced": champion_then, "by": "retraining",
                                    "reason": outcome["reason"]})
            _say(f"{week}: drift {drift['fired']} -> retraining {outcome['outcome']} "
                 f"({outcome['recipe']}): {outcome['reason']}")
        champion = champion_version()
        if state.frozen is None:
            state.frozen = champion
        info = version_info(champion)
        row.update({"champion": champion, "champion_recipe": info["tags"].get("recipe"),
                    "champion_train_last_week": info["tags"].get("train_last_week"),
                    "deployments": deployments, "seconds": round(time.perf_counter() - t0, 1)})
        state.deployments.extend(deployments)
        state.weeks[week] = row
        _say(f"{week}: champion v{champion} ({row['champion_recipe']}, through "
             f"{row['champion_train_last_week']}); fired {drift['fired'] or '-'}; "
             f"{row['seconds']} s")
    return state, timing


def _prev_scored(state: Replay, week: str) -> str | None:
    earlier = [w for w in state.weeks if w < week]
    return max(earlier) if earlier else None


def summarise(state: Replay, timing: dict[str, float], wall: float) -> dict[str, Any]:
    """The JSON object the issue asks for (plus details)."""
    from mlops.config import THRESHOLDS, load_recipes, threshold

    scored = [r for w, r in sorted(state.weeks.items())
              if SCORED[0] <= w <= SCORED[1] and r.get("next_week_auc") is not None]

    def mean(key: str) -> float | None:
        vals = [r[key] for r in scored if r.get(key) is not None]
        return round(sum(vals) / len(vals), 4) if vals else None

    regressions = [d for d in state.deployments
                   if d.get("replaced_next_week_auc") is not None
                   and d["next_week_auc"] <= d["replaced_next_week_auc"] - REGRESSION]
    return {
        "mean_next_week_auc": {"policy": mean("next_week_auc"), "frozen": mean(
            "frozen_next_week_auc"), "always_deploy": mean("always_deploy_next_week_auc")},
        "weeks_scored": len(scored),
        "retrains": len(state.retrainings),
        "deploys": len(state.deployments),
        "deploys_by": {by: sum(d["by"] == by for d in state.deployments)
                       for by in ("weekly", "retraining")},
        "rollbacks": sum(r["outcome"] == "rollback" for r in state.retrainings),
        "regressions": len(regressions),
        "regression_details": regressions,
        "drift_weeks": [{"week": w, "signals": r["fired"]} for w, r in sorted(state.weeks.items())
                        if r["fired"]],
        "retrainings": state.retrainings,
        "rejected_batches": state.rejected,
        "thresholds": {t.name: threshold(t.name) for t in THRESHOLDS.values()
                       if t.step in ("drift", "deploy")},
        "recipes": list(load_recipes()),
        "step_seconds": {k: round(v, 1) for k, v in sorted(timing.items())},
        "weeks": {w: {k: r.get(k) for k in ("champion", "champion_recipe",
                                            "champion_train_last_week", "fired",
                                            "next_week_auc", "frozen_next_week_auc",
                                            "always_deploy_next_week_auc")}
                  for w, r in sorted(state.weeks.items())},
        "wall_s": round(wall, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def plot(state: Replay, out: Path, name: str = "lifecycle") -> Path:
    """lifecycle.png: next-week AUC of the three policies, drift/deploy/rollback markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(w, r) for w, r in sorted(state.weeks.items()) if r.get("next_week_auc") is not None]
    x = [int(w[-2:]) for w, _ in rows]
    fig, ax = plt.subplots(figsize=(13, 5.5))
    for key, label, style in (("next_week_auc", "policy (drift-triggered lifecycle)", "-o"),
                              ("always_deploy_next_week_auc", "always_deploy", "--"),
                              ("frozen_next_week_auc", "frozen (W01-W08 model)", ":")):
        ax.plot(x, [r[key] for _, r in rows], style, label=label, markersize=3)
    auc_of = {int(w[-2:]): r["next_week_auc"] for w, r in rows}
    low = min(min(r[k] for _, r in rows for k in ("next_week_auc", "frozen_next_week_auc",
                                                    "always_deploy_next_week_auc")), 0.5)
    drift_x = [int(w[-2:]) for w, r in rows if r["fired"]]
    ax.scatter(drift_x, [low - 0.01] * len(drift_x), marker="^", color="tab:red",
               label="drift fired", zorder=3)
    for marker, color, label, pick in (
            ("o", "tab:green", "deploy", lambda d: True),):
        dx = [int(d["week"][-2:]) for d in state.deployments if pick(d)]
        ax.scatter(dx, [auc_of.get(v, low) for v in dx], s=60, facecolors="none",
                   edgecolors=color, label=label, zorder=4)
    rb = [int(r["week"][-2:]) for r in state.retrainings if r["outcome"] == "rollback"]
    ax.scatter(rb, [auc_of.get(v, low) for v in rb], marker="x", s=60, color="black",
               label="rollback", zorder=5)
    ax.set_xlabel("2013 ISO week (champion in service after that week)")
    ax.set_ylabel("ROC AUC on the following week")
    ax.set_title("Year replay: next-week ROC AUC of the champion")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", ncol=3, fontsize=8)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out"),
                    help="folder for lifecycle.png and lifecycle.json (default benchmarks/out/)")
    ap.add_argument("--last", default="2013-W52", help="last week to replay (default 2013-W52)")
    ap.add_argument("--keep", help="keep the data folder and MLflow store here instead of a temp dir")
    ap.add_argument("--dataset", default="flights",
                    help="configs/NAME.yaml or a schema file (default flights: configs/flights.yaml)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for key in ("MLFLOW_TRACKING_URI", "MLOPS_PUSHGATEWAY_URL", "MLOPS_MODEL_NAME", "MLOPS_EXPERIMENT"):
        os.environ.pop(key, None)
    name = "lifecycle"
    if args.dataset != "flights":
        schema = Path(args.dataset) if args.dataset.endswith((".yaml", ".yml")) else (
            REPO / "configs" / f"{args.dataset}.yaml")
        if not schema.is_file():
            ap.error(f"--dataset {args.dataset}: {schema} not found")
        os.environ["MLOPS_SCHEMA"] = str(schema.resolve())
        os.environ["MLOPS_MODEL_NAME"] = f"{schema.stem}_classifier"
        name = f"lifecycle-{schema.stem}"
        spec = generator_spec()
        if spec is not None and (spec.year, spec.weeks) != (2013, 52):
            ap.error(f"--dataset {args.dataset}: the replay covers 2013-W01..W52; the data set "
                     f"has {spec.year}, {spec.weeks} weeks")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mlops-lifecycle-"))
    os.environ["MLOPS_DATA_DIR"] = str(work / "data")
    t0 = time.perf_counter()
    state, timing = run(args.last)
    wall = time.perf_counter() - t0
    result = summarise(state, timing, wall)
    spec = generator_spec()
    if spec is not None:
        result = {**truth_scores(state, spec), **result}
    out = Path(args.out)
    result["plot"] = str(plot(state, out, name))
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

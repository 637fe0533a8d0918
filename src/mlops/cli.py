"""``mlops``: one subcommand per lifecycle step, printing the step's result dict as JSON.

``mlops --dataset NAME|PATH <command>`` runs the command on another data set (``configs/NAME.yaml``
or a configuration file; default ``$MLOPS_DATASET``, else the flights).

Errors print one line ``mlops: error: <file>: check '<check>' failed ...`` on stderr and exit
non-zero (1: bad input or failed step, 2: usage).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable


def _print(obj: Any) -> None:
    from mlops.util import to_jsonable

    print(json.dumps(to_jsonable(obj), indent=2, sort_keys=True))


def _replay(a: argparse.Namespace) -> Any:
    from mlops.data import replay

    return replay(until_week=a.until, landing_dir=a.landing, from_week=a.from_week)


def _new(a: argparse.Namespace) -> Any:
    from mlops.batches import new_batches

    return {"batches": new_batches()}


def _mark(a: argparse.Namespace) -> Any:
    from mlops.batches import mark_processed

    return mark_processed(a.weeks)


def _thresholds(a: argparse.Namespace, step: str) -> dict[str, float]:
    """The threshold flags of ``step`` given on the command line (the rest keep their defaults)."""
    from mlops.config import thresholds_of

    return {t.name: t.check(getattr(a, t.name), f"option {t.flag}") for t in thresholds_of(step)
            if getattr(a, t.name) is not None}


def _add_thresholds(parser: argparse.ArgumentParser, step: str) -> None:
    """One ``--<name>`` option per threshold of ``step`` (mlops.config.THRESHOLDS)."""
    from mlops.config import thresholds_of

    for t in thresholds_of(step):
        parser.add_argument(t.flag, dest=t.name, type=float, metavar="X",
                            help=f"{t.help} (default {t.default_text}; env {t.env})".replace("%", "%%"))


def _validate(a: argparse.Namespace) -> Any:
    from mlops.validate import accept_batch, validate_batch

    checks = [c.strip() for c in a.checks.split(",")] if a.checks else None
    result = validate_batch(a.path, checks=checks, html=True if a.html else None,
                            **_thresholds(a, "validate"))
    for warning in result.get("warnings") or []:
        print(f"mlops: warning: {result['path']}: {warning}", file=sys.stderr)
    if a.accept:
        result["accepted_to"] = accept_batch(a.path)
    return result


def _accept(a: argparse.Namespace) -> Any:
    from mlops.validate import accept_batch

    return {"accepted_to": accept_batch(a.path)}


def _preprocess(a: argparse.Namespace) -> Any:
    from mlops.preprocess import run_preprocess

    return run_preprocess()


def _preprocess_build(a: argparse.Namespace) -> Any:
    from mlops.preprocess import build_training_table

    return build_training_table(a.accepted, a.out, a.schema)


def _train(a: argparse.Namespace) -> Any:
    from mlops.train import train_model

    return train_model(train_weeks=a.train_weeks, holdout_week=a.holdout_week,
                       max_rows=a.max_rows, shuffle_labels=a.shuffle_labels, recipe=a.recipe,
                       validate=a.validate)


def _recipes(a: argparse.Namespace) -> Any:
    from mlops.config import load_recipes, recipes_path

    return {"file": recipes_path(), "weekly": next(iter(load_recipes())),
            "recipes": [r.spec() | {"description": r.description}
                        for r in load_recipes().values()]}


def _dataset(a: argparse.Namespace) -> Any:
    from mlops.dataset import current

    return current().describe()


def _evaluate(a: argparse.Namespace) -> Any:
    from mlops.promotion import evaluate_candidate

    return evaluate_candidate(a.version, holdout_week=a.holdout_week, **_thresholds(a, "deploy"))


def _drift(a: argparse.Namespace) -> Any:
    from mlops.drift import detect_drift

    return detect_drift(week=a.week, **_thresholds(a, "drift"))


def _deploy(a: argparse.Namespace) -> Any:
    from mlops.promotion import deploy

    return deploy(a.version, **_thresholds(a, "deploy"))


def _backup(a: argparse.Namespace) -> Any:
    from mlops.registry import backup_champion

    return backup_champion()


def _rollback(a: argparse.Namespace) -> Any:
    from mlops.registry import rollback

    return rollback(a.reason, candidate=a.candidate)


def _champion(a: argparse.Namespace) -> Any:
    from mlops.registry import get_champion

    return {"champion": get_champion()}


def _monitor_served(a: argparse.Namespace) -> Any:
    from mlops.monitoring import monitor_served

    return monitor_served(week=a.week, db_url=a.db_url)


def _serve_replay(a: argparse.Namespace) -> Any:
    from mlops.serve_replay import serve_week

    return serve_week(a.week, url=a.url, chunk=a.chunk)


def _demo(a: argparse.Namespace) -> Any:
    from mlops.demo import run_demo

    return run_demo(until_week=a.until, first_until=a.first_until or None,
                    from_week=a.from_week)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    p.add_argument("--dataset", metavar="NAME|PATH",
                   help="data set to work on: configs/NAME.yaml or a configuration file "
                        "(default $MLOPS_DATASET, else flights)")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], Any], help_: str,
            parent: Any = sub) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=fn)
        return sp

    data = sub.add_parser("data", help="data set commands").add_subparsers(dest="data_cmd",
                                                                            required=True)
    sp = add("replay", _replay, "write the data set as weekly batches into landing/", data)
    sp.add_argument("--until", help="last ISO week to write, e.g. 2013-W10 (default: all)")
    sp.add_argument("--from", dest="from_week", help="first ISO week to write")
    sp.add_argument("--landing", help="landing folder (default: the data set's landing/)")

    ing = sub.add_parser("ingest", help="landing watermark").add_subparsers(dest="ingest_cmd",
                                                                             required=True)
    add("new", _new, "list landing batches not yet processed", ing)
    sp = add("mark", _mark, "mark weeks (or batch paths) as processed", ing)
    sp.add_argument("weeks", nargs="+")

    sp = add("validate", _validate, "validate a batch file (or landing week); quarantine on failure")
    sp.add_argument("path", help="batch CSV path or ISO week in landing/")
    sp.add_argument("--checks", help="comma list of schema,quality,distribution,anomalies")
    sp.add_argument("--accept", action="store_true", help="copy into accepted/ when it passes")
    sp.add_argument("--html", action="store_true",
                    help="write Evidently's drift report into validation.html (by default only "
                         "when the distribution check fails)")
    _add_thresholds(sp, "validate")
    sp = add("accept", _accept, "copy a validated batch into accepted/")
    sp.add_argument("path")

    add("preprocess", _preprocess, "run the DVC preprocess stage (dvc repro) in the data folder")
    sp = add("preprocess-build", _preprocess_build,
             "build the training table (the command of the DVC stage)")
    sp.add_argument("--accepted")
    sp.add_argument("--out")
    sp.add_argument("--schema")

    sp = add("train", _train, "train, log to MLflow and register a model version")
    sp.add_argument("--train-weeks", help="e.g. 2013-W01..2013-W26 or a comma list")
    sp.add_argument("--holdout-week")
    sp.add_argument("--max-rows", type=int)
    sp.add_argument("--shuffle-labels", action="store_true")
    sp.add_argument("--recipe", help="a recipe of configs/recipes.yaml (default: the weekly one)")
    sp.add_argument("--validate", action="store_true",
                    help="also score the recipe on the validation week (the newest training week)")

    add("dataset", _dataset, "show the data set: schema file, data folder, model, experiment")
    add("recipes", _recipes, "list the training recipes (configs/recipes.yaml)")

    sp = add("evaluate", _evaluate, "evaluate a version on the holdout week vs the champion; "
                                    "print the promotion decision")
    sp.add_argument("version")
    sp.add_argument("--holdout-week")
    _add_thresholds(sp, "deploy")

    sp = add("drift", _drift, "data, model and label drift of a batch vs the champion")
    sp.add_argument("--week")
    _add_thresholds(sp, "drift")

    sp = add("deploy", _deploy, "make a version champion if it beats the current one")
    sp.add_argument("version")
    _add_thresholds(sp, "deploy")
    add("backup", _backup, "point alias previous at the current champion")
    sp = add("rollback", _rollback, "move champion back to the previous version")
    sp.add_argument("--reason", required=True)
    sp.add_argument("--candidate", help="a retrained version that lost: tag it, keep the champion")
    add("champion", _champion, "show the current champion")

    sp = add("monitor-served", _monitor_served,
             "join the predictions served for a week with its accepted labelled batch: realised "
             "ROC AUC, rows served and labelled, score drift per served version")
    sp.add_argument("--week", help="ISO week, e.g. 2013-W17 (default: the newest accepted batch)")
    sp.add_argument("--db-url", help="prediction log, read-only login "
                                     "(default $MLOPS_PREDICTIONS_DB_URL)")

    sp = add("serve-replay", _serve_replay,
             "send a week's flights (outcome columns dropped) to the prediction service's "
             "/predict ($MLOPS_SERVING_URL, token $SERVING_TOKEN)")
    sp.add_argument("--week", required=True, help="ISO week, e.g. 2013-W17")
    sp.add_argument("--url", help="service base URL (default $MLOPS_SERVING_URL)")
    sp.add_argument("--chunk", type=int, default=500, help="rows per request (default 500)")

    sp = add("demo", _demo, "the local lifecycle without Airflow, with a summary")
    sp.add_argument("--until", default="2013-W10", help="last week to replay (default 2013-W10)")
    sp.add_argument("--first-until", default="2013-W08",
                    help="last week of the first round ('' for a single round; default 2013-W08)")
    sp.add_argument("--from", dest="from_week", default=None, help="first week to replay")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mlops`` console script."""
    from mlops.errors import BatchValidationError, MlopsError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        from mlops.dataset import use_dataset
        from mlops.runas import drop_to_data_owner

        drop_to_data_owner()
        with use_dataset(args.dataset):
            result = args.func(args)
    except BatchValidationError as exc:
        _print({"status": "failed", "file": exc.path, "check": exc.check,
                "columns": exc.columns, "line": exc.line, "detail": exc.detail,
                "quarantined_to": exc.quarantined_to, "report": exc.report})
        print(f"mlops: error: {exc}", file=sys.stderr)
        return 1
    except (MlopsError, ValueError, OSError) as exc:
        msg = " ".join(str(exc).split())
        print(f"mlops: error: {type(exc).__name__}: {msg}", file=sys.stderr)
        return 1
    _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

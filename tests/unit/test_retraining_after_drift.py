"""How a retraining validates its recipes (``retraining.validation_tail``) and what the model
signal compares a batch with (``drift.model_reference``): the data set's configuration selects
the behaviour, the defaults (the flights) keep the old one exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops.config import REPO_ROOT, Recipe, load_schema
from mlops.errors import SchemaError

FLIGHTS = REPO_ROOT / "configs" / "flights.yaml"
SYNTHETIC = REPO_ROOT / "configs" / "synthetic_drift.yaml"
WEEKS = ["2013-W01", "2013-W02", "2013-W03", "2013-W04"]


def _table(rows_per_week: int = 10):  # -> pd.DataFrame
    """Four weeks of rows; ``n`` numbers the rows in order (a batch's time order)."""
    import pandas as pd

    return pd.DataFrame({"week": [w for w in WEEKS for _ in range(rows_per_week)],
                         "n": range(len(WEEKS) * rows_per_week)})


def _schema(tmp_path: Path, **sections: dict) -> Path:
    raw = yaml.safe_load(SYNTHETIC.read_text())
    for key, body in sections.items():
        raw[key] = {**(raw.get(key) or {}), **body}
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_flights_keep_the_old_behaviour_and_the_synthetic_set_selects_the_new() -> None:
    flights, synthetic = load_schema(FLIGHTS), load_schema(SYNTHETIC)
    assert (flights.validation_tail, flights.model_reference) == (0.0, "holdout")
    assert (synthetic.validation_tail, synthetic.model_reference) == (0.5, "best_measured")


@pytest.mark.parametrize("section, body, message", [
    ("retraining", {"validation_tail": 1.0}, "retraining.validation_tail"),
    ("retraining", {"validation_tail": "half"}, "retraining.validation_tail"),
    ("retraining", {"validation_tail": True}, "retraining.validation_tail"),
    ("drift", {"model_reference": "pre_drift"}, "drift.model_reference"),
])
def test_a_bad_setting_is_a_clear_error_naming_the_file(tmp_path: Path, section: str, body: dict,
                                                        message: str) -> None:
    path = _schema(tmp_path, **{section: body})
    with pytest.raises(SchemaError, match=message) as raised:
        load_schema(path)
    assert str(path) in str(raised.value)


def test_by_default_the_whole_newest_week_is_predicted_from_the_weeks_before_it() -> None:
    from mlops.train import validation_rows

    table, schema = _table(), load_schema(FLIGHTS)
    fit, held, weeks = validation_rows(table, schema, Recipe("recent_2", window_weeks=2), WEEKS, None)
    assert weeks == ["2013-W02", "2013-W03"]
    assert sorted(fit["week"].unique()) == weeks and len(fit) == 20
    assert held["week"].unique().tolist() == ["2013-W04"] and len(held) == 10
    fit, _, weeks = validation_rows(table, schema, Recipe("weekly"), WEEKS, None)
    assert weeks == WEEKS[:3] and len(fit) == 30


def test_with_a_tail_the_newest_week_is_split_in_time_and_its_head_is_learnt_from() -> None:
    from mlops.train import validation_rows

    table, schema = _table(), load_schema(SYNTHETIC)
    newest = table[table["week"] == "2013-W04"]["n"].tolist()
    # recent_1 after an abrupt drift: it learns from the head of the newest week alone.
    fit, held, weeks = validation_rows(table, schema, Recipe("recent_1", window_weeks=1), WEEKS, None)
    assert weeks == ["2013-W04"]
    assert fit["n"].tolist() == newest[:5] and held["n"].tolist() == newest[5:]
    # The weekly recipe: every earlier week plus the same head, validated on the same tail.
    fit, held_weekly, weeks = validation_rows(table, schema, Recipe("weekly"), WEEKS, None)
    assert weeks == WEEKS and len(fit) == 35 and fit["n"].max() == newest[4]
    assert held_weekly["n"].tolist() == newest[5:]
    assert not set(fit["n"]) & set(held_weekly["n"])


def test_select_best_picks_the_recipe_that_learnt_the_new_concept() -> None:
    """The choice itself is unchanged: the best validation score, ties to the earlier recipe."""
    from mlops.promotion import select_best

    def cand(recipe: str, auc: float) -> dict:
        return {"recipe": recipe, "validation": {"week": "2013-W14", "metrics": {"roc_auc": auc}}}

    tied = [cand("weekly", 0.48), cand("recent_4", 0.48), cand("recent_1", 0.48)]
    assert select_best(tied)["recipe"] == "weekly"
    split = [cand("weekly", 0.62), cand("recent_4", 0.71), cand("recent_1", 0.99)]
    assert select_best(split)["recipe"] == "recent_1"


@pytest.mark.parametrize("tags, how, expected", [
    # A retraining's champion fitted before an abrupt drift, held out on the drifted week.
    ({"holdout_roc_auc": "0.74", "holdout_week": "2013-W40", "validation_roc_auc": "1.0",
      "validation_week": "2013-W39"}, "holdout", (0.74, "2013-W40")),
    ({"holdout_roc_auc": "0.74", "holdout_week": "2013-W40", "validation_roc_auc": "1.0",
      "validation_week": "2013-W39"}, "best_measured", (1.0, "validation week 2013-W39")),
    # Validation below the holdout, or none (a weekly champion): the holdout either way.
    ({"holdout_roc_auc": "0.95", "holdout_week": "2013-W20", "validation_roc_auc": "0.9",
      "validation_week": "2013-W19"}, "best_measured", (0.95, "2013-W20")),
    ({"holdout_roc_auc": "0.95", "holdout_week": "2013-W20"}, "best_measured", (0.95, "2013-W20")),
    ({}, "best_measured", (None, None)),
])
def test_the_model_signal_reference(tags: dict, how: str, expected: tuple) -> None:
    from mlops.drift import model_reference

    assert model_reference(tags, how) == expected


def test_the_half_adapted_champion_fires_the_model_signal_only_when_referenced_to_its_best() -> None:
    """The measure itself (drift_signals' model entry) on the two references."""
    from mlops import drift_signals
    from mlops.drift import model_reference

    tags = {"holdout_roc_auc": "0.74", "holdout_week": "2013-W40", "validation_roc_auc": "0.999",
            "validation_week": "2013-W39"}
    fired = {}
    for how in ("holdout", "best_measured"):
        ref_auc, ref_week = model_reference(tags, how)
        ev = drift_signals.Evidence(load_schema(SYNTHETIC), None, None, None, 0.71, ref_auc,
                                    ref_week, None, 0.5, 0.5)
        sig = drift_signals.by_name("model").measure(ev, 0.06)
        fired[how] = (sig["fired"], drift_signals.by_name("model").detail(sig))
    assert fired == {"holdout": (False, "reference: holdout week 2013-W40"),
                     "best_measured": (True, "reference: validation week 2013-W39")}

"""The training recipes (configs/recipes.yaml) and the drift thresholds: one table each, with
clear errors for a bad file, and the new thresholds in every interface (kwarg, env, CLI flag)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_the_recipes_file_has_the_required_kinds_and_distinct_specs() -> None:
    from mlops.config import load_recipes, weekly_recipe

    recipes = load_recipes()
    assert weekly_recipe().name == "weekly" == next(iter(recipes))
    kinds = {"window": [r for r in recipes.values() if r.window_weeks],
             "weighted": [r for r in recipes.values() if r.half_life_weeks],
             "params": [r for r in recipes.values() if r.params]}
    assert len(kinds["window"]) >= 2 and kinds["weighted"] and kinds["params"]
    specs = [repr(sorted(r.spec().items())) for r in recipes.values()]
    assert len(set(specs)) == len(specs)  # each recipe fits differently: distinct fingerprints


@pytest.mark.parametrize("body, message", [
    ("recipes: {}\n", "non-empty mapping"),
    ("recipes:\n  a: {window_weeks: 0}\n", "window_weeks must be a positive integer"),
    ("recipes:\n  a: {half_life: 3}\n", "keys must be among"),
    ("recipes:\n  a: {params: {max_depth_typo: 3}}\n", "unknown model parameters"),
])
def test_a_bad_recipes_file_is_a_clear_error(tmp_path: Path, body: str, message: str) -> None:
    from mlops.config import load_recipes
    from mlops.errors import RecipeError

    path = tmp_path / "recipes.yaml"
    path.write_text(body)
    with pytest.raises(RecipeError, match=message) as raised:
        load_recipes(path)
    assert str(path) in str(raised.value)


def test_unknown_recipe_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.config import recipe
    from mlops.errors import RecipeError

    with pytest.raises(RecipeError, match="unknown recipe 'nope'.*recipes.yaml"):
        recipe("nope")


def test_drift_thresholds_in_every_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.cli import build_parser
    from mlops.config import resolve_thresholds

    names = {"drift_share", "auc_drop", "label_shift"}
    assert set(resolve_thresholds("drift", {})) == names
    monkeypatch.setenv("MLOPS_AUC_DROP", "0.125")
    assert resolve_thresholds("drift", {"label_shift": 0.3}) == {
        **resolve_thresholds("drift", {}), "auc_drop": 0.125, "label_shift": 0.3}
    args = build_parser().parse_args(["drift", "--auc-drop", "0.01", "--label-shift", "0.02"])
    assert (args.auc_drop, args.label_shift, args.drift_share) == (0.01, 0.02, None)

"""Every threshold refuses NaN, infinities and values outside its range, from every source
(issue 22 item 11): `share > nan` is always false, so a NaN would silently switch a check off.
The Airflow Variable source is tested in tests/dags/test_dag_support.py."""

from __future__ import annotations

import math

import pytest

from mlops import config
from mlops.cli import main

BAD = ["nan", "NaN", "inf", "-inf", "-0.5"]


def _out_of_range(t: config.Threshold) -> list[str]:
    return [*BAD, *([f"{t.high + 0.5:g}"] if math.isfinite(t.high) else []), f"{t.low - 1:g}"]


@pytest.mark.parametrize("name", sorted(config.THRESHOLDS))
def test_a_keyword_outside_the_range_is_refused_naming_the_threshold(name: str) -> None:
    t = config.THRESHOLDS[name]
    for raw in _out_of_range(t):
        if t.low <= float(raw) <= t.high:
            continue
        with pytest.raises(config.ThresholdError, match=f"threshold {name}: keyword argument {name}="):
            config.threshold(name, float(raw))
        with pytest.raises(config.ThresholdError, match=f"threshold {name}"):
            config.resolve_thresholds(t.step, {name: float(raw)})
    assert config.threshold(name, t.default) == t.default
    assert config.threshold(name, t.low) == t.low


@pytest.mark.parametrize("name", sorted(config.THRESHOLDS))
def test_the_environment_outside_the_range_is_refused_naming_the_variable(name: str, monkeypatch) -> None:
    t = config.THRESHOLDS[name]
    for raw in _out_of_range(t):
        if t.low <= float(raw) <= t.high:
            continue
        monkeypatch.setenv(t.env, raw)
        with pytest.raises(config.ThresholdError, match=f"threshold {name}: environment {t.env}='{raw}'"):
            config.threshold(name)
        with pytest.raises(config.ThresholdError, match=t.env):
            config.resolve_thresholds(t.step, {})
    monkeypatch.setenv(t.env, str(t.default))
    assert config.threshold(name) == t.default


def test_a_cli_option_outside_the_range_is_refused_naming_the_option(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    for command in (["validate", "2013-W01"], ["drift"], ["deploy", "1"]):
        step = "validate" if command[0] == "validate" else command[0]
        for t in config.thresholds_of(step):
            assert main([*command, t.flag, "nan"]) == 1
            err = capsys.readouterr().err
            assert f"threshold {t.name}: option {t.flag}=nan is not a number" in err, err


def test_other_numeric_settings_refuse_nan_and_out_of_range(monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_DECISION_THRESHOLD", "nan")
    with pytest.raises(config.ThresholdError, match="MLOPS_DECISION_THRESHOLD"):
        config.decision_threshold()
    monkeypatch.setenv("MLOPS_DECISION_THRESHOLD", "1.5")
    with pytest.raises(config.ThresholdError, match="MLOPS_DECISION_THRESHOLD"):
        config.decision_threshold()
    monkeypatch.setenv("MLOPS_REFERENCE_ROWS", "inf")
    with pytest.raises(config.ThresholdError, match="MLOPS_REFERENCE_ROWS"):
        config.reference_rows()

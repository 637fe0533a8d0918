"""The schema file drives columns, features and label; it resolves from any working directory;
thresholds come from mlops.config with environment overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops import config
from mlops.config import load_schema
from mlops.errors import SchemaError

REPO = Path(__file__).resolve().parents[2]
LEAKING = {"dep_time", "dep_delay", "arr_time", "air_time", "arr_delay"}


def test_features_are_leak_free_and_declared() -> None:
    schema = load_schema()
    feats = set(schema.features)
    assert not feats & LEAKING
    assert LEAKING <= set(schema.leaking)
    assert schema.target_column == "arr_delay" and schema.target_threshold == 15
    assert schema.target_missing == "drop"
    assert {"carrier", "origin", "dest", "distance", "sched_dep_time", "temp",
            "day_of_week"} <= feats
    assert all(c in schema.columns for c in schema.raw_feature_columns)


def test_schema_refuses_a_leaking_feature(tmp_path: Path) -> None:
    raw = yaml.safe_load(Path(load_schema().path).read_text())
    raw["features"]["numeric"].append("dep_delay")
    bad = tmp_path / "schema.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(SchemaError, match="leak"):
        load_schema(bad)


def test_schema_resolves_from_any_cwd_and_env_overrides(tmp_path: Path) -> None:
    code = ("from mlops import config; print(config.schema_path()); "
            "print(config.threshold('drift_share'), config.threshold('deploy_margin'))")
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_SCHEMA"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, text=True,
                         capture_output=True, check=True).stdout.split()
    assert Path(out[0]) == REPO / "configs" / "flights.yaml"
    assert float(out[1]) == config.THRESHOLDS["drift_share"].default
    env.update(MLOPS_SCHEMA=str(tmp_path / "other.yaml"), MLOPS_DRIFT_SHARE="0.45",
               MLOPS_DEPLOY_MARGIN="0.01")
    out = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, text=True,
                         capture_output=True, check=True).stdout.split()
    assert out == [str(tmp_path / "other.yaml"), "0.45", "0.01"]


def test_default_locations_follow_the_data_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlops import batches

    assert batches.landing_dir() == tmp_path / "d" / "landing"
    assert config.processed_table() == tmp_path / "d" / "processed" / "training.parquet"
    assert config.tracking_uri() == f"sqlite:///{tmp_path / 'd-mlflow' / 'mlflow.db'}"
    assert config.artifact_location() == (tmp_path / 'd-mlflow' / 'artifacts').as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert config.tracking_uri() == "http://mlflow:5000" and config.artifact_location() is None
    monkeypatch.setenv("MLOPS_MODEL_NAME", "m")
    assert config.model_name() == "m"
    monkeypatch.delenv("MLOPS_PUSHGATEWAY_URL", raising=False)
    assert config.pushgateway_url() is None
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", " ")
    assert config.pushgateway_url() is None
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", "http://pushgateway:9091")
    assert config.pushgateway_url() == "http://pushgateway:9091"


def test_one_name_per_threshold_in_every_interface(monkeypatch) -> None:
    """Keyword argument, Airflow Variable, environment variable and CLI flag share one name,
    and the environment is read when the value is used, not at import."""
    from mlops.cli import build_parser

    spec = config.THRESHOLDS["max_null_share"]
    assert (spec.variable, spec.env, spec.flag) == (
        "mlops_max_null_share", "MLOPS_MAX_NULL_SHARE", "--max-null-share")
    monkeypatch.delenv(spec.env, raising=False)
    assert config.threshold("max_null_share") == spec.default
    monkeypatch.setenv(spec.env, "0.25")
    assert config.threshold("max_null_share") == 0.25
    assert config.threshold("max_null_share", 0.3) == 0.3  # an explicit value wins
    with pytest.raises(TypeError, match="unknown thresholds for drift"):
        config.resolve_thresholds("drift", {"max_null_share": 0.1})
    parser = build_parser()
    for step, command in (("validate", ["validate", "x.csv"]), ("drift", ["drift"]),
                          ("deploy", ["deploy", "1"]), ("deploy", ["evaluate", "1"])):
        for t in config.thresholds_of(step):
            args = parser.parse_args([*command, t.flag, "0.5"])
            assert getattr(args, t.name) == 0.5, (command, t.flag)
    monkeypatch.setenv("MLOPS_DRIFT_SHARE", "lots")
    with pytest.raises(ValueError, match="MLOPS_DRIFT_SHARE='lots' is not a number"):
        config.threshold("drift_share")


def test_env_example_lists_every_threshold_with_its_default() -> None:
    """.env.example documents each MLOPS_<NAME> override with the default it overrides."""
    text = (REPO / ".env.example").read_text()
    for t in config.THRESHOLDS.values():
        assert f"# {t.env}={t.default_text}\n" in text, t.env

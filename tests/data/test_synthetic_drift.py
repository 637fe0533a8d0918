"""The synthetic_drift data set (configs/synthetic_drift.yaml, mlops.synthetic): generated
deterministically, every genuine week accepted by the project's validation, mutated weeks
rejected by the same checks, bad generator settings refused naming the file."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import yaml

from mlops.config import REPO_ROOT

SCHEMA = REPO_ROOT / "configs" / "synthetic_drift.yaml"
LAST = "2013-W52"


def use_synthetic(world: ModuleType, data: Path, monkeypatch: pytest.MonkeyPatch,
                  schema: Path = SCHEMA) -> None:
    """This process on the synthetic data set: its schema, its own data folder and model."""
    world.use_data_dir(data, monkeypatch)
    monkeypatch.setenv("MLOPS_SCHEMA", str(schema))
    monkeypatch.setenv("MLOPS_MODEL_NAME", "synthetic_drift_classifier")
    monkeypatch.delenv("MLOPS_RECIPES", raising=False)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.csv"))}


@pytest.fixture(scope="module")
def year(world: ModuleType, tmp_path_factory: pytest.TempPathFactory):
    """The year replayed into landing; W01..W51 validated with every check and accepted in
    order (each outcome recorded, not asserted here). W52 stays in landing."""
    from mlops.batches import mark_processed
    from mlops.data import replay
    from mlops.errors import BatchValidationError
    from mlops.validate import accept_batch, validate_batch

    data = tmp_path_factory.mktemp("synthetic-year") / "data"
    with pytest.MonkeyPatch.context() as mp:
        use_synthetic(world, data, mp)
        written = replay()["written"]
        outcomes: dict[str, str] = {}
        for week in written[:-1]:
            try:
                result = validate_batch(week)
                accept_batch(week)
                outcomes[week] = result["status"]
            except BatchValidationError as exc:
                outcomes[week] = f"rejected: {exc}"
            mark_processed([week])
    return data, written, outcomes


def test_same_seed_same_bytes(world: ModuleType, year, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``mlops data replay`` in another process (another hash seed) writes the very bytes this
    process wrote; another seed writes other rows."""
    data, written, _ = year
    assert written == [f"2013-W{n:02d}" for n in range(1, 53)]
    ours = digests(data / "accepted") | digests(data / "landing")
    assert len(ours) == 52
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    env.update(MLOPS_SCHEMA=str(SCHEMA), MLOPS_DATA_DIR=str(tmp_path / "again"),
               PYTHONHASHSEED="12345")
    res = subprocess.run([str(Path(sys.executable).parent / "mlops"), "data", "replay"],
                         env=env, capture_output=True, text=True, timeout=300, cwd="/")
    assert res.returncode == 0, res.stderr
    assert digests(tmp_path / "again" / "landing") == ours

    raw = yaml.safe_load(SCHEMA.read_text())
    raw["source"].update(seed=raw["source"]["seed"] + 1, weeks=2, drifts=[])
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(raw))
    use_synthetic(world, tmp_path / "other", monkeypatch, other)
    from mlops.data import replay

    assert replay()["written"] == ["2013-W01", "2013-W02"]
    theirs = digests(tmp_path / "other" / "landing")
    assert theirs["2013-W01.csv"] != ours["2013-W01.csv"]
    first = pd.read_csv(tmp_path / "other" / "landing" / "2013-W01.csv")
    assert len(first) == raw["source"]["rows_per_week"] and first["id"].is_unique


def test_every_genuine_week_passes_validation(world: ModuleType, year,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check (schema, temporal, quality, row key, anomalies, label and volume against the
    accepted weeks, distribution) passes on all 52 weeks, drift weeks included."""
    from mlops.validate import validate_batch

    data, _, outcomes = year
    assert outcomes == {f"2013-W{n:02d}": "passed" for n in range(1, 52)}
    use_synthetic(world, data, monkeypatch)
    result = validate_batch(LAST)
    assert result["status"] == "passed" and result["rows"] == 2000
    assert set(result["checks_run"]) == {"schema", "quality", "distribution", "anomalies"}
    assert (data / "landing" / f"{LAST}.csv").exists()


def _label_all_positive(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(label="1")


def _label_out_of_range(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(label=df["label"].where(df.index % 50 != 0, "2"))


def _unknown_zipcode(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(zipcode=df["zipcode"].where(df.index % 10 != 0, "99"))


def _ids_of_accepted_week(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(id=(df["id"].astype(int) - 2000 * 3).astype(str))


def _monday_missing(df: pd.DataFrame) -> pd.DataFrame:
    return df[~df["event_time"].str.startswith("2013-12-23")]


def _rows_of_next_week(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(event_time=df["event_time"].str.replace("2013-12-29", "2013-12-30"))


def _salary_scaled(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(salary=(df["salary"].astype(float) * 1000).astype(str))


def _extra_column(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(score="0.5")


def _text_in_age(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(age=df["age"].where(df.index != 7, "forty"))


@pytest.mark.parametrize(("mutate", "check"), [
    (_label_all_positive, "label.target_rate"),
    (_label_out_of_range, "quality.range"),
    (_unknown_zipcode, "quality.unknown_categories"),
    (_ids_of_accepted_week, "row_key.accepted"),
    (_monday_missing, "temporal.missing_days"),
    (_rows_of_next_week, "temporal.week"),
    (_salary_scaled, "quality.range"),
    (_extra_column, "schema.extra_columns"),
    (_text_in_age, "schema.dtype"),
])
def test_mutated_week_is_rejected(world: ModuleType, year, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch, mutate, check: str) -> None:
    """A genuine week broken one way is refused by the project's own check for it."""
    from mlops.errors import BatchValidationError
    from mlops.validate import validate_batch

    data, _, _ = year
    use_synthetic(world, data, monkeypatch)
    genuine = pd.read_csv(data / "landing" / f"{LAST}.csv", dtype=str)
    path = tmp_path / f"{LAST}.csv"
    mutate(genuine.copy()).to_csv(path, index=False)
    with pytest.raises(BatchValidationError) as err:
        validate_batch(path)
    assert check in validate_failed_checks(err.value), str(err.value)
    assert not (data / "accepted" / f"{LAST}.csv").exists()


def validate_failed_checks(exc) -> list[str]:  # noqa: ANN001 (BatchValidationError)
    """The failed checks of a rejection, from its JSON report (the exception names the first)."""
    import json

    report = json.loads(Path(exc.report).read_text()) if exc.report else {}
    return [exc.check, *(report.get("failed_checks") or [])]


@pytest.mark.parametrize(("change", "message"), [
    ({"generator": "river_sea"}, "source.generator"),
    ({"drifts": [{"week": "2013-W14", "kind": "sudden", "function": 2}]}, "kind"),
    ({"drifts": [{"week": "2013-W14", "kind": "abrupt", "function": 0}]}, "change the function"),
    ({"drifts": [{"week": "2013-W14", "kind": "gradual", "width_weeks": 4, "function": 2},
                 {"week": "2013-W16", "kind": "abrupt", "function": 1}]}, "previous drift"),
    ({"drifts": [{"week": "2014-W03", "kind": "abrupt", "function": 2}]}, "drifts[0].week"),
    ({"rows_per_week": "many"}, "rows_per_week"),
])
def test_bad_generator_settings_name_the_file(tmp_path: Path, change: dict, message: str) -> None:
    """Refused when the source is read (before any row is generated), naming file and key."""
    from mlops.config import load_schema
    from mlops.data import load_source
    from mlops.errors import SchemaError

    raw = yaml.safe_load(SCHEMA.read_text())
    raw["source"].update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SchemaError) as err:
        load_source(load_schema(path))
    assert str(path) in str(err.value) and message in str(err.value)


def test_drift_truth_is_the_configured_weeks() -> None:
    from mlops.config import load_schema
    from mlops.synthetic import drift_truth, spec_of

    schema = load_schema(SCHEMA)
    truth = drift_truth(spec_of(schema.source, schema.path))
    assert [(t["week"], t["kind"]) for t in truth] == [
        ("2013-W14", "abrupt"), ("2013-W27", "gradual"), ("2013-W40", "abrupt")]

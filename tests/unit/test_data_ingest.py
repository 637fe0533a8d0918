"""Weekly replay, week labels in local time, label rule, features, watermark."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlops.config import load_schema


def test_week_label_uses_local_time() -> None:
    from mlops.data import week_labels

    # 2013-01-07 04:30 UTC is Sunday 2013-01-06 23:30 in New York: still ISO week 1.
    df = pd.DataFrame({"time_hour": ["2013-01-07T04:30:00Z", "2013-01-07T05:00:00Z",
                                     "2013-12-31T15:00:00Z"]})
    assert list(week_labels(df, load_schema())) == ["2013-W01", "2013-W02", "2014-W01"]


def test_label_drops_cancelled_flights_and_uses_strict_threshold() -> None:
    from mlops.data import make_target

    df = pd.DataFrame({"arr_delay": [15.0, 16.0, None, -3.0, 200.0]})
    keep, y = make_target(df, load_schema())
    assert list(keep) == [True, True, False, True, True]
    assert list(y[keep]) == [0, 1, 0, 1]


def test_features_are_the_schema_features_without_leaks() -> None:
    from mlops.data import make_features

    schema = load_schema()
    raw = pd.DataFrame({c: [1.0] for c in schema.columns})
    for c in schema.categorical:
        raw[c] = ["EWR"]
    raw["time_hour"] = ["2013-03-04T15:00:00Z"]
    feats = make_features(raw, schema)
    assert list(feats.columns) == schema.features
    assert not set(feats.columns) & set(schema.leaking)
    assert feats["day_of_week"].iloc[0] == 0  # Monday


def test_replay_writes_the_requested_weeks_once(tmp_path: Path, monkeypatch) -> None:
    from mlops.data import replay

    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    out = replay(until_week="2013-W12", from_week="2013-W10")
    assert out["written"] == ["2013-W10", "2013-W11", "2013-W12"]
    files = sorted(p.name for p in (tmp_path / "landing").glob("*.csv"))
    assert files == ["2013-W10.csv", "2013-W11.csv", "2013-W12.csv"]
    w11 = pd.read_csv(tmp_path / "landing" / "2013-W11.csv")
    local = pd.to_datetime(w11["time_hour"], utc=True).dt.tz_convert("America/New_York")
    assert set(local.dt.isocalendar()["week"]) == {11}
    assert len(w11) > 6000 and {"temp", "arr_delay", "carrier"} <= set(w11.columns)
    assert w11["temp"].notna().mean() > 0.9  # the origin's weather is joined
    again = replay(until_week="2013-W12", from_week="2013-W10")
    assert again["written"] == [] and again["skipped"] == out["written"]
    with pytest.raises(ValueError, match="ISO week"):
        replay(until_week="March")


def test_watermark(tmp_path: Path, monkeypatch) -> None:
    from mlops.batches import mark_processed, new_batches

    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path))
    landing = tmp_path / "landing"
    landing.mkdir()
    for w in ("2013-W03", "2013-W01", "2013-W02"):
        (landing / f"{w}.csv").write_text("a,b\n1,2\n")
    assert [Path(p).name for p in new_batches()] == ["2013-W01.csv", "2013-W02.csv",
                                                     "2013-W03.csv"]
    assert mark_processed([str(landing / "2013-W01.csv"), "2013-W02"])["added"] == [
        "2013-W01", "2013-W02"]
    assert mark_processed("2013-W02")["added"] == []
    assert [Path(p).name for p in new_batches()] == ["2013-W03.csv"]


def test_cli_reports_bad_arguments_in_one_line(capsys) -> None:
    from mlops.cli import main

    assert main(["data", "replay", "--until", "March"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ISO week" in err[0]
    with pytest.raises(SystemExit) as info:
        main(["train", "--no-such-flag"])
    assert info.value.code == 2


def test_results_are_json_ready() -> None:
    import json

    import numpy as np

    from mlops.util import to_jsonable

    out = to_jsonable({"nan": np.float64("nan"), "n": np.int64(3), "p": Path("/x"),
                       "l": (np.float32(0.5),)})
    assert json.loads(json.dumps(out, allow_nan=False)) == {"nan": None, "n": 3, "p": "/x",
                                                            "l": [0.5]}

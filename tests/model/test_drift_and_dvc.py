"""Drift of a normal vs a deliberately shifted batch; the DVC stage is idempotent and safe to
run concurrently; a failing metrics push never breaks a step."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd


def test_data_drift_normal_batch_not_detected_shifted_detected(model_dir: Path) -> None:
    from mlops.drift import detect_drift

    normal = detect_drift(week="2013-W04")
    assert set(normal) >= {"week", "batch", "drift_detected", "fired", "signals", "summary",
                           "report_html", "report_json"}
    assert normal["week"] == "2013-W04" and normal["batch"].endswith("landing/2013-W04.csv")
    assert normal["reference"].startswith("champion v")
    data = normal["signals"]["data"]
    assert data["fired"] is False and data["share"] < data["threshold"]
    assert Path(normal["report_html"]).stat().st_size > 10_000
    assert json.loads((model_dir / "reports" / "2013-W04" / "drift.json").read_text())[
        "signals"]["data"]["share"] == data["share"]

    df = pd.read_csv(model_dir / "landing" / "2013-W04.csv", dtype=str)
    df["carrier"] = "WN"
    df["origin"] = "LGA"
    df["dest"] = "DEN"
    df["distance"] = (pd.to_numeric(df["distance"]) * 2.5).round().astype(int).astype(str)
    df["sched_dep_time"], df["hour"], df["minute"] = "2200", "22", "0"
    (model_dir / "landing" / "2013-W05.csv").write_text(df.to_csv(index=False))
    shifted = detect_drift(week="2013-W05", drift_share=0.5)
    data = shifted["signals"]["data"]
    assert shifted["drift_detected"] is True and "data" in shifted["fired"]
    assert {"carrier", "origin", "dest", "distance", "hour"} <= set(data["drifted_columns"])
    assert data["threshold"] == 0.5 and data["share"] >= 0.5
    (model_dir / "landing" / "2013-W05.csv").unlink()


def test_a_pushgateway_that_fails_never_fails_a_step(model_dir: Path, monkeypatch, caplog) -> None:
    """Metrics off, a host that does not resolve, a port nobody listens on: the push returns
    False and logs why; the step (here a drift check, which pushes its results) succeeds."""
    import socket

    from mlops import metrics
    from mlops.drift import detect_drift

    monkeypatch.delenv("MLOPS_PUSHGATEWAY_URL", raising=False)
    assert metrics.push("drift", [metrics.Sample("mlops_drift_share", 0.1)]) is False  # metrics off
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # nobody listens once the socket is closed
    for url in ("http://no-such-host.invalid:9091", f"http://127.0.0.1:{closed}"):
        monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", url)
        caplog.clear()
        assert metrics.push("drift", [metrics.Sample("mlops_drift_share", 0.1)]) is False
        assert f"push of mlops_drift (mlops_drift_share, mlops_last_success_timestamp_seconds) to {url} failed" \
            in caplog.text
    result = detect_drift(week="2013-W04")
    assert result["week"] == "2013-W04" and "push of mlops_drift" in caplog.text


def test_dvc_stage_is_idempotent_and_rebuilds_on_new_data(world, model_dir: Path) -> None:
    from mlops.preprocess import run_preprocess

    table = model_dir / "processed" / "training.parquet"
    lock = (model_dir / "dvc.lock").read_text()
    mtime = table.stat().st_mtime_ns
    rows = len(pd.read_parquet(table, columns=["week"]))
    again = run_preprocess()  # the world already ran the stage on the same inputs
    assert again["stage_ran"] is False
    assert (model_dir / "dvc.lock").read_text() == lock and table.stat().st_mtime_ns == mtime
    assert again["rows"] == rows and again["weeks"] == ["2013-W01", "2013-W02", "2013-W03"]
    assert "preprocess" in (model_dir / "dvc.yaml").read_text()

    # A new accepted week: two concurrent runs (separate processes) both succeed, one builds.
    src = model_dir / "landing" / "2013-W04.csv"
    (model_dir / "accepted" / "2013-W04.csv").write_bytes(src.read_bytes())
    env = {**os.environ, "MLOPS_DATA_DIR": str(model_dir)}
    procs = [subprocess.Popen([world.MLOPS, "preprocess"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(o[0]) for o in outs]
    assert sorted(r["stage_ran"] for r in results) == [False, True]
    assert all(r["weeks"][-1] == "2013-W04" for r in results)
    built = pd.read_parquet(table)
    assert sorted(built["week"].unique()) == ["2013-W01", "2013-W02", "2013-W03", "2013-W04"]
    assert len(built) == results[0]["rows"] > rows
    assert (model_dir / "dvc.lock").read_text() != lock

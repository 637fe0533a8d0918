"""The three drift signals on real weeks of 2013 against a champion trained on W01-W02 (held out
on W03), with the default thresholds of mlops.config.THRESHOLDS: each fires on a real week and
stays quiet on another, a bootstrap resample of the reference fires nothing, and every signal is
in the result, drift.json and the HTML report.

The champion is a model of its own (MLOPS_MODEL_NAME) in the shared world's MLflow store, so the
other model tests keep theirs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

MODEL = "drift_signals_model"
CHAMPION = {"train_weeks": ["2013-W01", "2013-W02"], "holdout_week": "2013-W03"}


@pytest.fixture(scope="module")
def champion(world, shared_world: Path) -> dict:
    """The champion of MODEL, and the real weeks the tests look at, replayed into landing."""
    with pytest.MonkeyPatch.context() as mp:
        world.use_data_dir(shared_world, mp)
        mp.setenv("MLOPS_MODEL_NAME", MODEL)
        from mlops.data import replay
        from mlops.promotion import deploy
        from mlops.train import train_model

        replay(from_week="2013-W17", until_week="2013-W17")
        replay(from_week="2013-W26", until_week="2013-W26")
        trained = train_model(**CHAMPION)
        assert deploy(trained["version"])["deployed"] is True
        return trained


@pytest.fixture()
def signals_dir(world, shared_world: Path, champion: dict, monkeypatch: pytest.MonkeyPatch) -> Path:
    world.use_data_dir(shared_world, monkeypatch)
    monkeypatch.setenv("MLOPS_MODEL_NAME", MODEL)
    for name in ("MLOPS_DRIFT_SHARE", "MLOPS_AUC_DROP", "MLOPS_LABEL_SHIFT"):
        monkeypatch.delenv(name, raising=False)
    return shared_world


def _labelled(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, low_memory=False)
    return raw[raw["arr_delay"].notna()]


def test_a_normal_week_fires_nothing_and_every_signal_is_reported(signals_dir: Path, champion) -> None:
    from mlops.config import THRESHOLDS
    from mlops.drift import detect_drift

    result = detect_drift(week="2013-W04")
    assert result["fired"] == [] and result["drift_detected"] is False
    signals = result["signals"]
    assert set(signals) == {"data", "model", "label"}
    for name, key in (("data", "drift_share"), ("model", "auc_drop"), ("label", "label_shift")):
        assert signals[name]["threshold"] == THRESHOLDS[key].default
        assert signals[name]["fired"] is False
    assert signals["model"]["reference_roc_auc"] == pytest.approx(champion["metrics"]["roc_auc"], abs=1e-6)
    assert signals["model"]["reference_week"] == "2013-W03"
    on_disk = json.loads(Path(result["report_json"]).read_text())
    assert on_disk["signals"] == signals and on_disk["fired"] == []
    page = Path(result["report_html"]).read_text()
    assert "mlops-drift-signals" in page and "no drift" in page
    assert all(f"<td>{name}</td>" in page for name in signals)


def test_label_drift_fires_on_the_stormiest_week(signals_dir: Path, champion) -> None:
    from mlops.drift import detect_drift

    rows = _labelled(signals_dir / "landing" / "2013-W26.csv")
    rate = float((rows["arr_delay"] > 15).mean())  # 2013-W26: 45 % of flights delayed
    result = detect_drift(week="2013-W26")
    label = result["signals"]["label"]
    assert label["rate"] == pytest.approx(rate)
    assert label["reference_rate"] == pytest.approx(champion["train_positive_rate"], abs=1e-6)
    assert label["fired"] is True and abs(label["difference"]) >= label["threshold"]
    assert "label" in result["fired"] and result["drift_detected"] is True
    assert "FIRED" in Path(result["report_html"]).read_text()
    quiet = detect_drift(week="2013-W04")["signals"]["label"]
    assert quiet["fired"] is False and abs(quiet["difference"]) < quiet["threshold"]


def test_model_drift_fires_when_the_champion_loses_its_auc(signals_dir: Path, champion) -> None:
    from mlops.drift import detect_drift
    from mlops.evaluate import load_version
    from mlops.modeling import model_input

    result = detect_drift(week="2013-W17")
    model = result["signals"]["model"]
    # The same number, computed independently from the batch file and the registered model.
    rows = _labelled(signals_dir / "landing" / "2013-W17.csv")
    from mlops.data import make_features

    x = model_input(make_features(pd.read_csv(signals_dir / "landing" / "2013-W17.csv",
                                              low_memory=False).loc[rows.index]))
    auc = roc_auc_score((rows["arr_delay"] > 15).astype(int), load_version(champion["version"]).predict_proba(x)[:, 1])
    assert model["roc_auc"] == pytest.approx(auc, abs=1e-9)
    assert model["drop"] == pytest.approx(model["reference_roc_auc"] - auc)
    assert model["fired"] is True and model["drop"] >= model["threshold"], model
    assert "model" in result["fired"]
    quiet = detect_drift(week="2013-W04")["signals"]["model"]
    assert quiet["fired"] is False and quiet["drop"] < quiet["threshold"]


def test_data_drift_fires_on_a_real_week_with_another_flight_mix(signals_dir: Path, champion) -> None:
    """Only the flights from EWR of the real week 4: carrier, origin and destination mix shift."""
    from mlops.drift import detect_drift

    week = pd.read_csv(signals_dir / "landing" / "2013-W04.csv", low_memory=False)
    (signals_dir / "landing" / "2013-W40.csv").write_text(week[week["origin"] == "EWR"].to_csv(index=False))
    try:
        result = detect_drift(week="2013-W40")
    finally:
        (signals_dir / "landing" / "2013-W40.csv").unlink()
    data = result["signals"]["data"]
    assert data["fired"] is True and data["share"] >= data["threshold"]
    assert {"origin", "carrier"} <= set(data["drifted_columns"])
    assert "data" in result["fired"]


def test_a_bootstrap_resample_of_the_reference_fires_nothing(signals_dir: Path, champion) -> None:
    """Resampled with replacement: the champion's training weeks (the data and label reference)
    and its holdout week (the model reference). Neither may fire any signal."""
    from mlops.drift import detect_drift

    rng = np.random.default_rng(7)
    frames = {"2013-W45": pd.concat([pd.read_csv(signals_dir / "accepted" / f"{w}.csv", low_memory=False)
                                     for w in CHAMPION["train_weeks"]]),
              "2013-W46": pd.read_csv(signals_dir / "accepted" / "2013-W03.csv", low_memory=False)}
    results = {}
    try:
        for name, frame in frames.items():
            sample = frame.iloc[rng.integers(0, len(frame), len(frame))]
            (signals_dir / "landing" / f"{name}.csv").write_text(sample.to_csv(index=False))
            results[name] = detect_drift(week=name)
    finally:
        for name in frames:
            (signals_dir / "landing" / f"{name}.csv").unlink(missing_ok=True)
    for name, result in results.items():
        assert result["fired"] == [], (name, result["summary"])
    train_resample = results["2013-W45"]["signals"]
    assert train_resample["data"]["share"] == 0.0
    assert abs(train_resample["label"]["difference"]) < 0.01
    holdout_resample = results["2013-W46"]["signals"]["model"]
    assert abs(holdout_resample["drop"]) < 0.03  # the holdout AUC, up to resampling noise


def test_a_new_signal_is_one_table_entry(signals_dir: Path, champion, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """One entry added to mlops.drift_signals.SIGNALS (with its threshold declared): the signal is
    measured, decides drift, and appears in the result, drift.json, drift.html's signal table, the
    summary and the metrics pushed to a real Pushgateway (value, threshold, fired, and its HELP)."""
    from mlops import config, drift_signals
    from mlops.drift import detect_drift
    from testkit.pushgateway import serving

    def volume(ev: drift_signals.Evidence, ratio: float) -> dict:
        measured = len(ev.current) / len(ev.reference)
        return {"fired": measured >= ratio, "threshold": ratio, "ratio": measured, "rows": len(ev.current)}

    signal = drift_signals.Signal("volume", "volume_ratio", volume, "rows of the batch per row of the reference",
                                  value=lambda s: s["ratio"], text=lambda s: f"ratio {s['ratio']:.3f}")
    monkeypatch.setattr(drift_signals, "SIGNALS", [*drift_signals.SIGNALS, signal])
    monkeypatch.setitem(config.THRESHOLDS, "volume_ratio",
                        config.Threshold("volume_ratio", 100.0, "drift", "rows ratio at which volume drift fires",
                                         high=float("inf")))
    with serving(tmp_path / "pushgateway.data", monkeypatch) as gateway:
        quiet = detect_drift(week="2013-W04")  # the default (100 batch rows per reference row): quiet
        assert quiet["signals"]["volume"]["fired"] is False and quiet["fired"] == []
        result = detect_drift(week="2013-W04", volume_ratio=0.5)
        series = {name: gateway.series(name) for name in
                  ("mlops_drift_signal_value", "mlops_drift_signal_threshold", "mlops_drift_signal_fired")}
        value_help = gateway.help_of("mlops_drift_signal_value")

    sig = result["signals"]["volume"]
    assert sig["rows"] > 1000 and sig["ratio"] == pytest.approx(sig["rows"] / config.reference_rows())
    assert sig["fired"] is True and sig["threshold"] == 0.5
    assert result["fired"] == ["volume"] and result["drift_detected"] is True
    assert result["summary"].endswith(f"; volume: ratio {sig['ratio']:.3f} (threshold 0.5) FIRED")
    assert json.loads(Path(result["report_json"]).read_text())["signals"]["volume"] == sig
    page = Path(result["report_html"]).read_text()
    assert f"<td>volume</td><td>ratio {sig['ratio']:.3f}</td><td>0.5</td><td>FIRED</td>" in page
    assert "retraining due: volume" in page
    job = (("job", "mlops_drift"), ("signal", "volume"))
    assert series["mlops_drift_signal_value"][job] == pytest.approx(sig["ratio"])
    assert series["mlops_drift_signal_threshold"][job] == 0.5
    assert series["mlops_drift_signal_fired"][job] == 1
    assert "volume: rows of the batch per row of the reference" in value_help
    assert drift_signals.described("volume", sig) == f"ratio {sig['ratio']:.3f}"  # the demo's line

"""The soak benchmark's pure functions (benchmarks/soak.py): quarters, growth, percentiles, alert
episodes and their classification, compressed retentions, and the JSON's shape."""

from __future__ import annotations

import importlib.util
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def soak():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("soak_under_test", BENCH / "soak.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("soak_under_test", None)
        sys.path.remove(str(BENCH))


ISSUE_KEYS = ["weeks", "runs", "failed", "lost", "stuck", "wall_s", "pss_mb", "disk_mb", "task_latency_s",
              "alerts_fired", "zombies_max"]


def test_weeks_and_the_compressed_days(soak) -> None:
    assert [soak.week_id(i) for i in (0, 8, 51)] == ["2013-W01", "2013-W09", "2013-W52"]
    start = datetime(2026, 12, 7, 14, 0, tzinfo=timezone.utc)
    landed, end = start + timedelta(seconds=20), start + timedelta(seconds=80)
    days = soak.day_slices(start, landed, end)
    assert len(days) == 7 and days[0] == (start, landed)
    # The six later days split what follows the landing evenly, and the slices tile the week.
    assert {b - a for a, b in days[1:]} == {timedelta(seconds=10)}
    assert all(days[i][1] == days[i + 1][0] for i in range(6)) and days[-1][1] == end


def test_quarters_of_a_year_and_of_a_short_run(soak) -> None:
    assert soak.quarter_bounds(52) == (13, 39)
    assert soak.quarter_bounds(3) == (1, 2)
    assert soak.quarter_bounds(1) == (1, 0)


def test_quarter_medians_and_growth_after_the_warm_up(soak) -> None:
    # 52 weeks, two samples a week: warming up over weeks 1-4 (50 MiB), 100 MiB over weeks 5-13,
    # 120 in the last quarter, junk between.
    samples = [(w, 50.0) for w in range(4) for _ in (0, 1)]
    samples += [(w, 100.0 + (w % 2)) for w in range(4, 13) for _ in (0, 1)]
    samples += [(w, 999.0) for w in range(13, 39)]
    samples += [(w, 120.0) for w in range(39, 52)]
    result = soak.quarter_medians(samples, 52)
    assert result["after_warmup"] == 100.0 and result["last_quarter"] == 120.0
    # The warm-up weeks are in the first quarter's median but not in growth's baseline.
    assert result["first_quarter"] == 100.0 and result["growth"] == 1.2
    assert soak.warm_bounds(52) == (4, 13)
    assert soak.growth_basis(52) == "median of weeks 40-52 / median of weeks 5-13 (after a 4-week warm-up)"
    # Too short for a warm-up: the whole first quarter is the baseline.
    assert soak.warm_bounds(8) == (0, 2)
    assert soak.quarter_medians([], 52) == {"first_quarter": None, "after_warmup": None, "last_quarter": None,
                                            "growth": None}
    # A component that appeared only late has no first quarter: no growth, never a division by zero.
    assert soak.quarter_medians([(50, 5.0)], 52)["growth"] is None


def test_percentiles_and_latency_quarters(soak) -> None:
    assert soak.percentile([], 50) is None
    values = [float(v) for v in range(1, 101)]
    assert soak.percentile(values, 50) == 50.0 and soak.percentile(values, 95) == 95.0
    rows = [(0, 0.5, 2.0), (0, 1.5, 4.0), (1, 9.0, 9.0), (3, 1.0, 3.0)]
    lat = soak.quarter_latency(rows, 4)
    assert lat["first_quarter"]["tasks"] == 2 and lat["last_quarter"]["tasks"] == 1
    assert lat["first_quarter"]["queue_wait_p95"] == 1.5 and lat["last_quarter"]["duration_p50"] == 3.0


def test_firing_episodes(soak) -> None:
    assert soak.firing_episodes([]) == 0
    assert soak.firing_episodes([0, 1, 1, 0, 0, 1, 0]) == 2
    assert soak.firing_episodes([1, 1, 1]) == 1


def test_alert_classification(soak) -> None:
    fired = soak.classify_alerts({"MlDriftDetected": 3, "AirflowSchedulerHeartbeatStalled": 1,
                                  "MlServedAucBelowFloor": 1, "MlChampionAucBelowFloor": 2, "ServingDown": 1})
    assert [a["name"] for a in fired] == sorted(a["name"] for a in fired)
    justified = {a["name"]: a["justified"] for a in fired}
    assert justified == {"MlDriftDetected": True, "MlChampionAucBelowFloor": True, "MlServedAucBelowFloor": True,
                         "AirflowSchedulerHeartbeatStalled": False, "ServingDown": False}
    assert next(a for a in fired if a["name"] == "MlDriftDetected")["count"] == 3


def test_retention_in_replayed_time(soak) -> None:
    # 35 s of wall time per replayed week = 5 s per replayed day: 30 replayed days are 150 s.
    assert soak.compressed_retention(30, 5.0) == pytest.approx(150 / 86400)
    now = datetime(2026, 12, 7, tzinfo=timezone.utc)
    conf = soak.maintenance_conf({"LOG_RETENTION_DAYS": "10", "AIRFLOW_DB_RETENTION_DAYS": ""}, 5.0, now)
    assert conf["log_retention_days"] == pytest.approx(50 / 86400)
    assert conf["report_retention_days"] == pytest.approx(90 * 5 / 86400)        # the default
    assert conf["mlflow_run_retention_days"] == pytest.approx(180 * 5 / 86400)
    assert conf["mlflow_model_version_retention_days"] == pytest.approx(180 * 5 / 86400)
    assert datetime.fromisoformat(conf["clean_before"]) == now - timedelta(seconds=90 * 5)
    assert "db_retention_days" not in conf


def test_the_replayed_calendar_and_the_prediction_log_summary(soak) -> None:
    # The service's replay clock is set to each replayed week's Monday (ISO weeks of 2013).
    assert soak.replayed_monday(0) == datetime(2012, 12, 31, tzinfo=timezone.utc)
    assert soak.replayed_monday(1) == datetime(2013, 1, 7, tzinfo=timezone.utc)
    assert soak.replayed_monday(51) == datetime(2013, 12, 23, tzinfo=timezone.utc)
    weeks = [{"week": "2013-W01", "count": 1, "oldest": "20121231"},
             {"week": "2013-W20", "count": 14, "oldest": "20130218"},
             {"week": "2013-W21", "count": 14, "oldest": "20130225"}]
    summary = soak.prediction_log_summary(weeks, {"PREDICTIONS_RETENTION_DAYS": "90"})
    assert summary == {"retention_days": 90, "partitions_end": 14, "partitions_max": 14, "oldest_end": "20130225",
                       "by_week": {"2013-W01": 1, "2013-W20": 14, "2013-W21": 14}}
    assert soak.prediction_log_summary([], {})["retention_days"] == 90


def test_json_shape(soak) -> None:
    result = soak.summarise(
        weeks=4, runs={"ml_pipeline_dag": {"success": 3}, "data_validation_dag": {"success": 28}}, failed=[],
        lost=0, stuck=[], wall_s=123.45, pss={"scheduler": [(0, 100.0), (3, 110.0)]},
        disk={"logs": [1.0, 2.5], "empty": []}, latency_rows=[(0, 0.1, 1.0), (3, 0.2, 1.1)],
        fired={"MlDriftDetected": 1}, zombies_max=0, extra={"stack_up_s": 60.0})
    assert list(result)[:len(ISSUE_KEYS)] == ISSUE_KEYS
    assert result["pss_mb"]["scheduler"] == {"first_quarter": 100.0, "after_warmup": 100.0, "last_quarter": 110.0,
                                             "growth": 1.1}
    assert result["growth_basis"].startswith("median of weeks 4-4 / median of weeks 1-1")
    assert result["disk_mb"] == {"logs": {"start": 1.0, "end": 2.5}}
    assert set(result["task_latency_s"]) == {"first_quarter", "last_quarter"}
    assert result["alerts_fired"] == [{"name": "MlDriftDetected", "count": 1, "justified": True}]
    assert result["wall_s"] == 123.5 and result["stack_up_s"] == 60.0


def test_pss_is_split_into_heap_mapped_files_and_shared_memory(soak) -> None:
    rollup = ("562740f0a000-7ffc0c0af000 ---p 00000000 00:00 0 [rollup]\n"
              "Rss:                1620 kB\nPss:                 208 kB\nPss_Dirty:           116 kB\n"
              "Pss_Anon:            116 kB\nPss_File:             92 kB\nPss_Shmem:             0 kB\n"
              "SwapPss:               7 kB\n")
    assert soak.pss_kb(rollup) == {"total": 208, "anon": 116, "file": 92, "shmem": 0}
    # An older kernel without the parts: the total alone, the parts 0 (never another line's value).
    assert soak.pss_kb("Rss: 10 kB\nPss: 9 kB\nPss_Dirty: 4 kB\n") == {"total": 9, "anon": 0, "file": 0, "shmem": 0}
    assert soak.pss_kb("") == {"total": 0, "anon": 0, "file": 0, "shmem": 0}
    # This machine's own process, read the way the sampler reads it: the parts add up to the total.
    parts = soak._pss_kb(os.getpid())
    assert parts["total"] > 0 and abs(parts["anon"] + parts["file"] + parts["shmem"] - parts["total"]) <= 3

"""The report is the latest truth: validating again rewrites the verdict for the current content
and thresholds, `accept` follows it, and the report keeps the history of earlier runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest


@pytest.fixture()
def weeks(fresh_data: Path, source_weeks) -> Path:
    """W01-W02 accepted; genuine W03 and W04 in a folder beside the data folder."""
    from mlops.validate import accept_batch, validate_batch

    frame, labels = source_weeks
    landing = fresh_data / "landing"
    landing.mkdir(parents=True)
    genuine = fresh_data.parent / "genuine"
    genuine.mkdir()
    for week in ("2013-W01", "2013-W02", "2013-W03", "2013-W04"):
        frame[labels == week].to_csv(genuine / f"{week}.csv", index=False)
    for week in ("2013-W01", "2013-W02"):
        batch = landing / f"{week}.csv"
        batch.write_bytes((genuine / f"{week}.csv").read_bytes())
        validate_batch(batch)
        accept_batch(batch)
    return genuine


def _unknown_destinations(src: Path, dest: Path, share: float) -> None:
    df = pd.read_csv(src, dtype=str)
    df.loc[df.index[: int(len(df) * share)], "dest"] = "ZZZ"  # dest is no part of the row key
    df.to_csv(dest, index=False)


def test_a_fixed_batch_passes_and_is_accepted(world, fresh_data: Path, weeks: Path) -> None:
    landing = fresh_data / "landing" / "2013-W03.csv"
    report = fresh_data / "reports" / "2013-W03" / "validation.json"
    _unknown_destinations(weeks / "2013-W03.csv", landing, 0.1)
    bad = world.cli("validate", str(landing), data_dir=fresh_data)
    assert bad.returncode == 1 and "quality.unknown_categories" in bad.stderr
    assert json.loads(report.read_text())["status"] == "failed"

    landing.write_bytes((weeks / "2013-W03.csv").read_bytes())  # the corrected delivery
    good = world.cli("validate", str(landing), data_dir=fresh_data)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["status"] == "passed"
    latest = json.loads(report.read_text())
    assert latest["status"] == "passed" and latest["failed_checks"] == [] and "error" not in latest
    assert [h["status"] for h in latest["history"]] == ["failed", "passed"]
    assert latest["history"][0]["failed_checks"] == ["quality.unknown_categories"]
    assert latest["history"][0]["sha256"] != latest["sha256"] == latest["history"][1]["sha256"]
    html = (fresh_data / "reports" / "2013-W03" / "validation.html").read_text()
    assert "History" in html and html.count("quality.unknown_categories") == 1

    accepted = world.cli("accept", str(landing), data_dir=fresh_data)
    assert accepted.returncode == 0, accepted.stderr
    assert (fresh_data / "accepted" / "2013-W03.csv").read_bytes() == landing.read_bytes()


def test_other_thresholds_rewrite_the_verdict_of_the_same_content(world, fresh_data: Path,
                                                                  weeks: Path) -> None:
    landing = fresh_data / "landing" / "2013-W03.csv"
    _unknown_destinations(weeks / "2013-W03.csv", landing, 0.005)  # 0.5 % unknown destinations
    strict = world.cli("validate", str(landing), "--max-unknown-category-share", "0.001",
                       data_dir=fresh_data)
    assert strict.returncode == 1 and "quality.unknown_categories" in strict.stderr
    quarantined = Path(json.loads(strict.stdout)["quarantined_to"])
    beside = quarantined.with_name("2013-W03.validation.json")
    assert json.loads(beside.read_text())["status"] == "failed"

    relaxed = world.cli("validate", str(quarantined), data_dir=fresh_data)  # default 1 %
    assert relaxed.returncode == 0, relaxed.stderr
    for path in (beside, fresh_data / "reports" / "2013-W03" / "validation.json"):
        latest = json.loads(path.read_text())
        assert latest["status"] == "passed" and "quality.unknown_categories" not in latest["checks"]
        assert latest["thresholds"]["max_unknown_category_share"] == 0.01
        assert [h["status"] for h in latest["history"]] == ["failed", "passed"]
        assert latest["history"][0]["thresholds"]["max_unknown_category_share"] == 0.001
    accepted = world.cli("accept", str(quarantined), data_dir=fresh_data)  # follows the latest
    assert accepted.returncode == 0, accepted.stderr
    assert quarantined.exists()  # accepting copies; quarantine keeps its file


def test_groups_run_separately_keep_each_latest_result(fresh_data: Path, weeks: Path) -> None:
    from mlops.errors import BatchNotValidatedError, BatchValidationError
    from mlops.validate import accept_batch, validate_batch

    landing = fresh_data / "landing" / "2013-W04.csv"
    _unknown_destinations(weeks / "2013-W04.csv", landing, 0.005)
    report = fresh_data / "reports" / "2013-W04" / "validation.json"
    with pytest.raises(BatchValidationError) as info:
        validate_batch(landing, checks=["quality"], max_unknown_category_share=0.001)
    quarantined = Path(info.value.quarantined_to)
    run = validate_batch(quarantined, checks=["anomalies"])  # a sibling task, another group
    assert run["status"] == "passed" and run["report_status"] == "failed"
    merged = json.loads(report.read_text())
    assert merged["status"] == "failed" and merged["checks_run"] == ["anomalies", "quality"]
    assert merged["error"]["check"] == "quality.unknown_categories"
    with pytest.raises(BatchNotValidatedError, match="quality.unknown_categories"):
        accept_batch(quarantined)

    again = validate_batch(quarantined, checks=["quality"])  # the quality group, default limits
    assert again["report_status"] == "passed"
    merged = json.loads(report.read_text())
    assert merged["status"] == "passed" and merged["checks"]["anomalies"]["status"] == "passed"
    assert len(merged["history"]) == 3


def test_an_unreadable_report_is_written_again(fresh_data: Path, weeks: Path) -> None:
    from mlops.validate import validate_batch

    landing = fresh_data / "landing" / "2013-W03.csv"
    landing.write_bytes((weeks / "2013-W03.csv").read_bytes())
    report = fresh_data / "reports" / "2013-W03" / "validation.json"
    report.parent.mkdir(parents=True)
    report.write_text("{not json")
    assert validate_batch(landing)["status"] == "passed"
    latest = json.loads(report.read_text())
    assert latest["status"] == "passed" and len(latest["history"]) == 1

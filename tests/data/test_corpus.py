"""The corpus of mutated real batches (testkit/corpus.py) against `mlops validate`: each is
rejected by the check that names its mistake, with one error line naming the file, the check,
the columns and the line; the batch is moved to quarantine/ beside its report; accepted/, the
index of accepted keys and the training table are untouched. Genuine content in another spelling
passes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from testkit import corpus as mutations


def _state(world, data: Path) -> tuple:
    table = data / "processed" / "training.parquet"
    index = data / "state" / "accepted_index" / "index.json"
    return (world.tree_digest(data / "accepted"), hashlib.sha256(table.read_bytes()).hexdigest(),
            index.read_bytes())


def test_the_corpus_is_several_dozen_batches() -> None:
    assert len(mutations.CASES) >= 36
    assert len({c.name for c in mutations.CASES}) == len(mutations.CASES)


@pytest.mark.parametrize("case", mutations.CASES, ids=[c.name for c in mutations.CASES])
def test_mutated_batch_is_rejected_by_its_check(world, corpus, capsys, case) -> None:
    from mlops.batches import quarantine_report
    from mlops.cli import main

    data, weeks = corpus
    before = _state(world, data)
    path = data / "landing" / case.file
    line = case.build(weeks, path)
    capsys.readouterr()

    code = main(["validate", str(path)])

    captured = capsys.readouterr()
    assert code == 1, captured
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlops: error: "), err
    message = err[0]
    assert str(path) in message and f"check '{case.check}' failed" in message, message
    out = json.loads(captured.out)
    assert out["status"] == "failed" and out["check"] == case.check and out["file"] == str(path)
    for column in case.columns:
        assert column in out["columns"] and column in message, (column, message)
    if line is not None:
        assert out["line"] == line and f"at line {line}" in message, (line, message)
    moved = Path(out["quarantined_to"])
    assert moved.parent == data / "quarantine" and moved.is_file() and not path.exists()
    report_json, report_html = quarantine_report(moved)
    assert Path(out["report"]) == report_json
    report = json.loads(report_json.read_text())
    assert report["status"] == "failed" and report["error"]["check"] == case.check
    assert report["sha256"] == hashlib.sha256(moved.read_bytes()).hexdigest()
    assert report_html.stat().st_size > 0
    assert _state(world, data) == before  # accepted/, the key index and the training table


@pytest.mark.parametrize("build", mutations.GENUINE_VARIANTS,
                         ids=[b.__name__ for b in mutations.GENUINE_VARIANTS])
def test_genuine_content_in_another_spelling_passes(world, corpus, capsys, build) -> None:
    from mlops.cli import main

    data, weeks = corpus
    path = data / "landing" / "2013-W09.csv"
    build(weeks, path)
    capsys.readouterr()
    try:
        code = main(["validate", str(path)])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        out = json.loads(captured.out)
        assert out["status"] == "passed" and out["rows"] == len(weeks["W09"])
        assert {"temporal", "row_key", "label", "volume", "distribution"} <= set(out["checks"])
    finally:
        path.unlink(missing_ok=True)

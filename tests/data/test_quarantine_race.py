"""Two validations of the same failing batch racing in quarantine() leave exactly one quarantine
file, and both say where it is (issue 22 item 14). Real processes, released together."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

RACERS = 4
ROUNDS = 6


def _racer(barrier, data: str, path: str, week: str, results) -> None:  # noqa: ANN001 (mp objects)
    os.environ["MLOPS_DATA_DIR"] = data
    from mlops import batches
    from mlops.util import sha256_file

    sha = sha256_file(Path(path))  # what the validation read and rejected
    barrier.wait()
    try:
        results.put(str(batches.quarantine(Path(path), week, sha)))
    except Exception as exc:  # noqa: BLE001 (the test reports what a racer raised)
        results.put(f"raised {type(exc).__name__}: {exc}")


def _race(data: Path, path: Path, week: str) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(RACERS), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(barrier, str(data), str(path), week, results)) for _ in range(RACERS)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    return sorted(results.get(timeout=5) for _ in procs)


@pytest.mark.parametrize("folder", ["landing", "accepted"])
def test_racing_quarantines_of_one_batch_leave_one_file(tmp_path: Path, monkeypatch, folder: str) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("MLOPS_DATA_DIR", str(data))
    for n in range(1, ROUNDS + 1):
        week = f"2013-W{n:02d}"
        batch = data / folder / f"{week}.csv"
        batch.parent.mkdir(parents=True, exist_ok=True)
        batch.write_text(f"a,b\n{n},bad\n")
        got = _race(data, batch, week)
        files = sorted((data / "quarantine").glob(f"{week}*.csv"))
        assert len(files) == 1, f"round {n}: {files}; racers said {got}"
        assert got == [str(files[0])] * RACERS, got
        assert files[0].read_text() == f"a,b\n{n},bad\n"
        assert batch.exists() == (folder == "accepted")  # accepted data is copied, never moved


def test_parallel_cli_validations_of_one_bad_batch_all_report_the_one_quarantine_file(tmp_path: Path) -> None:
    """The `mlops validate` processes the daily DAG's three checks amount to."""
    data = tmp_path / "data"
    (data / "landing").mkdir(parents=True)
    batch = data / "landing" / "2013-W05.csv"
    batch.write_text("not,a,flight\n1,2,3\n")
    env = {**os.environ, "MLOPS_DATA_DIR": str(data)}
    mlops = str(Path(sys.executable).parent / "mlops")
    procs = [subprocess.Popen([mlops, "validate", str(batch), "--checks", check], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for check in ("schema", "quality", "anomalies")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [1, 1, 1], outs
    assert all("Traceback" not in err and "check '" in err for _, err in outs), outs
    files = sorted((data / "quarantine").glob("2013-W05*.csv"))
    assert len(files) == 1, files

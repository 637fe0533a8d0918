"""A batch over `max_batch_bytes` is refused before it is read (issue 22 item 6): quarantined like
other bad input, the error names the file and its size."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from mlops.errors import BatchValidationError


def test_a_batch_over_the_cap_is_refused_before_reading(tmp_path: Path, monkeypatch) -> None:
    from mlops.validate import validate_batch

    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLOPS_MAX_BATCH_BYTES", raising=False)
    batch = tmp_path / "data" / "landing" / "2013-W10.csv"
    batch.parent.mkdir(parents=True)
    size = 3 * 2**30  # sparse: nothing on disk, but reading it would take 3 GiB of memory
    with open(batch, "wb") as handle:
        handle.write(b"year,month\n")
        handle.truncate(size)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(BatchValidationError) as caught:
        validate_batch(batch)
    assert time.monotonic() - started < 30
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) * 1024 < 2**28
    err = caught.value
    assert err.check == "readable" and str(batch) in err.detail and f"{size} bytes" in err.detail
    assert "max_batch_bytes=67108864" in err.detail
    assert err.quarantined_to and Path(err.quarantined_to).stat().st_size == size and not batch.exists()


def test_the_cap_is_a_threshold_like_the_others(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from mlops.validate import validate_batch

    src = data_dir / "landing" / "2013-W04.csv"
    size = src.stat().st_size
    for how in ("keyword", "environment"):
        batch = tmp_path / how / "2013-W04.csv"
        batch.parent.mkdir()
        batch.write_bytes(src.read_bytes())
        if how == "environment":
            monkeypatch.setenv("MLOPS_MAX_BATCH_BYTES", str(size - 1))
            kwargs = {}
        else:
            kwargs = {"max_batch_bytes": size - 1}
        with pytest.raises(BatchValidationError, match=f"is {size} bytes, over max_batch_bytes={size - 1}"):
            validate_batch(batch, checks=["schema"], **kwargs)
    monkeypatch.setenv("MLOPS_MAX_BATCH_BYTES", str(size))
    batch = tmp_path / "2013-W04.csv"
    batch.write_bytes(src.read_bytes())
    assert validate_batch(batch, checks=["schema"])["status"] == "passed"

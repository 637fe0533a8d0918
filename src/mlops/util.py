"""Small helpers: file locks, atomic writes, hashing, week labels, Parquet reads."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import pandas as pd

WEEK_RE = re.compile(r"^\d{4}-W\d{2}$")


def read_parquet(path: Path | str, columns: list[str] | None = None) -> "pd.DataFrame":
    """A Parquet file as a DataFrame, read on the calling thread: a process that exits while Arrow's
    thread pool still starts its threads aborts (SIGABRT, apache/arrow#34314), which under CPU
    contention struck `mlops preprocess` after it had printed its result."""
    import pandas as pd

    return pd.read_parquet(path, columns=columns, use_threads=False)


@contextlib.contextmanager
def file_lock(name: str) -> Iterator[None]:
    """Exclusive inter-process lock ``$MLOPS_DATA_DIR/state/locks/<name>.lock``."""
    from mlops.config import locks_dir

    path = locks_dir() / f"{name}.lock"
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fsync_dir(folder: Path) -> None:
    """Make a rename or creation in ``folder`` survive a power loss."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(tmp: Path, dest: Path) -> None:
    """Rename a finished temporary file over ``dest`` after syncing it, then sync the folder."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so readers never see it half written, and durably: the file is synced before
    the rename and its folder after it (a power loss leaves the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o644)  # mkstemp makes 0600; other stack users (workers, MLflow) read these
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def week_of(path: str | Path) -> str:
    """The batch name of a file: its stem (``landing/2013-W07.csv`` -> ``2013-W07``)."""
    return Path(path).name.split(".")[0] if WEEK_RE.match(Path(path).name.split(".")[0]) \
        else Path(path).stem


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars and paths so the result dict survives json.dumps / XCom."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        try:
            obj = obj.item()
        except (ValueError, TypeError):
            return str(obj)
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj

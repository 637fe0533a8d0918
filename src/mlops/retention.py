"""Retention: delete the files of a folder that are older than a number of days.

Used by maintenance_dag (task logs, validation and drift reports) and usable from the CLI. A file's
age is its modification time; folders left empty are removed too (never the root itself)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Pruned:
    """What one pass removed and kept."""

    root: str
    cutoff: float
    removed_files: int = 0
    removed_bytes: int = 0
    removed_dirs: int = 0
    kept_files: int = 0
    errors: list[str] = field(default_factory=list)


def retention_days(name: str, default: float) -> float:
    """A retention in days from the environment variable `name` (a positive number)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if days <= 0:
        raise ValueError(f"{name}={raw!r}: a retention must be a positive number of days")
    return days


def prune_older_than(root: Path, days: float, now: float | None = None) -> Pruned:
    """Delete every file under `root` last modified more than `days` ago, then the empty folders.
    A file that vanishes meanwhile is fine; one that cannot be deleted is listed in `errors`."""
    if days <= 0:
        raise ValueError(f"retention for {root} must be positive, got {days} days")
    cutoff = (time.time() if now is None else now) - days * 86400
    result = Pruned(str(root), cutoff)
    if not root.is_dir():
        return result
    for folder, dirs, files in os.walk(root, topdown=False):
        base = Path(folder)
        for name in files:
            path = base / name
            try:
                stat = path.lstat()
                if stat.st_mtime >= cutoff:
                    result.kept_files += 1
                    continue
                path.unlink()
                result.removed_files += 1
                result.removed_bytes += stat.st_size
            except FileNotFoundError:
                continue
            except OSError as exc:
                result.errors.append(f"{path}: {exc}")
        if base != root:
            try:
                base.rmdir()  # only when empty
                result.removed_dirs += 1
            except OSError:
                pass
    return result

"""New weekly batches in landing and the watermark of processed batches (``state/``)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from mlops import config
from mlops.util import file_lock, week_of, write_json


def _watermark_path() -> Path:
    return config.state_dir() / "processed.json"


def processed_weeks() -> list[str]:
    """Weeks already handled (accepted or rejected), sorted."""
    path = _watermark_path()
    if not path.exists():
        return []
    return sorted(json.loads(path.read_text(encoding="utf-8")).get("weeks", []))


def new_batches() -> list[str]:
    """Paths of landing batches not yet marked processed, oldest week first."""
    done = set(processed_weeks())
    return [str(p) for p in sorted(config.landing_dir().glob("*.csv")) if week_of(p) not in done]


def mark_processed(weeks: list[str] | str) -> dict[str, object]:
    """Add weeks (labels or batch paths) to the watermark; idempotent."""
    if isinstance(weeks, str):
        weeks = [weeks]
    labels = {week_of(w) for w in weeks}
    with file_lock("watermark"):
        done = set(processed_weeks())
        added = sorted(labels - done)
        done |= labels
        write_json(_watermark_path(), {
            "weeks": sorted(done), "latest": max(done) if done else None,
            "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return {"added": added, "latest": max(done) if done else None, "count": len(done)}

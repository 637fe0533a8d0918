"""The service's clock: what it stamps on a prediction (``served_at``) and what the prediction log's
retention counts from.

The wall clock, unless the TEST/BENCH-only switch ``MLOPS_TEST_REPLAY_CLOCK`` names a file (no
``.env.example`` line sets it): then "now" is the ISO timestamp that file holds, re-read when it
changes. benchmarks/soak.py writes its replayed date there, so a year replayed in half an hour
creates and drops the log's daily partitions on the replayed calendar (PREDICTIONS_RETENTION_DAYS
in replayed days). A file that cannot be read or parsed is an error, never the wall clock.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path

REPLAY_CLOCK_SWITCH = "MLOPS_TEST_REPLAY_CLOCK"


class ClockError(RuntimeError):
    """The replay clock's file is missing or does not hold a timestamp (the message names it)."""


class Clock:
    """``now()``: UTC, from the wall or from a replay clock file."""

    def __init__(self, replay_file: str | Path | None = None) -> None:
        self.replay_file = Path(replay_file) if replay_file else None
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._replayed: datetime | None = None
        if self.replay_file is not None:
            self.now()  # refuse a bad file at start

    def now(self) -> datetime:
        """The current time (UTC)."""
        if self.replay_file is None:
            return datetime.now(timezone.utc)
        with self._lock:
            try:
                stat = self.replay_file.stat()
                if self._seen != (stat.st_mtime_ns, stat.st_size):
                    self._replayed = parse(self.replay_file.read_text())
                    self._seen = (stat.st_mtime_ns, stat.st_size)
            except (OSError, ValueError) as exc:
                raise ClockError(f"{REPLAY_CLOCK_SWITCH}={self.replay_file}: {exc}") from None
            assert self._replayed is not None
            return self._replayed


def parse(text: str) -> datetime:
    """An ISO 8601 timestamp; UTC when it names no offset."""
    stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def write(path: Path, when: datetime) -> None:
    """Set a replay clock file to ``when`` (atomically: the service never reads half a line)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(when.astimezone(timezone.utc).isoformat() + "\n")
    tmp.chmod(0o644)
    tmp.replace(path)

"""The service's configuration, read from the environment once (``Settings.from_env``)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass


class SettingsError(ValueError):
    """A setting is missing or out of range (the message names the variable)."""


def _number(name: str, default: float, low: float, high: float, integer: bool = False) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a {'whole ' if integer else ''}number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise SettingsError(f"{name}={raw!r} is outside {low}..{high}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    token: str
    poll_s: float
    max_rows: int
    max_body_bytes: int
    db_dsn: str | None
    retention_days: int
    flush_s: float
    log_queue_rows: int
    # TEST/BENCH-only: a replay clock file (mlops_serving.clock); None: the wall clock.
    replay_clock: str | None = None

    @classmethod
    def from_env(cls) -> "Settings":
        """Read and check the environment; SettingsError naming the variable."""
        token = os.environ.get("SERVING_TOKEN", "")
        if len(token) < 16:
            raise SettingsError("SERVING_TOKEN is not set (or shorter than 16 characters): "
                                "POST /predict needs it (generated into .env)")
        return cls(
            token=token,
            poll_s=_number("SERVING_POLL_S", 5.0, 0.2, 10.0),
            max_rows=int(_number("SERVING_MAX_ROWS", 10000, 1, 1_000_000, integer=True)),
            max_body_bytes=int(_number("SERVING_MAX_BODY_BYTES", 8 * 1024 * 1024, 1024, 1 << 30, integer=True)),
            db_dsn=_dsn(),
            retention_days=int(_number("PREDICTIONS_RETENTION_DAYS", 90, 1, 3650, integer=True)),
            flush_s=_number("SERVING_LOG_FLUSH_S", 0.5, 0.05, 1.0),
            log_queue_rows=int(_number("SERVING_LOG_QUEUE_ROWS", 200_000, 1000, 10_000_000, integer=True)),
            replay_clock=_replay_clock(),
        )


def _replay_clock() -> str | None:
    """The replay clock file of a benchmark stack (MLOPS_TEST_REPLAY_CLOCK), checked to hold a time."""
    from mlops_serving.clock import REPLAY_CLOCK_SWITCH, Clock, ClockError

    path = os.environ.get(REPLAY_CLOCK_SWITCH, "").strip() or None
    if path:
        try:
            Clock(path)
        except ClockError as exc:
            raise SettingsError(str(exc)) from None
    return path


def _dsn() -> str | None:
    """The prediction log's libpq connection string (PREDICTIONS_DB_*), None when no password is set
    (the service then logs nothing and says so in /health)."""
    password = os.environ.get("PREDICTIONS_DB_PASSWORD", "")
    if not password:
        return None
    from psycopg2.extensions import make_dsn

    return make_dsn(host=os.environ.get("PREDICTIONS_DB_HOST", "127.0.0.1"),
                    port=os.environ.get("PREDICTIONS_DB_PORT", "5432"),
                    dbname=os.environ.get("PREDICTIONS_DB", "predictions"),
                    user=os.environ.get("PREDICTIONS_DB_USER", "predictions"),
                    password=password, connect_timeout=5, application_name="mlops-serving")

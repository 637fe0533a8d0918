"""The results of the checks of one validation run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Check groups in execution order. ``file`` and ``schema`` always run (the rest need them);
#: the others are selected with ``checks=`` (mlops.config.VALIDATION_CHECKS).
ALWAYS = ("file", "schema")
GROUPS = ("file", "schema", "quality", "anomalies", "distribution")


class Stop(Exception):
    """A check failed that the later checks depend on: the run ends here."""


@dataclass(frozen=True)
class Failure:
    check: str
    columns: list[str]
    detail: str
    line: int | None = None


class Findings:
    """Check results of one run, keyed by check name, each tagged with its group."""

    def __init__(self) -> None:
        self.checks: dict[str, dict[str, Any]] = {}
        self.failures: list[Failure] = []
        self.group = "file"

    def _put(self, name: str, entry: dict[str, Any]) -> None:
        self.checks[name] = {**entry, "group": self.group}

    def ok(self, name: str, **info: Any) -> None:
        self._put(name, {"status": "passed", **info})

    def warn(self, name: str, detail: str, columns: list[str] | None = None, **info: Any) -> None:
        self._put(name, {"status": "warning", "detail": detail, "columns": list(columns or []),
                         **info})

    def skip(self, name: str, detail: str) -> None:
        self._put(name, {"status": "skipped", "detail": detail})

    def fail(self, name: str, detail: str, columns: list[str] | None = None,
             line: int | None = None, **info: Any) -> None:
        cols = sorted(dict.fromkeys(columns or []))
        entry: dict[str, Any] = {"status": "failed", "detail": detail, "columns": cols, **info}
        if line is not None:
            entry["line"] = int(line)
        self._put(name, entry)
        self.failures.append(Failure(name, cols, detail, None if line is None else int(line)))

    def stop(self, name: str, detail: str, columns: list[str] | None = None,
             line: int | None = None, **info: Any) -> Stop:
        """Record a failure that ends the run; ``raise findings.stop(...)``."""
        self.fail(name, detail, columns, line, **info)
        return Stop(name)

    @property
    def failed(self) -> bool:
        return bool(self.failures)

"""The compressed alert clock of the test stacks: the project's alert rules with every duration
shortened, and the Prometheus/Alertmanager timings that go with them, written to a folder whose
clock file a test stack's env file names (``MLOPS_TEST_FAST_ALERTS``, read by stack/render.py).
The production values stay in observability/ (and in their promtool unit tests)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

RULES = Path(__file__).resolve().parents[3] / "observability" / "prometheus" / "rules"


@dataclass(frozen=True)
class AlertClock:
    """The compressed clock of a test stack's alerting. The rules keep their expressions and are
    only shortened: every `for:` to at most `max_for_s`, every duration inside an expression (range
    selectors, `offset`, and the seconds constants written with their duration in a trailing
    comment, `> 691200  # 8d`) to at most `max_window_s`. Prometheus scrapes and evaluates more
    often, Alertmanager groups and repeats sooner. The production values stay in the files (and in
    their promtool unit tests)."""

    scrape_interval: str = "5s"
    scrape_timeout: str = "5s"
    evaluation_interval: str = "2s"
    max_window_s: int = 30
    max_for_s: int = 5
    group_wait: str = "1s"
    group_interval: str = "2s"
    repeat_interval: str = "1m"


TEST_ALERT_CLOCK = AlertClock()

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_RANGE = re.compile(r"\[\s*(\d+(?:ms|s|m|h|d|w|y)(?:\d+(?:ms|s|m|h|d|w|y))*)\s*(:\s*[^\]]*)?\]")
_OFFSET = re.compile(r"\boffset\s+(\d+(?:ms|s|m|h|d|w|y)(?:\d+(?:ms|s|m|h|d|w|y))*)")
_MARKED = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(\s*)#\s*(\d+(?:ms|s|m|h|d|w|y)(?:\d+(?:ms|s|m|h|d|w|y))*)\b")


def duration_seconds(text: str) -> float:
    """Seconds of a Prometheus duration (`90s`, `1h30m`, `7d`)."""
    if not _DURATION.match(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))


def marked_constants(expr: str) -> list[tuple[float, str]]:
    """(number, duration) of every seconds constant an expression marks with its duration."""
    return [(float(m.group(1)), m.group(3)) for m in _MARKED.finditer(expr)]


def compress_expr(expr: str, max_window_s: int) -> str:
    """`expr` with every duration capped at `max_window_s` (see AlertClock); a marked constant
    whose number is not its duration in seconds is refused."""
    def cap(text: str) -> str:
        return f"{int(min(duration_seconds(text), max_window_s))}s"

    def constant(m: re.Match) -> str:
        if float(m.group(1)) != duration_seconds(m.group(3)):
            raise ValueError(f"rule constant {m.group(1)} is marked as {m.group(3)} "
                             f"({duration_seconds(m.group(3)):g} s): fix the number or its comment")
        return f"{min(float(m.group(1)), max_window_s):g}{m.group(2)}# {m.group(3)}, capped at {max_window_s}s"

    expr = _RANGE.sub(lambda m: f"[{cap(m.group(1))}{m.group(2) or ''}]", expr)
    expr = _OFFSET.sub(lambda m: f"offset {cap(m.group(1))}", expr)
    return _MARKED.sub(constant, expr)


def compress_rules(doc: dict, clock: AlertClock) -> dict:
    """A rule file's groups on the compressed clock."""
    groups = []
    for group in doc.get("groups") or []:
        rules = []
        for rule in group.get("rules") or []:
            rule = dict(rule)
            rule["expr"] = compress_expr(str(rule["expr"]), clock.max_window_s)
            if "for" in rule:
                rule["for"] = f"{int(min(duration_seconds(str(rule['for'])), clock.max_for_s))}s"
            rules.append(rule)
        groups.append({**group, "rules": rules})
    return {**doc, "groups": groups}


def write(folder: Path, clock: AlertClock = TEST_ALERT_CLOCK) -> Path:
    """The project's rule files on ``clock`` into ``folder``/rules, and the clock file a test
    stack's ``MLOPS_TEST_FAST_ALERTS`` names; returns the clock file."""
    rules = folder / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    for source in sorted(RULES.glob("*.yml")):
        doc = compress_rules(yaml.safe_load(source.read_text()) or {}, clock)
        (rules / source.name).write_text(f"# {source} on the TEST alert clock (testkit/alert_clock.py)\n"
                                         + yaml.safe_dump(doc, sort_keys=False))
    path = folder / "alert-clock.json"
    path.write_text(json.dumps({
        "prometheus": {"scrape_interval": clock.scrape_interval, "scrape_timeout": clock.scrape_timeout,
                       "evaluation_interval": clock.evaluation_interval},
        "alertmanager": {"group_wait": clock.group_wait, "group_interval": clock.group_interval,
                         "repeat_interval": clock.repeat_interval},
        "rules": str(rules)}, indent=1) + "\n")
    return path

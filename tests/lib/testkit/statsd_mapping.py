"""A Python model of how statsd_exporter maps StatsD names with a mapping file.

No statsd_exporter binary exists for this machine (no Debian or PyPI build), so the tests check
observability/statsd/mapping.yml with this model of the exporter's mapper (v0.30,
pkg/mapper): glob rules first, `*` is one whole dot-separated part, the earliest matching glob
rule wins (rules with `match_metric_type` only see that type); regex rules (`match_type: regex`)
are searched afterwards, in file order, unanchored like Go's `FindStringSubmatchIndex`.
It also reproduces the exporter's glob state machine quirk: a rule whose last part is an inner
part of an earlier, longer rule never matches. `load_mapping` reports such rules as errors.

Importable by other tests (the native stack checks the names it captures live); it needs only
PyYAML::

    from testkit import statsd_mapping
    for name, kind in statsd_mapping.parse_statsd_packet(datagram):
        hit = statsd_mapping.match(name, kind)  # None: no rule, exported under a default name
        hit.dropped, hit.name, hit.labels       # False, "airflow_ti_finish_total", {...}
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_MAPPING = REPO_ROOT / "observability" / "statsd" / "mapping.yml"

METRIC_TYPES = ("counter", "gauge", "observer")
# StatsD type field -> the exporter's metric type ("s" sets are rejected by the exporter).
STATSD_TYPES = {"c": "counter", "g": "gauge", "ms": "observer", "h": "observer", "d": "observer"}

_RULE_KEYS = {
    "match", "name", "labels", "honor_labels", "observer_type", "match_type", "help", "action",
    "match_metric_type", "ttl", "summary_options", "histogram_options", "scale",
}
_DEFAULT_KEYS = {
    "observer_type", "match_type", "glob_disable_ordering", "ttl", "summary_options",
    "histogram_options",
}
# The exporter's validation regexes (pkg/mapper/mapper.go).
_FIRST_PART = r"[a-zA-Z_]([a-zA-Z0-9_\-])*"
_NEXT_PART = r"[a-zA-Z0-9_]([a-zA-Z0-9_\-])*"
_TEMPLATE = r"(\$\{?\d+\}?)"
_GLOB_RE = re.compile(rf"^(\*|{_FIRST_PART})(\.\*|\.{_NEXT_PART})*$")
_NAME_RE = re.compile(rf"^([a-zA-Z_]|{_TEMPLATE})([a-zA-Z0-9_]|{_TEMPLATE})*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]+$")
_GLOB_TEMPLATE_RE = re.compile(r"\$\{?([a-zA-Z0-9_$]+)\}?")
_GO_EXPAND_RE = re.compile(r"\$(?:\{([A-Za-z0-9_]*)\}|([A-Za-z0-9_]+)|(\$))")


class MappingError(ValueError):
    """The mapping file is invalid (the exporter would refuse it or silently ignore a rule)."""


@dataclass(frozen=True)
class Rule:
    """One entry of `mappings:`."""

    index: int
    match: str
    match_type: str
    name: str
    action: str
    labels: dict[str, str]
    match_metric_type: str | None
    observer_type: str
    buckets: tuple[float, ...]


@dataclass(frozen=True)
class Mapped:
    """What the exporter does with one StatsD name: the rule, and the series it produces."""

    rule: Rule
    name: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def action(self) -> str:
        """`map` or `drop`."""
        return self.rule.action

    @property
    def dropped(self) -> bool:
        """True when the rule drops the metric on purpose."""
        return self.rule.action == "drop"


class _State:
    __slots__ = ("transitions", "min_left", "max_left", "result", "priority")

    def __init__(self, left: int) -> None:
        self.transitions: dict[str, _State] = {}
        self.min_left = left
        self.max_left = left
        self.result: Rule | None = None
        self.priority = 0


def _glob_format(template: str, captures: list[str], capture_count: int) -> str:
    """Fill a glob rule's name or label template like fsm.TemplateFormatter."""
    out = template
    for m in _GLOB_TEMPLATE_RE.finditer(template):
        ref = m.group(1)
        idx = int(ref) if ref.isdigit() else 0
        out = out.replace(m.group(0), captures[idx - 1] if 1 <= idx <= capture_count else "")
    return out


def _go_expand(template: str, match: re.Match[str]) -> str:
    """Expand `$1`, `${1}`, `$name`, `$$` like Go's Regexp.ExpandString (unknown -> empty)."""

    def repl(m: re.Match[str]) -> str:
        if m.group(3):
            return "$"
        ref = m.group(1) if m.group(1) is not None else m.group(2)
        if ref.isdigit():
            n = int(ref)
            return (match.group(n) or "") if n <= (match.re.groups) else ""
        return (match.groupdict().get(ref) or "") if ref else ""

    return _GO_EXPAND_RE.sub(repl, template)


class StatsdMapping:
    """A loaded, validated mapping file with the exporter's matching order."""

    def __init__(self, path: Path, rules: list[Rule]) -> None:
        self.path = path
        self.rules = rules
        self._roots = {t: _State(0) for t in METRIC_TYPES}
        self._captures: dict[int, int] = {}
        for rule in rules:
            if rule.match_type == "glob":
                self._add_glob(rule)
        self._regex = {
            r.index: re.compile(r.match) for r in rules if r.match_type == "regex"
        }
        self.unreachable = [r for r in rules if r.match_type == "glob" and not self._reachable(r)]

    def _add_glob(self, rule: Rule) -> None:
        parts = rule.match.split(".")
        types = [rule.match_metric_type] if rule.match_metric_type else list(METRIC_TYPES)
        finals = []
        for t in types:
            state = self._roots[t]
            for i, part in enumerate(parts):
                left = len(parts) - i - 1
                nxt = state.transitions.get(part)
                if nxt is None:
                    nxt = _State(left)
                    if i == len(parts) - 1:
                        nxt.result = rule
                    state.transitions[part] = nxt
                else:
                    nxt.max_left = max(nxt.max_left, left)
                    nxt.min_left = min(nxt.min_left, left)
                state = nxt
            finals.append(state)
        for state in finals:
            state.priority = rule.index
        self._captures[rule.index] = parts.count("*")

    def _reachable(self, rule: Rule) -> bool:
        parts = rule.match.split(".")
        types = [rule.match_metric_type] if rule.match_metric_type else list(METRIC_TYPES)
        for t in types:
            state = self._roots[t]
            for part in parts:
                state = state.transitions[part]
            if state.result is rule:
                return True
        return False

    def _glob_lookup(self, parts: list[str], metric_type: str) -> tuple[Rule, list[str]] | None:
        best: tuple[int, Rule, list[str]] | None = None
        stack: list[tuple[_State, int, list[str]]] = [(self._roots[metric_type], 0, [])]
        while stack:
            state, i, caps = stack.pop()
            left = len(parts) - i - 1
            for key in (parts[i], "*"):
                nxt = state.transitions.get(key)
                if nxt is None or not (nxt.min_left <= left <= nxt.max_left):
                    continue
                new_caps = caps + [parts[i]] if key == "*" else caps
                if i == len(parts) - 1:
                    if nxt.result is not None and (best is None or nxt.priority < best[0]):
                        best = (nxt.priority, nxt.result, new_caps)
                else:
                    stack.append((nxt, i + 1, new_caps))
        return (best[1], best[2]) if best else None

    def match(self, name: str, metric_type: str | None = None) -> Mapped | None:
        """Return what the exporter does with `name`, or None when no rule matches.

        `metric_type` is `counter`, `gauge`, `observer` or a StatsD type (`c`, `g`, `ms`, `h`,
        `d`). When None, the type is unknown: the name is tried as each type in turn and the
        first hit is returned (rules restricted by `match_metric_type` then still count).
        Unmatched names are exported by the exporter under an escaped default name.
        """
        if metric_type is None:
            for t in METRIC_TYPES:
                hit = self.match(name, t)
                if hit is not None:
                    return hit
            return None
        metric_type = STATSD_TYPES.get(metric_type, metric_type)
        if metric_type not in METRIC_TYPES:
            raise ValueError(f"unknown metric type {metric_type!r} for {name!r}")
        found = self._glob_lookup(name.split("."), metric_type)
        if found is not None:
            rule, caps = found
            n = self._captures[rule.index]
            return Mapped(
                rule,
                _glob_format(rule.name, caps, n),
                {k: _glob_format(v, caps, n) for k, v in rule.labels.items()},
            )
        for rule in self.rules:
            if rule.match_type != "regex":
                continue
            m = self._regex[rule.index].search(name)
            if m is None:
                continue
            if rule.match_metric_type and rule.match_metric_type != metric_type:
                continue
            return Mapped(
                rule, _go_expand(rule.name, m), {k: _go_expand(v, m) for k, v in rule.labels.items()}
            )
        return None


def _fail(path: Path, where: str, problem: str) -> MappingError:
    return MappingError(f"{path}: {where}: {problem}")


def _parse_rule(path: Path, i: int, raw: Any, defaults: dict[str, Any]) -> Rule:
    where = f"mappings[{i}]"
    if not isinstance(raw, dict):
        raise _fail(path, where, "each mapping must be a mapping of keys")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise _fail(path, where, f"unknown keys {sorted(unknown)} (the exporter parses strictly)")
    match = raw.get("match")
    if not isinstance(match, str) or not match:
        raise _fail(path, where, "`match` is missing")
    where = f"mappings[{i}] ({match})"
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(path, where, "metric mapping didn't set a metric name")
    if not _NAME_RE.match(name):
        raise _fail(path, where, f"metric name {name!r} is not a valid Prometheus name")
    labels = raw.get("labels") or {}
    for key in labels:
        if not _LABEL_RE.match(str(key)):
            raise _fail(path, where, f"invalid label key {key!r}")
    match_type = raw.get("match_type") or defaults.get("match_type") or "glob"
    if match_type not in ("glob", "regex"):
        raise _fail(path, where, f"invalid match type {match_type!r}")
    if match_type == "glob" and not _GLOB_RE.match(match):
        raise _fail(path, where, "invalid glob match (`*` must be a whole dot-separated part)")
    if match_type == "regex":
        try:
            re.compile(match)
        except re.error as exc:
            raise _fail(path, where, f"invalid regex: {exc}") from exc
    action = raw.get("action") or "map"
    if action not in ("map", "drop"):
        raise _fail(path, where, f"invalid action {action!r}")
    mmt = raw.get("match_metric_type") or None
    if mmt is not None and mmt not in METRIC_TYPES:
        raise _fail(path, where, f"invalid match_metric_type {mmt!r}")
    observer = raw.get("observer_type") or defaults.get("observer_type") or "summary"
    if observer not in ("histogram", "summary"):
        raise _fail(path, where, f"invalid observer_type {observer!r}")
    if observer == "histogram" and raw.get("summary_options"):
        raise _fail(path, where, "cannot use histogram observer and summary options")
    if observer == "summary" and raw.get("histogram_options"):
        raise _fail(path, where, "cannot use summary observer and histogram options")
    buckets = ((raw.get("histogram_options") or {}).get("buckets")
               or (defaults.get("histogram_options") or {}).get("buckets") or ())
    if list(buckets) != sorted(buckets):
        raise _fail(path, where, "histogram buckets must be increasing")
    return Rule(
        index=i, match=match, match_type=match_type, name=name, action=action,
        labels={str(k): str(v) for k, v in labels.items()}, match_metric_type=mmt,
        observer_type=observer, buckets=tuple(float(b) for b in buckets),
    )


def load_mapping(path: Path | str = DEFAULT_MAPPING) -> StatsdMapping:
    """Load and validate a mapping file; raise MappingError naming the file and the rule."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"{path}: cannot read mapping: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("mappings"), list):
        raise MappingError(f"{path}: top level must be a mapping with a `mappings:` list")
    unknown = set(doc) - {"defaults", "mappings"}
    if unknown:
        raise MappingError(f"{path}: unknown top-level keys {sorted(unknown)}")
    defaults = doc.get("defaults") or {}
    bad = set(defaults) - _DEFAULT_KEYS
    if bad:
        raise MappingError(f"{path}: defaults: unknown keys {sorted(bad)}")
    if defaults.get("glob_disable_ordering"):
        raise MappingError(f"{path}: glob_disable_ordering is not modelled by this checker")
    rules = [_parse_rule(path, i, raw, defaults) for i, raw in enumerate(doc["mappings"])]
    mapping = StatsdMapping(path, rules)
    if mapping.unreachable:
        shown = ", ".join(f"mappings[{r.index}] ({r.match})" for r in mapping.unreachable)
        raise MappingError(
            f"{path}: rules that can never match (an identical match or an earlier, longer "
            f"rule already created their final state): {shown}"
        )
    return mapping


@functools.lru_cache(maxsize=4)
def _cached(path: str) -> StatsdMapping:
    return load_mapping(path)


def match(name: str, metric_type: str | None = None,
          path: Path | str = DEFAULT_MAPPING) -> Mapped | None:
    """Match one StatsD name against the project's mapping (see StatsdMapping.match)."""
    return _cached(str(path)).match(name, metric_type)


def parse_statsd_packet(packet: str | bytes) -> list[tuple[str, str]]:
    """Split a StatsD datagram into (name, type) pairs: `a.b:1|c\\nc.d:2|ms|@0.5` -> ...

    DogStatsD tags (`|#k:v`) are ignored; a line without `name:value|type` raises ValueError.
    """
    if isinstance(packet, bytes):
        packet = packet.decode("utf-8", errors="replace")
    out = []
    for line in packet.splitlines():
        line = line.strip()
        if not line:
            continue
        name, sep, rest = line.partition(":")
        fields = rest.split("|")
        if not sep or not name or len(fields) < 2 or fields[1] not in STATSD_TYPES:
            raise ValueError(f"not a StatsD metric line: {line!r}")
        out.append((name, fields[1]))
    return out

"""Small PromQL helpers for the checks: Grafana variable substitution and metric-name extraction."""

from __future__ import annotations

import re

# Grafana's built-in and dashboard variables, replaced by values PromQL accepts.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and",
    "or", "unless", "atan2", "inf", "nan", "start", "end",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def substitute_grafana_vars(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace $__rate_interval & co. and `$var` template variables (by ``values[var]``, else `.*`)."""
    for key, value in GRAFANA_VARS.items():
        expr = expr.replace(key, value)
    values = values or {}
    return re.sub(r"\$\{?([A-Za-z_]\w*)\}?", lambda m: values.get(m.group(1), ".*"), expr)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords and label names excluded)."""
    names = set()
    for m in re.finditer(r"__name__\s*=\s*\"([^\"]+)\"", expr):
        names.add(m.group(1))
    stripped = _STRING.sub('""', expr)
    stripped = _MATCHERS.sub(" ", stripped)
    stripped = _RANGE.sub(" ", stripped)
    stripped = _GROUPING.sub(" ", stripped)
    for m in _IDENT.finditer(stripped):
        ident, call = m.group(1), m.group(2)
        if call or ident.lower() in _KEYWORDS:
            continue
        names.add(ident)
    return names

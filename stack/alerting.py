"""Alertmanager's configuration from observability/alertmanager/alertmanager.yml and the `ALERT_*`
variables of `.env` (the receivers), for both stacks.

The native stack calls `render()` (stack/render.py); the compose stack runs this file as a script
in its one-shot service `alertmanager-config` (the project image's Python and PyYAML, nothing
else of the project):

    python stack/alerting.py TEMPLATE OUT [--owner UID:GID]     # values from the environment

`${VAR}` in a string of the template stands for the variable's value. A global setting, or one
entry of a receiver's `*_configs`, that names an empty variable is left out (a receiver without
any config only lists its alerts). Values are substituted into the parsed YAML and dumped again,
so no value can change the structure.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[1] / "observability" / "alertmanager" / "alertmanager.yml"
# The receivers' settings (.env.example documents them); every one may be empty.
VARIABLES = ("ALERT_WEBHOOK_URL", "ALERT_EMAIL_TO", "ALERT_SMTP_SMARTHOST", "ALERT_SMTP_FROM",
             "ALERT_SMTP_AUTH_USERNAME", "ALERT_SMTP_AUTH_PASSWORD")
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


class AlertingConfigError(ValueError):
    """The template names a variable that is not a receiver setting, or is not valid YAML."""


def _names(value: Any) -> set[str]:
    """Variables named anywhere inside `value`."""
    if isinstance(value, str):
        return set(_PLACEHOLDER.findall(value))
    if isinstance(value, dict):
        return set().union(*(_names(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_names(v) for v in value)) if value else set()
    return set()


def _fill(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: env.get(m.group(1), ""), value)
    if isinstance(value, dict):
        return {k: _fill(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, env) for v in value]
    return value


def render(template: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The configuration for the receiver settings in `env` (see the module docstring)."""
    unknown = sorted(_names(template) - set(VARIABLES))
    if unknown:
        raise AlertingConfigError(f"{TEMPLATE.name}: unknown variables {unknown} (known: {list(VARIABLES)})")
    empty = {name for name in VARIABLES if not env.get(name, "").strip()}
    doc = copy.deepcopy(template)
    doc["global"] = {k: v for k, v in (doc.get("global") or {}).items() if not _names(v) & empty}
    for receiver in doc.get("receivers") or []:
        for key in [k for k in receiver if k.endswith("_configs")]:
            kept = [entry for entry in receiver[key] if not _names(entry) & empty]
            if kept:
                receiver[key] = kept
            else:
                del receiver[key]
    return _fill(doc, env)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as a dict; AlertingConfigError naming the file when it is not valid YAML."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise AlertingConfigError(f"{path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise AlertingConfigError(f"{path}: expected a mapping")
    return doc


def delivery(config: dict[str, Any]) -> dict[str, list[str]]:
    """Receiver name -> the kinds of notification it sends (`webhook`, `email`), for `make status`."""
    return {r["name"]: sorted(k[:-len("_configs")] for k in r if k.endswith("_configs"))
            for r in config.get("receivers") or []}


def dump(config: dict[str, Any], origin: str) -> str:
    """The configuration as YAML text, with a header saying where it came from."""
    return f"# rendered by stack/alerting.py from {origin}\n" + yaml.safe_dump(config, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    """CLI (compose): render TEMPLATE with the environment into OUT (mode 600, owned by --owner)."""
    parser = argparse.ArgumentParser(description="Render Alertmanager's configuration from the environment.")
    parser.add_argument("template", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--owner", help="UID:GID to own OUT (Alertmanager's user)")
    args = parser.parse_args(argv)
    try:
        config = render(load_template(args.template), os.environ)
    except AlertingConfigError as exc:
        print(f"alerting: error: {exc}", file=sys.stderr)
        return 1
    tmp = args.out.with_name(args.out.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(dump(config, str(args.template)))
    if args.owner:
        uid, _, gid = args.owner.partition(":")
        os.chown(tmp, int(uid), int(gid or uid))
    os.replace(tmp, args.out)
    sends = {name: kinds or ["nothing (no receiver setting in the environment)"]
             for name, kinds in delivery(config).items()}
    print("alerting: wrote", args.out, "; receivers:", "; ".join(f"{n}: {', '.join(k)}" for n, k in sends.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

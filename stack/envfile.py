"""The `.env` file: parse it strictly, create it from `.env.example` with fresh secrets.

Standard library only, so that a compose user needs neither the native stack nor .venv:

    python3 -m stack.envfile            # (make env) writes .env, or fills what it lacks
    python3 -m stack.envfile --env-file other.env
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import sys
from pathlib import Path

from stack import safefs

REPO = Path(__file__).resolve().parents[1]

_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
# Empty values of these variables are generated; anything else must have a value.
_SECRET_SUFFIXES = ("_PASSWORD", "_SECRET", "_SECRET_KEY", "_FERNET_KEY", "_TOKEN")


class EnvFileError(Exception):
    """A `.env`-style file is missing, malformed or lacks a required value."""


def is_secret(name: str) -> bool:
    """True for the variables whose empty value `make up` fills with a generated secret."""
    return name.endswith(_SECRET_SUFFIXES)


def generate_secret(name: str) -> str:
    """A fresh value for the secret variable `name` (a Fernet key for the Fernet variable)."""
    if name.endswith("_FERNET_KEY"):
        # What cryptography's Fernet.generate_key() returns: 32 random bytes, URL-safe base64.
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    # URL-safe alphabet: safe inside database URLs, supervisord config and shell words.
    if name.endswith(("_JWT_SECRET", "_API_SECRET_KEY", "_UI_SECRET_KEY")):
        # Airflow signs with them using HS512: under 64 bytes, PyJWT warns on every token.
        return secrets.token_urlsafe(48)
    return secrets.token_urlsafe(24)


def parse(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines (comments and blank lines allowed); raise EnvFileError naming the line."""
    if not path.is_file():
        raise EnvFileError(f"{path}: file not found")
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise EnvFileError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if key in values:
            raise EnvFileError(f"{path}:{number}: {key} is set twice")
        values[key] = value
    return values


# Secrets the stack's data is made with: PostgreSQL's cluster is initialised with the password,
# Airflow encrypts Connections and Variables with the Fernet key. A new value locks the stack out
# of its own data, so they are never generated when that data exists.
DATA_BOUND_SECRETS = ("POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY")


def stack_data(env_path: Path, values: dict[str, str], example: dict[str, str]) -> Path | None:
    """The native stack's PostgreSQL data folder of this env file when it holds a cluster (STACK_HOME
    from the file, else the example's, relative to the file's folder like stack/config.py)."""
    home = values.get("STACK_HOME") or example.get("STACK_HOME") or ""
    if not home:
        return None
    pgdata = (env_path.parent / home).resolve() / "postgres"
    return pgdata if (pgdata / "PG_VERSION").exists() else None


def _refuse_data_bound(env_path: Path, missing: list[str], values: dict[str, str],
                       example: dict[str, str]) -> None:
    """EnvFileError when a data-bound secret would be generated while the stack's data exists."""
    bound = sorted(set(missing) & set(DATA_BOUND_SECRETS))
    pgdata = stack_data(env_path, values, example) if bound else None
    if pgdata is not None:
        raise EnvFileError(
            f"{env_path}: {', '.join(bound)} missing or empty, but the stack's data in {pgdata} was made with "
            f"the old value{'s' if len(bound) > 1 else ''}: a new secret would lock the stack out of its database "
            f"and lose every encrypted Connection. Restore {env_path.name} from a backup (was it truncated?), or remove {pgdata.parent} to "
            "start a new stack; nothing was generated or written")


def ensure(env_path: Path, example_path: Path, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Create `env_path` from the example on first use, fill empty secrets, keep existing values.

    Variables added to the example later are appended; nothing already in `env_path` changes.
    `overrides` only apply when the file is created (tests use them for their own ports).
    """
    example = parse(example_path)
    overrides = overrides or {}
    # AIRFLOW__* settings and the test stacks' MLOPS_TEST_* switches may come on top of the example.
    unknown = sorted(k for k in set(overrides) - set(example) if not k.startswith(("AIRFLOW__", "MLOPS_TEST_")))
    if unknown:
        raise EnvFileError(f"{example_path}: overrides name unknown variables {unknown}")
    if not env_path.exists():
        _refuse_data_bound(env_path, [k for k in DATA_BOUND_SECRETS if not overrides.get(k)], overrides, example)
        lines = []
        extra = {k: v for k, v in overrides.items() if k not in example}
        for raw in example_path.read_text().splitlines():
            match = _LINE.match(raw.strip())
            if match:
                key, value = match.groups()
                value = overrides.get(key, value)
                if not value and is_secret(key):
                    value = generate_secret(key)
                raw = f"{key}={value}"
            lines.append(raw)
        lines += [f"{k}={v}" for k, v in extra.items()]
        _write_private(env_path, "\n".join(lines) + "\n")
        return parse(env_path)
    current = parse(env_path)
    additions: list[str] = []
    fills: dict[str, str] = {}
    for key, value in example.items():
        if key not in current:
            additions.append(f"{key}={value or (generate_secret(key) if is_secret(key) else '')}")
        elif not current[key] and is_secret(key):
            fills[key] = generate_secret(key)
    _refuse_data_bound(env_path, [k for k in DATA_BOUND_SECRETS if not current.get(k)], current, example)
    if additions or fills:
        text = env_path.read_text()
        for key, value in fills.items():
            text = re.sub(rf"(?m)^{key}=\s*$", f"{key}={value}", text)
        if additions:
            text = text.rstrip("\n") + "\n# added from .env.example\n" + "\n".join(additions) + "\n"
        _write_private(env_path, text)
    return parse(env_path)


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (it holds secrets): atomically and
    durably (file and folder synced, so a power loss leaves the old file or the new one)."""
    safefs.write_file(path, text, mode=0o600)


def main(argv: list[str] | None = None) -> int:
    """CLI: create or complete an env file from the example; print what it did, never a secret."""
    parser = argparse.ArgumentParser(description="Write .env from .env.example with generated secrets; "
                                                 "existing values are never changed.")
    parser.add_argument("--env-file", type=Path, default=REPO / ".env")
    parser.add_argument("--example", type=Path, default=REPO / ".env.example")
    args = parser.parse_args(argv)
    existed = args.env_file.exists()
    before = parse(args.env_file) if existed else {}
    try:
        after = ensure(args.env_file, args.example)
    except EnvFileError as exc:
        print(f"envfile: error: {exc}", file=sys.stderr)
        return 1
    added = sorted(set(after) - set(before))
    filled = sorted(k for k in before if not before[k] and after.get(k))
    if not existed:
        generated = sorted(k for k, v in after.items() if is_secret(k) and v)
        print(f"envfile: wrote {args.env_file} ({len(after)} variables, {len(generated)} generated secrets)")
    elif added or filled:
        print(f"envfile: {args.env_file}: added {added or 'nothing'}, generated {filled or 'nothing'}")
    else:
        print(f"envfile: {args.env_file} is complete; nothing changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

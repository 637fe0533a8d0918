"""Start one stack program with exactly the environment rendered for it.

supervisord runs every program as `python -I -S stack/launch.py <env.json> <command...>` (as the
program's user): this replaces the process with <command> and the environment stored in
<env.json> (written by stack/render.py, readable by that user only), nothing inherited. Values
therefore never pass through supervisord's config syntax, and no secret is on a command line.
Standard library only: it runs with -S (no site-packages) for a fast start.
"""

import json
import os
import sys


def main(argv: list[str]) -> int:
    """exec argv[1:] with the environment of the JSON file argv[0]."""
    if len(argv) < 2:
        print("usage: launch.py ENV_JSON COMMAND [ARG...]", file=sys.stderr)
        return 2
    env_file, command = argv[0], argv[1:]
    try:
        with open(env_file, encoding="utf-8") as handle:
            env = json.load(handle)
    except (OSError, ValueError) as exc:
        print(f"launch.py: cannot read the environment file {env_file}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        print(f"launch.py: {env_file} must hold one JSON object of strings", file=sys.stderr)
        return 1
    try:
        os.execve(command[0], command, env)
    except OSError as exc:
        print(f"launch.py: cannot start {command[0]}: {exc}", file=sys.stderr)
        return 1
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

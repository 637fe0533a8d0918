"""Make the code and the stack's folders reachable for the users the programs run as.

A checkout (or the Python the virtualenv was made from) under a private directory, e.g. /root with
mode 700, is not traversable for the stack's unprivileged users. `up` then grants exactly
traversal (`setfacl -m u:<user>:--x`) on those ancestor directories, says so in one line, and fails
with a clear message when it cannot.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from stack.config import REPO, VENV_BIN
from stack.run import StackError


def code_paths() -> list[Path]:
    """What every program needs to reach: the repository and the interpreter the venv runs."""
    interpreter = Path(os.path.realpath(VENV_BIN / "python"))
    return [REPO, interpreter.parent, Path(sys.base_prefix) / "lib"]


def _chain(path: Path) -> list[Path]:
    """`path` and every ancestor directory, from / down."""
    return [*reversed(path.parents), path]


def untraversable(user: str, paths: list[Path]) -> list[Path]:
    """The directories on the way to `paths` that `user` cannot traverse (one check per user)."""
    dirs = sorted({d for p in paths for d in _chain(p) if d.is_dir()}, key=lambda d: (len(d.parts), str(d)))
    script = 'for d in "$@"; do test -x "$d" || printf "%s\\n" "$d"; done'
    proc = subprocess.run(["runuser", "-u", user, "--", "/bin/sh", "-c", script, "sh", *map(str, dirs)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"cannot check what user {user} may reach (runuser failed): {proc.stderr.strip()}")
    return [Path(line) for line in proc.stdout.splitlines() if line]


def grant_traversal(users: list[str], paths: list[Path]) -> str | None:
    """Give each of `users` traversal of every directory on the way to `paths` it lacks; return
    one line saying what was granted (None when nothing was needed)."""
    granted: dict[Path, list[str]] = {}
    for user in users:
        for _ in range(64):
            blocked = untraversable(user, paths)
            if not blocked:
                break
            # Below a blocked directory everything looks blocked: grant the topmost ones, look again.
            top = [d for d in blocked if not any(b in d.parents for b in blocked)]
            for directory in top:
                _setfacl_traverse(user, directory)
                granted.setdefault(directory, []).append(user)
        else:
            raise StackError(f"user {user} still cannot reach {', '.join(map(str, paths))}")
    if not granted:
        return None
    return "; ".join(f"{d} (ACL {','.join(f'u:{n}:--x' for n in names)})" for d, names in granted.items())


def _setfacl_traverse(user: str, directory: Path) -> None:
    setfacl = shutil.which("setfacl")
    if setfacl is None:
        raise StackError(f"user {user} cannot traverse {directory} and setfacl is missing: install the `acl` "
                         "package (`make system-deps`), make the directory traversable (chmod o+x), or move "
                         "the checkout")
    spec = f"u:{user}:--x"
    proc = subprocess.run([setfacl, "-m", spec, str(directory)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise StackError(f"cannot grant {user} traversal of {directory} (`setfacl -m {spec} "
                         f"{shlex.quote(str(directory))}`: {proc.stderr.strip()}); make it traversable "
                         "(chmod o+x) or move the checkout")
    if directory in untraversable(user, [directory]):
        raise StackError(f"{directory}: still not traversable for {user} after setfacl (does the file system "
                         "support ACLs?); make it traversable (chmod o+x) or move the checkout")

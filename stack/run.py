"""What every stack module shares: the error type, the progress log and logged subprocess calls."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import time
from pathlib import Path

from stack.config import REPO


class StackError(Exception):
    """A stack operation failed; the message says what and where to look."""


def log(msg: str) -> None:
    """One progress line on stdout, flushed at once (make shows it live)."""
    print(f"[stack] {msg}", flush=True)


def run_logged(cmd: list[str], logfile: Path, env: dict[str, str] | None = None, what: str = "",
               user: str | None = None) -> None:
    """Run `cmd` (as `user`, with its groups, when given), appending its output to `logfile`; on
    failure raise with the log's tail."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    as_user = {}
    if user is not None:
        account = pwd.getpwnam(user)
        groups = [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": groups, "umask": 0o027}
    fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    with os.fdopen(fd, "a") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}{f' (as {user})' if user else ''}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, **as_user)
    if proc.returncode != 0:
        tail = "\n".join(logfile.read_text().splitlines()[-25:])
        raise StackError(f"{what or cmd[0]} failed (exit {proc.returncode}); see {logfile}:\n{tail}")

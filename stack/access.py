"""Who may reach what: the stack's system users, the owners and modes of its folders, and the
traversal the unprivileged users need to reach the code.

A checkout (or the Python the virtualenv was made from) under a private directory, e.g. /root with
mode 700, is not traversable for the stack's unprivileged users. `up` then grants exactly
traversal (`setfacl -m u:<user>:--x`) on those ancestor directories, says so in one line, and fails
with a clear message when it cannot.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shlex
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from stack import safefs
from stack.components import Folder
from stack.config import CONTROL_USER, REPO, SERVING_USER, SHARED_GROUP, VENV_BIN, WORKER_USER
from stack.run import StackError, run_logged

USERS_SCRIPT = REPO / "scripts" / "system-users.sh"


def missing_accounts() -> list[str]:
    """The stack's users and group that do not exist on this machine."""
    missing = []
    for user in (CONTROL_USER, WORKER_USER, SERVING_USER):
        try:
            pwd.getpwnam(user)
        except KeyError:
            missing.append(f"user {user}")
    try:
        grp.getgrnam(SHARED_GROUP)
    except KeyError:
        missing.append(f"group {SHARED_GROUP}")
    return missing


def ensure_accounts(logfile: Path) -> str | None:
    """Create the stack's users with scripts/system-users.sh when one is missing (as `make
    install` does); return a line saying so, None when all existed."""
    missing = missing_accounts()
    if not missing:
        return None
    if os.geteuid() != 0:
        raise StackError(f"{', '.join(missing)} missing: run `make install` (scripts/system-users.sh) as root")
    run_logged(["bash", str(USERS_SCRIPT)], logfile, what=str(USERS_SCRIPT))
    if missing_accounts():
        raise StackError(f"{USERS_SCRIPT} did not create {', '.join(missing_accounts())}; see {logfile}")
    return f"created {', '.join(missing)} ({USERS_SCRIPT.name})"


_ACL_TAGS = {0x01: "user_obj", 0x02: "user", 0x04: "group_obj", 0x08: "group", 0x10: "mask", 0x20: "other"}


def acl_entries(path: Path, default: bool = False) -> set[tuple[str, int | None, int]]:
    """The POSIX ACL of `path` as (tag, uid/gid or None, permission bits), read from its extended
    attribute (no getfacl needed); empty when it has none."""
    name = "system.posix_acl_default" if default else "system.posix_acl_access"
    try:
        raw = os.getxattr(path, name)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return set()
        raise
    entries = set()
    for offset in range(4, len(raw) - 7, 8):  # a 4-byte version, then 8-byte entries
        tag, perm, ident = struct.unpack_from("<HHI", raw, offset)
        entries.add((_ACL_TAGS.get(tag, hex(tag)), None if ident == 0xFFFFFFFF else ident, perm))
    return entries


def _ids(folder: Folder) -> tuple[int, int]:
    account = pwd.getpwnam(folder.owner)
    gid = grp.getgrnam(SHARED_GROUP).gr_gid if folder.shared else account.pw_gid
    return account.pw_uid, gid


def _setfacl(args: list[str], folder_fd: int, path: Path) -> None:
    """setfacl on the folder opened as `folder_fd` (its /proc/self/fd path: the folder itself, not
    whatever a path names by the time setfacl runs); -R walks physically (-P: no link followed)."""
    setfacl = shutil.which("setfacl")
    if setfacl is None:
        raise StackError(f"setfacl is missing (needed for {path}): install the `acl` package (`make system-deps`)")
    if "-R" in args:
        # -P skips link arguments, and /proc/self/fd/N is one: run it in the folder on ".".
        proc = subprocess.run([setfacl, "-P", *args, "."], capture_output=True, text=True,
                              cwd=f"/proc/self/fd/{folder_fd}", pass_fds=(folder_fd,))
    else:
        proc = subprocess.run([setfacl, *args, f"/proc/self/fd/{folder_fd}"], capture_output=True, text=True,
                              pass_fds=(folder_fd,))
    if proc.returncode != 0:
        raise StackError(f"setfacl {' '.join(args)} {path} failed: {proc.stderr.strip()}")


def prepare_folders(folders: list[Folder]) -> list[str]:
    """Create each folder with its owner and mode. A folder whose owner is wrong (state of an older
    stack that ran everything as root) is handed over with all its content; a shared folder gets
    a default ACL so that what anyone creates in it (e.g. batches replayed by root) stays writable
    for the group. Return a line per folder handed over. Every folder is opened without following
    links and changed through its descriptor (stack/safefs.py): a link planted by a service user
    where a folder is expected is refused."""
    changes = []
    for folder in folders:
        uid, gid = _ids(folder)
        with safefs.directory(folder.path, create=True) as fd:
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != (uid, gid):
                if folder.owner != "root":
                    safefs.chown_tree(fd, uid, gid)
                    changes.append(f"{folder.path} (with its content) now owned by {folder.owner}"
                                   + (f":{SHARED_GROUP}" if folder.shared else ""))
                    if folder.shared:
                        _setfacl(["-R", "-m", f"g:{SHARED_GROUP}:rwX,d:g:{SHARED_GROUP}:rwX"], fd, folder.path)
                os.fchown(fd, uid, gid)
            os.fchmod(fd, folder.mode)
            if folder.shared and not _shared_acl_in_place(Path(f"/proc/self/fd/{fd}"), gid):
                _setfacl(["-m", f"g:{SHARED_GROUP}:rwx,d:g:{SHARED_GROUP}:rwx,d:m::rwx"], fd, folder.path)
    return changes


def _shared_acl_in_place(path: Path, gid: int) -> bool:
    """The group has rwx on `path` and by default on everything created in it."""
    wanted = {("group", gid, 7), ("mask", None, 7)}
    return wanted <= acl_entries(path) and wanted <= acl_entries(path, default=True)


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
    return ", ".join(map(str, granted))


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

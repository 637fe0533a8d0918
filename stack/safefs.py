"""Root's writes, chowns and walks in folders that other users own, without following their links.

`up` runs as root and writes into folders the stack's users own (their AIRFLOW_HOMEs, Prometheus'
and Alertmanager's folders, the data folder). A link planted there by a task (`airflow.cfg.tmp ->
<venv>/site-packages/x.pth`) must not make root create, truncate or chown the link's target.
Every such operation goes through this module: each folder is opened component by component
from `/` with O_NOFOLLOW, files are created inside the opened folder (`dir_fd`, openat
semantics) with O_EXCL|O_NOFOLLOW, ownership and mode are set on the descriptor (fchown,
fchmod), and a link where a folder or file is expected is refused with an error naming it.

A link is followed only when root put it there: owned by root, in a folder owned by root that
nobody else may write to (or a sticky one). Standard library only (stack/envfile.py uses it).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import stat
from pathlib import Path
from typing import Iterator

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePathError(Exception):
    """A path root was asked to write, chown or walk is (or passes through) another user's link."""


def _owner(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _trusted_link(parent_fd: int, name: str) -> bool:
    """The link `name` in the folder `parent_fd` was put there by root and only root can change it."""
    link = os.lstat(name, dir_fd=parent_fd)
    parent = os.fstat(parent_fd)
    return (link.st_uid == 0 and parent.st_uid == 0
            and (not parent.st_mode & 0o022 or bool(parent.st_mode & stat.S_ISVTX)))


def _refuse_link(parent_fd: int, name: str, full: Path, what: str) -> UnsafePathError:
    target = os.readlink(name, dir_fd=parent_fd)
    owner = _owner(os.lstat(name, dir_fd=parent_fd).st_uid)
    return UnsafePathError(f"{full} is a symbolic link (to {target}, owned by {owner}) where {what} is expected: "
                           f"refusing to follow it as root; remove the link and run again")


def open_dir(path: Path, create: bool = False, mode: int = 0o755) -> int:
    """A descriptor of the folder `path` (absolute), opened one component at a time without
    following any link root did not make; with `create`, missing folders are made (owned by
    root, `mode`). The caller closes it."""
    path = Path(os.path.abspath(path))
    fd = os.open("/", _DIR_FLAGS)
    walked = Path("/")
    try:
        for part in path.parts[1:]:
            walked = walked / part
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                st = os.lstat(part, dir_fd=fd)
                if not stat.S_ISLNK(st.st_mode):
                    raise UnsafePathError(f"{walked} is not a folder") from None
                if not _trusted_link(fd, part):
                    raise _refuse_link(fd, part, walked, "a folder") from None
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def directory(path: Path, create: bool = False, mode: int = 0o755) -> Iterator[int]:
    """open_dir as a context manager."""
    fd = open_dir(path, create, mode)
    try:
        yield fd
    finally:
        os.close(fd)


def _no_link(dir_fd: int, name: str, full: Path, what: str = "a file") -> os.stat_result | None:
    """lstat of `name` in the folder; refuse a link; None when absent."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise _refuse_link(dir_fd, name, full, what)
    return st


def write_file(path: Path, data: bytes | str, uid: int | None = None, gid: int | None = None,
               mode: int = 0o600) -> None:
    """Replace `path` atomically and durably with `data`, owned by uid:gid (unchanged when None)
    with `mode`: created as `<name>.tmp` inside the folder (O_EXCL|O_NOFOLLOW), owner and mode set
    on the descriptor, synced, renamed over `path`, the folder synced. A link at `path` or at the
    temporary name is refused."""
    path = Path(os.path.abspath(path))
    payload = data.encode() if isinstance(data, str) else data
    name, tmp = path.name, path.name + ".tmp"
    with directory(path.parent, create=True) as dir_fd:
        current = _no_link(dir_fd, name, path)
        if current is not None and not stat.S_ISREG(current.st_mode):
            raise UnsafePathError(f"{path} exists and is not a regular file")
        if _no_link(dir_fd, tmp, path.with_name(tmp)) is not None:
            os.unlink(tmp, dir_fd=dir_fd)  # a stale temporary file (never followed, only removed)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            if uid is not None or gid is not None:
                os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)


def read_file(path: Path) -> bytes | None:
    """The bytes of the regular file `path`, None when it is absent; a link is refused."""
    path = Path(os.path.abspath(path))
    with directory(path.parent) as dir_fd:
        if _no_link(dir_fd, path.name, path) is None:
            return None
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as handle:
            return handle.read()


def create_file(path: Path, data: bytes, uid: int, gid: int, mode: int = 0o600) -> bool:
    """Create `path` with `data` only when absent (O_EXCL); False when it already exists."""
    path = Path(os.path.abspath(path))
    with directory(path.parent) as dir_fd:
        if _no_link(dir_fd, path.name, path) is not None:
            return False
        fd = os.open(path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchown(handle.fileno(), uid, gid)
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.fsync(dir_fd)
        return True


def set_owner(path: Path, uid: int, gid: int, mode: int) -> None:
    """fchown/fchmod the existing file or folder `path` through a descriptor; a link is refused."""
    path = Path(os.path.abspath(path))
    with directory(path.parent) as dir_fd:
        if _no_link(dir_fd, path.name, path) is None:
            raise FileNotFoundError(f"{path}: not found")
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


def make_dir(path: Path, uid: int, gid: int, mode: int) -> None:
    """Create the folder `path` when missing, then give it owner and mode (on its descriptor)."""
    with directory(path, create=True, mode=0o700) as fd:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)


def chown_tree(dir_fd: int, uid: int, gid: int) -> None:
    """Give everything below the opened folder to uid:gid, links themselves included, never what
    they point to (os.fwalk: one descriptor per folder, links not followed)."""
    for _root, dirs, files, root_fd in os.fwalk(".", dir_fd=dir_fd, follow_symlinks=False):
        for name in (*dirs, *files):
            os.chown(name, uid, gid, dir_fd=root_fd, follow_symlinks=False)


def remove_matching(dir_fd: int, pattern: str) -> None:
    """Unlink the entries of the opened folder whose names match `pattern` (links themselves)."""
    for name in os.listdir(dir_fd):
        if fnmatch.fnmatch(name, pattern):
            st = os.lstat(name, dir_fd=dir_fd)
            if stat.S_ISDIR(st.st_mode):
                raise UnsafePathError(f"a folder {name!r} where a file is expected (in {fd_path(dir_fd)})")
            os.unlink(name, dir_fd=dir_fd)


def fd_path(fd: int) -> str:
    """Where an opened descriptor points (for messages and for programs given /proc/self/fd/N)."""
    return os.readlink(f"/proc/self/fd/{fd}")

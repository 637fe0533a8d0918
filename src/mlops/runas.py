"""Data commands run as root work as the data folder's owner.

The data folder is written by the pipeline's tasks (the stack's worker user). A command that root
runs there (``mlops preprocess`` runs DVC with the stage file, DVC config and batches found in
it) must not turn what a task wrote into root's code. So as root the ``mlops`` CLI first becomes
the data folder's owner (its uid, group and supplementary groups, HOME); a root-owned data
folder that others may write to is refused.
"""

from __future__ import annotations

import os
import pwd
import stat

from mlops import config
from mlops.errors import MlopsError


class DataOwnerError(MlopsError):
    """Root was asked to work in a data folder others may write to."""


def drop_to_data_owner() -> str | None:
    """As root, become the owner of the data folder; return the user's name (None: nothing to
    do, not root, or the folder is root's and closed to others, or does not exist yet)."""
    if os.geteuid() != 0:
        return None
    root = config.data_dir()
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return None
    if st.st_uid == 0:
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise DataOwnerError(f"{root}: the data folder is root's but others may write to it "
                                 f"(mode {stat.filemode(st.st_mode)}); as root, mlops refuses to work there: "
                                 "give it to the user who runs the pipeline or close it (chmod go-w)")
        return None
    try:
        account = pwd.getpwuid(st.st_uid)
    except KeyError as exc:
        raise DataOwnerError(f"{root}: owned by uid {st.st_uid}, which has no account; as root, mlops "
                             "runs data commands as the data folder's owner") from exc
    os.initgroups(account.pw_name, account.pw_gid)
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    os.environ.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
    return account.pw_name

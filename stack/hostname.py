"""`[core] hostname_callable` of the native stack's Airflow programs.

The api-server fetches a running task's log from `http://<task's hostname>:<log server port>`.
Each host's log server listens on that host's bind address only (BIND_ADDRESS, 127.0.0.1 unless
set), where the machine's own name may resolve elsewhere (127.0.1.1 on a stock Debian): so the
programs report that address as their hostname (a worker host its own, stack/workerhost.py).
Standard library only: every worker imports it.
"""

from __future__ import annotations

import os

BIND_ADDRESS_VAR = "MLOPS_STACK_BIND_ADDRESS"


def bind_address() -> str:
    """The address this stack's listeners bind, as set in the program's environment."""
    return os.environ.get(BIND_ADDRESS_VAR, "127.0.0.1")

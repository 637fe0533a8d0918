"""The processes of one stack, found and stopped with psutil.

Every program of a stack carries MLOPS_STACK_HOME=<its home> in its environment (the component
table puts it there). Processes that rewrite their environment memory (Celery and Airflow retitle
theirs, PostgreSQL backends) are found as descendants of a marked one.
"""

from __future__ import annotations

import os

import psutil

from stack.config import StackConfig


def _marked(proc: psutil.Process, marker: str) -> bool:
    try:
        return proc.environ().get("MLOPS_STACK_HOME") == marker
    except (psutil.Error, OSError):
        return False


def stack_process_list(cfg: StackConfig) -> list[psutil.Process]:
    """Live processes of this stack (marked ones and all their descendants), by pid."""
    marker = str(cfg.home)
    me = os.getpid()
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        if proc.pid != me and proc.pid not in found and _marked(proc, marker):
            found[proc.pid] = proc
            try:
                found.update({child.pid: child for child in proc.children(recursive=True)})
            except psutil.Error:
                pass
    found.pop(me, None)
    return [found[pid] for pid in sorted(found) if _alive(found[pid])]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stack_processes(cfg: StackConfig) -> list[int]:
    """Pids of the live processes of this stack."""
    return [p.pid for p in stack_process_list(cfg)]


def terminate(procs: list[psutil.Process], grace: float = 10) -> list[int]:
    """SIGTERM `procs`, SIGKILL what is still alive after `grace` seconds; return the pids of
    processes that survived even that."""
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=grace)
    return [p.pid for p in alive]


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait until process `pid` has ended; True when it did within `timeout` seconds."""
    try:
        psutil.Process(pid).wait(timeout=timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True

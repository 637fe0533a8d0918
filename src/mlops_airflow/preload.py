"""Warm Celery workers: the heavy libraries are imported once, in the worker's main process,
before Celery forks its pool; every task process is forked from a pool process and so starts
with them already imported (a cold task pays seconds for pandas, scikit-learn, MLflow and
Evidently before its work begins).

How it is loaded: Celery imports the modules listed in its ``imports`` setting
(``[celery] extra_celery_config`` in airflow/airflow.env) in the worker's main process, after
Airflow's own preload (``on_celery_import_modules``) and before the prefork pool starts. What it
imports is the worker's ``MLOPS_WORKER_PRELOAD``: comma-separated names of ``GROUPS`` (set per
queue: stack/config.py ``QUEUE_PRELOAD`` for the native stack, docker-compose.celery.yml for the
compose one). Unset or empty (every other process that builds the Celery app, e.g. Flower):
nothing is imported.

Fork safety: only imports happen here, nothing runs. The preload refuses (the worker does not
start) when an import started a Python thread or opened a socket, since neither survives a fork
(a thread that holds a lock at fork time deadlocks the child; a connection shared by several
processes mixes their traffic). One exception is handled explicitly: Evidently creates an asyncio
event loop (a socketpair and an epoll instance) when it is imported; every forked process
replaces it with a loop of its own (``own_evidently_loop``, an ``os.register_at_fork`` hook). No MLflow client, no SQLAlchemy engine, no OpenMP parallel
region exists before the fork: each task creates its own. Native threads: numpy's OpenBLAS pool
(already started by Airflow's own preload, which imports numpy) shuts down around a fork through
its ``pthread_atfork`` handlers; pyarrow's jemalloc background thread is switched off by
``JE_ARROW_MALLOC_CONF`` (set below when unset); MLflow's telemetry (a thread that rewrites
``os.environ``) is off (``MLFLOW_DISABLE_TELEMETRY``). Nothing here reads a secret: a worker holds
only the broker password, and a task gets everything else through the Execution API.

``gc.freeze()`` at the end moves every object imported so far out of the collector's reach, so
the pool and task processes do not touch (and copy) the shared pages when they collect. The main
process goes on allocating after that (Celery's consumer, Airflow's executor state) and forks a new
pool process whenever one is replaced (``worker_max_tasks_per_child``): ``freeze_before_fork``
collects and freezes again just before each such fork, so a new pool process does not copy the
main process' later heap either (in the soak, without it, a replacement light pool process held
100-210 MiB of its own against 55-90 MiB for those forked at start, and the light worker grew 1.5x
over the year; with it, 70-100 MiB and no growth).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
import sys
import threading
import time
import warnings
from pathlib import Path

log = logging.getLogger("mlops_airflow.preload")

ENV_VAR = "MLOPS_WORKER_PRELOAD"

# What the task processes of a queue import. Every group also gets COMMON (the DAG files and the
# task glue). Heavy libraries are listed by the modules the mlops functions import inside their
# bodies (tests/unit/test_worker_preload.py checks that a warm step imports nothing heavy).
COMMON = (
    "airflow.providers.standard.operators.trigger_dagrun",
    "mlops_airflow.config",
    "mlops_airflow.drift",
    "mlops_airflow.runstate",
    "mlops_airflow.tasks",
    "mlops_airflow.validation",
    "mlops.config",
    "mlops.errors",
    "mlops.metrics",
    "mlops.util",
    "statsd",
    "yaml",
)
# Fitting, loading and scoring a model and talking to MLflow: shared by the drift and training groups.
MODELLING = (
    "pandas",
    "pyarrow.parquet",
    "sklearn.compose",
    "sklearn.ensemble",
    "sklearn.metrics",
    "sklearn.pipeline",
    "sklearn.preprocessing",
    "threadpoolctl",
    "skops.io",
    "mlflow",
)
GROUPS: dict[str, tuple[str, ...]] = {
    # validate_data, the data_validation_dag checks, preprocess (its DVC run is a subprocess).
    "validation": (
        "numpy",
        "pandas",
        "pyarrow.parquet",
        "mlops.batches",
        "mlops.data",
        "mlops.preprocess",
        "mlops.validate",
        "mlops.validation.accepted_index",
        "mlops.validation.driftstats",
        # check_distributions writes Evidently's report into validation.html.
        "evidently",
        "evidently.presets",
    ),
    # check_drift, evaluate, deploy and the registry tasks: the champion loaded and scored.
    "drift": (
        *MODELLING,
        "mlflow.artifacts",
        "mlflow.exceptions",
        "mlflow.models",
        "mlflow.sklearn",
        "mlflow.tracking",
        "mlops.drift",
        "mlops.evaluate",
        "mlops.model_store",
        "mlops.modeling",
        "mlops.monitoring",
        "mlops.promotion",
        "mlops.registry",
        "mlops.tracking",
        "mlops.train",
        "evidently",
        "evidently.presets",
    ),
    # train and retrain_model: fitting, logging the model and registering it.
    "training": (
        *MODELLING,
        "mlflow.exceptions",
        "mlflow.models",
        "mlflow.sklearn",
        "mlflow.tracking",
        "mlops.model_store",
        "mlops.modeling",
        "mlops.registry",
        "mlops.tracking",
        "mlops.train",
    ),
}
# Environment that makes the imports fork-safe; an operator's own value wins.
FORK_SAFE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "JE_ARROW_MALLOC_CONF": "background_thread:false",
}

# Native threads that must not exist at the fork (jemalloc's background thread: JE_ARROW_MALLOC_CONF).
UNSAFE_NATIVE_THREADS = {"jemalloc_bg_thd"}

#: What this process preloaded (inherited by every process forked from it): group names, the
#: process that imported them (the worker's main process), the seconds it took, and the modules
#: imported when it ended.
preloaded: tuple[str, ...] = ()
preload_pid: int | None = None
preload_seconds: float = 0.0
modules_at_preload: frozenset[str] = frozenset()


class PreloadError(RuntimeError):
    """A preload group is unknown, or an import broke fork safety."""


def requested(value: str | None = None) -> tuple[str, ...]:
    """The group names of ``MLOPS_WORKER_PRELOAD`` (or `value`), validated."""
    raw = os.environ.get(ENV_VAR, "") if value is None else value
    names = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        raise PreloadError(f"{ENV_VAR}={raw!r}: unknown preload group(s) {unknown}; known: {sorted(GROUPS)}")
    return names


def modules_of(groups: tuple[str, ...]) -> list[str]:
    """The modules the groups import, COMMON first, each once."""
    return list(dict.fromkeys([*COMMON, *(m for g in groups for m in GROUPS[g])]))


def _sockets() -> set[str]:
    """The socket inodes this process holds open."""
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


def native_threads() -> list[str]:
    """The names (comm) of this process's native threads."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            continue
    return names


def _evidently_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop Evidently creates when it is imported (``evidently.legacy.utils.sync``),
    for UI and LLM helpers this project never calls; None when Evidently is not imported."""
    sync = sys.modules.get("evidently.legacy.utils.sync")
    loop = getattr(sync, "_loop", None)
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


def _loop_sockets(loop: asyncio.AbstractEventLoop | None) -> set[str]:
    """The socket inodes of an unix event loop's self-pipe."""
    found = set()
    for sock in (getattr(loop, "_ssock", None), getattr(loop, "_csock", None)):
        if sock is not None and sock.fileno() >= 0:
            found.add(os.readlink(f"/proc/self/fd/{sock.fileno()}"))
    return found


def own_evidently_loop() -> None:
    """In a forked process: replace the inherited Evidently loop (whose self-pipe and epoll
    instance the parent and every sibling share) with one of this process's own."""
    sync = sys.modules.get("evidently.legacy.utils.sync")
    inherited = _evidently_loop()
    if inherited is None or sync is None:
        return
    sync._loop = asyncio.new_event_loop()
    sync._thr = threading.Thread(target=sync._loop.run_forever, name="Async Runner", daemon=True)
    inherited.close()


def preload(groups: tuple[str, ...]) -> list[str]:
    """Import the modules of `groups` in this process; raise PreloadError when that started a
    Python thread or opened a socket. Returns the modules imported."""
    global preloaded, preload_pid, preload_seconds, modules_at_preload
    for key, value in FORK_SAFE_ENV.items():
        os.environ.setdefault(key, value)
    threads_before = set(threading.enumerate())
    sockets_before = _sockets()
    started = time.perf_counter()
    modules = modules_of(groups)
    with warnings.catch_warnings():
        # skops scans modules at import and touches about a thousand deprecated Airflow aliases:
        # one warning each, rendered into the worker's log, a sixth of the preload's CPU.
        warnings.filterwarnings("ignore", category=FutureWarning, module="skops")
        for name in modules:
            importlib.import_module(name)
    new_threads = [t.name for t in threading.enumerate() if t not in threads_before]
    new_threads += [name for name in native_threads() if name in UNSAFE_NATIVE_THREADS]
    # Evidently's import-time loop is the one socket allowed: every forked process replaces it.
    new_sockets = sorted(_sockets() - sockets_before - _loop_sockets(_evidently_loop()))
    if new_threads or new_sockets:
        raise PreloadError(
            f"preloading {ENV_VAR}={','.join(groups)} started threads {new_threads} / opened sockets "
            f"{new_sockets}: they would not survive the fork into task processes; remove the module "
            f"that does it from mlops_airflow.preload.GROUPS")
    if _evidently_loop() is not None:
        os.register_at_fork(after_in_child=own_evidently_loop)
    preloaded = groups
    preload_pid = os.getpid()
    preload_seconds = time.perf_counter() - started
    modules_at_preload = frozenset(sys.modules)
    gc.freeze()
    os.register_at_fork(before=freeze_before_fork)
    return modules


def freeze_before_fork() -> None:
    """Before a fork of the preloading (main) process: collect, then freeze what is left, so the
    new pool process' collections leave the main process' pages shared. Only there: a pool process
    forks a task process per task, and what it froze would never be collected (the few cycles
    still alive at a main-process fork are all the main process keeps for good)."""
    if os.getpid() == preload_pid:
        gc.collect()
        gc.freeze()


def imported_since_preload() -> list[str]:
    """Modules this process imported after the preload ended (in a task: what it still had to
    import itself); empty when nothing was preloaded."""
    if not preloaded:
        return []
    return sorted(set(sys.modules) - modules_at_preload)


def exit_after_warm_shutdown(sender: object = None, **_: object) -> None:
    """Celery's ``worker_shutdown`` (sent once the warm shutdown has stopped the pool: no task is
    running any more): leave without tearing the interpreter down. Finalizing the heap of a
    preloaded (and ``gc.freeze``-d) worker keeps a core busy for half a minute to a minute on a
    loaded machine, and every ``make down`` or restart waited for it; the maintenance worker (no
    preload) waited out its whole stop grace after the fault suite."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.terminate()
    log.warning("warm shutdown done: exiting without finalizing the preloaded interpreter (pid %d)",
                os.getpid())
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(getattr(sender, "exitcode", None) or 0)


def _preload_from_environment() -> None:
    from celery.signals import worker_shutdown

    # Every worker (only a worker's main process sends worker_shutdown; Flower never does).
    worker_shutdown.connect(exit_after_warm_shutdown, weak=False)
    groups = requested()
    if not groups:
        return
    modules = preload(groups)
    # Logged by the worker's main process; `make logs C=worker-light1` shows it.
    log.warning("mlops preload %s: %d modules in %.1f s (pid %d)", ",".join(groups), len(modules),
                preload_seconds, os.getpid())


# Celery imports this module (its `imports` setting) in the worker's main process before the fork.
_preload_from_environment()

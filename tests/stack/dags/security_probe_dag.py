"""
### stack_security_probe: what a task can see (test-only DAG, bundle `stack-probe`)

Loaded only by the test stack of `tests/stack` (its env file adds this folder as a DAG bundle).
Each task, one per Celery queue, records from inside a real task process:

* its user and groups,
* its whole environment (`os.environ`; `/proc/self/environ` when readable: Airflow marks task
  processes non-dumpable, which makes it root's) into a file of the data folder (never into
  XCom, so no value reaches the metadata database),
* whether it can read each file and `/proc/<pid>/environ` listed in the run conf
  (`{"paths": [...]}`): the test lists the control plane's secrets.

`probe_served_log` logs a marker and waits (at most 3 minutes) until the test has read that log
through the api-server while the task still runs, i.e. from the stack's log server.

The test (`tests/stack/test_stack_4_isolation.py`) asserts on what the tasks wrote.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import dag, get_current_context, task

from mlops_airflow.config import default_args

DAG_ID = "stack_security_probe"


@task
def probe() -> dict:
    """Record what this task process is and may read; return where the record is."""
    import grp
    import json
    import os
    import pwd
    from pathlib import Path

    context = get_current_context()
    readable = {}
    for path in context["dag_run"].conf.get("paths", []):
        try:
            with open(path, "rb") as handle:
                handle.read(1)
            readable[path] = True
        except OSError as exc:
            readable[path] = f"{type(exc).__name__}: {exc.strerror}"
    try:
        proc_environ: list[str] | str = Path("/proc/self/environ").read_bytes().decode(errors="replace").split("\0")
    except OSError as exc:
        proc_environ = f"{type(exc).__name__}: {exc.strerror}"
    record = {
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "euid": os.geteuid(),
        "groups": sorted(grp.getgrgid(g).gr_name for g in os.getgroups()),
        "environ": dict(os.environ),
        "proc_environ": proc_environ,
        "readable": readable,
    }
    out = Path(os.environ["MLOPS_DATA_DIR"]) / "security-probe" / f"{context['run_id']}.{context['ti'].task_id}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle)
    return {"record": str(out), "user": record["user"]}


@task
def wait_for_log_reader() -> None:
    """Log a marker, then keep running until the release file of this run exists."""
    import logging
    import os
    import time
    from pathlib import Path

    context = get_current_context()
    logging.getLogger("airflow.task").info("SECURITY-PROBE-MARKER %s", context["run_id"])
    release = Path(os.environ["MLOPS_DATA_DIR"]) / "security-probe" / f"{context['run_id']}.release"
    deadline = time.monotonic() + 180
    while not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} did not appear within 180 s")
        time.sleep(0.5)


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args=default_args(retries=0),
    tags=["test", "security"],
    doc_md=__doc__,
)
def stack_security_probe() -> None:
    """One probe per queue: light and heavy workers both run one."""
    probe.override(task_id="probe_light", queue="light")()
    probe.override(task_id="probe_heavy", queue="heavy")()
    wait_for_log_reader.override(task_id="probe_served_log", queue="light")()


stack_security_probe()

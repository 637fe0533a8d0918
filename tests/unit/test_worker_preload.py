"""What mlops_airflow.preload promises the Celery workers (issue 16): an unknown group is
refused with the variable's name; every group imports the shared task glue plus its own modules,
each once (that they import is shown by the next test, which preloads them); after a group's preload its queue's work imports nothing heavy;
an import that starts a thread or opens a socket is refused (neither survives a fork); every
forked process gets an Evidently loop of its own. Preloads run in fresh interpreters (a preload
freezes the collector and keeps what it imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlops_airflow import preload
from stack.config import QUEUE_PRELOAD

REPO = Path(__file__).resolve().parents[2]
PROBE_DAGS = REPO / "tests" / "stack" / "dags"
HEAVY = ("numpy", "pandas", "pyarrow", "sklearn", "scipy", "mlflow", "evidently", "skops")


def _python(code: str, env: dict[str, str] | None = None, timeout: float = 300) -> dict:
    """Run `code` in a fresh interpreter; it prints one line 'RESULT <json>'."""
    full = {k: v for k, v in os.environ.items() if k != preload.ENV_VAR} | (env or {})
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", textwrap.dedent(code)], cwd=REPO, env=full,
                          capture_output=True, text=True, timeout=timeout)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_unknown_group_is_refused_with_the_variable_and_known_groups() -> None:
    with pytest.raises(preload.PreloadError) as err:
        preload.requested("validation, trainnig")
    assert "MLOPS_WORKER_PRELOAD" in str(err.value) and "'trainnig'" in str(err.value)
    assert "training" in str(err.value)  # the known groups are named
    assert preload.requested(" drift,validation,drift ,") == ("drift", "validation")
    assert preload.requested("") == ()


def test_unset_variable_preloads_nothing() -> None:
    # The module was imported by this test process without MLOPS_WORKER_PRELOAD: nothing ran.
    assert os.environ.get(preload.ENV_VAR) in (None, "")
    assert preload.preloaded == () and preload.preload_pid is None
    assert preload.imported_since_preload() == []


def test_each_group_imports_the_task_glue_and_its_own_modules_once() -> None:
    for queue, groups in QUEUE_PRELOAD.items():
        names = preload.requested(groups)
        modules = preload.modules_of(names)
        assert modules[:len(preload.COMMON)] == list(preload.COMMON), queue
        assert len(modules) == len(set(modules)), queue
        for group in names:
            assert set(preload.GROUPS[group]) <= set(modules), (queue, group)
    assert "evidently" in preload.modules_of(("validation",))
    assert {"sklearn.ensemble", "mlflow.sklearn", "skops.io"} <= set(preload.modules_of(("training",)))
    assert "evidently" not in preload.modules_of(("training",))  # the heavy worker does not pay for it


@pytest.mark.parametrize(("groups", "kind"), [("validation,drift", "light"), ("training", "heavy")])
def test_after_the_preload_the_queues_work_imports_nothing_heavy(groups: str, kind: str) -> None:
    result = _python(f"""
        import json, sys
        import airflow.sdk  # the worker has Airflow loaded before the preload
        from mlops_airflow import preload
        assert preload.preloaded == tuple({groups!r}.split(",")), preload.preloaded
        sys.path.insert(0, {str(PROBE_DAGS)!r})
        import preload_probe_dag
        preload_probe_dag.work({kind!r})
        print("RESULT " + json.dumps(preload.imported_since_preload()))
        """, env={preload.ENV_VAR: groups})
    assert [m for m in result if m.split(".")[0] in HEAVY] == []


def _module(tmp_path: Path, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))


@pytest.mark.parametrize(("name", "body", "named"), [
    ("starts_a_thread", """
        import threading
        release = threading.Event()
        threading.Thread(target=release.wait, name="import-time-worker", daemon=True).start()
        """, "import-time-worker"),
    ("opens_a_socket", """
        import socket
        held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        """, "socket:["),
])
def test_an_import_that_breaks_fork_safety_is_refused(tmp_path: Path, name: str, body: str, named: str) -> None:
    _module(tmp_path, name, body)
    result = _python(f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from mlops_airflow import preload
        preload.GROUPS["probe"] = ({name!r},)
        try:
            preload.preload(("probe",))
        except preload.PreloadError as exc:
            print("RESULT " + json.dumps({{"error": str(exc), "preloaded": list(preload.preloaded)}}))
        else:
            print("RESULT " + json.dumps({{"error": None}}))
        """)
    assert result["error"] is not None, f"{name} was preloaded"
    assert named in result["error"] and "MLOPS_WORKER_PRELOAD=probe" in result["error"], result["error"]
    assert result["preloaded"] == []


def test_a_worker_refuses_to_start_with_an_unknown_group() -> None:
    proc = subprocess.run([sys.executable, "-c", "import mlops_airflow.preload"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, preload.ENV_VAR: "gpu"})
    assert proc.returncode != 0
    assert "unknown preload group(s) ['gpu']" in proc.stderr


def test_every_forked_process_gets_its_own_evidently_loop() -> None:
    result = _python("""
        import json, os
        from mlops_airflow import preload
        from evidently.legacy.utils import sync

        def selector(loop):
            return os.readlink(f"/proc/self/fd/{loop._ssock.fileno()}")

        parent = (id(sync._loop), selector(sync._loop))
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            child = (id(sync._loop), selector(sync._loop), sync._loop.is_closed())
            os.write(write, json.dumps(child).encode())
            os._exit(0)
        os.close(write)
        child = json.loads(os.read(read, 65536))
        os.waitpid(pid, 0)
        print("RESULT " + json.dumps({"parent": parent, "child": child, "parent_closed": sync._loop.is_closed()}))
        """, env={preload.ENV_VAR: "validation"})
    assert result["child"][0] != result["parent"][0]
    assert result["child"][1] != result["parent"][1]  # its own self-pipe (and epoll instance)
    assert result["child"][2] is False and result["parent_closed"] is False


@pytest.mark.parametrize("hook", [True, False])
def test_a_pool_process_forked_later_collects_without_copying_the_main_process_heap(hook: bool) -> None:
    # The main process preloads, then allocates (as Celery's consumer does for months), then forks
    # a pool process (a replacement after worker_max_tasks_per_child), which collects. With the
    # before-fork freeze the collection leaves the pages shared; without it (the control: the hook
    # sees another pid) it copies them. A pool process' own fork (its task process) freezes nothing.
    result = _python(f"""
        import gc, json, os
        from mlops_airflow import preload
        preload.preload(())
        later = [[i] for i in range(400_000)]  # lists: tracked by the collector
        if not {hook}:
            preload.preload_pid = -1
        def private_dirty_mib():
            for line in open("/proc/self/smaps_rollup"):
                if line.startswith("Private_Dirty:"):
                    return int(line.split()[1]) / 1024
        read, write = os.pipe()
        pool = os.fork()
        if pool == 0:
            before = private_dirty_mib()
            gc.collect()
            copied = private_dirty_mib() - before
            frozen = gc.get_freeze_count()
            own = [[j] for j in range(1000)]  # tracked: a freeze here would count them
            task = os.fork()
            if task == 0:
                os._exit(0)
            os.waitpid(task, 0)
            os.write(write, json.dumps({{"copied_mib": copied, "frozen": frozen,
                                         "frozen_after_task_fork": gc.get_freeze_count()}}).encode())
            os._exit(0)
        os.waitpid(pool, 0)
        print("RESULT " + os.read(read, 4096).decode())
        """)
    assert result["frozen_after_task_fork"] == result["frozen"], result
    if hook:
        assert result["frozen"] >= 400_000 and result["copied_mib"] < 8, result
    else:
        assert result["frozen"] < 400_000 and result["copied_mib"] > 20, result

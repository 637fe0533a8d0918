"""The fault suite's stack: the session's test stack (tests/lib/testkit/stack_session.py, with its
champion), restarted with `BIND_ADDRESS` on a veth to a second "host" (tests/lib/testkit/secondhost.py: a
network namespace with its own address and host name) where a worker host runs a heavy worker and
its log server (stack/workerhost.py), the main host's data folder shared at the same path.

Runs last (pyproject.toml's testpaths): it disrupts the stack, and leaves it bound to an address
that goes away with the namespace. While it runs, the drift thresholds are out of reach, so no
retraining starts that a fault test did not trigger (restored afterwards).
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from stack import config as stack_config
from stack import workerhost
from stack.api import Airflow
from stack.components import STATSD_DOUBLE_SWITCH
from testkit import secondhost

from testkit.faultsuite import FAULT_DAGS, LONG, NO_DRIFT, FaultStack
from testkit.stack_session import LOCAL_BUNDLE, PORT_OFFSET, PROBE_DAGS, REPO, StackHandle, StatsdCapture


def _set_line(text: str, key: str, value: str) -> str:
    line = f"{key}={value}"
    pattern = rf"(?m)^{re.escape(key)}=.*$"
    return re.sub(pattern, line.replace("\\", "\\\\"), text) if re.search(pattern, text) else text + line + "\n"


@pytest.fixture(scope="session")
def fault_stack(stack: StackHandle, runs) -> FaultStack:
    """The session stack restarted on the second host's veth address, with the worker host up."""
    old = stack
    host = secondhost.create(secondhost.for_offset(PORT_OFFSET))
    env_file = old.root / "stack-faults.env"
    bundles = [{"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {}},
               {"name": "stack-probe", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(PROBE_DAGS)}},
               {"name": "faults", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(FAULT_DAGS)}}]
    text = _set_line(old.env_file.read_text(), "BIND_ADDRESS", host.main_address)
    text = _set_line(text, "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    # The suite's own StatsD receiver takes the StatsD port (it records which host sent what), so
    # the statsd-exporter test double of the session stack does not run here.
    text = _set_line(text, STATSD_DOUBLE_SWITCH, "")
    env_file.write_text(text)
    env_file.chmod(0o600)
    down = old.ctl("down", timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    cfg = stack_config.load(env_file)
    statsd = StatsdCapture(cfg.ports["STATSD_PORT"], host.main_address)
    statsd.start()
    handle = StackHandle(old.root, env_file, cfg, statsd, old.alerts)
    up = handle.ctl("up")
    assert up.returncode == 0, f"stack up on {host.main_address} failed:\n{up.stdout}\n{up.stderr}"
    host_env = old.root / "host2.env"
    exported = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "stack.workerhost", "--env-file",
                               str(env_file), "export", "--address", host.address, "--home", str(old.root / "host2"),
                               "--workers", "heavy2:heavy:1", "--out", str(host_env)],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    api = Airflow(cfg, *handle.login("admin"))
    fs = FaultStack(handle, api, host, workerhost.load_worker_host(host_env), statsd)
    before = {k: api.session.get(f"{cfg.api_url}/api/v2/variables/{k}", timeout=30) for k in NO_DRIFT}
    for key, value in NO_DRIFT.items():
        resp = api.session.post(f"{cfg.api_url}/api/v2/variables", json={"key": key, "value": value}, timeout=30)
        if resp.status_code == 409:
            resp = api.session.patch(f"{cfg.api_url}/api/v2/variables/{key}", json={"key": key, "value": value},
                                     timeout=30)
        assert resp.status_code in (200, 201), resp.text
    api.wait_dag(LONG)
    fs.host_up()
    try:
        yield fs
    finally:
        try:
            for key, resp in before.items():
                if resp.status_code == 200:
                    api.session.patch(f"{cfg.api_url}/api/v2/variables/{key}",
                                      json={"key": key, "value": resp.json()["value"]}, timeout=30)
                else:
                    api.session.delete(f"{cfg.api_url}/api/v2/variables/{key}", timeout=30)
            fs.host_down()
        finally:
            secondhost.remove(host)
            statsd.stop()



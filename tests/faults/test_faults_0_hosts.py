"""The two hosts of the fault suite: the main stack listens on its BIND_ADDRESS for what other hosts
use (and on loopback for the rest); the second host has its own address and host name, runs its
heavy worker and its log server there, shares the data folder at the same path, and sees the same
inter-process locks (they live in that folder) as the main host."""

from __future__ import annotations

import fcntl
import os
import subprocess

import psutil

from stack.components import components
from stack.procs import stack_process_list
from testkit.faultsuite import REPO

HOLD_LOCK = """
import sys, time
from mlops.util import file_lock
with file_lock("watermark"):
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
"""


def test_served_listeners_bind_the_address_the_second_host_reaches(fault_stack) -> None:
    fs = fault_stack
    pids = {p.pid for p in stack_process_list(fs.cfg)}
    seen = {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}
    for comp in components(fs.cfg):
        for lst in comp.listeners:
            if comp.present and lst.proto == "tcp":
                want = fs.host.main_address if lst.served else "127.0.0.1"
                assert (want, lst.port) in seen, f"{comp.name} {lst.var} not on {want}: {sorted(seen)}"
    assert {ip for ip, _ in seen} == {fs.host.main_address, "127.0.0.1"}, seen


def test_the_second_host_has_its_own_address_and_name_and_serves_its_task_logs(fault_stack) -> None:
    fs = fault_stack
    name = subprocess.run(fs.host.command(["hostname"]), capture_output=True, text=True, check=True).stdout.strip()
    assert name == fs.host.hostname != os.uname().nodename
    listening = subprocess.run(["ip", "netns", "exec", fs.host.netns, "ss", "-Hltn"], capture_output=True, text=True,
                               check=True).stdout
    assert f"{fs.host.address}:{fs.cfg.ports['AIRFLOW_LOG_SERVER_PORT']} " in listening, listening
    assert fs.host_cfg.data_dir == fs.cfg.data_dir and fs.host_cfg.control_address == fs.host.main_address


def test_both_hosts_see_the_same_locks(fault_stack) -> None:
    fs = fault_stack
    env = {**os.environ, "MLOPS_DATA_DIR": str(fs.host_cfg.data_dir)}
    holder = subprocess.Popen(fs.host.command([str(REPO / ".venv" / "bin" / "python"), "-c", HOLD_LOCK, "20"]),
                              env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with open(fs.cfg.data_dir / "state" / "locks" / "watermark.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held_elsewhere = False
            except BlockingIOError:
                held_elsewhere = True
        assert held_elsewhere, "the main host took the watermark lock the second host holds"
    finally:
        holder.kill()
        holder.wait(timeout=10)

"""Load on the native stack: bursts of task instances; prints ONE JSON object.

For each number of light workers in LIGHT_WORKERS_TRIED it brings up a stack of its own
(benchmarks/benchstack.py, `LIGHT_WORKERS=<n>`), runs an unmeasured warm-up burst, then drives
bursts of bench_fanout (benchmarks/dags: per run two planning tasks, then trivial mapped tasks on
`light` and one on `heavy`) through the REST API as several concurrent runs (tests/lib/testkit/load.py):
50, 200 and 1000 task instances with one light worker, the 200-task burst with each.

Per burst: `tasks`, `runs`, `wall_s` (first trigger to the end of the last run), `tasks_per_s`,
`queue_wait_p50_s` / `_p95_s` / `_max_s` (queued -> running), `lost` (planned task instances
not in success at the end), `stuck` (not finished at the deadline), `queued_timeouts` (the
scheduler's task_queued_timeout events), `heavy_on` (the workers that ran heavy tasks),
`peak_cpu_pct` (the machine's busy CPU less this process, percent of one core, 1 s samples),
`peak_pss_mb` (the stack's processes), `scheduler_heartbeat_max_age_s` (the oldest the
scheduler's heartbeat got, from /api/v2/monitor/health each second; `health_checks_unanswered`
counts the seconds that check gave no time) and `cpu_s_by_component`
(CPU seconds each supervisord program's process tree used during the burst, its reaped task
processes included; supervisord itself; this benchmark; `unattributed`: the machine's busy time
less all of those; `cpu_s_per_task` divides by the tasks).

`scaling`: tasks per second of the 200-task burst with 2 and 3 light workers divided by that with 1.

Run: MLOPS_BENCH_PORT_OFFSET=<n> .venv/bin/python benchmarks/load.py [--workers 1,2,3] [--bursts 50,200,1000]
     [--set AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY=64 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from benchstack import bench_stack, pss_mb, say  # first: it puts testkit (tests/lib) on sys.path
from stack import health
from stack.api import Airflow
from stack.config import StackConfig
from stack.ctl import stack_processes
from testkit import load as burst_load
from testkit.faults import ts

LIGHT_WORKERS_TRIED = (1, 2, 3)
BURSTS = (50, 200, 1000)
SCALING_BURST = 200
TASKS_PER_RUN = 100
WARM_UP_TASKS = 24
# Generous: the 1000-task burst takes about 3 minutes on an idle 2-core machine.
DEADLINE_S = 1200


def runs_for(tasks: int) -> int:
    """How many concurrent runs hold a burst: about TASKS_PER_RUN task instances each, at least 2."""
    return max(2, round(tasks / TASKS_PER_RUN))


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class Sampler(threading.Thread):
    """Peak CPU and PSS of the stack and the scheduler heartbeat's age while a burst runs."""

    def __init__(self, cfg: StackConfig, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.cfg = cfg
        self.interval = interval
        self.stopping = threading.Event()
        self.peak_cpu_pct = 0.0
        self.peak_pss_mb = 0.0
        self.heartbeat_max_age_s = 0.0
        self.health_unanswered = 0

    def run(self) -> None:
        me = psutil.Process()
        cores = psutil.cpu_count() or 1
        busy0, total0 = _busy_jiffies()
        own0 = sum(me.cpu_times()[:2])
        tick = 0
        while not self.stopping.wait(self.interval):
            busy1, total1 = _busy_jiffies()
            own1 = sum(me.cpu_times()[:2])
            if total1 > total0:
                machine = (busy1 - busy0) / (total1 - total0) * cores * 100
                own = (own1 - own0) / self.interval * 100
                self.peak_cpu_pct = max(self.peak_cpu_pct, machine - own)
            busy0, total0, own0 = busy1, total1, own1
            if tick % 2 == 0:
                self.peak_pss_mb = max(self.peak_pss_mb, pss_mb(stack_processes(self.cfg)))
            age = self._heartbeat_age()
            if age is None:
                self.health_unanswered += 1
            else:
                self.heartbeat_max_age_s = max(self.heartbeat_max_age_s, age)
            tick += 1

    def _heartbeat_age(self) -> float | None:
        """Seconds since the scheduler's last heartbeat; None when the health check gave no time
        (counted apart, never taken for a fresh heartbeat)."""
        try:
            resp = requests.get(f"{self.cfg.api_url}/api/v2/monitor/health", timeout=5)
            resp.raise_for_status()
            latest = ts(resp.json()["scheduler"]["latest_scheduler_heartbeat"])
        except (requests.RequestException, KeyError, ValueError, TypeError):
            return None
        return None if latest is None else max(0.0, time.time() - latest)


def _tree_cpu_s(root: psutil.Process) -> float:
    """CPU seconds of a process tree: every live member's own time and that of the children it
    reaped (a worker's pool process reaps its task processes)."""
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def cpu_by_program(cfg: StackConfig) -> dict[str, float]:
    """CPU seconds so far of each supervisord program's process tree, of supervisord itself (it
    carries every program's output to its log file) and of the whole machine (`machine`)."""
    busy, _ = _busy_jiffies()
    own = psutil.Process().cpu_times()
    out = {"machine": busy / os.sysconf("SC_CLK_TCK"), "benchmark": own.user + own.system}
    sup_pid = health.pid_alive(cfg.run_dir / "supervisord.pid")
    if sup_pid:
        times = psutil.Process(sup_pid).cpu_times()
        out["supervisord"] = times.user + times.system
    for info in health.supervisor(cfg).supervisor.getAllProcessInfo():
        if info["pid"]:
            try:
                out[info["name"]] = _tree_cpu_s(psutil.Process(info["pid"]))
            except psutil.Error:
                continue
    return out


def measure(cfg: StackConfig, api: Airflow, tasks: int) -> dict[str, Any]:
    """One burst of `tasks` task instances with the sampler and the CPU breakdown."""
    runs = runs_for(tasks)
    sampler = Sampler(cfg)
    cpu_before = cpu_by_program(cfg)
    sampler.start()
    burst = burst_load.run_burst(cfg, api, tasks, runs, DEADLINE_S)
    sampler.stopping.set()
    sampler.join()
    cpu_after = cpu_by_program(cfg)
    machine = cpu_after.pop("machine") - cpu_before.pop("machine")
    used = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    # What no stack process (nor this benchmark) was charged with: the kernel's own threads,
    # processes that ended without a stack process reaping them.
    used["unattributed"] = machine - sum(used.values())
    used = {name: round(s, 1) for name, s in sorted(used.items(), key=lambda kv: -kv[1]) if s >= 0.1}
    result = burst.summary()
    result.update({
        "heavy_on": sorted(burst.workers.get(burst_load.HEAVY_TASK, set())),
        "peak_cpu_pct": round(sampler.peak_cpu_pct, 1),
        "peak_pss_mb": round(sampler.peak_pss_mb),
        "scheduler_heartbeat_max_age_s": round(sampler.heartbeat_max_age_s, 1),
        "health_checks_unanswered": sampler.health_unanswered,
        "cpu_s_by_component": used,
        "cpu_s_per_task": {name: round(s / tasks, 3) for name, s in used.items()},
    })
    say(f"{tasks} tasks in {runs} runs: {json.dumps(result)}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workers", default=",".join(map(str, LIGHT_WORKERS_TRIED)),
                        help="light worker counts to try (the first also runs --bursts)")
    parser.add_argument("--bursts", default=",".join(map(str, BURSTS)), help="burst sizes on the first stack")
    parser.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                        help="a setting of the benchmark stacks' env file (to try a tuning), repeatable")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    counts = [int(v) for v in args.workers.split(",")]
    sizes = [int(v) for v in args.bursts.split(",")]
    bursts: dict[str, dict] = {}
    by_workers: dict[str, dict] = {}
    for count in counts:
        with bench_stack(f"load{count}", {**settings, "LIGHT_WORKERS": str(count)}) as (_, cfg, up_s):
            say(f"stack with {count} light worker(s) up in {up_s:.0f} s; load {os.getloadavg()}")
            api = Airflow(cfg, cfg.env["AIRFLOW_ADMIN_USER"], cfg.env["AIRFLOW_ADMIN_PASSWORD"])
            api.wait_dag(burst_load.DAG_ID)
            burst_load.run_burst(cfg, api, WARM_UP_TASKS, 2, DEADLINE_S)
            for tasks in (sizes if count == counts[0] else [SCALING_BURST]):
                result = measure(cfg, api, tasks)
                if count == counts[0]:
                    bursts[str(tasks)] = result
                if tasks == SCALING_BURST:
                    by_workers[str(count)] = result
    base = by_workers.get("1", {}).get("tasks_per_s")
    scaling: dict[str, Any] = {"burst_tasks": SCALING_BURST,
                               "tasks_per_s": {n: r["tasks_per_s"] for n, r in by_workers.items()}}
    for n, r in by_workers.items():
        if n != "1" and base and r["tasks_per_s"]:
            scaling[n] = round(r["tasks_per_s"] / base, 2)
    print(json.dumps({"bursts": bursts, "light_workers": {n: r for n, r in by_workers.items()},
                      "scaling": scaling, "cores": psutil.cpu_count(), "settings": settings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Latency and footprint of the native stack; prints one JSON object.

Restarts the stack (the one of `.env`, or $STACK_ENV_FILE) with the benchmark DAG bundle
(benchmarks/dags) enabled and measures:
  up_s            `up` until every component is healthy
  chain7_wall_s   median over 5 runs of bench_chain7 (7 x 0.1 s tasks, mixed queues), from the run's
                  queued_at to its end_date (after one unmeasured warm-up run: cold worker imports)
  gap_p50_s/max_s median / max of (next task start - previous task end) over those runs
  idle_cpu_pct    CPU of all stack processes while idle, percent of one core (30 s window)
  idle_pss_mb     their summed proportional set size (PSS) while idle
Afterwards the stack is left as found: restarted without the benchmark bundle if it was running,
stopped otherwise. Progress goes to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

from benchstack import process_name, pss_mb
from stack.api import Airflow
from stack.config import StackConfig, load
from stack.ctl import cmd_down, cmd_up, is_running, stack_processes

DAG_ID = "bench_chain7"
RUNS = 5
# Once a second, like the UI's auto-refresh: the wall time comes from the run's own timestamps,
# and polling faster would load the api-server, which serves the tasks' Execution API too.
POLL_S = 1.0
IDLE_SETTLE_S = 20
IDLE_WINDOW_S = 30


def _ts(value: str) -> float:
    """API timestamp -> epoch seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def chain_run(api: Airflow) -> tuple[float, list[float], str]:
    """Trigger one chain run; return (wall seconds, gaps between consecutive tasks, breakdown)."""
    run = api.trigger(DAG_ID)
    run_id = run["dag_run_id"]
    deadline = time.monotonic() + 120
    while True:
        run = api.run(DAG_ID, run_id)
        if run["state"] in ("success", "failed"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{DAG_ID} {run_id} not finished after 120 s")
        time.sleep(POLL_S)
    if run["state"] != "success":
        raise RuntimeError(f"{DAG_ID} {run_id} failed")
    tis = sorted(api.task_instances(DAG_ID, run_id), key=lambda t: int(t["task_id"][1:]))
    gaps = [_ts(b["start_date"]) - _ts(a["end_date"]) for a, b in zip(tis, tis[1:])]
    first = _ts(tis[0]["start_date"]) - _ts(run["queued_at"])
    last = _ts(run["end_date"]) - _ts(tis[-1]["end_date"])
    tasks = sum(_ts(t["end_date"]) - _ts(t["start_date"]) for t in tis)
    breakdown = f"queued->first start {first:.2f} s, tasks {tasks:.2f} s, last end->run end {last:.2f} s"
    return _ts(run["end_date"]) - _ts(run["queued_at"]), gaps, breakdown


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids` (and their reaped children) in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / tick


def idle_footprint(cfg: StackConfig) -> tuple[float, float]:
    """(CPU percent of one core, PSS MiB) of every stack process over an idle window; the largest
    consumers go to stderr."""
    time.sleep(IDLE_SETTLE_S)
    pids = stack_processes(cfg)
    before = {pid: cpu_seconds([pid]) for pid in pids}
    t0 = time.monotonic()
    time.sleep(IDLE_WINDOW_S)
    elapsed = time.monotonic() - t0
    live = [p for p in stack_processes(cfg) if p in before]
    per_pid = {pid: (cpu_seconds([pid]) - before[pid]) / elapsed * 100 for pid in live}
    pss = {pid: pss_mb([pid]) for pid in stack_processes(cfg)}
    shown = sorted(per_pid, key=per_pid.get, reverse=True)[:8]
    shown += [pid for pid in sorted(pss, key=pss.get, reverse=True) if pid not in shown and pss[pid] >= 50]
    for pid in shown:
        print(f"idle: {per_pid.get(pid, 0):5.2f} % CPU {pss[pid]:6.1f} MiB  {process_name(pid)}",
              file=sys.stderr)
    return sum(per_pid.values()), sum(pss.values())


def main() -> int:
    """Run the benchmark and print the JSON object."""
    cfg = load(bench_bundle=True)
    was_running = is_running(cfg) is not None
    with contextlib.redirect_stdout(sys.stderr):
        if was_running:
            cmd_down(cfg)
        up_s = cmd_up(cfg)
    try:
        api = Airflow(cfg, cfg.env["AIRFLOW_ADMIN_USER"], cfg.env["AIRFLOW_ADMIN_PASSWORD"])
        api.wait_dag(DAG_ID)
        chain_run(api)  # warm-up
        walls, gaps = [], []
        for i in range(RUNS):
            wall, run_gaps, breakdown = chain_run(api)
            walls.append(wall)
            gaps += run_gaps
            print(f"run {i + 1}: {wall:.2f} s, gaps {[round(g, 2) for g in run_gaps]}; {breakdown}",
                  file=sys.stderr)
        cpu, pss = idle_footprint(cfg)
        result = {
            "chain7_wall_s": round(statistics.median(walls), 2),
            "gap_p50_s": round(statistics.median(gaps), 3),
            "gap_max_s": round(max(gaps), 3),
            "idle_cpu_pct": round(cpu, 1),
            "idle_pss_mb": round(pss, 0),
            "up_s": round(up_s, 1),
        }
    finally:
        with contextlib.redirect_stdout(sys.stderr):
            cmd_down(cfg)
            if was_running:
                cmd_up(load())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The year on the real native stack: 2013-W01..W52 on a compressed clock; prints ONE JSON object.

It brings up a stack of its own (benchmarks/benchstack.py, ports + MLOPS_BENCH_PORT_OFFSET, the
prediction service on its own port) and, for each replayed week:

1. when a champion exists, waits until the prediction service serves it and sends it the week's
   flights (`mlops serve-replay --week`), before the week's batch exists;
2. lands the week's batch (`mlops data replay`);
3. triggers, through the official Airflow client, `ml_pipeline_dag` (from FIRST_PIPELINE_WEEK:
   the first week with a week to hold out), whose check_drift triggers `model_retraining_dag`
   when a signal fires, and `data_validation_dag` once per replayed day. The clock is compressed:
   a replayed week is the wall-clock time it takes, cut into seven days (`day_slices`); each
   day's run gets its slice as data interval (logical date = the slice's start): the first day's
   finds the batch that landed in it (by its arrival time, as the daily schedule does), the six
   others find no arrival and end skipped, as a day without a batch does. The first day's run
   starts with the pipeline; the six others are triggered at the end of the week, when their
   slices are over, and run beside the next week's requests to the service;
4. once the week's runs ended, triggers `served_monitoring_dag` for the week when the service
   answered flights of it (the benchmark stack runs no schedule, so the asset event does not
   start it), also beside the next week's requests;
5. every MAINTENANCE_EVERY weeks, `maintenance_dag` with every retention of `.env` expressed in
   replayed time: R replayed days become R x (measured wall seconds per replayed day) real
   seconds, passed in the run's conf, so task logs, reports, Airflow's metadata rows
   (`airflow db clean`), registered model versions (no alias, not among the
   MLFLOW_KEEP_MODEL_VERSIONS newest) and then MLflow runs older than their retention are pruned
   during the soak.
   Prometheus keeps its own retention (PROMETHEUS_RETENTION_TIME): its 2-hour head block is not
   compacted within a soak, so its TSDB only grows here; its bound is PROMETHEUS_RETENTION_SIZE.
   After each maintenance run the mlflow-gc program gets SIGUSR1 (a pass now; the bench stack's
   MLFLOW_GC_RETENTION_DAYS is 0), so what the run soft-deleted leaves the disk, as its daily
   schedule would do;
6. the prediction service runs on the replayed calendar (its TEST/BENCH-only replay clock,
   mlops_serving.clock): before a week's flights are sent, its clock file is set to the week's
   Monday, so the prediction log's daily partitions are those of 2013 and the service's own pruning
   drops those older than PREDICTIONS_RETENTION_DAYS replayed days (`prediction_log` in the JSON).

A sampler thread records, every SAMPLE_S seconds, each supervisord program's memory (PSS summed
over its process tree, /proc/<pid>/smaps_rollup) and CPU, the number of Airflow task-supervisor
processes and of zombie processes in the stack; every DISK_EVERY samples the disk used by task
logs, component logs, reports, each database (pg_database_size), MLflow artifacts and the
Prometheus TSDB. Every alert that fired comes from Prometheus (`ALERTS{alertstate="firing"}` over
the replay): the ML alerts the data can justify (drift, the champion's AUC floor, the served AUC
floor) are `justified`, any other is not.

JSON keys: `weeks`, `runs` (by DAG and state), `failed` (runs), `lost` (task instances of ended
runs left in no final state), `stuck` (runs not ended within STUCK_AFTER_S of their week), `wall_s`,
`pss_mb` (per component: first-quarter, after-warm-up and last-quarter medians, `growth` = last
quarter / after warm-up, i.e. weeks 40-52 / weeks 5-13 of 52, `growth_basis` says it), `disk_mb` (per
kind: start, end), `task_latency_s` (p50/p95 of queue wait and duration, first and last quarter;
from the task_instance table), `alerts_fired` (name, count, justified), `zombies_max`; plus
`task_supervisors_max`, `cpu_pct` (per component, mean over the replay), `seconds_per_week`,
`stack_up_s`, `retention` (what the maintenance runs were given), `prediction_log` (its partitions
per replayed week, the retention, the oldest kept at the end), `pss_parts_mb` (the same medians of
each component's PSS split into anon, file and shmem: a leak grows anon, a cache filling to its
configured size grows shmem or file; and `root_process`, the program's own process without its
children, e.g. a Celery worker's main process without its pool), `prometheus_head_series` (start, end, max). Writes `soak.png`
(memory per component and disk per kind over the replay), `soak.json` and `soak_samples.json` (every
sample: seconds, week index, PSS per component and of its root process, processes per component,
disk per kind) into --out.

Run: MLOPS_BENCH_PORT_OFFSET=<n> .venv/bin/python benchmarks/soak.py [--weeks 52] [--out benchmarks/out]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchstack import REPO, bench_stack, say  # noqa: E402

YEAR_WEEKS = 52
WARMUP_WEEKS = 4                 # left out of `growth`'s baseline (see warm_bounds)
FIRST_PIPELINE_WEEK = 2          # ml_pipeline_dag needs a training week and a holdout week
MAINTENANCE_EVERY = 4            # replayed weeks between maintenance_dag runs
SAMPLE_S = 10.0
DISK_EVERY = 3                   # disk every DISK_EVERY samples
STUCK_AFTER_S = 1800.0           # a week's runs not ended by then are stuck
SERVE_WAIT_S = 60.0
VALIDATION_DAG = "data_validation_dag"
PIPELINE_DAG = "ml_pipeline_dag"
MONITOR_DAG = "served_monitoring_dag"
MAINTENANCE_DAG = "maintenance_dag"
DAGS = (VALIDATION_DAG, PIPELINE_DAG, "model_retraining_dag", MONITOR_DAG, MAINTENANCE_DAG)
# The ML alerts the data itself can justify (observability/prometheus/rules): drift, the
# champion's AUC floor, the served AUC floor. Any other alert on a healthy stack is a false alarm.
JUSTIFIED_ALERTS = frozenset({"MlDriftDetected", "MlChampionAucBelowFloor", "MlServedAucBelowFloor"})
# Retentions of .env (replayed days) and their defaults; passed compressed to maintenance_dag.
RETENTIONS = {"LOG_RETENTION_DAYS": ("log_retention_days", 30.0),
              "REPORT_RETENTION_DAYS": ("report_retention_days", 90.0),
              "AIRFLOW_DB_RETENTION_DAYS": ("db_retention_days", 90.0),
              "MLFLOW_RUN_RETENTION_DAYS": ("mlflow_run_retention_days", 180.0),
              "MLFLOW_MODEL_VERSION_RETENTION_DAYS": ("mlflow_model_version_retention_days", 180.0)}
FINAL_TI_STATES = ("success", "skipped", "failed", "upstream_failed", "removed")
TERMINAL_RUN_STATES = ("success", "failed")


# ---------------------------------------------------------------- pure functions (tested)

def week_id(index: int) -> str:
    """2013 ISO week of a 0-based index: 0 -> 2013-W01."""
    return f"2013-W{index + 1:02d}"


def replayed_monday(index: int) -> datetime:
    """The replayed calendar: Monday 00:00 UTC of the 2013 ISO week of a 0-based index."""
    return datetime.strptime(f"{week_id(index)}-1", "%G-W%V-%u").replace(tzinfo=timezone.utc)


def day_slices(start: datetime, landed: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The compressed clock of one replayed week: its seven days as slices of wall-clock time.
    The first day is [start, landed) (the batch landed in it); the six others split [landed, end)
    evenly, so the slices of consecutive weeks tile the replay without a gap."""
    step = (end - landed) / 6
    return [(start, landed)] + [(landed + step * i, landed + step * (i + 1)) for i in range(6)]


def quarter_bounds(weeks: int) -> tuple[int, int]:
    """(end of the first quarter, start of the last quarter) as week indexes: the first quarter is
    indexes < first_end, the last >= last_start (at least one week each)."""
    q = max(1, weeks // 4)
    return q, max(0, weeks - q)


def warm_bounds(weeks: int) -> tuple[int, int]:
    """The baseline of `growth` as week indexes [start, end): the first quarter after the warm-up
    (WARMUP_WEEKS: pool processes importing their libraries, caches and buffers filling), i.e.
    weeks 5-13 of 52; the whole first quarter when the run is too short for a warm-up."""
    first_end, _ = quarter_bounds(weeks)
    return (WARMUP_WEEKS if first_end > WARMUP_WEEKS else 0), first_end


def quarter_medians(samples: list[tuple[int, float]], weeks: int) -> dict[str, float | None]:
    """Median of the values sampled in the first quarter, in the first quarter after the warm-up
    (`warm_bounds`) and in the last quarter of the replay (samples are (week index, value)), and
    `growth` = last quarter / after warm-up."""
    first_end, last_start = quarter_bounds(weeks)
    warm_start, warm_end = warm_bounds(weeks)

    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    f = median([v for w, v in samples if w < first_end])
    warm = median([v for w, v in samples if warm_start <= w < warm_end])
    la = median([v for w, v in samples if w >= last_start])
    growth = round(la / warm, 3) if warm and la is not None else None
    return {"first_quarter": None if f is None else round(f, 1),
            "after_warmup": None if warm is None else round(warm, 1),
            "last_quarter": None if la is None else round(la, 1), "growth": growth}


def growth_basis(weeks: int) -> str:
    """What `growth` divides, in words (the JSON's `growth_basis`)."""
    start, end = warm_bounds(weeks)
    _, last_start = quarter_bounds(weeks)
    return (f"median of weeks {last_start + 1}-{weeks} / median of weeks {start + 1}-{end} "
            f"({'after a ' + str(start) + '-week warm-up' if start else 'no warm-up left out: run too short'})")


def percentile(values: list[float], pct: float) -> float | None:
    """The `pct` percentile (nearest rank) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return round(ordered[rank], 3)


def quarter_latency(rows: list[tuple[int, float, float]], weeks: int) -> dict[str, dict[str, float | None]]:
    """p50/p95 of queue wait and duration of the task instances of the first and last quarter
    (rows are (week index, queue wait s, duration s))."""
    first_end, last_start = quarter_bounds(weeks)
    out: dict[str, dict[str, float | None]] = {}
    for name, pick in (("first_quarter", lambda w: w < first_end), ("last_quarter", lambda w: w >= last_start)):
        waits = [q for w, q, _ in rows if pick(w)]
        durations = [d for w, _, d in rows if pick(w)]
        out[name] = {"tasks": len(waits), "queue_wait_p50": percentile(waits, 50),
                     "queue_wait_p95": percentile(waits, 95), "duration_p50": percentile(durations, 50),
                     "duration_p95": percentile(durations, 95)}
    return out


def firing_episodes(values: list[float]) -> int:
    """How many times a series went to firing (1) from not firing (absent or 0), given its
    values at consecutive steps (absent steps as 0)."""
    episodes, before = 0, 0.0
    for value in values:
        if value and not before:
            episodes += 1
        before = value
    return episodes


def classify_alerts(fired: dict[str, int]) -> list[dict[str, Any]]:
    """`alerts_fired`: name, count and whether the data justifies it, by name."""
    return [{"name": name, "count": count, "justified": name in JUSTIFIED_ALERTS}
            for name, count in sorted(fired.items())]


def compressed_retention(days: float, seconds_per_day: float) -> float:
    """A retention of `days` replayed days as real days, at `seconds_per_day` wall seconds per
    replayed day."""
    return days * seconds_per_day / 86400.0


PREDICTIONS_RETENTION_DEFAULT = 90


def prediction_log_summary(weeks: list[dict[str, Any]], env: dict[str, str]) -> dict[str, Any]:
    """`prediction_log`: the retention (replayed days), the partitions at the end and at most, the
    oldest kept at the end (YYYYMMDD of the replayed calendar), and the count per replayed week."""
    return {"retention_days": int(env.get("PREDICTIONS_RETENTION_DAYS") or PREDICTIONS_RETENTION_DEFAULT),
            "partitions_end": weeks[-1]["count"] if weeks else None,
            "partitions_max": max((w["count"] for w in weeks), default=None),
            "oldest_end": weeks[-1]["oldest"] if weeks else None,
            "by_week": {w["week"]: w["count"] for w in weeks}}


def summarise(*, weeks: int, runs: dict[str, dict[str, int]], failed: list[str], lost: int, stuck: list[str],
              wall_s: float, pss: dict[str, list[tuple[int, float]]], disk: dict[str, list[float]],
              latency_rows: list[tuple[int, float, float]], fired: dict[str, int], zombies_max: int,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one JSON object of the soak (the issue's keys first, then `extra`)."""
    return {
        "weeks": weeks,
        "runs": {dag: dict(sorted(states.items())) for dag, states in sorted(runs.items())},
        "failed": failed,
        "lost": lost,
        "stuck": stuck,
        "wall_s": round(wall_s, 1),
        "pss_mb": {name: quarter_medians(samples, weeks) for name, samples in sorted(pss.items())},
        "disk_mb": {kind: {"start": round(values[0], 1), "end": round(values[-1], 1)}
                    for kind, values in sorted(disk.items()) if values},
        "task_latency_s": quarter_latency(latency_rows, weeks),
        "alerts_fired": classify_alerts(fired),
        "zombies_max": zombies_max,
        "growth_basis": growth_basis(weeks),
        **(extra or {}),
    }


# ---------------------------------------------------------------- sampling the stack

def _tree(pid: int) -> list[Any]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


PSS_PARTS = {"Pss_Anon:": "anon", "Pss_File:": "file", "Pss_Shmem:": "shmem"}


def pss_kb(rollup: str) -> dict[str, int]:
    """PSS (kB) of one /proc/<pid>/smaps_rollup text: `total` and its parts `anon` (the heap: where a
    leak shows), `file` (mapped files the kernel may drop) and `shmem` (shared memory, e.g.
    PostgreSQL's shared_buffers as they are first touched); a missing field counts 0."""
    out = {"total": 0, **{part: 0 for part in PSS_PARTS.values()}}
    for line in rollup.splitlines():
        key, _, rest = line.partition(" ")
        name = "total" if key == "Pss:" else PSS_PARTS.get(key)
        if name is not None:
            out[name] = int(rest.split()[0])
    return out


def _pss_kb(pid: int) -> dict[str, int]:
    try:
        return pss_kb(Path(f"/proc/{pid}/smaps_rollup").read_text())
    except (OSError, ValueError, IndexError):
        return pss_kb("")


def _du_mb(path: Path) -> float | None:
    """Disk used under `path` (MiB; 0 when absent); None when `du` gave no total three times (files
    vanishing under it): never a 0 that did not happen."""
    from tenacity import RetryError, retry, retry_if_result, stop_after_attempt

    if not path.exists():
        return 0.0

    @retry(retry=retry_if_result(lambda mb: mb is None), stop=stop_after_attempt(3))
    def total() -> float | None:
        proc = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True)
        try:
            return int(proc.stdout.split()[0]) / 1024
        except (IndexError, ValueError):
            return None

    try:
        return total()
    except RetryError:
        return None


@dataclass
class Samples:
    """What the sampler recorded: t (s since start), week index, and the values."""

    t: list[float] = field(default_factory=list)
    week: list[int] = field(default_factory=list)
    pss: dict[str, list[tuple[float, int, float]]] = field(default_factory=lambda: defaultdict(list))
    pss_parts: dict[str, dict[str, list[tuple[int, float]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    processes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    cpu_pct: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    supervisors: list[int] = field(default_factory=list)
    zombies: list[int] = field(default_factory=list)
    disk: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))


class Sampler(threading.Thread):
    """Samples memory, CPU, task supervisors and zombies per supervisord program, and disk."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(daemon=True, name="soak-sampler")
        self.cfg = cfg
        self.week_index = 0
        self.samples = Samples()
        self.stopping = threading.Event()
        self.started = time.monotonic()
        self._cpu_before: dict[str, tuple[float, float]] = {}
        self.errors: Counter[str] = Counter()

    def programs(self) -> dict[str, int]:
        """supervisord program -> pid (running ones)."""
        from stack import health

        return {i["name"]: i["pid"] for i in health.supervisor(self.cfg).supervisor.getAllProcessInfo() if i["pid"]}

    def sample(self) -> None:
        """One sample (and the disk every DISK_EVERY samples)."""
        import psutil

        s = self.samples
        now = time.monotonic()
        programs = self.programs()
        supervisors = zombies = 0
        s.t.append(now - self.started)
        s.week.append(self.week_index)
        for name, pid in programs.items():
            procs = _tree(pid)
            parts, root_kb = Counter(), 0
            for p in procs:
                kb = _pss_kb(p.pid)
                parts.update(kb)
                root_kb = kb["total"] if p.pid == pid else root_kb
            s.pss[name].append((now - self.started, self.week_index, parts["total"] / 1024))
            for part in PSS_PARTS.values():
                s.pss_parts[name][part].append((self.week_index, parts[part] / 1024))
            s.pss_parts[name]["root_process"].append((self.week_index, root_kb / 1024))
            s.processes[name].append(len(procs))
            cpu = 0.0
            for p in procs:
                try:
                    if p.status() == psutil.STATUS_ZOMBIE:
                        zombies += 1
                        continue
                    t = p.cpu_times()
                    cpu += t.user + t.system + t.children_user + t.children_system
                    # Airflow retitles a task's supervisor process `airflow supervisor: <id>`.
                    if (p.cmdline()[:1] or [""])[0].startswith("airflow supervisor"):
                        supervisors += 1
                except psutil.Error:
                    continue
            before = self._cpu_before.get(name)
            if before is not None and now > before[1]:
                s.cpu_pct[name].append(max(0.0, (cpu - before[0]) / (now - before[1]) * 100))
            self._cpu_before[name] = (cpu, now)
        s.supervisors.append(supervisors)
        s.zombies.append(zombies)
        if (len(s.t) - 1) % DISK_EVERY == 0:
            self.sample_disk(now)

    def sample_disk(self, now: float) -> None:
        s, cfg = self.samples, self.cfg
        sizes = {"logs": _du_mb(cfg.task_logs), "component_logs": _du_mb(cfg.logs),
                 "reports": _du_mb(Path(cfg.data_dir) / "reports"),
                 "mlflow_artifacts": _du_mb(cfg.home / "mlflow" / "artifacts"),
                 "prometheus": _du_mb(cfg.home / "prometheus" / "data")}
        databases = database_sizes_mb(cfg)
        sizes["databases"] = sum(databases.values())
        for name, mb in databases.items():
            sizes[f"database_{name}"] = mb
        for kind, mb in sizes.items():
            if mb is not None:
                s.disk[kind].append((now - self.started, mb))

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - a failed sample is counted, never fatal
                self.errors[type(exc).__name__] += 1
            self.stopping.wait(SAMPLE_S)

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.sample()  # the end state


def _pg(cfg: Any, dbname: str | None = None):  # noqa: ANN202
    import psycopg2

    e = cfg.env
    conn = psycopg2.connect(host="127.0.0.1", port=cfg.ports["POSTGRES_PORT"], user=e["POSTGRES_USER"],
                            password=e["POSTGRES_PASSWORD"], dbname=dbname or e["POSTGRES_DB"], connect_timeout=10)
    conn.autocommit = True
    return conn


def database_sizes_mb(cfg: Any) -> dict[str, float]:
    """pg_database_size of every database of the stack's cluster (MiB)."""
    conn = _pg(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname, pg_database_size(datname) FROM pg_database WHERE NOT datistemplate")
            return {name: size / 2**20 for name, size in cur.fetchall()}
    finally:
        conn.close()


def task_rows(cfg: Any, since: datetime) -> tuple[list[tuple[float, float]], int, int]:
    """(queue wait, duration) of the task instances of runs started since `since` that ran, the
    number of task instances of ended runs left in no final state (lost), and how many daily
    validation runs found and checked a batch (their validate_schema succeeded, not skipped)."""
    conn = _pg(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT EXTRACT(EPOCH FROM ti.start_date - ti.queued_dttm), EXTRACT(EPOCH FROM ti.end_date - ti.start_date) "
                "FROM task_instance ti JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
                "WHERE dr.run_after >= %s AND ti.queued_dttm IS NOT NULL AND ti.start_date IS NOT NULL "
                "AND ti.end_date IS NOT NULL", (since,))
            rows = [(float(q), float(d)) for q, d in cur.fetchall()]
            cur.execute(
                "SELECT count(*) FROM task_instance ti JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
                "WHERE dr.run_after >= %s AND dr.state IN %s AND (ti.state IS NULL OR ti.state NOT IN %s)",
                (since, TERMINAL_RUN_STATES, FINAL_TI_STATES))
            lost = int(cur.fetchone()[0])
            cur.execute(
                "SELECT count(*) FROM task_instance ti JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
                "WHERE dr.run_after >= %s AND ti.dag_id = %s AND ti.task_id = 'validate_schema' AND ti.state = 'success'",
                (since, VALIDATION_DAG))
            validated = int(cur.fetchone()[0])
    finally:
        conn.close()
    return rows, lost, validated


def prediction_partitions(cfg: Any) -> list[str]:
    """The prediction log's partitions (names end in their day, YYYYMMDD), oldest first."""
    conn = _pg(cfg, cfg.env["PREDICTIONS_DB"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'predictions'")
            return sorted(name for (name,) in cur.fetchall())
    finally:
        conn.close()


def gc_now(cfg: Any) -> None:
    """SIGUSR1 to the mlflow-gc program: one `mlflow gc` pass now (stack/mlflow_gc.py)."""
    from stack import health

    health.supervisor(cfg).supervisor.signalProcess("mlflow-gc", "USR1")


def head_series(cfg: Any, start: float, end: float) -> dict[str, float | None]:
    """Prometheus' own head series (prometheus_tsdb_head_series) at the start, at the end and at
    most over [start, end]: series churn (a label per run or version) is what would grow its memory
    for good; samples of stable series are cut into blocks every two hours of wall time."""
    import requests

    resp = requests.get(f"{cfg.prometheus_url}/api/v1/query_range", timeout=60, params={
        "query": "max(prometheus_tsdb_head_series)", "start": start, "end": end, "step": 15})
    resp.raise_for_status()
    result = resp.json()["data"]["result"]
    values = [float(v) for _, v in result[0]["values"]] if result else []
    return {"start": values[0] if values else None, "end": values[-1] if values else None,
            "max": max(values, default=None)}


def alerts_fired(cfg: Any, start: float, end: float) -> dict[str, int]:
    """Firing episodes per alert name over [start, end], from Prometheus' ALERTS series."""
    import requests

    step = 15
    resp = requests.get(f"{cfg.prometheus_url}/api/v1/query_range", timeout=60, params={
        "query": 'ALERTS{alertstate="firing"}', "start": start, "end": end + step, "step": step})
    resp.raise_for_status()
    fired: Counter[str] = Counter()
    grid = [round(start + k * step, 3) for k in range(int((end + step - start) // step) + 1)]
    for series in resp.json()["data"]["result"]:
        stamps = {round(float(t), 3): float(v) for t, v in series["values"]}
        fired[series["metric"]["alertname"]] += firing_episodes([stamps.get(t, 0.0) for t in grid])
    return dict(fired)


# ---------------------------------------------------------------- driving the stack

class Driver:
    """The official Airflow client as the stack's admin, and the soak's bookkeeping."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.runs: dict[tuple[str, str], str] = {}
        self.stuck: list[str] = []
        self._client()

    def _client(self) -> None:
        import airflow_client.client as airflow_client
        from airflow_client.client.api import dag_run_api

        from stack.api import Airflow

        token = Airflow(self.cfg, self.cfg.env["AIRFLOW_ADMIN_USER"], self.cfg.env["AIRFLOW_ADMIN_PASSWORD"]).session.headers[
            "Authorization"].split(" ", 1)[1]
        self.client = airflow_client.ApiClient(airflow_client.Configuration(host=self.cfg.api_url, access_token=token))
        self.dag_runs = dag_run_api.DagRunApi(self.client)

    def refresh(self) -> None:
        """A fresh token (once a week: tokens expire)."""
        self._client()

    def trigger(self, dag_id: str, conf: dict | None = None,
                interval: tuple[datetime, datetime] | None = None) -> str:
        """Trigger a run now (for a replayed day: logical date and data interval = its `interval`
        of the compressed clock); its id."""
        from airflow_client.client.models import TriggerDAGRunPostBody

        body = TriggerDAGRunPostBody(conf=conf or {}, logical_date=None)
        if interval is not None:
            body = TriggerDAGRunPostBody(conf=conf or {}, logical_date=interval[0], data_interval_start=interval[0],
                                         data_interval_end=interval[1])
        return self.dag_runs.trigger_dag_run(dag_id, body).dag_run_id

    def since(self, started: datetime) -> list[Any]:
        """Every run (all DAGs) whose run_after is at or after `started`."""
        return list(self.dag_runs.get_dag_runs("~", run_after_gte=started, limit=1000).dag_runs)

    def settle(self, started: datetime, timeout: float = STUCK_AFTER_S) -> None:
        """Wait until every run since `started` ended (tenacity); record their states; the ones
        still running at the timeout are stuck."""
        from tenacity import RetryError, retry, retry_if_result, stop_after_delay, wait_fixed

        @retry(retry=retry_if_result(lambda runs: any(r.state.value not in TERMINAL_RUN_STATES for r in runs)),
               stop=stop_after_delay(timeout), wait=wait_fixed(2))
        def ended() -> list[Any]:
            return self.since(started)

        try:
            runs = ended()
        except RetryError as exc:
            runs = exc.last_attempt.result()
        for r in runs:
            self.runs[(r.dag_id, r.dag_run_id)] = r.state.value
            if r.state.value not in TERMINAL_RUN_STATES and f"{r.dag_id}/{r.dag_run_id}" not in self.stuck:
                self.stuck.append(f"{r.dag_id}/{r.dag_run_id}")

    def by_dag(self) -> dict[str, dict[str, int]]:
        out: dict[str, Counter[str]] = defaultdict(Counter)
        for (dag, _), state in self.runs.items():
            out[dag][state] += 1
        return {dag: dict(c) for dag, c in out.items()}

    def failed(self) -> list[str]:
        return sorted(f"{d}/{r}" for (d, r), s in self.runs.items() if s == "failed")


def serve_week(cfg: Any, week: str) -> dict[str, Any] | None:
    """Send the week's flights to the prediction service when it serves the champion (None when
    there is no champion yet)."""
    from stack import demo_serving

    champion = demo_serving.champion_version(cfg)
    if champion is None:
        return None
    url = demo_serving.serving_url(cfg)
    if demo_serving.wait_serving(url, champion, timeout=SERVE_WAIT_S) is None:
        raise RuntimeError(f"the prediction service at {url} does not serve champion v{champion} "
                           f"after {SERVE_WAIT_S:.0f} s")
    env = {**os.environ, "MLOPS_DATA_DIR": str(cfg.data_dir), "MLOPS_SERVING_URL": url,
           "SERVING_TOKEN": cfg.env.get("SERVING_TOKEN", "")}
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "mlops"), "serve-replay", "--week", week], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mlops serve-replay --week {week} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def maintenance_conf(env: dict[str, str], seconds_per_day: float, now: datetime) -> dict[str, Any]:
    """maintenance_dag's conf: every retention of `env` (replayed days) as compressed real time."""
    conf: dict[str, Any] = {}
    for var, (key, default) in RETENTIONS.items():
        days = float(env.get(var) or default)
        real = compressed_retention(days, seconds_per_day)
        if key == "db_retention_days":
            conf["clean_before"] = (now - timedelta(days=real)).isoformat()
        else:
            conf[key] = real
    return conf


def replay(cfg: Any, weeks: int, sampler: Sampler, clock_file: Path) -> dict[str, Any]:
    """Replay `weeks` weeks; return what the JSON needs besides the samples."""
    from mlops_serving import clock

    from stack.demo import replay as land

    driver = Driver(cfg)
    latency: list[tuple[int, float, float]] = []
    lost = validated = 0
    served: dict[str, int] = {}
    maintenance: list[dict[str, Any]] = []
    partitions: list[dict[str, Any]] = []
    week_seconds: list[float] = []
    phases: dict[str, list[float]] = defaultdict(list)
    soak_started = datetime.now(timezone.utc)
    carried: datetime | None = None  # the previous week's later days and monitoring, to be waited for
    day_start: datetime | None = None  # where the week's first replayed day begins
    for index in range(weeks):
        week = week_id(index)
        sampler.week_index = index
        t0 = time.monotonic()
        started = datetime.now(timezone.utc)
        day_start = day_start or started
        driver.refresh()
        clock.write(clock_file, replayed_monday(index))
        sent = serve_week(cfg, week)
        if sent:
            served[week] = sent["rows"]
        t1 = time.monotonic()
        land(cfg, week, week)
        landed = datetime.now(timezone.utc)
        driver.trigger(VALIDATION_DAG, interval=(day_start, landed))
        if index + 1 >= FIRST_PIPELINE_WEEK:
            driver.trigger(PIPELINE_DAG)
        since = carried or started  # this week's runs and the previous week's monitoring
        driver.settle(since)
        t2 = time.monotonic()
        carried = None
        if (index + 1) % MAINTENANCE_EVERY == 0:
            spd = (sum(week_seconds) + time.monotonic() - t0) / (index + 1) / 7
            conf = maintenance_conf(cfg.env, spd, datetime.now(timezone.utc))
            driver.trigger(MAINTENANCE_DAG, conf)
            maintenance.append({"week": week, "seconds_per_replayed_day": round(spd, 2), "conf": conf})
            driver.settle(started)
            gc_now(cfg)
        t3 = time.monotonic()
        names = prediction_partitions(cfg)
        partitions.append({"week": week, "count": len(names), "oldest": names[0][-8:] if names else None})
        rows, week_lost, week_validated = task_rows(cfg, since)  # every run since `since` has ended
        validated += week_validated
        latency.extend((index, q, d) for q, d in rows)
        lost += week_lost
        # The week's six later days, and its monitoring: they run beside the next week's requests
        # to the service and are waited for with that week's runs.
        carried = datetime.now(timezone.utc)
        for interval in day_slices(day_start, landed, carried)[1:]:
            driver.trigger(VALIDATION_DAG, interval=interval)
        day_start = carried
        if sent:
            driver.trigger(MONITOR_DAG, {"week": week})
        if index == weeks - 1:  # the last week's later days and monitoring
            driver.settle(carried)
            rows, week_lost, week_validated = task_rows(cfg, carried)
            validated += week_validated
            latency.extend((index, q, d) for q, d in rows)
            lost += week_lost
        week_seconds.append(time.monotonic() - t0)
        for name, took in (("serve", t1 - t0), ("land_validate_pipeline", t2 - t1), ("maintenance", t3 - t2)):
            phases[name].append(round(took, 1))
        say(f"{week}: {week_seconds[-1]:.0f} s (serve {t1 - t0:.0f}, pipeline {t2 - t1:.0f}, maintenance "
            f"{t3 - t2:.0f}); runs {driver.by_dag()}; served {sent and sent['rows']}; batches validated {validated}; lost {lost}; "
            f"stuck {len(driver.stuck)}")
    return {"driver": driver, "latency": latency, "lost": lost, "served": served, "maintenance": maintenance,
            "week_seconds": week_seconds, "soak_started": soak_started, "phases": dict(phases),
            "validated": validated, "partitions": partitions}


def plot(samples: Samples, out: Path) -> Path:
    """soak.png: PSS per component and disk per kind over the replay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, disk) = plt.subplots(2, 1, figsize=(13, 9), sharex=True)
    mem.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # about 20 programs: one colour each
    minutes = [t / 60 for t in samples.t]
    for name, values in sorted(samples.pss.items()):
        mem.plot([t / 60 for t, _, _ in values], [v for _, _, v in values], label=name, linewidth=1)
    mem.set_ylabel("PSS (MiB, process tree)")
    mem.set_title("Soak: memory per supervisord program")
    mem.legend(fontsize=7, ncol=4, loc="upper left")
    mem.grid(alpha=0.3)
    for kind, values in sorted(samples.disk.items()):
        if not kind.startswith("database_"):
            disk.plot([t / 60 for t, _ in values], [v for _, v in values], label=kind)
    disk.set_ylabel("disk (MiB)")
    disk.set_xlabel("minutes into the replay")
    disk.set_title("disk per kind")
    disk.legend(fontsize=8)
    disk.grid(alpha=0.3)
    # Week boundaries on the top axis.
    marks = {}
    for t, w in zip(minutes, samples.week):
        marks.setdefault(w, t)
    for w, t in marks.items():
        if w % 4 == 0:
            mem.axvline(t, color="grey", alpha=0.2)
            mem.text(t, mem.get_ylim()[1], week_id(w)[-3:], fontsize=7, va="bottom")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "soak.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weeks", type=int, default=YEAR_WEEKS, help="weeks to replay from 2013-W01 (default 52)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out"), help="folder for soak.png and soak.json")
    args = ap.parse_args()
    if not 1 <= args.weeks <= YEAR_WEEKS:
        ap.error(f"--weeks must be 1..{YEAR_WEEKS}, got {args.weeks}")
    # benchstack's ports shifted by 500 (never a developer's SERVING_PORT 8000 nor a test stack's)
    serving_port = str(28000 + 500 + int(os.environ.get("MLOPS_BENCH_PORT_OFFSET", "0")))
    # The prediction service's replay clock (mlops_serving.clock), readable by its user.
    from mlops_serving import clock

    clock_dir = Path(tempfile.mkdtemp(prefix="mlops-soak-clock-", dir="/tmp"))
    clock_dir.chmod(0o755)
    clock_file = clock_dir / "replayed-now"
    clock.write(clock_file, replayed_monday(0))
    overrides = {"SERVING_PORT": serving_port, "MLOPS_TEST_REPLAY_CLOCK": str(clock_file),
                 # What maintenance_dag soft-deleted goes at the gc pass that follows it.
                 "MLFLOW_GC_RETENTION_DAYS": "0"}
    with bench_stack("soak", overrides) as (_, cfg, up_s):
        from stack.api import Airflow

        api = Airflow(cfg, cfg.env["AIRFLOW_ADMIN_USER"], cfg.env["AIRFLOW_ADMIN_PASSWORD"])
        for dag in DAGS:
            api.wait_dag(dag)
        sampler = Sampler(cfg)
        sampler.sample_disk(time.monotonic())  # the start state
        sampler.start()
        t_start, wall0 = time.time(), time.monotonic()
        done = replay(cfg, args.weeks, sampler, clock_file)
        wall = time.monotonic() - wall0
        sampler.stop()
        fired = alerts_fired(cfg, t_start, time.time())
        prometheus_series = head_series(cfg, t_start, time.time())
        driver: Driver = done["driver"]
        s = sampler.samples
        pss = {name: [(w, v) for _, w, v in values] for name, values in s.pss.items()}
        week_s = done["week_seconds"]
        result = summarise(
            weeks=args.weeks, runs=driver.by_dag(), failed=driver.failed(), lost=done["lost"], stuck=driver.stuck,
            wall_s=wall, pss=pss, disk={kind: [v for _, v in values] for kind, values in s.disk.items()}, latency_rows=done["latency"], fired=fired,
            zombies_max=max(s.zombies, default=0),
            extra={"task_supervisors_max": max(s.supervisors, default=0),
                   "task_supervisors_end": s.supervisors[-1] if s.supervisors else None,
                   "cpu_pct": {n: round(statistics.mean(v), 1) for n, v in sorted(s.cpu_pct.items()) if v},
                   "seconds_per_week": {"mean": round(statistics.mean(week_s), 1),
                                        "first": round(week_s[0], 1), "last": round(week_s[-1], 1),
                                        "max": round(max(week_s), 1)},
                   "week_phases_s": done["phases"],
                   "batches_validated_by_daily_runs": done["validated"],
                   "flights_served": sum(done["served"].values()),
                   "stack_up_s": round(up_s, 1),
                   "retention": done["maintenance"],
                   "prediction_log": prediction_log_summary(done["partitions"], cfg.env),
                   "pss_parts_mb": {name: {part: quarter_medians(values, args.weeks)
                                           for part, values in sorted(parts.items())}
                                    for name, parts in sorted(s.pss_parts.items())},
                   "prometheus_head_series": prometheus_series,
                   "samples": len(s.t), "sample_errors": dict(sampler.errors)})
    shutil.rmtree(clock_dir, ignore_errors=True)
    out = Path(args.out)
    result["plot"] = str(plot(s, out))
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "soak_samples.json").write_text(json.dumps({
        "t_s": s.t, "week_index": s.week,
        "pss_mb": {name: [round(v, 1) for _, _, v in values] for name, values in s.pss.items()},
        "root_process_pss_mb": {name: [round(v, 1) for _, v in parts["root_process"]]
                                for name, parts in s.pss_parts.items()},
        "processes": dict(s.processes),
        "disk_mb": {kind: [[round(t, 1), round(v, 1)] for t, v in values] for kind, values in s.disk.items()}}) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

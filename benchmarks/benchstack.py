"""What the stack benchmarks share: a throwaway native stack of their own, StatsD capture and the
CPU/PSS accounting of a stack's processes.

`bench_stack()` writes an env file under a fresh /tmp folder (its STACK_HOME and data folder
inside), with ports of its own (the test stack's ports + 500, shifted by MLOPS_BENCH_PORT_OFFSET,
default 0: never a developer's `make up` nor a test stack), brings it up with the benchmark
bundle (benchmarks/dags), and at the end brings it down and removes the folder
(MLOPS_BENCH_KEEP=1 keeps it). Progress goes to stderr: stdout is for the one JSON object.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from stack import config as stack_config
from stack import envfile
from stack.config import StackConfig
from stack.ctl import cmd_down, cmd_up, stack_processes

REPO = Path(__file__).resolve().parent.parent
PORT_OFFSET = int(os.environ.get("MLOPS_BENCH_PORT_OFFSET", "0"))
BENCH_PORTS = {name: str(port + 500 + PORT_OFFSET) for name, port in {
    "AIRFLOW_API_PORT": 28080,
    "FLOWER_PORT": 25555,
    "MLFLOW_PORT": 25000,
    "MLFLOW_METRICS_PORT": 25001,
    "PROMETHEUS_PORT": 29090,
    "GRAFANA_PORT": 23000,
    "STATSD_EXPORTER_PORT": 29102,
    "STATSD_PORT": 29125,
    "POSTGRES_PORT": 25432,
    "REDIS_PORT": 26379,
    "AIRFLOW_LOG_SERVER_PORT": 28793,
}.items()}


def say(message: str) -> None:
    """One progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_env(root: Path, overrides: dict[str, str] | None = None) -> Path:
    """The env file of a benchmark stack under `root` (secrets generated)."""
    env_file = root / "stack.env"
    envfile.ensure(env_file, stack_config.EXAMPLE_ENV, overrides={
        **BENCH_PORTS, "STACK_HOME": str(root / "stack"), "MLOPS_DATA_DIR": str(root / "data"),
        # Only the runs the benchmark triggers.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False", **(overrides or {})})
    return env_file


def set_env_value(env_file: Path, key: str, value: str) -> None:
    """Change one variable of an env file (the stack reads it at its next `up`)."""
    lines = env_file.read_text().splitlines()
    out = [f"{key}={value}" if line.split("=", 1)[0] == key else line for line in lines]
    if not any(line.split("=", 1)[0] == key for line in lines):
        out.append(f"{key}={value}")
    env_file.write_text("\n".join(out) + "\n")


def up(env_file: Path) -> tuple[StackConfig, float]:
    """Bring the stack of `env_file` up with the benchmark bundle; (config, seconds)."""
    cfg = stack_config.load(env_file, bench_bundle=True)
    with contextlib.redirect_stdout(sys.stderr):
        took = cmd_up(cfg)
    return cfg, took


def down(cfg: StackConfig) -> None:
    """Stop the stack (nothing of it is left)."""
    with contextlib.redirect_stdout(sys.stderr):
        cmd_down(cfg)


@contextlib.contextmanager
def bench_stack(prefix: str, overrides: dict[str, str] | None = None) -> Iterator[tuple[Path, StackConfig, float]]:
    """A fresh stack of its own for one benchmark: (env file, config, seconds `up` took)."""
    root = Path(tempfile.mkdtemp(prefix=f"mlops-bench-{prefix}-", dir="/tmp"))
    os.chmod(root, 0o755)
    env_file = write_env(root, overrides)
    cfg = stack_config.load(env_file, bench_bundle=True)
    say(f"benchmark stack in {root} (API {cfg.api_url})")
    try:
        cfg, took = up(env_file)
        yield env_file, cfg, took
    finally:
        down(cfg)
        if not os.environ.get("MLOPS_BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


class StatsdCapture:
    """Every StatsD line sent to 127.0.0.1:<port> (UDP), with its arrival time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.5)
        self.lines: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except socket.timeout:
                continue
            now = time.time()
            self.lines.extend((now, line) for line in data.decode(errors="replace").splitlines())

    def times(self, name: str, since: float = 0.0, until: float = float("inf")) -> list[float]:
        """Arrival times of the metric `name` within [since, until]."""
        return [t for t, line in list(self.lines) if since <= t <= until and line.split(":", 1)[0] == name]

    def close(self) -> None:
        """Stop receiving."""
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids` (and their reaped children) in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / tick


def pss_mb(pids: list[int]) -> float:
    """Summed PSS of `pids` in MiB."""
    total_kb = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def process_name(pid: int) -> str:
    """A short, readable name of a stack process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return str(pid)
    return " ".join(cmdline.replace(str(REPO) + "/", "").split()[:4])[:70]


class Sampler:
    """Samples the CPU (percent of one core) and summed PSS of a stack's processes in a background
    thread; `peak_cpu_pct` / `peak_pss_mb` are the highest samples. The CPU of a sample is the
    change of the stack's summed utime+stime+cutime+cstime: a process that ended was reaped by
    its parent (a stack process too), whose cutime took over its CPU, so short task processes
    that lived between two samples count as well."""

    def __init__(self, cfg: StackConfig, interval: float = 1.0) -> None:
        self.cfg = cfg
        self.interval = interval
        self.peak_cpu_pct = 0.0
        self.peak_pss_mb = 0.0
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        before, t0 = cpu_seconds(stack_processes(self.cfg)), time.monotonic()
        while not self._stop.wait(self.interval):
            pids = stack_processes(self.cfg)
            now, t1 = cpu_seconds(pids), time.monotonic()
            used = max(0.0, now - before)
            self.cpu_s += used
            self.peak_cpu_pct = max(self.peak_cpu_pct, used / (t1 - t0) * 100)
            self.peak_pss_mb = max(self.peak_pss_mb, pss_mb(pids))
            before, t0 = now, t1

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

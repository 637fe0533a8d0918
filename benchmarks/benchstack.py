"""What the stack benchmarks share: a throwaway native stack of their own and the PSS accounting
of a stack's processes.

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
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from stack import config as stack_config
from stack import envfile
from stack.config import StackConfig
from stack.ctl import cmd_down, cmd_up

REPO = Path(__file__).resolve().parent.parent
# How a benchmark imports: it runs as a script, so its folder is on sys.path (`import benchstack`);
# `stack` and `mlops` are installed in the venv; the test tooling it shares with the tests (the
# package testkit in tests/lib, pytest's `pythonpath`) comes through this one line.
sys.path.insert(0, str(REPO / "tests" / "lib"))
PORT_OFFSET = int(os.environ.get("MLOPS_BENCH_PORT_OFFSET", "0"))
BENCH_PORTS = {name: str(port + 500 + PORT_OFFSET) for name, port in {
    "AIRFLOW_API_PORT": 28080,
    "FLOWER_PORT": 25555,
    "MLFLOW_PORT": 25000,
    "MLFLOW_METRICS_PORT": 25001,
    "PROMETHEUS_PORT": 29090,
    "PUSHGATEWAY_PORT": 29091,
    "ALERTMANAGER_PORT": 29093,
    "GRAFANA_PORT": 23000,
    "STATSD_EXPORTER_PORT": 29102,
    "STATSD_PORT": 29125,
    "POSTGRES_PORT": 25432,
    "REDIS_PORT": 26379,
    "AIRFLOW_LOG_SERVER_PORT": 28793,
    "POSTGRES_EXPORTER_PORT": 29187,
    "REDIS_EXPORTER_PORT": 29121,
    "PROCESS_EXPORTER_PORT": 29256,
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

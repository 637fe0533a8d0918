"""Recovery from faults on the native stack; prints one JSON object keyed by fault.

Brings up its own stack (own folder under /tmp, ports shifted by --port-offset) listening on a veth
address of a second "host" (tests/lib/testkit/secondhost.py: a network namespace with its own address and host
name) that runs a heavy worker of its own (stack/workerhost.py). After a first pipeline run (the
champion), it injects each fault once while a real run is in flight and waits for the run's end:

  worker_kill        SIGKILL of the main host's heavy worker tree while `train` runs
  scheduler_kill     SIGKILL of the scheduler tree while `train` runs
  redis_restart      Redis stopped for 5 s and started, while a retrain_model runs and others are queued
  postgres_restart   PostgreSQL restarted while `train` runs
  apiserver_restart  the api-server restarted while `train` runs
  mlflow_outage      the MLflow server down for 60 s from a moment `train` runs
  remote_worker_kill the second host dies (every process of it SIGKILLed) while `train` runs there

Each entry: `detected_s` (fault to the first task try that started after it: the retry of a killed
task, or the first task the stack started once over the fault), `success_s` (fault to the run's
end), `state` (the run's final state) and `new_versions` (model versions registered by the run).
Targets: detected_s <= 60 for every fault, new_versions <= 1 per training. Progress on stderr.

    python benchmarks/faults.py [--port-offset 38000] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchstack import REPO  # first: it puts testkit (tests/lib) on sys.path
from stack import config as stack_config
from stack import envfile, workerhost
from stack.api import Airflow
from stack.ctl import cmd_down, cmd_up
from testkit import faults, secondhost

PIPELINE, RETRAIN = "ml_pipeline_dag", "model_retraining_dag"
FIRST_WEEKS = "2013-W03"
NO_DRIFT = {"mlops_drift_share": "2", "mlops_auc_drop": "2", "mlops_label_shift": "2"}
MLFLOW_OUTAGE_S = 60
REDIS_DOWN_S = 5
HEAVY_MAIN, HEAVY_REMOTE = "airflow:worker-heavy1", "airflow:worker-heavy2"
PORT_VARS = stack_config.PORT_VARS


def say(msg: str) -> None:
    print(f"[faults] {msg}", file=sys.stderr, flush=True)


class Bench:
    """The benchmark's stack, its second host and the clients."""

    def __init__(self, root: Path, offset: int) -> None:
        self.root, self.host = root, secondhost.for_offset(offset)
        example = envfile.parse(stack_config.EXAMPLE_ENV)
        self.env_file = root / "stack.env"
        envfile.ensure(self.env_file, stack_config.EXAMPLE_ENV, overrides={
            **{var: str(int(example[var]) + offset) for var in PORT_VARS},
            "STACK_HOME": str(root / "stack"), "MLOPS_DATA_DIR": str(root / "data"),
            "BIND_ADDRESS": self.host.main_address, "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"})
        self.cfg = stack_config.load(self.env_file)
        self.host_cfg: stack_config.StackConfig | None = None
        self.api: Airflow | None = None
        self.week = 3

    def up(self) -> None:
        secondhost.create(self.host)
        say(f"stack up on {self.host.main_address} ({self.root})")
        cmd_up(self.cfg)
        self.api = Airflow(self.cfg, self.cfg.env["AIRFLOW_ADMIN_USER"], self.cfg.env["AIRFLOW_ADMIN_PASSWORD"])
        for dag_id in (PIPELINE, RETRAIN):
            self.api.wait_dag(dag_id)
        host_env = self.root / "host2.env"
        host_env.write_text(workerhost.export_env(self.cfg, self.host.address, self.root / "host2"))
        host_env.chmod(0o600)
        self.host_cfg = workerhost.load_worker_host(host_env)
        self.host_up()

    def host_up(self) -> None:
        proc = subprocess.run(self.host.command([sys.executable, "-m", "stack.workerhost", "--env-file",
                                                 str(self.host_cfg.env_file), "up"]),
                              cwd=REPO, capture_output=True, text=True, timeout=400)
        if proc.returncode != 0:
            raise RuntimeError(f"worker host up failed:\n{proc.stdout}\n{proc.stderr}")

    def down(self) -> None:
        if self.host_cfg is not None:
            workerhost.cmd_down(self.host_cfg)
        cmd_down(self.cfg)
        secondhost.remove(self.host)

    def variables(self, values: dict[str, str]) -> None:
        base = f"{self.cfg.api_url}/api/v2/variables"
        for key, value in values.items():
            resp = self.api.session.post(base, json={"key": key, "value": value}, timeout=30)
            if resp.status_code == 409:
                resp = self.api.session.patch(f"{base}/{key}", json={"key": key, "value": value}, timeout=30)
            resp.raise_for_status()

    def replay(self, until: str | None = None) -> None:
        """The next week into the landing folder (or every week up to `until`)."""
        if until is None:
            self.week += 1
            args = ["--from", f"2013-W{self.week:02d}", "--until", f"2013-W{self.week:02d}"]
        else:
            args = ["--until", until]
        subprocess.run([str(REPO / ".venv" / "bin" / "mlops"), "data", "replay", *args], check=True, cwd=REPO,
                       env={**os.environ, "MLOPS_DATA_DIR": str(self.cfg.data_dir)}, capture_output=True)

    def versions(self) -> set[str]:
        return set(faults.registry(self.cfg, (self.cfg.env["MLFLOW_VIEWER_USER"],
                                              self.cfg.env["MLFLOW_VIEWER_PASSWORD"])).versions)

    def measure(self, dag_id: str, conf: dict | None, when: Callable[[str], object],
                inject: Callable[[str], faults.Fault]) -> dict:
        """Trigger a run, wait for `when(run_id)`, inject the fault, wait for the run's end."""
        before = self.versions()
        if dag_id == PIPELINE:
            self.replay()
        run_id = self.api.trigger(dag_id, conf)["dag_run_id"]
        faults.wait_for(lambda: when(run_id), f"{dag_id}: the moment to inject", 900, poll=0.3)
        fault = inject(run_id)
        run = faults.wait_run(self.api, dag_id, run_id, timeout=1800)
        first = faults.first_start_after(faults.tries(self.api, dag_id, run_id), fault.at)
        result = {"detected_s": round(first["start"] - fault.at, 1) if first else None,
                  "success_s": round(faults.ts(run["end_date"]) - fault.at, 1), "state": run["state"],
                  "new_versions": len(self.versions() - before)}
        say(f"{fault.name}: {result}")
        return result


def running(api: Airflow, dag_id: str, task_id: str) -> Callable[[str], object]:
    return lambda run_id: (lambda t: t and t["state"] == "running")(faults.task(api, dag_id, run_id, task_id))


def heavy_running_and_queued(api: Airflow) -> Callable[[str], object]:
    def check(run_id: str) -> bool:
        heavy = [t for t in api.task_instances(RETRAIN, run_id) if t["task_id"] == "retrain_model"]
        return any(t["state"] == "running" for t in heavy) and any(t["state"] == "queued" for t in heavy)

    return check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port-offset", type=int, default=38000, help="added to every port of .env.example")
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder (logs) afterwards")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="mlops-faults-bench-", dir="/tmp"))
    bench = Bench(root, args.port_offset)
    out: dict[str, dict] = {}
    # Progress (the stack's own lines included) on stderr: stdout is the JSON object only.
    with contextlib.redirect_stdout(sys.stderr):
        run_all(bench, out, args.keep)
    print(json.dumps(out, indent=1))
    return 0


def run_all(bench: Bench, out: dict[str, dict], keep: bool) -> None:
    """Inject every fault once, filling `out`; leave nothing running."""
    root = bench.root
    try:
        bench.up()
        api, cfg = bench.api, bench.cfg
        bench.replay(FIRST_WEEKS)
        bench.variables(NO_DRIFT)
        say("first pipeline run (the champion)")
        first = faults.wait_run(api, PIPELINE, api.trigger(PIPELINE)["dag_run_id"], timeout=1800)
        if first["state"] != "success":
            raise RuntimeError(f"the first pipeline run ended {first['state']}")
        remote = bench.host_cfg

        # The main host's heavy worker: the second host's stays stopped meanwhile.
        faults.stop(remote, HEAVY_REMOTE)
        out["worker_kill"] = bench.measure(PIPELINE, None, running(api, PIPELINE, "train"),
                                           lambda run_id: faults.kill_tree(cfg, HEAVY_MAIN))
        faults.start(remote, HEAVY_REMOTE)
        out["scheduler_kill"] = bench.measure(PIPELINE, None, running(api, PIPELINE, "train"),
                                              lambda run_id: faults.kill_tree(cfg, "airflow:scheduler"))

        # One heavy slot, so that retrain_model tasks wait in the queue.
        faults.stop(remote, HEAVY_REMOTE)
        out["redis_restart"] = bench.measure(RETRAIN, {"recipes": ["recent_6", "recent_12"], "max_rows": 2000},
                                             heavy_running_and_queued(api),
                                             lambda run_id: faults.outage(cfg, "redis", REDIS_DOWN_S))
        faults.start(remote, HEAVY_REMOTE)
        out["postgres_restart"] = bench.measure(PIPELINE, None, running(api, PIPELINE, "train"),
                                                lambda run_id: faults.restart(cfg, "postgres"))
        out["apiserver_restart"] = bench.measure(PIPELINE, None, running(api, PIPELINE, "train"),
                                                 lambda run_id: faults.restart(cfg, "airflow:api-server"))

        out["mlflow_outage"] = bench.measure(PIPELINE, None, running(api, PIPELINE, "train"),
                                             lambda run_id: faults.outage(cfg, "mlflow", MLFLOW_OUTAGE_S))

        # The second host's worker runs `train` (the main host's is stopped until then), then dies.
        faults.stop(cfg, HEAVY_MAIN)

        def remote_running(run_id: str) -> bool:
            ti = faults.task(api, PIPELINE, run_id, "train")
            return bool(ti and ti["state"] == "running" and ti["hostname"] == bench.host.address)

        def kill_remote(run_id: str) -> faults.Fault:
            faults.start(cfg, HEAVY_MAIN)
            return faults.kill_host(remote)

        out["remote_worker_kill"] = bench.measure(PIPELINE, None, remote_running, kill_remote)
    finally:
        try:
            bench.down()
        finally:
            if not keep:
                shutil.rmtree(root, ignore_errors=True)
            else:
                say(f"kept {root}")


if __name__ == "__main__":
    sys.exit(main())

"""Session fixtures of the compose test (`make test-compose`; plain `make test` does not collect
this folder): docker-compose.celery.yml built and brought up on a real Docker engine, driven, torn
down with its volumes. Phases are timed and printed (budget: 12 minutes on a fresh machine).

1. engine: DOCKER_HOST / the default socket if an engine answers, else the project's own dockerd
   (scripts/compose/engine.py), stopped again at the end;
2. images: upstream images when pullable, else local stand-ins (scripts/compose/images.py); the
   project image is built by compose from airflow/Dockerfile on the chosen base;
3. `up -d`, every service healthy; then the tests (files run in name order; the restart test last);
4. `down -v`, check nothing of the project is left, stop the engine if this run started it and no
   other project's container runs on it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from testkit.compose_stack import LEFT_OUT, PROJECT, ComposeStack, Phases, engine_mod, images_mod, release_ports

REPLAY_UNTIL = "2013-W03"
# The stand-in airflow/Dockerfile builds on; every other row of images.STANDINS builds beside it.
BASE_STANDIN = "airflow-python"
PRODUCT_DAGS = ("data_validation_dag", "ml_pipeline_dag", "model_retraining_dag")
_PHASES: list[Phases] = []


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 (pytest hook)
    """Print the phase timings at the end of the run."""
    for phases in _PHASES:
        terminalreporter.write_sep("-", "compose test phases (wall time)")
        terminalreporter.write_line(phases.table())
        for service, why in LEFT_OUT.items():
            terminalreporter.write_line(f"  not run here: {service} ({why})")


@pytest.fixture(scope="session")
def phases(request: pytest.FixtureRequest) -> Phases:
    """The session's phase timer (prints live through the terminal reporter)."""
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def say(line: str) -> None:
        if reporter is None:
            return
        if capture is None:
            reporter.write_line(line)
            return
        with capture.global_and_fixture_disabled():  # live, also while output is captured
            reporter.write_line(line)

    timer = Phases(say)
    _PHASES.append(timer)
    return timer


@pytest.fixture(scope="session")
def compose_stack(phases: Phases) -> ComposeStack:
    """The running compose project; torn down with its volumes after the last test."""
    root = Path(tempfile.mkdtemp(prefix="mlops-compose-test-", dir="/tmp"))
    with phases.phase("engine (installs docker.io when missing)"):
        engine = engine_mod.ensure()
    phases.say(f"compose test: engine {engine.host} ({'started by this run' if engine.started else 'already running, left running'})")
    stack = ComposeStack(root, engine, phases.say)
    thread: threading.Thread | None = None
    try:
        os.environ["DOCKER_HOST"] = engine.host  # images.py talks to the same engine
        # The stand-ins the project image does not need build beside its base and the project
        # image itself (the builds mostly wait on the network and the disk; one root file system).
        others: dict[str, str] = {}
        failure: list[BaseException] = []

        def build_others() -> None:
            try:
                others.update(images_mod.resolve([n for n in images_mod.STANDINS if n != BASE_STANDIN],
                                                 root / "build-logs", report=phases.detail))
            except BaseException as exc:  # noqa: BLE001 (re-raised in the main thread)
                failure.append(exc)

        thread = threading.Thread(target=build_others, name="stand-ins")
        thread.start()
        with phases.phase("base image of airflow/Dockerfile"):
            chosen = images_mod.resolve([BASE_STANDIN], root / "build-logs", report=phases.detail)
        stack.write_env(chosen)
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "10")  # a crashed run's leftovers
        with phases.phase("project image (compose build, airflow/Dockerfile)"):
            stack.compose("build", *(["--no-cache"] if images_mod.no_cache() else []), "airflow-init",
                          timeout=900, log="build-project-image.log")
        with phases.phase("waiting for the other stand-ins"):
            thread.join()
        if failure:
            raise failure[0]
        _set_images(stack, {**chosen, **others})
        with phases.phase("up -d until every service is healthy"):
            try:
                stack.compose("up", "-d", timeout=600, log="up.log")
                stack.wait_healthy()
            except BaseException:
                # What the services said before `down -v` removes them: the only trace of why.
                logs = stack.compose("logs", "--no-color", "--tail", "30", check=False, timeout=120)
                phases.say("compose test: service logs at the failure:\n" + logs.stdout[-20000:])
                raise
        yield stack
    finally:
        if thread is not None:
            thread.join()  # never stop the engine under a running build
        try:
            with phases.phase("kill, down --volumes"):
                if stack.env:
                    # Nothing to keep: kill, then remove containers, networks and volumes.
                    stack.compose("kill", check=False, log="down.log")
                    left = _down_until_gone(stack)
                    down_log = (root / "down.log").read_text(errors="replace")[-4000:]
        finally:
            release_ports(stack.reserved_ports)
            if engine.started:
                # Another run (another checkout's compose test) may have joined this engine.
                others = stack.docker("ps", "-q").stdout.split()
                if others:
                    phases.say(f"compose test: the project's dockerd still runs {len(others)} container(s) "
                               "of another project: left running")
                else:
                    with phases.phase("stop the project's dockerd"):
                        engine_mod.stop_private()
            shutil.rmtree(root, ignore_errors=True)
        if stack.env:
            assert not any(left.values()), f"left behind by {PROJECT}: {left}\ndown.log:\n{down_log}"


def _down_until_gone(stack: ComposeStack) -> dict[str, list[str]]:
    """`down --volumes` until nothing of the project is left, at most three times: right after a
    kill the engine may still be releasing a container's network endpoint (one CI run's single
    `down` left the network and every volume). What is left after the third comes back."""
    from tenacity import retry, retry_if_result, stop_after_attempt, wait_fixed

    @retry(retry=retry_if_result(lambda left: any(left.values())), stop=stop_after_attempt(3), wait=wait_fixed(3),
           retry_error_callback=lambda state: state.outcome.result())
    def down() -> dict[str, list[str]]:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False, log="down.log")
        return stack.leftovers()

    return down()


def _set_images(stack: ComposeStack, chosen: dict[str, str]) -> None:
    """Write the chosen image variables into the env file (ensure() never changes a value)."""
    lines = []
    for raw in stack.env_file.read_text().splitlines():
        key = raw.split("=", 1)[0]
        lines.append(f"{key}={chosen[key]}" if key in chosen and "=" in raw else raw)
    stack.env_file.write_text("\n".join(lines) + "\n")
    stack.env.update(chosen)


@pytest.fixture(scope="session")
def dags_ready(compose_stack: ComposeStack) -> ComposeStack:
    """The product DAGs parsed without import errors (the shape tests/stack's RBAC tests expect)."""
    stack = compose_stack
    stack.wait_for("product DAGs parsed", lambda: set(PRODUCT_DAGS) <= {
        d["dag_id"] for d in stack.api("GET", "/dags", params={"limit": 100}).json().get("dags", [])}, timeout=180)
    errors = stack.api("GET", "/importErrors").json()
    assert errors["total_entries"] == 0, errors
    return stack


@pytest.fixture(scope="session")
def pipeline_run(dags_ready: ComposeStack, phases: Phases) -> dict:
    """ml_pipeline_dag triggered through the REST API on weeks replayed into the mlops-data volume.

    The DAG is @weekly without catchup, so the scheduler creates one scheduled run when it first
    sees it; with no data yet that run short-circuits. The test waits for it to end, replays, then
    triggers its own run (max_active_runs=1 would otherwise queue it behind the scheduled one)."""
    stack = dags_ready
    with phases.phase("scheduled first run ends (no data yet)"):
        stack.wait_for("no ml_pipeline_dag run queued or running", lambda: stack.dag_runs("ml_pipeline_dag") and all(
            r["state"] in ("success", "failed") for r in stack.dag_runs("ml_pipeline_dag")), timeout=180)
    with phases.phase(f"replay weeks until {REPLAY_UNTIL} into the mlops-data volume"):
        replay = stack.exec("airflow-worker-heavy", "mlops", "data", "replay", "--until", REPLAY_UNTIL)
        assert replay.returncode == 0, replay.stdout + replay.stderr
    before = stack.prometheus_value('airflow_dagrun_duration_seconds_count{dag_id="ml_pipeline_dag",state="success"}')
    with phases.phase("ml_pipeline_dag run (REST trigger to success)"):
        t0 = time.time()
        run_id = stack.trigger("ml_pipeline_dag", role="ml")
        run = stack.wait_run("ml_pipeline_dag", run_id)
    return {"run": run, "run_id": run_id, "t0": t0, "dagrun_success_before": before or 0.0,
            "replay": replay.stdout}

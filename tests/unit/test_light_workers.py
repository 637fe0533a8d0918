"""LIGHT_WORKERS: how many light-queue workers the native stack runs (one by default, eight task
slots each, one heavy worker beside them); anything but a count from 1 to 8 is refused, naming the
file and the variable. And the load test's burst plan: runs that hold exactly the task instances
asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import config as stack_config
from stack import envfile
from stack.components import components
from testkit.load import PLANNERS, plan_runs


def _cfg(tmp_path: Path, light_workers: str, slots: str = "") -> stack_config.StackConfig:
    env_file = tmp_path / "stack.env"
    envfile.ensure(env_file, stack_config.EXAMPLE_ENV, overrides={
        "STACK_HOME": str(tmp_path / "home"), "MLOPS_DATA_DIR": str(tmp_path / "data"),
        "LIGHT_WORKERS": light_workers, "LIGHT_WORKER_CONCURRENCY": slots})
    return stack_config.load(env_file)


def test_one_light_worker_by_default(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "")
    assert [(w.name, w.queue, w.concurrency) for w in cfg.workers] == [("light1", "light", 8), ("heavy1", "heavy", 1)]
    programs = {c.name for c in components(cfg)}
    assert {"worker-light1", "worker-heavy1"} <= programs and "worker-light2" not in programs


def test_three_light_workers_are_three_programs(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "3", slots="4")
    assert [w.name for w in cfg.workers] == ["light1", "light2", "light3", "heavy1"]
    by_name = {c.name: c for c in components(cfg)}
    for name in ("light1", "light2", "light3"):
        command = by_name[f"worker-{name}"].command
        assert command[command.index("--queues") + 1] == "light"
        assert command[command.index("--concurrency") + 1] == "4"


@pytest.mark.parametrize("value", ["0", "9", "two", "-1", "1.5"])
def test_a_bad_count_is_refused_naming_file_and_variable(tmp_path: Path, value: str) -> None:
    with pytest.raises(envfile.EnvFileError) as err:
        _cfg(tmp_path, value)
    assert "stack.env" in str(err.value) and f"LIGHT_WORKERS={value!r}" in str(err.value)


@pytest.mark.parametrize("value", ["0", "33", "many"])
def test_a_bad_slot_count_is_refused_naming_file_and_variable(tmp_path: Path, value: str) -> None:
    with pytest.raises(envfile.EnvFileError) as err:
        _cfg(tmp_path, "1", slots=value)
    assert "stack.env" in str(err.value) and f"LIGHT_WORKER_CONCURRENCY={value!r}" in str(err.value)


@pytest.mark.parametrize(("tasks", "runs"), [(50, 2), (200, 4), (1000, 10), (203, 4)])
def test_a_burst_plan_holds_exactly_the_tasks_asked_for(tasks: int, runs: int) -> None:
    confs = plan_runs(tasks, runs)
    assert len(confs) == runs
    assert sum(PLANNERS + c["light"] + c["heavy"] for c in confs) == tasks
    assert all(c["heavy"] >= 1 and c["light"] >= 1 for c in confs)


def test_a_burst_too_small_for_its_runs_is_refused() -> None:
    with pytest.raises(ValueError, match="fewer than"):
        plan_runs(6, 3)


def test_the_heavy_worker_starts_niced_the_light_ones_not(tmp_path: Path) -> None:
    by_name = {c.name: c for c in components(_cfg(tmp_path, "2"))}
    heavy = by_name["worker-heavy1"].command
    assert Path(heavy[0]).name == "nice" and heavy[1:3] == ["-n", "10"] and Path(heavy[0]).is_file()
    for name in ("worker-light1", "worker-light2"):
        assert Path(by_name[name].command[0]).name == "airflow", by_name[name].command

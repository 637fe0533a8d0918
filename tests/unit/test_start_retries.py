"""STACK_START_RETRIES: supervisord's `startretries` of every native-stack program (10 by default;
after them a program that keeps exiting at once is FATAL and `up` stops: tests/stack/test_stack_5_restart.py);
anything but a whole number from 0 to 100 is refused, naming the variable."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from stack import config as stack_config
from stack import envfile, render
from stack.components import components
from stack.run import StackError


def _programs(tmp_path: Path) -> dict[str, dict[str, str]]:
    env_file = tmp_path / "stack.env"
    envfile.ensure(env_file, stack_config.EXAMPLE_ENV, overrides={
        "STACK_HOME": str(tmp_path / "home"), "MLOPS_DATA_DIR": str(tmp_path / "data")})
    cfg = stack_config.load(env_file)
    parser = configparser.RawConfigParser(strict=False)
    parser.read_string(render.render_supervisord(cfg, components(cfg)))
    return {s: dict(parser[s]) for s in parser.sections() if s.startswith("program:")}


def test_ten_start_retries_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACK_START_RETRIES", raising=False)
    programs = _programs(tmp_path)
    assert len(programs) > 10 and {p["startretries"] for p in programs.values()} == {"10"}


def test_the_retries_follow_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACK_START_RETRIES", "2")
    assert {p["startretries"] for p in _programs(tmp_path).values()} == {"2"}


@pytest.mark.parametrize("value", ["-1", "two", "1.5", "101"])
def test_a_bad_value_is_refused_naming_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     value: str) -> None:
    monkeypatch.setenv("STACK_START_RETRIES", value)
    with pytest.raises(StackError, match=f"STACK_START_RETRIES={value!r}"):
        _programs(tmp_path)

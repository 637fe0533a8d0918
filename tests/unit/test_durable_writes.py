"""Durable writes and a truncated `.env` (issue 22 item 13): the atomic writes sync the file
before the rename and the folder after it; a `.env` that lost (or never had) the secrets the
stack's data was made with is refused while that data exists, instead of generating new ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stack import config, envfile, safefs

EXAMPLE = config.EXAMPLE_ENV


def _stack_env(tmp_path: Path) -> tuple[Path, Path]:
    """An env file with the example's STACK_HOME (relative: `.stack` beside the file, as `.env`
    has it) and a PostgreSQL cluster there."""
    env_file = tmp_path / "stack.env"
    envfile.ensure(env_file, EXAMPLE)
    pgdata = tmp_path / envfile.parse(EXAMPLE)["STACK_HOME"] / "postgres"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("15\n")
    return env_file, pgdata


@pytest.mark.parametrize("damage", ["emptied", "truncated", "deleted", "fernet-emptied"])
def test_a_damaged_env_file_does_not_regenerate_secrets_over_existing_data(tmp_path: Path, damage: str) -> None:
    env_file, pgdata = _stack_env(tmp_path)
    text = env_file.read_text()
    if damage == "emptied":
        env_file.write_text("")
    elif damage == "truncated":
        env_file.write_text(text[: text.index("POSTGRES_PASSWORD=")])
    elif damage == "deleted":
        env_file.unlink()
    else:
        env_file.write_text(text.replace(f"AIRFLOW_FERNET_KEY={envfile.parse(env_file)['AIRFLOW_FERNET_KEY']}",
                                         "AIRFLOW_FERNET_KEY="))
    before = env_file.read_text() if env_file.exists() else None
    with pytest.raises(envfile.EnvFileError) as caught:
        envfile.ensure(env_file, EXAMPLE)
    message = str(caught.value)
    assert str(pgdata) in message and "AIRFLOW_FERNET_KEY" in message
    assert ("POSTGRES_PASSWORD" in message) == (damage != "fernet-emptied")
    assert (env_file.read_text() if env_file.exists() else None) == before  # nothing written
    with pytest.raises(envfile.EnvFileError):
        config.load(env_file)


def test_without_stack_data_the_secrets_are_generated_and_new_ones_added(tmp_path: Path) -> None:
    env_file, pgdata = _stack_env(tmp_path)
    # An older file lacking a secret the data does not depend on gets it, data or not.
    values = envfile.parse(env_file)
    env_file.write_text("".join(line + "\n" for line in env_file.read_text().splitlines()
                                if not line.startswith("REDIS_PASSWORD=")))
    assert envfile.ensure(env_file, EXAMPLE)["REDIS_PASSWORD"] not in ("", values["REDIS_PASSWORD"])
    # No cluster yet: a first `up` after an emptied file simply starts afresh.
    (pgdata / "PG_VERSION").unlink()
    env_file.write_text("")
    assert envfile.ensure(env_file, EXAMPLE)["POSTGRES_PASSWORD"]


def _spy_fsync(monkeypatch) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst, **kwargs) -> None:  # noqa: ANN001 (os.replace's own signature)
        events.append(("replace", str(dst)))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def _assert_durable(events: list[tuple[str, str]], folder: Path, name: str) -> None:
    kinds = [kind for kind, _ in events]
    assert "replace" in kinds, events
    at = kinds.index("replace")
    assert any(k == "fsync" and Path(p).parent == folder and name in Path(p).name for k, p in events[:at]), events
    assert ("fsync", str(folder)) in events[at:], events


def test_mlops_atomic_writes_sync_the_file_and_the_folder(tmp_path: Path, monkeypatch) -> None:
    from mlops.util import atomic_write_text

    events = _spy_fsync(monkeypatch)
    atomic_write_text(tmp_path / "state.json", "{}")
    _assert_durable(events, tmp_path, "state.json")
    assert (tmp_path / "state.json").read_text() == "{}"


def test_stack_writes_sync_the_file_and_the_folder(tmp_path: Path, monkeypatch) -> None:
    events = _spy_fsync(monkeypatch)
    safefs.write_file(tmp_path / "x.conf", "a=1\n")
    _assert_durable(events, tmp_path, "x.conf")
    events.clear()
    envfile.ensure(tmp_path / "new.env", EXAMPLE, overrides={"STACK_HOME": str(tmp_path / "home")})
    _assert_durable(events, tmp_path, "new.env")

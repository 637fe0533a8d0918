"""`make env` / `python3 -m stack.envfile`: a filled .env for compose users with the system Python
alone (standard library only, no .venv), never changing a value it finds."""

from __future__ import annotations

import base64
import re
import stat
import subprocess
from pathlib import Path

from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SYSTEM_PYTHON, "-m", "stack.envfile", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_writes_a_private_filled_env_with_the_system_python(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    out = _run("--env-file", str(env_file))
    assert out.returncode == 0, out.stderr
    assert "generated secrets" in out.stdout and "=" not in out.stdout.split("(")[0]
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", env_file.read_text(), re.M))
    example = dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", (REPO / ".env.example").read_text(), re.M))
    assert set(values) == set(example)
    secrets = [k for k, v in example.items() if not v and re.search(r"(PASSWORD|SECRET|SECRET_KEY|FERNET_KEY)$", k)]
    assert len(secrets) >= 10 and all(values[k] for k in secrets), secrets
    Fernet(values["AIRFLOW_FERNET_KEY"].encode())  # a valid Fernet key
    assert len(base64.urlsafe_b64decode(values["AIRFLOW_FERNET_KEY"])) == 32
    assert len(values["AIRFLOW_JWT_SECRET"]) >= 64 and len(values["AIRFLOW_API_SECRET_KEY"]) >= 64
    before = env_file.read_text()
    again = _run("--env-file", str(env_file))
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert env_file.read_text() == before


def test_keeps_values_and_appends_what_is_missing(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("POSTGRES_PASSWORD=mine\nAIRFLOW_FERNET_KEY=\n")
    out = _run("--env-file", str(env_file))
    assert out.returncode == 0, out.stderr
    values = dict(re.findall(r"^([A-Z0-9_]+)=(.*)$", env_file.read_text(), re.M))
    assert values["POSTGRES_PASSWORD"] == "mine"
    assert values["AIRFLOW_FERNET_KEY"] and values["AIRFLOW_ADMIN_PASSWORD"]
    assert "AIRFLOW_FERNET_KEY" in out.stdout and "mine" not in out.stdout


def test_malformed_env_file_fails_naming_file_and_line(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("POSTGRES_USER=airflow\nthis is not a variable\n")
    out = _run("--env-file", str(env_file))
    assert out.returncode == 1
    assert f"{env_file}:2" in out.stderr
    assert env_file.read_text() == "POSTGRES_USER=airflow\nthis is not a variable\n"


def test_needs_only_the_standard_library() -> None:
    code = ("import sys; sys.path.insert(0, '.'); before = set(sys.modules); import stack.envfile; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "print(sorted(new - set(sys.stdlib_module_names) - {'stack'}))")
    out = subprocess.run([SYSTEM_PYTHON, "-I", "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

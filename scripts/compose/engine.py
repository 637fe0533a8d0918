#!/usr/bin/env python3
"""The Docker engine of the compose test: an engine that already answers, or the project's own.

    python3 scripts/compose/engine.py up       # prints DOCKER_HOST=...; starts a daemon if needed
    python3 scripts/compose/engine.py down     # stops the project's daemon (only if it runs)
    python3 scripts/compose/engine.py status

An engine that answers already (DOCKER_HOST, else the default socket) is used as it is and never
stopped. Otherwise Debian's `docker.io` is installed when missing (scripts/system-deps.sh compose)
and a private `dockerd` is started as root with its own data root, exec root, socket and pid
file, so it never collides with a system daemon. Its data root (images and build cache) stays
between runs, outside the checkout, so that a fresh clone reuses the images already built;
containers, networks and volumes are the test's to remove. Standard library only: runs with the
system python3 as well as with .venv.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Every path of the private daemon; the environment may move them (e.g. a second daemon).
DATA_ROOT = Path(os.environ.get("MLOPS_DOCKER_DATA_ROOT", "/var/lib/mlops-flights/docker"))
RUN_DIR = Path(os.environ.get("MLOPS_DOCKER_RUN_DIR", "/run/mlops-flights"))
SOCKET = RUN_DIR / "docker.sock"
PIDFILE = RUN_DIR / "dockerd.pid"
EXEC_ROOT = RUN_DIR / "exec"
LOG_FILE = Path(os.environ.get("MLOPS_DOCKER_LOG", "/var/log/mlops-flights-dockerd.log"))
DEFAULT_SOCKET = Path("/var/run/docker.sock")
# The open-files hard limit of this kind of machine: containers asking for more fail to start.
ULIMIT_NOFILE = os.environ.get("MLOPS_DOCKER_ULIMIT_NOFILE", "20000:20000")
START_TIMEOUT_S = 90


class EngineError(RuntimeError):
    """No engine could be found or started; the message says why and where to look."""


@dataclass(frozen=True)
class Engine:
    """A Docker engine to talk to: its DOCKER_HOST, and whether this process started it."""

    host: str
    started: bool

    def env(self) -> dict[str, str]:
        """The environment (os.environ plus DOCKER_HOST) for docker and docker-compose calls."""
        return {**os.environ, "DOCKER_HOST": self.host}


def _docker() -> str:
    path = shutil.which("docker")
    if path is None:
        raise EngineError("no `docker` client on PATH (Debian package docker.io provides one)")
    return path


def answers(host: str, timeout: float = 10) -> bool:
    """True when a Docker engine answers `docker version` at `host` (unix:///... or tcp://...)."""
    if host.startswith("unix://") and not Path(host[len("unix://"):]).exists():
        return False
    try:
        out = subprocess.run([_docker(), "-H", host, "version", "--format", "{{.Server.Version}}"],
                             capture_output=True, text=True, timeout=timeout)
    except (subprocess.TimeoutExpired, EngineError):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


def private_host() -> str:
    """DOCKER_HOST of the project's own daemon."""
    return f"unix://{SOCKET}"


def _private_pid() -> int | None:
    """Pid of the project's running daemon, from its pid file (None when it does not run)."""
    try:
        pid = int(PIDFILE.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return pid if any(part.endswith(b"dockerd") for part in cmdline[:1]) and str(SOCKET).encode() in b" ".join(cmdline) else None


def _install() -> None:
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        print("engine: installing docker.io (scripts/system-deps.sh compose)", flush=True)
        subprocess.run(["bash", str(REPO / "scripts" / "system-deps.sh"), "compose"], check=True)


def start_private() -> None:
    """Start the project's dockerd and wait until it answers; raise EngineError with its log."""
    _install()
    if os.geteuid() != 0:
        raise EngineError("the project's Docker daemon must be started as root (or set DOCKER_HOST)")
    for path in (DATA_ROOT, EXEC_ROOT, RUN_DIR):
        path.mkdir(parents=True, exist_ok=True)
    LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        shutil.which("dockerd") or "dockerd",
        "--data-root", str(DATA_ROOT),
        "--exec-root", str(EXEC_ROOT),
        "--pidfile", str(PIDFILE),
        "-H", private_host(),
        "--default-ulimit", f"nofile={ULIMIT_NOFILE}",
    ]
    with LOG_FILE.open("ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers(private_host(), timeout=5):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.terminate()
            tail = LOG_FILE.read_text(errors="replace").splitlines()[-20:]
            raise EngineError(f"dockerd did not answer on {SOCKET} (exit {proc.poll()}); "
                              f"last lines of {LOG_FILE}:\n" + "\n".join(tail))
        time.sleep(0.5)


def stop_private(timeout: float = 60) -> bool:
    """Stop the project's daemon (SIGTERM, then SIGKILL); True when one was running."""
    pid = _private_pid()
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie child of ours counts as gone once reaped.
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    return True


def ensure() -> Engine:
    """The engine to use: DOCKER_HOST or the default socket if one answers, else the project's own
    (already running, or started now: then `started` is True and the caller stops it)."""
    given = os.environ.get("DOCKER_HOST")
    if given:
        if answers(given):
            return Engine(given, started=False)
        raise EngineError(f"DOCKER_HOST={given} does not answer `docker version`")
    default = f"unix://{DEFAULT_SOCKET}"
    if answers(default):
        return Engine(default, started=False)
    if answers(private_host()):
        return Engine(private_host(), started=False)
    start_private()
    return Engine(private_host(), started=True)


def main(argv: list[str] | None = None) -> int:
    """CLI: up | down | status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            engine = ensure()
            how = "started" if engine.started else "already running"
            print(f"engine: {how}", file=sys.stderr)
            print(f"DOCKER_HOST={engine.host}")
        elif args.action == "down":
            print("engine: stopped" if stop_private() else "engine: the project's daemon was not running")
        else:
            pid = _private_pid()
            print(f"project daemon: {'pid ' + str(pid) + ' on ' + private_host() if pid else 'not running'}")
            print(f"default socket: {'answers' if answers('unix://' + str(DEFAULT_SOCKET)) else 'no engine'}")
    except (EngineError, subprocess.CalledProcessError) as exc:
        print(f"engine: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

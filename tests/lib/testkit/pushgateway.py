"""A real Prometheus Pushgateway (Debian's prometheus-pushgateway) on a free loopback port, with
the stacks' basic-auth users (stack/grants.py), for the tests of what the ML steps push."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from stack import grants

# The stacks' Pushgateway users (pusher, prometheus), with this module's passwords.
LOGINS = {user.password_var: f"test-{user.name}-password" for user in grants.WEB_USERS}
PUSHER = grants.web_login(LOGINS, "pushgateway", "pusher")
READER = grants.web_login(LOGINS, "pushgateway", "prometheus")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gateway:
    """One prometheus-pushgateway process on a free loopback port, persisting to `data`."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.web_config = data.with_name("web.yml")
        self.web_config.write_text(grants.web_config(LOGINS, "pushgateway"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("prometheus-pushgateway")
        if binary is None:
            pytest.fail("prometheus-pushgateway is not installed: run `make system-deps` (scripts/system-deps.sh)")
        self.proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{self.port}",
                                      f"--persistence.file={self.data}", f"--web.config.file={self.web_config}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{self.url}/-/ready", auth=READER, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, "pushgateway did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def series(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """label set (sorted, without empty labels) -> value of every series of `name`."""
        text = requests.get(f"{self.url}/metrics", auth=READER, timeout=5).text
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    out[tuple(sorted((k, v) for k, v in sample.labels.items() if v))] = sample.value
        return out

    def help_of(self, name: str) -> str | None:
        """The HELP text the gateway serves for metric ``name``."""
        text = requests.get(f"{self.url}/metrics", auth=READER, timeout=5).text
        return next((f.documentation for f in text_string_to_metric_families(text) if f.name == name), None)


@contextlib.contextmanager
def serving(data: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """A running gateway persisting to ``data``, set as the ML steps' push target (with the push
    login) for as long as the block runs."""
    gw = Gateway(data)
    gw.start()
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_URL", gw.url)
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_USER", PUSHER[0])
    monkeypatch.setenv("MLOPS_PUSHGATEWAY_PASSWORD", PUSHER[1])
    try:
        yield gw
    finally:
        gw.stop()

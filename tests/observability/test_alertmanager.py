"""Alertmanager's configuration (observability/alertmanager/alertmanager.yml rendered by
stack/alerting.py with the ALERT_* variables): valid for Debian's amtool in every receiver
combination, one route per severity of the rules, values that cannot change the structure."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stack import alerting

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "observability" / "prometheus" / "rules"
WEBHOOK = {"ALERT_WEBHOOK_URL": "https://hooks.example.invalid/alerts?token=abc"}
EMAIL = {"ALERT_EMAIL_TO": "oncall@example.invalid", "ALERT_SMTP_SMARTHOST": "smtp.example.invalid:587",
         "ALERT_SMTP_FROM": "alertmanager@example.invalid", "ALERT_SMTP_AUTH_USERNAME": "alerts",
         "ALERT_SMTP_AUTH_PASSWORD": "not-a-real-password"}


@pytest.fixture(scope="module")
def amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        pytest.fail("amtool is not on PATH: run `make system-deps` (prometheus-alertmanager)")
    return path


def _write(tmp_path: Path, env: dict[str, str]) -> Path:
    path = tmp_path / "alertmanager.yml"
    path.write_text(alerting.dump(alerting.render(alerting.load_template(), env), "test"))
    return path


def _receiver(amtool: str, config: Path, *labels: str) -> str:
    out = subprocess.run([amtool, "config", "routes", "test", f"--config.file={config}", *labels],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize("env", [{}, WEBHOOK, {**WEBHOOK, **EMAIL}, {k: "" for k in alerting.VARIABLES}],
                         ids=["nothing", "webhook", "webhook+email", "all-empty"])
def test_every_receiver_combination_is_valid(amtool: str, tmp_path: Path, env: dict[str, str]) -> None:
    path = _write(tmp_path, env)
    out = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    sends = alerting.delivery(yaml.safe_load(path.read_text()))
    expected = {"critical": (["webhook"] if env.get("ALERT_WEBHOOK_URL") else [])
                + (["email"] if env.get("ALERT_EMAIL_TO") else []),
                "warning": ["webhook"] if env.get("ALERT_WEBHOOK_URL") else []}
    assert sends == {k: sorted(v) for k, v in expected.items()}


def test_values_reach_their_receivers_and_empty_settings_are_left_out() -> None:
    doc = alerting.render(alerting.load_template(), {**WEBHOOK, **EMAIL, "ALERT_SMTP_AUTH_USERNAME": ""})
    receivers = {r["name"]: r for r in doc["receivers"]}
    assert receivers["warning"]["webhook_configs"] == [{"url": WEBHOOK["ALERT_WEBHOOK_URL"], "send_resolved": True}]
    assert receivers["critical"]["email_configs"][0]["to"] == EMAIL["ALERT_EMAIL_TO"]
    assert doc["global"]["smtp_smarthost"] == EMAIL["ALERT_SMTP_SMARTHOST"]
    assert "smtp_auth_username" not in doc["global"]  # no user: no login, whatever the password


def test_one_route_per_severity_of_the_rules(amtool: str, tmp_path: Path) -> None:
    severities = {r["labels"]["severity"] for p in RULES.glob("*.yml")
                  for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"]}
    assert severities == {"critical", "warning"}
    path = _write(tmp_path, WEBHOOK)
    for severity in severities:
        assert _receiver(amtool, path, f"severity={severity}", "alertname=X") == severity
    routes = yaml.safe_load(path.read_text())["route"]["routes"]
    critical = next(r for r in routes if r["receiver"] == "critical")
    assert alerting_seconds(critical["group_wait"]) < alerting_seconds(yaml.safe_load(path.read_text())["route"]["group_wait"])


def alerting_seconds(text: str) -> int:
    return int(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]


def test_a_value_cannot_change_the_structure() -> None:
    evil = 'http://x.invalid/"\n  - name: injected\nreceivers: []'
    doc = alerting.render(alerting.load_template(), {"ALERT_WEBHOOK_URL": evil})
    again = yaml.safe_load(alerting.dump(doc, "test"))
    assert [r["name"] for r in again["receivers"]] == ["critical", "warning"]
    assert again["receivers"][1]["webhook_configs"][0]["url"] == evil


def test_an_unknown_variable_in_the_template_is_refused(tmp_path: Path) -> None:
    bad = {"route": {"receiver": "x"}, "receivers": [{"name": "x", "webhook_configs": [{"url": "${ALERT_TYPO}"}]}]}
    with pytest.raises(alerting.AlertingConfigError, match="ALERT_TYPO"):
        alerting.render(bad, {})


def test_the_compose_cli_writes_a_private_file(tmp_path: Path) -> None:
    """What the compose one-shot `alertmanager-config` runs (system Python + PyYAML is enough)."""
    out_file = tmp_path / "alertmanager.yml"
    env = {"PATH": os.environ["PATH"], **WEBHOOK}
    done = subprocess.run([sys.executable, str(REPO / "stack" / "alerting.py"), str(alerting.TEMPLATE), str(out_file)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    assert "critical: webhook" in done.stdout and WEBHOOK["ALERT_WEBHOOK_URL"] not in done.stdout
    assert yaml.safe_load(out_file.read_text())["receivers"][0]["webhook_configs"][0]["url"] == WEBHOOK["ALERT_WEBHOOK_URL"]

"""Root never follows a link a service user planted (issue 22 item 1, stack/safefs.py).

`up` runs as root and writes, chowns and walks in folders that `mlops` and `mlops-worker` own.
Here the steps `up` runs before it starts anything (stack.ctl._prepare: folders, owners, JWT
keys; stack.render.write_all: every rendered file) run against a throwaway STACK_HOME; a link,
owned by the folder's user, is planted at each path they write or chown, and pointed at a root
file (`x.pth` in a site-packages folder is what an attacker would aim at). Each run must refuse
with an error naming the link, and leave the target as it was. One real `stack.ctl up` refuses
the same way and starts nothing."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from stack import config, ctl, envfile, render, safefs
from stack.access import acl_entries
from stack.config import CONTROL_USER, WORKER_USER
from stack.procs import stack_processes
from stack.run import StackError
from testkit import alert_clock

REPO = Path(__file__).resolve().parents[2]
# Off the session stack's ports (it is still up when tests/unit runs: tests/faults use it after),
# and off those of stacks at other offsets in hundreds: no two of the stack's ports differ by 50,
# nor by 50 plus or minus a multiple of 100 up to 1400 (+37 met another stack's 200).
OFFSET = int(os.environ.get("MLOPS_TEST_PORT_OFFSET", "0")) + 50

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="`up` runs as root; so must this test")

# (path under STACK_HOME, owner of the folder that holds it, is it a folder)
PLANTED = [
    ("airflow/airflow.cfg.tmp", CONTROL_USER, False),
    ("airflow/airflow.cfg", CONTROL_USER, False),
    ("airflow-worker/airflow.cfg.tmp", WORKER_USER, False),
    ("airflow-worker/airflow.cfg", WORKER_USER, False),
    ("redis/redis.conf.tmp", CONTROL_USER, False),
    ("redis/redis.conf", CONTROL_USER, False),
    ("mlflow/basic_auth.ini.tmp", CONTROL_USER, False),
    ("mlflow/basic_auth.ini", CONTROL_USER, False),
    ("prometheus/prometheus.yml.tmp", CONTROL_USER, False),
    ("prometheus/prometheus.yml", CONTROL_USER, False),
    ("alertmanager/alertmanager.yml.tmp", CONTROL_USER, False),
    ("alertmanager/alertmanager.yml", CONTROL_USER, False),
    ("airflow/keys/jwt-signing.pem", CONTROL_USER, False),
    ("airflow/keys/jwks.json", CONTROL_USER, False),
    ("airflow/keys/jwks.json.tmp", CONTROL_USER, False),
    ("prometheus/rules/airflow.yml.tmp", CONTROL_USER, False),
    ("airflow/keys", CONTROL_USER, True),
    ("prometheus/rules", CONTROL_USER, True),
    ("prometheus/data", CONTROL_USER, True),
    ("alertmanager/data", CONTROL_USER, True),
    ("mlflow/artifacts", CONTROL_USER, True),
]


def _snapshot(path: Path) -> tuple:
    st = os.lstat(path)
    content = sorted(os.listdir(path)) if path.is_dir() else path.read_bytes()
    return st.st_uid, st.st_gid, st.st_mode, content, acl_entries(path)


def _env_file(root: Path) -> Path:
    env_file = root / "stack.env"
    ports = {name: str(port + OFFSET) for name, port in {
        "AIRFLOW_API_PORT": 28080, "FLOWER_PORT": 25555, "MLFLOW_PORT": 25000, "MLFLOW_METRICS_PORT": 25001,
        "PROMETHEUS_PORT": 29090, "PUSHGATEWAY_PORT": 29091, "ALERTMANAGER_PORT": 29093, "GRAFANA_PORT": 23000,
        "STATSD_EXPORTER_PORT": 29102, "STATSD_PORT": 29125, "POSTGRES_PORT": 25432, "REDIS_PORT": 26379,
        "AIRFLOW_LOG_SERVER_PORT": 28793, "SERVING_PORT": 28000, "POSTGRES_EXPORTER_PORT": 29187,
        "REDIS_EXPORTER_PORT": 29121, "PROCESS_EXPORTER_PORT": 29256}.items()}
    envfile.ensure(env_file, config.EXAMPLE_ENV, overrides={
        **ports, "STACK_HOME": str(root / "stack"), "MLOPS_DATA_DIR": str(root / "data"),
        "MLOPS_TEST_FAST_ALERTS": str(alert_clock.write(root / "alert-clock"))})
    return env_file


@pytest.fixture(scope="module")
def rendered():
    """A stack home as `up` leaves it before starting programs, and a root-owned target."""
    root = Path(tempfile.mkdtemp(prefix="mlops-rootwrites-", dir="/tmp"))
    os.chmod(root, 0o755)
    cfg = config.load(_env_file(root))
    ctl._prepare(cfg)
    render.write_all(cfg)
    target_dir = root / "site-packages"
    target_dir.mkdir()
    (target_dir / "x.pth").write_text("# root's file\n")
    os.chmod(target_dir / "x.pth", 0o644)
    yield cfg, target_dir
    shutil.rmtree(root, ignore_errors=True)


def _up_steps(cfg: config.StackConfig) -> None:
    """What `up` does as root in folders other users own, before it starts any program."""
    ctl._prepare(cfg)
    render.write_all(cfg)


@pytest.mark.parametrize("rel,owner,is_dir", PLANTED, ids=[p[0] for p in PLANTED])
def test_up_refuses_a_planted_link_and_touches_no_target(rendered, rel: str, owner: str, is_dir: bool) -> None:
    cfg, target_dir = rendered
    target = target_dir if is_dir else target_dir / "x.pth"
    before = _snapshot(target)
    planted = cfg.home / rel
    saved = planted.with_name(planted.name + ".saved")
    if os.path.lexists(planted):
        os.rename(planted, saved)
    account = pwd.getpwnam(owner)
    os.symlink(target, planted)
    os.lchown(planted, account.pw_uid, account.pw_gid)
    try:
        with pytest.raises((StackError, safefs.UnsafePathError)) as caught:
            _up_steps(cfg)
        assert str(planted) in str(caught.value) and "symbolic link" in str(caught.value)
        assert _snapshot(target) == before, f"root changed {target} through the link {planted}"
        assert not (target_dir / "x.pth.tmp").exists() and not (target_dir / "airflow.cfg").exists()
    finally:
        os.unlink(planted)
        if os.path.lexists(saved):
            os.rename(saved, planted)
    _up_steps(cfg)  # the home is whole again: nothing else refused


def test_a_handed_over_folder_gives_away_links_never_their_targets(rendered) -> None:
    """A data folder of an older stack (owned by root) is handed to the worker with its content:
    a link inside is chowned itself (lchown), its target keeps owner and ACL."""
    cfg, target_dir = rendered
    target = target_dir / "x.pth"
    before = _snapshot(target)
    (cfg.data_dir / "batches").mkdir(exist_ok=True)
    link = cfg.data_dir / "batches" / "planted.pth"
    os.symlink(target, link)
    os.chown(cfg.data_dir, 0, 0)
    ctl._prepare(cfg)
    worker = pwd.getpwnam(WORKER_USER)
    assert os.lstat(link).st_uid == worker.pw_uid and os.stat(cfg.data_dir).st_uid == worker.pw_uid
    assert _snapshot(target) == before
    link.unlink()


def test_a_real_up_refuses_the_planted_link_and_starts_nothing() -> None:
    """`python -m stack.ctl up` on a fresh home where the worker planted airflow.cfg.tmp."""
    root = Path(tempfile.mkdtemp(prefix="mlops-rootwrites-up-", dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        env_file = _env_file(root)
        cfg = config.load(env_file)
        worker = pwd.getpwnam(WORKER_USER)
        safefs.make_dir(cfg.home, 0, 0, 0o755)
        safefs.make_dir(cfg.worker_home, worker.pw_uid, worker.pw_gid, 0o700)
        target = root / "x.pth"
        target.write_text("# root's file\n")
        planted = cfg.worker_home / "airflow.cfg.tmp"
        os.symlink(target, planted)
        os.lchown(planted, worker.pw_uid, worker.pw_gid)
        proc = subprocess.run([sys.executable, "-m", "stack.ctl", "--env-file", str(env_file), "up"], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"{planted} is a symbolic link" in proc.stderr
        assert target.read_text() == "# root's file\n" and os.stat(target).st_uid == 0
        assert not stack_processes(cfg)
    finally:
        subprocess.run([sys.executable, "-m", "stack.ctl", "--env-file", str(root / "stack.env"), "down"], cwd=REPO,
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)

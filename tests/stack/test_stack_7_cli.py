"""The guide's `airflow` commands against the running test stack, as a user types them.

- through the stack's CLI (bin/airflow, `make airflow`, `python -m stack.ctl airflow`): each
  command of the guide once, in its Airflow 3 form, its output checked (CLI start-up costs 2-4 s
  a call here: one call per command, three at a time);
- a bare `airflow` with the stack's AIRFLOW_HOME stops, naming the wrapper, and creates no
  airflow.db; the rendered airflow.cfg holds no secret and cannot change what a program sees;
- the wrapper refuses clearly when the stack is stopped or not installed, and points at the
  Airflow 3 replacement of a removed command;
- task logs through the REST API (`python -m stack.ctl task-logs`) and the log file for `tail -f`;
- the official apache-airflow-client: DAGs, a trigger, task states, an XCom and a task log.

The run-level commands use the test-only DAG `stack_cli_probe` (tests/stack/dags): one short task
that echoes the run conf's word into its log and XCom, so the test knows what they must hold and
no product DAG consumes the session's batches. Variables and connections the test creates are
deleted again.
"""

from __future__ import annotations

import configparser
import json
import os
import pwd
import re
import shlex
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest

from stack import envfile
from stack.components import SECRET_AIRFLOW_KEYS
from stack.config import CONTROL_USER, VENV_BIN, WORKER_USER

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "bin" / "airflow"
PROBE = "stack_cli_probe"
CHAIN = ["check_new_data", "validate_data", "preprocess", "train", "evaluate", "check_drift", "approve_deploy", "deploy"]
PRODUCT_DAGS = {"data_validation_dag", "ml_pipeline_dag", "model_retraining_dag"}
CLI_TIMEOUT = 240


def _user_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any Airflow setting (what a user's shell has)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(extra)
    return env


def _wrapper(stack, *args: str, cwd: Path | None = None, flag: bool = False) -> subprocess.CompletedProcess:
    """bin/airflow ARGS against the test stack: its env file from STACK_ENV_FILE, or from
    --env-file with `flag`."""
    env = _user_env() if flag else _user_env(STACK_ENV_FILE=str(stack.env_file))
    argv = [str(WRAPPER), *(["--env-file", str(stack.env_file)] if flag else []), *args]
    return subprocess.run(argv, cwd=cwd or "/", env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)


def _make(stack, args: str) -> subprocess.CompletedProcess:
    """make airflow ARGS="..." against the test stack."""
    return subprocess.run(["make", "-s", "airflow", f"ARGS={args}"], cwd=REPO,
                          env=_user_env(STACK_ENV_FILE=str(stack.env_file)), capture_output=True, text=True,
                          timeout=CLI_TIMEOUT)


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    return result.stdout


def _json_line(text: str) -> list | dict:
    """The JSON document a `-o json` command printed (log lines may precede it)."""
    return json.loads(next(line for line in reversed(text.splitlines()) if line.startswith(("[", "{"))))


def _files(root: Path) -> dict[str, int]:
    """path -> owner uid of everything under `root` (PostgreSQL's own folder left out)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d != "postgres"]
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            try:
                found[path] = os.lstat(path).st_uid
            except FileNotFoundError:
                pass
    return found


@pytest.fixture(scope="module")
def probe_ready(dags_ready):
    """The stack with stack_cli_probe parsed."""
    deadline = time.monotonic() + 120
    while dags_ready.api("GET", f"/dags/{PROBE}").status_code != 200:
        assert time.monotonic() < deadline, f"{PROBE} not parsed within 120 s"
        time.sleep(1)
    return dags_ready


@pytest.fixture(scope="module")
def guide(probe_ready, tmp_path_factory) -> dict:
    """Every command of the guide once through the stack's CLI; returns their results, the probe
    run the CLI triggered and what it must hold."""
    stack = probe_ready
    word = uuid.uuid4().hex[:12]
    names = {"var": f"cli_guide_var_{word}", "conn": f"cli_guide_conn_{word}",
             "value": f"guide value {word}", "password": f"pw-{word}"}
    private_cwd = tmp_path_factory.mktemp("private-cwd")  # mode 700, root's: user mlops cannot enter it
    before = _files(stack.cfg.home)
    started = time.monotonic()
    out: dict = {"word": word, **names}
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            first = {
                "list": pool.submit(_wrapper, stack, "dags", "list", "-o", "json"),
                "show": pool.submit(_wrapper, stack, "dags", "show", "ml_pipeline_dag"),
                "tasks": pool.submit(_wrapper, stack, "tasks", "list", "ml_pipeline_dag"),
                "trigger": pool.submit(_wrapper, stack, "dags", "trigger", PROBE, "--conf",
                                       json.dumps({"word": word}), "-o", "json"),
                "vset": pool.submit(_wrapper, stack, "variables", "set", names["var"], names["value"]),
                "cadd": pool.submit(_wrapper, stack, "connections", "add", names["conn"], "--conn-type", "generic",
                                    "--conn-host", "example.invalid", "--conn-login", "guide",
                                    "--conn-password", names["password"]),
                "dbcheck": pool.submit(_wrapper, stack, "db", "check", cwd=private_cwd, flag=True),
                "users": pool.submit(_make, stack, "users list -o json"),
            }
            out.update({name: future.result() for name, future in first.items()})
            out["run_id"] = _json_line(_ok(out["trigger"]))[0]["dag_run_id"]
            out["run"] = stack.wait_run(PROBE, out["run_id"], timeout=300)
            run_id = out["run_id"]
            second = {
                "runs": pool.submit(_wrapper, stack, "dags", "list-runs", PROBE, "-o", "json"),
                "dstate": pool.submit(_wrapper, stack, "dags", "state", PROBE, run_id),
                "tstate": pool.submit(_wrapper, stack, "tasks", "state", PROBE, "echo", run_id),
                "tstates": pool.submit(_wrapper, stack, "tasks", "states-for-dag-run", PROBE, run_id, "-o", "json"),
                "vget": pool.submit(_wrapper, stack, "variables", "get", names["var"]),
                "cget": pool.submit(_wrapper, stack, "connections", "get", names["conn"], "-o", "json"),
            }
            out.update({name: future.result() for name, future in second.items()})
        out["cdelete"] = _wrapper(stack, "connections", "delete", names["conn"])
        out["rest_var"] = stack.api("GET", f"/variables/{names['var']}")
        out["rest_conn"] = stack.api("GET", f"/connections/{names['conn']}")
        out["seconds"] = time.monotonic() - started
        after = _files(stack.cfg.home)
        out["new_root_files"] = sorted(p for p, uid in after.items() if uid == 0 and p not in before)
        yield out
    finally:
        stack.api("DELETE", f"/variables/{names['var']}")
        stack.api("DELETE", f"/connections/{names['conn']}")


def test_dags_list_show_and_tasks_list(guide) -> None:
    listed = {d["dag_id"]: d for d in _json_line(_ok(guide["list"]))}
    assert PRODUCT_DAGS | {PROBE} <= set(listed), sorted(listed)
    for dag_id in PRODUCT_DAGS:
        assert listed[dag_id]["owners"] in ("mlops", ["mlops"]) and str(listed[dag_id]["is_paused"]) == "False"
    show = _ok(guide["show"])
    for upstream, downstream in zip(CHAIN, CHAIN[1:]):
        assert f"{upstream} -> {downstream}" in show, show
    assert set(_ok(guide["tasks"]).split()) == set(CHAIN)


def test_trigger_and_the_run_id_of_a_run_without_logical_date(guide) -> None:
    triggered = _json_line(_ok(guide["trigger"]))[0]
    # A manual run has no logical date: the run id is what names it (printed by trigger and list-runs).
    assert triggered["logical_date"] is None and triggered["conf"] == {"word": guide["word"]}
    # The CLI ran as the control-plane user, not as root.
    assert triggered["triggering_user_name"] == CONTROL_USER
    assert guide["run"]["state"] == "success", guide["run"]
    runs = {r["run_id"]: r for r in _json_line(_ok(guide["runs"]))}
    assert runs[guide["run_id"]]["state"] == "success" and not runs[guide["run_id"]]["logical_date"]
    state_line = _ok(guide["dstate"]).strip().splitlines()[-1]
    assert state_line.split(",")[0] == "success" and guide["word"] in state_line, state_line
    assert _ok(guide["tstate"]).strip().splitlines()[-1] == "success"
    states = _json_line(_ok(guide["tstates"]))
    assert [(s["task_id"], s["state"]) for s in states] == [("echo", "success")]


def test_variables_set_get_with_the_stack_fernet_key(guide) -> None:
    assert f"Variable {guide['var']} created" in _ok(guide["vset"])
    assert _ok(guide["vget"]).strip().splitlines()[-1] == guide["value"]
    # The api-server decrypts what the CLI stored: both hold the same Fernet key.
    assert guide["rest_var"].status_code == 200 and guide["rest_var"].json()["value"] == guide["value"]


def test_connections_add_get_delete(guide) -> None:
    assert f"Successfully added `conn_id`={guide['conn']}" in _ok(guide["cadd"])
    got = _json_line(_ok(guide["cget"]))[0]
    assert (got["conn_type"], got["host"], got["login"], got["password"]) == (
        "generic", "example.invalid", "guide", guide["password"])
    assert f"Successfully deleted connection with `conn_id`={guide['conn']}" in _ok(guide["cdelete"])
    assert guide["rest_conn"].status_code == 404


def test_db_check_and_users_list(stack, guide) -> None:
    # Run from a folder the CLI's user cannot enter, with --env-file instead of STACK_ENV_FILE.
    result = guide["dbcheck"]
    assert "Connection successful" in _ok(result) + result.stderr
    users = {u["username"]: u["roles"] for u in _json_line(_ok(guide["users"]))}
    for role, key in (("Admin", "ADMIN"), ("Op", "OP"), ("MLEngineer", "ML"), ("Viewer", "VIEWER")):
        assert users[stack.cfg.env[f"AIRFLOW_{key}_USER"]] == [role], users


def test_cli_writes_nothing_as_root_and_no_airflow_db(stack, guide) -> None:
    assert guide["new_root_files"] == [], guide["new_root_files"][:20]
    assert not list(stack.cfg.home.rglob("airflow.db")) and not list(stack.cfg.data_dir.rglob("airflow.db"))
    print(f"\n{len([k for k in guide if hasattr(guide[k], 'returncode')])} CLI calls in {guide['seconds']:.1f} s")


def _secret_leaks(text: str, env: dict[str, str]) -> list[str]:
    return sorted(k for k, v in env.items() if envfile.is_secret(k) and v and (v in text or quote(v, safe="") in text))


def test_bare_airflow_with_a_stack_home_stops_naming_the_wrapper(stack) -> None:
    homes = {stack.cfg.airflow_home: CONTROL_USER, stack.cfg.worker_home: WORKER_USER}
    bare = [str(VENV_BIN / "airflow"), "db", "check"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        # Run in place, as the issue's user did: AIRFLOW_HOME=<home>, current directory <home>.
        results = dict(zip(homes, pool.map(lambda home: subprocess.run(
            bare, cwd=home, env=_user_env(AIRFLOW_HOME=str(home)), capture_output=True, text=True,
            timeout=CLI_TIMEOUT), homes)))
    for home, result in results.items():
        assert result.returncode != 0, result.stdout
        last = result.stderr.strip().splitlines()[-1]
        assert f"AIRFLOW_HOME={home} belongs to the native stack" in last and str(WRAPPER) in last, last
        assert str(stack.env_file) in last and "Connection successful" not in result.stdout + result.stderr
        assert not (home / "airflow.db").exists()
    assert not list(stack.cfg.home.rglob("airflow.db"))


def test_rendered_airflow_cfg_has_no_secret_and_changes_no_program(stack) -> None:
    programs = {path.stem: json.loads(path.read_text()) for path in stack.cfg.env_dir.glob("*.json")}
    for home, owner in ((stack.cfg.airflow_home, CONTROL_USER), (stack.cfg.worker_home, WORKER_USER)):
        cfg_file = home / "airflow.cfg"
        text = cfg_file.read_text()
        assert pwd.getpwuid(cfg_file.stat().st_uid).pw_name == owner
        assert _secret_leaks(text, stack.cfg.env) == []
        parser = configparser.ConfigParser()
        parser.read_string(text)
        assert parser["core"]["executor"] == "CeleryExecutor"
        assert parser["core"]["auth_manager"].endswith("FabAuthManager")
        assert f"127.0.0.1:{stack.cfg.ports['POSTGRES_PORT']}/" in text  # names the database (comment)
        assert not parser.has_option("database", "sql_alchemy_conn")
        settings = {f"AIRFLOW__{s.upper()}__{k.upper()}": v for s in parser.sections() for k, v in parser[s].items()}
        assert not set(settings) & SECRET_AIRFLOW_KEYS
        refusal = settings.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD")
        users = {name: env for name, env in programs.items() if env.get("AIRFLOW_HOME") == str(home)}
        expected = ({"api-server", "scheduler", "dag-processor", "triggerer", "log-server", "flower", "maintenance-worker"}
                    if owner == CONTROL_USER else {"worker-light1", "worker-light2", "worker-heavy1"})
        assert set(users) == expected, sorted(users)
        for name, env in users.items():
            # Every setting of the file is already in the program's environment, which wins: the file
            # changes nothing it sees, and its database command never runs for it.
            differ = {k: (v, env.get(k)) for k, v in settings.items() if env.get(k) != v}
            assert not differ, (name, differ)
            assert env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
        # The command itself: with the variable set (only `airflow config list` asks then) it repeats
        # it; without, it fails naming the stack's CLI.
        argv = shlex.split(refusal)
        url = "postgresql+psycopg2://u:p%40ss@127.0.0.1:1/db"
        repeat = subprocess.run(argv, env={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}, capture_output=True, text=True)
        assert (repeat.returncode, repeat.stdout) == (0, url)
        refuse = subprocess.run(argv, env={}, capture_output=True, text=True)
        assert refuse.returncode == 1 and str(WRAPPER) in refuse.stderr and refuse.stdout == ""


def test_wrapper_refuses_a_stopped_or_uninstalled_stack_and_removed_commands(stack, tmp_path) -> None:
    """Each refusal names its fix and starts no Airflow."""
    stopped = tmp_path / "stopped.env"
    stopped.write_text(stack.env_file.read_text().replace(f"STACK_HOME={stack.cfg.env['STACK_HOME']}",
                                                          f"STACK_HOME={tmp_path / 'never-started'}"))
    result = subprocess.run([str(WRAPPER), "--env-file", str(stopped), "dags", "list"], cwd=tmp_path,
                            env=_user_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "is not running" in result.stderr and "make up" in result.stderr, result.stderr
    assert str(stopped) in result.stderr

    checkout = tmp_path / "checkout"
    (checkout / "bin").mkdir(parents=True)
    (checkout / "bin" / "airflow").write_bytes(WRAPPER.read_bytes())
    (checkout / "bin" / "airflow").chmod(0o755)
    result = subprocess.run([str(checkout / "bin" / "airflow"), "dags", "list"], env=_user_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "make install" in result.stderr and str(checkout) in result.stderr

    # Another user cannot read the env file (root's, mode 600): one line saying to use sudo.
    result = subprocess.run(["runuser", "-u", WORKER_USER, "--", str(WRAPPER), "--env-file", str(stack.env_file),
                             "dags", "list"], cwd="/", env=_user_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "Permission denied" in result.stderr and "sudo" in result.stderr, result.stderr

    for args, replacement in ((["tasks", "logs", "ml_pipeline_dag", "train", "manual__x"], "task-logs"),
                              (["webserver"], "api-server"), (["db", "init"], "db migrate")):
        result = _wrapper(stack, *args)
        assert result.returncode == 2 and replacement in result.stderr, (args, result.stderr)


def test_task_logs_through_the_rest_api_and_the_file_for_tail(stack, guide) -> None:
    shown = stack.ctl("task-logs", PROBE, "echo", guide["run_id"])
    assert shown.returncode == 0, shown.stderr
    assert f"INFO airflow.task - CLI-PROBE {guide['word']}" in shown.stdout, shown.stdout[-2000:]
    path = stack.cfg.task_logs / f"dag_id={PROBE}" / f"run_id={guide['run_id']}" / "task_id=echo" / "attempt=1.log"
    assert f"log file on this host: {path}" in shown.stderr and "state success" in shown.stderr
    assert f"CLI-PROBE {guide['word']}" in path.read_text()
    # Without RUN_ID: the DAG's newest run; --path prints only the file.
    only = stack.ctl("task-logs", PROBE, "echo", "--path")
    newest = stack.api("GET", f"/dags/{PROBE}/dagRuns", params={"order_by": "-run_after", "limit": 1}).json()
    assert only.returncode == 0 and only.stdout.strip() == str(
        path.parents[2] / f"run_id={newest['dag_runs'][0]['dag_run_id']}" / "task_id=echo" / "attempt=1.log")
    missing = stack.ctl("task-logs", PROBE, "no_such_task", guide["run_id"])
    assert missing.returncode == 1 and "no_such_task" in missing.stderr and "not found" in missing.stderr


def test_official_airflow_client(probe_ready) -> None:
    """apache-airflow-client against the stack: list DAGs, trigger, task states, an XCom, a log."""
    import airflow_client.client as airflow_client
    from airflow_client.client.api import dag_api, dag_run_api, task_instance_api, x_com_api
    from airflow_client.client.exceptions import ApiException
    from airflow_client.client.models import TriggerDAGRunPostBody

    stack = probe_ready
    word = uuid.uuid4().hex[:12]
    config = airflow_client.Configuration(host=stack.cfg.api_url, access_token=stack.token("op"))
    with airflow_client.ApiClient(config) as client:
        dags = dag_api.DAGApi(client).get_dags(limit=100)
        assert PRODUCT_DAGS | {PROBE} <= {d.dag_id for d in dags.dags}
        runs = dag_run_api.DagRunApi(client)
        run = runs.trigger_dag_run(PROBE, TriggerDAGRunPostBody(logical_date=None, conf={"word": word}))
        deadline = time.monotonic() + 300
        while (state := runs.get_dag_run(PROBE, run.dag_run_id).state.value) not in ("success", "failed"):
            assert time.monotonic() < deadline, f"{run.dag_run_id} still {state}"
            time.sleep(1)
        assert state == "success"
        tis = task_instance_api.TaskInstanceApi(client)
        assert [(t.task_id, t.state.value) for t in tis.get_task_instances(PROBE, run.dag_run_id).task_instances] == [
            ("echo", "success")]
        xcom = x_com_api.XComApi(client).get_xcom_entry(PROBE, "echo", run.dag_run_id, "return_value")
        assert xcom.actual_instance.value == {"word": word}
        # Logs: the JSON response deserializes (the client asks for JSON by default) ...
        log = tis.get_log(PROBE, run.dag_run_id, "echo", 1)
        assert any(f"CLI-PROBE {word}" == line.event for line in log.content.actual_instance)
        # ... the NDJSON one does not (client 3.3.2); read it raw instead, as the README shows.
        with pytest.raises(ApiException, match="Unsupported content type: application/x-ndjson"):
            tis.get_log(PROBE, run.dag_run_id, "echo", 1, accept="application/x-ndjson")
        raw = tis.get_log_without_preload_content(PROBE, run.dag_run_id, "echo", 1,
                                                  _headers={"Accept": "application/x-ndjson"})
        assert raw.status == 200
        events = [json.loads(line)["event"] for line in raw.data.decode().splitlines() if line]
        assert f"CLI-PROBE {word}" in events


def test_readme_guide_table_names_existing_tests_and_tested_commands() -> None:
    """Every test the README's guide table cites exists, and every `bin/airflow` command it shows
    is one that the tests above run."""
    text = (REPO / "README.md").read_text()
    section = text.split("## From the guide to this stack", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `") or line.startswith("| a run")]
    assert len(rows) >= 20, rows
    source = Path(__file__).read_text()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert len(cells) == 3, row
        current = None
        for ref in re.findall(r"`([^`]+)`", cells[2]):
            path, _, name = ref.partition("::")
            current = REPO / "tests" / path if path else current
            assert current is not None and current.is_file(), (row, ref)
            if name:
                assert re.search(rf"^def {name}\(", current.read_text(), re.M), (row, ref)
        for command in re.findall(r"`bin/airflow ([a-z-]+ [a-z-]+)", cells[1]):
            group, sub = command.split()
            assert f'"{group}", "{sub}"' in source or f"{group} {sub}" in source, (row, command)

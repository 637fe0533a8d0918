"""docs/your-data.md does what it says: every command of its ```console blocks runs, in page
order, in a temporary working and data folder (the `mlops` console script, a local SQLite MLflow
store), and prints what the page quotes; the configuration excerpts are the file's; the tables
of checks and signals name the real ones; the claims its prose makes about the outputs hold.

How a quoted output is read: the lines after a ``$ command`` line are an excerpt of its stdout
(JSON, as ``mlops`` prints it with two-space indents) or of its stderr (lines starting
``mlops: ``). A quoted key must be in the output at that place; a quoted value must equal the
output's (``...`` stands for any value, or any text inside a string); a quoted list item must be
in that list. A command that quotes ``mlops: error:`` must exit 1, every other one 0.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from testkit import world

PAGE = world.REPO / "docs" / "your-data.md"
SYNTHETIC = world.REPO / "configs" / "synthetic_drift.yaml"
ANY = object()


# --- reading the page ------------------------------------------------------------------------------
def blocks(lang: str) -> list[list[str]]:
    """The fenced blocks of the page in language ``lang``, as lists of lines."""
    found = re.findall(r"^```" + lang + r"\n(.*?)^```$", PAGE.read_text(encoding="utf-8"),
                       flags=re.M | re.S)
    return [b.splitlines() for b in found]


@dataclass
class Step:
    command: str
    quoted: list[str] = field(default_factory=list)


def steps() -> list[Step]:
    """Every ``$ command`` of the page's console blocks, in order, with the lines it quotes."""
    out: list[Step] = []
    for block in blocks("console"):
        for line in block:
            if line.startswith("$ "):
                out.append(Step(line[2:]))
            else:
                assert out, f"{PAGE}: console block starts with output: {line!r}"
                out[-1].quoted.append(line)
    return out


def table_cells(heading: str) -> list[list[str]]:
    """Rows (cells) of the first table under the ``## ...`` heading that contains ``heading``."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def page_groups() -> dict[str, str]:
    """Each check of the validation report's table, by the group the page puts it in."""
    return {name: ticked(group)[0] for group, cell in table_cells("## 4. The validation report")
            for name in ticked(cell)}


# --- comparing quoted output -----------------------------------------------------------------------
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in text.split("...")), re.S)


def _quoted_value(raw: str) -> Any:
    raw = raw.rstrip(",")
    if raw == "...":
        return ANY
    return json.loads(raw)


def _matches(expected: Any, actual: Any) -> bool:
    if expected is ANY:
        return True
    if isinstance(expected, str):
        return isinstance(actual, str) and _pattern(expected).fullmatch(actual) is not None
    if expected is None or isinstance(expected, bool):
        return actual is expected
    if isinstance(expected, (int, float)):
        return isinstance(actual, (int, float)) and not isinstance(actual, bool) \
            and actual == expected
    return expected == actual


def _at(data: Any, path: list[Any]) -> Any:
    for key in path:
        data = data[key]
    return data


def json_mismatches(quoted: list[str], data: Any) -> list[str]:
    """What of the quoted JSON excerpt ``data`` does not show."""
    problems: list[str] = []
    path: list[str] = []
    for line in quoted:
        s = line.strip()
        if s in ("{", "}", "},", "[", "]", "],", "..."):
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        parent = path[:depth - 1]
        try:
            node = _at(data, parent)
        except (KeyError, IndexError, TypeError):
            problems.append(f"{'.'.join(parent)} missing (for {s})")
            continue
        keyed = re.fullmatch(r'"((?:[^"\\]|\\.)*)": (.*)', s)
        if keyed:
            key, rest = keyed.group(1), keyed.group(2).rstrip(",")
            path = [*parent, key]
            if not isinstance(node, dict) or key not in node:
                problems.append(f"{'.'.join(path)} missing")
            elif rest not in ("{", "[") and not _matches(_quoted_value(rest), node[key]):
                problems.append(f"{'.'.join(path)}: quoted {rest}, printed {node[key]!r}")
        elif not isinstance(node, list) or not any(_matches(_quoted_value(s), v) for v in node):
            problems.append(f"{'.'.join(parent)}: quoted item {s}, printed {node!r}")
    return problems


# --- running the page ------------------------------------------------------------------------------
@dataclass
class Ran:
    step: Step
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


class Shell:
    """Runs the page's commands in ``cwd`` with a clean environment and the venv's ``mlops``."""

    def __init__(self, cwd: Path, data: Path) -> None:
        from mlops.config import THRESHOLDS

        self.cwd = cwd
        self.env = dict(os.environ)
        for key in (*world._CLEAR, "MLOPS_DATASET", "MLOPS_RECIPES", "MLOPS_EXPERIMENT",
                    *(t.env for t in THRESHOLDS.values())):
            self.env.pop(key, None)
        self.env.update(MLOPS_DATA_DIR=str(data), MLOPS_FIT_THREADS="1",
                        PATH=f"{world.VENV_BIN}{os.pathsep}{self.env.get('PATH', '')}")

    def run(self, step: Step) -> Ran:
        command = step.command
        exported = re.fullmatch(r"export (\w+)=(.*)", command)
        if exported:
            name = exported.group(1)
            res = subprocess.run(["bash", "-c", f'{command}; printf %s "${name}"'], cwd=self.cwd,
                                 env=self.env, capture_output=True, text=True, timeout=60)
            self.env[name] = res.stdout
            return Ran(step, res.returncode, "", res.stderr)
        res = subprocess.run(["bash", "-c", command], cwd=self.cwd, env=self.env,
                             capture_output=True, text=True, timeout=900)
        return Ran(step, res.returncode, res.stdout, res.stderr)


def loans_block() -> dict[str, Any]:
    """The page's CSV configuration: the keys replaced in the copy of the synthetic file."""
    found = [yaml.safe_load("\n".join(b)) for b in blocks("yaml")]
    loans = [b for b in found if b.get("name") == "loans"]
    assert len(loans) == 1, "the page shows one configuration of the CSV data set `loans`"
    return loans[0]


def write_loans(cwd: Path) -> Path:
    """What the page's section 2 starts from: ``exports/loans.csv`` (two weeks of the synthetic
    rows, one table) and ``loans.yaml`` (the synthetic file with the page's keys replaced)."""
    from mlops.config import load_schema
    from mlops.data import load_source, week_labels

    config = {**yaml.safe_load(SYNTHETIC.read_text(encoding="utf-8")), **loans_block()}
    path = cwd / "loans.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    schema = load_schema(SYNTHETIC)
    rows = load_source(schema)
    weeks = week_labels(rows, schema)
    table = cwd / config["source"]["path"] / config["source"]["table"]
    table.parent.mkdir(parents=True)
    rows[weeks.isin(["2013-W16", "2013-W17"])].to_csv(table, index=False)
    return path


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> tuple[Shell, list[Ran]]:
    """Every command of the page, run in order; stops at the first that exits unexpectedly."""
    root = tmp_path_factory.mktemp("your-data")
    cwd = root / "work"
    cwd.mkdir()
    write_loans(cwd)
    shell = Shell(cwd, cwd / "data")
    ran: list[Ran] = []
    for step in steps():
        result = shell.run(step)
        ran.append(result)
        expect = 1 if any(q.startswith("mlops: error:") for q in step.quoted) else 0
        assert result.returncode == expect, (
            f"`{step.command}` exited {result.returncode}, the page implies {expect}:\n"
            f"{result.stderr[-3000:]}")
    return shell, ran


def ran_of(ran: list[Ran], command: str) -> Ran:
    found = [r for r in ran if r.step.command.endswith(command)]
    assert len(found) == 1, f"the page runs `...{command}` once"
    return found[0]


# --- the tests -------------------------------------------------------------------------------------
def test_every_command_prints_what_the_page_quotes(walkthrough: tuple[Shell, list[Ran]]) -> None:
    _, ran = walkthrough
    assert len(ran) >= 20 and any("--dataset synthetic_drift" in r.step.command for r in ran)
    problems: list[str] = []
    for r in ran:
        errors = [q for q in r.step.quoted if q.startswith("mlops: ")]
        body = [q for q in r.step.quoted if not q.startswith("mlops: ")]
        if body:
            try:
                data = r.json
            except ValueError:
                problems.append(f"`{r.step.command}`: quoted JSON, printed {r.stdout[:200]!r}")
                continue
            problems += [f"`{r.step.command}`: {p}" for p in json_mismatches(body, data)]
        for line in errors:
            if not any(_pattern(line).fullmatch(got) for got in r.stderr.splitlines()):
                problems.append(f"`{r.step.command}`: stderr has no line like {line!r}: "
                                f"{r.stderr[-1000:]!r}")
    assert not problems, "\n".join(problems)


def test_what_the_prose_says_about_the_outputs(walkthrough: tuple[Shell, list[Ran]]) -> None:
    shell, ran = walkthrough
    # Each data set has its folder under $MLOPS_DATA_DIR/datasets/, its model; one MLflow store.
    base = Path(shell.env["MLOPS_DATA_DIR"])
    described = ran_of(ran, "--dataset synthetic_drift dataset").json
    assert Path(described["data_dir"]) == base / "datasets" / "synthetic_drift"
    real = yaml.safe_load(SYNTHETIC.read_text(encoding="utf-8"))
    assert described["model_name"] == real["model_name"] == described["experiment"]
    assert (base.with_name(base.name + "-mlflow") / "mlflow.db").is_file()
    assert not (base / "landing").exists()  # the flights' folder stays untouched
    loans = ran_of(ran, "--dataset ./loans.yaml data replay").json
    assert Path(loans["landing_dir"]) == base / "datasets" / "loans" / "landing"
    # The replay writes the weeks asked for, and only those.
    replay = ran_of(ran, "data replay --from 2013-W08 --until 2013-W15").json
    assert replay["written"] == [f"2013-W{n:02d}" for n in range(8, 16)]
    # Checks that compare with history skip on the first week and run from the second on.
    first = ran_of(ran, "validate 2013-W08 --accept").json
    assert {first["checks"][c]["status"] for c in ("label", "volume", "distribution")} == {"skipped"}
    fourth = ran_of(ran, "validate 2013-W11 --accept").json
    assert {fourth["checks"][c]["status"] for c in ("label", "volume", "distribution")} == {"passed"}
    assert Path(first["accepted_to"]).is_file()
    # The weekly model holds out the newest week and trains on the others.
    train = ran_of(ran, "synthetic_drift train").json
    assert train["holdout_week"] not in train["train_weeks"]
    # Quiet on W13; on W14 only the model signal fires, the others stay under their thresholds.
    quiet = ran_of(ran, "drift --week 2013-W13").json
    drift = ran_of(ran, "drift --week 2013-W14").json
    for result in (quiet, drift):
        assert result["signals"]["data"]["share"] < result["signals"]["data"]["threshold"]
        label = result["signals"]["label"]
        assert abs(label["difference"]) < label["threshold"]
    model = quiet["signals"]["model"]
    assert model["drop"] < model["threshold"]
    model = drift["signals"]["model"]
    assert model["drop"] >= model["threshold"]
    assert model["roc_auc"] < model["reference_roc_auc"] - model["threshold"]
    # The bad batch left incoming/ for the data set's quarantine, beside its report.
    bad = ran_of(ran, "validate incoming/2013-W16.csv").json
    assert not (shell.cwd / "incoming" / "2013-W16.csv").exists()
    quarantined = Path(bad["quarantined_to"])
    assert quarantined.is_file() and Path(bad["report"]).is_file()
    assert quarantined.with_suffix(".validation.html").is_file()
    # The retraining by hand beats the champion on the holdout by more than the margin.
    decision = ran_of(ran, "evaluate 2").json["decision"]
    assert decision["gain"] > decision["margin"] and decision["roc_auc"] > decision["champion_roc_auc"]


def test_the_reports_hold_what_the_page_lists(walkthrough: tuple[Shell, list[Ran]]) -> None:
    _, ran = walkthrough
    text = PAGE.read_text(encoding="utf-8")
    section4 = text.split("## 4. The validation report", 1)[1].split("| group |", 1)[0]
    section5 = text.split("## 5. The drift report", 1)[1].split("| signal |", 1)[0]

    validation = ran_of(ran, "validate 2013-W11 --accept").json
    report = json.loads(Path(validation["report_json"]).read_text())
    listed = set(ticked(section4.split("printed", 1)[1].split("`validation.html` shows", 1)[0]))
    failed = ran_of(ran, "validate incoming/2013-W16.csv").json
    rejected = json.loads(Path(failed["report"]).read_text())
    assert "history" in listed and listed - {"error"} <= set(report), listed - set(report)
    assert listed <= set(rejected), listed - set(rejected)
    assert len(report["history"]) == 1 and Path(validation["report_html"]).is_file()
    from mlops.validation.report import HISTORY_LIMIT

    assert f"one entry per run (the newest {HISTORY_LIMIT})" in section4
    groups = page_groups()
    for name, entry in [*report["checks"].items(), *rejected["checks"].items()]:
        assert groups.get(name) == entry["group"], (name, entry["group"], groups.get(name))
    # Evidently's report is in validation.html with --html (W12), not without (W11).
    assert ran_of(ran, "validate 2013-W12 --accept --html > /dev/null")
    size = (Path(validation["report_html"]).parent.parent / "2013-W12" / "validation.html").stat().st_size
    assert size > 10 * Path(validation["report_html"]).stat().st_size, size
    assert rejected["status"] == "failed" and rejected["error"]["check"] == failed["check"]

    drift = ran_of(ran, "drift --week 2013-W14").json
    saved = json.loads(Path(drift["report_json"]).read_text())
    listed = set(ticked(section5.split("printed:", 1)[1].split("One entry", 1)[0]))
    assert "column_scores" in listed and listed - {"champion vN", "training table"} <= set(saved)
    assert saved["column_scores"] and {k: v for k, v in saved.items() if k != "column_scores"} == drift
    page = Path(drift["report_html"]).read_text(encoding="utf-8")
    from mlops import drift_signals

    table = page.split("id='mlops-drift-signals'", 1)[1].split("</section>", 1)
    assert all(f"<td>{name}</td>" in table[0] for name in drift_signals.names())
    assert len(table[1]) > 10_000  # Evidently's report follows the signal table


def test_the_configuration_excerpts_are_the_file() -> None:
    from mlops.config import load_recipes, load_schema

    real = yaml.safe_load(SYNTHETIC.read_text(encoding="utf-8"))
    shown: set[str] = set()
    for block in blocks("yaml"):
        excerpt = yaml.safe_load("\n".join(block))
        if excerpt.get("name") == "loans":
            continue
        for key, value in excerpt.items():
            assert real.get(key) == value, f"the page's `{key}` differs from {SYNTHETIC}"
        shown |= set(excerpt)
    assert set(real) - shown <= {"description"}, f"not shown: {set(real) - shown}"
    schema = load_schema(SYNTHETIC)
    assert schema.row_key == tuple(real["row_key"]) and list(load_recipes(SYNTHETIC)) == list(real["recipes"])


def test_the_csv_configuration_loads(tmp_path: Path) -> None:
    from mlops.config import load_schema

    config = {**yaml.safe_load(SYNTHETIC.read_text(encoding="utf-8")), **loans_block()}
    path = tmp_path / "loans.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    schema = load_schema(path)
    assert schema.name == "loans" and "generator" not in schema.source
    assert set(schema.source) == {"path", "table"}
    from mlops.dataset import resolve

    dataset = resolve(str(path))  # a PATH is named by its file's stem
    assert dataset.name == path.stem and dataset.model_name == config["model_name"]
    assert dataset.threshold_defaults == config["thresholds"]


def test_the_dags_take_the_param(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_airflow.dataset import dataset_param

    text = PAGE.read_text(encoding="utf-8").split("## 6. On the stack", 1)[1]
    dags = [name for name in ticked(text.split("takes the data set", 1)[0]) if name.endswith("_dag")]
    assert len(dags) == 4
    for dag in dags:
        source = (world.REPO / "dags" / f"{dag}.py").read_text(encoding="utf-8")
        assert '"dataset": dataset_param()' in source, dag
    monkeypatch.delenv("MLOPS_DATASET", raising=False)
    assert dataset_param().value == "flights"
    monkeypatch.setenv("MLOPS_DATASET", "synthetic_drift")
    assert dataset_param().value == "synthetic_drift"


def test_the_tables_name_the_real_checks_and_signals() -> None:
    from mlops import drift_signals
    from mlops.config import THRESHOLDS

    source = "\n".join(p.read_text(encoding="utf-8")
                       for p in [*(world.REPO / "src/mlops/validation").glob("*.py"),
                                 world.REPO / "src/mlops/validate.py"])
    emitted = set(re.findall(r"\.(?:ok|warn|skip|fail|stop)\(\s*\"([a-z_.]+)\"", source))
    rows = table_cells("## 4. The validation report")
    named = {name for _, cell in rows for name in ticked(cell)}
    assert [ticked(group)[0] for group, _ in rows] == ["file", "schema", "quality", "anomalies",
                                                       "distribution"]
    assert emitted <= named, f"checks the page does not list: {emitted - named}"
    keys = {"column_scores", "drift_share", "reference_weeks"}
    assert named - keys <= emitted, f"listed but never emitted: {named - keys - emitted}"

    rows = table_cells("## 5. The drift report")
    assert [ticked(r[0])[0] for r in rows] == drift_signals.names()
    for name_cell, threshold_cell, _ in rows:
        signal = drift_signals.by_name(ticked(name_cell)[0])
        assert ticked(threshold_cell) == [signal.threshold] and signal.threshold in THRESHOLDS
    text = PAGE.read_text(encoding="utf-8")
    for name in ("drift_share", "auc_drop", "label_shift", "deploy_margin"):
        assert f"`{name}` {THRESHOLDS[name].default:g}" in text, name


def test_weekly_files_in_landing(walkthrough: tuple[Shell, list[Ran]]) -> None:
    """Section 2's rules for weekly files an adopter writes into landing/ itself."""
    shell, ran = walkthrough
    landing = Path(ran_of(ran, "data replay --from 2013-W08 --until 2013-W15").json["landing_dir"])
    accepted = Path(ran_of(ran, "validate 2013-W14 --accept").json["accepted_to"])
    mlops = "mlops --dataset synthetic_drift validate"

    groups = page_groups()

    def check_of(name: str, content: str) -> str:
        (landing / name).write_text(content, encoding="utf-8")
        res = shell.run(Step(f"{mlops} {landing / name}"))
        assert res.returncode == 1, res.stderr
        check = res.json["check"]
        entry = json.loads(Path(res.json["report"]).read_text())["checks"][check]
        assert entry["status"] == "failed" and groups[check] == entry["group"], (check, entry)
        return check

    rows = accepted.read_text(encoding="utf-8").splitlines()
    assert check_of("loans-week.csv", "\n".join(rows) + "\n") == "temporal.batch_name"
    assert check_of("2013-W20.csv", "\n".join(rows) + "\n") == "temporal.week"
    import pandas as pd

    bad = Path(ran_of(ran, "validate incoming/2013-W16.csv").json["quarantined_to"])
    week16 = pd.read_csv(bad)
    week16["label"] = week16["label"].clip(upper=1)
    week16["id"] = pd.read_csv(accepted)["id"].to_numpy()
    assert check_of("2013-W16.csv", week16.to_csv(index=False)) == "row_key.accepted"
    monday = [r for r in rows if "2013-04-01T" not in r]
    assert check_of("2013-W14.csv", "\n".join(monday) + "\n") in (
        "temporal.missing_days", "temporal.partial_day")


def test_the_files_and_names_the_page_cites_exist() -> None:
    import importlib

    prose = re.sub(r"^```.*?^```$", "", PAGE.read_text(encoding="utf-8"), flags=re.M | re.S)
    cited = set(ticked(prose))
    files = sorted(c for c in cited if re.fullmatch(r"(configs|tests|src|dags|docs)/[\w/.-]+", c)
                   and "NAME" not in c)
    assert files and [f for f in files if not (world.REPO / f).exists()] == []
    names = sorted(c for c in cited if re.fullmatch(r"mlops(_airflow)?(\.\w+)+", c))
    assert "mlops.config.THRESHOLDS" in names
    for name in names:
        module, _, attribute = name.rpartition(".")
        try:
            importlib.import_module(name)
        except ImportError:
            assert hasattr(importlib.import_module(module), attribute), name

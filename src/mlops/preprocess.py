"""Preprocess: the DVC stage that turns ``accepted/*.csv`` into ``processed/training.parquet``.

The committed ``dvc.yaml`` is copied into the data folder (the data root is configurable), the
folder is initialised once with ``dvc init --no-scm`` and ``dvc repro`` runs there. A file lock
serialises concurrent runs; a second ``dvc repro`` on unchanged inputs does nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlops import batches, config
from mlops.config import load_schema
from mlops.errors import PreprocessError
from mlops.util import atomic_write_bytes, durable_replace, file_lock, read_parquet, to_jsonable, week_of


def build_training_table(accepted: str | Path | None = None, out: str | Path | None = None,
                         schema_file: str | Path | None = None) -> dict[str, Any]:
    """Read every accepted batch, derive features and label, write the parquet table atomically."""
    from mlops.data import build_table, read_batch

    schema = load_schema(schema_file) if schema_file else load_schema()
    src = Path(accepted) if accepted else batches.accepted_dir()
    dest = Path(out) if out else config.processed_table()
    files = sorted(src.glob("*.csv"))
    if not files:
        raise PreprocessError(f"{src}: no accepted batch to build the training table from")
    table = build_table([(week_of(p), read_batch(p, schema)) for p in files], schema)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    table.to_parquet(tmp, index=False)
    durable_replace(tmp, dest)
    weeks = sorted(table["week"].unique())
    return to_jsonable({"table": dest, "rows": len(table), "weeks": weeks,
                        "positive_rate": float(table[schema.target_name].mean()) if len(table) else None})


def _dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env["MLOPS_DATA_DIR"] = str(cwd)
    # -I: the data folder (the working directory, which tasks write to) is never on sys.path,
    # nor is anything from PYTHON* variables or the user's site folder.
    return subprocess.run([sys.executable, "-I", "-m", "dvc", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)


def _sync(src: Path, dest: Path) -> None:
    data = src.read_bytes()
    if not dest.exists() or dest.read_bytes() != data:
        atomic_write_bytes(dest, data)


def run_preprocess() -> dict[str, Any]:
    """Run the DVC ``preprocess`` stage in the data folder; return table path, rows and weeks."""
    root = config.data_dir()
    accepted = batches.accepted_dir()
    if not batches.accepted_batches():
        raise PreprocessError(f"{accepted}: no accepted batch; validate and accept batches first")
    with file_lock("preprocess"):
        if not (root / ".dvc").is_dir():
            res = _dvc(["init", "--no-scm", "-q"], root)
            if res.returncode != 0:
                raise PreprocessError(f"dvc init in {root} failed: {res.stderr.strip()}")
        _sync(config.dvc_template(), root / "dvc.yaml")
        _sync(Path(load_schema().path), root / "schema.yaml")
        res = _dvc(["repro", "preprocess"], root)
        if res.returncode != 0:
            raise PreprocessError(f"dvc repro in {root} failed: "
                                  f"{(res.stderr or res.stdout).strip()[-2000:]}")
        ran = "Running stage 'preprocess'" in res.stdout
        table = config.processed_table()
        meta = read_parquet(table, columns=["week"])
    weeks = sorted(meta["week"].unique())
    return to_jsonable({"table": table, "rows": len(meta), "weeks": weeks,
                        "latest_week": weeks[-1] if weeks else None, "stage_ran": ran,
                        "dvc_lock": root / "dvc.lock"})

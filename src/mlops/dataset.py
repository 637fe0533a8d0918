"""The data set a step works on: schema, batch cadence, data folder, model, experiment, recipes and
threshold defaults, resolved from a name (``configs/NAME.yaml``) or a configuration file.

``flights`` is the default data set and keeps the locations of the process settings exactly:
``MLOPS_SCHEMA``, ``MLOPS_DATA_DIR``, ``MLOPS_MODEL_NAME``, ``MLOPS_EXPERIMENT`` and
``MLOPS_RECIPES`` apply to it (and only to it). Any other data set ``NAME`` gets a folder of its
own, ``$MLOPS_DATA_DIR/datasets/NAME`` (the flights' steps never look under ``datasets/``), its
own MLflow experiment and registered model (``model_name:`` of its file, else ``NAME``).

A step is given its data set explicitly where that is simple; everywhere else the accessors of
:mod:`mlops.config` read the *active* data set, set per CLI call or per Airflow task with
:func:`use_dataset` (a context variable: never a process-wide setting). Without an active data
set they read the environment as before.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops import config
from mlops.config import REPO_ROOT, THRESHOLDS, Recipe, Schema, base_data_dir
from mlops.errors import MlopsError

#: The data set of a step that names none (``MLOPS_DATASET`` overrides it).
DEFAULT_DATASET = "flights"
#: Folder, under the flights' data folder, that holds every other data set's folder.
DATASETS_FOLDER = "datasets"
#: Batch cadences the batch files and the steps understand (one ISO week per batch).
CADENCES = ("weekly",)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class DatasetError(MlopsError, ValueError):
    """A data set name or configuration file that cannot be used; names it."""


@dataclass(frozen=True)
class Dataset:
    """One data set and where its data, runs and models live."""

    name: str
    schema_file: Path
    data_dir: Path
    model_name: str
    experiment_name: str
    #: A recipes file of its own (MLOPS_RECIPES for the flights); None: the schema file's
    #: ``recipes`` section, else configs/recipes.yaml.
    recipes_file: Path | None = None
    cadence: str = "weekly"
    #: Threshold defaults of this data set (``thresholds:`` of its file), by threshold name.
    threshold_defaults: dict[str, float] = field(default_factory=dict)

    @property
    def schema(self) -> Schema:
        """The parsed schema of the data set."""
        return config.load_schema(self.schema_file)

    @property
    def recipes(self) -> dict[str, Recipe]:
        """The data set's training recipes, in file order (the first is the weekly one)."""
        with use_dataset(self):
            return config.load_recipes()

    @property
    def is_default(self) -> bool:
        """The flights: the data set whose locations the process settings give."""
        return self.name == DEFAULT_DATASET

    def describe(self) -> dict[str, Any]:
        """Name, files, folder, model and experiment (for a CLI answer or a log line)."""
        return {"name": self.name, "schema": str(self.schema_file), "data_dir": str(self.data_dir),
                "model_name": self.model_name, "experiment": self.experiment_name,
                "cadence": self.cadence}


def configs_dir() -> Path:
    """The repository's ``configs/`` (data set files by name)."""
    return REPO_ROOT / "configs"


def _read(path: Path) -> dict[str, Any]:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"data set {path}: cannot read it: {exc}") from exc
    if not isinstance(raw, dict):
        raise DatasetError(f"data set {path}: not a mapping")
    return raw


def _thresholds(path: Path, raw: Any) -> dict[str, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DatasetError(f"data set {path}: `thresholds` must map threshold names to numbers")
    unknown = sorted(set(raw) - set(THRESHOLDS))
    if unknown:
        raise DatasetError(f"data set {path}: unknown thresholds {unknown}; known: {sorted(THRESHOLDS)}")
    return {name: THRESHOLDS[name].check(value, f"{path}: thresholds.{name}") for name, value in raw.items()}


def _build(name: str, path: Path, default: bool) -> Dataset:
    raw = _read(path)
    for key in ("columns", "target", "time"):
        if key not in raw:
            raise DatasetError(f"data set {name!r}: {path} is no data set configuration (no `{key}`)")
    cadence = str(raw.get("cadence", "weekly"))
    if cadence not in CADENCES:
        raise DatasetError(f"data set {name!r}: {path}: cadence {cadence!r} unsupported; one of {list(CADENCES)}")
    stated = raw.get("model_name")
    if stated is not None and (not isinstance(stated, str) or not _NAME.match(stated)):
        raise DatasetError(f"data set {name!r}: {path}: model_name {stated!r} is not a plain name")
    if default:
        model = os.environ.get("MLOPS_MODEL_NAME") or stated or "flight_delay_classifier"
        experiment = os.environ.get("MLOPS_EXPERIMENT") or str(raw.get("experiment") or model)
        recipes_env = os.environ.get("MLOPS_RECIPES")
        recipes = Path(recipes_env).expanduser().resolve() if recipes_env else None
        folder = base_data_dir()
    else:
        model = stated or name
        experiment = str(raw.get("experiment") or model)
        recipes = None
        folder = base_data_dir() / DATASETS_FOLDER / name
    return Dataset(name=name, schema_file=path, data_dir=folder, model_name=model,
                   experiment_name=experiment, recipes_file=recipes, cadence=cadence,
                   threshold_defaults=_thresholds(path, raw.get("thresholds")))


def _default_schema() -> Path:
    env = os.environ.get("MLOPS_SCHEMA")
    return Path(env).expanduser().resolve() if env else configs_dir() / "flights.yaml"


def resolve(spec: str | Path | Dataset | None = None) -> Dataset:
    """The data set ``spec`` names: a Dataset as is; a name (``configs/NAME.yaml``; ``flights``
    with the process settings); a path to a YAML configuration (named by its file's stem, or by
    the name of the file in ``configs/`` it is); None: ``MLOPS_DATASET``, else the flights.
    A name or path that does not lead to a data set configuration is a DatasetError naming it."""
    if isinstance(spec, Dataset):
        return spec
    text = str(spec).strip() if spec is not None else (os.environ.get("MLOPS_DATASET") or "").strip()
    text = text or DEFAULT_DATASET
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        path = Path(text).expanduser().resolve()
        if not path.is_file():
            raise DatasetError(f"data set {text!r}: no such file {path}")
        name = path.stem
        if name == DEFAULT_DATASET:
            if path != (configs_dir() / "flights.yaml").resolve():
                raise DatasetError(f"data set {text!r}: the name flights is the default data set's; "
                                   "rename the file")
            return _build(name, _default_schema(), default=True)
        if not _NAME.match(name):
            raise DatasetError(f"data set {text!r}: {name!r} is not a plain name (letters, digits, _ . -)")
        return _build(name, path, default=False)
    if not _NAME.match(text):
        raise DatasetError(f"data set {text!r}: not a name (letters, digits, _ . -) nor a .yaml path")
    if text == DEFAULT_DATASET:
        return _build(text, _default_schema(), default=True)
    path = configs_dir() / f"{text}.yaml"
    if not path.is_file():
        raise DatasetError(f"unknown data set {text!r}: no {path} (known: {', '.join(known_names())})")
    return _build(text, path, default=False)


def known_names() -> list[str]:
    """Names of the data sets of ``configs/`` (the flights first)."""
    names = []
    for path in sorted(configs_dir().glob("*.yaml")):
        try:
            raw = _read(path)
        except DatasetError:
            continue
        if all(key in raw for key in ("columns", "target", "time")):
            names.append(path.stem)
    return sorted(names, key=lambda n: (n != DEFAULT_DATASET, n))


def data_roots() -> list[Path]:
    """The flights' data folder and every other data set's folder that exists under it."""
    base = base_data_dir()
    others = base / DATASETS_FOLDER
    return [base, *sorted(p for p in others.iterdir() if p.is_dir() and not p.is_symlink())] \
        if others.is_dir() else [base]


def active() -> Dataset | None:
    """The data set set by the innermost :func:`use_dataset`, or None."""
    return config.ACTIVE_DATASET.get()


def current() -> Dataset:
    """The active data set, else the default one (``MLOPS_DATASET``, else the flights)."""
    return active() or resolve(None)


@contextlib.contextmanager
def use_dataset(spec: str | Path | Dataset | None) -> Iterator[Dataset]:
    """Make ``spec``'s data set the active one within the block (this thread or task only)."""
    dataset = resolve(spec)
    token = config.ACTIVE_DATASET.set(dataset)
    try:
        yield dataset
    finally:
        config.ACTIVE_DATASET.reset(token)

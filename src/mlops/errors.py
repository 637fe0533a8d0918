"""Exceptions of the ML package. Each names the file and the check that failed."""

from __future__ import annotations


class MlopsError(Exception):
    """Base class of every error raised on purpose by the package."""


class SchemaError(MlopsError):
    """The data-set schema file is missing or inconsistent."""


class RecipeError(MlopsError):
    """The training recipes file is missing or inconsistent, or names an unknown recipe."""


class BatchValidationError(MlopsError):
    """A batch failed validation; it has been moved to quarantine (when it exists)."""

    def __init__(self, path: str, check: str, columns: list[str] | None = None,
                 detail: str = "", quarantined_to: str | None = None,
                 report: str | None = None, line: int | None = None) -> None:
        self.path = str(path)
        self.check = check
        self.columns = list(columns or [])
        self.detail = detail
        self.quarantined_to = quarantined_to
        self.report = report
        self.line = line
        at = f" at line {line}" if line is not None else ""
        cols = f" columns={','.join(self.columns)}" if self.columns else ""
        where = f"; quarantined to {quarantined_to}" if quarantined_to else ""
        super().__init__(f"{self.path}: check '{check}' failed{at}{cols}: {detail}{where}")


class BatchNotValidatedError(MlopsError):
    """accept_batch was called on a batch without a passed validation of that exact content."""


class BatchConflictError(MlopsError):
    """A different batch with the same week is already accepted (accepted data is immutable)."""


class PreprocessError(MlopsError):
    """The DVC preprocess stage failed or there is nothing to build."""


class TrainingError(MlopsError):
    """Training could not run (no data for the requested weeks, single class, ...)."""


class RegistryError(MlopsError):
    """A model-registry operation is impossible (unknown version, nothing to roll back to, ...)."""


class DriftError(MlopsError):
    """Drift detection has no batch or no reference to compare."""


class ModelIntegrityError(MlopsError):
    """A registered version's artifact is not what was registered, or not in the one safe format
    (sklearn flavor, skops serialization, the project's trusted types); nothing of it was loaded."""

    def __init__(self, version: str | int, path: str, detail: str) -> None:
        self.version = str(version)
        self.path = str(path)
        self.detail = detail
        super().__init__(f"model version {version}: {path}: {detail}; refused, nothing loaded")


class MonitoringError(MlopsError):
    """Served predictions cannot be monitored as asked (no labelled batch, no prediction log set)."""


class PredictionLogError(ConnectionError):
    """The prediction log could not be read (database down, refused, query failed). Not an
    MlopsError: an outage is retried, never read as "nothing was served"."""

"""The batch folders of the data root: the one module that knows their layout.

``$MLOPS_DATA_DIR/``
  - ``landing/<week>.csv``: arrived batches (``mlops data replay`` writes them)
  - ``accepted/<week>.csv``: batches that passed validation; never overwritten or removed here
  - ``quarantine/<stem>.csv`` beside ``<stem>.validation.json|.html``: rejected batches (``<stem>``
    is the week, with a time stamp when the week was quarantined before)
  - ``reports/<week>/validation.json|.html``: the latest validation of the week, with its history
  - ``state/processed.json``: the watermark (weeks already handled, accepted or rejected)
  - ``state/accepted_index/``: row keys and label/volume figures of the accepted batches
    (:mod:`mlops.validation.accepted_index`)
  - ``state/locks/``: inter-process locks

The CLI, the validation and ``mlops_airflow`` call these functions instead of building paths.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from mlops import config
from mlops.util import WEEK_RE, atomic_write_bytes, file_lock, sha256_file, week_of, write_json

SUFFIX = ".csv"


# --- folders -------------------------------------------------------------------------------------
def landing_dir() -> Path:
    return config.sub_dir("landing")


def accepted_dir() -> Path:
    return config.sub_dir("accepted")


def quarantine_dir() -> Path:
    return config.sub_dir("quarantine")


def state_dir(name: str | None = None) -> Path:
    """``state/`` or one of its sub-folders (created)."""
    return config.sub_dir(f"state/{name}" if name else "state")


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().parent == folder.resolve()


def in_quarantine(path: Path) -> bool:
    return _inside(path, quarantine_dir())


def in_accepted(path: Path) -> bool:
    return _inside(path, accepted_dir())


# --- finding batches -----------------------------------------------------------------------------
def resolve(path: str | Path) -> Path:
    """A batch path, or a week label meaning ``landing/<week>.csv``."""
    p = Path(path)
    if not p.exists() and WEEK_RE.match(str(path)):
        return landing_dir() / f"{path}{SUFFIX}"
    return p.expanduser().absolute()


def landing_path(week: str) -> Path:
    return landing_dir() / f"{week}{SUFFIX}"


def accepted_path(week: str) -> Path:
    """Where the accepted batch of ``week`` is (or would be)."""
    return accepted_dir() / f"{week}{SUFFIX}"


def accepted_batches() -> list[Path]:
    """The accepted batch files, oldest week first."""
    return sorted(accepted_dir().glob(f"*{SUFFIX}"))


def known_weeks() -> set[str]:
    """Weeks that have a batch in landing, accepted or quarantine."""
    return {week_of(p) for d in (landing_dir(), accepted_dir(), quarantine_dir())
            for p in d.glob(f"*{SUFFIX}")}


def find(week: str) -> Path | None:
    """The batch of ``week``: the accepted one, else the one in landing, else None."""
    for cand in (accepted_path(week), landing_path(week)):
        if cand.is_file():
            return cand
    return None


def locate(week: str) -> Path:
    """Where a batch under validation is now: ``landing/<week>.csv``, or ``quarantine/<week>.csv``
    when a check running in parallel has rejected it already (validating a quarantined file
    never moves it)."""
    landing, quarantined = landing_path(week), quarantine_dir() / f"{week}{SUFFIX}"
    return landing if landing.exists() or not quarantined.exists() else quarantined


def arrived_between(start: datetime, end: datetime) -> list[Path]:
    """Landing batches whose modification time lies in ``[start, end)``, oldest week first."""
    found = []
    for path in landing_dir().glob(f"*{SUFFIX}"):
        mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
        if start <= mtime < end:
            found.append(path)
    return sorted(found)


# --- moving batches ------------------------------------------------------------------------------
def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")


def _quarantined_copy(week: str, sha256: str) -> Path | None:
    """A file of ``week`` already in quarantine with exactly this content."""
    for candidate in sorted(quarantine_dir().glob(f"{week}*{SUFFIX}")):
        stem = candidate.name[: -len(SUFFIX)]
        if (stem == week or stem.startswith(f"{week}.")) and sha256_file(candidate) == sha256:
            return candidate
    return None


def quarantine(path: Path, week: str, sha256: str | None = None) -> Path | None:
    """Move a rejected batch into ``quarantine/`` (never over an earlier rejected file) and
    return where it is; an accepted batch is copied, never moved; None when it is no file.

    Under the week's quarantine lock: validations of the same batch racing (the daily DAG runs
    its checks in parallel) leave exactly one quarantine file, and each returns it. ``sha256``
    is the content that was validated (read from ``path`` when not given)."""
    if in_quarantine(path):
        return path if path.is_file() else None
    with file_lock(f"quarantine-{week}"):
        already = None
        if list(quarantine_dir().glob(f"{week}*{SUFFIX}")):
            try:
                digest = sha256 or sha256_file(path)
            except FileNotFoundError:
                return None
            already = _quarantined_copy(week, digest)
        if not path.is_file():
            return already  # a parallel validation moved it
        if already is not None:
            if not in_accepted(path):
                path.unlink()  # the same content is in quarantine already: keep one copy
            return already
        qdir = quarantine_dir()
        stem = week if not (qdir / f"{week}{SUFFIX}").exists() else f"{week}.{_stamp()}"
        dest = qdir / f"{stem}{SUFFIX}"
        if in_accepted(path):
            shutil.copy2(path, dest)
        else:
            shutil.move(str(path), dest)
        return dest


@contextlib.contextmanager
def accepting() -> Iterator[None]:
    """The lock under which ``accepted/`` and its index change (one acceptance at a time, across
    processes)."""
    with file_lock("accepted"):
        yield


def store_accepted(path: Path, week: str) -> Path:
    """Copy a batch into ``accepted/<week>.csv`` atomically; call inside :func:`accepting`, after
    checking that the week is not accepted yet."""
    dest = accepted_path(week)
    if dest.exists():
        raise FileExistsError(f"{dest} exists: accepted data is never overwritten")
    atomic_write_bytes(dest, path.read_bytes())
    return dest


# --- report locations ----------------------------------------------------------------------------
def week_report(week: str) -> tuple[Path, Path]:
    """``reports/<week>/validation.json`` and ``.html``: the week's latest validation."""
    folder = config.reports_dir() / week
    return folder / "validation.json", folder / "validation.html"


def quarantine_report(batch: Path) -> tuple[Path, Path]:
    """The reports beside a quarantined batch file."""
    stem = batch.name[: -len(SUFFIX)] if batch.name.endswith(SUFFIX) else batch.name
    return (batch.parent / f"{stem}.validation.json", batch.parent / f"{stem}.validation.html")


def rejection_report(week: str) -> tuple[Path, Path]:
    """Where a rejection of other content for an already accepted week is filed (the week's
    own report keeps describing the accepted batch)."""
    return quarantine_report(quarantine_dir() / f"{week}.{_stamp()}{SUFFIX}")


# --- watermark -----------------------------------------------------------------------------------
def _watermark_path() -> Path:
    return state_dir() / "processed.json"


def processed_weeks() -> list[str]:
    """Weeks already handled (accepted or rejected), sorted."""
    path = _watermark_path()
    if not path.exists():
        return []
    return sorted(json.loads(path.read_text(encoding="utf-8")).get("weeks", []))


def new_batches() -> list[str]:
    """Paths of landing batches not yet marked processed, oldest week first."""
    done = set(processed_weeks())
    return [str(p) for p in sorted(landing_dir().glob(f"*{SUFFIX}")) if week_of(p) not in done]


def mark_processed(weeks: list[str] | str) -> dict[str, object]:
    """Add weeks (labels or batch paths) to the watermark; idempotent."""
    if isinstance(weeks, str):
        weeks = [weeks]
    labels = {week_of(w) for w in weeks}
    with file_lock("watermark"):
        done = set(processed_weeks())
        added = sorted(labels - done)
        done |= labels
        write_json(_watermark_path(), {
            "weeks": sorted(done), "latest": max(done) if done else None,
            "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return {"added": added, "latest": max(done) if done else None, "count": len(done)}

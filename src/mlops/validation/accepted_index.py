"""The index of the accepted batches: each batch's row keys (64-bit hashes of the schema's
``row_key`` columns) and its label and volume figures, so that validation never re-reads every
accepted file.

Kept in ``state/accepted_index/`` (see :mod:`mlops.batches`): ``index.json`` (per batch: file
size and mtime, sha256, rows, labelled rows, positives, days, key file) and one ``.npy`` file of
sorted key hashes per batch. Loading compares the entries with ``accepted/``: a batch without a
valid entry (index missing or corrupt, a key file damaged, a file placed in ``accepted/`` by hand,
another schema) is indexed again from its file, and entries of removed files are dropped. Changes
happen under :func:`mlops.batches.accepting`, the same lock as acceptance itself, so two
processes accepting at once cannot both add a row; readers see whole files only (atomic writes).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import batches
from mlops.config import Schema
from mlops.util import sha256_file, week_of, write_json
from mlops.validation.calendar import days_in_range

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

VERSION = 1
_FOLDER = "accepted_index"
_MANIFEST = "index.json"


def row_key_hashes(frame: "pd.DataFrame", schema: Schema) -> "np.ndarray":
    """One uint64 per row from the row-key columns, independent of how a value was written
    (``7``, ``7.0``; any ISO offset for a time)."""
    import pandas as pd

    parts = {}
    for name in schema.row_key:
        col, dtype = frame[name], schema.columns[name].dtype
        if dtype in ("int", "float"):
            parts[name] = pd.to_numeric(col, errors="coerce").astype("float64")
        elif dtype == "datetime":
            ts = pd.to_datetime(col, utc=True, errors="coerce", format="ISO8601")
            parts[name] = ts.astype("int64")
        else:
            parts[name] = col.astype("object").where(col.notna(), None)
    keys = pd.DataFrame(parts, index=frame.index, copy=False)  # no second copy to consolidate
    return pd.util.hash_pandas_object(keys, index=False).to_numpy(dtype="uint64")


def _fingerprint(schema: Schema) -> str:
    """What the entries depend on: a change of key, label rule, time column or date range
    re-indexes every batch."""
    basis = [list(schema.row_key), schema.target_column, schema.target_operator,
             schema.target_threshold, schema.target_missing, schema.time_column,
             [str(d) if d else None for d in schema.date_range]]
    return hashlib.sha256(json.dumps(basis).encode()).hexdigest()[:16]


def batch_figures(frame: "pd.DataFrame", schema: Schema, week: str) -> dict[str, int]:
    """Rows, labelled rows, positives and days of one batch."""
    from mlops.data import make_target

    keep, y = make_target(frame, schema)
    return {"rows": int(len(frame)), "labelled": int(keep.sum()),
            "positives": int(y[keep].sum()), "days": days_in_range(week, schema)}


@dataclass
class Clash:
    """Rows of a batch whose key is in an accepted batch."""

    week: str
    file: str
    positions: "np.ndarray"


class AcceptedIndex:
    """Row keys and figures of every accepted batch, in sync with ``accepted/`` when loaded."""

    def __init__(self, schema: Schema, entries: dict[str, dict[str, Any]],
                 keys: dict[str, "np.ndarray"], rebuilt: list[str]) -> None:
        self.schema = schema
        self.entries = entries
        self.keys = keys
        #: Weeks indexed again from their files by the last load (missing/stale/corrupt entries).
        self.rebuilt = rebuilt

    # --- loading -------------------------------------------------------------------------------
    @staticmethod
    def folder() -> Path:
        return batches.state_dir(_FOLDER)

    @classmethod
    def load(cls, schema: Schema, locked: bool = False) -> "AcceptedIndex":
        """The index, brought up to date with ``accepted/`` (under the acceptance lock when it
        has to change; ``locked``: the caller holds that lock already)."""
        index = cls._read(schema)
        if not index._stale():
            return index
        if locked:
            index._sync()
            return index
        with batches.accepting():
            index = cls._read(schema)  # another process may have brought it up to date
            index._sync()
        return index

    @classmethod
    def _read(cls, schema: Schema) -> "AcceptedIndex":
        import numpy as np

        folder = cls.folder()
        try:
            manifest = json.loads((folder / _MANIFEST).read_text(encoding="utf-8"))
            if manifest.get("version") != VERSION or manifest.get("fingerprint") != _fingerprint(schema):
                raise ValueError("other version or schema")
            entries = dict(manifest["batches"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            entries = {}
        keys: dict[str, np.ndarray] = {}
        for week, entry in list(entries.items()):
            try:
                arr = np.load(folder / entry["keys"], allow_pickle=False)
                if arr.dtype != np.uint64 or arr.ndim != 1 or len(arr) != int(entry["key_count"]):
                    raise ValueError("damaged key file")
                keys[week] = arr
            except (OSError, ValueError, KeyError, TypeError, EOFError):
                del entries[week]
        return cls(schema, entries, keys, [])

    def _files(self) -> dict[str, Path]:
        return {week_of(p): p for p in batches.accepted_batches()}

    @staticmethod
    def _same_file(entry: dict[str, Any], path: Path) -> bool:
        st = path.stat()
        return (entry.get("file") == path.name and entry.get("size") == st.st_size
                and entry.get("mtime_ns") == st.st_mtime_ns)

    def _stale(self) -> bool:
        files = self._files()
        if set(files) != set(self.entries):
            return True
        return not all(self._same_file(self.entries[w], p) for w, p in files.items())

    def _sync(self) -> None:
        """Index the accepted files that have no valid entry; drop entries without a file."""
        from mlops.data import read_batch

        files = self._files()
        changed = False
        for week in [w for w in self.entries if w not in files]:
            del self.entries[week]
            self.keys.pop(week, None)
            changed = True
        for week, path in files.items():
            entry = self.entries.get(week)
            if entry is not None and self._same_file(entry, path):
                continue
            try:
                frame = read_batch(path, self.schema, columns=self.columns())
            except (ValueError, OSError) as exc:
                raise ValueError(f"{path}: cannot index this accepted batch: {exc}") from exc
            self._put(week, path, frame)
            self.rebuilt.append(week)
            changed = True
        if changed:
            self._save()

    # --- changing ------------------------------------------------------------------------------
    def columns(self) -> list[str]:
        """The columns an entry is made from."""
        return list(dict.fromkeys([*self.schema.row_key, self.schema.target_column]))

    def _put(self, week: str, path: Path, frame: "pd.DataFrame",
             sha: str | None = None) -> None:
        import numpy as np

        sha = sha or sha256_file(path)
        hashes = (np.sort(row_key_hashes(frame, self.schema)) if self.schema.row_key
                  else np.zeros(0, dtype="uint64"))
        name = f"{week}.{sha[:16]}.npy"
        tmp = self.folder() / f".{name}.tmp.npy"
        np.save(tmp, hashes, allow_pickle=False)
        tmp.replace(self.folder() / name)
        st = path.stat()
        self.entries[week] = {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                              "sha256": sha, "keys": name, "key_count": int(len(hashes)),
                              **batch_figures(frame, self.schema, week)}
        self.keys[week] = hashes

    def add(self, week: str, path: Path, frame: "pd.DataFrame", sha: str) -> None:
        """Index a batch just stored in ``accepted/`` (call under the acceptance lock)."""
        self._put(week, path, frame, sha)
        self._save()

    def _save(self) -> None:
        folder = self.folder()
        write_json(folder / _MANIFEST, {"version": VERSION, "fingerprint": _fingerprint(self.schema),
                                        "batches": self.entries})
        used = {e["keys"] for e in self.entries.values()}
        for stale in folder.glob("*.npy"):
            if stale.name not in used and not stale.name.startswith("."):
                stale.unlink(missing_ok=True)

    # --- questions -----------------------------------------------------------------------------
    def figures(self, week: str) -> dict[str, Any] | None:
        """The entry of an accepted week (rows, labelled, positives, days, ...), or None."""
        return self.entries.get(week)

    def clashes(self, hashes: "np.ndarray", week: str, sha: str | None) -> list[Clash]:
        """Accepted batches holding some of these keys, biggest overlap first. The accepted batch
        of ``week`` itself is left out when it has the same content (``sha``)."""
        import numpy as np

        found = []
        for other, arr in self.keys.items():
            entry = self.entries[other]
            if other == week and entry.get("sha256") == sha:
                continue
            if not len(arr):
                continue
            pos = np.searchsorted(arr, hashes)
            pos[pos == len(arr)] = 0
            hit = np.flatnonzero(arr[pos] == hashes)
            if len(hit):
                found.append(Clash(other, entry["file"], hit))
        return sorted(found, key=lambda c: (-len(c.positions), c.week))

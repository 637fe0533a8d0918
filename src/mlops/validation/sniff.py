"""Reading a batch file: readable bytes, a CSV (not another format, no NUL byte, UTF-8), a header
without duplicate names, rows with the header's field count, then the pandas frame.

Every failure names the line (and the column where one can be told) so that a user can open the
file at the right place.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.config import Schema
from mlops.validation.findings import Findings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

_MAGIC = [(b"PAR1", "Parquet"), (b"PK\x03\x04", "ZIP/XLSX"), (b"\x1f\x8b", "gzip"),
          (b"\x89PNG", "PNG"), (b"%PDF", "PDF"), (b"SQLite format", "SQLite"),
          (b"\xd0\xcf\x11\xe0", "XLS/OLE"), (b"ARROW1", "Arrow/Feather"), (b"BZh", "bzip2"),
          (b"\xfd7zXZ", "xz")]
#: Longest field accepted, in characters (the csv module's default limit; no value of a tabular
#: batch comes near it).
MAX_FIELD = 131072
_BOM = "\ufeff"
#: Rows pandas parses at a time: its tokenizer holds every field of what it parses, several times
#: the text's size, so a large batch is parsed in pieces (see :func:`_parse_frame`).
PARSE_CHUNK_ROWS = 8192


@dataclass
class ParsedBatch:
    """A batch that parsed: its frame, header and where each data row starts in the file."""

    frame: "pd.DataFrame"
    header: list[str]
    lines: Sequence[int]

    def line_of(self, position: int) -> int:
        """The 1-based line of the file where the data row at ``position`` (0-based) starts."""
        return self.lines[position]


def read_bytes(found: Findings, path: Path, max_bytes: float | None = None) -> bytes:
    """The file's bytes; a missing path, a folder, an unreadable file or one over ``max_bytes``
    (the ``max_batch_bytes`` threshold, checked on the open file before anything is read) stops
    the run."""
    if not path.exists():
        raise found.stop("readable", f"no such file: {path}")
    if not path.is_file():
        raise found.stop("readable", f"not a regular file: {path}")
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if max_bytes is not None and size > max_bytes:
                raise found.stop("readable", f"{path} is {size} bytes, over max_batch_bytes={max_bytes:.0f}: "
                                 "refused before reading (raise the threshold if such batches are expected)",
                                 bytes=size)
            data = handle.read(int(max_bytes) + 1 if max_bytes is not None else -1)
    except OSError as exc:
        raise found.stop("readable", f"cannot read: {exc.strerror or exc}") from exc
    if max_bytes is not None and len(data) > max_bytes:  # it grew while being read
        raise found.stop("readable", f"{path} grew over max_batch_bytes={max_bytes:.0f} while being read",
                         bytes=len(data))
    found.ok("readable", bytes=len(data))
    return data


def _field_index(prefix: str) -> int:
    """0-based index of the CSV field in which a line's text ``prefix`` ends."""
    index, quoted = 0, False
    for ch in prefix:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            index += 1
    return index


def _column(header: list[str], index: int) -> str:
    return header[index] if index < len(header) else f"(field {index + 1}, beyond the header)"


def _locate(data: bytes, offset: int, header: list[str]) -> tuple[int, str]:
    """Line (1-based) and column of a byte offset."""
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    prefix = data[start:offset].decode("utf-8", errors="replace")
    return line, _column(header, _field_index(prefix))


def _first_line_header(data: bytes) -> list[str]:
    first = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").lstrip(_BOM)
    try:
        return next(csv.reader([first.rstrip("\r")]))
    except (csv.Error, StopIteration):
        return []


@contextlib.contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    old = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _unclosed_quote(line: str) -> int | None:
    """Index of the field in which a quote opens and the line ends, if any."""
    index, quoted, opened = 0, False, None
    for ch in line:
        if ch == '"':
            quoted = not quoted
            opened = index if quoted else None
        elif ch == "," and not quoted:
            index += 1
    return opened if quoted else None


def _oversized_field(text: str, line: int, header: list[str]) -> str | None:
    """The column of the over-long field that starts on ``line``: one longer than MAX_FIELD on
    that line, or one whose opening quote is never closed there."""
    rows = text.split("\n", line)
    if len(rows) < line:
        return None
    row = rows[line - 1].rstrip("\r")
    with _field_limit(sys.maxsize):
        try:
            fields = next(csv.reader([row]))
        except (csv.Error, StopIteration):
            fields = []
    for i, value in enumerate(fields):
        if len(value) > MAX_FIELD:
            return _column(header, i)
    opened = _unclosed_quote(row)
    return None if opened is None else _column(header, opened)


def _sniff_bytes(found: Findings, data: bytes) -> None:
    """Stop unless the bytes look like CSV text (UTF-8, no NUL byte, not another format). The
    decoded text is dropped at once: the structure check and pandas read the bytes."""
    if not data.strip():
        raise found.stop("empty_file", "the file is empty (0 bytes or only whitespace)")
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            raise found.stop("format", f"not a CSV file: looks like {kind}")
    header = _first_line_header(data)
    nul = data.find(b"\x00")
    if nul >= 0:
        line, column = _locate(data, nul, header)
        total = data.count(b"\x00")
        raise found.stop("format.nul_byte", f"binary content: {total} NUL byte(s), the first at "
                         f"line {line} in column {column}", [column] if header else [], line)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _locate(data, exc.start, header)
        raise found.stop("format", f"not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line} "
                         f"in column {column}", [column] if header else [], line) from exc
    head = text.removeprefix(_BOM).lstrip()[:1]
    del text
    if head in ("{", "["):
        raise found.stop("format", "not a CSV file: looks like JSON")
    if head == "<":
        raise found.stop("format", "not a CSV file: looks like XML/HTML")


def _text_stream(data: bytes) -> io.TextIOWrapper:
    """The CSV text of ``data`` decoded as it is read (no second copy of the whole file; a
    leading BOM is dropped)."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")


def _check_structure(found: Findings, data: bytes) -> tuple[list[str], Sequence[int]]:
    """Header and row starts of well-formed CSV text; stops on the first structural problem."""
    reader = csv.reader(_text_stream(data))
    header: list[str] = []
    starts = array("q")  # 8 bytes a row, not a list of int objects
    short: list[tuple[int, int]] = []  # (line, field count) of rows with too few fields
    long: list[tuple[int, int]] = []
    repeated: list[int] = []
    consumed = 0
    try:
        with _field_limit(MAX_FIELD):
            header = next(reader)
            consumed = reader.line_num
            n = len(header)
            for row in reader:
                start, consumed = consumed + 1, reader.line_num
                if not row:
                    continue
                starts.append(start)
                if len(row) < n:
                    short.append((start, len(row)))
                elif len(row) > n:
                    long.append((start, len(row)))
                elif row == header:
                    repeated.append(start)
    except csv.Error as exc:
        line = consumed + 1
        if "field larger than field limit" in str(exc):
            column = _oversized_field(data.decode("utf-8").removeprefix(_BOM), line, header)
            raise found.stop("corrupt", f"a field longer than {MAX_FIELD} characters at line {line}"
                             + (f" in column {column}" if column else "")
                             + " (a value too long, or a quote that is never closed)",
                             [column] if column else [], line) from exc
        raise found.stop("corrupt", f"unparseable CSV at line {line}: {exc}", [], line) from exc
    except StopIteration:
        raise found.stop("empty_file", "the file has no header line") from None
    n = len(header)
    if n < 2:
        raise found.stop("format", f"not a CSV file with the schema's columns: the header has {n} "
                         "field(s) (is the delimiter a comma?)", [], 1)
    if not starts:
        raise found.stop("header_only", "the file has a header but no data rows")
    counted = {name: header.count(name) for name in header}
    dups = [name for name, k in counted.items() if k > 1]
    if dups:
        where = "; ".join(f"{name!r} at positions "
                          + ", ".join(str(i + 1) for i, h in enumerate(header) if h == name)
                          for name in dups)
        raise found.stop("header.duplicate_columns", f"duplicate column name(s) in the header: "
                         f"{where}", dups, 1)
    if short and short[-1][0] == starts[-1] and not data.endswith((b"\n", b"\r")):
        line, fields = short[-1]
        raise found.stop("truncated", f"truncated file: the last row (line {line}) has {fields} of "
                         f"{n} fields and no line end", header[fields:], line,
                         lines=[s[0] for s in short[:20]])
    if short or long:
        bad = sorted(short + long)
        line, fields = bad[0]
        missing = header[fields:] if fields < n else []
        raise found.stop("corrupt", f"corrupt rows: {len(bad)} row(s) with a field count other than "
                         f"{n}, the first at line {line} ({fields} fields)", missing, line,
                         lines=[b[0] for b in bad[:20]])
    if repeated:
        raise found.stop("corrupt", f"the header is repeated at line {repeated[0]} ({len(repeated)} "
                         "time(s)): files concatenated with their headers?", [], repeated[0],
                         lines=repeated[:20])
    return header, starts


def parse(found: Findings, data: bytes, schema: Schema) -> ParsedBatch:
    """Check that the bytes are a well-formed CSV batch and parse them with pandas."""
    import pandas as pd

    from mlops.data import read_batch

    _sniff_bytes(found, data)
    header, starts = _check_structure(found, data)
    try:
        frame = _parse_frame(data, schema, len(starts))
        if frame is None:  # pieces pandas typed differently: one parse of the whole, as ever
            frame = read_batch(_text_stream(data), schema)
    except (ValueError, pd.errors.ParserError) as exc:
        raise found.stop("corrupt", f"pandas cannot parse the CSV: {exc}") from exc
    if len(frame) != len(starts):
        raise found.stop("corrupt", f"pandas read {len(frame)} rows where the CSV has "
                         f"{len(starts)}: blank or malformed lines?")
    found.ok("format", rows=len(frame), column_count=len(header))
    return ParsedBatch(frame=frame, header=header, lines=starts)


def _merged(pieces: list["pd.Series"]) -> "pd.Series | None":
    """One column from its parsed pieces, exactly as pandas types a parse of the whole file; None
    when that cannot be told from the pieces.

    Pandas types each column by the first of int64, float64, bool and str that every value of the
    parse fits: pieces of one dtype join as that dtype (str pieces only when they hold strings and
    NaN alone), int64 and float64 pieces as float64 (exact for integers up to 2**53)."""
    import pandas as pd

    dtypes = {str(p.dtype) for p in pieces}
    if dtypes == {"object"}:
        if any(pd.api.types.infer_dtype(p, skipna=True) not in ("string", "empty") for p in pieces):
            return None
    elif dtypes == {"int64", "float64"}:
        if any(p.dtype == "int64" and not _exact_as_float(p.to_numpy()) for p in pieces):
            return None
        pieces = [p.astype("float64") if p.dtype == "int64" else p for p in pieces]
    elif len(dtypes) != 1:
        return None
    return pd.concat(pieces, ignore_index=True)


def _exact_as_float(values: "np.ndarray") -> bool:
    """Every int64 value is exact as a float64 (|v| <= 2**53)."""
    import numpy as np

    return not len(values) or int(np.abs(values).max()) <= 2**53


_FILLED = ("int64", "float64", "bool")


class _Column:
    """One numeric, bool or string column filled piece by piece into one array of the batch's
    rows (the pieces are not kept: kept and joined at the end, they would double the frame's
    memory, the allocator not reusing their scattered space)."""

    def __init__(self, rows: int, dtype: Any) -> None:
        import numpy as np
        import pandas as pd

        #: The string dtype the column is read with (its values are held as objects until done).
        self.strings = dtype if isinstance(dtype, pd.StringDtype) else None
        self.values = np.empty(rows, dtype=object if self.strings else dtype)
        self.filled = 0

    def add(self, column: "pd.Series") -> bool:
        """Append a piece; False when the whole file would be typed otherwise (see _merged) or
        the piece does not fit."""
        if self.strings is not None:
            if column.dtype != self.strings:
                return False
            piece = column.to_numpy(dtype=object)
        else:
            piece = column.to_numpy()
        end = self.filled + len(piece)
        if end > len(self.values):
            return False
        kinds = {str(self.values.dtype), str(piece.dtype)}
        if len(kinds) > 1:
            if kinds != {"int64", "float64"}:
                return False
            if piece.dtype == "int64":
                if not _exact_as_float(piece):
                    return False
                piece = piece.astype("float64")
            else:
                if not _exact_as_float(self.values[:self.filled]):
                    return False
                self.values = self.values.astype("float64")
        self.values[self.filled:end] = piece
        self.filled = end
        return True

    def series(self, name: str) -> "pd.Series":
        import pandas as pd

        if self.strings is not None:
            return pd.Series(pd.array(self.values, dtype=self.strings), name=name, copy=False)
        return pd.Series(self.values, name=name, copy=False)


def _parse_frame(data: bytes, schema: Schema, rows: int) -> "pd.DataFrame | None":
    """The batch's frame (``rows``: the data rows the structure check counted), parsed
    ``PARSE_CHUNK_ROWS`` rows at a time so that the peak memory is the frame and one piece, not
    pandas' tokens of the whole file; None when a column's pieces were typed differently or the
    rows do not add up (the caller parses the whole file then)."""
    import pandas as pd

    from mlops.data import batch_dtypes

    order: list[str] = []
    filled: dict[str, _Column] = {}
    pieces: dict[str, list[pd.Series]] = {}
    with pd.read_csv(_text_stream(data), dtype=batch_dtypes(schema), low_memory=False,
                     chunksize=PARSE_CHUNK_ROWS) as reader:
        for first, piece in enumerate(reader):
            if first == 0:
                order = list(piece.columns)
            for name, column in piece.items():
                if first == 0 and (str(column.dtype) in _FILLED
                                   or isinstance(column.dtype, pd.StringDtype)):
                    filled[name] = _Column(rows, column.dtype)
                if name in filled:
                    if not filled[name].add(column):
                        return None
                else:  # str in a column pandas types: a broken batch, kept as pieces
                    pieces.setdefault(name, []).append(column.copy(deep=True))
            del piece
    total = {c.filled for c in filled.values()} | {sum(map(len, p)) for p in pieces.values()}
    if total != {rows}:
        return None
    merged: dict[str, pd.Series] = {}
    for name in order:
        if name in filled:
            merged[name] = filled.pop(name).series(name)
            continue
        parts = pieces.pop(name)
        column = parts[0].reset_index(drop=True) if len(parts) == 1 else _merged(parts)
        if column is None:
            return None
        merged[name] = column
    # copy=False: each column stays its own block (no second copy of the frame to consolidate it)
    return pd.DataFrame(merged, copy=False)

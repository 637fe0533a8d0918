"""A batch parsed in pieces (to bound validation's peak memory, issue 22 item 6) gives exactly the
frame and the duplicate flags of one parse of the whole file, for genuine and broken batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def _variants(text: str) -> dict[str, str]:
    """A genuine batch and broken ones whose columns pandas types differently piece by piece."""
    lines = text.splitlines()
    header = lines[0].split(",")

    def edit(row: int, column: str, value: str, base: str | None = None) -> str:
        out = (base or text).splitlines()
        fields = out[row].split(",")  # the genuine batch quotes no field
        fields[header.index(column)] = value
        out[row] = ",".join(fields)
        return "\n".join(out) + "\n"

    last = len(lines) - 1
    return {
        "genuine": text,
        "text in an int column, late": edit(last, "distance", "far"),
        "empty int, late": edit(last, "flight", ""),
        "fraction in an int column, late": edit(last - 3, "sched_dep_time", "517.5"),
        "huge int, then a float piece": edit(last, "flight", "", edit(2, "flight", str(2**60 + 1))),
        "true in an int column, late": edit(last, "hour", "True"),
        "text early only": edit(1, "temp", "warm"),
        "empty string column, late": edit(last, "tailnum", ""),
        "duplicate row": text + lines[1] + "\n",
    }


def test_pieces_give_the_frame_of_one_parse(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.config import load_schema
    from mlops.data import read_batch
    from mlops.validation import sniff
    from mlops.validation.checks import _duplicated
    from mlops.validation.findings import Findings

    schema = load_schema()
    text = (data_dir / "landing" / "2013-W04.csv").read_text(encoding="utf-8")
    monkeypatch.setattr(sniff, "PARSE_CHUNK_ROWS", 500)
    assert len(text.splitlines()) > 4 * 500
    for name, variant in _variants(text).items():
        data = variant.encode("utf-8")
        whole = read_batch(sniff._text_stream(data), schema)
        pieces = sniff.parse(Findings(), data, schema).frame
        assert list(pieces.dtypes.astype(str)) == list(whole.dtypes.astype(str)), name
        pd.testing.assert_frame_equal(pieces, whole, check_exact=True, obj=name)
        for subset in (None, list(schema.row_key), ["tailnum"]):
            expected = whole.duplicated(subset=subset).to_numpy()
            assert np.array_equal(_duplicated(pieces, subset), expected), (name, subset)
    assert _duplicated(whole, None).sum() == 1  # the last variant's repeated row


def test_duplicates_count_nan_and_signed_zero_like_pandas() -> None:
    from mlops.validation.checks import _duplicated

    frame = pd.DataFrame({"a": [0.0, -0.0, np.nan, np.nan, 1.0, 1.0],
                          "b": pd.array(["x", "x", None, None, "y", "z"], dtype="string"),
                          "c": [1, 1, 2, 2, 3, 3]})
    for subset in (None, ["a"], ["a", "c"], ["b", "c"]):
        assert np.array_equal(_duplicated(frame, subset), frame.duplicated(subset=subset).to_numpy())

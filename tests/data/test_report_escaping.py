"""A category value cannot inject script into the HTML reports (issue 22 item 12): Evidently
writes category values unescaped inside a <script>; values the schema does not list are mapped
to `unlisted-<hash>` before Evidently sees them (one to one: the statistics do not change)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PAYLOAD = "</script><script>alert(1)</script>"


def _poisoned(src: Path, dest: Path, rows: int = 20) -> Path:
    frame = pd.read_csv(src)
    frame.loc[frame.index[:rows], "carrier"] = PAYLOAD
    frame.loc[frame.index[rows:2 * rows], "dest"] = PAYLOAD
    dest.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(dest, index=False)
    return dest


def test_the_validation_report_does_not_carry_a_script_from_a_batch(data_dir: Path, tmp_path: Path) -> None:
    from mlops.validate import validate_batch

    batch = _poisoned(data_dir / "landing" / "2013-W04.csv", tmp_path / "2013-W04.csv")
    result = validate_batch(batch, html=True)
    page = Path(result["report_html"]).read_text()
    assert "Drifted Columns" in page  # Evidently's part is on the page
    assert "alert(1)" not in page and "<script>alert" not in page
    assert "unlisted-" in page


def test_the_drift_report_does_not_carry_a_script_from_a_batch(data_dir: Path, tmp_path: Path) -> None:
    """evidently_drift makes the snapshot drift.html embeds (and the validation's distribution
    check); its decision is the same as on the raw values (driftstats computes it without
    Evidently, on the unmapped frames)."""
    from mlops.config import load_schema
    from mlops.data import read_batch
    from mlops.column_drift import evidently_drift
    from mlops.validation import driftstats

    schema = load_schema()
    batch = _poisoned(data_dir / "landing" / "2013-W04.csv", tmp_path / "2013-W04.csv")
    current = read_batch(batch, schema)
    reference = read_batch(data_dir / "accepted" / "2013-W03.csv", schema)
    columns = [c for c in schema.features if c in current.columns]
    snapshot, drift = evidently_drift(current, reference, schema, columns, 0.3)
    snapshot.save_html(str(tmp_path / "evidently.html"))
    page = (tmp_path / "evidently.html").read_text()
    assert "alert(1)" not in page and "unlisted-" in page
    plain = driftstats.dataset_drift(current, reference, list(schema.categorical), columns)
    assert plain is not None
    for name in ("carrier", "dest"):
        assert abs(plain["columns"][name]["score"] - drift["columns"][name]["score"]) < 1e-9, name

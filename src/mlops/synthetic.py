"""Synthetic data sets with concept drift at known weeks, from river's stream generators.

A schema whose ``source`` names a ``generator`` (``configs/synthetic_drift.yaml``) is not read
from files: :func:`generate` builds its rows. ``river_agrawal`` is river's ``Agrawal`` loan
stream (nine applicant attributes, a 0/1 label given by one of ten classification functions),
chained with ``ConceptDriftStream`` at the configured weeks: an ``abrupt`` drift switches the
function at the first row of its week (width 1), a ``gradual`` one mixes the old and new
function over ``width_weeks`` weeks (river's sigmoid: 12 % new at the start of the drift week,
88 % at the end of its last week). Every stream is seeded: the same ``source`` gives the same
rows, byte for byte. Rows are spread evenly over their ISO week (UTC), ``rows_per_week`` each,
and numbered by ``id`` (the row key).

Only the label depends on the function: the features keep one distribution all year, so a
drift shows in the model's ROC AUC (and the label rate), not in the feature distributions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mlops.errors import SchemaError
from mlops.util import WEEK_RE

if TYPE_CHECKING:
    import pandas as pd

GENERATORS = ("river_agrawal",)
DRIFT_KINDS = ("abrupt", "gradual")
#: The attributes river's Agrawal yields, in its order, and how they are written.
AGRAWAL_FEATURES = ("salary", "commission", "age", "elevel", "car", "zipcode", "hvalue",
                    "hyears", "loan")
_ROUNDED = {"salary", "commission", "hvalue", "loan"}   # money, to the cent
_KEYS = {"generator", "seed", "year", "weeks", "rows_per_week", "function", "drifts"}


@dataclass(frozen=True)
class Drift:
    """A concept drift at a known week: from then on, the generator's ``function`` holds."""

    week: str
    kind: str
    function: int
    width_weeks: int = 1

    @property
    def number(self) -> int:
        return int(self.week[6:])


@dataclass(frozen=True)
class GeneratorSpec:
    """The ``source`` section of a generated data set, checked."""

    generator: str
    seed: int
    year: int
    weeks: int
    rows_per_week: int
    function: int
    drifts: tuple[Drift, ...]

    def week(self, number: int) -> str:
        """The label of week ``number`` (1-based), e.g. ``2013-W07``."""
        return f"{self.year}-W{number:02d}"

    def monday(self, number: int) -> date:
        return date.fromisocalendar(self.year, number, 1)


def _int(where: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SchemaError(f"{where} must be an integer in [{low}, {high}], not {value!r}")
    return value


def spec_of(source: dict[str, Any], path: str) -> GeneratorSpec:
    """The generator settings of a schema's ``source``; SchemaError naming ``path`` and the key."""
    where = f"{path}: source"
    unknown = sorted(set(source) - _KEYS)
    if unknown:
        raise SchemaError(f"{where}: unknown keys {unknown}; known: {sorted(_KEYS)}")
    if source.get("generator") not in GENERATORS:
        raise SchemaError(f"{where}.generator is {source.get('generator')!r}; one of {list(GENERATORS)}")
    year = _int(f"{where}.year", source.get("year"), 1900, 2999)
    last_week = date(year, 12, 28).isocalendar()[1]
    weeks = _int(f"{where}.weeks", source.get("weeks", last_week), 2, last_week)
    drifts: list[Drift] = []
    for i, raw in enumerate(source.get("drifts") or []):
        at = f"{where}.drifts[{i}]"
        if not isinstance(raw, dict) or set(raw) - {"week", "kind", "function", "width_weeks"}:
            raise SchemaError(f"{at}: expected a mapping of week, kind, function, width_weeks")
        week, kind = str(raw.get("week")), raw.get("kind")
        if not WEEK_RE.match(week) or int(week[:4]) != year or not 2 <= int(week[6:]) <= weeks:
            raise SchemaError(f"{at}.week is {week!r}; an ISO week of {year} after its first, "
                              f"up to W{weeks:02d}")
        if kind not in DRIFT_KINDS:
            raise SchemaError(f"{at}.kind is {kind!r}; one of {list(DRIFT_KINDS)}")
        width = _int(f"{at}.width_weeks", raw.get("width_weeks", 1), 1, 52)
        if kind == "abrupt" and width != 1:
            raise SchemaError(f"{at}: an abrupt drift has no width_weeks (it is 1 row)")
        drifts.append(Drift(week, kind, _int(f"{at}.function", raw.get("function"), 0, 9), width))
    if [d.number for d in drifts] != sorted({d.number for d in drifts}):
        raise SchemaError(f"{where}.drifts: weeks must be distinct and in order")
    spec = GeneratorSpec(
        generator=str(source["generator"]), seed=_int(f"{where}.seed", source.get("seed"), 0, 2**31),
        year=year, weeks=weeks,
        rows_per_week=_int(f"{where}.rows_per_week", source.get("rows_per_week"), 7, 1_000_000),
        function=_int(f"{where}.function", source.get("function"), 0, 9), drifts=tuple(drifts))
    functions = [spec.function, *(d.function for d in drifts)]
    if any(a == b for a, b in zip(functions, functions[1:])):
        raise SchemaError(f"{where}.drifts: each drift must change the function ({functions})")
    try:
        segments(spec)
    except SchemaError as exc:
        raise SchemaError(f"{path}: {exc}") from None
    return spec


def drift_truth(spec: GeneratorSpec) -> list[dict[str, Any]]:
    """The weeks where each configured drift begins, with its kind and the functions."""
    functions = [spec.function, *(d.function for d in spec.drifts)]
    return [{"week": d.week, "kind": d.kind, "width_weeks": d.width_weeks,
             "from_function": functions[i], "to_function": d.function}
            for i, d in enumerate(spec.drifts)]


#: Rows of the old concept a segment of an abrupt drift begins with (river's sigmoid overflows
#: ``math.exp`` for a width-1 drift more than ~177 rows after its stream starts).
_ABRUPT_LEAD = 100


def segments(spec: GeneratorSpec) -> list[tuple[int, int, Drift | None]]:
    """``(first row, concept drift stream position, drift)`` of each segment of the stream
    (0-based rows; the first segment, without drift, has position 0). A drift's segment starts
    shortly before it: far enough for its transition (abrupt: ``_ABRUPT_LEAD`` rows, gradual:
    two widths before its centre, where the new share is 0.03 %), after the previous drift has
    completed (two widths past its centre, 99.97 %)."""
    out: list[tuple[int, int, Drift | None]] = [(0, 0, None)]
    done = 0
    for drift in spec.drifts:
        first_row = (drift.number - 1) * spec.rows_per_week
        width = 1 if drift.kind == "abrupt" else drift.width_weeks * spec.rows_per_week
        centre = first_row + (0 if drift.kind == "abrupt" else width // 2)
        begin = max(centre - (_ABRUPT_LEAD if drift.kind == "abrupt" else 2 * width), 0)
        if begin < done:
            raise SchemaError(f"source.drifts: {drift.week} begins before the previous drift is "
                              f"complete; move it later")
        # sample_idx of river's ConceptDriftStream is 1-based: the centre row is at index
        # centre - begin + 1, where the new concept's share is 1/2.
        out.append((begin, centre - begin + 1, drift))
        done = centre + 2 * width
    return out


def stream(spec: GeneratorSpec) -> Iterator[tuple[dict[str, Any], int]]:
    """The rows of the whole period: river's ``Agrawal`` with the initial function, then per
    drift a ``ConceptDriftStream`` from the function before it to the one after it (abrupt:
    width 1; gradual: ``width_weeks`` weeks of rows), each stream seeded on its own."""
    from river.datasets import synth

    functions = [spec.function, *(d.function for d in spec.drifts)]
    parts = segments(spec)
    ends = [begin for begin, _, _ in parts[1:]] + [spec.weeks * spec.rows_per_week]
    for i, ((begin, position, drift), end) in enumerate(zip(parts, ends)):
        old = synth.Agrawal(classification_function=functions[max(i - 1, 0)],
                            seed=spec.seed + 10 * i + 1)
        if drift is None:
            part: Any = old
        else:
            width = 1 if drift.kind == "abrupt" else drift.width_weeks * spec.rows_per_week
            new = synth.Agrawal(classification_function=drift.function, seed=spec.seed + 10 * i + 2)
            part = synth.ConceptDriftStream(stream=old, drift_stream=new, position=position,
                                            width=width, seed=spec.seed + 10 * i + 3)
        yield from itertools.islice(part, end - begin)


def generate(source: dict[str, Any], path: str) -> "pd.DataFrame":
    """Every row of the data set: ``id``, ``event_time`` (ISO, UTC), the generator's
    attributes and ``label``."""
    import pandas as pd

    spec = spec_of(source, path)
    total = spec.weeks * spec.rows_per_week
    rows = list(itertools.islice(stream(spec), total))
    frame = pd.DataFrame.from_records([x for x, _ in rows], columns=list(AGRAWAL_FEATURES))
    for column in _ROUNDED:
        frame[column] = frame[column].round(2)
    step = timedelta(days=7) / spec.rows_per_week
    times = []
    for number in range(1, spec.weeks + 1):
        monday = datetime.combine(spec.monday(number), datetime.min.time(), tzinfo=timezone.utc)
        times += [(monday + j * step).strftime("%Y-%m-%dT%H:%M:%SZ")
                  for j in range(spec.rows_per_week)]
    frame.insert(0, "event_time", times)
    frame.insert(0, "id", range(1, total + 1))
    frame["label"] = [int(y) for _, y in rows]
    return frame

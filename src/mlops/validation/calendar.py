"""Batch names as ISO weeks: their days, and how many of them the data set's date range covers."""

from __future__ import annotations

from datetime import date, timedelta

from mlops.config import Schema
from mlops.util import WEEK_RE


def week_bounds(week: str) -> tuple[date, date]:
    """Monday and Sunday of an ISO week label like ``2013-W07``; ValueError if it is none."""
    if not WEEK_RE.match(week):
        raise ValueError(f"{week!r} is not an ISO week like 2013-W07")
    year, number = int(week[:4]), int(week[6:])
    try:
        monday = date.fromisocalendar(year, number, 1)
    except ValueError:
        last = date(year, 12, 28).isocalendar()[1]
        raise ValueError(f"{week!r} is not an ISO week: {year} has weeks W01..W{last:02d}") from None
    return monday, monday + timedelta(days=6)


def days_in_range(week: str, schema: Schema) -> int:
    """Days of the week inside the schema's date range (the days a batch can have rows on)."""
    monday, sunday = week_bounds(week)
    first, last = schema.date_range
    start = max(monday, first) if first else monday
    end = min(sunday, last) if last else sunday
    return max((end - start).days + 1, 0)


def expected_dates(week: str, schema: Schema) -> list[date]:
    """The days of the week a batch must have rows on: those of ``time.expected_days`` inside
    the schema's date range (at a year's edge a week holds days outside it)."""
    from mlops.config import EXPECTED_DAYS

    monday, _ = week_bounds(week)
    first, last = schema.date_range
    days = [monday + timedelta(days=i) for i in EXPECTED_DAYS[schema.expected_days]]
    return [d for d in days if (first is None or d >= first) and (last is None or d <= last)]

"""The days a batch must cover (configs/flights.yaml `time.expected_days`): every day of its
week inside the data set's date range, so the weeks at the year's edges expect only their days
of 2013; the key is checked when the schema is read. The partial and re-cut deliveries
themselves are in the corpus (tests/lib/testkit/corpus.py), the 53 genuine weeks in test_all_weeks.py."""

from __future__ import annotations

from datetime import date

import pytest
import yaml


def test_the_flights_schema_expects_every_day_inside_the_date_range() -> None:
    from mlops.config import load_schema
    from mlops.validation.calendar import expected_dates

    schema = load_schema()
    assert schema.expected_days == "every"
    assert expected_dates("2013-W09", schema) == [date(2013, 2, 25 + i) for i in range(4)] + [
        date(2013, 3, i) for i in (1, 2, 3)]
    # 2013-W01 starts on Monday 2012-12-31 and 2014-W01 ends on Sunday 2014-01-05: outside the range.
    assert expected_dates("2013-W01", schema) == [date(2013, 1, d) for d in range(1, 7)]
    assert expected_dates("2014-W01", schema) == [date(2013, 12, 30), date(2013, 12, 31)]


def test_weekdays_any_and_a_wrong_value(schema_with) -> None:
    from mlops.config import REPO_ROOT, load_schema
    from mlops.errors import SchemaError
    from mlops.validation.calendar import expected_dates

    time = yaml.safe_load((REPO_ROOT / "configs" / "flights.yaml").read_text())["time"]
    schema_with(time={**time, "expected_days": "weekdays"})
    assert [d.weekday() for d in expected_dates("2013-W09", load_schema())] == [0, 1, 2, 3, 4]
    schema_with(time={**time, "expected_days": "any"})
    assert expected_dates("2013-W09", load_schema()) == []
    path = schema_with(time={**time, "expected_days": "daily"})
    with pytest.raises(SchemaError, match=f"{path}: time.expected_days is 'daily'"):
        load_schema()

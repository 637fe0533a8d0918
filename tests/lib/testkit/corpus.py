"""A corpus of mutated real batches, each a mistake a careful user could make or meet, with the
check that must reject it. Every builder writes one file from genuine 2013 weeks and returns the
line of the file the error must name (None when no single line is to blame).

The genuine weeks (read as text, so values keep their exact spelling): ``W09`` is the week under
test (2013-02-25..03-03), ``W10`` the week after, ``W05`` an earlier week and ``W08`` a week that
is already accepted in the corpus world.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

Weeks = dict[str, pd.DataFrame]
Builder = Callable[[Weeks, Path], "int | None"]
TZ = "America/New_York"


def _write(df: pd.DataFrame, path: Path, **kwargs) -> None:
    path.write_text(df.to_csv(index=False, **kwargs), encoding="utf-8")


def _line(df: pd.DataFrame, position: int) -> int:
    """File line of the data row at ``position`` (header is line 1, one line per row)."""
    return position + 2


@dataclass(frozen=True)
class Case:
    name: str
    file: str  # file name in landing/
    build: Builder
    check: str
    columns: tuple[str, ...] = ()


CASES: list[Case] = []


def case(file: str, check: str, *columns: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        CASES.append(Case(fn.__name__, file, fn, check, columns))
        return fn
    return register


# --- temporal integrity --------------------------------------------------------------------------
@case("2013-W09.csv", "temporal.week", "time_hour")
def another_weeks_rows_under_this_name(w: Weeks, path: Path) -> int:
    _write(w["W05"], path)
    return 2


@case("2013-W09.csv", "temporal.week", "time_hour")
def rows_of_the_next_week_appended(w: Weeks, path: Path) -> int:
    df = pd.concat([w["W09"], w["W10"].head(200)], ignore_index=True)
    _write(df, path)
    return _line(df, len(w["W09"]))


@case("2013-W09.csv", "temporal.week", "time_hour")
def two_weeks_in_one_file(w: Weeks, path: Path) -> int:
    df = pd.concat([w["W09"], w["W10"]], ignore_index=True)
    _write(df, path)
    return _line(df, len(w["W09"]))


@case("2013-W09.csv", "temporal.week", "time_hour")
def accepted_rows_copied_into_the_week(w: Weeks, path: Path) -> int:
    df = pd.concat([w["W08"].head(50), w["W09"]], ignore_index=True)
    _write(df, path)
    return 2


@case("2013-W09.csv", "temporal.date_range", "time_hour")
def timestamps_of_another_year(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df["time_hour"] = df["time_hour"].str.replace("2013-", "2012-", n=1, regex=False)
    df["year"] = "2012"
    _write(df, path)
    return 2


@case("2013-W09.csv", "temporal.date_range", "time_hour")
def time_column_in_the_next_year_only(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df.loc[df.index[100:], "time_hour"] = df["time_hour"].str.replace("2013-", "2014-", n=1,
                                                                      regex=False)
    _write(df, path)
    return _line(df, 100)


@case("2013-W09.csv", "temporal.calendar_date", "day", "month", "year")
def february_31(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    rows = df.index[df["day"] == "28"][:40]
    df.loc[rows, "day"] = "31"
    _write(df, path)
    return _line(df, int(rows[0]))


@case("2013-W09.csv", "temporal.calendar_date", "day", "month", "year")
def february_29_in_a_common_year(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    rows = df.index[df["day"] == "28"][:5]
    df.loc[rows, "day"] = "29"
    _write(df, path)
    return _line(df, int(rows[0]))


@case("2013-W09.csv", "temporal.calendar_date", "time_hour")
def impossible_date_in_the_time_column(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df.loc[df.index[7], "time_hour"] = "2013-02-30T15:00:00Z"
    _write(df, path)
    return _line(df, 7)


@case("2013-W09.csv", "temporal.parts", "month", "time_hour")
def month_column_disagrees_with_the_time(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    rows = df.index[df["month"] == "2"][:100]
    df.loc[rows, "month"] = "3"  # 3/25..3/28 exist: a real date, but not the row's date
    _write(df, path)
    return _line(df, int(rows[0]))


@case("2013-W09.csv", "temporal.parts", "hour", "time_hour")
def local_clock_written_as_utc(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    local = pd.to_datetime(df["time_hour"], utc=True).dt.tz_convert(TZ)
    df["time_hour"] = local.dt.strftime("%Y-%m-%dT%H:%M:%SZ")  # New York clock, labelled UTC
    _write(df, path)
    return 2


@case("2013-W09.csv", "temporal.no_time", "time_hour")
def rows_without_a_time(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df.loc[df.index[300:330], "time_hour"] = None
    _write(df, path)
    return _line(df, 300)


@case("flights_march.csv", "temporal.batch_name")
def file_name_is_not_a_week(w: Weeks, path: Path) -> None:
    _write(w["W09"], path)


@case("2013-W54.csv", "temporal.batch_name")
def week_54(w: Weeks, path: Path) -> None:
    _write(w["W09"], path)


@case("2013-W53.csv", "temporal.batch_name")
def week_53_of_a_52_week_year(w: Weeks, path: Path) -> None:
    _write(w["W09"], path)


@case("2013-W00.csv", "temporal.batch_name")
def week_00(w: Weeks, path: Path) -> None:
    _write(w["W09"], path)


# --- each row once -------------------------------------------------------------------------------
KEY = ("year", "month", "day", "carrier", "flight", "origin")


@case("2013-W09.csv", "row_key.duplicates", *KEY)
def one_row_twice(w: Weeks, path: Path) -> int:
    df = pd.concat([w["W09"], w["W09"].iloc[[10]]], ignore_index=True)  # 1 row: under 1 % dups
    _write(df, path)
    return _line(df, 10)


@case("2013-W09.csv", "row_key.duplicates", *KEY)
def same_flight_twice_with_other_values(w: Weeks, path: Path) -> int:
    extra = w["W09"].iloc[[20]].copy()
    extra["dep_delay"], extra["arr_delay"] = "3.0", "1.0"
    df = pd.concat([w["W09"], extra], ignore_index=True)
    _write(df, path)
    return _line(df, 20)


@case("2013-W08.csv", "row_key.accepted", *KEY)
def accepted_week_delivered_again_corrected(w: Weeks, path: Path) -> int:
    df = w["W08"].copy()
    df.loc[df.index[0], "dep_delay"] = "0.0"
    _write(df, path)
    return 2


@case("2013-W09.csv", "row_key.missing", "flight")
def flight_number_missing(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df.loc[df.index[40:45], "flight"] = None
    _write(df, path)
    return _line(df, 40)


# --- label and volume ----------------------------------------------------------------------------
@case("2013-W09.csv", "label.target_rate", "arr_delay")
def every_flight_delayed(w: Weeks, path: Path) -> None:
    df = w["W09"].copy()
    df.loc[df["arr_delay"].notna(), "arr_delay"] = "60.0"
    _write(df, path)


@case("2013-W09.csv", "label.target_rate", "arr_delay")
def no_flight_delayed(w: Weeks, path: Path) -> None:
    df = w["W09"].copy()
    df.loc[df["arr_delay"].notna(), "arr_delay"] = "0.0"
    _write(df, path)


@case("2013-W09.csv", "label.target_rate", "arr_delay")
def delays_in_hours_not_minutes(w: Weeks, path: Path) -> None:
    df = w["W09"].copy()
    mins = pd.to_numeric(df["arr_delay"])
    df["arr_delay"] = (mins / 60).round(2).astype(str).where(mins.notna(), None)
    _write(df, path)


@case("2013-W09.csv", "temporal.missing_days", "time_hour")
def a_few_hundred_rows(w: Weeks, path: Path) -> None:
    _write(w["W09"].head(300), path)


@case("2013-W09.csv", "temporal.missing_days", "time_hour")
def one_day_of_the_week(w: Weeks, path: Path) -> None:
    _write(w["W09"][w["W09"]["day"] == "26"], path)


@case("2013-W09.csv", "volume.row_count")
def three_times_the_flights(w: Weeks, path: Path) -> None:
    rotate = {"EWR": "JFK", "JFK": "LGA", "LGA": "EWR"}
    once, twice = w["W09"].copy(), w["W09"].copy()
    once["origin"] = once["origin"].map(rotate)
    twice["origin"] = twice["origin"].map(rotate).map(rotate)
    df = pd.concat([w["W09"], once, twice], ignore_index=True)
    _write(df.drop_duplicates(subset=list(KEY)), path)


# --- partial and re-cut deliveries (W09: Mon 2013-02-25 .. Sun 03-03) ------------------------------
def _days(df: pd.DataFrame, *days: tuple[int, int]) -> pd.Series:
    """Rows whose (month, day) is one of ``days`` (the calendar columns are the local date)."""
    md = list(zip(df["month"].astype(int), df["day"].astype(int)))
    return pd.Series([x in days for x in md], index=df.index)


@case("2013-W09.csv", "temporal.missing_days", "time_hour")
def a_truncated_extract_of_three_days(w: Weeks, path: Path) -> None:
    _write(w["W09"][_days(w["W09"], (2, 25), (2, 26), (2, 27))], path)


@case("2013-W09.csv", "temporal.missing_days", "time_hour")
def the_week_cut_in_two_files_first_part(w: Weeks, path: Path) -> None:
    _write(w["W09"][_days(w["W09"], (2, 25), (2, 26), (2, 27), (2, 28))], path)


@case("2013-W09.csv", "temporal.missing_days", "time_hour")
def the_week_cut_in_two_files_second_part(w: Weeks, path: Path) -> None:
    _write(w["W09"][_days(w["W09"], (3, 1), (3, 2), (3, 3))], path)


@case("2013-W09.csv", "temporal.missing_days", "time_hour")
def a_day_missing_in_the_middle(w: Weeks, path: Path) -> None:
    _write(w["W09"][~_days(w["W09"], (2, 27))], path)


@case("2013-W09.csv", "temporal.week", "time_hour")
def a_week_cut_sunday_to_saturday(w: Weeks, path: Path) -> int:
    """US weeks: the previous Sunday (accepted in W08) instead of this week's Sunday."""
    sunday = w["W08"][_days(w["W08"], (2, 24))]
    df = pd.concat([sunday, w["W09"][~_days(w["W09"], (3, 3))]], ignore_index=True)
    _write(df, path)
    return 2


@case("2013-W09.csv", "temporal.partial_day", "time_hour")
def the_last_day_cut_off_in_the_morning(w: Weeks, path: Path) -> None:
    df = w["W09"]
    _write(df[~_days(df, (3, 3)) | (df["hour"].astype(int) < 8)], path)


@case("2013-W09.csv", "volume.row_count")
def every_day_but_a_tenth_of_the_flights(w: Weeks, path: Path) -> None:
    _write(w["W09"].sample(frac=0.1, random_state=3).sort_index(), path)


@case("2013-W09.csv", "anomalies.duplicates")
def the_last_day_sent_again(w: Weeks, path: Path) -> int:
    df = pd.concat([w["W09"], w["W09"][_days(w["W09"], (3, 3))]], ignore_index=True)
    _write(df, path)
    return _line(df, len(w["W09"]))


# --- header and bytes ----------------------------------------------------------------------------
@case("2013-W09.csv", "header.duplicate_columns", "carrier")
def two_columns_named_carrier(w: Weeks, path: Path) -> int:
    df = w["W09"].rename(columns={"tailnum": "carrier"})
    _write(df, path)
    return 1


@case("2013-W09.csv", "header.duplicate_columns", "dest")
def a_column_pasted_twice(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df.insert(len(df.columns), "dest_copy", df["dest"])
    _write(df.rename(columns={"dest_copy": "dest"}), path)
    return 1


@case("2013-W09.csv", "format.nul_byte", "tailnum")
def nul_byte_far_into_the_file(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    row = 3000  # far beyond the first 64 KB
    df.loc[df.index[row], "tailnum"] = "N1\x0023"
    _write(df, path)
    assert path.read_bytes().index(b"\x00") > 65536
    return _line(df, row)


@case("2013-W09.csv", "schema.extra_columns", "remarks")
def an_extra_column(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df["remarks"] = "ok"
    _write(df, path)
    return 1


@case("2013-W09.csv", "schema.extra_columns", "(unnamed column 29)")
def a_trailing_comma_on_every_line(w: Weeks, path: Path) -> int:
    text = w["W09"].to_csv(index=False)
    path.write_text("".join(f"{line},\n" for line in text.splitlines()))
    return 1


@case("2013-W09.csv", "corrupt", "tailnum")
def a_ten_megabyte_field(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df.loc[df.index[99], "tailnum"] = "x" * 10_000_000
    _write(df, path)
    return _line(df, 99)


@case("2013-W09.csv", "corrupt", "dest")
def an_unclosed_quote(w: Weeks, path: Path) -> int:
    lines = w["W09"].to_csv(index=False).splitlines()
    fields = lines[500].split(",")
    fields[13] = '"' + fields[13]  # dest: opens a quoted field that swallows the file
    lines[500] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    return 501


@case("2013-W09.csv", "schema.dtype", "distance")
def thousands_separators(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    dist = pd.to_numeric(df["distance"])
    df["distance"] = dist.map(lambda v: f"{int(v):,}")
    _write(df, path)
    return _line(df, int((dist >= 1000).to_numpy().nonzero()[0][0]))


@case("2013-W09.csv", "format", "dest")
def latin1_bytes(w: Weeks, path: Path) -> int:
    text = w["W09"].to_csv(index=False)
    lines = text.splitlines()
    fields = lines[10].split(",")
    fields[13] = "Z\u00fcrich"
    lines[10] = ",".join(fields)
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return 11


@case("2013-W09.csv", "format")
def semicolon_separated(w: Weeks, path: Path) -> int:
    _write(w["W09"], path, sep=";")
    return 1


@case("2013-W09.csv", "format")
def gzip_compressed(w: Weeks, path: Path) -> None:
    path.write_bytes(gzip.compress(w["W09"].to_csv(index=False).encode()))


@case("2013-W09.csv", "format")
def zip_archive(w: Weeks, path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("2013-W09.csv", w["W09"].to_csv(index=False))
    path.write_bytes(buf.getvalue())


@case("2013-W09.csv", "corrupt")
def two_files_concatenated_with_headers(w: Weeks, path: Path) -> int:
    half = len(w["W09"]) // 2
    text = w["W09"].iloc[:half].to_csv(index=False) + w["W09"].iloc[half:].to_csv(index=False)
    path.write_text(text)
    return half + 2


@case("2013-W09.csv", "truncated", "visib")
def cut_in_the_middle_of_a_row(w: Weeks, path: Path) -> int:
    text = w["W09"].to_csv(index=False)
    cut = text[: len(text) // 2]
    path.write_text(cut.rsplit(",", 3)[0])
    return cut.count("\n") + 1


@case("2013-W09.csv", "corrupt")
def a_row_with_extra_fields(w: Weeks, path: Path) -> int:
    lines = w["W09"].to_csv(index=False).splitlines()
    lines[50] = lines[50] + ",extra,fields"
    path.write_text("\n".join(lines) + "\n")
    return 51


@case("2013-W09.csv", "empty_file")
def an_empty_file(w: Weeks, path: Path) -> None:
    path.write_bytes(b"")


@case("2013-W09.csv", "header_only")
def a_header_without_rows(w: Weeks, path: Path) -> None:
    path.write_text(",".join(w["W09"].columns) + "\n")


@case("2013-W09.csv", "format")
def parquet_named_csv(w: Weeks, path: Path) -> None:
    w["W09"].to_parquet(path)


@case("2013-W09.csv", "format")
def json_named_csv(w: Weeks, path: Path) -> None:
    path.write_text(w["W09"].head(20).to_json(orient="records"))


# --- schema and quality --------------------------------------------------------------------------
@case("2013-W09.csv", "schema.missing_columns", "carrier")
def a_missing_column(w: Weeks, path: Path) -> int:
    _write(w["W09"].drop(columns=["carrier"]), path)
    return 1


@case("2013-W09.csv", "schema.missing_columns", "carrier")
def a_column_name_with_a_space(w: Weeks, path: Path) -> int:
    _write(w["W09"].rename(columns={"carrier": "carrier "}), path)
    return 1


@case("2013-W09.csv", "schema.dtype", "distance")
def text_in_a_number_column(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df.loc[df.index[25:], "distance"] = "far"
    _write(df, path)
    return _line(df, 25)


@case("2013-W09.csv", "schema.dtype", "flight")
def fractional_flight_numbers(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df.loc[df.index[3], "flight"] = "1545.5"
    _write(df, path)
    return _line(df, 3)


@case("2013-W09.csv", "schema.dtype", "time_hour")
def words_in_the_time_column(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df.loc[df.index[60], "time_hour"] = "yesterday"
    _write(df, path)
    return _line(df, 60)


@case("2013-W09.csv", "quality.all_null", "sched_dep_time")
def an_empty_column(w: Weeks, path: Path) -> None:
    df = w["W09"].copy()
    df["sched_dep_time"] = None
    _write(df, path)


@case("2013-W09.csv", "quality.null_share", "tailnum")
def most_tail_numbers_missing(w: Weeks, path: Path) -> None:
    df = w["W09"].copy()
    df.loc[df.index[: len(df) // 2], "tailnum"] = None
    _write(df, path)


@case("2013-W09.csv", "quality.range", "month")
def month_13(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df.loc[df.index[:10], "month"] = "13"
    _write(df, path)
    return 2


@case("2013-W09.csv", "quality.range", "distance")
def negative_distances(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df.loc[df.index[5:25], "distance"] = "-1"
    _write(df, path)
    return _line(df, 5)


@case("2013-W09.csv", "quality.range", "distance")
def infinite_distance(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df.loc[df.index[8], "distance"] = "inf"
    _write(df, path)
    return _line(df, 8)


@case("2013-W09.csv", "quality.unknown_categories", "carrier")
def unknown_carriers(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df.loc[df.index[: len(df) // 10], "carrier"] = "ZZ"
    _write(df, path)
    return 2


@case("2013-W09.csv", "quality.unknown_categories", "carrier")
def lower_case_carrier_codes(w: Weeks, path: Path) -> int:
    df = w["W09"].copy()
    df["carrier"] = df["carrier"].str.lower()
    _write(df, path)
    return 2


@case("2013-W09.csv", "anomalies.duplicates")
def a_tenth_of_the_rows_twice(w: Weeks, path: Path) -> int:
    df = pd.concat([w["W09"], w["W09"].head(len(w["W09"]) // 10)], ignore_index=True)
    _write(df, path)
    return _line(df, len(w["W09"]))


@case("2013-W09.csv", "anomalies.outliers", "wind_speed")
def storm_winds_in_a_calm_week(w: Weeks, path: Path) -> None:
    df = w["W09"].copy()
    df.loc[df.index[: len(df) // 10], "wind_speed"] = "149"  # within range, far off the reference
    _write(df, path)


@case("2013-W09.csv", "distribution", "carrier", "dest", "distance")
def every_flight_a_late_night_one_to_honolulu(w: Weeks, path: Path) -> None:
    df = w["W09"].copy()
    day = pd.to_datetime(df[["year", "month", "day"]].astype(int))
    late = (day + pd.Timedelta(hours=23)).dt.tz_localize(TZ).dt.tz_convert("UTC")
    df["time_hour"] = late.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    df["carrier"], df["origin"], df["dest"], df["distance"] = "HA", "JFK", "HNL", "4983"
    df["sched_dep_time"], df["sched_arr_time"], df["hour"], df["minute"] = "2300", "2359", "23", "0"
    df["flight"] = [str(i + 1) for i in range(len(df))]
    _write(df, path)


# --- genuine content in another spelling: must pass ----------------------------------------------
def columns_in_another_order(w: Weeks, path: Path) -> None:
    _write(w["W09"][list(reversed(w["W09"].columns))], path)


def rows_in_another_order(w: Weeks, path: Path) -> None:
    _write(w["W09"].sample(frac=1, random_state=1), path)


def windows_line_ends(w: Weeks, path: Path) -> None:
    path.write_bytes(w["W09"].to_csv(index=False).replace("\n", "\r\n").encode())


def a_byte_order_mark(w: Weeks, path: Path) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + w["W09"].to_csv(index=False).encode())


def times_with_a_new_york_offset(w: Weeks, path: Path) -> None:
    df = w["W09"].copy()
    local = pd.to_datetime(df["time_hour"], utc=True).dt.tz_convert(TZ)
    df["time_hour"] = local.map(lambda t: t.isoformat())
    _write(df, path)


def every_field_quoted(w: Weeks, path: Path) -> None:
    import csv

    _write(w["W09"], path, quoting=csv.QUOTE_ALL)


GENUINE_VARIANTS: list[Builder] = [columns_in_another_order, rows_in_another_order,
                                   windows_line_ends, a_byte_order_mark,
                                   times_with_a_new_york_offset, every_field_quoted]

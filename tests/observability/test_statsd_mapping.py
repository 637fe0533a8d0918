"""observability/statsd/mapping.yml against the StatsD names Airflow 3.3 and the ML package send."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from testkit import airflow_names
from testkit.airflow_names import REGISTRY_TYPES, _registry, metric_type, seen_names
from testkit.statsd_mapping import MappingError, StatsdMapping, load_mapping, parse_statsd_packet

SEEN, FAILURE_ONLY = airflow_names.SEEN, airflow_names.FAILURE_ONLY


def test_fixture_is_a_faithful_copy_of_the_shared_notes() -> None:
    names = [ln for ln in SEEN.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(names) == 75
    assert not any(n.startswith("mlops.") for n in names)  # the ML results go to the Pushgateway
    assert {"airflow.scheduler_heartbeat", "airflow.ti.queued.<queue>.<dag_id>.<task_id>"} <= set(names)


def test_every_seen_name_is_mapped_or_dropped_on_purpose(mapping: StatsdMapping) -> None:
    unmatched = [n for n in seen_names() if mapping.match(n, metric_type(n)) is None]
    assert not unmatched, f"StatsD names no rule of {mapping.path} matches: {unmatched}"


def test_no_two_names_produce_the_same_series(mapping: StatsdMapping) -> None:
    series: dict[tuple, str] = {}
    for name in seen_names():
        hit = mapping.match(name, metric_type(name))
        if hit is None or hit.dropped:
            continue
        key = (hit.name, tuple(sorted(hit.labels.items())))
        assert key not in series, f"{name} and {series[key]} both produce {key}"
        series[key] = name


def test_untagged_twins_of_legacy_names_are_dropped(mapping: StatsdMapping) -> None:
    """Every registry metric with a per-id legacy name: its untagged base name must be dropped."""
    counted_twice = []
    for entry in _registry():
        base = entry["name"]
        if entry["legacy_name"] == "-" or "{" in base:
            continue
        hit = mapping.match(f"airflow.{base}", REGISTRY_TYPES[entry["type"]])
        if hit is None or not hit.dropped:  # unmatched names are exported under a default name
            counted_twice.append(f"airflow.{base} -> {hit.name if hit else 'default name'}")
    assert not counted_twice, f"untagged base names exported next to their legacy twins: {counted_twice}"


def test_each_metric_name_has_one_type_and_one_label_set(mapping: StatsdMapping) -> None:
    shapes: dict[str, set] = defaultdict(set)
    for name in seen_names():
        kind = metric_type(name)
        hit = mapping.match(name, kind)
        if hit is None or hit.dropped:
            continue
        shape = (kind, tuple(sorted(hit.labels)),
                 hit.rule.buckets if kind == "observer" else None)
        shapes[hit.name].add(shape)
    mixed = {n: s for n, s in shapes.items() if len(s) > 1}
    assert not mixed, f"metric names produced with different types/labels/buckets: {mixed}"
    assert all(n.endswith("_total") for n, s in shapes.items() if next(iter(s))[0] == "counter")


def test_ids_become_labels(mapping: StatsdMapping) -> None:
    hit = mapping.match("airflow.ti.queued.heavy.flights_training.train", "gauge")
    assert (hit.name, hit.labels) == (
        "airflow_task_instances",
        {"state": "queued", "queue": "heavy", "dag_id": "flights_training", "task_id": "train"},
    )
    hit = mapping.match("airflow.ti.finish.flights_training.prep__validate.failed", "counter")
    assert hit.labels == {"dag_id": "flights_training", "task_id": "prep__validate", "state": "failed"}
    hit = mapping.match("airflow.operator_successes__PythonDecoratedOperator", "counter")
    assert (hit.name, hit.labels) == ("airflow_operator_successes_total",
                                      {"operator": "PythonDecoratedOperator"})


def test_durations_are_histograms_that_fit_training_runs(mapping: StatsdMapping) -> None:
    for name in ("airflow.dag.flights_training.train.duration",
                 "airflow.dagrun.duration.success.flights_training",
                 "airflow.dag.flights_training.train.queued_duration"):
        hit = mapping.match(name, "observer")
        assert hit.rule.observer_type == "histogram", name
        assert hit.name.endswith("_seconds")
        assert max(hit.rule.buckets) >= 4 * 3600 and min(hit.rule.buckets) <= 1, name


# ----------------------------------------------------------- the matcher's exporter semantics


def _write(tmp_path: Path, rules: list[dict], defaults: dict | None = None) -> Path:
    path = tmp_path / "mapping.yml"
    doc = {"mappings": rules} | ({"defaults": defaults} if defaults else {})
    path.write_text(yaml.safe_dump(doc))
    return path


def test_star_is_one_part_and_glob_beats_an_earlier_regex(tmp_path: Path) -> None:
    m = load_mapping(_write(tmp_path, [
        {"match": "^a\\.(.*)$", "match_type": "regex", "name": "regex_${1}"},
        {"match": "a.*", "name": "glob_one", "labels": {"part": "$1"}},
    ]))
    assert m.match("a.b", "counter").name == "glob_one"
    assert m.match("a.b.c", "counter").name == "regex_b.c"  # the exporter escapes `.` later


def test_first_listed_glob_wins_and_types_restrict(tmp_path: Path) -> None:
    m = load_mapping(_write(tmp_path, [
        {"match": "x.*.z", "name": "typed", "match_metric_type": "gauge"},
        {"match": "x.y.*", "name": "first"},
        {"match": "x.*.z", "name": "second", "match_metric_type": "counter"},
    ]))
    assert m.match("x.y.z", "gauge").name == "typed"
    assert m.match("x.y.z", "counter").name == "first"
    assert m.match("x.q.z", "counter").name == "second"
    assert m.match("x.q.z", "observer") is None


def test_go_template_rules(tmp_path: Path) -> None:
    m = load_mapping(_write(tmp_path, [
        {"match": "^r\\.(\\w+)$", "match_type": "regex", "name": "r_$1_total"},
        {"match": "g.*", "name": "g_${1}_total"},
    ]))
    assert m.match("r.x", "counter").name == "r_"  # `$1_total` is a capture named `1_total`
    assert m.match("g.x", "counter").name == "g_x_total"


def test_rule_shadowed_by_an_earlier_longer_rule_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, [{"match": "p.*.q", "name": "long"}, {"match": "p.*", "name": "short"}])
    with pytest.raises(MappingError, match=rf"{re.escape(str(path))}.*mappings\[1\] \(p\.\*\)"):
        load_mapping(path)
    load_mapping(_write(tmp_path, [{"match": "p.*", "name": "short"}, {"match": "p.*.q", "name": "long"}]))


@pytest.mark.parametrize("rule, problem", [
    ({"match": "a.b*", "name": "n"}, "invalid glob"),
    ({"match": "a.b", "name": "bad-name"}, "not a valid Prometheus name"),
    ({"match": "a.b", "name": "n", "timer_type": "histogram"}, "unknown keys"),
    ({"match": "a.b"}, "didn't set a metric name"),
])
def test_bad_mapping_names_file_and_rule(tmp_path: Path, rule: dict, problem: str) -> None:
    path = _write(tmp_path, [rule])
    with pytest.raises(MappingError, match=re.escape(str(path)) + r": mappings\[0\].*" + problem):
        load_mapping(path)


def test_parse_statsd_packet() -> None:
    assert parse_statsd_packet(b"airflow.ti_successes:1|c\nairflow.dag.d.t.duration:12.5|ms|@0.5") == [
        ("airflow.ti_successes", "c"), ("airflow.dag.d.t.duration", "ms")]
    with pytest.raises(ValueError, match="not a StatsD metric line"):
        parse_statsd_packet("garbage")


def test_no_rule_is_shadowed_by_an_earlier_broader_one(mapping: StatsdMapping) -> None:
    """A name built from each glob rule (ids filled in) is handled by that rule, not an earlier one."""
    shadowed = []
    for rule in mapping.rules:
        if rule.match_type != "glob":
            continue
        name = rule.match.replace("*", "some_id")
        hit = mapping.match(name, rule.match_metric_type or "counter")
        if hit is None or hit.rule.index != rule.index:
            shadowed.append(f"mappings[{rule.index}] {rule.match} <- {hit and hit.rule.match}")
    assert not shadowed, shadowed

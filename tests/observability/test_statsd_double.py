"""tests/lib/testkit/statsd_double.py (the statsd-exporter TEST DOUBLE) as a running program:
StatsD over UDP and TCP in, the project's mapping applied, Prometheus text exposition out."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
DOUBLE = REPO / "tests" / "lib" / "testkit" / "statsd_double.py"
MAPPING = REPO / "observability" / "statsd" / "mapping.yml"


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def double(tmp_path: Path):
    """The double on free ports of 127.0.0.1: (udp port, tcp port, /metrics URL, record file)."""
    udp, tcp, web = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_STREAM)
    record = tmp_path / "received.log"
    proc = subprocess.Popen([sys.executable, str(DOUBLE), f"--statsd.mapping-config={MAPPING}",
                             f"--statsd.listen-udp=127.0.0.1:{udp}", f"--statsd.listen-tcp=127.0.0.1:{tcp}",
                             f"--web.listen-address=127.0.0.1:{web}", f"--double.record-file={record}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{web}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(f"{url}/-/healthy", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() is not None else "no answer"
        time.sleep(0.1)
    yield udp, tcp, f"{url}/metrics", record
    proc.terminate()
    assert proc.wait(timeout=10) == 0


def _scrape(url: str, until: str, timeout: float = 10) -> dict[tuple[str, tuple], float]:
    """Samples of /metrics once `until` (a sample name) shows up: {(name, sorted labels): value}."""
    deadline = time.monotonic() + timeout
    while True:
        resp = requests.get(url, timeout=5)
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in text_string_to_metric_families(resp.text) for s in fam.samples}
        if any(name == until for name, _ in samples):
            return samples
        assert time.monotonic() < deadline, f"{until} not in /metrics:\n{resp.text[-2000:]}"
        time.sleep(0.1)


def test_udp_lines_are_mapped_counted_and_timed_in_seconds(double) -> None:
    udp, _, url, record = double
    started = time.time()
    lines = [
        "airflow.ti.finish.ml_pipeline_dag.train.success:1|c",
        "airflow.ti.finish.ml_pipeline_dag.train.success:1|c|@0.5",   # sampled: counts 2
        "airflow.dagrun.duration.success.ml_pipeline_dag:1500|ms",     # 1.5 s
        "airflow.dagrun.duration.success.ml_pipeline_dag:700000|ms",   # 700 s
        "airflow.ti.finish:1|c",                                      # untagged twin: dropped
        "airflow.dagbag_size:3|g",
        "airflow.dagbag_size:+2|g",                                   # relative gauge
        "some.unmapped-name:4|c",
        "not a statsd line",
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto("\n".join(lines[:4]).encode(), ("127.0.0.1", udp))
        for line in lines[4:]:
            sock.sendto(line.encode(), ("127.0.0.1", udp))
    samples = _scrape(url, "some_unmapped_name_total")  # the parser adds _total to counters
    ti = ("airflow_ti_finish_total", (("dag_id", "ml_pipeline_dag"), ("state", "success"), ("task_id", "train")))
    assert samples[ti] == 3
    run = {"dag_id": "ml_pipeline_dag", "state": "success"}

    def key(name: str, **extra: str) -> tuple[str, tuple]:
        return name, tuple(sorted({**run, **extra}.items()))

    assert samples[key("airflow_dagrun_duration_seconds_count")] == 2
    assert samples[key("airflow_dagrun_duration_seconds_sum")] == pytest.approx(701.5)
    assert samples[key("airflow_dagrun_duration_seconds_bucket", le="2.5")] == 1
    assert samples[key("airflow_dagrun_duration_seconds_bucket", le="600")] == 1
    assert samples[key("airflow_dagrun_duration_seconds_bucket", le="1200")] == 2
    assert samples[key("airflow_dagrun_duration_seconds_bucket", le="+Inf")] == 2
    assert samples[("airflow_dagbag_size", ())] == 5
    assert not any(name.startswith("airflow_ti_finish") and not labels for name, labels in samples)
    assert samples[("statsd_double_dropped_total", ())] == 1
    assert samples[("statsd_double_lines_invalid_total", ())] == 1
    # Every line received is recorded with the time it arrived (the native test stack reads them).
    recorded = [row.split(" ", 1) for row in record.read_text().splitlines()]
    assert [line for _, line in recorded] == lines
    assert all(started - 1 <= float(t) <= time.time() for t, _ in recorded)


def test_tcp_lines_and_type_conflicts(double) -> None:
    _, tcp, url, _ = double
    with socket.create_connection(("127.0.0.1", tcp), timeout=5) as sock:
        sock.sendall(b"airflow.scheduler_heartbeat:1|c\nairflow.scheduler_heartbeat:1|c\n"
                     b"airflow.scheduler_heartbeat:7|g\n")
    samples = _scrape(url, "airflow_scheduler_heartbeat_total")
    assert samples[("airflow_scheduler_heartbeat_total", ())] == 2
    deadline = time.monotonic() + 5
    while samples[("statsd_double_conflicts_total", ())] != 1 and time.monotonic() < deadline:
        samples = _scrape(url, "airflow_scheduler_heartbeat_total")
    assert samples[("statsd_double_conflicts_total", ())] == 1


def test_bad_mapping_file_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "mapping.yml"
    bad.write_text("mappings:\n  - match: a.*\n    name: ''\n")
    out = subprocess.run([sys.executable, str(DOUBLE), f"--statsd.mapping-config={bad}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert str(bad) in out.stderr and "metric name" in out.stderr

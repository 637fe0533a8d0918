#!/usr/bin/env python3
"""TEST DOUBLE of prom/statsd-exporter: StatsD in, Prometheus text exposition out.

statsd_exporter cannot be installed or built on the project's machines (no Debian, PyPI or npm
package; the Go module proxy is not reachable), so the tests run this stand-in wherever the real
exporter would be: in the compose test it replaces the `statsd-exporter` service, and a native
stack can run it for its Prometheus to scrape. It is never part of the product.

It maps names with observability/statsd/mapping.yml through tests/lib/testkit/statsd_mapping.py
(the project's model of the exporter's matcher) and accepts the exporter's own flags:

    python tests/lib/testkit/statsd_double.py \\
        --statsd.mapping-config=observability/statsd/mapping.yml \\
        --statsd.listen-udp=:9125 --statsd.listen-tcp=:9125 --web.listen-address=:9102

What it models: counters (sample rate honoured), gauges (absolute, and relative `+n`/`-n`),
timers `ms` (exported in seconds) and `h`/`d` observations as histograms (buckets of the rule or
of the mapping's defaults) or summaries (`_sum` and `_count` only, no quantiles), `drop` rules,
unmatched names exported under the exporter's escaped default name, and the exporter's rule that
one metric name keeps the type and label names it was first seen with (later conflicting samples
are dropped and counted in `statsd_double_conflicts_total`). Not modelled: TTLs, `scale`, DogStatsD
tags as labels, summary quantiles, the exporter's own `statsd_exporter_*` metrics.
Endpoints: `/metrics`, `/-/healthy`, `/-/ready`. Needs only PyYAML.

One flag of its own (the exporter has no such thing): `--double.record-file=PATH` appends every
line received, as `<unix time> <line>`, to PATH; the native test stack (testkit/stack_session.py)
reads what Airflow really sent from it.
"""

from __future__ import annotations

import argparse
import math
import re
import signal
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

import statsd_mapping  # its sibling: this file only runs as a script (the stacks start it by path)

# The exporter's default histogram buckets (Prometheus client DefBuckets) when the mapping has none.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_]")


@dataclass
class Family:
    """One exported metric name: its type, label names and series."""

    kind: str  # counter | gauge | histogram | summary
    help: str
    label_names: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    # label values -> value (counter/gauge) or [bucket counts..., sum, count] (observers)
    series: dict[tuple[str, ...], list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One StatsD line: name, value, type (`c`, `g`, `ms`, `h`, `d`), sample rate, sign given."""

    name: str
    value: float
    kind: str
    rate: float = 1.0
    relative: bool = False


def parse_line(line: str) -> Sample | None:
    """Parse `name:value|type[|@rate][|#tags]`; None for a line the exporter would reject."""
    name, sep, rest = line.strip().partition(":")
    fields = rest.split("|")
    if not sep or not name or len(fields) < 2 or fields[1] not in statsd_mapping.STATSD_TYPES:
        return None
    raw, kind = fields[0], fields[1]
    try:
        value = float(raw)
    except ValueError:
        return None
    if math.isnan(value):
        return None
    rate = 1.0
    for extra in fields[2:]:
        if extra.startswith("@"):
            try:
                rate = float(extra[1:])
            except ValueError:
                return None
            if not 0 < rate <= 1:
                return None
    return Sample(name, value, kind, rate, relative=kind == "g" and raw[:1] in "+-")


def escape_name(name: str) -> str:
    """The exporter's default metric name for an unmapped StatsD name."""
    out = _INVALID_NAME_CHARS.sub("_", name)
    return "_" + out if out[:1].isdigit() else out


class Registry:
    """Every series received so far, rendered as Prometheus text exposition."""

    def __init__(self, mapping_path: Path, record: Path | None = None) -> None:
        self.mapping = statsd_mapping.load_mapping(mapping_path)
        self.record = record.open("a", buffering=1) if record else None
        doc = yaml.safe_load(mapping_path.read_text()) or {}
        defaults = doc.get("defaults") or {}
        # statsd_mapping.Rule keeps no `help`: take it from the file, by rule index.
        self.helps = {i: str(r.get("help", "")) for i, r in enumerate(doc.get("mappings") or [])
                      if isinstance(r, dict)}
        self.default_observer = defaults.get("observer_type") or "summary"
        self.default_buckets = tuple(float(b) for b in
                                     (defaults.get("histogram_options") or {}).get("buckets") or DEFAULT_BUCKETS)
        self.families: dict[str, Family] = {}
        self.lock = threading.Lock()
        self.lines = 0
        self.invalid = 0
        self.dropped = 0
        self.conflicts = 0

    def receive(self, packet: bytes) -> None:
        """Apply every line of one StatsD packet."""
        now = time.time()
        for line in packet.decode("utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            sample = parse_line(line)
            with self.lock:
                if self.record is not None:
                    self.record.write(f"{now:.3f} {line.strip()}\n")
                self.lines += 1
                if sample is None:
                    self.invalid += 1
                    continue
                self._apply(sample)

    def _apply(self, sample: Sample) -> None:
        hit = self.mapping.match(sample.name, sample.kind)
        if hit is not None and hit.dropped:
            self.dropped += 1
            return
        observer = sample.kind in ("ms", "h", "d")
        if hit is None:
            name, labels, help_text = escape_name(sample.name), {}, "Metric autogenerated by statsd_exporter."
            obs_type, buckets = self.default_observer, self.default_buckets
        else:
            name, labels = hit.name, hit.labels
            help_text = self.helps.get(hit.rule.index) or f"Metric autogenerated by statsd_exporter from {hit.rule.match}."
            obs_type, buckets = hit.rule.observer_type, hit.rule.buckets or self.default_buckets
        kind = obs_type if observer else ("counter" if sample.kind == "c" else "gauge")
        label_names = tuple(sorted(labels))
        family = self.families.get(name)
        if family is None:
            family = Family(kind, help_text, label_names, tuple(buckets) if kind == "histogram" else ())
            self.families[name] = family
        elif family.kind != kind or family.label_names != label_names:
            self.conflicts += 1
            return
        key = tuple(labels[k] for k in label_names)
        if kind == "counter":
            if sample.value < 0:
                self.invalid += 1
                return
            family.series.setdefault(key, [0.0])[0] += sample.value / sample.rate
        elif kind == "gauge":
            current = family.series.setdefault(key, [0.0])
            current[0] = current[0] + sample.value if sample.relative else sample.value
        else:
            value = sample.value / 1000 if sample.kind == "ms" else sample.value
            weight = 1 / sample.rate
            cells = family.series.setdefault(key, [0.0] * (len(family.buckets) + 2))
            for i, bound in enumerate(family.buckets):
                if value <= bound:
                    cells[i] += weight
            cells[-2] += value * weight
            cells[-1] += weight

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4 of every series."""
        out: list[str] = []
        with self.lock:
            for name in sorted(self.families):
                family = self.families[name]
                out.append(f"# HELP {name} {_escape_help(family.help)}")
                out.append(f"# TYPE {name} {family.kind}")
                for key in sorted(family.series):
                    values = family.series[key]
                    pairs = list(zip(family.label_names, key))
                    if family.kind in ("counter", "gauge"):
                        out.append(f"{name}{_labels(pairs)} {_num(values[0])}")
                        continue
                    if family.kind == "histogram":
                        for bound, count in zip(family.buckets, values):
                            out.append(f"{name}_bucket{_labels(pairs + [('le', _num(bound))])} {_num(count)}")
                        out.append(f"{name}_bucket{_labels(pairs + [('le', '+Inf')])} {_num(values[-1])}")
                    out.append(f"{name}_sum{_labels(pairs)} {_num(values[-2])}")
                    out.append(f"{name}_count{_labels(pairs)} {_num(values[-1])}")
            for metric, value, text in (
                ("statsd_double_lines_total", self.lines, "StatsD lines received."),
                ("statsd_double_lines_invalid_total", self.invalid, "Lines the exporter would reject."),
                ("statsd_double_dropped_total", self.dropped, "Lines dropped by a mapping rule."),
                ("statsd_double_conflicts_total", self.conflicts,
                 "Samples dropped because their name exists with another type or other label names."),
            ):
                out += [f"# HELP {metric} {text}", f"# TYPE {metric} counter", f"{metric} {value}"]
        return "\n".join(out) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), chr(92) + "n")}"'
        for k, v in pairs)
    return "{" + inner + "}"


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _address(value: str, flag: str) -> tuple[str, int] | None:
    """`host:port` (empty host: every interface) -> (host, port); empty value -> None (off)."""
    if value == "":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"statsd_double: {flag}={value!r}: expected [host]:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(registry: Registry, udp: tuple[str, int] | None, tcp: tuple[str, int] | None,
          web: tuple[str, int]) -> tuple[ThreadingHTTPServer, list[threading.Thread]]:
    """Start the listeners in daemon threads; return the web server (shut it down to stop)."""
    threads: list[threading.Thread] = []
    if udp is not None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind(udp)

        def udp_loop() -> None:
            while True:
                registry.receive(sock.recv(65535))

        threads.append(threading.Thread(target=udp_loop, name="statsd-udp", daemon=True))
    if tcp is not None:
        class LineHandler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    registry.receive(line)

        class TCPServer(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        tcp_server = TCPServer(tcp, LineHandler)
        threads.append(threading.Thread(target=tcp_server.serve_forever, name="statsd-tcp", daemon=True))

    class WebHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, ctype, status = registry.render().encode(), "text/plain; version=0.0.4; charset=utf-8", 200
            elif path in ("/-/healthy", "/-/ready"):
                body, ctype, status = b"OK\n", "text/plain", 200
            elif path == "/":
                body, ctype, status = b"statsd-exporter TEST DOUBLE (tests/lib/testkit/statsd_double.py): /metrics\n", "text/plain", 200
            else:
                body, ctype, status = b"not found\n", "text/plain", 404
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    web_server = ThreadingHTTPServer(web, WebHandler)
    web_server.daemon_threads = True
    threads.append(threading.Thread(target=web_server.serve_forever, name="web", daemon=True))
    for thread in threads:
        thread.start()
    return web_server, threads


def main(argv: list[str] | None = None) -> int:
    """Parse the exporter-style flags, listen, serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description="statsd-exporter TEST DOUBLE (see the module docstring)")
    parser.add_argument("--statsd.mapping-config", dest="mapping", type=Path,
                        default=statsd_mapping.DEFAULT_MAPPING, help="mapping file (default: the project's)")
    parser.add_argument("--statsd.listen-udp", dest="udp", default=":9125", help="[host]:port, empty: off")
    parser.add_argument("--statsd.listen-tcp", dest="tcp", default=":9125", help="[host]:port, empty: off")
    parser.add_argument("--web.listen-address", dest="web", default=":9102", help="[host]:port of /metrics")
    parser.add_argument("--double.record-file", dest="record", type=Path,
                        help="append every received line, as '<unix time> <line>', to this file")
    args = parser.parse_args(argv)
    try:
        registry = Registry(args.mapping, args.record)
    except statsd_mapping.MappingError as exc:
        print(f"statsd_double: {exc}", file=sys.stderr)
        return 1
    web = _address(args.web, "--web.listen-address")
    if web is None:
        raise SystemExit("statsd_double: --web.listen-address must not be empty")
    server, _ = serve(registry, _address(args.udp, "--statsd.listen-udp"), _address(args.tcp, "--statsd.listen-tcp"), web)
    print(f"statsd_double: TEST DOUBLE of statsd-exporter, mapping {args.mapping}, "
          f"udp {args.udp or 'off'}, tcp {args.tcp or 'off'}, /metrics on {args.web}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

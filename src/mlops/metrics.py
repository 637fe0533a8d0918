"""ML gauges over StatsD (prefix ``mlops.``). Sent only when a host is configured; a failure to
send never fails a step."""

from __future__ import annotations

import logging

from mlops.config import statsd_address

log = logging.getLogger(__name__)


def _client():  # -> statsd.StatsClient | None
    addr = statsd_address()
    if addr is None:
        return None
    try:
        import statsd

        return statsd.StatsClient(addr[0], addr[1], prefix="mlops")
    except Exception as exc:  # DNS failure, socket errors: metrics are best effort
        log.warning("statsd unavailable (%s): %s", addr, exc)
        return None


def gauge(name: str, value: float) -> bool:
    """Send ``mlops.<name>`` as a gauge; True when handed to the socket."""
    client = _client()
    if client is None:
        return False
    try:
        client.gauge(name, float(value))
        return True
    except Exception as exc:
        log.warning("statsd gauge %s not sent: %s", name, exc)
        return False


def incr(name: str, count: int = 1) -> bool:
    """Increment the counter ``mlops.<name>``; True when handed to the socket."""
    client = _client()
    if client is None:
        return False
    try:
        client.incr(name, count)
        return True
    except Exception as exc:
        log.warning("statsd counter %s not sent: %s", name, exc)
        return False

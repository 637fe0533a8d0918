"""Bring-up of docker-compose.celery.yml: every service healthy, airflow-init exited 0, replicas,
memory limits, published ports on 127.0.0.1 only."""

from __future__ import annotations

from testkit.compose_stack import LEFT_OUT, NO_HEALTHCHECK, ONE_SHOT, ComposeStack


def test_every_service_healthy_and_init_exited_0(compose_stack: ComposeStack) -> None:
    compose_stack.wait_healthy(timeout=60)
    seen = {}
    for c in compose_stack.containers():
        service = c["Config"]["Labels"]["com.docker.compose.service"]
        state = c["State"]
        seen[c["Name"]] = (service, f"exited {state['ExitCode']}" if state["Status"] == "exited"
                           else state.get("Health", {}).get("Status", "no healthcheck"))
    assert {s for s, _ in seen.values()} == set(compose_stack.services())
    assert not set(LEFT_OUT) & {s for s, _ in seen.values()}
    for name, (service, state) in seen.items():
        want = "exited 0" if service in ONE_SHOT else "no healthcheck" if service in NO_HEALTHCHECK else "healthy"
        assert state == want, (name, state)


def test_worker_replicas_and_memory_limits(compose_stack: ComposeStack) -> None:
    light = compose_stack.containers("airflow-worker-light", all_states=False)
    heavy = compose_stack.containers("airflow-worker-heavy", all_states=False)
    assert len(light) == 2 and len(heavy) == 1
    assert {c["HostConfig"]["Memory"] for c in light} == {2 * 1024**3}
    assert heavy[0]["HostConfig"]["Memory"] == 6 * 1024**3
    # Celery node names carry the queue and the container's host name (light@<id>, heavy@<id>).
    online = compose_stack.flower("/api/workers?refresh=1").json()
    expected = {f"light@{h}" for h in compose_stack.hostnames("airflow-worker-light")} | {
        f"heavy@{h}" for h in compose_stack.hostnames("airflow-worker-heavy")} | {
        f"maintenance@{h}" for h in compose_stack.hostnames("airflow-worker-maintenance")}
    assert set(online) == expected
    for name, info in online.items():
        queues = {q["name"] for q in info.get("active_queues", [])}
        assert queues == {name.split("@")[0]}, (name, queues)


def test_published_ports_bind_to_localhost_only(compose_stack: ComposeStack) -> None:
    published = {}
    for c in compose_stack.containers(all_states=False):
        for port, bindings in (c["NetworkSettings"]["Ports"] or {}).items():
            for b in bindings or []:
                published[(c["Name"], port)] = (b["HostIp"], b["HostPort"])
    service_ports = {compose_stack.env[v] for v in ("AIRFLOW_API_PORT", "FLOWER_PORT", "MLFLOW_PORT", "PROMETHEUS_PORT",
                                                    "PUSHGATEWAY_PORT", "ALERTMANAGER_PORT", "SERVING_PORT")}
    assert {p for _, p in published.values()} == service_ports
    assert {ip for ip, _ in published.values()} == {"127.0.0.1"}, published

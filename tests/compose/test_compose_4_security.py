"""Flower refuses requests without its password (its /api and UI); nothing else is published."""

from __future__ import annotations

import requests

from testkit.compose_stack import ComposeStack


def test_flower_refuses_requests_without_its_password(compose_stack: ComposeStack) -> None:
    stack = compose_stack
    for path in ("/api/workers", "/api/tasks", "/"):
        assert stack.flower(path, auth=False).status_code == 401, path
    wrong = requests.get(f"{stack.url('FLOWER_PORT')}/api/workers",
                         auth=(stack.env["FLOWER_USER"], stack.env["FLOWER_PASSWORD"] + "x"), timeout=30)
    assert wrong.status_code == 401
    assert stack.flower("/api/workers").status_code == 200


def test_api_server_refuses_anonymous_requests(compose_stack: ComposeStack) -> None:
    assert compose_stack.api("GET", "/dags", role=None).status_code == 401

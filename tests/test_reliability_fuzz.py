"""Fuzz the API from its own OpenAPI document (schemathesis): no 500s, no hangs, JSON errors.

Every operation in the OpenAPI document gets valid and invalid requests generated from its schema and
sent to a real uvicorn server (real Redis, materialised online store, an API key so the write and
admin operations are reached rather than all refused). Each case checks schemathesis' built-in
conformance checks plus ours: the answer arrives within the timeout, and every 4xx/5xx body is
the API's JSON error (`code`, `message`, `details`). Kept bounded: a few examples per operation,
derandomised so a failure reproduces.

The schema is the app's own `openapi()` (built without starting anything, so pytest can make one
test per operation at collection time); `test_the_fuzzed_schema_is_the_served_one` checks that the
running server serves exactly that document.
"""
from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.core.failures import Failure

from feature_store.materialize import materialize
from serving.config import ServingSettings
from support.local_server import LocalServer, redis_url_of
from serving.main import create_app
from support.sample_runs import tiktok_mean_pool_run

pytestmark = pytest.mark.slow
NAMESPACE = "test-reliability-fuzz"
API_KEY = "fuzz-api-key-0123456789abcdef"
REQUEST_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("reliability-fuzz")
    run = tiktok_mean_pool_run(root / "run")
    materialize("tiktok", client=redis_server, namespace=NAMESPACE, offline_root=root / "offline", progress=False)
    env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": NAMESPACE,
           "RECSYS_STORE_DIR": str(root / "store"), "RECSYS_SERVE_LOG_DIR": str(root / "logs"),
           "RECSYS_SERVE_API_KEY": API_KEY}
    with LocalServer(run, env=env, log_file=root / "server.log") as live:
        yield live
    log = (root / "server.log").read_text()
    assert "Traceback" not in log, log[-3000:]


OPENAPI = create_app(ServingSettings(api_key=API_KEY)).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_the_fuzzed_schema_is_the_served_one(server):
    import httpx

    assert httpx.get(server.url + "/openapi.json").json() == json.loads(json.dumps(OPENAPI))


def error_bodies_are_json(ctx: CheckContext, response, case) -> bool | None:
    """Every error answer is `{"code", "message", "details"}` JSON, never HTML or a traceback."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if not (content_type.startswith("application/json") and isinstance(body, dict)
            and isinstance(body.get("code"), str) and isinstance(body.get("message"), str)
            and isinstance(body.get("details"), list)):
        raise Failure(operation=case.operation.label, title="Error response is not the API's JSON error",
                      message=f"{response.status_code} {content_type}: {response.content[:300]!r}")
    if b"Traceback" in response.content:
        raise Failure(operation=case.operation.label, title="Traceback in a response", message=body["message"])
    return True


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_fuzz(server, case):
    response = case.call(base_url=server.url, headers={"X-API-Key": API_KEY}, timeout=REQUEST_TIMEOUT_S)
    case.validate_response(response, checks=[not_a_server_error, error_bodies_are_json])


def test_the_fuzz_reached_every_operation_with_valid_and_invalid_input(server):
    """Guard against a fuzz run that silently sent nothing (or only requests refused up front)."""
    import re

    import httpx

    seen: dict[str, set[str]] = {}
    for route, status, count in re.findall(
            r'^recsys_http_request_duration_seconds_count\{method="\w+",route="([^"]+)",status="(\d+)"\} ([0-9.e+]+)$',
            httpx.get(server.url + "/metrics").text, re.M):
        if float(count) > 0:
            seen.setdefault(route, set()).add(status[0] + "xx")
    print({route: sorted(kinds) for route, kinds in sorted(seen.items())})
    for path in OPENAPI["paths"]:
        assert "4xx" in seen.get(path, set()), (path, seen.get(path))
    for path in ("/v1/users/{user_id}/recommendations", "/v1/items/{item_id}/similar", "/v1/events", "/admin/model",
                 "/v1/explorer/examples", "/healthz"):
        assert "2xx" in seen[path], (path, seen[path])

"""API keys of the local stack: one principal per key, ids that never reveal the key, and
API Gateway's 403 for a missing or unknown key (health and openapi stay public)."""

import json

from local.events import HttpRequest, HttpResponse
from local.keys import KeyRing, key_id_for, parse_keys
from local.stack import build_app


def test_each_key_is_its_own_stable_principal_and_the_id_hides_the_key():
    ring = KeyRing.from_env_value(" k1, k2 ,,k1")
    assert ring.keys == ("k1", "k2")
    assert not ring.generated
    first, second = ring.key_id("k1"), ring.key_id("k2")
    assert first and second and first != second
    assert first == key_id_for("k1") == KeyRing.from_env_value("k1").key_id("k1")
    assert "k1" not in first[2:]  # the id is a hash, not the key
    assert ring.key_id("k3") is None
    assert ring.key_id("") is None
    assert ring.key_id(None) is None


def test_unset_key_generates_a_random_one():
    first, second = KeyRing.from_env_value(""), KeyRing.from_env_value(None)
    assert first.generated and second.generated
    assert first.keys != second.keys
    assert len(first.keys[0]) >= 24
    assert parse_keys("") == []


def _app_with_recorder():
    seen = []

    def handler(event, context):
        seen.append(event)
        return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}"}

    return build_app(KeyRing.from_env_value("k1,k2"), handler), seen


def _call(app, target, key=None) -> HttpResponse:
    headers = [("x-api-key", key)] if key is not None else []
    return app(HttpRequest(method="GET", target=target, headers=headers))


def test_missing_or_unknown_key_is_forbidden_before_the_handler_runs():
    app, seen = _app_with_recorder()
    for key in (None, "wrong", ""):
        response = _call(app, "/v1/sessions/s1", key)
        assert response.status == 403
        assert json.loads(response.body)["error"]["code"] == "FORBIDDEN"
    assert seen == []


def test_health_and_openapi_need_no_key_and_valid_keys_reach_the_handler_with_their_id():
    app, seen = _app_with_recorder()
    assert _call(app, "/v1/health").status == 200
    assert _call(app, "/v1/openapi.json").status == 200
    # Unknown paths need a key too (API Gateway's catch-all resource requires one) ...
    assert _call(app, "/v1/no-such-route").status == 403
    assert _call(app, "/").status == 200  # the playground is public too
    # ... and with one, they reach the handler, which answers 404.
    assert _call(app, "/v1/no-such-route", "k1").status == 200
    assert _call(app, "/v1/usage", "k2").status == 200
    assert seen[-1]["requestContext"]["identity"]["apiKeyId"] == key_id_for("k2")
    assert seen[0]["requestContext"]["identity"]["apiKeyId"] is None

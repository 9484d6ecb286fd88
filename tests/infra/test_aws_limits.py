"""API Gateway's limits, as the synthesized template shapes them (issue 12, item 8): the public
routes are throttled per method (no key, so no usage plan covers them), and the gateway's own
504 and 413 answer in the product's error shape."""

from __future__ import annotations

import json

from infra.config import StackConfig
from infra.rest_api import ANY_METHOD_SERVES
from lambdas.shared.routes import PUBLIC_PATHS, ROUTES
from tests.infra.conftest import Synthesized, cdk_json_context


def _method_settings(synthesized: Synthesized) -> dict[tuple[str, str], dict]:
    [stage] = synthesized.resources("AWS::ApiGateway::Stage").values()
    return {
        (setting["HttpMethod"], setting["ResourcePath"]): setting
        for setting in stage["Properties"]["MethodSettings"]
    }


def _resource_path(path: str) -> str:
    """A stage method setting's resource path: `/` of the route escaped as `~1`."""
    return "/" + path.replace("/", "~1") if path != "/" else "/"


def test_every_route_without_an_api_key_is_throttled_per_method(
    synthesized: Synthesized,
) -> None:
    config = StackConfig.model_validate(
        {k: v for k, v in cdk_json_context().items() if k in StackConfig.model_fields}
    )
    settings = _method_settings(synthesized)
    public = [route for route in ROUTES if route.public]
    assert {(r.method, r.path) for r in public} >= {
        ("GET", "/v1/health"),
        ("GET", "/v1/openapi.json"),
    }
    for route in public:
        setting = settings.get((route.method, _resource_path(route.path)))
        assert setting is not None, f"{route.method} {route.path} is not throttled"
        assert setting["ThrottlingRateLimit"] == config.publicThrottleRateLimit
        assert setting["ThrottlingBurstLimit"] == config.publicThrottleBurstLimit
    # Keyed routes are throttled per key by the usage plan, not per method.
    keyed = {(r.method, _resource_path(r.path)) for r in ROUTES if not r.public}
    assert not keyed & set(settings)


def test_every_other_method_of_a_public_path_is_throttled_too(synthesized: Synthesized) -> None:
    # Their ANY method needs no key either (it answers 405); a setting names each method.
    settings = _method_settings(synthesized)
    for path in PUBLIC_PATHS:
        for method in ANY_METHOD_SERVES:
            assert (method, _resource_path(path)) in settings, f"{method} {path} is not throttled"


def test_gateway_timeouts_and_oversize_bodies_answer_in_the_error_shape(
    synthesized: Synthesized,
) -> None:
    answers = {}
    for response in synthesized.resources("AWS::ApiGateway::GatewayResponse").values():
        properties = response["Properties"]
        body = properties["ResponseTemplates"]["application/json"]
        document = json.loads(body.replace("$context.error.messageString", '"timed out"'))
        answers[properties["ResponseType"]] = (properties.get("StatusCode"), document)
    status, document = answers["INTEGRATION_TIMEOUT"]
    assert status == "504" and document["error"]["code"] == "INTEGRATION_TIMEOUT"
    assert document["error"]["message"]
    status, document = answers["REQUEST_TOO_LARGE"]
    assert status == "413" and document["error"]["code"] == "PAYLOAD_TOO_LARGE"

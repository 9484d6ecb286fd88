"""`GET /` (the browser playground) on the deployed REST API: the root resource's method, no API
key, throttled per method like every route served without a key (no usage plan covers it)."""

from __future__ import annotations

from infra.config import StackConfig
from infra.rest_api import method_options_path
from lambdas.shared import routes
from tests.infra.conftest import Synthesized, cdk_json_context


def test_the_root_method_needs_no_key_and_is_throttled(synthesized: Synthesized) -> None:
    [root_get] = [
        method["Properties"]
        for method in synthesized.resources("AWS::ApiGateway::Method").values()
        if method["Properties"]["HttpMethod"] == "GET"
        and "Fn::GetAtt" in method["Properties"]["ResourceId"]  # the API's root resource
    ]
    assert root_get["ApiKeyRequired"] is False
    assert root_get["Integration"]["Type"] == "AWS_PROXY"

    config = StackConfig.model_validate(
        {k: v for k, v in cdk_json_context().items() if k in StackConfig.model_fields}
    )
    [stage] = synthesized.resources("AWS::ApiGateway::Stage").values()
    settings = {
        (s["HttpMethod"], s["ResourcePath"]): s for s in stage["Properties"]["MethodSettings"]
    }
    throttle = settings[("GET", "/")]
    assert throttle["ThrottlingRateLimit"] == config.publicThrottleRateLimit
    assert throttle["ThrottlingBurstLimit"] == config.publicThrottleBurstLimit
    assert settings[("GET", "/~1v1~1health")]["ThrottlingRateLimit"] > 0


def test_method_options_paths_of_the_root_and_a_nested_route() -> None:
    for route, expected in ((routes.PLAYGROUND, "//GET"), (routes.HEALTH, "/v1/health/GET")):
        assert method_options_path(route.path, route.method) == expected

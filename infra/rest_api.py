"""The REST API: the routes of SPEC §3 (`lambdas/shared/routes.py`), each proxied to the API
function.

An API key is required on every method except those of `/` (the playground, `GET`),
`/v1/health` and `/v1/openapi.json`; a usage plan throttles each key and caps its monthly requests,
and the methods served without a key (which no usage plan covers) are throttled per method. API
Gateway's own rejections (missing key, throttling, quota, invalid body, a body over 10 MB, an
integration over 29 s) use the product's error shape; other methods and unknown paths reach the API
function (405 / 404) after the key check.
"""

from __future__ import annotations

import json

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import StackConfig
from lambdas.shared.routes import (
    ANY_METHOD,
    CATCH_ALL_PATHS,
    FORBIDDEN_CODE,
    FORBIDDEN_MESSAGE,
    PUBLIC_PATHS,
    RESOURCE_PATHS,
    ROUTES,
)

# Minimal request shapes checked at the edge (a JSON object with these string properties);
# the API function validates everything in full.
REQUEST_MODELS: dict[str, tuple[str, ...]] = {
    "Execute": ("code",),
    "FileUpload": ("path",),
}

# API Gateway's rejections, in the product's `{"error": {"code", "message"}}` shape.
# `$context.error.messageString` is already a quoted JSON string.
GATEWAY_ERRORS: dict[str, tuple[str | None, str]] = {
    # response type: (HTTP status, error code); the DEFAULT_* fallbacks keep each response's own
    # status (setting one there would rewrite the status of every 4xx/5xx)
    "INVALID_API_KEY": ("403", FORBIDDEN_CODE),  # missing or unknown x-api-key
    "ACCESS_DENIED": ("403", FORBIDDEN_CODE),
    # Unmatched method or path: never reached, every path has an ANY method (see below).
    "MISSING_AUTHENTICATION_TOKEN": ("403", FORBIDDEN_CODE),
    "THROTTLED": ("429", "RATE_LIMITED"),
    "QUOTA_EXCEEDED": ("429", "QUOTA_EXCEEDED"),
    "BAD_REQUEST_BODY": ("400", "INVALID_REQUEST"),
    "BAD_REQUEST_PARAMETERS": ("400", "INVALID_REQUEST"),
    "REQUEST_TOO_LARGE": ("413", "PAYLOAD_TOO_LARGE"),  # a body over API Gateway's 10 MB
    # The API function did not answer within API Gateway's 29 s (a sync run answers 202 before).
    "INTEGRATION_TIMEOUT": ("504", "INTEGRATION_TIMEOUT"),
    "DEFAULT_4XX": (None, "INVALID_REQUEST"),
    "DEFAULT_5XX": (None, "INTERNAL"),
}
_ERROR_MESSAGES = {
    FORBIDDEN_CODE: json.dumps(FORBIDDEN_MESSAGE),
    "INTERNAL": '"internal error"',
}

ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integration.latency",
    "apiKeyId": "$context.identity.apiKeyId",
    "sourceIp": "$context.identity.sourceIp",
    "errorType": "$context.error.responseType",
    "xrayTraceId": "$context.xrayTraceId",
}


# The methods an `ANY` method serves. Stage method settings name the request's own method,
# never `ANY`, so a public path's other methods (405 from the API function) are throttled by
# one setting each.
ANY_METHOD_SERVES: tuple[str, ...] = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def method_options_path(path: str, method: str) -> str:
    """A method's key in the stage's method options: `/<resource path>/<HTTP method>`; the root
    resource is `//GET` (CDK's parseMethodOptionsPath reads an empty first component as `/`)."""
    return f"/{path.strip('/')}/{method}"


def keyless_methods() -> list[tuple[str, str]]:
    """(path, method) of every method served without an API key: the public routes and every
    other method of their paths (the `ANY` methods below)."""
    methods = {(route.path, route.method) for route in ROUTES if route.public}
    methods |= {(path, method) for path in PUBLIC_PATHS for method in ANY_METHOD_SERVES}
    return sorted(methods)


class RestApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        handler: lambda_.IFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=config.log_retention, removal_policy=config.removal_policy
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            description=f"Lambda Code Interpreter ({config.stage})",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=config.apiGatewayCloudWatchRole,
            deploy_options=apigw.StageOptions(
                stage_name=config.stage,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FORMAT)),
                tracing_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # would log request bodies, i.e. user code
                metrics_enabled=True,
                method_options={
                    method_options_path(path, method): apigw.MethodDeploymentOptions(
                        throttling_rate_limit=config.publicThrottleRateLimit,
                        throttling_burst_limit=config.publicThrottleBurstLimit,
                    )
                    for path, method in keyless_methods()
                },
            ),
            default_method_options=apigw.MethodOptions(api_key_required=True),
        )
        self.validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        models = {
            name: self.api.add_model(
                f"{name}Model",
                content_type="application/json",
                schema=apigw.JsonSchema(
                    schema=apigw.JsonSchemaVersion.DRAFT4,
                    type=apigw.JsonSchemaType.OBJECT,
                    required=list(required),
                    properties={
                        prop: apigw.JsonSchema(type=apigw.JsonSchemaType.STRING)
                        for prop in required
                    },
                ),
            )
            for name, required in REQUEST_MODELS.items()
        }
        integration = apigw.LambdaIntegration(handler, proxy=True, allow_test_invoke=False)
        for route in ROUTES:
            resource = self.api.root.resource_for_path(route.path.lstrip("/"))
            resource.add_method(
                route.method,
                integration,
                api_key_required=not route.public,
                request_validator=self.validator,
                request_models=(
                    {"application/json": models[route.body_model]} if route.body_model else None
                ),
            )
        # Every other method of a known path (405 with Allow) and every unknown path (404) go
        # to the API function too, after the same key check: see lambdas/shared/routes.py.
        # (`/` is both the playground's resource and a catch-all: one ANY method.)
        for path in dict.fromkeys(RESOURCE_PATHS + CATCH_ALL_PATHS):
            resource = self.api.root.resource_for_path(path.lstrip("/"))
            resource.add_method(ANY_METHOD, integration, api_key_required=path not in PUBLIC_PATHS)
        for response_type, (status, code) in GATEWAY_ERRORS.items():
            message = _ERROR_MESSAGES.get(code, "$context.error.messageString")
            self.api.add_gateway_response(
                f"Error{response_type.title().replace('_', '')}",
                type=apigw.ResponseType.of(response_type),
                status_code=status,
                templates={
                    "application/json": f'{{"error":{{"code":"{code}","message":{message}}}}}'
                },
            )

        self.api_key = self.api.add_api_key("DefaultKey")
        self.usage_plan = self.api.add_usage_plan(
            "UsagePlan",
            description=f"Lambda Code Interpreter ({config.stage}): per-key throttle and quota",
            throttle=apigw.ThrottleSettings(
                rate_limit=config.throttleRateLimit, burst_limit=config.throttleBurstLimit
            ),
            quota=apigw.QuotaSettings(
                limit=config.quotaRequestsPerMonth, period=apigw.Period.MONTH
            ),
            api_stages=[apigw.UsagePlanPerApiStage(api=self.api, stage=self.api.deployment_stage)],
        )
        self.usage_plan.add_api_key(self.api_key)

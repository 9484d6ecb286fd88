"""SPEC §1 invariants, read from the synthesized template (one synth per session)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from lambdas.api.settings import ApiSettings
from lambdas.shared.routes import ANY_METHOD, CATCH_ALL_PATHS, PUBLIC_PATHS, RESOURCE_PATHS, ROUTES
from tests.infra.conftest import Synthesized

FORBIDDEN_EXECUTOR_SERVICES = ("s3", "dynamodb", "lambda", "sts", "ssm", "secretsmanager")

SPEC_ROUTES = {(route.method, route.path) for route in ROUTES}
PUBLIC_ROUTES = {(route.method, route.path) for route in ROUTES if route.public}
# Other methods of known paths (405) and unknown paths (404) reach the API function too.
ANY_ROUTES = {(ANY_METHOD, path) for path in RESOURCE_PATHS + CATCH_ALL_PATHS}
PUBLIC_ROUTES |= {(ANY_METHOD, path) for path in PUBLIC_PATHS}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _functions(synth: Synthesized) -> dict[str, dict[str, Any]]:
    return synth.resources("AWS::Lambda::Function")


def _executor(synth: Synthesized) -> tuple[str, dict[str, Any]]:
    [(logical_id, function)] = [
        (logical_id, fn)
        for logical_id, fn in _functions(synth).items()
        if fn["Properties"].get("Handler") == "lambdas.executor.handler.handler"
    ]
    return logical_id, function


def _api_function(synth: Synthesized) -> dict[str, Any]:
    [function] = [
        fn
        for fn in _functions(synth).values()
        if fn["Properties"].get("Handler") == "lambdas.api.handler.handler"
    ]
    return function


def _role_statements(synth: Synthesized, role_ref: dict[str, Any]) -> list[dict[str, Any]]:
    role_id = role_ref["Fn::GetAtt"][0]
    role = synth.template["Resources"][role_id]
    statements = [
        statement
        for policy in role["Properties"].get("Policies", [])
        for statement in policy["PolicyDocument"]["Statement"]
    ]
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    assert not role["Properties"].get("ManagedPolicyArns"), "no managed policies on this role"
    return statements


def _route_methods(synth: Synthesized) -> dict[tuple[str, str], dict[str, Any]]:
    resources = synth.resources("AWS::ApiGateway::Resource")

    def path_of(resource_ref: Any) -> str:
        if not isinstance(resource_ref, dict) or "Ref" not in resource_ref:
            return ""  # the API's root resource (Fn::GetAtt RootResourceId)
        resource = resources[resource_ref["Ref"]]["Properties"]
        return f"{path_of(resource['ParentId'])}/{resource['PathPart']}"

    return {
        (
            method["Properties"]["HttpMethod"],
            path_of(method["Properties"]["ResourceId"]) or "/",
        ): method
        for method in synth.resources("AWS::ApiGateway::Method").values()
    }


@pytest.mark.attack(
    "tenant isolation",
    "two sessions sharing an executor environment",
    "impossible: the executor is the one `PER_TENANT` function, in isolated subnets",
)
def test_exactly_one_function_is_tenant_isolated_and_it_is_the_vpc_bound_executor(
    synthesized: Synthesized,
) -> None:
    isolated = [
        fn
        for fn in _functions(synthesized).values()
        if fn["Properties"].get("TenancyConfig", {}).get("TenantIsolationMode") == "PER_TENANT"
    ]
    assert len(isolated) == 1
    _, executor = _executor(synthesized)
    assert isolated[0] is executor
    assert executor["Properties"]["Runtime"] == "python3.13"
    vpc_config = executor["Properties"]["VpcConfig"]
    subnets = synthesized.resources("AWS::EC2::Subnet")
    assert vpc_config["SubnetIds"]
    for subnet_ref in vpc_config["SubnetIds"]:
        subnet = subnets[subnet_ref["Ref"]]["Properties"]
        assert subnet["MapPublicIpOnLaunch"] is False
        assert any(
            tag == {"Key": "aws-cdk:subnet-type", "Value": "Isolated"} for tag in subnet["Tags"]
        )


@pytest.mark.attack(
    "IAM",
    "user code calls AWS with the executor function's role",
    "it may only write its own log group; everything else is denied to calls from inside the "
    "function; no secrets in its environment",
)
def test_executor_role_can_only_write_its_own_logs(synthesized: Synthesized) -> None:
    _, executor = _executor(synthesized)
    statements = _role_statements(synthesized, executor["Properties"]["Role"])
    allowed_actions = [
        action
        for statement in statements
        if statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"])
    ]
    for action in allowed_actions:
        service = action.split(":")[0].lower()
        assert service not in FORBIDDEN_EXECUTOR_SERVICES, action
        assert service in {"logs", "ec2"}, action  # ec2: Lambda attaching the VPC interfaces
    log_group_ref = executor["Properties"]["LoggingConfig"]["LogGroup"]
    for statement in statements:
        if statement["Effect"] == "Allow" and any(
            a.startswith("logs:") for a in _as_list(statement["Action"])
        ):
            assert statement["Resource"] == {"Fn::GetAtt": [log_group_ref["Ref"], "Arn"]}
    # The function's own code cannot use even those: everything but log writes is denied to
    # requests carrying lambda:SourceFunctionArn (set by Lambda for in-environment calls).
    [deny] = [s for s in statements if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Null": {"lambda:SourceFunctionArn": "false"}}
    assert set(deny["NotAction"]) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    environment = executor["Properties"].get("Environment", {}).get("Variables", {})
    assert not any(re.search(r"SECRET|TOKEN|KEY|PASSWORD", name) for name in environment)


@pytest.mark.attack(
    "network",
    "user code connects out of the executor's VPC",
    "no NAT, no internet gateway; the security group allows port 443 out only",
)
def test_network_has_no_way_out_but_the_s3_endpoint(synthesized: Synthesized) -> None:
    template = Template.from_json(synthesized.template)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::InternetGateway", 0)
    template.resource_count_is("AWS::EC2::EgressOnlyInternetGateway", 0)
    for route in synthesized.resources("AWS::EC2::Route").values():
        assert "GatewayId" not in route["Properties"] and "NatGatewayId" not in route["Properties"]
    [group] = synthesized.resources("AWS::EC2::SecurityGroup").values()
    assert "SecurityGroupIngress" not in group["Properties"]
    assert [rule["ToPort"] for rule in group["Properties"]["SecurityGroupEgress"]] == [443]


@pytest.mark.attack(
    "network",
    "user code reaches S3 objects other than this deployment's",
    "the VPC endpoint allows get/put of this bucket's `sessions/`, `executions/`, `wheelhouse/` "
    "objects only",
)
def test_s3_endpoint_policy_allows_only_this_buckets_objects(synthesized: Synthesized) -> None:
    [bucket_id] = [
        logical_id
        for logical_id, bucket in synthesized.resources("AWS::S3::Bucket").items()
        if "LoggingConfiguration" in bucket["Properties"]
    ]
    [endpoint] = synthesized.resources("AWS::EC2::VPCEndpoint").values()
    assert endpoint["Properties"]["VpcEndpointType"] == "Gateway"
    statements = endpoint["Properties"]["PolicyDocument"]["Statement"]
    assert statements
    prefixes = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert set(_as_list(statement["Action"])) <= {"s3:GetObject", "s3:PutObject"}
        for resource in _as_list(statement["Resource"]):
            bucket_arn, suffix = resource["Fn::Join"][1]
            assert bucket_arn == {"Fn::GetAtt": [bucket_id, "Arn"]}
            prefixes.add(suffix)
    assert prefixes == {"/sessions/*", "/executions/*", "/wheelhouse/*"}


def test_api_key_is_required_on_every_route_but_health_and_openapi(
    synthesized: Synthesized,
) -> None:
    methods = _route_methods(synthesized)
    assert set(methods) == SPEC_ROUTES | ANY_ROUTES  # the root resource as "/"
    for route, method in methods.items():
        public = route in PUBLIC_ROUTES
        assert method["Properties"]["ApiKeyRequired"] is (not public), route
        integration = method["Properties"]["Integration"]
        assert integration["Type"] == "AWS_PROXY"


def test_usage_plan_throttles_and_caps_each_key_monthly(synthesized: Synthesized) -> None:
    template = Template.from_json(synthesized.template)
    template.has_resource_properties(
        "AWS::ApiGateway::UsagePlan",
        {
            "Throttle": {"RateLimit": Match.any_value(), "BurstLimit": Match.any_value()},
            "Quota": {"Limit": Match.any_value(), "Period": "MONTH"},
            "ApiStages": Match.any_value(),
        },
    )
    template.resource_count_is("AWS::ApiGateway::ApiKey", 1)
    template.resource_count_is("AWS::ApiGateway::UsagePlanKey", 1)
    outputs = synthesized.template["Outputs"]
    assert "get-api-key" in json.dumps(outputs["GetApiKeyCommand"])
    assert {"ApiUrl", "ApiKeyId"} <= set(outputs)


def test_api_gateway_rejections_use_the_products_error_shape(synthesized: Synthesized) -> None:
    codes = {}
    for response in synthesized.resources("AWS::ApiGateway::GatewayResponse").values():
        properties = response["Properties"]
        body = properties["ResponseTemplates"]["application/json"]
        # What API Gateway substitutes is a quoted JSON string.
        document = json.loads(body.replace("$context.error.messageString", '"Forbidden"'))
        assert set(document["error"]) == {"code", "message"}
        codes[properties["ResponseType"]] = (
            properties.get("StatusCode"),
            document["error"]["code"],
        )
    assert codes["INVALID_API_KEY"] == ("403", "FORBIDDEN")
    assert codes["THROTTLED"] == ("429", "RATE_LIMITED")
    assert codes["QUOTA_EXCEEDED"] == ("429", "QUOTA_EXCEEDED")
    # Unreachable (every path has an ANY method); the same 403 as a missing key if it were.
    assert codes["MISSING_AUTHENTICATION_TOKEN"] == ("403", "FORBIDDEN")
    # The fallbacks keep each response's own status (a status there would rewrite all 4xx).
    assert codes["DEFAULT_4XX"][0] is None
    assert codes["DEFAULT_5XX"][0] is None


def test_table_has_ttl_on_demand_billing_and_point_in_time_recovery(
    synthesized: Synthesized,
) -> None:
    Template.from_json(synthesized.template).has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "BillingMode": "PAY_PER_REQUEST",
            "TimeToLiveSpecification": {"AttributeName": "ttl", "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "StreamSpecification": {"StreamViewType": "KEYS_ONLY"},
        },
    )


def test_removed_table_items_reach_the_api_function_to_purge_expired_sessions(
    synthesized: Synthesized,
) -> None:
    [table_id] = synthesized.resources("AWS::DynamoDB::Table")
    [mapping] = synthesized.resources("AWS::Lambda::EventSourceMapping").values()
    properties = mapping["Properties"]
    assert properties["EventSourceArn"] == {"Fn::GetAtt": [table_id, "StreamArn"]}
    [function_id] = [
        logical_id
        for logical_id, fn in _functions(synthesized).items()
        if fn["Properties"].get("Handler") == "lambdas.api.handler.handler"
    ]
    assert properties["FunctionName"] == {"Ref": function_id}
    [pattern] = properties["FilterCriteria"]["Filters"]
    assert json.loads(pattern["Pattern"]) == {"eventName": ["REMOVE"]}


def test_buckets_are_private_tls_only_and_encrypted(synthesized: Synthesized) -> None:
    buckets = synthesized.resources("AWS::S3::Bucket")
    policies = synthesized.resources("AWS::S3::BucketPolicy").values()
    for logical_id, bucket in buckets.items():
        properties = bucket["Properties"]
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        [policy] = [p for p in policies if p["Properties"]["Bucket"] == {"Ref": logical_id}]
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert {
            "Action": "s3:*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
        }.items() <= next(s for s in statements if s["Effect"] == "Deny").items()
        for statement in statements:  # any anonymous allow is pinned to the executor endpoint
            if statement["Effect"] == "Allow" and statement["Principal"] == {"AWS": "*"}:
                assert "aws:SourceVpce" in statement["Condition"]["StringEquals"]


def test_data_bucket_expires_session_and_execution_objects(synthesized: Synthesized) -> None:
    [bucket] = [
        b
        for b in synthesized.resources("AWS::S3::Bucket").values()
        if "LoggingConfiguration" in b["Properties"]
    ]
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    expiring = {rule["Prefix"] for rule in rules if rule.get("ExpirationInDays")}
    assert {"sessions/", "executions/"} <= expiring
    assert bucket["Properties"]["CorsConfiguration"]["CorsRules"][0]["AllowedMethods"] == [
        "GET",
        "POST",
    ]


def test_api_function_environment_matches_its_settings_model(synthesized: Synthesized) -> None:
    from infra.api_function import LOCAL_ONLY_SETTINGS

    environment = _api_function(synthesized)["Properties"]["Environment"]["Variables"]
    assert set(environment) == set(ApiSettings.model_fields) - LOCAL_ONLY_SETTINGS
    assert environment["EXECUTOR_MODE"] == "lambda"
    assert environment["BACKGROUND_MODE"] == "lambda"
    # Isolated executors read on-demand wheels from this bucket's wheelhouse prefix.
    assert "/wheelhouse/x86_64/" in json.dumps(environment["WHEELHOUSE_URL"])


def test_api_function_traces_without_capturing_responses(synthesized: Synthesized) -> None:
    """X-Ray keeps timings, not responses (user output, presigned URLs with session tokens)."""
    function = _api_function(synthesized)["Properties"]
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert function["Environment"]["Variables"]["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"


def test_api_function_may_invoke_the_executor_and_itself(synthesized: Synthesized) -> None:
    executor_id, _ = _executor(synthesized)
    api = _api_function(synthesized)
    statements = _role_statements(synthesized, api["Properties"]["Role"])
    invoke_targets = json.dumps(
        [s["Resource"] for s in statements if "lambda:InvokeFunction" in _as_list(s["Action"])]
    )
    assert executor_id in invoke_targets
    assert f":function:{api['Properties']['FunctionName']}" in invoke_targets


def _asset_files(synth: Synthesized, function: dict[str, Any]) -> set[str]:
    asset_hash = function["Properties"]["Code"]["S3Key"].split(".")[0]
    asset_dir = synth.outdir / f"asset.{asset_hash}"
    return {p.relative_to(asset_dir).as_posix() for p in asset_dir.rglob("*") if p.is_file()}


def test_function_code_holds_only_its_own_packages(synthesized: Synthesized) -> None:
    _, executor = _executor(synthesized)
    executor_files = _asset_files(synthesized, executor)
    assert "lambdas/executor/handler.py" in executor_files
    assert all(
        f.startswith(("lambdas/executor/", "lambdas/shared/")) or f == "lambdas/__init__.py"
        for f in executor_files
    ), executor_files
    api_files = _asset_files(synthesized, _api_function(synthesized))
    assert {
        "lambdas/api/handler.py",
        "lambdas/shared/packages/catalog.py",
        "lambdas/shared/packages/whitelist.toml",
    } <= api_files
    assert not any(f.startswith(("lambdas/executor/", "layers/")) for f in api_files)
    assert not any("__pycache__" in f for f in executor_files | api_files)


def test_alarms_cover_executor_errors_throttles_duration_and_api_5xx(
    synthesized: Synthesized,
) -> None:
    metrics = {
        (alarm["Properties"]["Namespace"], alarm["Properties"]["MetricName"])
        for alarm in synthesized.resources("AWS::CloudWatch::Alarm").values()
    }
    assert {
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        ("AWS/Lambda", "Duration"),
        ("AWS/ApiGateway", "5XXError"),
    } <= metrics
    Template.from_json(synthesized.template).resource_count_is("AWS::CloudWatch::Dashboard", 1)


def test_stage_logs_access_as_json_and_traces(synthesized: Synthesized) -> None:
    [stage] = synthesized.resources("AWS::ApiGateway::Stage").values()
    properties = stage["Properties"]
    assert properties["TracingEnabled"] is True
    access_log = json.loads(properties["AccessLogSetting"]["Format"])
    assert "$context.identity.apiKeyId" in access_log.values()
    assert all(not setting.get("DataTraceEnabled") for setting in properties["MethodSettings"])

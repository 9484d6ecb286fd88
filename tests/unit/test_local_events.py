"""The local stack's HTTP -> API Gateway REST proxy event translation, checked against a real
API Gateway sample event and against Powertools' own event parser (what the API handler uses)."""

import base64
import json

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from local.events import HttpRequest, from_proxy_result, match_route, to_proxy_event

# API Gateway REST API proxy integration sample event (payload v1), as published in the AWS
# Lambda developer guide and shipped in Powertools' test events.
AWS_SAMPLE_EVENT = json.loads("""
{
  "resource": "/my/path", "path": "/my/path", "httpMethod": "GET",
  "headers": {"header1": "value1", "header2": "value2"},
  "multiValueHeaders": {"header1": ["value1"], "header2": ["value1", "value2"]},
  "queryStringParameters": {"parameter1": "value1", "parameter2": "value"},
  "multiValueQueryStringParameters": {"parameter1": ["value1", "value2"], "parameter2": ["value"]},
  "requestContext": {
    "accountId": "123456789012", "apiId": "id",
    "authorizer": {"claims": null, "scopes": null},
    "domainName": "id.execute-api.us-east-1.amazonaws.com", "domainPrefix": "id",
    "extendedRequestId": "request-id", "httpMethod": "GET",
    "identity": {
      "accessKey": null, "accountId": null, "caller": null,
      "cognitoAuthenticationProvider": null, "cognitoAuthenticationType": null,
      "cognitoIdentityId": null, "cognitoIdentityPoolId": null, "principalOrgId": null,
      "sourceIp": "192.168.0.1/32", "user": null, "userAgent": "user-agent", "userArn": null
    },
    "path": "/my/path", "protocol": "HTTP/1.1", "requestId": "id=",
    "requestTime": "04/Mar/2020:19:15:17 +0000", "requestTimeEpoch": 1583349317135,
    "resourceId": null, "resourcePath": "/my/path", "stage": "$default"
  },
  "pathParameters": null, "stageVariables": null,
  "body": "Hello from Lambda!", "isBase64Encoded": false
}
""")


def _request(method="GET", target="/v1/health", headers=None, body=b""):
    return HttpRequest(method=method, target=target, headers=headers or [], body=body)


def test_event_has_every_field_of_a_real_api_gateway_event_with_the_same_types():
    event = to_proxy_event(
        _request(
            "POST",
            "/v1/sessions/s1/execute?a=1&a=2&b=x",
            [("x-api-key", "k1"), ("X-Multi", "1"), ("X-Multi", "2"), ("User-Agent", "ua")],
            b'{"code": "1"}',
        ),
        api_key_id="lkabc",
    )
    sample = AWS_SAMPLE_EVENT
    assert set(sample) == set(event)
    for key, value in sample.items():
        if value is not None and event[key] is not None:
            assert type(event[key]) is type(value), key
    context_keys = set(sample["requestContext"]) - {"authorizer"}  # no authorizer configured
    assert context_keys <= set(event["requestContext"])
    assert set(sample["requestContext"]["identity"]) <= set(event["requestContext"]["identity"])
    assert event["requestContext"]["identity"]["apiKeyId"] == "lkabc"


def test_route_template_path_parameters_and_multi_values():
    event = to_proxy_event(
        _request(
            "GET",
            "/v1/sessions/s1/files/data/my%20file.csv?x=1&x=2",
            [("X-Multi", "1"), ("X-Multi", "2")],
        ),
        api_key_id="lk1",
    )
    assert event["resource"] == "/v1/sessions/{session_id}/files/{path+}"
    assert event["pathParameters"] == {"session_id": "s1", "path": "data/my file.csv"}
    assert event["path"] == "/v1/sessions/s1/files/data/my file.csv"
    assert event["headers"]["X-Multi"] == "2"
    assert event["multiValueHeaders"]["X-Multi"] == ["1", "2"]
    assert event["queryStringParameters"] == {"x": "2"}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"]}

    parsed = APIGatewayProxyEvent(event)  # what Powertools' resolver reads
    assert parsed.path == "/v1/sessions/s1/files/data/my file.csv"
    assert parsed.request_context.identity.api_key_id == "lk1"
    assert parsed.path_parameters == {"session_id": "s1", "path": "data/my file.csv"}
    assert parsed.multi_value_query_string_parameters == {"x": ["1", "2"]}


def test_literal_routes_win_and_unknown_paths_use_the_proxy_resource():
    assert match_route("/v1/sessions") == ("/v1/sessions", None)
    assert match_route("/v1/sessions/abc/notebook")[0] == "/v1/sessions/{session_id}/notebook"
    assert match_route("/v1/sessions/abc/files") == (
        "/v1/sessions/{session_id}/files",
        {"session_id": "abc"},
    )
    assert match_route("/nope/x") == ("/{proxy+}", {"proxy": "nope/x"})


def test_no_key_means_no_identity_and_empty_parts_are_null():
    event = to_proxy_event(_request(), api_key_id=None)
    assert event["requestContext"]["identity"]["apiKeyId"] is None
    assert event["queryStringParameters"] is None
    assert event["pathParameters"] is None
    assert event["body"] is None and event["isBase64Encoded"] is False


def test_binary_body_is_base64_and_responses_are_decoded():
    blob = bytes(range(256))
    event = to_proxy_event(_request("POST", "/v1/execute", body=blob), api_key_id="lk")
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == blob

    response = from_proxy_result(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "image/png"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
            "body": base64.b64encode(b"\x89PNG").decode(),
            "isBase64Encoded": True,
        }
    )
    assert response.status == 201
    assert response.body == b"\x89PNG"
    assert ("Set-Cookie", "a=1") in response.headers and ("Set-Cookie", "b=2") in response.headers


def test_every_route_of_the_table_resolves_to_its_own_resource():
    from lambdas.shared.routes import ROUTES

    for route in ROUTES:
        concrete = route.path.replace("{path+}", "a/b.txt")
        concrete = concrete.replace("{session_id}", "s1").replace("{execution_id}", "e1")
        resource, _ = match_route(concrete)
        assert resource == route.path, route

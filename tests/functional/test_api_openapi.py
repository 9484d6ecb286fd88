"""GET /v1/openapi.json: a valid OpenAPI 3.1 document that lists every route of SPEC §3."""

from __future__ import annotations

from openapi_spec_validator import validate

from lambdas.shared.routes import ROUTES
from tests.functional.conftest import ApiClient

# The route table's resources as OpenAPI names them (the greedy `{path+}` is `{file_path}`).
SPEC_ROUTES = {
    (route.method.lower(), route.path.replace("{path+}", "{file_path}")) for route in ROUTES
}


def test_openapi_document_is_valid_3_1_and_complete(api: ApiClient) -> None:
    response = api.get("/v1/openapi.json", principal=None)
    assert response.status == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    validate(document)
    listed = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert listed >= SPEC_ROUTES
    execute = document["paths"]["/v1/sessions/{session_id}/execute"]["post"]
    assert {"200", "202", "400", "404", "409", "413", "429"} <= set(execute["responses"])
    assert "ExecuteRequest" in document["components"]["schemas"]
    # Results too large for one response link their parts (issue 12, item 2).
    result_fields = document["components"]["schemas"]["ExecutionResult"]["properties"]
    assert {"stdout_url", "stderr_url", "outputs_url"} <= set(result_fields)
    notebook = document["paths"]["/v1/sessions/{session_id}/notebook"]["get"]
    assert "notebook_url" in notebook["description"]
    assert document["paths"]["/v1/usage"]["get"]["security"] == [{"apiKey": []}]
    assert "security" not in document["paths"]["/v1/health"]["get"]
    assert "security" not in document["paths"]["/v1/openapi.json"]["get"]

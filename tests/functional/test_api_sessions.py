"""Sessions, auth, ownership, notebook, packages, usage and the error shape (moto mock_aws)."""

from __future__ import annotations

from typing import Any

import nbformat
import pytest

from tests.functional.conftest import ApiClient, Clock, FakeExecutor, ok_result


def test_health_needs_no_key(api: ApiClient) -> None:
    response = api.get("/v1/health", principal=None)
    assert response.status == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/sessions"),
        ("GET", "/v1/sessions/abc"),
        ("POST", "/v1/execute"),
        ("GET", "/v1/usage"),
        ("GET", "/v1/packages"),
    ],
)
def test_keyed_routes_without_principal_are_forbidden(
    api: ApiClient, method: str, path: str
) -> None:
    response = api.request(
        method, path, {"code": "1"} if method == "POST" else None, principal=None
    )
    assert response.status == 403
    assert response.error_code == "FORBIDDEN"


def test_create_get_delete_session(api: ApiClient) -> None:
    created = api.post("/v1/sessions", {"ttl_seconds": 600})
    assert created.status == 201
    session = created.json()
    assert set(session) == {
        "session_id",
        "created_at",
        "expires_at",
        "last_used_at",
        "execution_count",
        "status",
    }
    assert session["status"] == "idle" and session["execution_count"] == 0

    fetched = api.get(f"/v1/sessions/{session['session_id']}")
    assert fetched.status == 200
    assert fetched.json()["variables"] == []
    assert fetched.json()["expires_at"] == session["expires_at"]

    deleted = api.delete(f"/v1/sessions/{session['session_id']}")
    assert deleted.status == 204 and deleted.text == ""
    gone = api.get(f"/v1/sessions/{session['session_id']}")
    assert gone.status == 404 and gone.error_code == "SESSION_NOT_FOUND"
    again = api.delete(f"/v1/sessions/{session['session_id']}")
    assert again.status == 404


def test_create_session_without_body_uses_default_ttl(api: ApiClient) -> None:
    response = api.post("/v1/sessions")
    assert response.status == 201


@pytest.mark.parametrize("body", [{"ttl_seconds": 1}, {"ttl_seconds": "soon"}, {"ttl": 60}])
def test_invalid_session_request_is_400(api: ApiClient, body: dict[str, object]) -> None:
    response = api.post("/v1/sessions", body)
    assert response.status == 400
    assert response.error_code == "INVALID_REQUEST"


def test_malformed_json_is_400(api: ApiClient) -> None:
    sid = api.new_session()
    response = api.post(f"/v1/sessions/{sid}/execute", raw_body="{not json")
    assert response.status == 400
    assert response.error_code == "INVALID_REQUEST"
    assert "JSON" in response.json()["error"]["message"]


def test_unknown_route_is_404_in_our_shape(api: ApiClient) -> None:
    # GET / is the playground and POST / answers 405 (tests/functional/test_api_playground.py).
    for method, path in [("GET", "/v1/nothing"), ("PUT", "/v1/nothing/deeper")]:
        response = api.request(method, path)
        assert response.status == 404
        assert response.error_code == "NOT_FOUND"


def test_other_principal_gets_404_for_session(api: ApiClient, other_api: ApiClient) -> None:
    sid = api.new_session()
    for response in (
        other_api.get(f"/v1/sessions/{sid}"),
        other_api.delete(f"/v1/sessions/{sid}"),
        other_api.post(f"/v1/sessions/{sid}/execute", {"code": "1"}),
        other_api.get(f"/v1/sessions/{sid}/notebook"),
    ):
        assert response.status == 404
        assert response.error_code == "SESSION_NOT_FOUND"
    assert api.get(f"/v1/sessions/{sid}").status == 200  # untouched for its owner


def test_expired_session_is_absent_and_ttl_slides(api: ApiClient, clock: Clock) -> None:
    sid = api.new_session(ttl_seconds=120)
    clock.advance(100)
    assert api.post(f"/v1/sessions/{sid}/execute", {"code": "1", "timeout_ms": 1000}).status == 200
    clock.advance(100)  # 200 s after creation, but only 100 s after the last execution
    assert api.get(f"/v1/sessions/{sid}").status == 200
    clock.advance(121)
    response = api.get(f"/v1/sessions/{sid}")
    assert response.status == 404 and response.error_code == "SESSION_NOT_FOUND"
    assert api.post(f"/v1/sessions/{sid}/execute", {"code": "1"}).status == 404


def test_session_shows_count_and_variables_after_runs(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    sid = api.new_session()
    fake_executor.variables = [{"name": "df", "type": "DataFrame"}, {"name": "n", "type": "int"}]
    for _ in range(2):
        assert api.post(f"/v1/sessions/{sid}/execute", {"code": "n = 1"}).status == 200
    session = api.get(f"/v1/sessions/{sid}").json()
    assert session["execution_count"] == 2
    assert session["variables"] == fake_executor.variables
    assert session["status"] == "idle"


def test_notebook_is_valid_nbformat_v4_with_outputs(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    sid = api.new_session()
    codes = ["a = 1", "print(a)", "a + 1"]
    for code in codes:
        assert api.post(f"/v1/sessions/{sid}/execute", {"code": code}).status == 200
    response = api.get(f"/v1/sessions/{sid}/notebook")
    assert response.status == 200
    notebook = nbformat.from_dict(response.json())
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    assert [c.source for c in notebook.cells] == codes
    assert [c.execution_count for c in notebook.cells] == [1, 2, 3]
    assert notebook.cells[1].outputs[0]["text"] == "ran: print(a)\n"


def test_notebook_drops_invalid_outputs_but_stays_valid(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    from lambdas.shared.models import ExecutorResponse

    def bad_outputs(invocation):  # type: ignore[no-untyped-def]
        return ExecutorResponse(
            result=ok_result(
                invocation,
                outputs=[
                    {"output_type": "stream", "name": 42},
                    {"output_type": "stream", "name": "stdout", "text": "kept\n"},
                ],
            )
        )

    fake_executor.behaviour = bad_outputs
    sid = api.new_session()
    api.post(f"/v1/sessions/{sid}/execute", {"code": "x"})
    notebook = nbformat.from_dict(api.get(f"/v1/sessions/{sid}/notebook").json())
    nbformat.validate(notebook)
    assert [o["text"] for o in notebook.cells[0].outputs] == ["kept\n"]


def test_packages_listing_is_the_whitelist(api: ApiClient, catalog: Any) -> None:
    response = api.get("/v1/packages")
    assert response.status == 200
    body = response.json()
    assert body["python"] == "3.13"
    listed = {p["name"]: p for p in body["packages"]}
    assert listed == {
        p.name: {"name": p.name, "version": p.version, "source": p.source} for p in catalog.packages
    }
    assert {p["source"] for p in body["packages"]} == {"layer", "on_demand"}


def test_usage_counts_executions_per_principal(api: ApiClient, other_api: ApiClient) -> None:
    sid = api.new_session()
    before = api.get("/v1/usage").json()
    assert before["executions"] == 0 and before["compute_ms"] == 0
    api.post(f"/v1/sessions/{sid}/execute", {"code": "1"})
    api.post("/v1/execute", {"code": "2"})
    after = api.get("/v1/usage").json()
    assert after["executions"] == 2
    assert after["compute_ms"] >= 0
    assert after["quota"]["executions"] > 0
    assert len(after["period"]) == 7  # YYYY-MM
    assert other_api.get("/v1/usage").json()["executions"] == 0


def test_unexpected_failure_is_a_generic_500(api: ApiClient) -> None:
    from lambdas.api import container

    class BrokenCatalog:
        def listing(self) -> list[dict[str, str]]:
            raise RuntimeError("arn:aws:s3:::lci-test-bucket-secretname exploded")

    container.override(catalog=BrokenCatalog())  # type: ignore[arg-type]
    response = api.get("/v1/packages")
    assert response.status == 500
    assert response.json() == {"error": {"code": "INTERNAL", "message": "internal error"}}


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"]
)
def test_bodies_are_json_whatever_the_content_type(api: ApiClient, content_type: str) -> None:
    sid = api.new_session()
    response = api.post(
        f"/v1/sessions/{sid}/execute",
        raw_body='{"code": "1", "timeout_ms": 1000}',
        headers={"Content-Type": content_type},
    )
    assert response.status == 200, response.text
    assert response.json()["stdout"] == "ran: 1\n"

"""Robustness of the API through a started local stack, over real HTTP (issue 11).

Errors: every refusal (body too large, wrong method, missing key, unknown path, malformed
request) in the `{"error": {code, message}}` shape with the status API Gateway would give, and
no path of the host. Files: a live worker's workspace follows the session's stored files.
Load: a short run of the e2e benchmark's load loses no committed run. On-demand packages are
in test_robustness_packages.py, the sync window and faults in test_robustness_faults.py.
"""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import TargetStack
from .robustness import assert_error_shape
from .robustness import raw_exchange as _raw

pytestmark = pytest.mark.e2e


# -- errors (issue 11 item 7, API side) -----------------------------------------------------


@pytest.mark.attack(
    "API edge",
    "a 20 MB request body",
    "413 `PAYLOAD_TOO_LARGE` in the JSON shape, also to a client that sends it all first",
)
def test_a_20_mb_body_gets_413_payload_too_large_in_the_json_shape(local_stack: TargetStack):
    size = 20 * 1024 * 1024
    head = (
        f"POST /v1/execute HTTP/1.1\r\nHost: x\r\nx-api-key: {local_stack.keys[0]}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    )
    answer = _raw(local_stack, head.encode(), size)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"
    # And through an ordinary client.
    too_big = httpx.post(
        local_stack.endpoint + "/v1/execute",
        content=b"{" + b" " * size + b"}",
        headers={"x-api-key": local_stack.keys[0]},
        timeout=60,
    )
    assert_error_shape(too_big, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/sessions", "POST"),
        ("DELETE", "/v1/execute", "POST"),
        ("POST", "/v1/usage", "GET"),
        ("PATCH", "/v1/sessions/abc/files/a/b.txt", "GET, DELETE"),
        ("POST", "/v1/health", "GET"),
    ],
)
@pytest.mark.attack(
    "API edge",
    "a wrong method on a known path",
    "405 `METHOD_NOT_ALLOWED` with `Allow`",
)
def test_a_wrong_method_on_a_known_path_is_405_with_allow(
    local_stack: TargetStack, method: str, path: str, allow: str
):
    response = httpx.request(
        method, local_stack.endpoint + path, headers={"x-api-key": local_stack.keys[0]}
    )
    assert_error_shape(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == allow


# `/` is the public playground (tests/e2e/test_playground.py): "/nothing" is the unknown root path.
@pytest.mark.parametrize(
    "path", ["/v1/sessions", "/v1/nothing", "/nothing", "/v1/sessions/x/files/a"]
)
@pytest.mark.parametrize("key", [None, "not-a-key"])
@pytest.mark.attack(
    "API edge",
    "no key or an unknown key, on known and unknown paths",
    "403 `FORBIDDEN` everywhere but the public `/`, `/v1/health` and `/v1/openapi.json`: "
    "nothing learned about routes",
)
def test_a_missing_or_unknown_key_is_403_forbidden_on_every_path_but_the_public_ones(
    local_stack: TargetStack, path: str, key: str | None
):
    headers = {"x-api-key": key} if key else {}
    response = httpx.get(local_stack.endpoint + path, headers=headers)
    assert_error_shape(response, 403, "FORBIDDEN")
    assert httpx.get(local_stack.endpoint + "/v1/health", headers=headers).status_code == 200


@pytest.mark.attack(
    "API edge",
    "an unknown path with a valid key",
    "404 `NOT_FOUND` in the JSON shape",
)
def test_an_unknown_path_with_a_valid_key_is_404(local_stack: TargetStack):
    for path in ("/v1/nothing", "/nothing", "/v2/sessions"):
        response = httpx.get(
            local_stack.endpoint + path, headers={"x-api-key": local_stack.keys[0]}
        )
        assert_error_shape(response, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nContent-Length: 4\r\n"
         b"\r\n\xff\xfe\xfd\xfc", 400, "INVALID_REQUEST"),
        (b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nContent-Length: 9\r\n"
         b"\r\n{not json", 400, "INVALID_REQUEST"),
        (b"POST /v1/execute HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nContent-Length: 17\r\n"
         b"\r\n{\"code\":\"\\ud800\"}", 400, "INVALID_REQUEST"),
        (b"POST /v1/execute HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nContent-Length: 400009\r\n"
         b"\r\n{\"code\":" + b"[" * 200_000 + b"]" * 200_000 + b"}", 400, "INVALID_REQUEST"),
        (b"BREW /v1/sessions HTTP/1.1\r\nHost: x\r\n\r\n", 501, "NOT_IMPLEMENTED"),
        (b"GET /v1/health HTTP/7.0\r\nHost: x\r\n\r\n", 505, "INVALID_REQUEST"),
        (b"POST /v1/execute HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", 400,
         "INVALID_REQUEST"),
    ],
)  # fmt: skip
@pytest.mark.local_only  # what reaches API Gateway's own front differs
@pytest.mark.attack(
    "API edge",
    "bodies that are not UTF-8 or not JSON, lone surrogates, 200,000-deep nesting, unknown "
    "methods and HTTP versions, a bad Content-Length",
    "a JSON error with the right status and no host path",
)
def test_malformed_requests_get_json_errors_with_no_host_paths(
    local_stack: TargetStack, raw: bytes, status: int, code: str
):
    answer = _raw(local_stack, raw.replace(b"{key}", local_stack.keys[0].encode()))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode()), answer[:300]
    response = httpx.Response(
        status,
        headers=[tuple(line.split(": ", 1)) for line in head.decode().split("\r\n")[1:]],
        content=body,
    )
    assert_error_shape(response, status, code)


# -- files: the live worker's workspace follows the stored files (issue 11 item 4) ----------


def _run(client, code: str, session_id: str):
    result = client.execute(code, session_id=session_id)
    assert result.success, result.raw
    return result


@pytest.mark.fault(
    "session files",
    "a file deleted through the API while the session's worker is live",
    "gone from the next run's working directory",
)
def test_a_deleted_file_is_gone_from_the_live_workers_workspace(client):
    session = client.create_session().session_id
    wrote = _run(client, "open('out.csv', 'w').write('a,b\\n1,2\\n')", session)
    assert [f.path for f in wrote.files] == ["out.csv"]
    _run(client, "import os", session)  # the worker has seen out.csv in the stored set
    client.delete_file(session, "out.csv")
    assert client.list_files(session) == []
    assert _run(client, "os.path.exists('out.csv')", session).text == "False"
    # Also right after the run that wrote it (the worker uploaded it, never downloaded it).
    _run(client, "open('fresh.txt', 'w').write('x')", session)
    client.delete_file(session, "fresh.txt")
    assert _run(client, "os.path.exists('fresh.txt')", session).text == "False"


@pytest.mark.fault(
    "session files",
    "a file replaced through the API with as many bytes, while the worker is live",
    "the next run reads the new content",
)
def test_a_replaced_file_has_its_new_content_even_at_the_same_size(client):
    session = client.create_session().session_id
    client.upload_file(session, b"v1 content", "data/in.txt")
    assert _run(client, "open('data/in.txt').read()", session).text == "'v1 content'"
    client.upload_file(session, b"v2 content", "data/in.txt")
    assert _run(client, "open('data/in.txt').read()", session).text == "'v2 content'"
    # A file the worker wrote itself, replaced through the API with as many bytes.
    _run(client, "open('w.txt', 'w').write('AAAA')", session)
    client.upload_file(session, b"BBBB", "w.txt")
    assert _run(client, "open('w.txt').read()", session).text == "'BBBB'"


@pytest.mark.fault(
    "session files",
    "a file uploaded while the session's worker is live",
    "the next run finds it, variables kept",
)
def test_an_uploaded_file_appears_in_the_live_workers_workspace(client):
    session = client.create_session().session_id
    _run(client, "import os\nx = 1", session)
    client.upload_file(session, b"hello", "late/arrival.txt")
    result = _run(client, "open('late/arrival.txt').read(), x", session)
    assert result.text == "('hello', 1)"


# -- load: nothing committed is lost (issue 11: load) ----------------------------------------


@pytest.mark.fault(
    "load",
    "4 sessions running cells at once for 3 s",
    "no error, no committed run lost or run twice",
)
def test_a_short_load_loses_no_committed_run(local_stack: TargetStack):
    """`python -m benchmarks.e2e`'s load run, short: 4 sessions x 3 s; every session's final
    counter equals the runs its client saw committed."""
    from benchmarks.e2e import run_load

    load = run_load(local_stack.endpoint, sessions=4, seconds=3, api_key=local_stack.keys[0])
    assert load["runs"] > 0
    assert (load["errors"], load["lost"], load["extra"]) == (0, 0, 0), load

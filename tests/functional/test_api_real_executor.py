"""One path through the real executor handler, in-process, against a moto server over HTTP
(the sandboxed worker fetches and uploads through presigned URLs with its own HTTP client)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.functional.conftest import ApiClient
from tests.functional.executor_helpers import serve_api_on_moto_server

RUN = {"timeout_ms": 20_000}


@pytest.fixture
def real_api(aws_env: None, catalog: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiClient]:
    from moto.server import ThreadedMotoServer

    from lambdas.api import container
    from lambdas.executor import handler as executor_handler

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("DYNAMODB_ENDPOINT_URL", endpoint)
    try:
        serve_api_on_moto_server(endpoint, catalog)
        yield ApiClient()
    finally:
        container.reset()
        executor_handler.shutdown()
        server.stop()


@pytest.mark.slow
def test_session_through_the_real_executor(real_api: ApiClient) -> None:
    api = real_api
    sid = api.new_session()

    form = api.post(f"/v1/sessions/{sid}/files", {"path": "data/in.txt"}).json()
    uploaded = requests.post(
        form["upload"]["url"], data=form["upload"]["fields"], files={"file": b"21"}, timeout=30
    )
    assert uploaded.status_code in (200, 201, 204)

    first = api.post(
        f"/v1/sessions/{sid}/execute",
        {"code": "x = int(open('data/in.txt').read())\nprint('loaded', x)", **RUN},
    )
    assert first.status == 200, first.text
    assert first.json()["status"] == "ok", first.text
    assert first.json()["stdout"] == "loaded 21\n"
    assert first.json()["execution_count"] == 1

    second = api.post(
        f"/v1/sessions/{sid}/execute",
        {"code": "open('out.txt', 'w').write(str(x * 2))\nx * 2", **RUN},
    )
    result = second.json()
    assert result["status"] == "ok", second.text
    assert result["result"]["text/plain"] == "42"
    assert result["execution_count"] == 2
    (out,) = [f for f in result["files"] if f["path"] == "out.txt"]
    assert requests.get(out["download_url"], timeout=30).content == b"42"

    failed = api.post(f"/v1/sessions/{sid}/execute", {"code": "1 / 0", **RUN}).json()
    assert failed["status"] == "error" and failed["error"]["name"] == "ZeroDivisionError"
    assert failed["execution_count"] == 3

    variables = api.get(f"/v1/sessions/{sid}").json()["variables"]
    assert {"name": "x", "type": "int"} in variables

    listed = {f["path"] for f in api.get(f"/v1/sessions/{sid}/files").json()["files"]}
    assert {"data/in.txt", "out.txt"} <= listed
    notebook = api.get(f"/v1/sessions/{sid}/notebook").json()
    assert [c["execution_count"] for c in notebook["cells"]] == [1, 2, 3]
    assert notebook["cells"][1]["outputs"][-1]["output_type"] == "execute_result"

    one_shot = api.post("/v1/execute", {"code": "sum(range(10))", **RUN}).json()
    assert one_shot["status"] == "ok" and one_shot["result"]["text/plain"] == "45"

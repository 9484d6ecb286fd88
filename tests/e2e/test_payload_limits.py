"""Lambda's 6 MB at both hops, through the local stack (which answers 502 over it, as AWS does):
large output comes back as its head and tail plus a presigned link to all of it (issue 12,
item 2). Runs against a deployed API too (`make smoke`)."""

from __future__ import annotations

import re

import httpx
import nbformat
import pytest

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


def _post(local_stack, path: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{local_stack.endpoint}{path}",
        json=body,
        headers={"x-api-key": local_stack.keys[0]},
        timeout=180,
    )


def test_three_megabytes_of_quotes_answer_200_with_head_tail_and_a_stdout_link(local_stack):
    """Each `"` is 2 bytes in the executor's JSON and 4 in the API function's proxy response
    (its body is JSON-encoded twice): 3 MB printed would be ~12 MB there."""
    answer = _post(local_stack, "/v1/execute", {"code": "print('\"' * 3_000_000)"})
    assert answer.status_code == 200, answer.text[:500]
    assert len(answer.content) < 6 * MIB
    result = answer.json()
    assert result["status"] == "ok", result.get("error")
    inline = result["stdout"]
    assert inline.startswith('"' * 1000)
    assert inline.rstrip("\n").endswith('"' * 1000)
    assert "stdout_url" in inline  # the marker between head and tail says where the rest is
    full = httpx.get(result["stdout_url"], timeout=120)
    assert full.status_code == 200
    text = full.text
    # What the executor captured: its 1 MiB stream cap, as head + omission marker + tail.
    assert len(text) > len(inline) and len(text) >= MIB - 1024
    assert set(re.sub(r"\n\[\.\.\. [\d,]+ bytes omitted \.\.\.\]\n", "", text)) <= {'"', "\n"}
    assert any("stdout_url" in warning for warning in result["warnings"])
    # The stored execution says the same, with a fresh link.
    stored = httpx.get(
        f"{local_stack.endpoint}/v1/executions/{result['execution_id']}",
        headers={"x-api-key": local_stack.keys[0]},
        timeout=60,
    ).json()
    assert stored["stdout"] == inline
    assert httpx.get(stored["stdout_url"], timeout=120).text == text


def test_output_that_json_escapes_sixfold_still_fits_the_executors_response(local_stack):
    """A control character written straight to the fd is 1 byte there and 6 (`\\u0001`) in the
    executor's JSON response, twice (stdout and its output): the executor's own cap must hold
    on that, or Lambda refuses its response (Function.ResponseSizeTooLarge)."""
    code = "import os\nos.write(1, b'\\x01' * 2_000_000)\nprint('done')"
    answer = _post(local_stack, "/v1/execute", {"code": code})
    assert answer.status_code == 200, answer.text[:500]
    result = answer.json()
    assert result["status"] == "ok", result.get("error")
    assert "done\n" in result["stdout"] and "\x01" * 100 in result["stdout"]
    assert result["stdout_truncated"] is True  # over the executor's per-stream cap


def test_a_notebook_too_large_for_one_response_links_the_whole_of_it(local_stack, tmp_path):
    session = _post(local_stack, "/v1/sessions", {}).json()["session_id"]
    for n in range(3):
        ran = _post(
            local_stack,
            f"/v1/sessions/{session}/execute",
            {"code": f"print('\"' * 900_000)\n{n}"},
        )
        assert ran.status_code == 200 and ran.json()["status"] == "ok", ran.text[:300]
    answer = httpx.get(
        f"{local_stack.endpoint}/v1/sessions/{session}/notebook",
        headers={"x-api-key": local_stack.keys[0]},
        timeout=180,
    )
    assert answer.status_code == 200, answer.text[:500]
    partial = nbformat.reads(answer.text, as_version=4)
    nbformat.validate(partial)
    url = partial.metadata["lci"]["notebook_url"]
    whole = nbformat.reads(httpx.get(url, timeout=120).text, as_version=4)
    nbformat.validate(whole)
    code_cells = [cell for cell in whole.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code_cells] == [1, 2, 3]
    for cell in code_cells:
        [stream] = [o for o in cell.outputs if o.output_type == "stream"]
        assert stream.text == '"' * 900_000 + "\n"

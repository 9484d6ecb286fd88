"""`dispatch_tool_call` against the local stack: state kept across calls in the client's default
session (deleted on close), malformed arguments answered as text, a figure as an Anthropic
image block."""

from __future__ import annotations

import base64

import pytest
from lci import Client, LciError
from lci.tools import default_session_for, dispatch_tool_call

from .conftest import API_KEYS

pytestmark = pytest.mark.e2e

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_tool_calls_keep_state_and_answer_bad_arguments_with_text(
    local_stack, monkeypatch, tmp_path
):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    client = Client(local_stack.endpoint, API_KEYS[0], timeout=120)
    assert dispatch_tool_call(client, "execute_python", '{"code": "x = 1"}') == "(no output)"
    assert dispatch_tool_call(client, "execute_python", '{"code": "print(x)"}') == "stdout:\n1"

    malformed = dispatch_tool_call(client, "execute_python", '{"code": "print(x)"')
    assert malformed.startswith("Error: the arguments are not valid JSON")
    missing = dispatch_tool_call(client, "execute_python", "{}")
    assert missing == "Error: `code` is required and must be a non-empty string"

    block = dispatch_tool_call(
        client,
        "execute_python",
        {"code": "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nprint(x + 1)"},
        provider="anthropic",
        tool_use_id="toolu_1",
    )
    assert block["is_error"] is False
    text, image = block["content"]
    assert text["text"].startswith("stdout:\n2") and "image 1 of 1: PNG" in text["text"]
    assert base64.b64decode(image["source"]["data"]).startswith(PNG_SIGNATURE)

    session_id = default_session_for(client).session_id
    assert session_id is not None
    client.close()
    with Client(local_stack.endpoint, API_KEYS[0]) as other, pytest.raises(LciError) as gone:
        other.get_session(session_id)
    assert gone.value.status == 404

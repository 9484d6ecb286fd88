"""`lci.tools`: tool calls keep state in a default session per client (deleted on close), and
whatever a model or the API gets wrong comes back as tool error text, never as an exception."""

from __future__ import annotations

import json

import httpx
import pytest
from lci.tools import (
    ANTHROPIC_TOOLS,
    OPENAI_TOOLS,
    TOOL_PARAMETERS,
    dispatch_tool_call,
    parse_execute_arguments,
)

from .client_fakes import Api, StatefulApi, client_for, image_output, png_bytes, result


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_calls_share_a_default_session_that_close_deletes():
    api = StatefulApi()
    client = client_for(api)
    assert "Error" not in dispatch_tool_call(client, "execute_python", '{"code": "x = 1"}')
    assert dispatch_tool_call(client, "execute_python", {"code": "print(x)"}) == "stdout:\n1"
    assert api.created == 1 and list(api.sessions) == ["s1"]
    client.close()
    assert api.sessions == {}  # deleted at close
    assert api.calls("DELETE", "/v1/sessions/s1")


def test_each_client_has_its_own_default_session_and_an_explicit_one_wins():
    api = StatefulApi()
    first, second = client_for(api), client_for(api)
    dispatch_tool_call(first, "execute_python", {"code": "x = 1"})
    assert "NameError" in dispatch_tool_call(second, "execute_python", {"code": "print(x)"})
    api.sessions["mine"] = {"x": "7"}
    text = dispatch_tool_call(first, "execute_python", {"code": "print(x)"}, session_id="mine")
    assert text == "stdout:\n7"


def test_an_expired_default_session_is_replaced_and_the_model_is_told():
    api = StatefulApi()
    client = client_for(api)
    dispatch_tool_call(client, "execute_python", {"code": "x = 1"})
    api.sessions.clear()  # the session expired server-side
    text = dispatch_tool_call(client, "execute_python", {"code": "print(x)"})
    assert "previous session had expired" in text and "NameError" in text
    assert api.created == 2


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("execute_python", '{"code": "1/0"', "not valid JSON"),
        ("execute_python", "[1, 2]", "must be a JSON object"),
        ("execute_python", {}, "`code` is required"),
        ("execute_python", {"code": "   "}, "`code` is required"),
        ("execute_python", {"code": "1", "packages": "numpy"}, "`packages` must be a list"),
        ("execute_python", {"code": "1", "timeout_seconds": 0}, "more than 0 seconds"),
        ("execute_python", {"code": "1", "timeout_seconds": -5}, "more than 0 seconds"),
        ("execute_python", {"code": "1", "timeout_seconds": "10"}, "number of seconds"),
        ("execute_python", {"code": "1", "session": "x"}, "unexpected argument(s): session"),
        ("rm_rf", {"code": "1"}, "unknown tool 'rm_rf'"),
    ],
)
def test_bad_calls_come_back_as_error_text_without_any_request(name, arguments, expected):
    api = StatefulApi()
    client = client_for(api)
    text = dispatch_tool_call(client, name, arguments)
    assert text.startswith("Error: ") and expected in text
    block = dispatch_tool_call(client, name, arguments, provider="anthropic", tool_use_id="toolu_1")
    assert block["is_error"] is True and block["tool_use_id"] == "toolu_1"
    assert expected in block["content"][0]["text"]
    assert api.requests == []


def test_api_refusals_are_error_text_in_seconds():
    def too_long(request: httpx.Request) -> httpx.Response:
        message = "timeout_ms must be at most 300000"
        return httpx.Response(400, json={"error": {"code": "INVALID_REQUEST", "message": message}})

    api = Api({("POST", "/v1/sessions/s1/execute"): too_long})
    arguments = {"code": "1", "timeout_seconds": 900}
    text = dispatch_tool_call(client_for(api), "execute_python", arguments, session_id="s1")
    assert text == "Error: timeout_seconds must be at most 300 s (INVALID_REQUEST)"
    assert json.loads(api.requests[0].content)["timeout_ms"] == 900_000
    unreachable = Api({})
    text = dispatch_tool_call(client_for(unreachable), "execute_python", {"code": "1"})
    assert text.startswith("Error: ")  # creating the default session failed: still text


def test_anthropic_results_carry_image_blocks_and_openai_results_describe_them():
    png = png_bytes(64, 48)
    document = result(stdout="drawn\n", outputs=[image_output(png)])
    api = Api({("POST", "/v1/sessions/s1/execute"): lambda r: httpx.Response(200, json=document)})
    client = client_for(api)
    block = dispatch_tool_call(
        client,
        "execute_python",
        {"code": "plot()"},
        session_id="s1",
        provider="anthropic",
        tool_use_id="toolu_9",
    )
    assert block["type"] == "tool_result" and block["is_error"] is False
    assert [b["type"] for b in block["content"]] == ["text", "image"]
    assert block["content"][1]["source"]["media_type"] == "image/png"
    text = dispatch_tool_call(client, "execute_python", {"code": "plot()"}, session_id="s1")
    assert "stdout:\ndrawn" in text and "image 1 of 1: PNG 64x48" in text
    with pytest.raises(ValueError, match="tool_use_id"):
        dispatch_tool_call(client, "execute_python", {}, provider="anthropic")  # type: ignore[call-overload]


def test_definitions_share_one_schema_and_arguments_parse():
    assert OPENAI_TOOLS[0]["function"]["parameters"] is TOOL_PARAMETERS
    assert ANTHROPIC_TOOLS[0]["input_schema"] is TOOL_PARAMETERS
    parsed = parse_execute_arguments('{"code": "1", "packages": ["a"], "timeout_seconds": 0.25}')
    assert (parsed.code, parsed.packages, parsed.timeout_ms) == ("1", ["a"], 250)

"""The `lci` SDK and CLI against a scripted HTTP transport: argument parsing, the presigned
upload/download dance, polling of long runs, readable and JSON output, errors and exit codes."""

import json

import httpx
import lci.cli as cli
import pytest
from lci import Client, ExecutionResult, LciError
from lci.tools import anthropic_tool, dispatch_tool_call, format_result, openai_tool

from .client_fakes import Api

OK_RESULT = {
    "execution_id": "e1",
    "session_id": None,
    "status": "ok",
    "success": True,
    "execution_count": None,
    "stdout": "4\n",
    "stderr": "",
    "result": {"text/plain": "42"},
    "outputs": [{"output_type": "display_data", "data": {"image/png": "iVBO", "text/plain": "F"}}],
    "error": None,
    "files": [{"path": "out.png", "size": 10, "content_type": "image/png"}],
    "duration_ms": 3,
    "warnings": [],
}
FAILED_RESULT = {
    **OK_RESULT,
    "status": "error",
    "success": False,
    "stdout": "",
    "result": None,
    "outputs": [],
    "files": [],
    "error": {"name": "ZeroDivisionError", "value": "division by zero", "traceback": ["Trace!"]},
}


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _client(api):
    return Client("http://api.test", "k1,k2", transport=httpx.MockTransport(api))


def _patch_cli(monkeypatch, api):
    monkeypatch.setenv("LCI_API_KEY", "k1,k2")
    monkeypatch.setattr(
        cli,
        "Client",
        lambda endpoint, key: Client(endpoint, key, transport=httpx.MockTransport(api)),
    )


def test_parser_reads_run_options_and_subcommands():
    args = cli.build_parser().parse_args(
        ["run", "job.py", "--session", "s1", "--timeout", "2.5", "--package", "a", "--package", "b"]
    )
    assert (args.file, args.session, args.timeout, args.package) == (
        "job.py",
        "s1",
        2.5,
        ["a", "b"],
    )
    assert cli.build_parser().parse_args(["session", "rm", "s9", "--json"]).json
    assert cli.build_parser().parse_args(["--json", "ls", "--session", "s1"]).json
    assert not cli.build_parser().parse_args(["ls", "--session", "s1"]).json
    assert cli.build_parser().parse_args(["--endpoint", "http://e", "usage"]).endpoint == "http://e"
    args = cli.build_parser().parse_args(["download", "out/a.png", "--session", "s1"])
    assert (args.remote, args.local) == ("out/a.png", None)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["upload", "x.csv"])  # --session is required


def test_run_prints_streams_value_and_files_and_sends_options(monkeypatch, capsys, tmp_path):
    api = Api({("POST", "/v1/execute"): lambda r: httpx.Response(200, json=OK_RESULT)})
    _patch_cli(monkeypatch, api)
    script = tmp_path / "job.py"
    script.write_text("print(2+2)\n42")
    code = cli.main(
        ["run", str(script), "--timeout", "2", "--package", "tabulate", "--endpoint", "http://x"]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert out == "4\n42\n"
    assert "[display: image/png]" in err and "out.png" in err
    body = json.loads(api.requests[0].content)
    assert body == {
        "code": "print(2+2)\n42",
        "wait": False,  # `lci run` follows the run, printing its output as it arrives
        "timeout_ms": 2000,
        "packages": ["tabulate"],
    }
    assert api.requests[0].headers["x-api-key"] == "k1"  # first key of a comma-separated list


def test_failed_run_exits_1_with_traceback_and_json_mode_prints_the_document(monkeypatch, capsys):
    api = Api(
        {("POST", "/v1/sessions/s1/execute"): lambda r: httpx.Response(200, json=FAILED_RESULT)}
    )
    _patch_cli(monkeypatch, api)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("1/0"))
    assert cli.main(["run", "-", "--session", "s1"]) == 1
    assert "Trace!" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("1/0"))
    assert cli.main(["run", "-", "--session", "s1", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["name"] == "ZeroDivisionError"


def test_api_errors_become_a_clear_message_and_exit_3(monkeypatch, capsys):
    api = Api({})
    _patch_cli(monkeypatch, api)
    assert cli.main(["session", "show", "nope"]) == cli.EXIT_API_ERROR == 3
    assert "NOT_FOUND: no" in capsys.readouterr().err
    forbidden = Api(
        {("GET", "/v1/usage"): lambda r: httpx.Response(403, json={"message": "Forbidden"})}
    )
    _patch_cli(monkeypatch, forbidden)
    assert cli.main(["usage", "--json"]) == cli.EXIT_API_ERROR
    assert json.loads(capsys.readouterr().out)["error"] == {
        "code": "FORBIDDEN",
        "message": "Forbidden",
        "status": 403,
    }


def test_ids_cannot_escape_their_path_segment():
    api = Api({})
    with pytest.raises(LciError) as caught:
        _client(api).get_session("../usage?x=1")
    assert caught.value.status == 404
    assert api.requests[0].url.raw_path == b"/v1/sessions/..%2Fusage%3Fx%3D1"


def test_long_run_returns_202_then_is_polled_until_done():
    polls = iter([{"execution_id": "e1", "status": "running", "success": False}, OK_RESULT])
    api = Api(
        {
            ("POST", "/v1/execute"): lambda r: httpx.Response(
                202, json={"execution_id": "e1", "status": "running"}
            ),
            ("GET", "/v1/executions/e1"): lambda r: httpx.Response(200, json=next(polls)),
        }
    )
    seen = []
    result = _client(api).execute("import time", poll_interval=0.001, on_poll=seen.append)
    assert result.success and result.text == "42"
    assert len(seen) == 1 and seen[0].running
    async_result = _client(api).execute("x", wait=False)
    assert async_result.running


def test_upload_posts_policy_fields_before_the_file_and_download_never_sends_the_key(tmp_path):
    grant = {
        "path": "data/in.csv",
        "upload": {
            "url": "http://s3.test/bucket",
            "fields": {"key": "k/data/in.csv", "policy": "P"},
        },
        "expires_at": "x",
        "max_bytes": 100,
    }
    api = Api(
        {
            ("POST", "/v1/sessions/s1/files"): lambda r: httpx.Response(200, json=grant),
            ("POST", "/bucket"): lambda r: httpx.Response(204),
            ("GET", "/v1/sessions/s1/files/data/in.csv"): lambda r: httpx.Response(
                200, json={"path": "data/in.csv", "size": 3, "download_url": "http://s3.test/dl"}
            ),
            ("GET", "/dl"): lambda r: httpx.Response(200, content=b"a,b"),
        }
    )
    source = tmp_path / "in.csv"
    source.write_bytes(b"a,b")
    client = _client(api)
    info = client.upload_file("s1", source, "data/in.csv")
    assert info.path == "data/in.csv" and info.size == 3
    assert json.loads(api.requests[0].content) == {"path": "data/in.csv", "size": 3}
    multipart = api.requests[1].content
    assert (
        multipart.index(b'name="key"')
        < multipart.index(b'name="policy"')
        < multipart.index(b'name="file"')
    )
    assert "x-api-key" not in api.requests[1].headers
    target = tmp_path / "back.csv"
    assert client.download_file("s1", "data/in.csv", target) == b"a,b"
    assert target.read_bytes() == b"a,b"
    assert "x-api-key" not in api.requests[-1].headers


def test_llm_tool_definitions_and_dispatch():
    schema = openai_tool()["function"]["parameters"]
    assert openai_tool()["type"] == "function"
    assert openai_tool()["function"]["name"] == anthropic_tool()["name"] == "execute_python"
    assert anthropic_tool()["input_schema"] == schema and schema["required"] == ["code"]
    api = Api(
        {("POST", "/v1/sessions/s1/execute"): lambda r: httpx.Response(200, json=FAILED_RESULT)}
    )
    text = dispatch_tool_call(_client(api), "execute_python", '{"code": "1/0"}', session_id="s1")
    assert "Trace!" in text
    assert json.loads(api.requests[0].content)["code"] == "1/0"
    assert "unknown tool" in dispatch_tool_call(_client(api), "rm_rf", {}).lower()
    assert "result:\n42" in format_result(ExecutionResult.from_dict(OK_RESULT))


DIAGNOSTICS = {
    "executor": {
        "checks": {
            "non_dumpable": {"ok": True, "detail": "a child cannot read this process's environ"},
            "runtime_api_isolated": {"ok": False, "detail": "a child can connect to 127.0.0.1"},
            "huge_pages": {"ok": None, "detail": "not here"},
        },
        "on_lambda": True,
        "uid": 993,
        "kernel": "5.10.240",
        "python": "3.13.9",
        "checked_at": "2026-11-30T12:00:00Z",
        "duration_ms": 180,
    },
    "executor_error": None,
    "api": {"stage": "prod", "region": "eu-west-1", "sync_wait_ms": 25000},
}


def test_doctor_prints_one_line_per_protection_and_what_did_not_hold(monkeypatch, capsys):
    api = Api({("GET", "/v1/diagnostics"): lambda r: httpx.Response(200, json=DIAGNOSTICS)})
    _patch_cli(monkeypatch, api)
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "  ok  non_dumpable" in out
    assert "NO  runtime_api_isolated" in out and "n/a huge_pages" in out
    assert "1 protection(s) did not take effect: runtime_api_isolated" in out
    assert "Lambda, kernel 5.10.240" in out and "api       region = eu-west-1" in out
    assert "checked 2026-11-30T12:00:00Z in 0.18 s" in out  # seconds, as everywhere in lci
    assert "api       sync_wait = 25 s" in out
    assert cli.main(["doctor", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == DIAGNOSTICS


def test_a_notebook_too_large_for_one_response_is_fetched_whole_from_its_link():
    whole = {"cells": [{"cell_type": "code", "source": "1"}] * 3, "metadata": {}}
    partial = {"cells": [], "metadata": {"lci": {"notebook_url": "https://s3.test/nb?X-Amz=1"}}}
    api = Api(
        {
            ("GET", "/v1/sessions/s1/notebook"): lambda r: httpx.Response(200, json=partial),
            ("GET", "/nb"): lambda r: httpx.Response(200, json=whole),
        }
    )
    assert _client(api).notebook("s1") == whole
    assert "x-api-key" not in api.requests[-1].headers  # the link goes to S3, not the API

"""The client's live execution against a scripted API: output events in order from successive
views of a running execution, callbacks and the iterator form, interrupts, forks, the receipt,
`lci run` following a run (Ctrl-C interrupts, a second detaches), `lci session fork`, and MCP
progress notifications with what a long run prints."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from lci import cli, following
from lci.default_session import DefaultSession
from lci.live import ExecutionEvent, OutputTracker
from lci.mcp_server import build_server
from lci.models import ExecutionResult
from lci.paths import LocalRoot
from mcp import Client as McpClient

from .client_fakes import Api, client_for, result

USAGE = {"wall_ms": 1200, "cpu_ms": 900, "peak_memory_mb": 131.5}


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _stream(name: str, text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": name, "text": text}


def _view(*outputs: dict[str, Any], status: str = "running", **fields: Any) -> dict[str, Any]:
    """An execution as GET shows it: its streams are the outputs' texts."""
    texts = {
        name: "".join(o["text"] for o in outputs if o.get("name") == name)
        for name in ("stdout", "stderr")
    }
    return result(
        status=status, success=status == "ok", outputs=list(outputs), **{**texts, **fields}
    )


DISPLAY = {"output_type": "display_data", "data": {"image/png": "iVBO"}, "metadata": {}}
VIEWS = [
    _view(_stream("stdout", "a\n")),
    _view(_stream("stdout", "a\nb"), _stream("stderr", "oops\n")),
    _view(_stream("stdout", "a\nb"), _stream("stderr", "oops\n"), _stream("stdout", "c\n")),
    _view(
        _stream("stdout", "a\nb"),
        _stream("stderr", "oops\n"),
        _stream("stdout", "c\n"),
        DISPLAY,
        {"output_type": "execute_result", "data": {"text/plain": "42"}, "execution_count": 1},
        status="ok",
        result={"text/plain": "42"},
        usage=USAGE,
    ),
]


def _running_api(views: list[dict[str, Any]], path: str = "/v1/execute") -> Api:
    served = iter(views)
    interrupted: list[bool] = []

    def get(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=next(served))

    def interrupt(request: httpx.Request) -> httpx.Response:
        interrupted.append(True)
        return httpx.Response(202, json={"execution_id": "e1", "interrupt_requested": True})

    api = Api(
        {
            ("POST", path): lambda r: httpx.Response(
                202, json={"execution_id": "e1", "status": "running"}
            ),
            ("GET", "/v1/executions/e1"): get,
            ("POST", "/v1/executions/e1/interrupt"): interrupt,
        }
    )
    api.interrupted = interrupted  # type: ignore[attr-defined]
    return api


def _events(views: list[dict[str, Any]]) -> list[tuple[str, str]]:
    tracker = OutputTracker()
    found: list[tuple[str, str]] = []
    for view in views:
        for event in tracker.events(ExecutionResult.from_dict(view)):
            found.append((event.kind, event.text or (event.output or {}).get("output_type", "")))
    return found


def test_successive_views_become_the_new_pieces_in_order() -> None:
    assert _events(VIEWS) == [
        ("stdout", "a\n"),
        ("stdout", "b"),
        ("stderr", "oops\n"),
        ("stdout", "c\n"),
        ("output", "display_data"),
        ("output", "execute_result"),
    ]


def test_output_cleared_while_running_is_neither_lost_nor_repeated() -> None:
    before = _view(_stream("stdout", "10%\n"), DISPLAY)
    # clear_output: the outputs start again, the stream keeps everything.
    after = _view(DISPLAY, _stream("stdout", "50%\n"), stdout="10%\n50%\n")
    assert _events([before, after]) == [
        ("stdout", "10%\n"),
        ("output", "display_data"),
        ("stdout", "50%\n"),
    ]


def test_stream_yields_events_then_the_result_and_callbacks_get_the_same() -> None:
    client = client_for(_running_api(VIEWS))
    run = client.stream("code")
    events = list(run.events(sleep=lambda seconds: None))
    assert [event.kind for event in events] == [
        "stdout", "stdout", "stderr", "stdout", "output", "output", "result"
    ]  # fmt: skip
    assert events[-1].result is run.result and run.result is not None
    assert run.result.usage is not None and run.result.usage.peak_memory_mb == 131.5
    assert [event.final for event in events] == [False, False, False, False, True, True, True]

    printed: list[tuple[str, str]] = []
    client = client_for(_running_api(VIEWS))
    client_module = sys.modules["lci.live"]
    original = client_module.FIRST_POLL_DELAYS_SECONDS
    try:
        client_module.FIRST_POLL_DELAYS_SECONDS = (0.0,) * 5  # type: ignore[attr-defined]
        finished = client.execute(
            "code",
            on_stdout=lambda text: printed.append(("out", text)),
            on_stderr=lambda text: printed.append(("err", text)),
            on_output=lambda output: printed.append(("rich", output["output_type"])),
        )
    finally:
        client_module.FIRST_POLL_DELAYS_SECONDS = original  # type: ignore[attr-defined]
    assert finished.text == "42"
    assert printed == [
        ("out", "a\n"), ("out", "b"), ("err", "oops\n"), ("out", "c\n"),
        ("rich", "display_data"), ("rich", "execute_result"),
    ]  # fmt: skip


def test_a_run_that_finished_at_once_needs_no_poll() -> None:
    api = Api({("POST", "/v1/execute"): lambda r: httpx.Response(200, json=VIEWS[-1])})
    run = client_for(api).start("code")
    assert run.done and [e.kind for e in run][-1] == "result"
    assert len(api.requests) == 1
    assert json.loads(api.requests[0].content)["wait"] is False


def test_interrupt_and_fork_call_their_routes() -> None:
    api = _running_api(VIEWS)
    api.routes[("POST", "/v1/sessions/s1/fork")] = lambda r: httpx.Response(
        201, json={"session_id": "s2", "execution_count": 3}
    )
    client = client_for(api)
    run = client.start("code")
    assert run.interrupt() is True
    assert api.interrupted == [True]  # type: ignore[attr-defined]
    forked = client.fork_session("s1", ttl_seconds=600)
    assert (forked.session_id, forked.execution_count) == ("s2", 3)
    assert json.loads(api.calls("POST", "/v1/sessions/s1/fork")[0].content) == {"ttl_seconds": 600}
    api.routes[("POST", "/v1/executions/e1/interrupt")] = lambda r: httpx.Response(
        409, json={"error": {"code": "EXECUTION_FINISHED", "message": "over"}}
    )
    assert run.interrupt() is False


def _follow(api: Api, sleep: Callable[[float], None]) -> tuple[Any, str, str]:
    run = client_for(api).start("code")
    out, err = io.StringIO(), io.StringIO()
    finished = following.follow(run, out, err, sleep=sleep)
    return finished, out.getvalue(), err.getvalue()


def test_lci_run_prints_output_as_it_arrives_and_ctrl_c_interrupts() -> None:
    interrupted = _view(
        _stream("stdout", "a\n"),
        status="interrupted",
        error={"name": "KeyboardInterrupt", "value": "", "traceback": []},
    )
    api = _running_api([VIEWS[0], VIEWS[1], interrupted])
    calls = iter([KeyboardInterrupt, None, None, None])

    def sleep(seconds: float) -> None:
        raised = next(calls)
        if raised is not None:
            raise raised

    finished, out, err = _follow(api, sleep)
    assert finished is not None and finished.status == "interrupted"
    assert api.interrupted == [True]  # type: ignore[attr-defined]
    assert out == "a\nb\n"  # the open line is closed before the result
    assert following.INTERRUPTING in err and "oops\n" in err


def test_a_second_ctrl_c_detaches(monkeypatch, capsys) -> None:
    api = _running_api([VIEWS[0]] * 5)
    monkeypatch.setattr(cli, "Client", lambda endpoint, key: client_for(api))
    monkeypatch.setattr(sys, "stdin", io.StringIO("while True: pass"))

    def sleep(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(following.time, "sleep", sleep)
    assert cli.main(["run", "-"]) == cli.EXIT_INTERRUPTED
    out, err = capsys.readouterr()
    assert out == "a\n"
    assert "detached: execution e1 goes on" in err
    assert api.interrupted == [True]  # type: ignore[attr-defined]


def test_lci_session_fork_prints_the_new_id(monkeypatch, capsys) -> None:
    api = Api(
        {("POST", "/v1/sessions/s1/fork"): lambda r: httpx.Response(201, json={"session_id": "s2"})}
    )
    monkeypatch.setattr(cli, "Client", lambda endpoint, key: client_for(api))
    assert cli.main(["session", "fork", "s1", "--ttl", "120"]) == 0
    assert capsys.readouterr().out == "s2\n"
    assert json.loads(api.requests[0].content) == {"ttl_seconds": 120}


def test_mcp_execute_python_reports_what_a_long_run_prints_as_progress(tmp_path) -> None:
    api = _running_api(VIEWS, path="/v1/sessions/s1/execute")
    api.routes[("POST", "/v1/sessions")] = lambda r: httpx.Response(201, json={"session_id": "s1"})
    client = client_for(api)
    session = DefaultSession(client)
    server = build_server(client, LocalRoot(tmp_path), session=session)
    progress: list[tuple[float, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    async def run() -> Any:
        async with McpClient(server) as mcp:
            tools = await mcp.list_tools()
            schema = next(t for t in tools.tools if t.name == "execute_python").input_schema
            assert "ctx" not in schema["properties"]
            return await mcp.call_tool(
                "execute_python", {"code": "x"}, progress_callback=on_progress
            )

    try:
        answer = anyio.run(run)
    finally:
        session.close()
    assert not answer.is_error
    assert [message for _, message in progress] == ["a\n", "b", "oops\n", "c\n"]
    values = [value for value, _ in progress]
    assert values == sorted(values)
    text = "\n".join(getattr(block, "text", "") for block in answer.content)
    assert "a\nb" in text and "42" in text


def test_events_have_a_readable_shape() -> None:
    event = ExecutionEvent("stdout", text="hi")
    assert (event.kind, event.text, event.output, event.final) == ("stdout", "hi", None, False)

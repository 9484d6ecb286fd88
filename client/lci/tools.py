"""`execute_python` as an LLM tool: OpenAI function-calling and Anthropic tool definitions, and
`dispatch_tool_call` to run a model's tool call through a `Client` and get back what to send
to the model.

Stateful by default: without an explicit `session_id`, calls through one `Client` share a
default session created on the first call and deleted when the client is closed, so `x = 1`
then `print(x)` works as the tool description promises. Whatever the model sends (malformed
JSON, an unknown tool, a missing or wrong argument) and whatever the API answers comes back as a
tool error text, never as an exception.

    client = Client()
    reply = dispatch_tool_call(client, call.function.name, call.function.arguments)  # OpenAI
    block = dispatch_tool_call(client, use.name, use.input, provider="anthropic",
                               tool_use_id=use.id)  # an Anthropic `tool_result` block
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, overload

from lci.client import Client
from lci.default_session import DefaultSession
from lci.errors import LciError
from lci.models import ExecutionResult
from lci.shaping import (
    DEFAULT_MAX_OUTPUT_CHARS,
    ShapedOutput,
    ShapingLimits,
    shape_result,
    tool_error,
)
from lci.units import seconds_to_ms, seconds_wording

TOOL_NAME = "execute_python"
TOOL_DESCRIPTION = (
    "Execute Python 3.13 code in a stateful, sandboxed Jupyter-like session and return its "
    "stdout, stderr, the value of the last expression and any error traceback. Variables, "
    "imports and files persist between calls in the same session. numpy, pandas and matplotlib "
    "are available; figures are returned as images where the client can show them, and files "
    "written to the working directory can be downloaded. Long output keeps its beginning and "
    "end. No network access unless the deployment allows it."
)
TIMEOUT_ARGUMENT = "timeout_seconds"
TOOL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "The Python code to run (like a notebook cell)."},
        "packages": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Extra whitelisted packages to install first, e.g. ['scikit-learn'].",
        },
        TIMEOUT_ARGUMENT: {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "Stop the run after this many seconds (default 30).",
        },
    },
    "required": ["code"],
    "additionalProperties": False,
}
# What the model reads back is capped: a huge stdout would flood its context.
MAX_TOOL_OUTPUT_CHARS = DEFAULT_MAX_OUTPUT_CHARS

Provider = Literal["openai", "anthropic"]


def openai_tool() -> dict[str, Any]:
    """OpenAI Chat Completions / Responses `tools=[...]` entry."""
    return {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": TOOL_DESCRIPTION,
            "parameters": TOOL_PARAMETERS,
        },
    }


def anthropic_tool() -> dict[str, Any]:
    """Anthropic Messages API `tools=[...]` entry."""
    return {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": TOOL_PARAMETERS}


OPENAI_TOOLS = [openai_tool()]
ANTHROPIC_TOOLS = [anthropic_tool()]


# --- arguments ------------------------------------------------------------------------------------


class ToolArgumentError(ValueError):
    """The model's arguments do not fit the tool's schema; the message is for the model."""


@dataclass(frozen=True)
class ExecuteArguments:
    code: str
    packages: list[str]
    timeout_seconds: float | None = None

    @property
    def timeout_ms(self) -> int | None:
        return None if self.timeout_seconds is None else seconds_to_ms(self.timeout_seconds)


def parse_execute_arguments(arguments: Any) -> ExecuteArguments:
    """`execute_python` arguments from a dict or a JSON object text (OpenAI sends text)."""
    if isinstance(arguments, str | bytes):
        try:
            arguments = json.loads(arguments or "{}")
        except ValueError as exc:
            raise ToolArgumentError(f"the arguments are not valid JSON ({exc})") from exc
    if not isinstance(arguments, dict):
        raise ToolArgumentError('the arguments must be a JSON object like {"code": "..."}')
    unexpected = sorted(set(arguments) - set(TOOL_PARAMETERS["properties"]))
    if unexpected:
        raise ToolArgumentError(f"unexpected argument(s): {', '.join(unexpected)}")
    code = arguments.get("code")
    if not isinstance(code, str) or not code.strip():
        raise ToolArgumentError("`code` is required and must be a non-empty string")
    packages = arguments.get("packages") or []
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise ToolArgumentError("`packages` must be a list of package names")
    timeout = arguments.get(TIMEOUT_ARGUMENT)
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ToolArgumentError(f"`{TIMEOUT_ARGUMENT}` must be a number of seconds")
        if not math.isfinite(timeout) or timeout <= 0:
            raise ToolArgumentError(f"`{TIMEOUT_ARGUMENT}` must be more than 0 seconds")
    return ExecuteArguments(code, list(packages), None if timeout is None else float(timeout))


# --- running --------------------------------------------------------------------------------------


def run_execute_python(
    client: Client,
    default_session: DefaultSession,
    arguments: ExecuteArguments,
    *,
    session_id: str | None = None,
    limits: ShapingLimits | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> ShapedOutput:
    """Run the code in `session_id` (or the default session) and shape the result; an API
    failure becomes a tool error. `on_progress` gets the text the code prints while it runs
    (the MCP server turns it into progress notifications); the result has it all anyway."""

    def execute(target: str) -> ExecutionResult:
        if on_progress is None:
            return client.execute(
                arguments.code,
                session_id=target,
                packages=arguments.packages or None,
                timeout_ms=arguments.timeout_ms,
            )
        run = client.start(
            arguments.code,
            session_id=target,
            packages=arguments.packages or None,
            timeout_ms=arguments.timeout_ms,
        )
        for event in run:
            if not event.final and event.kind in ("stdout", "stderr") and event.text:
                on_progress(event.text)
        assert run.result is not None
        return run.result

    try:
        result, note = default_session.run(session_id, execute)
    except LciError as exc:
        return api_error(exc)
    return shape_result(result, limits, note=note)


def api_error(exc: LciError) -> ShapedOutput:
    message = seconds_wording(exc.message, TIMEOUT_ARGUMENT)
    return tool_error(f"{message} ({exc.code})" if exc.code else message)


_default_sessions: weakref.WeakKeyDictionary[Client, DefaultSession] = weakref.WeakKeyDictionary()
_default_sessions_lock = threading.Lock()


def default_session_for(client: Client) -> DefaultSession:
    """The client's default tool session (deleted when the client is closed)."""
    with _default_sessions_lock:
        holder = _default_sessions.get(client)
        if holder is None:
            holder = _default_sessions[client] = DefaultSession(client)
            client.on_close(holder.close)
        return holder


def call_tool(
    client: Client,
    name: str,
    arguments: Any,
    *,
    session_id: str | None = None,
    limits: ShapingLimits | None = None,
) -> ShapedOutput:
    """Run one tool call and return the neutral shaped output (see `lci.shaping`)."""
    if name != TOOL_NAME:
        return tool_error(f"unknown tool {name!r}; the only tool is {TOOL_NAME!r}")
    try:
        parsed = parse_execute_arguments(arguments)
    except ToolArgumentError as exc:
        return tool_error(str(exc))
    return run_execute_python(
        client, default_session_for(client), parsed, session_id=session_id, limits=limits
    )


@overload
def dispatch_tool_call(
    client: Client,
    name: str,
    arguments: Any,
    *,
    session_id: str | None = ...,
    provider: Literal["openai"] = ...,
    tool_use_id: None = ...,
    max_output_chars: int = ...,
) -> str: ...


@overload
def dispatch_tool_call(
    client: Client,
    name: str,
    arguments: Any,
    *,
    session_id: str | None = ...,
    provider: Literal["anthropic"],
    tool_use_id: str,
    max_output_chars: int = ...,
) -> dict[str, Any]: ...


def dispatch_tool_call(
    client: Client,
    name: str,
    arguments: Any,
    *,
    session_id: str | None = None,
    provider: Provider = "openai",
    tool_use_id: str | None = None,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> str | dict[str, Any]:
    """Run one tool call from a model and return what to send back.

    `provider="openai"` (default): the text of the function result (images described).
    `provider="anthropic"`: a whole `tool_result` content block for `tool_use_id`, with image
    blocks and `is_error` set when the call itself failed.
    """
    shaped = call_tool(
        client,
        name,
        arguments,
        session_id=session_id,
        limits=ShapingLimits(max_output_chars=max_output_chars),
    )
    if provider == "anthropic":
        if not tool_use_id:
            raise ValueError("tool_use_id is required for provider='anthropic'")
        return {
            "type": "tool_result",
            "tool_use_id": tool_use_id,
            "content": shaped.for_anthropic(),
            "is_error": shaped.is_error,
        }
    return shaped.for_openai()


def format_result(result: ExecutionResult, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS) -> str:
    """A compact, model-friendly text rendering of an execution result."""
    return shape_result(result, ShapingLimits(max_output_chars=max_output_chars)).for_openai()

"""`execute_python` as an LLM tool: OpenAI function-calling and Anthropic tool definitions, plus
`dispatch_tool_call` to run a model's tool call through a `Client` and get text back for it."""

from __future__ import annotations

import json
from typing import Any

from lci.client import Client
from lci.models import ExecutionResult

TOOL_NAME = "execute_python"
TOOL_DESCRIPTION = (
    "Execute Python 3.13 code in a stateful, sandboxed Jupyter-like session and return its "
    "stdout, stderr, the value of the last expression and any error traceback. Variables, "
    "imports and files persist between calls in the same session. numpy, pandas and matplotlib "
    "are available; figures are returned as images and files written to the working directory "
    "can be downloaded. No network access unless the deployment allows it."
)
TOOL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "code": {"type": "string", "description": "The Python code to run (like a notebook cell)."},
        "packages": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Extra whitelisted packages to install first, e.g. ['scikit-learn'].",
        },
        "timeout_seconds": {
            "type": "number",
            "description": "Stop the run after this many seconds (default 30).",
        },
    },
    "required": ["code"],
    "additionalProperties": False,
}
# What the model reads back is capped: a huge stdout would flood its context.
MAX_TOOL_OUTPUT_CHARS = 20_000


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


def dispatch_tool_call(
    client: Client,
    name: str,
    arguments: dict[str, Any] | str,
    *,
    session_id: str | None = None,
) -> str:
    """Run one tool call from a model (arguments as a dict or OpenAI's JSON string) and return
    the text to send back as the tool result."""
    if name != TOOL_NAME:
        return f"Unknown tool {name!r}; the only tool is {TOOL_NAME!r}."
    args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
    code = args.get("code")
    if not isinstance(code, str) or not code.strip():
        return "Error: `code` must be a non-empty string."
    timeout = args.get("timeout_seconds")
    result = client.execute(
        code,
        session_id=session_id,
        packages=list(args.get("packages") or []) or None,
        timeout_ms=int(float(timeout) * 1000) if timeout else None,
    )
    return format_result(result)


def format_result(result: ExecutionResult) -> str:
    """A compact, model-friendly text rendering of an execution result."""
    parts: list[str] = []
    if result.stdout:
        parts.append("stdout:\n" + result.stdout.rstrip("\n"))
    if result.stderr:
        parts.append("stderr:\n" + result.stderr.rstrip("\n"))
    if result.text is not None:
        parts.append("result:\n" + result.text)
    images = sum(1 for o in result.outputs if "image/png" in (o.get("data") or {}))
    if images:
        parts.append(f"[{images} image(s) displayed]")
    if result.error is not None:
        trace = "\n".join(result.error.traceback) or f"{result.error.name}: {result.error.value}"
        parts.append("error:\n" + trace)
    elif result.status != "ok":
        parts.append(f"status: {result.status}")
    if result.files:
        parts.append("files written: " + ", ".join(f.path for f in result.files))
    text = "\n\n".join(parts) or "(no output)"
    if len(text) > MAX_TOOL_OUTPUT_CHARS:
        text = text[:MAX_TOOL_OUTPUT_CHARS] + "\n... [output truncated]"
    return text

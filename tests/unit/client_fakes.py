"""A scripted HTTP API for the `lci` client tests (no server, no network)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from typing import Any

import httpx
from lci import Client

Handler = Callable[[httpx.Request], httpx.Response]


class Api:
    """A scripted server: routes (method, path) to handlers and records every request."""

    def __init__(self, routes: dict[tuple[str, str], Handler]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return httpx.Response(404, json={"error": {"code": "NOT_FOUND", "message": "no"}})
        return handler(request)

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


def client_for(api: Api) -> Client:
    return Client("http://api.test", "k1,k2", transport=httpx.MockTransport(api))


def result(**fields: Any) -> dict[str, Any]:
    """An ExecutionResult document: a successful empty run unless `fields` say otherwise."""
    document: dict[str, Any] = {
        "execution_id": "e1",
        "session_id": None,
        "status": "ok",
        "success": True,
        "execution_count": 1,
        "stdout": "",
        "stderr": "",
        "stdout_truncated": False,
        "stderr_truncated": False,
        "result": None,
        "outputs": [],
        "error": None,
        "files": [],
        "duration_ms": 3,
        "warnings": [],
    }
    document.update(fields)
    return document


def png_bytes(width: int, height: int, noisy: bool = False) -> bytes:
    """A real PNG (noise compresses badly: a big noisy one is big in bytes too)."""
    from PIL import Image

    if noisy:
        import os

        picture = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    else:
        picture = Image.new("RGB", (width, height), (200, 30, 30))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def image_output(data: bytes, mime: str = "image/png") -> dict[str, Any]:
    return {
        "output_type": "display_data",
        "data": {mime: base64.b64encode(data).decode(), "text/plain": "<Figure>"},
        "metadata": {},
    }


class StatefulApi(Api):
    """Sessions that remember `x = <int>` assignments, enough to see state kept or lost."""

    def __init__(self) -> None:
        super().__init__({})
        self.sessions: dict[str, dict[str, str]] = {}
        self.created = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        if (method, path) == ("POST", "/v1/sessions"):
            self.created += 1
            session_id = f"s{self.created}"
            self.sessions[session_id] = {}
            return httpx.Response(201, json={"session_id": session_id})
        parts = path.split("/")
        if len(parts) >= 4 and parts[2] == "sessions":
            session_id = parts[3]
            if session_id not in self.sessions:
                return httpx.Response(
                    404, json={"error": {"code": "SESSION_NOT_FOUND", "message": "gone"}}
                )
            if method == "DELETE" and len(parts) == 4:
                del self.sessions[session_id]
                return httpx.Response(204)
            if method == "POST" and parts[4:] == ["execute"]:
                return httpx.Response(200, json=self._run(session_id, json.loads(request.content)))
        return httpx.Response(404, json={"error": {"code": "NOT_FOUND", "message": "no"}})

    def _run(self, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
        names = self.sessions[session_id]
        code = body["code"]
        if "=" in code:
            name, value = (part.strip() for part in code.split("=", 1))
            names[name] = value
            return result(session_id=session_id)
        name = code.removeprefix("print(").removesuffix(")")
        if name in names:
            return result(session_id=session_id, stdout=names[name] + "\n")
        error = {"name": "NameError", "value": f"name '{name}' is not defined", "traceback": []}
        return result(session_id=session_id, status="error", success=False, error=error)

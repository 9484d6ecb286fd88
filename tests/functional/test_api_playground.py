"""`GET /`: the playground's files, served without a key under a strict Content-Security-Policy.
The page itself is driven in a real browser by tests/e2e/test_playground.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from lambdas.api.http.playground import PLAYGROUND_DIR, content_security_policy
from tests.functional.conftest import BUCKET, ApiClient


def _get(
    target: str, key: str | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], str]:
    from lambdas.api.handler import handler
    from local.events import HttpRequest, to_proxy_event

    host = [("Host", "abc123.execute-api.us-east-1.amazonaws.com")]
    event = to_proxy_event(
        HttpRequest(method, target, host + ([("x-api-key", key)] if key else [])), None
    )
    raw: dict[str, Any] = handler(event, None)
    headers = dict(raw.get("headers") or {})
    headers.update({k: v[-1] for k, v in (raw.get("multiValueHeaders") or {}).items()})
    return int(raw["statusCode"]), headers, str(raw.get("body") or "")


def _policy(csp: str) -> dict[str, list[str]]:
    return {
        name: sources
        for name, *sources in (part.split() for part in csp.split(";") if part.strip())
    }


@pytest.mark.parametrize(
    ("target", "content_type"),
    [
        ("/", "text/html"),
        ("/?asset=index.html", "text/html"),
        ("/?asset=app.js", "text/javascript"),
        ("/?asset=app.css", "text/css"),
    ],
)
def test_the_page_and_its_files_need_no_key(api: ApiClient, target: str, content_type: str):
    status, headers, body = _get(target)
    assert status == 200, body
    assert headers["Content-Type"].startswith(content_type)
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" in headers
    assert body
    assert BUCKET not in body and "arn:aws" not in body


def test_other_methods_on_the_root_are_405(api: ApiClient):
    status, headers, body = _get("/", method="POST")
    assert status == 405, body
    assert headers.get("Allow") == "GET"


def test_unknown_assets_are_404_and_paths_do_not_escape(api: ApiClient):
    for target in ("/?asset=../settings.py", "/?asset=app.py", "/?asset="):
        status, _, body = _get(target)
        assert status == 404, (target, body)


def test_content_security_policy_allows_only_the_pages_own_script(api: ApiClient):
    _, headers, _ = _get("/")
    policy = _policy(headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]  # no inline script, no eval, no CDN
    assert policy["style-src"] == ["'self'"]
    assert set(policy["img-src"]) == {"'self'", "data:", "blob:"}
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert "'self'" in policy["connect-src"] and "https:" in policy["connect-src"]
    assert BUCKET not in headers["Content-Security-Policy"]


def test_local_s3_endpoint_is_named_in_connect_src():
    policy = _policy(content_security_policy("http://127.0.0.1:4567/some/path"))
    assert "http://127.0.0.1:4567" in policy["connect-src"]


def test_no_inline_script_and_user_output_never_becomes_markup():
    html = (PLAYGROUND_DIR / "index.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.DOTALL | re.IGNORECASE)
    assert scripts and all(not body.strip() for body in scripts)
    assert not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE)  # no inline handlers
    assert not re.search(r"https?://", html)  # nothing fetched from elsewhere
    script = (PLAYGROUND_DIR / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    # text/html outputs go to a sandboxed frame with no permissions at all.
    assert 'setAttribute("sandbox", "")' in script and "srcdoc" in script
    assert "localStorage" not in script  # the key stays in this tab's sessionStorage


def test_the_api_package_ships_the_playground():
    from infra.api_function import API_SOURCES

    shipped = [Path(source) for source in API_SOURCES]
    relative = PLAYGROUND_DIR.relative_to(Path(__file__).resolve().parents[2])
    assert any(relative.is_relative_to(source) for source in shipped)
    assert {p.name for p in PLAYGROUND_DIR.iterdir()} >= {"index.html", "app.js", "app.css"}

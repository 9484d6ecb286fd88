"""`GET /`: the browser playground (`lambdas/api/playground/`), served without a key.

Plain HTML/CSS/JS shipped in the API package: no build step, nothing from a CDN. The page asks
for the API key and keeps it in the tab's sessionStorage; every API call it makes carries it.

One route serves all three files: `/` is the page, `/?asset=app.js` its script. Relative URLs
of that form resolve under any stage or base path whether or not the address ends in a slash
(`.../dev` and `.../dev/`), which a `/playground/app.js` resource would not.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from lambdas.api import container
from lambdas.api.errors import RouteNotFound
from lambdas.api.http.common import responses
from lambdas.shared import routes

router = Router()

PLAYGROUND_DIR = Path(__file__).resolve().parent.parent / "playground"
INDEX = "index.html"
ASSET_TYPES = {
    INDEX: "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


def content_security_policy(s3_endpoint_url: str = "") -> str:
    """The page runs only its own script; user output never becomes markup in it (text/html
    outputs render in `<iframe sandbox srcdoc>`, which inherits this policy, so their scripts
    cannot run either).

    connect-src: the API ('self') and S3 for presigned uploads. On AWS that is `https:` rather
    than the bucket's host: the presign host is the S3 adapter's choice, and naming it here
    would show the bucket name to anyone who loads the page (SPEC §3 never discloses it). With
    script-src 'self' and no user content executing in the page, no script could use the
    wider connect-src. Locally, the S3 endpoint override (the verifying front) is named."""
    storage = ["https:"]
    if s3_endpoint_url:
        parts = urlsplit(s3_endpoint_url)
        storage.append(f"{parts.scheme}://{parts.netloc}")
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'", *storage],
        "frame-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],  # the page holds an API key: no clickjacking frame
    }
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


@cache
def _asset(name: str) -> str:
    return (PLAYGROUND_DIR / name).read_text(encoding="utf-8")


@router.get(
    routes.PLAYGROUND.resolver_rule,
    summary="The browser playground (HTML; no API key needed to load it)",
    responses=responses(
        (200, "The page, or one of its files (?asset=app.js, app.css)", None),
        errors=(RouteNotFound,),  # an unknown asset
    ),
)
def playground(asset: Annotated[str, Query()] = INDEX) -> Response[Any]:
    if asset not in ASSET_TYPES:
        raise RouteNotFound()
    settings = container.services().deps.settings
    return Response(
        status_code=200,
        content_type=ASSET_TYPES[asset],
        body=_asset(asset),
        headers={
            "Content-Security-Policy": content_security_policy(settings.S3_ENDPOINT_URL),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-cache",
        },
    )

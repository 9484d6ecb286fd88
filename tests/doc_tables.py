"""The tables in docs/ that come from the code, and the command that rewrites them.

    python -m tests.doc_tables            # exit 1 and name the stale tables
    python -m tests.doc_tables --write    # rewrite them in place

Each table sits between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->` in its file;
tests/unit/test_docs.py fails when one differs from what this module renders, so the docs
cannot drift from the code.

- docs/api.md `routes`: every route of `lambdas/shared/routes.py` with its key requirement,
  success statuses and error codes, read from the served OpenAPI document
  (`lambdas/api/http/app.py`);
- docs/api.md `limits`: request limits and defaults from `lambdas/shared/limits.py` and the API
  function's settings.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
API_DOC = REPO_ROOT / "docs" / "api.md"
ERROR_CODES_EXTENSION = "x-error-codes"


@dataclass(frozen=True)
class GeneratedTable:
    path: Path
    name: str
    render: Callable[[], str]


def _openapi_path(route_path: str) -> str:
    return re.sub(r"\{(\w+)\+\}", "{file_path}", route_path)


def _schema_name(response: dict[str, Any]) -> str:
    for media in (response.get("content") or {}).values():
        ref = (media.get("schema") or {}).get("$ref", "")
        if ref:
            return str(ref.rsplit("/", 1)[-1])
    return ""


def render_routes() -> str:
    from lambdas.api.http.app import openapi_document
    from lambdas.shared.routes import ROUTES

    document = openapi_document()
    lines = [
        "| route | what | key | success | errors (status: `error.code`) |",
        "|---|---|---|---|---|",
    ]
    for route in ROUTES:
        operation = document["paths"][_openapi_path(route.path)][route.method.lower()]
        successes, failures = [], []
        for status, response in operation["responses"].items():
            codes = response.get(ERROR_CODES_EXTENSION)
            if codes is None:
                schema = _schema_name(response)
                successes.append(f"{status} {schema}".strip())
            else:
                failures.append(f"{status}: " + ", ".join(f"`{code}`" for code in codes))
        key = "no" if route.public else "yes"
        summary = str(operation.get("summary", "")).replace("|", "\\|")
        lines.append(
            f"| `{route.method} {route.path}` | {summary} | {key} | {' · '.join(successes)} "
            f"| {' · '.join(failures)} |"
        )
    return "\n".join(lines)


def render_limits() -> str:
    from lambdas.api.settings import ApiSettings
    from lambdas.shared import limits

    defaults = {name: field.default for name, field in ApiSettings.model_fields.items()}
    rows = [
        ("`code`", f"at most {defaults['MAX_CODE_BYTES']:,} bytes (`maxCodeBytes`)", "413"),
        (
            "`timeout_ms`",
            f"default {defaults['DEFAULT_TIMEOUT_MS']:,}, from {limits.MIN_TIMEOUT_MS} to "
            f"{defaults['MAX_TIMEOUT_MS']:,} (`maxTimeoutMs`)",
            "400",
        ),
        (
            "sync window",
            f"{defaults['SYNC_WAIT_MS']:,} ms (`syncWaitMs`); a run still going then answers 202",
            "—",
        ),
        ("`packages`", f"at most {limits.MAX_PACKAGES_PER_REQUEST} per request", "400"),
        (
            "`env`",
            f"at most {limits.MAX_ENV_VARS} variables, each value at most "
            f"{limits.MAX_ENV_VALUE_BYTES:,} bytes, no NUL",
            "400",
        ),
        (
            "`files` (one-shot)",
            f"at most {limits.MAX_INLINE_FILES} files, {limits.MAX_INLINE_FILES_BYTES:,} bytes "
            "decoded in all",
            "400 / 413",
        ),
        (
            "`Idempotency-Key`",
            f"at most {limits.MAX_IDEMPOTENCY_KEY_LENGTH} characters; remembered 24 h",
            "400",
        ),
        (
            "`ttl_seconds`",
            f"default {defaults['SESSION_TTL_SECONDS']:,} (`sessionTtlSeconds`), from "
            f"{limits.MIN_SESSION_TTL_SECONDS} to {limits.MAX_SESSION_TTL_SECONDS:,}; sliding",
            "400",
        ),
        (
            "file path",
            f"relative, `/`-separated, no `..`, at most {limits.MAX_PATH_LENGTH} bytes",
            "400",
        ),
        (
            "upload size",
            f"at most {defaults['MAX_UPLOAD_BYTES']:,} bytes (`maxUploadBytes`)",
            "413 (asked) / S3 400 `EntityTooLarge` (sent)",
        ),
        ("files per session", f"at most {limits.MAX_FILES_PER_SESSION:,}", "409"),
        (
            "presigned URLs",
            f"uploads valid {limits.PRESIGNED_UPLOAD_EXPIRES_SECONDS} s, downloads "
            f"{limits.PRESIGNED_DOWNLOAD_EXPIRES_SECONDS} s",
            "S3 403",
        ),
        (
            "stdout, stderr",
            f"{limits.MAX_STREAM_BYTES:,} bytes each (then `*_truncated: true`)",
            "—",
        ),
        (
            "monthly quota",
            f"{defaults['QUOTA_EXECUTIONS']:,} executions and {defaults['QUOTA_COMPUTE_MS']:,} "
            "compute ms per principal (`quotaExecutions`, `quotaComputeMs`; 0: unlimited)",
            "429",
        ),
        ("request body", "at most 10 MB (API Gateway)", "413"),
    ]
    lines = ["| what | limit | over it |", "|---|---|---|"]
    lines += [f"| {what} | {limit} | {status} |" for what, limit, status in rows]
    return "\n".join(lines)


TABLES: tuple[GeneratedTable, ...] = (
    GeneratedTable(API_DOC, "routes", render_routes),
    GeneratedTable(API_DOC, "limits", render_limits),
)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"


def current_block(text: str, name: str) -> str:
    start, end = _markers(name)
    if start not in text or end not in text:
        raise ValueError(f"no {start} ... {end} block")
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")


def replace_block(text: str, name: str, content: str) -> str:
    start, end = _markers(name)
    current_block(text, name)  # both markers are there
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    return f"{before}{start}\n{content}\n{end}{after}"


def stale_tables() -> list[GeneratedTable]:
    return [
        table
        for table in TABLES
        if current_block(table.path.read_text(), table.name) != table.render()
    ]


def main(argv: list[str]) -> int:
    stale = stale_tables()
    if "--write" in argv:
        for table in stale:
            table.path.write_text(replace_block(table.path.read_text(), table.name, table.render()))
            print(f"rewrote {table.path.relative_to(REPO_ROOT)} ({table.name})")
        return 0
    for table in stale:
        print(f"stale: {table.path.relative_to(REPO_ROOT)} ({table.name})", file=sys.stderr)
    if stale:
        print("rewrite them: python -m tests.doc_tables --write", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

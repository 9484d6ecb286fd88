"""The tables in docs/ that come from the code, and the command that rewrites them.

    python -m tests.doc_tables            # exit 1 and name the stale tables
    python -m tests.doc_tables --write    # rewrite them in place

Each table sits between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->` in its file;
tests/unit/test_docs.py fails when one differs from what this module renders, so the docs
cannot drift from the code.

- README.md `exit-codes`: the `lci` command's exit statuses (`lci.cli.EXIT_CODES`);
- docs/api.md `routes`: every route of `lambdas/shared/routes.py` with its key requirement,
  success statuses and error codes, read from the served OpenAPI document
  (`lambdas/api/http/app.py`);
- docs/api.md `limits`: request limits and defaults from `lambdas/shared/limits.py` and the API
  function's settings;
- docs/security.md `attacks` and `faults`: every test marked `@pytest.mark.attack(layer, tried,
  outcome)` or `@pytest.mark.fault(...)` (on the function, or `pytestmark` for a whole module),
  read from the test files without importing them. Every test in `THREAT_TEST_FILES` must carry
  one; tests elsewhere may.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# This checkout's client, as pytest's `pythonpath` has it (an installed `lci` may be another's).
if str(REPO_ROOT / "client") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "client"))
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
            f"{limits.MAX_STREAM_BYTES:,} bytes each; a longer one keeps its head and tail "
            "around a `[... N bytes omitted ...]` line, `*_truncated: true`",
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


SECURITY_DOC = REPO_ROOT / "docs" / "security.md"
# Files made of attack and fault tests only: each of their tests says what it tries (a marker).
THREAT_TEST_FILES = (
    "tests/security/test_*.py",
    "tests/e2e/test_robustness_api.py",
    "tests/e2e/test_robustness_executor.py",
    "tests/e2e/test_robustness_faults.py",
    "tests/e2e/test_fuzz_api.py",
    "tests/unit/test_protocol_property.py",
)
# The layers of docs/security.md's threat model, in its order; a marker names one of them.
ATTACK_LAYERS = (
    "tenant isolation",
    "IAM",
    "network",
    "presigned URLs",
    "API edge",
    "error messages",
    "rlimits and timeouts",
    "output",
    "process hygiene",
    "worker protocol",
)
FAULT_LAYERS = ("executor environment", "storage", "concurrency", "session files", "load")
THREAT_KINDS = {"attack": ATTACK_LAYERS, "fault": FAULT_LAYERS}


@dataclass(frozen=True)
class ThreatTest:
    kind: str  # "attack" or "fault"
    layer: str
    tried: str
    outcome: str
    test: str  # path::function


def _threat_marker(node: ast.expr) -> tuple[str, tuple[str, ...]] | None:
    """`pytest.mark.attack("a", "b", "c")` -> ("attack", ("a", "b", "c"))."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return None
    kind = node.func.attr
    if kind not in THREAT_KINDS or ast.unparse(node.func.value) != "pytest.mark":
        return None
    if len(node.args) != 3 or not all(
        isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args
    ):
        raise ValueError(f"line {node.lineno}: {kind}(layer, tried, outcome) takes three strings")
    return kind, tuple(str(a.value) for a in node.args)  # type: ignore[attr-defined]


def _module_markers(tree: ast.Module) -> list[ast.expr]:
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in statement.targets
        ):
            value = statement.value
            return list(value.elts) if isinstance(value, ast.List | ast.Tuple) else [value]
    return []


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _tests_of(tree: ast.Module) -> list[tuple[str, list[ast.expr]]]:
    """Each test function of a module with its own markers."""
    return [
        (node.name, list(node.decorator_list))
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    ]


def threat_tests() -> list[ThreatTest]:
    """One row per marked test; a module-level marker is one row for the whole module."""
    found = []
    for path in sorted((REPO_ROOT / "tests").rglob("test_*.py")):
        tree = _parse(path)
        where = str(path.relative_to(REPO_ROOT))
        marked = [(where, _module_markers(tree))]
        marked += [(f"{where}::{name}", markers) for name, markers in _tests_of(tree)]
        for test, markers in marked:
            for marker in markers:
                threat = _threat_marker(marker)
                if threat:
                    kind, (layer, tried, outcome) = threat
                    found.append(ThreatTest(kind, layer, tried, outcome, test))
    return found


def unmarked_threat_tests() -> list[str]:
    """Tests in `THREAT_TEST_FILES` that do not say what they try."""
    unmarked = []
    for pattern in THREAT_TEST_FILES:
        for path in sorted(REPO_ROOT.glob(pattern)):
            tree = _parse(path)
            module = _module_markers(tree)
            for name, markers in _tests_of(tree):
                if not any(_threat_marker(marker) for marker in [*markers, *module]):
                    unmarked.append(f"{path.relative_to(REPO_ROOT)}::{name}")
    return unmarked


def _render_threats(kind: str) -> str:
    layers = THREAT_KINDS[kind]
    rows = sorted(
        (t for t in threat_tests() if t.kind == kind),
        key=lambda t: (layers.index(t.layer) if t.layer in layers else len(layers), t.test),
    )
    lines = ["| layer | tried | outcome | test |", "|---|---|---|---|"]
    for threat in rows:
        cells = (threat.layer, threat.tried, threat.outcome, f"`{threat.test}`")
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def render_attacks() -> str:
    return _render_threats("attack")


def render_faults() -> str:
    return _render_threats("fault")


README = REPO_ROOT / "README.md"


def render_exit_codes() -> str:
    from lci.cli import EXIT_CODES

    lines = ["| code | meaning |", "|---|---|"]
    lines += [f"| {code} | {meaning} |" for code, meaning in EXIT_CODES.items()]
    return "\n".join(lines)


TABLES: tuple[GeneratedTable, ...] = (
    GeneratedTable(README, "exit-codes", render_exit_codes),
    GeneratedTable(API_DOC, "routes", render_routes),
    GeneratedTable(API_DOC, "limits", render_limits),
    GeneratedTable(SECURITY_DOC, "attacks", render_attacks),
    GeneratedTable(SECURITY_DOC, "faults", render_faults),
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

"""The README and docs/ stay true to the code: generated tables are current, links resolve, the
error codes documented are the registry's, and nothing points at a contract outside the repo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lambdas.api.errors import ERROR_REGISTRY
from tests import doc_tables

REPO_ROOT = doc_tables.REPO_ROOT
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
PAGES = [REPO_ROOT / "README.md", *DOCS]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO_ROOT))


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = _FENCE.sub("", page.read_text())
    headings = re.findall(r"^#+\s+(.+?)\s*$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_generated_tables_are_current() -> None:
    stale = [f"{_page_id(t.path)} ({t.name})" for t in doc_tables.stale_tables()]
    assert not stale, f"stale: {stale}; rewrite them with `python -m tests.doc_tables --write`"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_relative_links_resolve(page: Path) -> None:
    text = _FENCE.sub("", page.read_text())
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in _anchors(linked)
        ):
            broken.append(target)
    assert not broken, f"{_page_id(page)}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_no_page_points_at_a_contract_outside_the_repository(page: Path) -> None:
    text = page.read_text()
    assert "SPEC" not in text and "../shared" not in text, _page_id(page)


def test_readme_links_every_page_of_docs() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [_page_id(p) for p in DOCS if f"]({_page_id(p)})" not in readme]
    assert not missing, f"README does not link {missing}"


def test_every_error_code_of_the_registry_is_in_the_api_error_table() -> None:
    api = (REPO_ROOT / "docs" / "api.md").read_text()
    table = api.split("## Error codes", 1)[1].split("\n## ", 1)[0]
    documented = {
        (int(status), code)
        for status, code in re.findall(r"^\| (\d{3}) \| `([A-Z_]+)`", table, re.MULTILINE)
    }
    registered = set(ERROR_REGISTRY.values())
    missing = registered - documented
    assert not missing, f"docs/api.md Error codes lacks {sorted(missing)}"


def test_the_readme_keeps_the_blocks_the_e2e_tests_run() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    for marker in ("<!-- e2e:curl -->", "<!-- e2e:lci -->"):
        after = readme.split(marker, 1)[1].lstrip("\n")
        assert after.startswith("```bash\n"), f"{marker} must precede a bash block"


def test_every_attack_and_fault_test_says_what_it_tries() -> None:
    unmarked = doc_tables.unmarked_threat_tests()
    assert not unmarked, (
        "mark each with @pytest.mark.attack(layer, tried, outcome) or @pytest.mark.fault(...) "
        f"(layers: tests/doc_tables.py), then `python -m tests.doc_tables --write`: {unmarked}"
    )


def test_attack_and_fault_tests_name_a_layer_of_the_threat_model() -> None:
    unknown = [
        (threat.test, threat.layer)
        for threat in doc_tables.threat_tests()
        if threat.layer not in doc_tables.THREAT_KINDS[threat.kind]
    ]
    assert not unknown, f"layers are {doc_tables.THREAT_KINDS}: {unknown}"


def _readme_lci_commands() -> list[str]:
    """Every `lci ...` command line in the README's bash blocks (after `;`, `|`, `$(`)."""
    readme = (REPO_ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", readme, re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            code = line.split(" # ", 1)[0]
            for part in re.split(r"[;|]|\$\(", code):
                part = part.strip().rstrip(")")
                if part.startswith("lci "):
                    commands.append(part)
    return commands


def test_every_lci_command_in_the_readme_parses() -> None:
    import shlex

    from lci.cli import build_parser

    commands = _readme_lci_commands()
    assert len(commands) > 10, commands
    for command in commands:
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit as exit_:  # --version, --help
            assert exit_.code == 0, command


def test_every_local_stack_setting_is_documented() -> None:
    from local.config import LocalSettings

    page = (REPO_ROOT / "docs" / "local-stack.md").read_text()
    missing = [name for name in LocalSettings.model_fields if f"`{name}`" not in page]
    assert not missing, f"docs/local-stack.md (Settings) does not document {missing}"


# `lambdas/api/errors.py`, `tests/e2e/test_robustness_*.py` ...: a repository path (or glob) in
# backticks, build outputs aside.
_REPO_PATH = re.compile(r"`((?:lambdas|local|infra|client|layers|benchmarks|tests)/[\w./*-]*)")
_BUILD_OUTPUTS = ("layers/build",)


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_repository_path_a_page_names_exists(page: Path) -> None:
    missing = sorted(
        {
            path
            for path in _REPO_PATH.findall(page.read_text())
            if not path.startswith(_BUILD_OUTPUTS) and not any(REPO_ROOT.glob(path.rstrip("/")))
        }
    )
    assert not missing, f"{_page_id(page)} names paths that do not exist: {missing}"

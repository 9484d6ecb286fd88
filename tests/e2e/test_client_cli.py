"""The `lci` command (this worktree's code, in a subprocess) against the local stack: configure
once and work from the config file alone, session ls / rm, file rm, download into a folder,
--save-images, timeouts in seconds with their exit codes."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import API_KEYS, REPO_ROOT, LocalStack

pytestmark = pytest.mark.e2e

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _lci(
    stack: LocalStack, home: Path, *args: str, stdin: str = "", key_in_env: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": stack.env()["PATH"],
        "PYTHONPATH": str(REPO_ROOT / "client"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
    }
    if key_in_env:
        env.update(LCI_ENDPOINT=stack.endpoint, LCI_API_KEY=API_KEYS[0])
    return subprocess.run(
        [sys.executable, "-m", "lci.cli", *args],
        input=stdin,
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_configure_once_then_sessions_files_and_images_from_the_config_file(local_stack, tmp_path):
    home = tmp_path
    configured = _lci(
        local_stack, home, "configure", "--endpoint", local_stack.endpoint, "--api-key", API_KEYS[0]
    )
    assert configured.returncode == 0, configured.stderr
    config = home / "config" / "lci" / "config.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    created = _lci(local_stack, home, "session", "new")  # no LCI_* variables from here on
    assert created.returncode == 0, created.stderr
    session_id = created.stdout.strip()
    listed = _lci(local_stack, home, "session", "ls")
    assert session_id in listed.stdout, listed.stdout + listed.stderr

    (home / "data.csv").write_text("a,b\n1,2\n")
    assert _lci(local_stack, home, "upload", "data.csv", "--session", session_id).returncode == 0
    fetched = _lci(local_stack, home, "download", "data.csv", "copies/", "--session", session_id)
    assert fetched.returncode == 0, fetched.stderr
    assert (home / "copies" / "data.csv").read_text() == "a,b\n1,2\n"
    removed = _lci(local_stack, home, "rm", "data.csv", "--session", session_id)
    assert removed.returncode == 0, removed.stderr
    assert _lci(local_stack, home, "ls", "--session", session_id).stdout.strip() == "(no files)"

    plotted = _lci(
        local_stack,
        home,
        "run",
        "-",
        "--session",
        session_id,
        "--save-images",
        "images",
        stdin="import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nprint('drawn')",
    )
    assert plotted.returncode == 0, plotted.stderr
    assert plotted.stdout == "drawn\n"
    (image,) = (home / "images").iterdir()
    assert image.read_bytes().startswith(PNG_SIGNATURE)
    assert f"[image saved: images/{image.name}]" in plotted.stderr

    assert _lci(local_stack, home, "session", "rm", session_id).returncode == 0
    assert "no sessions" in _lci(local_stack, home, "session", "ls").stdout


def test_timeouts_are_seconds_with_their_exit_codes(local_stack, tmp_path):
    refused = _lci(local_stack, tmp_path, "run", "-", "--timeout", "0", stdin="1", key_in_env=True)
    assert refused.returncode == 2 and "--timeout: must be more than 0 seconds" in refused.stderr

    timed_out = _lci(
        local_stack,
        tmp_path,
        "run",
        "-",
        "--timeout",
        "1",
        stdin="import time\ntime.sleep(20)",
        key_in_env=True,
    )
    assert timed_out.returncode == 4, timed_out.stderr
    assert "time limit of 1 s" in timed_out.stderr and " ms" not in timed_out.stderr

    too_long = _lci(
        local_stack, tmp_path, "run", "-", "--timeout", "100000", stdin="1", key_in_env=True
    )
    assert too_long.returncode == 3
    assert "--timeout must be at most 300 s" in too_long.stderr

    version = _lci(local_stack, tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("lci ")

"""`GET /v1/diagnostics` and `lci doctor`: the executor environment says which protections hold
(against a deployed API with `make smoke`: the first deploy tells its owner the truth)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.conftest import EXECUTOR_PROTECTION_CHECKS as CHECKS

from .conftest import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_diagnostics_report_every_protection_of_the_executor_environment(local_stack):
    answer = httpx.get(
        f"{local_stack.endpoint}/v1/diagnostics",
        headers={"x-api-key": local_stack.keys[0]},
        timeout=180,
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["executor"] is not None, report["executor_error"]
    checks = report["executor"]["checks"]
    assert set(checks) == CHECKS
    assert checks["rlimits"]["ok"] is True, checks["rlimits"]["detail"]
    unauthenticated = httpx.get(f"{local_stack.endpoint}/v1/diagnostics", timeout=60)
    assert unauthenticated.status_code == 403


def test_lci_doctor_prints_the_report(local_stack):
    env = {**local_stack.env(), "PYTHONPATH": str(REPO_ROOT / "client")}  # this tree's lci
    doctor = subprocess.run(
        [sys.executable, "-m", "lci.cli", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert doctor.returncode == 0, doctor.stderr
    for name in CHECKS:
        assert name in doctor.stdout
    assert "did not take effect" in doctor.stdout or "every protection" in doctor.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "lci.cli", "doctor", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert set(json.loads(as_json.stdout)["executor"]["checks"]) == CHECKS

"""What `make smoke` proves about a deployed API (and every `make test` about the local stack):
a session keeps state, files travel through real presigned URLs, preinstalled packages import,
a timeout is enforced, a run answered 202 can be polled to its end, and usage counts runs
against the quotas /v1/usage reports."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.e2e


def test_a_session_keeps_its_variables_between_runs(client):
    session = client.create_session()
    assert client.execute("total = 40", session_id=session.session_id).success
    result = client.execute("total + 2", session_id=session.session_id)
    assert result.success, result.raw
    assert result.text == "42"


def test_files_go_up_and_come_back_through_presigned_urls(client):
    session = client.create_session()
    client.upload_file(session.session_id, b"a,b\n1,2\n", "in/data.csv")
    result = client.execute(
        "import os\nrows = open('in/data.csv').read().splitlines()\n"
        "os.makedirs('out', exist_ok=True)\n"
        "open('out/count.txt', 'w').write(str(len(rows)))",
        session_id=session.session_id,
    )
    assert result.success, result.raw
    written = {f.path: f for f in result.files}
    assert written["out/count.txt"].download_url
    assert httpx.get(written["out/count.txt"].download_url, timeout=60).content == b"2"
    assert client.download_file(session.session_id, "out/count.txt") == b"2"


def test_listed_packages_import(client):
    listed = {package.name.lower() for package in client.packages().packages}
    assert {"numpy", "pandas"} <= listed
    result = client.execute("import numpy, pandas\nint(numpy.arange(4).sum())")
    assert result.success, result.raw
    assert result.text == "6"


def test_a_run_over_its_timeout_is_stopped_with_a_timeout_status(client):
    session = client.create_session()
    result = client.execute(
        "import time\ntime.sleep(60)", session_id=session.session_id, timeout_ms=2000
    )
    assert result.status == "timeout", result.raw
    assert not result.success
    assert result.error is not None


def test_a_run_answered_202_is_polled_to_its_result(client):
    session = client.create_session()
    started = client.execute(
        "import time\ntime.sleep(1)\nprint('done')", session_id=session.session_id, wait=False
    )
    assert started.status == "running"
    assert started.execution_id
    finished = client.wait_for(started.execution_id, timeout=120)
    assert finished.success, finished.raw
    assert finished.stdout == "done\n"


def test_usage_counts_runs_against_the_reported_quotas(client):
    before = client.usage()
    assert before.period
    assert set(before.quota) >= {"executions", "compute_ms"}
    assert client.execute("1 + 1").success
    after = client.usage()
    assert after.executions >= before.executions + 1
    for name, limit in after.quota.items():
        if limit:  # 0: unlimited
            assert getattr(after, name) <= limit

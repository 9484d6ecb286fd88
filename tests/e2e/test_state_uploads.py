"""Issue 16: a session run that changes no variable uploads no snapshot, through the local stack
over HTTP. The stack counts the POST uploads its S3 front stored (local/aws_calls.py)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import LocalStack


@pytest.mark.local_only
def test_runs_that_change_no_variable_keep_the_committed_snapshot(
    local_stack: LocalStack, client
) -> None:
    session = client.create_session().session_id
    state = f"sessions/{session}/state/"
    assert client.execute("x = 1", session_id=session).success
    assert local_stack.uploads(state) == 1
    for _ in range(3):
        assert client.execute("print(x)", session_id=session).stdout == "1\n"
    assert local_stack.uploads(state) == 1  # the committed version is still the first upload
    detail = client.get_session(session)
    assert detail.execution_count == 4
    assert [(v.name, v.type) for v in detail.variables] == [("x", "int")]

    # A fork copies the snapshot the session's committed version names: the first upload.
    child = client.fork_session(session).session_id
    assert client.execute("print(x)", session_id=child).stdout == "1\n"

    # A new worker restores the committed version: what the last upload holds.
    crashed = client.execute("import os\nos._exit(1)", session_id=session)
    assert not crashed.success
    assert client.execute("print(x)", session_id=session).stdout == "1\n"
    assert client.execute("x += 1", session_id=session).success
    uploads = local_stack.uploads(state)
    assert client.execute("print(x)", session_id=session).stdout == "2\n"
    assert local_stack.uploads(state) == uploads
    assert client.get_session(session).execution_count == 8

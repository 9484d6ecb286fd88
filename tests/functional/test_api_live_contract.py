"""Live execution's API contract with a fake executor (moto mock_aws): the channel each
invocation carries, the output so far from chunks in S3 (newest base and the deltas after it,
caps applied), interrupt requests (202, 409 once finished, 404 for others), and forks (a busy
parent forks from its last commit; notebook outputs kept in S3 are copied too)."""

from __future__ import annotations

from typing import Any

import boto3

from lambdas.api.service.common import INLINE_JSON_MAX_BYTES
from lambdas.shared import limits, live
from tests.functional.conftest import BUCKET, ApiClient, FakeExecutor, ok_result, wait_finished


def _put_chunk(execution_id: str, seq: int, base: bool, **document: Any) -> None:
    body = live.encode_chunk({"v": live.CHUNK_VERSION, "seq": seq, "base": base, **document})
    boto3.client("s3").put_object(
        Bucket=BUCKET,
        Key=f"executions/{execution_id}/out/{live.chunk_name(seq, base)}",
        Body=body,
    )


def _start_held_run(api: ApiClient, fake_executor: FakeExecutor) -> str:
    """A run of `x` in a new session that stays running until the test releases the executor."""
    sid = api.new_session()
    fake_executor.block()
    response = api.post(f"/v1/sessions/{sid}/execute", {"code": "x", "wait": False})
    return str(response.json()["execution_id"])


def test_every_invocation_carries_a_live_channel_for_its_own_prefix(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    sid = api.new_session()
    assert api.post(f"/v1/sessions/{sid}/execute", {"code": "1"}).status == 200
    invocation = fake_executor.invocations[-1]
    channel = invocation.live
    assert channel is not None
    assert channel.output.key_prefix == f"executions/{invocation.execution_id}/out/"
    assert channel.output.max_bytes == limits.MAX_LIVE_CHUNK_BYTES
    assert f"executions/{invocation.execution_id}/interrupt" in channel.interrupt_url


def test_a_running_execution_shows_the_newest_base_and_the_deltas_after_it(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    execution_id = _start_held_run(api, fake_executor)
    assert api.get(f"/v1/executions/{execution_id}").json()["stdout"] == ""
    _put_chunk(execution_id, 0, True, stdout="old\n", outputs=[])
    _put_chunk(
        execution_id,
        8,
        True,
        stdout="a\n",
        stderr="",
        outputs=[{"output_type": "stream", "name": "stdout", "text": "a\n"}],
    )
    _put_chunk(execution_id, 9, False, records=[["stderr", "b\n"]])
    _put_chunk(
        execution_id,
        10,
        False,
        records=[["stdout", "x" * (limits.MAX_STREAM_BYTES + 10)]],
        usage={"wall_ms": 1500, "cpu_ms": 20, "peak_memory_mb": 80.5},
    )
    running = api.get(f"/v1/executions/{execution_id}").json()
    assert running["status"] == "running"
    assert running["stdout"].startswith("a\nxxx") and "old" not in running["stdout"]
    assert len(running["stdout"]) == limits.MAX_STREAM_BYTES and running["stdout_truncated"]
    assert running["stderr"] == "b\n"
    assert [o["name"] for o in running["outputs"]] == ["stdout", "stderr", "stdout"]
    assert running["usage"] == {"wall_ms": 1500, "cpu_ms": 20, "peak_memory_mb": 80.5}
    fake_executor.release.set()
    finished = wait_finished(api, execution_id)
    assert finished["stdout"] == "ran: x\n"  # the result, not the chunks, once it is over


def test_interrupt_requests_a_running_execution_only(
    api: ApiClient, other_api: ApiClient, fake_executor: FakeExecutor
) -> None:
    execution_id = _start_held_run(api, fake_executor)
    assert other_api.post(f"/v1/executions/{execution_id}/interrupt").status == 404
    assert api.post("/v1/executions/missing/interrupt").status == 404
    accepted = api.post(f"/v1/executions/{execution_id}/interrupt")
    assert accepted.status == 202 and accepted.json()["interrupt_requested"] is True
    marker = boto3.client("s3").get_object(
        Bucket=BUCKET, Key=f"executions/{execution_id}/interrupt"
    )
    assert b"requested_at" in marker["Body"].read()
    fake_executor.release.set()
    wait_finished(api, execution_id)
    finished = api.post(f"/v1/executions/{execution_id}/interrupt")
    assert finished.status == 409 and finished.error_code == "EXECUTION_FINISHED"


def test_a_busy_parent_forks_from_its_last_commit(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    parent = api.new_session()
    assert api.post(f"/v1/sessions/{parent}/execute", {"code": "x = 1"}).status == 200
    boto3.client("s3").put_object(
        Bucket=BUCKET, Key=f"sessions/{parent}/state/1.pkl", Body=b"committed"
    )
    fake_executor.block()
    running = api.post(f"/v1/sessions/{parent}/execute", {"code": "x = 2", "wait": False})
    assert running.status == 202
    assert fake_executor.started.wait(30)
    forked = api.post(f"/v1/sessions/{parent}/fork")
    assert forked.status == 201, forked.text
    child = forked.json()["session_id"]
    assert forked.json()["status"] == "idle" and forked.json()["execution_count"] == 1
    copied = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"sessions/{child}/state/1.pkl")
    assert copied["Body"].read() == b"committed"
    fake_executor.release.set()
    wait_finished(api, running.json()["execution_id"])
    assert api.post(f"/v1/sessions/{child}/execute", {"code": "x"}).status == 200
    state = fake_executor.invocations[-1].state
    assert state.version == 1 and f"sessions/{child}/state/1.pkl" in state.download_url


def test_a_fork_keeps_notebook_outputs_stored_in_s3_after_the_parent_goes(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    from lambdas.shared.models import ExecutorResponse, StateReport

    big = "y" * (INLINE_JSON_MAX_BYTES + 1)

    def large_output(invocation: Any) -> Any:
        return ExecutorResponse(
            result=ok_result(
                invocation,
                session_id=invocation.session_id,
                stdout=big,
                outputs=[{"output_type": "stream", "name": "stdout", "text": big}],
            ),
            state=StateReport(),
        )

    fake_executor.behaviour = large_output
    parent = api.new_session()
    assert api.post(f"/v1/sessions/{parent}/execute", {"code": "print(y)"}).status == 200
    child = api.post(f"/v1/sessions/{parent}/fork", {"ttl_seconds": 600}).json()["session_id"]
    assert api.delete(f"/v1/sessions/{parent}").status == 204
    cells = api.get(f"/v1/sessions/{child}/notebook").json()["cells"]
    assert len(cells) == 1 and cells[0]["outputs"][0]["text"] == big


def test_a_running_view_fits_one_proxy_response_whatever_it_printed(
    api: ApiClient, fake_executor: FakeExecutor
) -> None:
    import json

    execution_id = _start_held_run(api, fake_executor)
    quotes = '"\\' * (limits.MAX_STREAM_BYTES // 2)  # every character escaped, twice over
    _put_chunk(
        execution_id,
        0,
        True,
        stdout=quotes,
        stderr="",
        outputs=[{"output_type": "stream", "name": "stdout", "text": quotes}],
    )
    response = api.get(f"/v1/executions/{execution_id}")
    running = response.json()
    assert len(json.dumps(response.text)) <= limits.API_RESPONSE_BUDGET_BYTES
    assert running["stdout_truncated"] is True and running["stdout"].startswith('"\\"\\')
    fake_executor.release.set()
    wait_finished(api, execution_id)

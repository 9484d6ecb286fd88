"""The executor while a cell runs (issue 13), against a moto server over HTTP: output published
as chunks the API can fold, an interrupt that keeps the namespace, a cell that ignores it
meeting its timeout, the receipt, and a worker that never sees the live channel."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from lambdas.executor.host.engine import Engine
from lambdas.shared import limits, live
from tests.functional.executor_helpers import checked, invocation

BUCKET = "lci-live-tests"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            patch.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        client = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
        client.create_bucket(Bucket=BUCKET)
        try:
            yield client
        finally:
            server.stop()


def _live(s3: Any, execution_id: str) -> dict[str, Any]:
    prefix = f"executions/{execution_id}/out/"
    post = s3.generate_presigned_post(
        Bucket=BUCKET,
        Key=prefix + "${filename}",
        Conditions=[["content-length-range", 0, limits.MAX_LIVE_CHUNK_BYTES]],
        ExpiresIn=600,
    )
    fields = {name: str(value) for name, value in post["fields"].items() if name != "key"}
    return {
        "output": {
            "url": post["url"],
            "fields": fields,
            "key_prefix": prefix,
            "max_bytes": limits.MAX_LIVE_CHUNK_BYTES,
        },
        "interrupt_url": s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": BUCKET, "Key": f"executions/{execution_id}/interrupt"},
            ExpiresIn=600,
        ),
    }


def _view(s3: Any, execution_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    prefix = f"executions/{execution_id}/out/"
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix, MaxKeys=2 * limits.LIVE_BASE_EVERY)
    names = [item["Key"][len(prefix) :] for item in listing.get("Contents", [])]
    chunks = [
        live.decode_chunk(s3.get_object(Bucket=BUCKET, Key=prefix + name)["Body"].read())
        for name in live.chunks_to_read(names)
    ]
    folded, usage = live.fold([chunk for chunk in chunks if chunk is not None])
    return folded.fields(), usage


def _live_invocation(s3: Any, code: str, session_id: str, **fields: Any) -> dict[str, Any]:
    event = invocation(code, session_id=session_id, **fields)
    event["live"] = _live(s3, event["execution_id"])
    return event


def _run_in_thread(engine: Engine, event: dict[str, Any]) -> tuple[threading.Thread, dict]:
    answer: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: answer.update(checked(engine.invoke(event))))
    thread.start()
    return thread, answer


def test_output_shows_while_the_cell_runs_in_order(s3: Any, engine: Engine) -> None:
    event = _live_invocation(
        s3,
        "import sys, time\n"
        "for i in range(6):\n"
        "    print('out', i)\n"
        "    print('err', i, file=sys.stderr)\n"
        "    time.sleep(0.5)\n",
        "s-live-order",
    )
    thread, answer = _run_in_thread(engine, event)
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while thread.is_alive() and time.monotonic() < deadline:
        fields, usage = _view(s3, event["execution_id"])
        if "out 1" in fields["stdout"] and not seen:
            seen = {"fields": fields, "usage": usage, "running": thread.is_alive()}
        time.sleep(0.1)
    thread.join()
    assert seen and seen["running"], "no output was visible while the cell ran"
    assert "out 5" not in seen["fields"]["stdout"]
    assert seen["usage"]["wall_ms"] > 0
    names = [(o["name"], o["text"]) for o in seen["fields"]["outputs"]]
    assert names[:4] == [("stdout", "out 0\n"), ("stderr", "err 0\n"), ("stdout", "out 1\n"),
                         ("stderr", "err 1\n")]  # fmt: skip
    final, _ = _view(s3, event["execution_id"])
    result = answer["result"]
    assert result["status"] == "ok"
    assert final["stdout"] == result["stdout"] and final["outputs"] == result["outputs"]


def test_a_quick_run_publishes_nothing_and_has_a_receipt(s3: Any, engine: Engine) -> None:
    event = _live_invocation(s3, "print(2 + 2)", "s-live-quick")
    result = checked(engine.invoke(event))["result"]
    assert result["stdout"] == "4\n"
    assert set(result["usage"]) == {"wall_ms", "cpu_ms", "peak_memory_mb"}
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"executions/{event['execution_id']}/")
    assert listing.get("KeyCount", 0) == 0


def test_an_interrupt_keeps_the_namespace_of_the_cell(s3: Any, engine: Engine) -> None:
    session = "s-live-interrupt"
    assert (
        checked(engine.invoke(invocation("before = 1", session_id=session)))["result"]["status"]
        == "ok"
    )
    event = _live_invocation(
        s3,
        "import time\nduring = 'set'\nfor step in range(600):\n    time.sleep(0.1)\n",
        session,
        execution_count=2,
    )
    thread, answer = _run_in_thread(engine, event)
    time.sleep(1.0)
    requested = time.monotonic()
    s3.put_object(Bucket=BUCKET, Key=f"executions/{event['execution_id']}/interrupt", Body=b"{}")
    thread.join(30)
    assert not thread.is_alive()
    assert time.monotonic() - requested < 5
    result = answer["result"]
    assert result["status"] == "interrupted" and result["success"] is False
    assert result["error"]["name"] == "KeyboardInterrupt"
    assert "worker.py" not in "".join(result["error"]["traceback"])
    after = checked(engine.invoke(invocation("print(before, during, step > 0)",
                                             session_id=session, execution_count=3)))  # fmt: skip
    assert after["result"]["stdout"] == "1 set True\n"


def test_a_cell_that_ignores_the_interrupt_meets_its_timeout(s3: Any, engine: Engine) -> None:
    event = _live_invocation(
        s3,
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)\n",
        "s-live-stubborn",
        timeout_ms=3000,
    )
    thread, answer = _run_in_thread(engine, event)
    time.sleep(0.8)
    s3.put_object(Bucket=BUCKET, Key=f"executions/{event['execution_id']}/interrupt", Body=b"{}")
    thread.join(30)
    assert answer["result"]["status"] == "timeout"


def test_the_receipt_shows_a_large_array(s3: Any, engine: Engine) -> None:
    event = _live_invocation(
        s3,
        "import numpy as np\nblock = np.ones(32 * 1024 * 1024 // 8)\nfloat(block.sum())",
        "s-live-receipt",
    )
    usage = checked(engine.invoke(event))["result"]["usage"]
    assert usage["peak_memory_mb"] >= 30
    assert usage["wall_ms"] >= 0 and usage["cpu_ms"] >= 0


@pytest.mark.attack(
    "presigned URLs",
    "user code looks for the live-output and interrupt URLs of its run",
    "never sent to the worker: only the trusted parent holds them",
)
def test_the_worker_never_sees_the_live_channel(
    s3: Any, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lambdas.executor import protocol

    sent: list[bytes] = []
    encode = protocol.encode_run_request

    def spy(*args: Any, **kwargs: Any) -> bytes:
        frame = encode(*args, **kwargs)
        sent.append(frame)
        return frame

    monkeypatch.setattr(protocol, "encode_run_request", spy)
    event = _live_invocation(s3, "1", "s-live-private")
    checked(engine.invoke(event))
    bodies = [frame[4:].decode() for frame in sent]  # past the 4-byte length header
    assert bodies and all("live" not in json.loads(body)["inv"] for body in bodies)
    assert event["live"]["interrupt_url"] not in bodies[0]

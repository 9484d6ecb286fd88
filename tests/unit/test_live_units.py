"""Live execution's building blocks: chunk names and folding (lambdas/shared/live.py), the
output mirror's live records, and the parent's RunMonitor (cadence, bases after a lost chunk,
the last chunk, interrupts, the receipt) against a fake transport and a fake clock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from lambdas.executor import protocol
from lambdas.executor.host import live as host_live
from lambdas.executor.host import usage as host_usage
from lambdas.executor.host.channel import CappedBuffer
from lambdas.shared import limits, live


def test_chunk_names_sort_newest_first_and_say_base_or_delta() -> None:
    names = [live.chunk_name(seq, base=seq % 8 == 0) for seq in range(20)]
    assert sorted(names) == list(reversed(names))
    assert live.parse_chunk_name(names[16]) == (16, True)
    assert live.parse_chunk_name(names[17]) == (17, False)
    assert live.parse_chunk_name("interrupt") is None
    # The newest base and the deltas after it, oldest first.
    assert live.chunks_to_read(sorted(names)) == names[16:]
    assert live.chunks_to_read(sorted(names[17:])) == []  # deltas alone show nothing


def test_records_fold_like_a_finished_cell_with_caps() -> None:
    output = live.LiveOutput(stream_cap=10, display_cap=40)
    assert output.add(["stdout", "a"]) == ["stdout", "a"]
    output.add(["stdout", "b"])
    output.add(["stderr", "E"])
    output.add(["display", {"output_type": "display_data", "data": {"text/plain": "D"}}])
    assert output.add(["display", {"output_type": "display_data", "data": {"x": "y" * 50}}]) is None
    output.add(["stdout", "c"])
    assert output.add(["stdout", "wörld and more"]) == ["stdout", "wörld "]
    assert output.add(["bogus"]) is None and output.add("junk") is None
    fields = output.fields()
    assert fields["stdout"] == "abcwörld " and fields["stdout_truncated"] is True
    assert [(o["output_type"], o.get("text")) for o in fields["outputs"]] == [
        ("stream", "ab"), ("stream", "E"), ("display_data", None), ("stream", "cwörld ")
    ]  # fmt: skip


def test_a_base_folds_back_to_the_same_output_and_deltas_continue_it() -> None:
    writer = live.LiveOutput(stream_cap=100)
    for record in (["stdout", "one\n"], ["clear"], ["stderr", "two\n"], ["stdout", "3"]):
        writer.add(record)
    base = {"v": 1, "seq": 0, "base": True, "usage": {"wall_ms": 5}, **writer.fields()}
    delta = {"v": 1, "seq": 1, "base": False, "usage": {"wall_ms": 9}, "records": [["stdout", "4"]]}
    folded, usage = live.fold([base, delta])
    writer.add(["stdout", "4"])
    assert folded.fields() == writer.fields()
    assert folded.fields()["stdout"] == "one\n34"  # printed before clear_output: in the stream
    assert [o.get("text") for o in folded.fields()["outputs"]] == ["two\n", "34"]
    assert usage == {"wall_ms": 9}


def test_a_reader_applies_the_caps_whatever_a_chunk_claims() -> None:
    base = {
        "v": 1,
        "base": True,
        "stdout": "x" * 50,
        "stdout_truncated": "yes",
        "outputs": [{"output_type": "stream", "name": "stdout", "text": "x" * 50}, 7, {}],
    }
    folded, usage = live.fold([base], stream_cap=10)
    fields = folded.fields()
    assert fields["stdout"] == "x" * 10 and fields["stdout_truncated"] is True
    assert fields["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "x" * 10}]
    assert usage is None
    assert live.decode_chunk(b"not json") is None and live.decode_chunk(b'{"v": 99}') is None


def test_the_mirror_carries_displays_and_clears_for_the_live_view_only() -> None:
    fd = protocol.OutputMirror.create_fd()
    try:
        mirror = protocol.OutputMirror.attach(fd)
        mirror.reset()
        mirror.append("stdout", "a")
        display = {"output_type": "display_data", "data": {"text/plain": "D"}, "metadata": {}}
        mirror.append_display(display)
        records, offset = protocol.OutputMirror.read_records(fd, 0)
        assert records == [("stdout", "a"), ("display", display)]
        mirror.append_clear()
        mirror.append("stderr", "b")
        more, offset = protocol.OutputMirror.read_records(fd, offset)
        assert more == [("clear", None), ("stderr", "b")]
        assert protocol.OutputMirror.read_records(fd, offset) == ([], offset)
        # A dead worker's cell shows its streams only, as before.
        assert protocol.OutputMirror.read(fd) == [("stdout", "a"), ("stderr", "b")]
        # The parent clears it before a run: nothing of the run before is read as this one's.
        protocol.OutputMirror.clear_fd(fd)
        assert protocol.OutputMirror.read_records(fd, 0) == ([], 0)
    finally:
        os.close(fd)


class FakeTransport:
    def __init__(self) -> None:
        self.chunks: dict[str, dict[str, Any]] = {}
        self.fail_next = False
        self.interrupt = False

    def publish(self, name: str, body: bytes) -> bool:
        if self.fail_next:
            self.fail_next = False
            return False
        chunk = live.decode_chunk(body)
        assert chunk is not None
        self.chunks[name] = chunk
        return True

    def interrupt_requested(self) -> bool:
        return self.interrupt

    def view(self) -> dict[str, Any]:
        names = live.chunks_to_read(sorted(self.chunks))
        folded, _ = live.fold([self.chunks[name] for name in names])
        return folded.fields()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _wait_for(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def mirror_fd() -> Any:
    fd = protocol.OutputMirror.create_fd()
    yield fd
    os.close(fd)


def _monitor(mirror_fd: int, transport: FakeTransport, clock: Clock) -> host_live.RunMonitor:
    monitor = host_live.RunMonitor(os.getpid(), mirror_fd, 1000, transport, clock)
    monitor.started()
    return monitor


def test_a_quick_run_publishes_nothing(mirror_fd: int) -> None:
    transport, clock = FakeTransport(), Clock()
    monitor = _monitor(mirror_fd, transport, clock)
    protocol.OutputMirror.attach(mirror_fd).append("stdout", "4\n")
    out, err = CappedBuffer(100), CappedBuffer(100)
    monitor.tick(out, err)
    assert monitor.wait_limit() == pytest.approx(limits.LIVE_FIRST_PUBLISH_SECONDS)
    monitor.cell_done()
    usage = monitor.finish(out, err)
    assert transport.chunks == {}
    assert usage["wall_ms"] >= 0 and usage["peak_memory_mb"] > 0


def test_output_is_published_in_chunks_that_fold_back_in_order(mirror_fd: int) -> None:
    transport, clock = FakeTransport(), Clock()
    monitor = _monitor(mirror_fd, transport, clock)
    worker_side = protocol.OutputMirror.attach(mirror_fd)
    out, err = CappedBuffer(100), CappedBuffer(100)
    worker_side.append("stdout", "first\n")
    clock.now += limits.LIVE_FIRST_PUBLISH_SECONDS
    monitor.tick(out, err)
    _wait_for(lambda: len(transport.chunks) == 1)
    assert transport.view()["stdout"] == "first\n"
    worker_side.append("stderr", "oops\n")
    err.add(b"from C\n")  # what the worker wrote straight to its fd
    clock.now += 0.1
    monitor.tick(out, err)  # not due yet: one chunk per interval
    assert len(transport.chunks) == 1
    clock.now += limits.LIVE_PUBLISH_INTERVAL_SECONDS
    monitor.tick(out, err)
    _wait_for(lambda: len(transport.chunks) == 2)
    assert live.parse_chunk_name(min(transport.chunks)) == (1, False)  # a delta
    assert transport.view()["stderr"] == "oops\nfrom C\n"
    # A lost chunk: the next one repeats everything.
    transport.fail_next = True
    worker_side.append("stdout", "lost\n")
    clock.now += limits.LIVE_PUBLISH_INTERVAL_SECONDS
    monitor.tick(out, err)
    _wait_for(lambda: not monitor._relay.busy)  # type: ignore[union-attr]
    worker_side.append("stdout", "after\n")
    clock.now += limits.LIVE_PUBLISH_INTERVAL_SECONDS
    monitor.tick(out, err)
    _wait_for(lambda: len(transport.chunks) == 3)
    assert live.parse_chunk_name(min(transport.chunks)) == (3, True)
    view = transport.view()
    assert view["stdout"] == "first\nlost\nafter\n"
    assert [o.get("name") for o in view["outputs"]] == ["stdout", "stderr", "stdout"]
    # The end of the run: a last chunk, a base, with everything.
    worker_side.append("stdout", "last\n")
    monitor.finish(out, err)
    newest = transport.chunks[min(transport.chunks)]
    assert newest["base"] is True and newest["final"] is True
    assert transport.view()["stdout"] == "first\nlost\nafter\nlast\n"


def test_every_eighth_chunk_is_a_base(mirror_fd: int) -> None:
    transport, clock = FakeTransport(), Clock()
    monitor = _monitor(mirror_fd, transport, clock)
    worker_side = protocol.OutputMirror.attach(mirror_fd)
    out, err = CappedBuffer(100), CappedBuffer(100)
    clock.now += limits.LIVE_FIRST_PUBLISH_SECONDS
    for index in range(limits.LIVE_BASE_EVERY + 2):
        worker_side.append("stdout", f"{index}\n")
        monitor.tick(out, err)
        _wait_for(lambda count=index + 1: len(transport.chunks) == count)
        _wait_for(lambda: not monitor._relay.busy)  # type: ignore[union-attr]
        clock.now += limits.LIVE_PUBLISH_INTERVAL_SECONDS
    bases = [live.parse_chunk_name(name) for name in transport.chunks]
    assert sorted(seq for seq, base in bases if base) == [0, limits.LIVE_BASE_EVERY]  # type: ignore[misc]
    assert len(live.chunks_to_read(sorted(transport.chunks))) == 2
    monitor.finish(out, err)


SIGINT_COUNTER = """
import signal, sys, time
count = 0
def note(*_):
    global count
    count += 1
    print(count, flush=True)
signal.signal(signal.SIGINT, note)
print("ready", flush=True)
time.sleep(30)
"""


def test_an_interrupt_request_becomes_sigint_resent_while_the_cell_goes_on(
    mirror_fd: int,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", SIGINT_COUNTER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        transport, clock = FakeTransport(), Clock()
        monitor = host_live.RunMonitor(child.pid, mirror_fd, 1000, transport, clock)
        monitor.started()
        out, err = CappedBuffer(100), CappedBuffer(100)
        clock.now += limits.LIVE_FIRST_PUBLISH_SECONDS
        monitor.tick(out, err)
        assert not monitor.interrupted
        transport.interrupt = True
        _wait_for(lambda: monitor._relay.interrupt_seen)  # type: ignore[union-attr]
        clock.now += host_live.TICK_SECONDS
        monitor.tick(out, err)
        assert monitor.interrupted and child.stdout.readline() == "1\n"
        clock.now += 0.2
        monitor.tick(out, err)  # too soon to ask again
        clock.now += limits.LIVE_INTERRUPT_RESEND_SECONDS
        monitor.tick(out, err)
        assert child.stdout.readline() == "2\n"
        monitor.cell_done()
        clock.now += limits.LIVE_INTERRUPT_RESEND_SECONDS
        monitor.tick(out, err)  # the cell is over: nothing more is sent
        monitor.finish(out, err)
        response: dict[str, Any] = {
            "result": {"status": "error", "error": {"name": "KeyboardInterrupt"}}
        }
        monitor.apply(response)
        assert response["result"]["status"] == "interrupted"
        assert set(response["result"]["usage"]) == {"wall_ms", "cpu_ms", "peak_memory_mb"}
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.stdout.read() == ""


def test_the_receipt_counts_children_and_the_peak_since_the_start() -> None:
    hog = (
        "import subprocess, sys\n"
        "subprocess.run([sys.executable, '-c', 'sum(range(3 * 10**7))'])\n"
        "block = bytearray(64 * 1024 * 1024)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", hog], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        meter = host_usage.UsageMeter(child.pid)
        meter.start()
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        usage = meter.stop()
        assert usage["cpu_ms"] >= 100  # the reaped child's CPU is in the worker's cutime
        assert usage["peak_memory_mb"] >= 64
        assert meter.sample() == usage  # frozen once stopped
    finally:
        child.kill()
        child.wait()

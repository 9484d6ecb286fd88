"""Executor building blocks: output capture and caps, ANSI stripping, snapshot filtering,
workspace path safety and scanning, JSON framing, shaping untrusted worker output, and the
zygote's immortal heap."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from lambdas.executor import protocol
from lambdas.executor.host import channel, engine, frames, results
from lambdas.executor.sandbox import capture as cell_capture
from lambdas.executor.sandbox import heap, kernel, snapshot, workspace
from lambdas.shared.models import ExecutorResponse
from tests.conftest import REPO_ROOT


def test_stream_capture_caps_bytes_and_flags_truncation() -> None:
    capture = cell_capture.CellCapture(stream_bytes=10, result_bytes=1000)
    capture.add_stream("stdout", "hello ")
    capture.add_stream("stdout", "wörld and more")
    capture.add_stream("stderr", "e")
    assert capture.stream_text("stdout").encode() == b"hello w\xc3\xb6r"
    assert capture.truncated == {"stdout": True, "stderr": False}
    capture.add_stream("stdout", "dropped")
    assert capture.stream_text("stdout") == "hello wör"


def test_consecutive_stream_writes_merge_into_one_output_in_order() -> None:
    capture = cell_capture.CellCapture(100, 10_000)
    capture.add_stream("stdout", "a")
    capture.add_stream("stdout", "b")
    capture.add_display({"text/plain": "D"}, None)
    capture.add_stream("stdout", "c")
    capture.set_result({"text/plain": "1"}, {}, 3)
    outputs = capture.finished_outputs()
    assert [o["output_type"] for o in outputs] == [
        "stream", "display_data", "stream", "execute_result"
    ]  # fmt: skip
    assert outputs[0]["text"] == "ab" and outputs[2]["text"] == "c"
    assert outputs[3]["execution_count"] == 3 and capture.result == {"text/plain": "1"}


def test_display_outputs_beyond_the_result_budget_are_dropped_with_a_warning() -> None:
    # Room for the first output and its overhead, not for the second.
    capture = cell_capture.CellCapture(
        stream_bytes=10, result_bytes=20 + cell_capture.OUTPUT_OVERHEAD_BYTES + 100
    )
    capture.add_display({"image/png": "x" * 50}, None)
    capture.add_display({"image/png": "y" * 200}, None)
    assert len(capture.outputs) == 1
    assert capture.warnings and "size limit" in capture.warnings[0]


def test_errors_lose_their_colour_codes() -> None:
    capture = cell_capture.CellCapture(100, 10_000)
    capture.set_error("ValueError", "bad", ["\x1b[0;31mValueError\x1b[0m: bad"])
    assert capture.error == {"name": "ValueError", "value": "bad", "traceback": ["ValueError: bad"]}
    assert cell_capture.strip_ansi("\x1b[1;32mok\x1b[0m\x1b]") == "ok"


def test_repeated_traceback_entries_are_collapsed() -> None:
    entries = ["head", *["frame f"] * 500, "tail"]
    assert cell_capture.collapse_repeats(entries) == [
        "head", "frame f", "frame f", "frame f",
        "[... the previous entry repeated 497 more times]", "tail",
    ]  # fmt: skip


def test_snapshot_skips_ipython_names_and_keeps_modules_by_name() -> None:
    import json as json_module

    hidden_exit = object()
    namespace = {
        "In": [],
        "Out": {},
        "_": 1,
        "_i3": "x",
        "_7": 2,
        "__builtins__": {},
        "exit": hidden_exit,
        "js": json_module,
        "value": [1, 2],
        "lock": threading.Lock(),
    }
    dumped = snapshot.dump_namespace(namespace, {"exit": hidden_exit})
    assert dumped.dropped == ["lock"]
    restored, problems = snapshot.load_namespace(dumped.to_bytes())
    assert problems == []
    assert set(restored) == {"js", "value"}
    assert restored["js"] is json_module and restored["value"] == [1, 2]


def test_arrays_round_trip_out_of_band_and_stay_writable() -> None:
    import numpy as np

    array = np.arange(1000, dtype=np.float64)
    dumped = snapshot.dump_namespace({"arr": array, "n": 3}, {})
    assert dumped.size > array.nbytes  # the array's bytes travel as one raw buffer
    restored, _ = snapshot.load_namespace(dumped.to_bytes())
    assert np.array_equal(restored["arr"], array) and restored["n"] == 3
    restored["arr"][0] = 42.0  # writable after a restore
    assert snapshot.load_namespace(b"garbage")[1]


def test_a_snapshot_digest_changes_with_every_byte_and_every_listed_type() -> None:
    import numpy as np

    array = np.zeros(1000)
    lock = threading.Lock()

    def digest(**namespace: Any) -> snapshot.Digest:
        return snapshot.dump_namespace(namespace, {}).digest()

    base = digest(arr=array, n=1, f=lock)
    assert digest(arr=array, n=1, f=lock) == base  # same namespace, same digest
    array[500] = 1.0  # in place: only the out-of-band buffer differs
    changed = digest(arr=array, n=1, f=lock)
    assert changed.head == base.head and changed.whole != base.whole
    # Same bytes but for the listing: another unpicklable type under a dropped name.
    assert digest(arr=array, n=1, f=threading.RLock()).head != changed.head
    assert digest(arr=array, n=1.0, f=lock).head != changed.head
    assert digest(arr=array, n=1).head != changed.head  # f gone from the dropped names


def test_the_upload_hash_fed_the_chunks_gives_the_whole_digest() -> None:
    import numpy as np

    dumped = snapshot.dump_namespace({"arr": np.arange(100.0), "name": "x"}, {})
    sent = dumped.upload_hash()
    for chunk in dumped.chunks:  # what transfer.upload's observer is fed, in order
        sent.update(memoryview(chunk).cast("B"))
    assert sent.digest() == dumped.digest().whole


def test_a_rebound_ipython_name_is_user_data() -> None:
    hidden = {"exit": object()}
    assert snapshot.is_snapshot_name("exit", hidden, "my value")
    assert not snapshot.is_snapshot_name("exit", hidden, hidden["exit"])


@pytest.mark.parametrize(
    "cell",
    [
        "print(2+2)",
        "x = 1\ny = [x,\n     2]\nx + y[1]",
        "def f(a):\n    return a / 2\n",
        "'%d items' % 3",
        "a != b",
        "print('what?')",
        "%time x = 1",
        "x = %pwd",
        "!ls -l",
        "files = !ls",
        "len?",
        "??len",
        "/print 1 2",
        ",print a b",
        ";print a b",
        "%%bash\necho hi",
        ">>> 1 + 1\n... ",
        "In [1]: x = 1",
        "\n\n    y = 2\n",
        "values = [1,\n,2]",
    ],
)
def test_skipping_the_token_pass_changes_no_transformation(cell: str) -> None:
    from IPython.core.inputtransformer2 import TransformerManager

    expected = TransformerManager().transform_cell(cell)
    assert kernel._TransformerManager().transform_cell(cell) == expected


def test_plain_python_skips_the_token_pass(monkeypatch) -> None:
    from IPython.core.inputtransformer2 import TransformerManager

    def tokenize(self, lines):
        raise AssertionError("tokenized")

    manager = kernel._TransformerManager()
    monkeypatch.setattr(TransformerManager, "do_one_token_transform", tokenize)
    assert manager.transform_cell("x = [1,\n     2]\nprint(x)") == "x = [1,\n     2]\nprint(x)\n"
    with pytest.raises(AssertionError):
        manager.transform_cell("x = !ls")


def test_snapshot_names_keep_exactly_what_is_snapshot_name_keeps() -> None:
    hidden = {"exit": object(), "get_ipython": object()}
    namespace = {
        **{f"_i{count}": "x = 1" for count in range(1, 200)},
        **{f"_{count}": count for count in range(1, 50)},
        **{name: 1 for name in ("_", "__", "_i", "_ii", "In", "Out", "_oh", "__name__")},
        "exit": hidden["exit"],
        "get_ipython": "rebound by the user",
        "_private": 2,
        "frame": 3,
        "Inbox": 4,
    }
    expected = [
        name for name, value in namespace.items() if snapshot.is_snapshot_name(name, hidden, value)
    ]
    assert snapshot.snapshot_names(namespace, hidden) == expected
    assert expected == ["get_ipython", "_private", "frame", "Inbox"]


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", "", "a\x00b", "dir/.."])
def test_unsafe_paths_are_refused(bad: str) -> None:
    with pytest.raises(workspace.UnsafePathError):
        workspace.safe_relative_path(bad)


def test_safe_paths_are_normalized() -> None:
    assert workspace.safe_relative_path("./data/x.csv") == "data/x.csv"


def test_scan_ignores_symlinks_hidden_entries_and_caches(tmp_path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "b").write_text("b")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "c.pyc").write_text("c")
    (tmp_path / "link").symlink_to("/etc/passwd")
    assert list(workspace.scan(str(tmp_path))) == ["data/a.txt"]


def test_changed_files_are_new_or_modified(tmp_path) -> None:
    (tmp_path / "same").write_text("1")
    (tmp_path / "edit").write_text("1")
    before = workspace.scan(str(tmp_path))
    (tmp_path / "edit").write_text("22")
    (tmp_path / "new").write_text("3")
    assert workspace.changed_files(before, workspace.scan(str(tmp_path))) == ["edit", "new"]


def test_resolve_inside_refuses_a_symlinked_directory_leading_out(tmp_path) -> None:
    (tmp_path / "out").symlink_to("/etc")
    with pytest.raises(workspace.UnsafePathError):
        workspace.resolve_inside(str(tmp_path), "out/passwd")


def test_frames_round_trip_and_oversized_frames_are_refused() -> None:
    left, right = socket.socketpair()
    with left, right:
        protocol.send_frame(left, {"a": [1, "é"]})
        assert protocol.recv_frame(right) == {"a": [1, "é"]}
    reader = protocol.FrameReader(max_bytes=64)
    data = protocol.encode_frame({"k": 1}) + protocol.encode_frame({"k": 2})
    reader.feed(data[:3])
    assert reader.pop() is None
    reader.feed(data[3:])
    assert reader.pop() == {"k": 1} and reader.pop() == {"k": 2} and reader.pop() is None
    reader.feed(protocol.encode_frame("x" * 100))
    with pytest.raises(protocol.ProtocolError):
        reader.pop()


def test_a_run_request_carries_the_invocation_the_engine_serialized() -> None:
    from lambdas.shared.models import ExecutorInvocation

    for code in ("print('é')", "'\udcff'"):  # a lone surrogate: json escapes it instead
        inv = ExecutorInvocation.model_validate(
            {"execution_id": "e", "tenant_id": "t", "session_id": "s", "code": code}
        )
        frame = protocol.encode_run_request(
            engine._invocation_json(inv),
            one_shot=False,
            workspace="/w",
            package_cache="/p",
            announce_run=True,
            run="r1",
        )
        left, right = socket.socketpair()
        with left, right:
            left.sendall(frame)
            request = protocol.recv_frame(right)
        assert request == {
            "op": "run",
            "one_shot": False,
            "workspace": "/w",
            "package_cache": "/p",
            "announce_run": True,
            "run": "r1",
            # The live channel is the parent's alone (host/live.py).
            "inv": inv.model_dump(mode="json", exclude={"live"}),
        }


def test_the_zygote_client_notes_the_preload_wherever_it_arrives() -> None:
    from lambdas.executor.host.zygote_client import ZygoteClient

    left, right = socket.socketpair()
    with left, right:
        client = object.__new__(ZygoteClient)  # its socket only: no zygote process
        client.sock, client.pending, client.requests_sent = left, 0, 0
        client.preload_report = None
        assert client.answers_at_once  # the first request: the zygote waits for it
        client.poll_events()
        assert not client.preloaded
        client.requests_sent, client.pending = 1, 1
        assert not client.answers_at_once  # preloading: a request may wait for a step
        protocol.send_frame(right, {"event": "preloaded", "modules": ["numpy"]})
        protocol.send_frame(right, {"pid": 7, "preloaded": True})
        assert client.collect() == [{"pid": 7, "preloaded": True}]
        assert client.preloaded and client.answers_at_once
        assert client.preload_report is not None and client.preload_report["modules"] == ["numpy"]


def test_untrusted_worker_output_is_shaped_into_the_contract() -> None:
    hostile = {
        "status": "pwned",
        "stdout": "x" * 50,
        "stdout_truncated": False,
        "result": "not a bundle",
        "outputs": ["junk", {"output_type": "stream", "name": "stdout", "text": "x"}],
        "error": {"name": 5, "traceback": "nope"},
        "warnings": ["w", 3],
    }
    frame = frames.parse_worker_frame({"kind": "saving", "cell": hostile}, stream_cap=10)
    assert isinstance(frame, frames.SavingFrame)
    cell = frame.cell.model_dump()
    assert cell["status"] == "error"
    assert cell["stdout"] == "x" * 10 and cell["stdout_truncated"] is True
    assert cell["result"] is None and len(cell["outputs"]) == 1
    assert cell["error"] == {"name": "5", "value": "", "traceback": []}
    assert cell["warnings"] == ["w"]
    final = frames.parse_worker_frame(
        {
            "kind": "result",
            "files": [{"path": "../../etc/passwd", "size": 1}, {"path": "ok.txt", "size": 2}],
            "state": {"size": -1, "variables": ["junk", {"name": "x", "type": "int"}]},
            "restored": [],
        }
    )
    assert isinstance(final, frames.ResultFrame)
    assert [item.path for item in final.files] == ["ok.txt"]
    assert final.state.size == 0 and [v.name for v in final.state.variables] == ["x"]
    assert final.restored is False
    assert frames.parse_worker_frame(["not", "a", "frame"]) is None
    assert frames.parse_worker_frame({"kind": "unknown"}) is None


def test_the_host_models_validate_exactly_the_shapes_the_worker_builds() -> None:
    # protocol.py's typed dicts (built by the worker) and host/frames.py's models (validating
    # them in the parent) describe the same frames: a field added to one must reach the other.
    pairs = [
        (protocol.Cell, frames.Cell),
        (protocol.CellError, frames.CellError),
        (protocol.Variable, frames.Variable),
        (protocol.StateReport, frames.StateReport),
        (protocol.PhaseFrame, frames.PhaseFrame),
        (protocol.SavingFrame, frames.SavingFrame),
        (protocol.PartialFrame, frames.PartialFrame),
        (protocol.ResultFrame, frames.ResultFrame),
    ]
    for shape, model in pairs:
        assert set(shape.__annotations__) == set(model.model_fields), shape.__name__
    # The parent fills in download_url; the worker never sends one.
    assert set(protocol.ReportedFile.__annotations__) == set(frames.ReportedFile.model_fields) - {
        "download_url"
    }
    failed = frames.Cell.model_validate(protocol.failed_cell("Boom", "it broke"))
    assert failed.model_dump() == frames.Cell.failed("Boom", "it broke").model_dump()


def test_the_sandbox_never_imports_pydantic() -> None:
    # ~0.15 s of every new environment's start: the zygote and its workers build plain dicts.
    code = (
        "import sys\n"
        "from lambdas.executor.sandbox import zygote, worker, kernel, capture, mime\n"
        "from lambdas.executor.sandbox import hygiene, tracebacks\n"
        "print([name for name in sys.modules if name.split('.')[0] == 'pydantic'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_fd_output_merges_after_the_captured_stream_within_the_cap() -> None:
    result = {"stdout": "abc", "stdout_truncated": False, "outputs": [
        {"output_type": "stream", "name": "stdout", "text": "abc"}]}  # fmt: skip
    buffer = channel.CappedBuffer(cap=100)
    buffer.add(b"defgh")
    results.merge_fd_output(result, "stdout", buffer, cap=6)
    assert result["stdout"] == "abcdef" and result["stdout_truncated"] is True
    assert result["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "abcdef"}]


def test_an_invalid_invocation_answer_is_a_valid_response() -> None:
    response = engine.Engine.__new__(engine.Engine).invoke({"execution_id": "e", "code": 1})
    parsed = ExecutorResponse.model_validate(response)
    assert parsed.result.error is not None and parsed.result.error.name == "InvalidInvocation"
    assert parsed.result.execution_id == "e"


def test_capped_buffer_keeps_only_the_cap() -> None:
    buffer = channel.CappedBuffer(cap=4)
    buffer.add(b"ab")
    buffer.add(os.urandom(10))
    assert len(buffer.data) == 4 and buffer.truncated


def _result_with_stdout(text: str, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """A worker's result for a cell that printed `text` and nothing else went wrong."""
    return {
        "stdout": text,
        "stderr": "",
        "stdout_truncated": False,
        "stderr_truncated": False,
        "result": None,
        "outputs": outputs,
        "warnings": [],
    }


def test_an_oversized_result_is_trimmed_under_the_cap() -> None:
    image = {"output_type": "display_data", "data": {"image/png": "i" * 5000}, "metadata": {}}
    small = {"output_type": "display_data", "data": {"text/plain": "keep"}, "metadata": {}}
    text = "\x00" * 3000  # JSON escapes each to six bytes
    result = _result_with_stdout(
        text, [image, small, {"output_type": "stream", "name": "stdout", "text": text}]
    )
    results.fit_result(result, cap=8000)
    assert results.json_size(result) <= 8000
    assert image["data"] == results.DROPPED_OUTPUT and small["data"] == {"text/plain": "keep"}
    assert result["stdout_truncated"] is True and result["warnings"]


def test_both_ways_of_listing_children_agree() -> None:
    import subprocess

    from lambdas.executor.host import procs

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in procs.children_of(os.getpid())
        assert child.pid in procs._children_by_scan(os.getpid())
    finally:
        child.kill()
        child.wait()


def test_an_internal_failure_is_a_clean_error_result(tmp_path, monkeypatch) -> None:
    from lambdas.executor.settings import ExecutorSettings

    broken = engine.Engine(ExecutorSettings(LCI_TMP_ROOT=str(tmp_path)))
    monkeypatch.setattr(broken, "_ensure_zygote", lambda: False)

    def explode(session_id):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    monkeypatch.setattr(broken, "_worker_for", explode)
    event = {"execution_id": "e", "tenant_id": "t", "session_id": "s", "code": "1"}
    parsed = ExecutorResponse.model_validate(broken.invoke(event))
    assert parsed.result.status == "error" and parsed.result.error is not None
    assert parsed.result.error.name == "ExecutorError" and "boom" not in parsed.result.error.value


IMMORTALIZE = """
import gc, json, sys, weakref
from lambdas.executor.sandbox import heap

class Value:
    pass

values = [Value() for _ in range(1000)]
watch = weakref.ref(values[500])
made = heap.immortalize(values)
counts = {sys.getrefcount(value) for value in values}
del values
gc.collect()
print(json.dumps({"made": made, "counts": sorted(counts), "alive": watch() is not None}))
"""


def test_immortalized_objects_are_left_alone_by_reference_counting() -> None:
    if not heap.immortality_supported():
        pytest.skip("this interpreter's object layout is not the one heap.immortalize knows")
    done = subprocess.run(
        [sys.executable, "-c", IMMORTALIZE],
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(done.stdout)
    assert report["made"] == 1000
    assert report["counts"] == [2**32 - 1]  # the refcount None has; the list's refs did not move it
    assert report["alive"]  # dropping every reference freed nothing


def test_the_output_mirror_keeps_order_and_survives_garbage() -> None:
    fd = protocol.OutputMirror.create_fd()
    try:
        mirror = protocol.OutputMirror.attach(fd)
        mirror.reset()
        mirror.append("stdout", "héllo\n")
        mirror.append("stderr", "oops\n")
        assert protocol.OutputMirror.read(fd) == [("stdout", "héllo\n"), ("stderr", "oops\n")]
        # A hostile worker may scribble anything: the parent reads a sane prefix or nothing.
        os.pwrite(fd, (2**63).to_bytes(8, "little") + b"\x01\xff\xff\xff\x7fabc", 0)
        assert protocol.OutputMirror.read(fd) == []
        mirror.reset()
        assert protocol.OutputMirror.read(fd) == []
    finally:
        os.close(fd)


def test_output_written_to_the_fd_is_capped_on_its_json_size_in_the_response() -> None:
    """A byte written straight to the fd can take six in the executor's JSON response
    (`\\u0001`), and stream text is there twice (stdout and its output): the response must
    still fit the result cap (Lambda's 6 MB response limit), however small the worker's frame."""
    import time

    from lambdas.executor.host.channel import CappedBuffer, Outcome, OutcomeKind
    from lambdas.shared.models import ExecutorInvocation

    invocation = ExecutorInvocation(execution_id="e1", tenant_id="t", code="os.write(1, ...)")
    cap = invocation.limits.stream_bytes
    out = CappedBuffer(cap)
    out.add(b"\x01" * (cap + 10))
    outcome = Outcome(OutcomeKind.CRASHED, out=out, err=CappedBuffer(cap), frame_bytes=0)
    response = results.respond(invocation, -1, outcome, time.perf_counter(), False)
    assert results.json_size(response["result"]) <= invocation.limits.result_bytes
    assert response["result"]["stdout"].startswith("\x01")
    assert response["result"]["stdout_truncated"] is True


def test_a_stream_over_its_cap_keeps_head_and_tail_in_bounded_memory() -> None:
    capture = cell_capture.CellCapture(stream_bytes=1000, result_bytes=100_000)
    _head, tail = protocol.head_and_tail_bytes(1000)
    for index in range(100_000):
        capture.add_stream("stdout", f"{index}\n")
    # Only the tail's groups are held, whatever was printed.
    held = sum(size for owner in capture._unique_owners("stdout") for _, size in owner["_tail"])
    assert held <= tail + cell_capture.TAIL_GROUP_BYTES
    text = capture.stream_text("stdout")
    assert text.startswith("0\n1\n") and text.endswith("99998\n99999\n")
    assert "bytes omitted ...]\n" in text and len(text.encode()) <= 1000
    assert capture.truncated["stdout"] is True
    assert [o["text"] for o in capture.finished_outputs()] == [text]


def test_the_omission_marker_sits_where_the_head_ended_among_displays() -> None:
    capture = cell_capture.CellCapture(stream_bytes=400, result_bytes=100_000)
    capture.add_stream("stdout", "a" * 150)
    capture.add_display({"text/plain": "D1"}, None)
    capture.add_stream("stdout", "b" * 1000)  # its start ends the head, the rest is omitted
    capture.add_display({"text/plain": "D2"}, None)
    capture.add_stream("stdout", "c" * 100)
    outputs = capture.finished_outputs()
    assert [o["output_type"] for o in outputs] == [
        "stream", "display_data", "stream", "display_data", "stream"
    ]  # fmt: skip
    assert outputs[2]["text"].startswith("b") and "omitted" in outputs[2]["text"]
    assert outputs[4]["text"] == "c" * 100
    assert "".join(o["text"] for o in outputs if o["output_type"] == "stream") == (
        capture.stream_text("stdout")
    )


def test_keep_head_and_tail_cuts_utf8_on_character_boundaries() -> None:
    text = "é" * 10_000
    kept, cut = protocol.keep_head_and_tail(text, 1000)
    assert cut and len(kept.encode()) <= 1000
    assert kept.startswith("é") and kept.endswith("é")
    assert protocol.keep_head_and_tail("short", 1000) == ("short", False)
    assert protocol.keep_head_and_tail("x" * 50, 10) == ("x" * 10, True)  # no room for a marker


def test_capped_buffer_keeps_head_and_tail_and_serves_what_it_still_holds() -> None:
    buffer = channel.CappedBuffer(cap=1000)
    for index in range(10_000):
        buffer.add(f"{index}\n".encode())
    text = buffer.text()
    assert buffer.truncated and len(text.encode()) <= 1000
    assert text.startswith("0\n1\n") and text.endswith("9998\n9999\n")
    assert len(buffer.tail) == buffer.tail_cap
    assert buffer.since(buffer.received) == b""
    assert buffer.since(buffer.received - 5) == b"9999\n"
    assert buffer.since(0).startswith(b"0\n1\n")


def test_fd_output_past_the_cap_keeps_the_captured_head_and_the_fd_tail() -> None:
    captured = "c" * 300
    result = {"stdout": captured, "stdout_truncated": False, "outputs": [
        {"output_type": "stream", "name": "stdout", "text": captured},
        {"output_type": "display_data", "data": {"text/plain": "D"}, "metadata": {}}]}  # fmt: skip
    buffer = channel.CappedBuffer(cap=1000)
    buffer.add(b"f" * 5000 + b"END\n")
    results.merge_fd_output(result, "stdout", buffer, cap=1000)
    assert result["stdout_truncated"] is True and len(result["stdout"].encode()) <= 1000
    assert result["stdout"].startswith("c" * 300) and result["stdout"].endswith("fEND\n")
    streams = [o["text"] for o in result["outputs"] if o["output_type"] == "stream"]
    assert "".join(streams) == result["stdout"]
    assert result["outputs"][1]["output_type"] == "display_data"


def test_an_oversized_result_keeps_the_end_of_its_streams() -> None:
    text = "".join(f"line {index}\n" for index in range(2000))
    result = _result_with_stdout(text, [{"output_type": "stream", "name": "stdout", "text": text}])
    results.fit_result(result, cap=6000)
    assert results.json_size(result) <= 6000
    assert result["stdout"].startswith("line 0\n") and result["stdout"].endswith("line 1999\n")
    assert result["outputs"][0]["text"].endswith("line 1999\n")


class _Poller:
    """A poll object that is never ready, or ready after `ready_after` polls."""

    def __init__(self, ready_after: int | None) -> None:
        self.polls = 0
        self.ready_after = ready_after

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        self.polls += 1
        return [(3, 1)] if self.ready_after is not None and self.polls > self.ready_after else []


def _spinner(monkeypatch: pytest.MonkeyPatch, cpus: int, load: int) -> channel.Spinner:
    monkeypatch.setattr(channel.Spinner, "runnable", staticmethod(lambda: load))
    spinner = channel.Spinner()
    spinner.cpus = cpus
    return spinner


def test_the_parent_spins_for_a_quick_answer_only_with_a_cpu_to_spare(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    soon = time.perf_counter() + 0.05
    # A second CPU and a quiet machine: the answer is picked up while spinning.
    poller = _Poller(ready_after=3)
    assert _spinner(monkeypatch, cpus=2, load=2).wait(poller, soon) == [(3, 1)]
    # One CPU: spinning would take it from the worker; nothing is polled.
    poller = _Poller(ready_after=0)
    assert _spinner(monkeypatch, cpus=1, load=1).wait(poller, soon) == []
    assert poller.polls == 0
    # More tasks ready to run than CPUs: no spinning.
    poller = _Poller(ready_after=0)
    assert _spinner(monkeypatch, cpus=2, load=3).wait(poller, soon) == []
    assert poller.polls == 0


def test_spinning_stops_while_answers_take_longer_than_its_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spinner = _spinner(monkeypatch, cpus=2, load=2)
    started = time.perf_counter()
    assert spinner.wait(_Poller(ready_after=None), started + 0.002) == []
    assert time.perf_counter() - started < 0.5  # bounded by its window
    spinner.answered(0.2)  # a long cell (or a loaded machine)
    poller = _Poller(ready_after=0)
    assert spinner.wait(poller, time.perf_counter() + 0.05) == []
    assert poller.polls == 0
    spinner.answered(channel.Spinner.WINDOW_S / 4)  # a quick answer, without spinning
    assert spinner.wait(_Poller(ready_after=0), time.perf_counter() + 0.05) == [(3, 1)]

"""Property tests of the worker wire protocol (`lambdas/executor/protocol.py`), as a hostile
worker could drive it: any frame sequence in any chunking, truncated frames, oversized
headers, random bytes, arbitrary JSON where a frame should be. Every outcome is a frame, "not
yet" (None) or `ProtocolError`, never another exception; a blocking read against a socketpair
whose peer stops or closes ends within a deadline, never hangs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import struct
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambdas.executor import protocol
from lambdas.executor.host import frames

pytestmark = pytest.mark.attack(
    "worker protocol",
    "hypothesis: any frame sequence in any chunking, random bytes, truncated or oversized frames, "
    "JSON that is no frame, deep nesting, stalled or closing peers",
    'a frame, "not yet" or a `ProtocolError` within a deadline: never another exception, never '
    "a hang",
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
READ_DEADLINE_SECONDS = 5
HEADER = struct.Struct("!I")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _drain(reader: protocol.FrameReader) -> list[Any]:
    frames = []
    while (frame := reader.pop()) is not None:
        frames.append(frame)
    return frames


json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


@SETTINGS
@given(
    messages=st.lists(json_objects, max_size=6),
    cuts=st.lists(st.integers(0, 10_000), max_size=16),
)
def test_any_frame_sequence_in_any_chunking_reads_back_in_order(messages, cuts):
    data = b"".join(protocol.encode_frame(message) for message in messages)
    reader = protocol.FrameReader(protocol.MAX_CONTROL_FRAME_BYTES)
    received: list[Any] = []
    for chunk in _chunks(data, cuts):
        reader.feed(chunk)
        received += _drain(reader)
    assert received == json.loads(json.dumps(messages))


@SETTINGS
@given(data=st.binary(max_size=2048), cuts=st.lists(st.integers(0, 4096), max_size=8))
def test_random_bytes_give_frames_none_or_a_protocol_error(data, cuts):
    reader = protocol.FrameReader(4096)
    try:
        for chunk in _chunks(data, cuts):
            reader.feed(chunk)
            _drain(reader)
    except protocol.ProtocolError:
        pass


@SETTINGS
@given(frame=json_values.filter(lambda value: not isinstance(value, dict)))
def test_a_frame_that_is_not_a_json_object_is_a_protocol_error(frame):
    """`null` would otherwise read as "no frame yet" and stall the frames queued behind it."""
    reader = protocol.FrameReader(1 << 20)
    reader.feed(protocol.encode_frame(frame) + protocol.encode_frame({"kind": "result"}))
    with pytest.raises(protocol.ProtocolError, match="not a JSON object"):
        reader.pop()


@SETTINGS
@given(size=st.integers(4097, 2**32 - 1))
def test_an_oversized_header_is_refused_before_its_body_arrives(size):
    reader = protocol.FrameReader(4096)
    reader.feed(HEADER.pack(size))
    with pytest.raises(protocol.ProtocolError, match="exceeds"):
        reader.pop()


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deeply_nested_json_is_a_protocol_error_not_a_recursion_error(depth):
    body = b"[" * depth + b"]" * depth
    reader = protocol.FrameReader(len(body) + 8)
    reader.feed(HEADER.pack(len(body)) + body)
    with pytest.raises(protocol.ProtocolError):
        reader.pop()
    with pytest.raises(protocol.ProtocolError):
        _read_against(HEADER.pack(len(body)) + body, close=True, max_bytes=len(body) + 8)


@SETTINGS
@given(frame=json_values)
def test_any_json_where_a_worker_frame_should_be_is_a_frame_or_ignored(frame):
    message = frames.parse_worker_frame(frame, stream_cap=100)
    if message is not None:
        protocol.encode_frame(message.model_dump())  # what the parent builds from it serializes


worker_frames = st.fixed_dictionaries(
    {"kind": st.sampled_from(["phase", "saving", "partial", "result", "other"])},
    optional={
        "cell": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "status": st.sampled_from(["ok", "error", "timeout", "nope"]) | json_values,
                "stdout": st.text() | json_values,
                "outputs": json_values,
                "error": json_values,
                "result": json_values,
                "warnings": json_values,
            },
        ),
        "files": st.lists(
            st.fixed_dictionaries({"path": st.text() | json_values, "size": json_values})
        ),
        "state": json_values,
        "late_warnings": json_values,
        "restored": json_values,
    },
)


@SETTINGS
@given(frame=worker_frames)
def test_frames_shaped_like_the_workers_validate_leniently(frame):
    message = frames.parse_worker_frame(frame, stream_cap=10)
    if isinstance(message, frames.ResultFrame | frames.SavingFrame):
        cell = message.cell
        if cell is not None:
            assert len(cell.stdout) <= 10
            assert cell.status == "ok" or cell.error is not None
    if isinstance(message, frames.ResultFrame):
        for reported in message.files:
            assert not reported.path.startswith("/") and ".." not in reported.path.split("/")
        protocol.encode_frame(message.model_dump())


def _read_against(
    peer_writes: bytes, close: bool, max_bytes: int, deadline: float = READ_DEADLINE_SECONDS
) -> Any:
    """recv_frame on one end of a socketpair while the other writes, then closes or stalls; a
    read still blocked after `deadline` raises TimeoutError (a hang fails the test)."""
    left, right = socket.socketpair()

    def write() -> None:
        with contextlib.suppress(OSError):  # the reader may refuse early and close
            right.sendall(peer_writes)
            if close:
                right.shutdown(socket.SHUT_WR)

    with left, right:
        left.settimeout(deadline)
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            return protocol.recv_frame(left, max_bytes)
        finally:
            left.close()
            writer.join(READ_DEADLINE_SECONDS)


@settings(max_examples=60, deadline=None)
@given(message=json_values, cut=st.integers(0, 10_000))
def test_a_truncated_frame_from_a_closing_peer_is_a_protocol_error_within_the_deadline(
    message, cut
):
    data = protocol.encode_frame(message)
    truncated = data[: cut % len(data)]
    with pytest.raises(protocol.ProtocolError):
        _read_against(truncated, close=True, max_bytes=protocol.MAX_CONTROL_FRAME_BYTES)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=512))
def test_random_bytes_from_a_closing_peer_end_within_the_deadline(data):
    # A clean error at most; a socket timeout (a hang) would fail the test.
    with contextlib.suppress(protocol.ProtocolError):
        _read_against(data, close=True, max_bytes=4096)


def test_a_stalled_peer_is_a_timeout_the_caller_chose_not_a_hang():
    frame = protocol.encode_frame({"kind": "result"})
    with pytest.raises(TimeoutError):
        _read_against(frame[:-1], close=False, max_bytes=4096, deadline=0.5)


@settings(max_examples=60, deadline=None)
@given(message=json_values)
def test_whole_frames_from_a_peer_read_back(message):
    assert _read_against(protocol.encode_frame(message), True, 1 << 20) == json.loads(
        json.dumps(message)
    )


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=256))
def test_frames_with_passed_fds_refuse_random_bytes_cleanly(data):
    left, right = socket.socketpair()
    with left, right:
        left.settimeout(READ_DEADLINE_SECONDS)
        right.sendall(data)
        right.shutdown(socket.SHUT_WR)
        with contextlib.suppress(protocol.ProtocolError):
            protocol.recv_frame_with_fds(left, 4)

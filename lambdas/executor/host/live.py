"""A run as it goes, seen from the trusted parent: its live output, interrupts and receipt.

`RunMonitor` watches one exchange (channel.py calls its hooks). While the cell runs it
- reads what the worker printed from its output mirror (protocol.OutputMirror) and what C code
  and subprocesses wrote to its pipes, and publishes it as numbered chunks (lambdas/shared/
  live.py) at most every `LIVE_PUBLISH_INTERVAL_SECONDS`, the first one no sooner than
  `LIVE_FIRST_PUBLISH_SECONDS` after the start (a quick run publishes nothing), and always a
  last one when it published anything;
- looks for an interrupt request every `LIVE_INTERRUPT_POLL_SECONDS` and answers it with SIGINT
  to the worker (the cell gets KeyboardInterrupt; sandbox/worker.py ignores it outside a cell),
  again every `LIVE_INTERRUPT_RESEND_SECONDS` while the cell goes on; a cell that ignores it
  meets the timeout as usual;
- measures the receipt: wall time, CPU time of the worker and its children, peak resident memory
  (VmHWM, reset when the cell starts).
The sandboxed worker never sees the live channel: only this process talks to it, through a
`LiveTransport` (today presigned S3 requests, `PresignedS3Transport`; a streaming transport can
take its place). Uploads and polls run on one background thread, started only once a run has
outlived the first-publish delay, so the exchange never waits on the network.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol

from lambdas.executor import protocol
from lambdas.executor.host.channel import CappedBuffer, ExchangeObserver
from lambdas.executor.host.usage import UsageMeter
from lambdas.executor.sandbox import transfer
from lambdas.shared import limits, live
from lambdas.shared.models import LiveChannel

LIVE_HTTP_TIMEOUT_SECONDS = 10.0
TICK_SECONDS = 0.1  # how often a live run's output and the interrupt flag are looked at
RELAY_STOP_SECONDS = 5.0  # the longest the end of a run waits for an upload in flight


class LiveTransport(Protocol):
    """The one port between a running cell and its watchers."""

    def publish(self, name: str, body: bytes) -> bool:
        """Store one chunk (`name` from lambdas.shared.live.chunk_name); True if stored."""
        ...

    def interrupt_requested(self) -> bool:
        """True once an interrupt of this run was requested."""
        ...


class PresignedS3Transport:
    """Chunks through the invocation's presigned POST, interrupts through its presigned GET."""

    def __init__(self, channel: LiveChannel) -> None:
        self._post = channel.output.model_dump()
        self._interrupt_url = channel.interrupt_url

    def publish(self, name: str, body: bytes) -> bool:
        if len(body) > self._post["max_bytes"]:
            return False
        try:
            transfer.upload(
                self._post,
                self._post["key_prefix"] + name,
                body,
                len(body),
                "application/json",
                timeout=LIVE_HTTP_TIMEOUT_SECONDS,
            )
        except transfer.TransferError:
            return False
        return True

    def interrupt_requested(self) -> bool:
        # S3 answers 404 (or 403 without list permission) until the API wrote the marker.
        request = urllib.request.Request(self._interrupt_url, method="GET")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=LIVE_HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False


# ---------------------------------------------------------------------------------------------
# Uploads and polls off the exchange's thread
# ---------------------------------------------------------------------------------------------


class _Relay:
    """One background thread: uploads the chunk handed to it, polls for an interrupt."""

    def __init__(self, transport: LiveTransport, poll_interrupts: Callable[[], bool]) -> None:
        self._transport = transport
        self._poll_interrupts = poll_interrupts
        self._wake = threading.Condition()
        self._chunk: tuple[str, bytes] | None = None
        self._stopping = False
        self.busy = False
        self.failed = False  # the last upload was not stored
        self.interrupt_seen = False
        self._thread = threading.Thread(target=self._run, name="lci-live", daemon=True)
        self._thread.start()

    def submit(self, name: str, body: bytes) -> None:
        with self._wake:
            self._chunk = (name, body)
            self.busy = True
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(RELAY_STOP_SECONDS)

    def _run(self) -> None:
        next_poll = time.monotonic()
        while True:
            with self._wake:
                while self._chunk is None and not self._stopping:
                    polling = self._poll_interrupts() and not self.interrupt_seen
                    wait = next_poll - time.monotonic() if polling else None
                    if wait is not None and wait <= 0:
                        break
                    self._wake.wait(wait)  # None: until a chunk comes or the run ends
                chunk, self._chunk = self._chunk, None
                stopping = self._stopping
            if chunk is not None:
                stored = self._transport.publish(*chunk)
                with self._wake:
                    self.failed = not stored
                    self.busy = False
            if stopping:
                return
            polling = self._poll_interrupts() and not self.interrupt_seen
            if polling and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + limits.LIVE_INTERRUPT_POLL_SECONDS
                if self._transport.interrupt_requested():
                    self.interrupt_seen = True


# ---------------------------------------------------------------------------------------------
# The monitor
# ---------------------------------------------------------------------------------------------


class RunMonitor(ExchangeObserver):
    """Everything the parent does for one run while waiting on it (see the module docstring).
    Lives on the exchange's thread; only `_Relay` has a thread of its own."""

    def __init__(
        self,
        pid: int,
        mirror_fd: int,
        stream_cap: int,
        transport: LiveTransport | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pid = pid
        self._mirror_fd = mirror_fd
        self._transport = transport
        self._clock = clock
        self.meter = UsageMeter(pid, clock)
        self._stream_cap = stream_cap
        # Made once the run outlives the first-publish delay: a quick run needs none of it.
        self._live_view: live.LiveOutput | None = None
        self._decoders: dict[str, codecs.IncrementalDecoder] = {}
        self._pending: list[list[Any]] = []
        self._mirror_offset = 0
        self._pipe_offsets = {"stdout": 0, "stderr": 0}
        self._started = clock()
        self._next_tick = self._started + limits.LIVE_FIRST_PUBLISH_SECONDS
        self._next_publish = self._next_tick
        self._seq = 0
        self._published = False
        self._relay: _Relay | None = None
        self._cell_running = True
        self._interrupt_sent_at: float | None = None
        self.interrupted = False  # SIGINT was sent for an interrupt request

    # -- hooks of the exchange -------------------------------------------------------------------

    def started(self) -> None:
        """The run request is about to go out: a clean mirror, the meter running."""
        protocol.OutputMirror.clear_fd(self._mirror_fd)
        self._started = self._clock()
        self._next_tick = self._next_publish = self._started + limits.LIVE_FIRST_PUBLISH_SECONDS
        self.meter.start()

    def phase(self) -> None:
        self.meter.start()  # the transfers before the cell are not the cell's

    def cell_done(self) -> None:
        if self._cell_running:
            self._cell_running = False
            self.meter.stop()

    def wait_limit(self) -> float:
        if self._transport is None:
            return float("inf")
        return max(self._next_tick - self._clock(), 0.0)

    def tick(self, out: CappedBuffer, err: CappedBuffer) -> None:
        if self._transport is None:
            return
        now = self._clock()
        if now < self._next_tick:
            return
        self._next_tick = now + TICK_SECONDS
        if self._relay is None:
            self._relay = _Relay(self._transport, lambda: self._cell_running)
        self._collect(out, err)
        self._answer_interrupt(now)
        due = self._cell_running and now >= self._next_publish and not self._relay.busy
        # One chunk is kept for the last one.
        if due and self._pending and self._seq < limits.MAX_LIVE_CHUNKS - 1:
            name, body = self._chunk(final=False)
            self._relay.submit(name, body)
            self._next_publish = now + limits.LIVE_PUBLISH_INTERVAL_SECONDS

    # -- after the exchange ------------------------------------------------------------------------

    def finish(self, out: CappedBuffer | None, err: CappedBuffer | None) -> dict[str, Any]:
        """The run is over: stop the meter and publish the last chunk (if any went before, or
        there is output to show from a run that outlived the first-publish delay)."""
        self.cell_done()
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.stop()
            if relay.failed:
                self._published = False  # the next chunk must repeat everything
        if self._transport is not None and (relay is not None or self._published):
            self._collect(out, err)
            if self._published or self._pending:
                name, body = self._chunk(final=True)
                self._transport.publish(name, body)
        return self.meter.sample()

    def abandon(self) -> None:
        """The exchange failed: stop the uploads and polls, publish nothing more."""
        self._cell_running = False
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.stop()

    def apply(self, response: dict[str, Any], crash_status: list[Any] | None = None) -> None:
        """The receipt into the executor's response, and `interrupted` for a cell stopped by an
        interrupt request (its KeyboardInterrupt is the error; state was saved as usual)."""
        if crash_status and len(crash_status) > 2 and isinstance(crash_status[2], int):
            self.meter.note_peak_kb(crash_status[2])
        result = response["result"]
        result["usage"] = self.meter.figures()
        error = result.get("error") or {}
        if (
            self.interrupted
            and result.get("status") == "error"
            and error.get("name") == "KeyboardInterrupt"
        ):
            result["status"] = "interrupted"

    # -- internals -----------------------------------------------------------------------------

    def _collect(self, out: CappedBuffer | None, err: CappedBuffer | None) -> None:
        records, self._mirror_offset = protocol.OutputMirror.read_records(
            self._mirror_fd, self._mirror_offset
        )
        for kind, value in records:
            self._fold([kind] if kind == "clear" else [kind, value])
        for name, buffer in (("stdout", out), ("stderr", err)):
            if buffer is None or buffer.received <= self._pipe_offsets[name]:
                continue
            chunk = buffer.since(self._pipe_offsets[name])
            self._pipe_offsets[name] = buffer.received
            decoder = self._decoders.get(name)
            if decoder is None:
                decoder = self._decoders[name] = codecs.getincrementaldecoder("utf-8")("replace")
            text = decoder.decode(chunk)
            if text:
                self._fold([name, text])

    @property
    def _view(self) -> live.LiveOutput:
        if self._live_view is None:
            self._live_view = live.LiveOutput(self._stream_cap)
        return self._live_view

    @_view.setter
    def _view(self, view: live.LiveOutput) -> None:
        self._live_view = view

    def _fold(self, record: list[Any]) -> None:
        kept = self._view.add(record)
        if kept is not None:
            self._pending.append(kept)

    def _answer_interrupt(self, now: float) -> None:
        relay = self._relay
        if relay is None or not relay.interrupt_seen or not self._cell_running:
            return
        sent = self._interrupt_sent_at
        if sent is not None and now - sent < limits.LIVE_INTERRUPT_RESEND_SECONDS:
            return
        with contextlib.suppress(OSError):
            os.kill(self._pid, signal.SIGINT)
        self._interrupt_sent_at = now
        self.interrupted = True

    def _chunk(self, final: bool) -> tuple[str, bytes]:
        """The next chunk: a base (everything so far) when due or when a delta cannot be used,
        else the records since the last chunk."""
        seq = self._seq
        self._seq += 1
        usage = self.meter.sample()
        base = final or not self._published or seq % limits.LIVE_BASE_EVERY == 0
        if self._relay is not None and self._relay.failed:
            base = True  # the chunk before was lost: this one repeats everything
        body = b""
        if not base:
            body = live.encode_chunk(
                {
                    "v": live.CHUNK_VERSION,
                    "seq": seq,
                    "base": False,
                    "final": False,
                    "usage": usage,
                    "records": self._pending,
                }
            )
            base = len(body) > limits.MAX_LIVE_CHUNK_BYTES
        if base:
            body = self._base_body(seq, final, usage)
        self._pending = []
        self._published = True
        return live.chunk_name(seq, base), body

    def _base_body(self, seq: int, final: bool, usage: dict[str, Any]) -> bytes:
        while True:
            body = live.encode_chunk(
                {
                    "v": live.CHUNK_VERSION,
                    "seq": seq,
                    "base": True,
                    "final": final,
                    "usage": usage,
                    **self._view.fields(),
                }
            )
            if len(body) <= limits.MAX_LIVE_CHUNK_BYTES:
                return body
            # Output that escapes badly (control characters) can outgrow the chunk: show less.
            fields = self._view.fields()
            shorter = {name: fields[name][: len(fields[name]) // 2] for name in live.STREAMS}
            self._view = live.LiveOutput.from_fields(
                {**shorter, "stdout_truncated": True, "stderr_truncated": True, "outputs": []},
                limits.MAX_STREAM_BYTES,
            )

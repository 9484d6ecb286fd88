"""A run as it goes: its output as events, an interrupt, its result.

`GET /v1/executions/{id}` of a running execution answers with everything printed and displayed
so far (at most about a second behind the code); `OutputTracker` turns those successive views
into the new pieces only, in the order the code produced them, and `Execution` polls for them:

    with Client() as client:
        run = client.stream("for i in range(3): print(i); import time; time.sleep(1)")
        for event in run:                      # ExecutionEvent, as the output arrives
            print(event.kind, event.text or event.output)
        run.result                             # the finished ExecutionResult

`run.interrupt()` asks the server to stop the cell (KeyboardInterrupt, the session keeps its
variables); the run then ends as `interrupted`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from lci.errors import LciError
from lci.models import ExecutionResult

if TYPE_CHECKING:
    from lci.client import Client

# The server publishes output at most every 0.5 s; polling at twice that rate keeps a client
# within about a second of the code. The first polls come sooner: most runs are quick.
LIVE_POLL_INTERVAL_SECONDS = 0.25
FIRST_POLL_DELAYS_SECONDS = (0.05, 0.1, 0.15)
EventKind = Literal["stdout", "stderr", "output", "result"]
StreamName = Literal["stdout", "stderr"]
STREAMS: tuple[StreamName, StreamName] = ("stdout", "stderr")


@dataclass
class ExecutionEvent:
    """One new piece of a run's output: text of a stream, a rich output (nbformat v4
    `display_data`, `execute_result` or `error`), or the finished `result` (always last).
    `final` is True for what only the finished result showed."""

    kind: EventKind
    text: str = ""
    output: dict[str, Any] | None = None
    result: ExecutionResult | None = field(default=None, repr=False)
    final: bool = False


def _text(output: dict[str, Any]) -> str:
    text = output.get("text", "")
    if isinstance(text, list):  # nbformat allows a list of lines
        return "".join(str(part) for part in text)
    return text if isinstance(text, str) else ""


class OutputTracker:
    """What of a run's output was already reported, so each view yields only what is new.

    Stream outputs hold what was printed since the last `clear_output`, the tail of the
    stream's whole text (`result.stdout`): their positions are counted from there. Rich outputs
    are counted; after a `clear_output` (fewer of them than before) counting starts over."""

    def __init__(self) -> None:
        self._seen = dict.fromkeys(STREAMS, 0)
        self._rich_seen = 0

    def events(self, result: ExecutionResult, final: bool = False) -> list[ExecutionEvent]:
        found: list[ExecutionEvent] = []
        in_outputs = dict.fromkeys(STREAMS, 0)
        rich = [o for o in result.outputs if o.get("output_type") != "stream"]
        for output in result.outputs:
            if output.get("output_type") == "stream" and output.get("name") in in_outputs:
                in_outputs[output["name"]] += len(_text(output))
        whole = {"stdout": len(result.stdout), "stderr": len(result.stderr)}
        position = {name: max(whole[name] - in_outputs[name], 0) for name in STREAMS}
        if len(rich) < self._rich_seen:
            self._rich_seen = 0
        rich_index = 0
        for output in result.outputs:
            name = output.get("name")
            if output.get("output_type") == "stream" and name in position:
                text = _text(output)
                start, end = position[name], position[name] + len(text)
                position[name] = end
                if end > self._seen[name]:
                    piece = text[max(self._seen[name] - start, 0) :]
                    self._seen[name] = end
                    found.append(ExecutionEvent(name, text=piece, final=final))
            elif output.get("output_type") != "stream":
                rich_index += 1
                if rich_index > self._rich_seen:
                    self._rich_seen = rich_index
                    found.append(ExecutionEvent("output", output=output, final=final))
        # Text in a stream but in no output (printed before a clear_output the tracker never
        # saw): reported at the end, so nothing printed is lost.
        for name in STREAMS:
            text = result.stdout if name == "stdout" else result.stderr
            if len(text) > self._seen[name] and not in_outputs[name]:
                found.append(ExecutionEvent(name, text=text[self._seen[name] :], final=final))
                self._seen[name] = len(text)
        return found


class Execution:
    """A run the client started without waiting for it (`Client.start` / `Client.stream`).
    Iterating over it polls the server and yields `ExecutionEvent`s until the run is over;
    `result` is then the finished result."""

    def __init__(self, client: Client, first: ExecutionResult) -> None:
        self.client = client
        self.execution_id = first.execution_id
        self.session_id = first.session_id
        self.result: ExecutionResult | None = None if first.running else first
        self._latest = first
        self._tracker = OutputTracker()
        self._polls = 0
        self._reported_first = False

    @property
    def done(self) -> bool:
        return self.result is not None

    def interrupt(self) -> bool:
        """Ask the server to interrupt the run (KeyboardInterrupt in the cell; the session keeps
        its state). False if it had already finished."""
        try:
            self.client.interrupt(self.execution_id)
        except LciError as exc:
            if exc.code == "EXECUTION_FINISHED":
                return False
            raise
        return True

    def next_delay(self) -> float:
        """How long to wait before the next poll."""
        if self._polls < len(FIRST_POLL_DELAYS_SECONDS):
            return FIRST_POLL_DELAYS_SECONDS[self._polls]
        return LIVE_POLL_INTERVAL_SECONDS

    def poll(self) -> list[ExecutionEvent]:
        """One step: the new events of the latest view (the first call uses the answer that
        started the run), fetching a newer one when it is due. Ends with a `result` event."""
        if self.result is not None and self._reported_first:
            return []
        if self._reported_first:
            self._latest = self.client.get_execution(self.execution_id)
            self._polls += 1
        self._reported_first = True
        latest = self._latest
        finished = not latest.running
        events = self._tracker.events(latest, final=finished)
        if finished:
            self.result = latest
            events.append(ExecutionEvent("result", result=latest, final=True))
        return events

    def events(self, sleep: Callable[[float], None] = time.sleep) -> Iterator[ExecutionEvent]:
        while True:
            yield from self.poll()
            if self.result is not None:
                return
            sleep(self.next_delay())

    def __iter__(self) -> Iterator[ExecutionEvent]:
        return self.events()

    def wait(self) -> ExecutionResult:
        """Poll until the run is over; its result."""
        for _ in self.events():
            pass
        assert self.result is not None
        return self.result

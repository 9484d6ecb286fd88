"""`lci run`'s live output: a run followed to its end, what it prints shown as it arrives, and
Ctrl-C (interrupt first, detach on the second)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from lci.live import Execution, ExecutionEvent
from lci.models import ExecutionResult
from lci.progress import IdleSpinner

INTERRUPTING = "[interrupting: the session keeps its variables; Ctrl-C again to detach]"


def follow(
    run: Execution,
    out: TextIO,
    err: TextIO,
    *,
    show: bool = True,
    describe_displays: bool = True,
    sleep: Callable[[float], None] | None = None,
) -> ExecutionResult | None:
    """Print a run's output as it arrives (stdout to `out`, stderr to `err`, a spinner with the
    elapsed time on a terminal while nothing prints) until it is over; its result. The first
    Ctrl-C interrupts the run remotely (it ends as `interrupted`, its session's state kept), a
    second one detaches: None, the run goes on."""
    interrupting = False
    line_open = False
    with IdleSpinner("running", err) as spinner:
        while True:
            try:
                for event in run.poll():
                    if not show or event.kind == "result":
                        continue
                    with spinner.printing():
                        text = _event_text(event, describe_displays)
                        target = out if event.kind == "stdout" else err
                        target.write(text)
                        target.flush()
                        spinner.wrote(text)
                        if event.kind == "stdout" and text:
                            line_open = not text.endswith("\n")
                if run.result is not None:
                    if line_open:
                        out.write("\n")
                    return run.result
                (sleep or time.sleep)(run.next_delay())
            except KeyboardInterrupt:
                if interrupting:
                    return None
                interrupting = True
                try:
                    with spinner.printing():
                        err.write(f"\n{INTERRUPTING}\n")
                        err.flush()
                    run.interrupt()
                except KeyboardInterrupt:
                    return None


def _event_text(event: ExecutionEvent, describe_displays: bool) -> str:
    if event.kind in ("stdout", "stderr"):
        return event.text
    output = event.output or {}
    if output.get("output_type") != "display_data" or not describe_displays:
        return ""  # the value and the error are printed with the result
    data = output.get("data") or {}
    kinds = ", ".join(sorted(k for k in data if k != "text/plain"))
    return f"[display: {kinds or 'text/plain'}]\n"

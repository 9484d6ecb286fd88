"""A small stderr spinner shown while waiting on long runs (only when stderr is a terminal)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

_FRAMES = "|/-\\"
_SHOW_AFTER_SECONDS = 0.5  # quick runs print nothing
_FRAME_SECONDS = 0.1


class Spinner:
    def __init__(self, label: str = "running", stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def __enter__(self) -> Spinner:
        if self.enabled:
            self._started = time.monotonic()
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _spin(self) -> None:
        if self._stop.wait(_SHOW_AFTER_SECONDS):
            return
        frame = 0
        while not self._stop.is_set():
            elapsed = time.monotonic() - self._started
            self.stream.write(f"\r{_FRAMES[frame % len(_FRAMES)]} {self.label} {elapsed:5.1f}s")
            self.stream.flush()
            frame += 1
            self._stop.wait(_FRAME_SECONDS)

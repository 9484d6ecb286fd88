"""A small stderr spinner shown while waiting on long runs (only when stderr is a terminal), and
its variant for live output that shows only while nothing else prints."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


class IdleSpinner(Spinner):
    """The spinner with the elapsed time, shown only once nothing has printed for a moment and
    the last line printed is complete; every write goes through `printing()`, which wipes the
    spinner first, so the two never mix on the terminal."""

    def __init__(self, label: str = "running", stream: TextIO | None = None) -> None:
        super().__init__(label, stream)
        self._lock = threading.Lock()
        self._quiet_since = time.monotonic()
        self._line_open = False
        self._shown = False

    @contextmanager
    def printing(self) -> Iterator[None]:
        with self._lock:
            self._wipe()
            try:
                yield
            finally:
                self._quiet_since = time.monotonic()

    def wrote(self, text: str) -> None:
        """Say what was just printed (inside `printing()`): a line left open keeps the spinner
        away, it would overwrite it."""
        if text:
            self._line_open = not text.endswith("\n")

    def __enter__(self) -> IdleSpinner:
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            with self._lock:
                self._wipe()

    def _wipe(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(_FRAME_SECONDS):
            with self._lock:
                now = time.monotonic()
                if self._line_open or now - self._quiet_since < _SHOW_AFTER_SECONDS:
                    continue
                elapsed = now - self._started
                glyph = _FRAMES[frame % len(_FRAMES)]
                self.stream.write(f"\r{glyph} {self.label} {elapsed:5.1f}s")
                self.stream.flush()
                self._shown = True
            frame += 1

"""The API counts time in milliseconds (`timeout_ms`); the CLI and the tools speak seconds. These
helpers convert one way for requests and rewrite the API's messages the other way."""

from __future__ import annotations

import math
import re

_MS_LIMIT = re.compile(r"\btimeout_ms must be at most (\d+)\b")
_MS_AMOUNT = re.compile(r"\b(\d+) ?ms\b")
_MS_FIELD = re.compile(r"\btimeout_ms\b")


def seconds_text(milliseconds: int | float) -> str:
    return f"{milliseconds / 1000:g} s"


def seconds_to_ms(seconds: float) -> int:
    """A positive timeout in seconds as the API's whole milliseconds (rounded up: a tiny
    positive value must not become 0, which the API would read as "the default")."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("the timeout must be a positive number of seconds")
    return max(1, math.ceil(seconds * 1000))


def seconds_wording(message: str, option: str = "timeout") -> str:
    """`message` with milliseconds said in seconds and `timeout_ms` named as `option`."""
    message = _MS_LIMIT.sub(
        lambda m: f"{option} must be at most {seconds_text(int(m.group(1)))}", message
    )
    message = _MS_AMOUNT.sub(lambda m: seconds_text(int(m.group(1))), message)
    return _MS_FIELD.sub(f"{option} (seconds)", message)

"""Display data made JSON-safe before it leaves the worker, as ipykernel does before sending
(jupyter_client's `json_clean` and ipykernel's `encode_images`, in a small version of our own:
the sandbox does not import jupyter_client). Binary data (a PIL image's `_repr_png_`, `display
({'image/png': b'...'}, raw=True)`) becomes base64 text, numbers of any kind (numpy scalars in
metadata) become JSON numbers, anything else its repr. Never raises: a value nobody can encode
must not cost the worker its life (issue 11)."""

from __future__ import annotations

import base64
import datetime
import math
import numbers
from typing import Any

MAX_DEPTH = 64  # deeper (or self-referencing) structures end in a repr


def is_json_mime(mime: str) -> bool:
    """Mime types whose data is a JSON structure rather than text (nbformat's rule)."""
    return mime == "application/json" or mime.endswith("+json")


def safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return object.__repr__(value)
    return text if type(text) is str else object.__repr__(value)


def _text(value: str) -> str:
    return value if type(value) is str else str.__str__(value)


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else repr(value)  # NaN and inf are not JSON


def json_clean(value: Any, depth: int = 0) -> Any:
    """`value` as something `json.dumps` accepts."""
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return _number(float(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        try:
            item = value.item()  # numpy.bool_ and friends, which numbers does not know
        except Exception:
            return safe_repr(value)
        if item is not value and not hasattr(item, "item"):
            return json_clean(item, depth + 1)
        return safe_repr(value)
    if depth >= MAX_DEPTH:
        return safe_repr(value)
    if isinstance(value, dict):
        return {
            _text(key) if isinstance(key, str) else safe_repr(key): json_clean(item, depth + 1)
            for key, item in list(value.items())
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_clean(item, depth + 1) for item in list(value)]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return safe_repr(value)


def clean_bundle(data: dict[Any, Any]) -> dict[str, Any]:
    """A mime bundle nbformat accepts: JSON mime types keep their (cleaned) structure, every
    other one is text — str as is, bytes as base64 (as ipykernel sends images), a list of
    lines joined, anything else its repr."""
    cleaned: dict[str, Any] = {}
    for mime, value in list(data.items()):
        key = _text(mime) if isinstance(mime, str) else safe_repr(mime)
        if is_json_mime(key):
            cleaned[key] = json_clean(value)
        elif isinstance(value, str):
            cleaned[key] = _text(value)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            cleaned[key] = base64.b64encode(value).decode("ascii")
        elif isinstance(value, list) and all(isinstance(line, str) for line in value):
            cleaned[key] = "".join(_text(line) for line in value)
        else:
            cleaned[key] = safe_repr(value)
    return cleaned


def clean_metadata(metadata: Any) -> dict[str, Any]:
    if not isinstance(metadata, dict) or not metadata:
        return {}
    cleaned = json_clean(metadata)
    return cleaned if isinstance(cleaned, dict) else {}

"""An execution result shaped for a model's context: the one rendering behind MCP's
`execute_python` and `dispatch_tool_call` (OpenAI and Anthropic).

- Text (stdout, stderr, displayed text, the last value, the error) shares one character budget,
  `max_output_chars`; a section over its share keeps its head *and* tail (errors are usually at
  the end) with a line saying what was cut and where the full text is.
- Images (`image/png`, `image/jpeg` outputs) become image content, downscaled to a bounded edge
  and byte size with Pillow when it is installed; without Pillow an image under the byte bound is
  passed through and a larger one is omitted with a note. OpenAI function results are text only:
  there each image is a one-line description.
- A DataFrame (a `text/html` table) is its `text/plain` form plus its shape.
- An error is its name, message and the last few traceback frames.

`ShapedOutput` is neutral; `for_mcp`, `for_anthropic` and `for_openai` render it.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any

from lci.models import ExecutionResult
from lci.units import seconds_wording

DEFAULT_MAX_OUTPUT_CHARS = 20_000
# Long edge of an image shown to a model; a default matplotlib figure (640x480) is untouched.
DEFAULT_MAX_IMAGE_EDGE_PX = 1024
DEFAULT_MAX_IMAGE_BYTES = 800_000
DEFAULT_MAX_IMAGES = 8
DEFAULT_MAX_TRACEBACK_FRAMES = 3
# Smallest long edge tried when shrinking an image under the byte bound.
_MIN_IMAGE_EDGE_PX = 256
# One traceback frame (source context included) is cut to this many characters.
_MAX_FRAME_CHARS = 2_000
# Files listed in the text; the rest are counted.
_MAX_LISTED_FILES = 10
IMAGE_MIME_TYPES = ("image/png", "image/jpeg")
_SHAPE_IN_TEXT = re.compile(r"\[(\d+) rows x (\d+) columns\]\s*$")
# pandas writes U+00D7 (the multiplication sign) between the counts in HTML.
_SHAPE_IN_HTML = re.compile(r"(\d+) rows \u00d7 (\d+) columns")


@dataclass(frozen=True)
class ShapingLimits:
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    max_image_edge_px: int = DEFAULT_MAX_IMAGE_EDGE_PX
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_images: int = DEFAULT_MAX_IMAGES
    max_traceback_frames: int = DEFAULT_MAX_TRACEBACK_FRAMES

    def __post_init__(self) -> None:
        if self.max_output_chars < 1000:
            raise ValueError("max_output_chars must be at least 1000")


@dataclass
class ShapedImage:
    data: bytes
    mime_type: str
    index: int  # 1-based among the images of the result
    total: int
    width: int | None = None
    height: int | None = None
    note: str = ""  # e.g. "downscaled from 2400x1800"

    @property
    def base64(self) -> str:
        return base64.b64encode(self.data).decode()

    def describe(self) -> str:
        size = f" {self.width}x{self.height}" if self.width and self.height else ""
        note = f", {self.note}" if self.note else ""
        kind = self.mime_type.split("/")[-1].upper()
        return f"image {self.index} of {self.total}: {kind}{size}{note}"


@dataclass
class ShapedOutput:
    """Text sections in order, the images, and whether the tool call itself failed (bad
    arguments, API error): a run whose code raised is a successful tool call."""

    sections: list[str] = field(default_factory=list)
    images: list[ShapedImage] = field(default_factory=list)
    image_notes: list[str] = field(default_factory=list)  # images omitted, and why
    is_error: bool = False

    def text(self, *, images_attached: bool) -> str:
        parts = list(self.sections)
        lines = [
            f"[{image.describe()}{' (attached)' if images_attached else ''}]"
            for image in self.images
        ]
        lines += [f"[{note}]" for note in self.image_notes]
        if self.images and not images_attached:
            lines.append(
                "[images are not included in a text result: to share one, save it to a file "
                "(e.g. fig.savefig('plot.png')) and give its download link]"
            )
        if lines:
            parts.append("\n".join(lines))
        return "\n\n".join(parts) or "(no output)"

    def for_openai(self) -> str:
        """OpenAI function results are text: images are described, not attached."""
        return self.text(images_attached=False)

    def for_anthropic(self) -> list[dict[str, Any]]:
        """Content blocks of an Anthropic `tool_result`: text, then base64 image blocks."""
        blocks: list[dict[str, Any]] = [{"type": "text", "text": self.text(images_attached=True)}]
        blocks += [
            {
                "type": "image",
                "source": {"type": "base64", "media_type": image.mime_type, "data": image.base64},
            }
            for image in self.images
        ]
        return blocks

    def for_mcp(self) -> list[dict[str, Any]]:
        """MCP content blocks (`TextContent`, `ImageContent`) as plain dicts."""
        blocks: list[dict[str, Any]] = [{"type": "text", "text": self.text(images_attached=True)}]
        blocks += [
            {"type": "image", "data": image.base64, "mimeType": image.mime_type}
            for image in self.images
        ]
        return blocks


def tool_error(message: str) -> ShapedOutput:
    """A failed tool call (bad arguments, API refusal): text the model can act on."""
    return ShapedOutput(sections=[f"Error: {message}"], is_error=True)


def shape_result(
    result: ExecutionResult, limits: ShapingLimits | None = None, *, note: str = ""
) -> ShapedOutput:
    limits = limits or ShapingLimits()
    where = _full_text_hint(result)
    fixed: list[str] = [note] if note else []
    budgeted: list[tuple[str, str, str]] = []  # (title, text, what the cut-line names)
    if result.stdout:
        budgeted.append(("stdout:", result.stdout.rstrip("\n"), "stdout"))
    if result.stderr:
        budgeted.append(("stderr:", result.stderr.rstrip("\n"), "stderr"))
    for index, text in enumerate(_displayed_texts(result.outputs), start=1):
        budgeted.append((f"display {index}:", text, "this display"))
    if result.result is not None:
        value = _value_text(result.result)
        if value:
            budgeted.append(("result:", value, "the result"))
    if result.error is not None:
        budgeted.append(("error:", _error_text(result, limits), "the error"))
    tail: list[str] = []
    if result.status not in ("ok", "error"):
        tail.append(f"status: {result.status}")
    for name in ("stdout", "stderr"):
        if getattr(result, f"{name}_truncated"):
            tail.append(
                f"note: the server kept only part of {name}: it was over the server's size limit"
            )
    files = _files_text(result, with_links=True)
    if len(files) > limits.max_output_chars // 4:  # presigned links are long
        files = _files_text(result, with_links=False)
    if files:
        tail.append(files)
    if result.warnings:
        tail.append("warnings:\n" + "\n".join(f"- {w}" for w in result.warnings))
    shaped = ShapedOutput(is_error=False)
    shaped.images, shaped.image_notes = _images(result.outputs, limits)
    # What is not budgeted (titles, notes, files, the image lines) comes off the budget first.
    overhead = sum(len(part) + 2 for part in fixed + tail)
    overhead += sum(len(title) + 3 for title, _, _ in budgeted)
    overhead += (
        len(shaped.text(images_attached=False)) if shaped.images or shaped.image_notes else 0
    )
    budget = max(limits.max_output_chars - overhead, limits.max_output_chars // 2)
    shares = _fair_shares([len(text) for _, text, _ in budgeted], budget)
    shaped.sections = list(fixed)
    for (title, text, label), share in zip(budgeted, shares, strict=True):
        shaped.sections.append(f"{title}\n{keep_head_and_tail(text, share, label, where)}")
    shaped.sections += tail
    return shaped


# --- text -----------------------------------------------------------------------------------------


def keep_head_and_tail(text: str, budget: int, label: str, where: str) -> str:
    """`text` if it fits `budget` characters; else its head and tail (cut at line ends when
    possible) around one line saying how much was cut and where the full text is."""
    if len(text) <= budget:
        return text
    marker_room = 200 + len(where)
    room = max(budget - marker_room, 0)
    head_room = room * 2 // 5  # the tail gets more: errors and summaries come last
    tail_room = room - head_room
    head = text[:head_room]
    if "\n" in head:
        head = head[: head.rindex("\n")]
    tail = text[len(text) - tail_room :] if tail_room else ""
    if "\n" in tail:
        tail = tail[tail.index("\n") + 1 :]
    cut = text[len(head) : len(text) - len(tail)]
    lines_cut = cut.count("\n") - (1 if head else 0)
    marker = (
        f"[... {len(cut):,} characters ({max(lines_cut, 0):,} lines) cut from the middle of "
        f"{label}; {where}]"
    )
    return "\n".join(part for part in (head, marker, tail) if part)


def _full_text_hint(result: ExecutionResult) -> str:
    if not result.execution_id:
        return "the full text is in the execution result"
    return f"the full text: GET /v1/executions/{result.execution_id}"


def _fair_shares(lengths: list[int], budget: int) -> list[int]:
    """Split `budget` so short sections keep everything and long ones share the rest evenly."""
    shares = [0] * len(lengths)
    remaining = budget
    pending = sorted(range(len(lengths)), key=lambda i: lengths[i])
    while pending:
        fair = remaining // len(pending)
        index = pending.pop(0)
        shares[index] = min(lengths[index], fair)
        remaining -= shares[index]
    return shares


def _value_text(bundle: dict[str, Any]) -> str:
    text = bundle.get("text/plain")
    if not isinstance(text, str):
        kinds = ", ".join(sorted(bundle)) or "nothing"
        return f"(a value with no text form: {kinds})"
    html = bundle.get("text/html")
    if isinstance(html, str) and "<table" in html:
        shape = dataframe_shape(text, html)
        if shape is not None:
            return f"{text}\n(DataFrame: {shape[0]:,} rows x {shape[1]:,} columns)"
    return text


def dataframe_shape(text: str, html: str) -> tuple[int, int] | None:
    """(rows, columns) of a pandas table: from the text form's "[N rows x M columns]" (shown
    when pandas truncates), the HTML's "N rows by M columns" footer, or by counting the HTML
    body."""
    for pattern, source in ((_SHAPE_IN_TEXT, text), (_SHAPE_IN_HTML, html)):
        match = pattern.search(source)
        if match:
            return int(match.group(1)), int(match.group(2))
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    rows = body.split("<tr")[1:]
    if not rows:
        return None
    # Row labels are <th> cells: the <td> cells of a body row are the data columns.
    return len(rows), rows[0].count("<td")


def _displayed_texts(outputs: list[dict[str, Any]]) -> list[str]:
    """The text of `display()` outputs that are not images (those are shown as images)."""
    texts = []
    for output in outputs:
        if output.get("output_type") != "display_data":
            continue
        data = output.get("data") or {}
        if any(kind in data for kind in IMAGE_MIME_TYPES):
            continue
        text = _value_text(data)
        if text:
            texts.append(text)
    return texts


def _error_text(result: ExecutionResult, limits: ShapingLimits) -> str:
    error = result.error
    assert error is not None
    value = seconds_wording(error.value)
    headline = f"{error.name}: {value}" if value else error.name
    frames = [entry for entry in error.traceback if _is_frame(entry, error.name)]
    if not frames:
        return headline
    kept = frames[-limits.max_traceback_frames :]
    lines = ["Traceback (most recent call last):"]
    if len(frames) > len(kept):
        lines.append(f"[{len(frames) - len(kept)} earlier frame(s) omitted]")
    for frame in kept:
        frame = frame.rstrip("\n")
        if len(frame) > _MAX_FRAME_CHARS:
            frame = "[...]\n" + frame[-_MAX_FRAME_CHARS:]
        lines.append(frame)
    lines.append(headline)
    return "\n".join(lines)


def _is_frame(entry: str, name: str) -> bool:
    """Not IPython's `-----` rule, its "Traceback (most recent call last)" header, or the
    closing "Name: message" line (the headline already says it)."""
    stripped = entry.strip()
    if not stripped or set(stripped) <= {"-"}:
        return False
    if stripped.endswith("Traceback (most recent call last)"):
        return False
    return not (stripped == name or stripped.startswith(f"{name}:"))


def _files_text(result: ExecutionResult, *, with_links: bool) -> str:
    if not result.files:
        return ""
    how = "the file tools or these links" if with_links else "the file tools"
    lines = [f"files written (download them with {how}):"]
    for file in result.files[:_MAX_LISTED_FILES]:
        link = f" {file.download_url}" if file.download_url and with_links else ""
        lines.append(f"- {file.path} ({file.size:,} bytes){link}")
    if len(result.files) > _MAX_LISTED_FILES:
        lines.append(f"- and {len(result.files) - _MAX_LISTED_FILES} more")
    return "\n".join(lines)


# --- images ---------------------------------------------------------------------------------------


def _images(
    outputs: list[dict[str, Any]], limits: ShapingLimits
) -> tuple[list[ShapedImage], list[str]]:
    found: list[tuple[str, str]] = []
    for output in outputs:
        if output.get("output_type") not in ("display_data", "execute_result"):
            continue
        data = output.get("data") or {}
        for mime in IMAGE_MIME_TYPES:
            if isinstance(data.get(mime), str):
                found.append((mime, data[mime]))
                break
    total = len(found)
    images: list[ShapedImage] = []
    notes: list[str] = []
    for index, (mime, encoded) in enumerate(found, start=1):
        if index > limits.max_images:
            notes.append(
                f"images {index}-{total} of {total} not shown: at most {limits.max_images} "
                "per result"
            )
            break
        try:
            raw = base64.b64decode(encoded, validate=False)
        except (binascii.Error, ValueError):
            notes.append(f"image {index} of {total} omitted: it is not valid base64")
            continue
        image, note = bound_image(raw, mime, limits)
        if image is None:
            notes.append(f"image {index} of {total} omitted: {note}")
            continue
        image.index, image.total = index, total
        images.append(image)
    return images, notes


def _pillow() -> Any:
    """Pillow's Image module, or None: it is optional (`pip install pillow`)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def bound_image(raw: bytes, mime: str, limits: ShapingLimits) -> tuple[ShapedImage | None, str]:
    """The image within `max_image_edge_px` and `max_image_bytes`, or (None, why not)."""
    image_module = _pillow()
    if image_module is None:
        if len(raw) <= limits.max_image_bytes:
            return ShapedImage(raw, mime, 0, 0), ""
        return None, (
            f"{len(raw):,} bytes is over the {limits.max_image_bytes:,}-byte bound "
            "(install Pillow to have it downscaled)"
        )
    try:
        with image_module.open(io.BytesIO(raw)) as opened:
            opened.load()
            picture = opened.copy()
    except Exception:  # Pillow raises many types for undecodable data
        if len(raw) <= limits.max_image_bytes:
            return ShapedImage(raw, mime, 0, 0), ""
        return None, f"{len(raw):,} bytes that could not be decoded to downscale"
    width, height = picture.size
    if max(width, height) <= limits.max_image_edge_px and len(raw) <= limits.max_image_bytes:
        return ShapedImage(raw, mime, 0, 0, width, height), ""
    edge = min(max(width, height), limits.max_image_edge_px)
    while True:
        smaller = picture.copy()
        smaller.thumbnail((edge, edge))
        if smaller.mode not in ("RGB", "RGBA", "L", "LA", "P"):
            smaller = smaller.convert("RGBA")
        buffer = io.BytesIO()
        smaller.save(buffer, format="PNG", optimize=True)
        size = buffer.tell()
        if size <= limits.max_image_bytes:
            note = f"downscaled from {width}x{height}" if smaller.size != (width, height) else ""
            shaped = ShapedImage(
                buffer.getvalue(), "image/png", 0, 0, smaller.width, smaller.height, note
            )
            return shaped, ""
        if edge <= _MIN_IMAGE_EDGE_PX:
            break
        # Bytes grow with the area: shrink the edge by the square root of the excess, a bit more.
        scale = 0.9 * math.sqrt(limits.max_image_bytes / size)
        edge = max(min(int(edge * scale), edge - 1), _MIN_IMAGE_EDGE_PX)
    return None, (
        f"{width}x{height}, still over {limits.max_image_bytes:,} bytes at {_MIN_IMAGE_EDGE_PX} px"
    )

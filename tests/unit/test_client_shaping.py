"""`lci.shaping`: what a model reads back from a run — head and tail within the budget, images
as bounded image content (with and without Pillow), DataFrames with their shape, bounded
tracebacks, and the three renderings (MCP, Anthropic, OpenAI)."""

from __future__ import annotations

import base64
import io

import lci.shaping as shaping
import pytest
from lci.models import ExecutionResult
from lci.shaping import ShapingLimits, dataframe_shape, keep_head_and_tail, shape_result
from PIL import Image

from .client_fakes import image_output, png_bytes, result


def _shape(limits: ShapingLimits | None = None, **fields):
    return shape_result(ExecutionResult.from_dict(result(**fields)), limits)


def test_a_200k_line_stdout_keeps_first_and_last_lines_within_the_budget():
    stdout = "".join(f"line {i}\n" for i in range(200_000))
    text = _shape(stdout=stdout, stderr="warning: careful\n").for_openai()
    assert len(text) <= shaping.DEFAULT_MAX_OUTPUT_CHARS
    assert "\nline 0\n" in text and "line 199999" in text
    assert "warning: careful" in text  # the short stream is kept whole
    assert "cut from the middle of stdout" in text
    assert "GET /v1/executions/e1" in text  # where the full text is


def test_head_and_tail_cut_at_line_ends_and_say_how_much_was_cut():
    text = "\n".join(f"row {i:04d}" for i in range(1000))
    kept = keep_head_and_tail(text, 1000, "stdout", "see e1")
    head, marker, tail = kept.split("\n")[0], kept.splitlines(), kept.split("\n")[-1]
    assert head == "row 0000" and tail == "row 0999"
    assert any(line.startswith("[... ") and "see e1" in line for line in marker)
    assert len(kept) <= 1000
    assert keep_head_and_tail("short", 1000, "stdout", "x") == "short"


def test_a_custom_budget_is_honoured():
    text = _shape(ShapingLimits(max_output_chars=2000), stdout="x" * 50_000).for_openai()
    assert len(text) <= 2000


def test_server_side_truncation_and_status_are_said():
    text = _shape(
        stdout="head only", stdout_truncated=True, status="timeout", success=False
    ).for_openai()
    assert "server kept only part of stdout" in text
    assert "status: timeout" in text


def test_images_become_image_content_for_mcp_and_anthropic_and_a_line_for_openai():
    png = png_bytes(640, 480)
    shaped = _shape(outputs=[image_output(png)])
    mcp = shaped.for_mcp()
    assert mcp[1] == {
        "type": "image",
        "data": base64.b64encode(png).decode(),
        "mimeType": "image/png",
    }
    assert "image 1 of 1: PNG 640x480 (attached)" in mcp[0]["text"]
    anthropic = shaped.for_anthropic()
    assert anthropic[1]["type"] == "image"
    assert anthropic[1]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": base64.b64encode(png).decode(),
    }
    openai = shaped.for_openai()
    assert "image 1 of 1: PNG 640x480" in openai and "attached" not in openai
    assert "iVBOR" not in openai  # no base64 in a text result


def test_a_large_image_is_downscaled_within_the_edge_and_byte_bounds():
    limits = ShapingLimits(max_image_edge_px=500, max_image_bytes=300_000)
    shaped = _shape(limits, outputs=[image_output(png_bytes(2000, 1000))])
    (image,) = shaped.images
    with Image.open(io.BytesIO(image.data)) as opened:
        assert opened.size == (500, 250)
    assert len(image.data) <= 300_000
    assert "downscaled from 2000x1000" in shaped.for_openai()
    # Noise does not compress: it has to get smaller still to fit the byte bound.
    noisy = _shape(limits, outputs=[image_output(png_bytes(900, 900, noisy=True))])
    (image,) = noisy.images
    assert len(image.data) <= 300_000 and max(image.width or 0, image.height or 0) < 500


def test_without_pillow_small_images_pass_through_and_large_ones_are_omitted(monkeypatch):
    monkeypatch.setattr(shaping, "_pillow", lambda: None)
    small, large = png_bytes(100, 100), png_bytes(800, 800, noisy=True)
    shaped = _shape(
        ShapingLimits(max_image_bytes=100_000), outputs=[image_output(small), image_output(large)]
    )
    assert [image.data for image in shaped.images] == [small]
    text = shaped.for_mcp()[0]["text"]
    assert "image 2 of 2 omitted" in text and "install Pillow" in text


def test_images_past_the_count_bound_are_counted_not_sent():
    outputs = [image_output(png_bytes(10, 10)) for _ in range(5)]
    shaped = _shape(ShapingLimits(max_images=2), outputs=outputs)
    assert len(shaped.images) == 2
    assert "images 3-5 of 5 not shown" in shaped.for_openai()


def test_dataframes_show_their_text_and_shape():
    pandas = pytest.importorskip("pandas")
    small = pandas.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]})
    text = _shape(result={"text/plain": repr(small), "text/html": small._repr_html_()}).for_openai()
    assert repr(small) in text and "(DataFrame: 3 rows x 2 columns)" in text
    big = pandas.DataFrame({f"c{i}": range(1000) for i in range(30)})
    assert dataframe_shape(repr(big), big._repr_html_()) == (1000, 30)
    indexed = small.set_index("a")
    assert dataframe_shape(repr(indexed), indexed._repr_html_()) == (3, 1)
    # display(df) is shaped the same way.
    display = {"output_type": "display_data", "data": {"text/plain": "t", "text/html": "<p>"}}
    assert "display 1:\nt" in _shape(outputs=[display]).for_openai()


def test_errors_are_name_message_and_the_last_frames():
    frames = [f"Cell In[1], line {i}, in f{i}\n----> {i} f{i + 1}()\n" for i in range(10)]
    traceback = ["-" * 75, "ZeroDivisionError    Traceback (most recent call last)", *frames]
    traceback.append("ZeroDivisionError: division by zero")
    error = {"name": "ZeroDivisionError", "value": "division by zero", "traceback": traceback}
    text = _shape(status="error", success=False, error=error).for_openai()
    assert text.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "[7 earlier frame(s) omitted]" in text
    assert "in f9" in text and "in f7" in text and "in f6" not in text
    assert "-" * 75 not in text


def test_the_time_limit_is_said_in_seconds():
    error = {
        "name": "TimeoutError",
        "value": "execution exceeded the time limit of 2500 ms",
        "traceback": [],
    }
    text = _shape(status="timeout", success=False, error=error).for_openai()
    assert "time limit of 2.5 s" in text and "ms" not in text


def test_files_are_listed_with_their_links_and_an_empty_run_says_so():
    files = [{"path": "out.csv", "size": 12, "download_url": "http://s3/out.csv"}]
    assert "- out.csv (12 bytes) http://s3/out.csv" in _shape(files=files).for_openai()
    assert _shape().for_openai() == "(no output)"


def test_everything_at_once_stays_within_the_budget_and_long_links_are_dropped():
    files = [
        {"path": f"out/{i}.csv", "size": 1, "download_url": "http://s3/" + "q" * 900}
        for i in range(40)
    ]
    outputs = [image_output(png_bytes(10, 10)) for _ in range(12)]
    shaped = _shape(
        ShapingLimits(max_output_chars=5000),
        stdout="o\n" * 100_000,
        stderr="e\n" * 100_000,
        files=files,
        outputs=outputs,
        warnings=["w"],
    )
    for text in (shaped.for_openai(), shaped.for_mcp()[0]["text"]):
        assert len(text) <= 5000
        assert "- out/0.csv (1 bytes)" in text and "qqqq" not in text and "and 30 more" in text

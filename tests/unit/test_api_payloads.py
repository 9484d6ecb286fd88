"""Results and notebooks fitted into one API response (lambdas/api/service/payloads.py): the
final proxy response stays under the budget whatever the output, large parts keep their head
and tail inline and are handed back whole for their link (issue 12, item 2)."""

from __future__ import annotations

import json

import nbformat
import pytest

from lambdas.api.service import payloads
from lambdas.shared import limits
from lambdas.shared.models import ExecutionError, ExecutionResult, ExecutionStatus

BUDGET = limits.API_RESPONSE_BUDGET_BYTES
MIB = 1024 * 1024


def _result(stdout: str = "", outputs: list | None = None, **extra) -> ExecutionResult:
    if outputs is None:
        outputs = [{"output_type": "stream", "name": "stdout", "text": stdout}] if stdout else []
    return ExecutionResult(
        execution_id="e1",
        status=ExecutionStatus.OK,
        success=True,
        stdout=stdout,
        outputs=outputs,
        **extra,
    )


def test_the_proxy_size_counts_the_second_encoding() -> None:
    assert payloads.proxy_response_bytes({"stdout": '"' * 1000}) > 4000
    assert payloads.proxy_response_bytes({"stdout": "\x01" * 1000}) > 7000


def test_a_result_that_fits_is_left_alone() -> None:
    result = _result("4\n")
    before = result.model_dump()
    assert payloads.fit_result(result, BUDGET) == []
    assert result.model_dump() == before


@pytest.mark.parametrize("char", ['"', "\x01", "\U0001f600", "é"])
def test_a_large_stream_keeps_head_and_tail_and_is_handed_back_whole(char: str) -> None:
    text = "START" + char * (MIB - 10) + "END\n"
    result = _result(text)
    spills = payloads.fit_result(result, BUDGET)
    assert payloads.proxy_response_bytes(result.model_dump(mode="json")) <= BUDGET
    by_part = {spill.part: spill for spill in spills}
    assert by_part["stdout"].data.decode() == text
    assert json.loads(by_part["outputs"].data)[0]["text"] == text
    assert result.stdout.startswith("START") and result.stdout.endswith("END\n")
    assert "stdout_url" in result.stdout
    assert result.outputs[0]["text"].startswith("START")
    assert any("stdout_url" in warning for warning in result.warnings)


def test_a_stream_under_the_part_minimum_stays_inline_when_the_rest_makes_room() -> None:
    result = _result("small\n" * 10, outputs=[_image(i) for i in range(80)])
    spills = payloads.fit_result(result, BUDGET)
    assert [spill.part for spill in spills] == ["outputs"]
    assert result.stdout == "small\n" * 10 and result.stdout_url is None
    assert all("image/png" not in output["data"] for output in result.outputs)
    assert "outputs_url" in result.outputs[0]["data"]["text/plain"]
    assert len(json.loads(spills[0].data)) == 80


def _image(n: int) -> dict:
    return {
        "output_type": "display_data",
        "data": {"image/png": "A" * 100_000, "text/plain": f"<Figure {n}>"},
        "metadata": {},
    }


def test_a_great_many_small_outputs_keep_their_head_and_tail() -> None:
    outputs = [
        {"output_type": "display_data", "data": {"text/plain": f'"{n}" ' * 40}, "metadata": {}}
        for n in range(40_000)
    ]
    result = _result(outputs=outputs)
    spills = payloads.fit_result(result, BUDGET)
    assert payloads.proxy_response_bytes(result.model_dump(mode="json")) <= BUDGET
    assert [spill.part for spill in spills] == ["outputs"]
    assert result.outputs[0] == outputs[0] and result.outputs[-1] == outputs[-1]
    assert any("outputs left out" in str(o.get("text", "")) for o in result.outputs)


def test_a_huge_error_is_shortened_inline_and_kept_whole_in_the_outputs() -> None:
    value = '"' * (600 * 1024)
    error_output = {"output_type": "error", "ename": "E", "evalue": value, "traceback": [value]}
    result = _result(
        outputs=[error_output],
        error=ExecutionError(name="E", value=value, traceback=[value] * 3),
    )
    result.status, result.success = ExecutionStatus.ERROR, False
    spills = payloads.fit_result(result, BUDGET)
    assert payloads.proxy_response_bytes(result.model_dump(mode="json")) <= BUDGET
    assert json.loads(spills[0].data)[0]["evalue"] == value
    assert result.error is not None and "outputs_url" in result.error.value


def test_a_notebook_too_large_keeps_head_and_tail_cells_and_stays_valid() -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"lci": {"session_id": "s1"}}
    for n in range(1, 41):
        notebook.cells.append(
            nbformat.v4.new_code_cell(
                source=f"print({n})",
                execution_count=n,
                outputs=[
                    nbformat.v4.new_output("stream", name="stdout", text=f"{n}:" + '"' * 30_000),
                    nbformat.v4.new_output(
                        "display_data", data={"image/png": "B" * 200_000, "text/plain": "fig"}
                    ),
                ],
            )
        )
    document = json.loads(json.dumps(notebook))
    assert payloads.fit_notebook(document, BUDGET) is True
    assert payloads.proxy_response_bytes(document) <= BUDGET
    nbformat.validate(nbformat.from_dict(document))
    counts = [c.get("execution_count") for c in document["cells"] if c["cell_type"] == "code"]
    assert counts[0] == 1 and counts[-1] == 40 and counts == sorted(counts)
    markers = [c for c in document["cells"] if c["cell_type"] == "markdown"]
    if len(counts) < 40:
        assert len(markers) == 1 and "notebook_url" in markers[0]["source"]
    small = json.loads(json.dumps(nbformat.v4.new_notebook()))
    assert payloads.fit_notebook(small, BUDGET) is False

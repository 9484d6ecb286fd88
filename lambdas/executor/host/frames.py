"""The worker's frames as the trusted parent reads them: the shapes of protocol.py as pydantic
models, validated leniently. A field of the wrong type becomes its empty value (a garbled cell
is a clean error, never a crash of the parent), paths are checked, and streams are capped on
the way in. Host side only: the sandbox builds the same shapes as plain dicts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from lambdas.executor import protocol
from lambdas.executor.protocol import CellStatus
from lambdas.executor.sandbox.workspace import safe_relative_path

# Validation context key: the stream cap (characters) applied to cells read by the parent.
STREAM_CAP = "stream_cap"


# ---------------------------------------------------------------------------------------------
# Lenient field types: what a hostile worker can put there is coerced, never raised on
# ---------------------------------------------------------------------------------------------


def _str_list(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _dicts_only(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _dict_list(value: Any) -> list[Any]:
    """Entries that can be a model (a dict from the wire, a model built by the worker)."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, (dict, BaseModel))]


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _text_or_empty(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _size_or_zero(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


StrList = Annotated[list[str], BeforeValidator(_str_list)]
AnyStr = Annotated[str, BeforeValidator(str)]
Flag = Annotated[bool, BeforeValidator(bool)]
Text = Annotated[str, BeforeValidator(_text_or_empty)]
MimeBundle = Annotated[dict[str, Any] | None, BeforeValidator(_dict_or_none)]
Outputs = Annotated[list[dict[str, Any]], BeforeValidator(_dicts_only)]


def _status_or_error(value: Any) -> Any:
    return value if isinstance(value, str) and value in _STATUS_VALUES else CellStatus.ERROR


_STATUS_VALUES = frozenset(status.value for status in CellStatus)


class CellError(BaseModel):
    name: AnyStr = "Error"
    value: AnyStr = ""
    traceback: StrList = Field(default_factory=list)


def _error_or_none(value: Any) -> Any:
    return value if isinstance(value, (dict, CellError)) else None


class Cell(BaseModel):
    """One cell's outcome, as the worker reports it: the streams, the nbformat v4 outputs in
    order, the last expression's mime bundle, the error. `Cell()` is a cell before anything ran."""

    model_config = ConfigDict(use_enum_values=True)

    status: Annotated[CellStatus, BeforeValidator(_status_or_error)] = CellStatus.ERROR
    stdout: Text = ""
    stderr: Text = ""
    stdout_truncated: Flag = False
    stderr_truncated: Flag = False
    result: MimeBundle = None
    outputs: Outputs = Field(default_factory=list)
    error: Annotated[CellError | None, BeforeValidator(_error_or_none)] = None
    warnings: StrList = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> Cell:
        if self.error is None and self.status != CellStatus.OK:
            self.error = CellError(name="Error", value="the cell failed")
        cap = info.context.get(STREAM_CAP) if info.context else None
        if cap is not None:
            self.stdout, cut = protocol.keep_head_and_tail(self.stdout, cap)
            self.stdout_truncated = self.stdout_truncated or cut
            self.stderr, cut = protocol.keep_head_and_tail(self.stderr, cap)
            self.stderr_truncated = self.stderr_truncated or cut
        return self

    @classmethod
    def failed(cls, name: str, message: str) -> Cell:
        """A cell that never ran: one error, shown as its only output."""
        error = CellError(name=name, value=message)
        return cls(error=error, outputs=[error_output(error)])


def error_output(error: CellError) -> dict[str, Any]:
    """An error as its nbformat v4 output."""
    return {
        "output_type": "error",
        "ename": error.name,
        "evalue": error.value,
        "traceback": list(error.traceback),
    }


def _cell_or_empty(value: Any) -> Any:
    return value if isinstance(value, (dict, Cell)) else {}


def _cell_or_none(value: Any) -> Any:
    return None if value is None else _cell_or_empty(value)


_OCTET_STREAM = "application/octet-stream"


class ReportedFile(BaseModel):
    """A file the cell created or changed, relative to the workspace."""

    path: Annotated[StrictStr, AfterValidator(safe_relative_path)]
    size: StrictInt
    content_type: Annotated[
        str, BeforeValidator(lambda value: value if isinstance(value, str) else _OCTET_STREAM)
    ] = _OCTET_STREAM
    download_url: None = None  # filled in by the API function, which can presign


def _valid_files(value: Any) -> list[ReportedFile]:
    """The well-formed entries only: a path outside the workspace or a missing size drops
    that entry, not the run."""
    files: list[ReportedFile] = []
    for item in value if isinstance(value, list) else ():
        try:
            files.append(ReportedFile.model_validate(item))
        except ValidationError:
            continue
    return files


class Variable(BaseModel):
    name: AnyStr = "None"
    type: AnyStr = "None"


class StateReport(BaseModel):
    uploaded: Flag = False
    unchanged: Flag = False
    size: Annotated[int, BeforeValidator(_size_or_zero)] = 0
    dropped: StrList = Field(default_factory=list)  # not picklable, so not saved
    variables: Annotated[list[Variable], BeforeValidator(_dict_list)] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------


class PhaseFrame(BaseModel):
    """Worker -> parent, when the RunRequest asked for it: the transfers are done, the cell's
    own timeout starts now."""

    kind: Literal["phase"] = "phase"
    run: Text = ""
    phase: str = "run"


class SavingFrame(BaseModel):
    """Worker -> parent: the cell finished; saving state and files (its own budget) follows."""

    kind: Literal["saving"] = "saving"
    run: Text = ""
    cell: Annotated[Cell, BeforeValidator(_cell_or_empty)]


class PartialFrame(BaseModel):
    """Worker -> parent, asked by SIGUSR1 when the time is up: what the cell printed so far."""

    kind: Literal["partial"] = "partial"
    run: Text = ""
    cell: Annotated[Cell, BeforeValidator(_cell_or_empty)]


def _state_or_empty(value: Any) -> Any:
    return value if isinstance(value, (dict, StateReport)) else {}


class ResultFrame(BaseModel):
    """Worker -> parent, last: the cell (None if a SavingFrame carried it), its files, state."""

    kind: Literal["result"] = "result"
    run: Text = ""
    cell: Annotated[Cell | None, BeforeValidator(_cell_or_none)] = None
    late_warnings: StrList = Field(default_factory=list)  # the SavingFrame's cell went first
    files: Annotated[list[ReportedFile], BeforeValidator(_valid_files)] = Field(
        default_factory=list
    )
    state: Annotated[StateReport, BeforeValidator(_state_or_empty)] = Field(
        default_factory=StateReport
    )
    restored: Flag = False


WorkerFrame = PhaseFrame | SavingFrame | PartialFrame | ResultFrame
_WORKER_FRAME: TypeAdapter[WorkerFrame] = TypeAdapter(
    Annotated[WorkerFrame, Field(discriminator="kind")]
)


def parse_worker_frame(frame: Any, stream_cap: int | None = None) -> WorkerFrame | None:
    """A worker's frame as its model (streams capped to `stream_cap` characters), or None for
    anything that is not one of the worker's frames (ignored, like an unknown kind)."""
    try:
        return _WORKER_FRAME.validate_python(frame, context={STREAM_CAP: stream_cap})
    except ValidationError:
        return None

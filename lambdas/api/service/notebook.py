"""The session's notebook: every executed cell (code, outputs, execution_count) as nbformat v4.

A notebook too large for one API response (`payloads.fit_notebook`) is stored whole at
`notebook_export_key` and the response keeps its head and tail, linking the whole of it as
`metadata.lci.notebook_url` (a presigned GET)."""

from __future__ import annotations

import json
import logging
from typing import Any

from lambdas.api.service import payloads
from lambdas.api.service.common import Deps, load_json, notebook_export_key
from lambdas.api.service.sessions import SessionService
from lambdas.shared import limits

logger = logging.getLogger(__name__)


class NotebookService:
    def __init__(self, deps: Deps, sessions: SessionService) -> None:
        self._deps = deps
        self._sessions = sessions

    def notebook(self, principal: str, session_id: str) -> dict[str, Any]:
        import nbformat  # lazy: only this route needs it

        self._sessions.load(principal, session_id)
        notebook = nbformat.v4.new_notebook()
        notebook.metadata = {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python", "version": limits.PYTHON_VERSION},
            "lci": {"session_id": session_id},
        }
        for cell in self._deps.table.list_cells(session_id):
            outputs = [
                out for raw in load_json(self._deps, cell.outputs) or [] if (out := _output(raw))
            ]
            notebook.cells.append(
                nbformat.v4.new_code_cell(
                    source=cell.code, execution_count=cell.execution_count, outputs=outputs
                )
            )
        nbformat.validate(notebook)
        whole = json.dumps(notebook)
        document: dict[str, Any] = json.loads(whole)
        if payloads.fit_notebook(document, limits.API_RESPONSE_BUDGET_BYTES):
            key = notebook_export_key(session_id)
            self._deps.blobs.put_bytes(key, whole.encode(), "application/x-ipynb+json")
            document["metadata"]["lci"]["notebook_url"] = self._deps.blobs.presigned_get(
                key, limits.PRESIGNED_DOWNLOAD_EXPIRES_SECONDS
            )
        return document


def _output(raw: Any) -> Any:
    """One nbformat v4 output, or None when the stored dict is not a valid one (an untrusted
    executor produced it; one bad output must not make the whole notebook invalid)."""
    import nbformat

    if not isinstance(raw, dict) or "output_type" not in raw:
        return None
    try:
        output = nbformat.from_dict(raw)
        ref = _OUTPUT_REFS.get(raw["output_type"], "output")
        nbformat.validate(output, ref=ref, version=4, version_minor=5)
    except Exception:
        logger.warning("dropping an invalid notebook output of type %s", raw.get("output_type"))
        return None
    return output


_OUTPUT_REFS = {
    "stream": "stream",
    "display_data": "display_data",
    "execute_result": "execute_result",
    "error": "error",
}

"""lci: client SDK, CLI and MCP server for Lambda Code Interpreter."""

from lci.client import Client
from lci.errors import LciError
from lci.live import Execution, ExecutionEvent
from lci.models import ExecutionResult, FileInfo, PackageList, RunUsage, Session, Usage

__version__ = "0.1.0"  # the one place for the version: pyproject.toml reads it from here

__all__ = [
    "Client",
    "Execution",
    "ExecutionEvent",
    "ExecutionResult",
    "FileInfo",
    "LciError",
    "PackageList",
    "RunUsage",
    "Session",
    "Usage",
    "__version__",
]

"""lci: client SDK, CLI and MCP server for Lambda Code Interpreter."""

from lci.client import Client
from lci.errors import LciError
from lci.models import ExecutionResult, FileInfo, PackageList, Session, Usage

__all__ = ["Client", "ExecutionResult", "FileInfo", "LciError", "PackageList", "Session", "Usage"]

"""lci: client SDK, CLI and MCP server for Lambda Code Interpreter."""

"""`lci`: command line for the Lambda Code Interpreter API.

Endpoint and key come from `--endpoint`/`--api-key` or `LCI_ENDPOINT`/`LCI_API_KEY`. Output is
for humans by default; `--json` prints the API's JSON for machines. Exit status: 0 ok, 1 the code
failed or the API refused, 2 bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from lci.client import API_KEY_ENV, DEFAULT_ENDPOINT, ENDPOINT_ENV, Client
from lci.errors import LciError
from lci.models import ExecutionResult
from lci.progress import Spinner


def _common_options(suppress_defaults: bool) -> argparse.ArgumentParser:
    # Subcommands repeat the global options; their defaults are suppressed so that
    # `lci --json ls` and `lci ls --json` mean the same thing.
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress_defaults else value

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--endpoint",
        default=default(None),
        help=f"API endpoint (${ENDPOINT_ENV}, default {DEFAULT_ENDPOINT})",
    )
    common.add_argument("--api-key", default=default(None), help=f"API key (${API_KEY_ENV})")
    common.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON instead of text"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lci", description="Lambda Code Interpreter client", parents=[_common_options(False)]
    )
    common = _common_options(True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", parents=[common], help="run a Python file (- for stdin)")
    run.add_argument("file", help="Python file to run, or - to read stdin")
    run.add_argument("--session", help="run in this session (default: a one-shot run)")
    run.add_argument("--timeout", type=float, help="stop the run after SECONDS")
    run.add_argument(
        "--package", action="append", default=[], help="whitelisted package to install (repeat)"
    )

    session = commands.add_parser("session", parents=[common], help="manage sessions")
    session_commands = session.add_subparsers(dest="session_command", required=True)
    new = session_commands.add_parser("new", parents=[common], help="create a session")
    new.add_argument("--ttl", type=int, help="idle lifetime in seconds")
    show = session_commands.add_parser("show", parents=[common], help="show a session")
    show.add_argument("session_id")
    remove = session_commands.add_parser("rm", parents=[common], help="delete a session")
    remove.add_argument("session_id")

    upload = commands.add_parser("upload", parents=[common], help="upload a file to a session")
    upload.add_argument("local")
    upload.add_argument("remote", nargs="?")
    upload.add_argument("--session", required=True)

    download = commands.add_parser("download", parents=[common], help="download a session file")
    download.add_argument("remote")
    download.add_argument("local", nargs="?")
    download.add_argument("--session", required=True)

    listing = commands.add_parser("ls", parents=[common], help="list a session's files")
    listing.add_argument("--session", required=True)

    commands.add_parser("packages", parents=[common], help="list available packages")
    commands.add_parser("usage", parents=[common], help="this month's usage and quota")

    notebook = commands.add_parser("notebook", parents=[common], help="export a session")
    notebook.add_argument("--session", required=True)
    notebook.add_argument("-o", "--output", help="write the .ipynb here (default: stdout)")

    commands.add_parser(
        "doctor", parents=[common], help="which protections hold in the executor's environment"
    )
    commands.add_parser("mcp", parents=[common], help="serve the MCP tools over stdio")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client = Client(args.endpoint, args.api_key)
    try:
        if args.command == "mcp":
            from lci.mcp_server import serve

            serve(client)
            return 0
        return _dispatch(client, args, sys.stdout, sys.stderr)
    except LciError as exc:
        if args.json:
            error = {"code": exc.code, "message": exc.message, "status": exc.status}
            print(json.dumps({"error": error}), file=sys.stdout)
        else:
            print(f"lci: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"lci: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


def _dispatch(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    as_json: bool = args.json
    match args.command:
        case "run":
            code = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
            with Spinner("running", err):
                result = client.execute(
                    code,
                    session_id=args.session,
                    timeout_ms=int(args.timeout * 1000) if args.timeout else None,
                    packages=args.package or None,
                )
            if as_json:
                _print_json(result.raw, out)
            else:
                print_result(result, out, err)
            return 0 if result.success else 1
        case "session":
            return _session(client, args, out)
        case "upload":
            info = client.upload_file(args.session, args.local, args.remote)
            _emit(as_json, out, dataclasses.asdict(info), f"uploaded {args.local} -> {info.path}")
        case "download":
            target = Path(args.local or Path(args.remote).name)
            data = client.download_file(args.session, args.remote, target)
            summary = {"path": args.remote, "local": str(target), "size": len(data)}
            _emit(as_json, out, summary, f"downloaded {args.remote} -> {target} ({len(data)} B)")
        case "ls":
            files = client.list_files(args.session)
            rows = [[f.path, str(f.size), f.modified_at or ""] for f in files]
            _emit(
                as_json,
                out,
                {"files": [dataclasses.asdict(f) for f in files]},
                _table(["PATH", "SIZE", "MODIFIED"], rows) if rows else "(no files)",
            )
        case "packages":
            catalogue = client.packages()
            rows = [[p.name, p.version, p.source] for p in catalogue.packages]
            text = f"python {catalogue.python}\n" + _table(["PACKAGE", "VERSION", "SOURCE"], rows)
            _emit(as_json, out, dataclasses.asdict(catalogue), text)
        case "usage":
            usage = client.usage()
            quota = usage.quota
            text = (
                f"period      {usage.period}\n"
                f"executions  {usage.executions} / {quota.get('executions', 0) or 'unlimited'}\n"
                f"compute_ms  {usage.compute_ms} / {quota.get('compute_ms', 0) or 'unlimited'}"
            )
            _emit(as_json, out, dataclasses.asdict(usage), text)
        case "doctor":
            report = client.diagnostics()
            _emit(as_json, out, report, doctor_text(client.endpoint, report))
        case "notebook":
            document = client.notebook(args.session)
            if args.output:
                Path(args.output).write_text(json.dumps(document, indent=1))
                _emit(as_json, out, {"path": args.output}, f"wrote {args.output}")
            else:
                _print_json(document, out)
    return 0


def _session(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    if args.session_command == "new":
        session = client.create_session(args.ttl)
        _emit(args.json, out, dataclasses.asdict(session), session.session_id)
    elif args.session_command == "show":
        session = client.get_session(args.session_id)
        lines = [
            f"{name:<16}{getattr(session, name)}"
            for name in (
                "session_id",
                "status",
                "execution_count",
                "created_at",
                "last_used_at",
                "expires_at",
            )
        ]
        lines += [f"  {v.name}: {v.type}" for v in session.variables]
        _emit(args.json, out, dataclasses.asdict(session), "\n".join(lines))
    else:
        client.delete_session(args.session_id)
        _emit(args.json, out, {"deleted": args.session_id}, f"deleted {args.session_id}")
    return 0


_CHECK_MARKS = {True: "ok", False: "NO", None: "n/a"}


def doctor_text(endpoint: str, report: dict[str, Any]) -> str:
    """`lci doctor`: one line per protection of the executor, then how the API is set up."""
    lines = [f"endpoint  {endpoint}"]
    executor = report.get("executor")
    if not executor:
        lines.append(f"executor  no report: {report.get('executor_error') or 'unknown error'}")
    else:
        where = "Lambda" if executor.get("on_lambda") else "not Lambda"
        lines.append(
            f"executor  {where}, kernel {executor.get('kernel')}, python {executor.get('python')},"
            f" uid {executor.get('uid')}, checked {executor.get('checked_at')}"
        )
        for name, check in (executor.get("checks") or {}).items():
            mark = _CHECK_MARKS.get(check.get("ok"), "?")
            lines.append(f"  {mark:<4}{name:<22}{check.get('detail', '')}")
        failed = [n for n, c in (executor.get("checks") or {}).items() if c.get("ok") is False]
        lines.append(
            f"  {len(failed)} protection(s) did not take effect: {', '.join(failed)}"
            if failed
            else "  every protection that applies here holds"
        )
    for name, value in (report.get("api") or {}).items():
        lines.append(f"api       {name} = {value}")
    return "\n".join(lines)


def print_result(result: ExecutionResult, out: TextIO, err: TextIO) -> None:
    """Readable rendering: streams where they belong, the last value, errors and files."""
    if result.stdout:
        out.write(result.stdout if result.stdout.endswith("\n") else result.stdout + "\n")
    if result.stderr:
        err.write(result.stderr if result.stderr.endswith("\n") else result.stderr + "\n")
    for output in result.outputs:
        data = output.get("data") or {}
        if output.get("output_type") == "display_data":
            kinds = ", ".join(sorted(k for k in data if k != "text/plain"))
            err.write(f"[display: {kinds or 'text/plain'}]\n")
    if result.text is not None:
        out.write(result.text + "\n")
    for flag, name in ((result.stdout_truncated, "stdout"), (result.stderr_truncated, "stderr")):
        if flag:
            err.write(f"[{name} truncated]\n")
    if result.error is not None:
        err.write(
            "\n".join(result.error.traceback or [f"{result.error.name}: {result.error.value}"])
        )
        err.write("\n")
    elif not result.success:
        err.write(f"[{result.status}]\n")
    for file in result.files:
        err.write(f"[file: {file.path} ({file.size} B)]\n")
    for warning in result.warnings:
        err.write(f"[warning: {warning}]\n")


def _emit(as_json: bool, out: TextIO, document: Any, text: str) -> None:
    if as_json:
        _print_json(document, out)
    else:
        out.write(text + "\n")


def _print_json(document: Any, out: TextIO) -> None:
    out.write(json.dumps(document, indent=2, default=str) + "\n")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""`lci`: command line for the Lambda Code Interpreter API.

Endpoint and key come from `--endpoint`/`--api-key`, else `LCI_ENDPOINT`/`LCI_API_KEY`, else the
config file `lci configure` writes. Output is for humans by default; `--json` prints the API's
JSON for machines. Times are in seconds everywhere, errors included. Exit statuses: `EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from lci import __version__
from lci.client import Client
from lci.config import (
    API_KEY_ENV,
    DEFAULT_ENDPOINT,
    ENDPOINT_ENV,
    ConfigError,
    config_path,
)
from lci.errors import LciError, UsageError
from lci.following import follow
from lci.rendering import (
    TIMEOUT_OPTION,
    doctor_text,
    emit,
    print_json,
    print_result,
    save_images,
    table,
)
from lci.session_commands import session_command
from lci.setup_commands import configure, install_kernel
from lci.shaping import DEFAULT_MAX_OUTPUT_CHARS
from lci.units import seconds_to_ms, seconds_wording

EXIT_OK = 0
EXIT_CODE_FAILED = 1
EXIT_USAGE = 2
EXIT_API_ERROR = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_CODE_FAILED: "the code ran and failed (an exception, out of memory, interrupted)",
    EXIT_USAGE: "usage or configuration error (bad arguments, config, local file, missing extra)",
    EXIT_API_ERROR: "the API refused the request or could not be reached",
    EXIT_TIMEOUT: "the code hit its time limit (--timeout)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
# Optional dependency groups: what `lci <command>` imports, and the pip line that adds them.
EXTRAS = {
    "mcp": ("mcp", "mcp.server.mcpserver"),
    "jupyter": ("ipykernel.kernelbase", "jupyter_client.kernelspec"),
}
PACKAGE_NAME = "lambda-code-interpreter"


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be more than 0 seconds (got {text}); leave it out for the server's default"
        )
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 (got {text})")
    return value


def _common_options(suppress_defaults: bool) -> argparse.ArgumentParser:
    # Subcommands repeat the global options; their defaults are suppressed so that
    # `lci --json ls` and `lci ls --json` mean the same thing.
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress_defaults else value

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--endpoint",
        default=default(None),
        help=f"API endpoint (${ENDPOINT_ENV}, the config file, else {DEFAULT_ENDPOINT})",
    )
    common.add_argument(
        "--api-key", default=default(None), help=f"API key (${API_KEY_ENV}, else the config file)"
    )
    common.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON instead of text"
    )
    return common


def _epilog() -> str:
    lines = ["exit status:"]
    lines += [f"  {code:<4}{meaning}" for code, meaning in EXIT_CODES.items()]
    lines += ["", f"config file: {config_path()} (written by `lci configure`)"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lci",
        description="Lambda Code Interpreter client: run Python in a remote sandbox.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(False)],
    )
    parser.add_argument("--version", action="version", version=f"lci {__version__}")
    common = _common_options(True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, parents=[common], help=help_text, description=help_text, **kwargs
        )

    configure = command(
        "configure",
        "save the endpoint and API key to the config file (asks for what is not given)",
    )
    configure.add_argument(
        "--no-check", action="store_true", help="do not try the key against the API"
    )

    run = command("run", "run a Python file (- for stdin)")
    run.add_argument("file", help="Python file to run, or - to read stdin")
    run.add_argument("--session", help="run in this session (default: a one-shot run)")
    run.add_argument(
        TIMEOUT_OPTION,
        type=_positive_seconds,
        metavar="SECONDS",
        help="stop the code after SECONDS (more than 0; default: the server's, 30 s)",
    )
    run.add_argument(
        "--package",
        action="append",
        default=[],
        metavar="NAME",
        help="whitelisted package to install first (repeat for more)",
    )
    run.add_argument(
        "--save-images",
        metavar="DIR",
        help="write displayed images (figures) to DIR as <execution id>-<n>.png",
    )

    session = command("session", "create, fork, list, show and delete sessions")
    session_commands = session.add_subparsers(
        dest="session_command", required=True, metavar="SUBCOMMAND"
    )
    new = session_commands.add_parser(
        "new", parents=[common], help="create a session and print its id"
    )
    new.add_argument(
        "--ttl", type=_positive_int, metavar="SECONDS", help="idle lifetime (default 3600)"
    )
    session_commands.add_parser(
        "ls",
        parents=[common],
        help="list the sessions `lci session new` created with this config",
        description=(
            "The API has no route that lists sessions: `lci session new` records the sessions "
            "it creates in the config folder, and this lists those still alive on this "
            "endpoint (the ones the API no longer knows are dropped from the record). "
            "Sessions created otherwise (SDK, MCP, another machine) are not listed."
        ),
    )
    fork = session_commands.add_parser(
        "fork",
        parents=[common],
        help="copy a session (its last committed variables, files and notebook) into a new "
        "one and print its id",
    )
    fork.add_argument("session_id", help="the session to copy")
    fork.add_argument(
        "--ttl",
        type=_positive_int,
        metavar="SECONDS",
        help="idle lifetime (default: the copied one's)",
    )
    show = session_commands.add_parser("show", parents=[common], help="show a session")
    show.add_argument("session_id", help="the session's id")
    remove = session_commands.add_parser(
        "rm", parents=[common], help="delete a session, its variables and files"
    )
    remove.add_argument("session_id", help="the session's id")

    upload = command("upload", "upload a local file into a session's working directory")
    upload.add_argument("local", help="the local file to upload")
    upload.add_argument(
        "remote", nargs="?", help="path in the session (default: the local file's name)"
    )
    upload.add_argument("--session", required=True, help="the session to upload into")

    download = command("download", "download a file from a session")
    download.add_argument("remote", help="path of the file in the session")
    download.add_argument(
        "local",
        nargs="?",
        help="where to write it: a file, or a folder (existing, or ending in /) to keep the "
        "file name (default: the file name in the current folder)",
    )
    download.add_argument("--session", required=True, help="the session to download from")

    listing = command("ls", "list a session's files")
    listing.add_argument("--session", required=True, help="the session whose files to list")

    delete = command("rm", "delete a file from a session")
    delete.add_argument("path", help="path of the file in the session")
    delete.add_argument("--session", required=True, help="the session to delete it from")

    command("packages", "list available packages")
    command("usage", "this month's usage and quota")

    notebook = command("notebook", "export a session as a Jupyter notebook")
    notebook.add_argument("--session", required=True, help="the session to export")
    notebook.add_argument("-o", "--output", help="write the .ipynb here (default: stdout)")

    command("doctor", "which protections hold in the executor's environment, and the API's setup")

    mcp = command(
        "mcp", f"serve the MCP tools over stdio (needs: pip install '{PACKAGE_NAME}[mcp]')"
    )
    mcp.add_argument(
        "--root",
        default=".",
        metavar="DIR",
        help="the file tools only read and write under DIR (default: the current folder)",
    )
    mcp.add_argument(
        "--max-output-chars",
        type=_positive_int,
        default=DEFAULT_MAX_OUTPUT_CHARS,
        metavar="N",
        help="characters of text returned per tool call, head and tail kept "
        f"(default {DEFAULT_MAX_OUTPUT_CHARS})",
    )

    kernel = command("kernel", f"the Jupyter kernel (needs: pip install '{PACKAGE_NAME}[jupyter]')")
    kernel_commands = kernel.add_subparsers(
        dest="kernel_command", required=True, metavar="SUBCOMMAND"
    )
    install = kernel_commands.add_parser(
        "install",
        parents=[common],
        help="install the kernelspec for JupyterLab / VS Code",
        description="Install the kernelspec 'Python 3.13 (Lambda Code Interpreter)': each "
        "notebook gets a session, deleted when the kernel shuts down. The kernel reads "
        f"${API_KEY_ENV} (else the config file) when it starts; --endpoint is kept in the "
        "kernelspec, the key never is.",
    )
    where = install.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for the current user (the default)")
    where.add_argument(
        "--sys-prefix",
        action="store_true",
        help=f"into this Python's environment ({sys.prefix})",
    )
    where.add_argument("--prefix", metavar="DIR", help="into DIR/share/jupyter/kernels")
    install.add_argument("--name", default="lci", help="the kernel's name (default: lci)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "configure":
            configure(args, sys.stdout, sys.stderr)
            return EXIT_OK
        if args.command == "kernel":
            _require_extra("jupyter")
            install_kernel(args, sys.stdout, sys.stderr)
            return EXIT_OK
        if args.command == "mcp":
            _require_extra("mcp")
        client = Client(args.endpoint, args.api_key)
    except (UsageError, ConfigError) as exc:
        print(f"lci: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, EOFError):  # Ctrl-C / Ctrl-D at a `configure` prompt
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        if args.command == "mcp":
            return _serve_mcp(client, args)
        return _dispatch(client, args, sys.stdout, sys.stderr)
    except LciError as exc:
        message = seconds_wording(exc.message, TIMEOUT_OPTION)
        if args.json:
            error = {"code": exc.code, "message": message, "status": exc.status}
            print(json.dumps({"error": error}), file=sys.stdout)
        else:
            print(f"lci: {exc.code}: {message}", file=sys.stderr)
        return EXIT_TIMEOUT if exc.code == "WAIT_TIMEOUT" else EXIT_API_ERROR
    except (UsageError, ConfigError) as exc:
        print(f"lci: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"lci: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        client.close()


def _require_extra(extra: str) -> None:
    try:
        for module in EXTRAS[extra]:
            __import__(module)
    except ImportError:
        raise UsageError(
            f"`lci {extra}` needs the optional {extra} dependencies; install them with:\n"
            f"  pip install '{PACKAGE_NAME}[{extra}]'"
        ) from None


def _serve_mcp(client: Client, args: argparse.Namespace) -> int:
    from lci.mcp_server import serve
    from lci.paths import LocalRoot
    from lci.shaping import ShapingLimits

    try:
        root = LocalRoot(args.root)
        limits = ShapingLimits(max_output_chars=args.max_output_chars)
    except (OSError, ValueError) as exc:
        raise UsageError(f"mcp: {exc}") from exc
    serve(client, root, limits)
    return EXIT_OK


def _dispatch(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    as_json: bool = args.json
    match args.command:
        case "run":
            return _run(client, args, out, err)
        case "session":
            session_command(client, args, out, err)
        case "upload":
            info = client.upload_file(args.session, args.local, args.remote)
            emit(as_json, out, dataclasses.asdict(info), f"uploaded {args.local} -> {info.path}")
        case "download":
            target = _download_target(args.remote, args.local)
            data = client.download_file(args.session, args.remote, target)
            summary = {"path": args.remote, "local": str(target), "size": len(data)}
            emit(as_json, out, summary, f"downloaded {args.remote} -> {target} ({len(data)} B)")
        case "ls":
            files = client.list_files(args.session)
            rows = [[f.path, str(f.size), f.modified_at or ""] for f in files]
            emit(
                as_json,
                out,
                {"files": [dataclasses.asdict(f) for f in files]},
                table(["PATH", "SIZE", "MODIFIED"], rows) if rows else "(no files)",
            )
        case "rm":
            client.delete_file(args.session, args.path)
            emit(as_json, out, {"deleted": args.path}, f"deleted {args.path}")
        case "packages":
            catalogue = client.packages()
            rows = [[p.name, p.version, p.source] for p in catalogue.packages]
            text = f"python {catalogue.python}\n" + table(["PACKAGE", "VERSION", "SOURCE"], rows)
            emit(as_json, out, dataclasses.asdict(catalogue), text)
        case "usage":
            usage = client.usage()
            quota = usage.quota
            text = (
                f"period      {usage.period}\n"
                f"executions  {usage.executions} / {quota.get('executions', 0) or 'unlimited'}\n"
                f"compute_ms  {usage.compute_ms} / {quota.get('compute_ms', 0) or 'unlimited'}"
            )
            emit(as_json, out, dataclasses.asdict(usage), text)
        case "doctor":
            report = client.diagnostics()
            emit(as_json, out, report, doctor_text(client.endpoint, report))
        case "notebook":
            document = client.notebook(args.session)
            if args.output:
                Path(args.output).write_text(json.dumps(document, indent=1))
                emit(as_json, out, {"path": args.output}, f"wrote {args.output}")
            else:
                print_json(document, out)
    return EXIT_OK


def _run(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        code = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    run = client.start(
        code,
        session_id=args.session,
        timeout_ms=seconds_to_ms(args.timeout) if args.timeout is not None else None,
        packages=args.package or None,
    )
    as_json = args.json
    result = follow(run, out, err, show=not as_json, describe_displays=not args.save_images)
    if result is None:
        err.write(
            f"detached: execution {run.execution_id} goes on; see it with "
            f"GET /v1/executions/{run.execution_id}\n"
        )
        return EXIT_INTERRUPTED
    saved = save_images(result, Path(args.save_images)) if args.save_images else {}
    if as_json:
        print_json(result.raw, out)
        for path in saved.values():
            err.write(f"[image saved: {path}]\n")
    else:
        print_result(result, out, err, saved, streamed=True)
    if result.success:
        return EXIT_OK
    return EXIT_TIMEOUT if result.status == "timeout" else EXIT_CODE_FAILED


def _download_target(remote: str, local: str | None) -> Path:
    name = PurePosixPath(remote).name
    if not local:
        return Path(name)
    target = Path(local)
    if local.endswith(("/", os.sep)) or target.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return target / name
    return target


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

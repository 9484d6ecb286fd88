"""`lci configure` (endpoint and key into the config file) and `lci kernel install` (the Jupyter
kernelspec): the commands that set things up on this machine rather than call the API."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any, TextIO

from lci.client import Client
from lci.config import (
    API_KEY_ENV,
    DEFAULT_ENDPOINT,
    ENDPOINT_ENV,
    read_config_file,
    write_config_file,
)
from lci.errors import LciError, UsageError
from lci.rendering import emit


def install_kernel(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    from lci.kernelspec import DISPLAY_NAME, install

    prefix = sys.prefix if args.sys_prefix else args.prefix
    try:
        path = install(name=args.name, prefix=prefix, endpoint=args.endpoint)
    except (ValueError, OSError) as exc:
        raise UsageError(f"kernel install: {exc}") from exc
    if args.api_key:
        err.write(
            f"note: the key is not written into the kernelspec; set {API_KEY_ENV} for Jupyter "
            "or run `lci configure`\n"
        )
    summary = {"name": args.name, "display_name": DISPLAY_NAME, "path": path}
    emit(
        args.json,
        out,
        summary,
        f"installed kernel '{DISPLAY_NAME}' ({args.name}) in {path}\n"
        "pick it in JupyterLab's launcher or VS Code's kernel picker",
    )


def configure(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    stored = read_config_file()
    interactive = sys.stdin.isatty()
    endpoint = args.endpoint
    if endpoint is None:
        current = stored.get("endpoint") or DEFAULT_ENDPOINT
        endpoint = (input(f"API endpoint [{current}]: ").strip() if interactive else "") or current
    api_key = args.api_key
    if api_key is None and interactive:
        hint = " (Enter keeps the saved one)" if stored.get("api_key") else ""
        api_key = getpass.getpass(f"API key{hint}: ").strip() or None
    api_key = api_key if api_key is not None else stored.get("api_key")
    if not api_key:
        raise UsageError("configure: give the key with --api-key KEY (or run it in a terminal)")
    if not endpoint.startswith(("http://", "https://")):
        raise UsageError(f"configure: the endpoint must start with http(s):// ({endpoint})")
    path = write_config_file(endpoint.rstrip("/"), api_key)
    overridden = [name for name in (ENDPOINT_ENV, API_KEY_ENV) if os.environ.get(name)]
    summary: dict[str, Any] = {"path": str(path), "endpoint": endpoint.rstrip("/")}
    if overridden:
        err.write(f"note: {' and '.join(overridden)} set in the environment override the file\n")
    if not args.no_check:
        with Client(endpoint, api_key) as client:
            try:
                client.usage()
                summary["check"] = "ok"
            except LciError as exc:
                summary["check"] = f"{exc.code}: {exc.message}"
                err.write(f"warning: saved, but trying the key failed: {summary['check']}\n")
    emit(args.json, out, summary, f"saved {path}")

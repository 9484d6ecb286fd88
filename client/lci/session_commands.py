"""`lci session`: create, fork, list, show and delete sessions; the sessions `lci session new`
and `lci session fork` created are recorded in the config folder so `ls` can list them."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TextIO

from lci.client import Client
from lci.config import ConfigError, SessionBook
from lci.errors import LciError
from lci.rendering import emit, table


def session_command(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    book = SessionBook()
    if args.session_command in ("new", "fork"):
        if args.session_command == "new":
            session = client.create_session(args.ttl)
        else:
            session = client.fork_session(args.session_id, args.ttl)
        try:
            book.add(client.endpoint, session.session_id)
        except ConfigError as exc:
            err.write(f"warning: `lci session ls` will not list it: {exc}\n")
        emit(args.json, out, dataclasses.asdict(session), session.session_id)
    elif args.session_command == "ls":
        _list_sessions(client, book, args.json, out)
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
        emit(args.json, out, dataclasses.asdict(session), "\n".join(lines))
    else:
        try:
            client.delete_session(args.session_id)
        except LciError as exc:
            if exc.status == 404:
                book.forget(client.endpoint, {args.session_id})
            raise
        book.forget(client.endpoint, {args.session_id})
        emit(args.json, out, {"deleted": args.session_id}, f"deleted {args.session_id}")


def _list_sessions(client: Client, book: SessionBook, as_json: bool, out: TextIO) -> None:
    alive, gone = [], set()
    for record in book.records(client.endpoint):
        try:
            alive.append(client.get_session(record.session_id))
        except LciError as exc:
            if exc.status != 404:
                raise
            gone.add(record.session_id)
    if gone:
        book.forget(client.endpoint, gone)
    rows = [
        [s.session_id, s.status, str(s.execution_count), s.last_used_at or "", s.expires_at or ""]
        for s in alive
    ]
    text = (
        table(["SESSION", "STATUS", "CELLS", "LAST USED", "EXPIRES"], rows)
        if rows
        else "(no sessions created by `lci session new` on this endpoint are alive)"
    )
    document = {"sessions": [dataclasses.asdict(s) for s in alive], "pruned": sorted(gone)}
    emit(as_json, out, document, text)

"""Keep moto's DynamoDB fast as the local table grows.

moto 5 backs up every table a `TransactWriteItems` touches with `copy.deepcopy(table)` (for
rollback), so each transaction costs O(items in the table): with the API's single-table design a
local stack slows down with every execution it has stored (~50 ms per transaction after a few
hundred runs, seconds after tens of thousands). This patch backs up only the items the
transaction touches and restores exactly those on rollback; the transaction semantics
(all-or-nothing, condition failures, cancellation reasons) stay moto's own code. It also caches
the list of moto's service modules, which the server otherwise re-reads from disk per request.
"""

from __future__ import annotations

import copy
import threading
import types
from typing import Any

_installed = False
_lock = threading.Lock()


def install() -> None:
    """Patch moto's DynamoDB backend once per process (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        from moto import backends
        from moto.dynamodb import models
        from moto.dynamodb.models import DynamoDBBackend
        from moto.dynamodb.models.dynamo_type import DynamoType
        from moto.dynamodb.models.table import Table

        def deepcopy_except_tables(value: Any, memo: Any = None) -> Any:
            # The whole-table backup becomes a no-op; item backups below replace it.
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

        models.copy = types.SimpleNamespace(deepcopy=deepcopy_except_tables)  # type: ignore[assignment]
        original = DynamoDBBackend.transact_write_items

        def key_of(table: Any, op_type: str, op: dict[str, Any]) -> tuple[Any, Any]:
            source = op["Item"] if op_type == "Put" else op["Key"]
            hash_key = DynamoType(source[table.hash_key_attr])
            range_key = DynamoType(source[table.range_key_attr]) if table.has_range_key else None
            return hash_key, range_key

        def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
            backups: list[tuple[Any, Any, Any, Any]] = []
            for entry in transact_items:
                try:
                    op_type, op = next(iter(entry.items()))
                    table = self.tables.get(op.get("TableName"))
                    if table is None or op_type == "ConditionCheck":
                        continue
                    hash_key, range_key = key_of(table, op_type, op)
                    current = table.get_item(hash_key, range_key)
                    backups.append((table, hash_key, range_key, copy.deepcopy(current)))
                except Exception:  # noqa: S112 - malformed entries: moto reports them itself
                    continue
            try:
                original(self, transact_items)
            except Exception:
                for table, hash_key, range_key, item in reversed(backups):
                    _restore(table, hash_key, range_key, item)
                raise

        DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
        # moto lists its own package directory on every request to route it; the list is fixed.
        known_modules = tuple(backends.list_of_moto_modules())
        backends.list_of_moto_modules = lambda: known_modules  # type: ignore[assignment]
        _installed = True


def _restore(table: Any, hash_key: Any, range_key: Any, item: Any) -> None:
    if item is None:
        table.delete_item(hash_key, range_key)
    elif range_key is not None:
        table.items[hash_key][range_key] = item
    else:
        table.items[hash_key] = item

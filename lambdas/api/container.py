"""Dependency container: builds the services from settings, once per process.

The local stack and tests swap ports with `override(executor=..., background=..., ...)` and
drop everything built so far with `reset()`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from lambdas.api.ports import Background, Clock, Executor
from lambdas.api.service.common import Deps
from lambdas.api.service.diagnostics import DiagnosticsService
from lambdas.api.service.executions import ExecutionService
from lambdas.api.service.files import FileService
from lambdas.api.service.forks import ForkService
from lambdas.api.service.notebook import NotebookService
from lambdas.api.service.packages import LayersCatalog, PackageCatalog, PackageService
from lambdas.api.service.sessions import SessionService
from lambdas.api.service.usage import UsageService
from lambdas.api.settings import ApiSettings, get_settings


@dataclass
class Services:
    deps: Deps
    sessions: SessionService
    files: FileService
    executions: ExecutionService
    notebook: NotebookService
    packages: PackageService
    usage: UsageService
    diagnostics: DiagnosticsService
    forks: ForkService


_lock = threading.Lock()
_overrides: dict[str, Any] = {}
_services: Services | None = None


def override(
    *,
    executor: Executor | None = None,
    background: Background | None = None,
    catalog: PackageCatalog | None = None,
    settings: ApiSettings | None = None,
    clock: Clock | None = None,
) -> None:
    """Replace ports (anything left None keeps its previous override or default)."""
    global _services
    given = {
        "executor": executor,
        "background": background,
        "catalog": catalog,
        "settings": settings,
        "clock": clock,
    }
    with _lock:
        _overrides.update({k: v for k, v in given.items() if v is not None})
        _services = None


def reset() -> None:
    """Forget overrides and built services (the next request rebuilds from settings)."""
    global _services
    with _lock:
        _overrides.clear()
        _services = None


def services() -> Services:
    global _services
    with _lock:
        if _services is None:
            _services = _build(dict(_overrides))
        return _services


def _build(given: dict[str, Any]) -> Services:
    from lambdas.api.adapters.dynamodb import DynamoTable
    from lambdas.api.adapters.s3 import S3BlobStore

    settings: ApiSettings = given.get("settings") or get_settings()
    deps = Deps(
        settings=settings,
        table=DynamoTable(settings.TABLE_NAME, settings.DYNAMODB_ENDPOINT_URL),
        blobs=S3BlobStore(settings.BUCKET_NAME, settings.S3_ENDPOINT_URL),
        executor=given.get("executor") or _default_executor(settings),
        background=given.get("background") or _default_background(settings),
        catalog=given.get("catalog") or LayersCatalog(),
    )
    if given.get("clock"):
        deps.clock = given["clock"]
    sessions = SessionService(deps)
    usage = UsageService(deps)
    packages = PackageService(deps.catalog)
    return Services(
        deps=deps,
        sessions=sessions,
        files=FileService(deps, sessions),
        executions=ExecutionService(deps, sessions, usage, packages),
        notebook=NotebookService(deps, sessions),
        packages=packages,
        usage=usage,
        diagnostics=DiagnosticsService(deps),
        forks=ForkService(deps, sessions),
    )


def _default_executor(settings: ApiSettings) -> Executor:
    from lambdas.api.adapters.executor import LambdaExecutor

    if settings.EXECUTOR_MODE == "lambda":
        read_timeout = settings.MAX_TIMEOUT_MS // 1000 + 60
        return LambdaExecutor(settings.EXECUTOR_FUNCTION_NAME, read_timeout)
    raise RuntimeError("EXECUTOR_MODE=local needs container.override(executor=...)")


def _default_background(settings: ApiSettings) -> Background:
    from lambdas.api.adapters.background import LambdaBackground, ThreadBackground

    if settings.BACKGROUND_MODE == "lambda":
        return LambdaBackground(settings.SELF_FUNCTION_NAME)
    return ThreadBackground()

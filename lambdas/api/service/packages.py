"""Packages: the whitelist listing and validation of `packages` / `requirements` in requests.

The whitelist lives in `lambdas/shared/packages/catalog.py` (pure Python + whitelist.toml,
shipped with the API function); its `Catalog` satisfies `PackageCatalog` as is. A request may
name packages with or without a version specifier; anything not whitelisted, unavailable,
unsatisfiable by the pin, a URL or an option line is reported by name in one 400
`PACKAGE_NOT_ALLOWED`. The executor is then told the pinned `name==version` specs, never the
user's text.
"""

from __future__ import annotations

from typing import Any, Protocol

from lambdas.api.errors import PackageNotAllowed
from lambdas.api.models import PackageInfo, PackageList
from lambdas.shared import limits


class PackageCatalog(Protocol):
    def listing(self) -> list[dict[str, str]]: ...

    def problems(self, specs: list[str]) -> dict[str, str]: ...

    def parse_requirements(self, text: str) -> list[str]: ...

    def pinned(self, specs: list[str]) -> list[str]: ...


class LayersCatalog:
    """The deployment's whitelist (`catalog.load_catalog()`), loaded on first use."""

    def __init__(self) -> None:
        self._catalog: Any = None

    def _get(self) -> Any:
        if self._catalog is None:
            from lambdas.shared.packages.catalog import load_catalog

            self._catalog = load_catalog()
        return self._catalog

    def listing(self) -> list[dict[str, str]]:
        return list(self._get().listing())

    def problems(self, specs: list[str]) -> dict[str, str]:
        return dict(self._get().problems(specs))

    def parse_requirements(self, text: str) -> list[str]:
        return list(self._get().parse_requirements(text))

    def pinned(self, specs: list[str]) -> list[str]:
        return list(self._get().pinned(specs))


class PackageService:
    def __init__(self, catalog: PackageCatalog) -> None:
        self._catalog = catalog

    def listing(self) -> PackageList:
        return PackageList(
            python=limits.PYTHON_VERSION,
            packages=[PackageInfo.model_validate(p) for p in self._catalog.listing()],
        )

    def resolve(self, packages: list[str], requirements: str | None) -> list[str]:
        """Pinned specs for the executor; PackageNotAllowed naming every offending request."""
        requested = [p.strip() for p in packages if p.strip()]
        if requirements:
            requested += self._catalog.parse_requirements(requirements)
        if not requested:
            return []
        problems = self._catalog.problems(requested)
        if problems:
            raise PackageNotAllowed(list(problems), reasons=problems)
        return self._catalog.pinned(requested)

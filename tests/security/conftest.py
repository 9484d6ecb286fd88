"""Fixtures of the hostile-code tests: one environment per module, run as the sandbox user
(see tests/security/environment.py), replaced when a test had to kill it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import UnprivilegedUser
from tests.security.environment import Driver, Environments


@pytest.fixture(scope="module")
def environments(sandbox_user: UnprivilegedUser) -> Iterator[Environments]:
    environments = Environments(sandbox_user)
    try:
        yield environments
    finally:
        environments.close()


@pytest.fixture
def driver(environments: Environments) -> Driver:
    return environments.get()

"""The executor's environment, as one pydantic-settings model (read once per engine)."""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ExecutorSettings(BaseSettings):
    """Read from the process environment; keyword arguments override it (tests)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, case_sensitive=True)

    # Scratch root: workspaces, matplotlib/IPython config, package cache. /tmp on Lambda.
    LCI_TMP_ROOT: str = "/tmp"
    # Live session workers kept per environment (Lambda: one session per environment; the
    # in-process test setup may serve many sessions from one engine). Least recently used go.
    LCI_MAX_WORKERS: int = Field(default=16, ge=1)
    # Keep one spare worker forked ahead of need (new sessions and one-shot runs skip the fork).
    LCI_PREFORK_WORKER: bool = True
    # The engine owns this process (Lambda, `python -m lambdas.executor.serve`): it may make it
    # a child subreaper, so processes orphaned by a killed zygote still get cleaned up.
    LCI_OWN_PROCESS: bool = False
    LCI_ZYGOTE_START_TIMEOUT_S: float = Field(default=120.0, gt=0)

    @property
    def root(self) -> str:
        return os.path.join(self.LCI_TMP_ROOT, "lci")

"""Settings of the local stack, from `LCI_*` environment variables."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from local.gateway import API_GATEWAY_INTEGRATION_TIMEOUT_MS

HOST = "127.0.0.1"  # loopback only: the local stack is never reachable from the network
DEFAULT_PORT = 8080


class LocalSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, case_sensitive=True)

    LCI_PORT: int = Field(default=DEFAULT_PORT, ge=0, le=65535)  # 0: pick a free port
    LCI_API_KEY: str = ""  # comma-separated; one principal per key; empty: a random key
    LCI_TMP_ROOT: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "lci-local")
    LCI_ENV_IDLE_SECONDS: float = Field(default=600.0, gt=0)
    LCI_MAX_ENVIRONMENTS: int = Field(default=32, ge=1)
    LCI_ENV_PER_TENANT: int = Field(default=2, ge=1)
    # Started ahead of demand and handed to a new tenant, so a new session skips the cold start.
    LCI_SPARE_ENVIRONMENTS: int = Field(default=1, ge=0)
    # The laptop has a network: let on-demand packages come from PyPI unless told otherwise.
    LCI_NETWORK_MODE: Literal["isolated", "internet"] = "internet"
    LCI_ARCH: str = "x86_64"
    # Upload layer-builder's wheelhouse to the local bucket: in the background (health does not
    # wait), before health ("sync"), or not at all ("off": on-demand packages then need PyPI).
    LCI_WHEELHOUSE_UPLOAD: Literal["background", "sync", "off"] = "background"
    # Where `make layers` put its build (`<out>` of lambdas/shared/packages/layout.py);
    # None: the repository's `layers/build`.
    LCI_LAYERS_DIR: Path | None = None
    LCI_LOG_LEVEL: str = "WARNING"
    # API Gateway's integration timeout (29 s); tests shorten it to see the 504 fast.
    LCI_INTEGRATION_TIMEOUT_MS: int = Field(default=API_GATEWAY_INTEGRATION_TIMEOUT_MS, ge=1)

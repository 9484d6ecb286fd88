"""API keys of the local stack: `LCI_API_KEY` (comma-separated, one principal per key).

Like API Gateway, the API function never sees the key itself as the principal: it gets a key
*id*. Here the id is a stable hash of the key, so sessions survive restarts with the same key
and a leaked log line never reveals a usable key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_ID_PREFIX = "lk"
_KEY_ID_HEX_CHARS = 16
_GENERATED_KEY_BYTES = 24


def key_id_for(key: str) -> str:
    """Stable principal id of a key (never the key itself)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:_KEY_ID_HEX_CHARS]
    return f"{KEY_ID_PREFIX}{digest}"


def parse_keys(raw: str | None) -> list[str]:
    """`"k1, k2,,"` -> `["k1", "k2"]` (order kept, duplicates dropped)."""
    keys: list[str] = []
    for part in (raw or "").split(","):
        key = part.strip()
        if key and key not in keys:
            keys.append(key)
    return keys


def generate_key() -> str:
    return "lci-dev-" + secrets.token_urlsafe(_GENERATED_KEY_BYTES)


@dataclass(frozen=True)
class KeyRing:
    """The keys the local stack accepts; maps a presented key to its principal id."""

    keys: tuple[str, ...]
    generated: bool = False

    @classmethod
    def from_env_value(cls, raw: str | None) -> KeyRing:
        keys = parse_keys(raw)
        if keys:
            return cls(tuple(keys))
        return cls((generate_key(),), generated=True)

    def key_id(self, presented: str | None) -> str | None:
        """The principal id of a valid key, None for a missing or unknown one."""
        if not presented:
            return None
        match = None
        # Compare against every key in constant time, so timing does not reveal a prefix.
        for key in self.keys:
            if hmac.compare_digest(key.encode(), presented.encode()):
                match = key
        return key_id_for(match) if match is not None else None

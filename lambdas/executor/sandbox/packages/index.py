"""The wheelhouse index and downloads; requirement names. Runs in the sandboxed worker."""

from __future__ import annotations

# The zygote imports this module: only cheap, already-loaded modules at the top; the rest
# (urllib.request, json, packaging) when an install actually happens.
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

INDEX_FILENAME = "index.json"
DOWNLOAD_TIMEOUT_SECONDS = 120
INDEX_TIMEOUT_SECONDS = 10
# After the index could not be fetched, imports fail fast for this long instead of each one
# waiting for the network again.
INDEX_RETRY_SECONDS = 30


class PackageInstallError(RuntimeError):
    """A whitelisted package could not be installed; the message is meant for the user.

    `warnings` holds the install warnings of the other specs of the same call, which were
    installed anyway (so the result can still report them)."""

    def __init__(self, message: str, warnings: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.warnings = list(warnings)


def normalize_name(name: str) -> str:
    """PEP 503 normalisation: `Scikit_Learn` and `scikit-learn` are the same distribution."""
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def requirement_name(spec: str) -> str:
    """The distribution name of a requirement string (`"sympy>=1.12 ; python_version>'3'"`)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return normalize_name(Requirement(spec).name)
    except InvalidRequirement as exc:
        raise PackageInstallError(f"not a package requirement: {spec!r}") from exc


def _base_url(wheelhouse_url: str) -> str:
    parts = urllib.parse.urlsplit(wheelhouse_url)
    path = parts.path
    if path.endswith(".json"):
        path = path.rsplit("/", 1)[0] + "/"
    elif not path.endswith("/"):
        path += "/"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def fetch(url: str, timeout: float = DOWNLOAD_TIMEOUT_SECONDS) -> bytes:
    import urllib.request

    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise PackageInstallError(f"unsupported wheelhouse URL scheme {scheme!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            data: bytes = response.read()
            return data
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise PackageInstallError(f"cannot download {_file_name(url)}: {_reason(exc)}") from None


def _file_name(url: str) -> str:
    """What was downloaded, without where from: the wheelhouse's host and bucket are not the
    user's business (SPEC §3: never a bucket name), nor a local path."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]) or "a file"


def _reason(exc: OSError) -> str:
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".rstrip()
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror  # not str(): it names the file or host
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "timed out"
    return type(reason).__name__ if isinstance(reason, BaseException) else "unreachable"


def _redact(url: str) -> str:
    """URL without its query string (a presigned signature is nobody's business)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class WheelhouseIndex:
    """The parsed `index.json` of a wheelhouse."""

    def __init__(self, data: dict[str, Any], base_url: str) -> None:
        self.base_url = base_url
        self.packages: dict[str, dict[str, Any]] = {
            normalize_name(k): v for k, v in data.get("packages", {}).items()
        }
        self.wheels: dict[str, dict[str, Any]] = {
            normalize_name(k): v for k, v in data.get("wheels", {}).items()
        }
        self.modules: dict[str, str] = {
            k: normalize_name(v) for k, v in data.get("modules", {}).items()
        }

    @classmethod
    def load(cls, wheelhouse_url: str) -> WheelhouseIndex:
        import json

        base = _base_url(wheelhouse_url)
        index_url = (
            wheelhouse_url if _redact(wheelhouse_url).endswith(".json") else base + INDEX_FILENAME
        )
        raw = fetch(index_url, INDEX_TIMEOUT_SECONDS)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise PackageInstallError("the wheelhouse index is not valid JSON") from exc
        return cls(data, base)

    def wheel_url(self, filename: str) -> str:
        return self.base_url + urllib.parse.quote(filename)


_index_cache: dict[str, WheelhouseIndex] = {}
_index_failures: dict[str, tuple[float, PackageInstallError]] = {}
_index_lock = threading.Lock()


def get_index(wheelhouse_url: str) -> WheelhouseIndex:
    with _index_lock:
        index = _index_cache.get(wheelhouse_url)
        if index is not None:
            return index
        failure = _index_failures.get(wheelhouse_url)
        if failure is not None and time.monotonic() - failure[0] < INDEX_RETRY_SECONDS:
            raise failure[1]
        try:
            index = WheelhouseIndex.load(wheelhouse_url)
        except PackageInstallError as exc:
            _index_failures[wheelhouse_url] = (time.monotonic(), exc)
            raise
        _index_cache[wheelhouse_url] = index
        return index

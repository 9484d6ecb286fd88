"""Per-principal monthly usage counters and quotas (a quota of 0 means unlimited)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from cachetools import TTLCache

from lambdas.api.domain import UsageDelta
from lambdas.api.errors import QuotaExceeded
from lambdas.api.models import Quota, Usage
from lambdas.api.service.common import USAGE_RECORD_TTL_SECONDS, Deps, usage_period

USAGE_CACHE_SECONDS = 10.0
USAGE_CACHE_PRINCIPALS = 10_000  # principals whose counters one process keeps


class UsageService:
    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self._lock = threading.Lock()
        # Entries expire USAGE_CACHE_SECONDS after they were read from the table; a run's
        # increment changes the entry in place, so it does not extend its life.
        self._cache: TTLCache[str, _CachedUsage] = TTLCache(
            maxsize=USAGE_CACHE_PRINCIPALS, ttl=USAGE_CACHE_SECONDS
        )

    def current(self, principal: str) -> Usage:
        period = usage_period(self._deps.now())
        counters = self._deps.table.get_usage(principal, period)
        settings = self._deps.settings
        usage = Usage(
            period=period,
            executions=counters.executions,
            compute_ms=counters.compute_ms,
            quota=Quota(executions=settings.QUOTA_EXECUTIONS, compute_ms=settings.QUOTA_COMPUTE_MS),
        )
        with self._lock:
            self._cache[principal] = _CachedUsage(usage)
        return usage

    def check_quota(self, principal: str) -> None:
        """429 before running when a quota is used up. Reads go through a short per-process
        cache (updated locally after each run): a quota may be overshot by the runs other
        instances make within USAGE_CACHE_SECONDS, which a monthly quota tolerates."""
        settings = self._deps.settings
        if not settings.QUOTA_EXECUTIONS and not settings.QUOTA_COMPUTE_MS:
            return
        usage = self._cached(principal)
        over = [
            name
            for name, used, limit in (
                ("executions", usage.executions, usage.quota.executions),
                ("compute_ms", usage.compute_ms, usage.quota.compute_ms),
            )
            if limit and used >= limit
        ]
        if over:
            raise QuotaExceeded(
                f"monthly quota exhausted for {usage.period}: {', '.join(over)}",
                details={"period": usage.period, "exceeded": over},
            )

    def delta(self, principal: str, compute_ms: int) -> UsageDelta:
        """What one finished run adds (compute time as measured by the API around the
        executor); the run's commit writes it, then `note`s it."""
        now = self._deps.now()
        return UsageDelta(
            principal=principal,
            period=usage_period(now),
            executions=1,
            compute_ms=max(0, int(compute_ms)),
            ttl=int(now + USAGE_RECORD_TTL_SECONDS),
        )

    def note(self, principal: str, compute_ms: int) -> None:
        """Apply a run's increment to the cached counters of this process."""
        with self._lock:
            cached = self._cache.get(principal)
            if cached and cached.usage.period == usage_period(self._deps.now()):
                usage = cached.usage
                cached.usage = usage.model_copy(
                    update={
                        "executions": usage.executions + 1,
                        "compute_ms": usage.compute_ms + max(0, int(compute_ms)),
                    }
                )

    def _cached(self, principal: str) -> Usage:
        with self._lock:
            cached = self._cache.get(principal)
        if cached and cached.usage.period == usage_period(self._deps.now()):
            return cached.usage
        return self.current(principal)


@dataclass
class _CachedUsage:
    usage: Usage

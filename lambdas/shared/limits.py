"""Every limit, default and budget of the product, in one place.

The API function, the executor, the local stack and the CDK stack all read these; the CDK
context (cdk.json) may override the deploy-time ones and passes them to the API function as
environment variables (see lambdas/api settings).
"""

from __future__ import annotations

from typing import Final

PYTHON_VERSION: Final = "3.13"

# AWS limits the product is shaped by
LAMBDA_SYNC_PAYLOAD_MAX_BYTES: Final = 6 * 1024 * 1024  # request and response of a sync invoke
# The API function's proxy response (its body JSON-encoded a second time) stays under this;
# larger results and notebooks keep head and tail inline and link the rest (presigned GET), a
# running execution's output so far is cut to fit (lambdas/api/service/live.py).
API_RESPONSE_BUDGET_BYTES: Final = LAMBDA_SYNC_PAYLOAD_MAX_BYTES - 1024 * 1024

# Execute requests
DEFAULT_TIMEOUT_MS: Final = 30_000
MAX_TIMEOUT_MS: Final = 300_000
MIN_TIMEOUT_MS: Final = 100
# A sync call answers within this window (then 202), under API Gateway's 29 s integration
# timeout with room for the API's own work; the default is the maximum.
MAX_SYNC_WAIT_MS: Final = 25_000
DEFAULT_SYNC_WAIT_MS: Final = MAX_SYNC_WAIT_MS
# On Lambda the API function cannot answer 202 while it waits for an inline invoke, so a run is
# invoked inline only when its timeout plus these allowances fits the window: a new tenant's
# cold environment (Lambda init, layers, the zygote's preload) and the state restore and save.
SYNC_INLINE_COLD_START_ALLOWANCE_MS: Final = 10_000
SYNC_INLINE_TRANSFER_ALLOWANCE_MS: Final = 5_000
SYNC_INLINE_ALLOWANCE_MS: Final = (
    SYNC_INLINE_COLD_START_ALLOWANCE_MS + SYNC_INLINE_TRANSFER_ALLOWANCE_MS
)
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 255
MAX_CODE_BYTES: Final = 10 * 1024
MAX_ENV_VARS: Final = 64
MAX_ENV_VALUE_BYTES: Final = 4096
MAX_PACKAGES_PER_REQUEST: Final = 32
MAX_INLINE_FILES: Final = 16  # one-shot `files` in POST /v1/execute
MAX_INLINE_FILES_BYTES: Final = 4 * 1024 * 1024  # stays under Lambda's 6 MB sync payload

# Sessions
DEFAULT_SESSION_TTL_SECONDS: Final = 3600
MIN_SESSION_TTL_SECONDS: Final = 60
MAX_SESSION_TTL_SECONDS: Final = 7 * 24 * 3600
SESSION_LEASE_GRACE_SECONDS: Final = 30  # a lease outlives timeout by this much, then expires
# A run still "running" this long after its timeout (plus the lease grace) was lost with the
# process that ran it: it is reported as an error, and a late background delivery is not run.
LOST_RUN_AFTER_SECONDS: Final = 300

# Files
MAX_UPLOAD_BYTES: Final = 100 * 1024 * 1024
MAX_PATH_LENGTH: Final = 512
MAX_FILES_PER_SESSION: Final = 1000
PRESIGNED_UPLOAD_EXPIRES_SECONDS: Final = 900
PRESIGNED_DOWNLOAD_EXPIRES_SECONDS: Final = 300
MAX_OUTPUT_FILE_BYTES: Final = 100 * 1024 * 1024  # one file written by user code
MAX_OUTPUT_FILES_PER_RUN: Final = 100

# Executor: sandbox rlimits and output caps
DEFAULT_MEMORY_LIMIT_MB: Final = 1536  # RLIMIT_AS of the worker (virtual address space)
DEFAULT_CPU_LIMIT_SECONDS: Final = 300
DEFAULT_FILE_SIZE_LIMIT_BYTES: Final = 512 * 1024 * 1024
DEFAULT_OPEN_FILES_LIMIT: Final = 256
DEFAULT_EXTRA_PROCESSES_LIMIT: Final = 64  # added to the current process count of the uid
MAX_STREAM_BYTES: Final = 1024 * 1024  # stdout and stderr each
# Whole ExecutionResult as the executor's JSON response, under Lambda's 6 MB sync payload.
MAX_RESULT_BYTES: Final = 5 * 1024 * 1024
MAX_STATE_BYTES: Final = 1024 * 1024 * 1024

# Live execution: a running cell's output, published by the executor's trusted parent as
# numbered chunks in S3 (lambdas/shared/live.py), and interrupts it looks for there.
LIVE_FIRST_PUBLISH_SECONDS: Final = 0.25  # a run shorter than this publishes nothing
LIVE_PUBLISH_INTERVAL_SECONDS: Final = 0.5  # at most one chunk per interval, when there is output
LIVE_INTERRUPT_POLL_SECONDS: Final = 0.5  # how often the parent looks for an interrupt request
LIVE_INTERRUPT_RESEND_SECONDS: Final = 2.0  # SIGINT again while a cell keeps running after one
LIVE_BASE_EVERY: Final = 8  # every 8th chunk repeats all output so far: a reader needs <= 8
MAX_LIVE_CHUNKS: Final = 2000  # per run (300 s at two a second, with room for a few retries)
MAX_LIVE_CHUNK_BYTES: Final = 4 * 1024 * 1024  # the presigned POST's content-length-range
MAX_LIVE_DISPLAY_BYTES: Final = 512 * 1024  # rich outputs shown while running, all together

# Usage quotas per principal and calendar month (UTC); 0 means unlimited
DEFAULT_QUOTA_EXECUTIONS: Final = 100_000
DEFAULT_QUOTA_COMPUTE_MS: Final = 100 * 3600 * 1000

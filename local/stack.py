"""`python -m local`: the whole product on 127.0.0.1, no AWS account (SPEC §5).

Startup: moto server (S3 + DynamoDB) on a free loopback port -> bucket and table from
`lambdas.shared.storage` (the CDK definitions) -> the API's environment (`ApiSettings`) ->
the real API handler with the environment pool as its executor -> the HTTP server. The HTTP
server opens last, so `GET /v1/health` answering 200 means everything is ready.
Ctrl-C / SIGTERM stops the server, kills every environment process tree and stops moto.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from lambdas.executor.host import procs
from lambdas.shared.routes import PUBLIC_PATHS
from local.config import HOST, LocalSettings
from local.events import (
    HttpRequest,
    HttpResponse,
    forbidden_response,
    header_value,
    match_route,
    to_proxy_event,
)
from local.gateway import API_GATEWAY_INTEGRATION_TIMEOUT_MS, call_integration
from local.keys import KeyRing

logger = logging.getLogger("lci.local")

TABLE_NAME = "lci-local"
BUCKET_NAME = "lci-local"
API_FUNCTION_NAME = "lci-api-local"
REGION = "us-east-1"


class ListenError(RuntimeError):
    """The HTTP port is taken (or not allowed)."""


class LocalStorage:
    """moto's server (S3 + DynamoDB) on a loopback port that stays the same across a restart.

    Its data lives in the process (moto's backends), not in the server: `stop()` closes the
    port (clients get connection refused, as from an unreachable AWS endpoint) and `start()`
    serves the same data again on the same port. The fault tests use both
    (tests/e2e/test_robustness_api.py through tests/e2e/stack_control.py).
    """

    def __init__(self) -> None:
        self._server: Any = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        if self._server is not None:
            return
        server = ThreadedMotoServer(ip_address=HOST, port=self.port, verbose=False)
        server.start()
        self.port = server.get_host_and_port()[1]
        self._server = server

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        if server._server is not None:  # stop() alone leaves the port accepting connections
            server._server.server_close()


@dataclass
class RunningStack:
    endpoint: str
    keys: KeyRing
    startup_seconds: float
    protections_missing: list[str]
    stop: Any  # () -> None
    storage: LocalStorage


def _fake_aws_environment(moto_url: str, settings: LocalSettings) -> None:
    """Credentials that only moto accepts, and the API's settings pointing at moto."""
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "TABLE_NAME": TABLE_NAME,
            "BUCKET_NAME": BUCKET_NAME,
            "EXECUTOR_MODE": "local",
            "BACKGROUND_MODE": "thread",
            "STAGE": "local",
            "NETWORK_MODE": settings.LCI_NETWORK_MODE,
            "S3_ENDPOINT_URL": moto_url,
            "DYNAMODB_ENDPOINT_URL": moto_url,
            "POWERTOOLS_LOG_LEVEL": settings.LCI_LOG_LEVEL,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "AWS_LAMBDA_FUNCTION_NAME": API_FUNCTION_NAME,
        }
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)


def _create_storage(moto_url: str) -> None:
    import boto3

    from lambdas.shared.storage import BUCKET_CORS_RULES, TABLE_TTL_ATTRIBUTE, table_create_kwargs

    s3 = boto3.client("s3", endpoint_url=moto_url, region_name=REGION)
    s3.create_bucket(Bucket=BUCKET_NAME)
    s3.put_bucket_cors(Bucket=BUCKET_NAME, CORSConfiguration={"CORSRules": BUCKET_CORS_RULES})  # type: ignore[typeddict-item]
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_url, region_name=REGION)
    dynamodb.create_table(**table_create_kwargs(TABLE_NAME))
    dynamodb.update_time_to_live(
        TableName=TABLE_NAME,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TABLE_TTL_ATTRIBUTE},
    )


def _start_s3_front(moto_host: str, moto_port: int) -> Any:
    """S3 that verifies presigned URLs and POST policies like S3 (`local.s3_front`): the API's
    presigned URLs, and so the executor's transfers, go through it; DynamoDB stays on moto.
    The executor reads the wheelhouse through it without credentials, as through its VPC
    endpoint on AWS."""
    from lambdas.shared.storage import WHEELHOUSE_PREFIX
    from local import aws_calls
    from local.s3_front import S3Credentials, start_in_front_of

    credentials = S3Credentials(
        os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"], REGION
    )
    front = start_in_front_of(
        moto_host,
        moto_port,
        HOST,
        credentials,
        anonymous_read_prefix=f"/{BUCKET_NAME}/{WHEELHOUSE_PREFIX}",
        upload_counter=aws_calls.uploads_counter_from_env(),
    )
    os.environ["S3_ENDPOINT_URL"] = front.url
    return front


def _wheelhouse(
    moto_url: str, s3_url: str, settings: LocalSettings
) -> tuple[str, threading.Thread | None]:
    """Upload layer-builder's wheelhouse (if built) to moto; return its index URL (through
    the S3 front at `s3_url`, where the executor reads it) and the uploader."""
    if settings.LCI_WHEELHOUSE_UPLOAD == "off":
        return "", None
    try:
        from lambdas.shared.packages.layout import wheelhouse_key_prefix, wheelhouse_objects
    except ImportError:
        return "", None
    arch = settings.LCI_ARCH
    objects = wheelhouse_objects(arch, settings.LCI_LAYERS_DIR)
    if not objects:
        return "", None

    def upload() -> None:
        import boto3

        s3 = boto3.client("s3", endpoint_url=moto_url, region_name=REGION)
        for key, path in objects:
            s3.upload_file(str(path), BUCKET_NAME, key)
        logger.warning("wheelhouse uploaded: %d files", len(objects))

    thread = threading.Thread(target=upload, name="lci-wheelhouse", daemon=True)
    thread.start()
    if settings.LCI_WHEELHOUSE_UPLOAD == "sync":
        thread.join()
    return f"{s3_url}/{BUCKET_NAME}/{wheelhouse_key_prefix(arch)}", thread


def build_app(
    keys: KeyRing,
    api_handler: Any,
    integration_timeout_ms: int = API_GATEWAY_INTEGRATION_TIMEOUT_MS,
) -> Any:
    """HTTP request -> key check -> proxy event -> real API handler -> HTTP response, within
    API Gateway's and Lambda's limits (`local.gateway`)."""
    from local.context import LocalLambdaContext

    def app(request: HttpRequest) -> HttpResponse:
        resource, _ = match_route(unquote(urlsplit(request.target).path))
        key_id = keys.key_id(header_value(request.headers, "x-api-key"))
        # Like API Gateway (infra/rest_api.py): every method of every path but the public
        # resources needs a key, unknown paths (the catch-all) included.
        if key_id is None and resource not in PUBLIC_PATHS:
            return forbidden_response()
        event = to_proxy_event(request, key_id)
        context = LocalLambdaContext(API_FUNCTION_NAME, integration_timeout_ms)
        return call_integration(api_handler, event, context, integration_timeout_ms)

    return app


def start(settings: LocalSettings | None = None) -> RunningStack:
    """Start everything; return once `GET /v1/health` would answer 200."""
    started = time.monotonic()
    settings = settings or LocalSettings()
    from concurrent.futures import ThreadPoolExecutor

    from local.environments import EnvironmentPool, PoolSettings, needed_paths
    from local.isolation import describe_gaps, detect_mode

    # The isolation probe is a child process: let it run while moto and the API import.
    probe_runner = ThreadPoolExecutor(max_workers=1)
    mode_probe = probe_runner.submit(detect_mode, needed_paths())
    probe_runner.shutdown(wait=False)
    logging.basicConfig(level=settings.LCI_LOG_LEVEL, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log

    from local import moto_tuning

    moto_tuning.install()
    moto = LocalStorage()
    moto.start()
    moto_host, moto_port = HOST, moto.port
    # The pool starts its spare environment now, in parallel with the rest of the startup.
    mode = mode_probe.result()
    pool = EnvironmentPool(
        PoolSettings(
            max_environments=settings.LCI_MAX_ENVIRONMENTS,
            per_tenant=settings.LCI_ENV_PER_TENANT,
            idle_seconds=settings.LCI_ENV_IDLE_SECONDS,
            tmp_root=settings.LCI_TMP_ROOT,
            spares=settings.LCI_SPARE_ENVIRONMENTS,
        ),
        mode,
    )
    moto_url = moto.url
    _fake_aws_environment(moto_url, settings)
    _create_storage(moto_url)
    s3_front = _start_s3_front(moto_host, moto_port)
    wheelhouse_url, _ = _wheelhouse(moto_url, s3_front.url, settings)
    if wheelhouse_url:
        os.environ["WHEELHOUSE_URL"] = wheelhouse_url

    from lambdas.api import container
    from lambdas.api.adapters.background import ThreadBackground
    from lambdas.api.settings import get_settings

    get_settings.cache_clear()
    from local import aws_calls

    aws_calls.install_from_env()  # before the API builds its boto3 clients (benchmarks/e2e.py)
    background = ThreadBackground()
    container.override(executor=pool, background=background)
    container.services()  # build boto3 clients now, not on the first request

    keys = KeyRing.from_env_value(settings.LCI_API_KEY)
    from local.http_server import LocalHttpServer
    from local.resolvers import threaded_api_handler

    try:
        server = LocalHttpServer(
            HOST,
            settings.LCI_PORT,
            build_app(keys, threaded_api_handler(), settings.LCI_INTEGRATION_TIMEOUT_MS),
        )
    except OSError as exc:
        pool.close()
        background.shutdown()
        s3_front.stop()
        moto.stop()
        raise ListenError(f"cannot listen on {HOST}:{settings.LCI_PORT}: {exc.strerror}") from exc
    serving = threading.Thread(target=server.serve_forever, name="lci-http", daemon=True)
    serving.start()
    endpoint = f"http://{HOST}:{server.port}"

    stopped = threading.Event()

    def stop() -> None:
        if stopped.is_set():
            return
        stopped.set()
        server.shutdown()
        server.server_close()
        pool.close()
        background.shutdown()
        s3_front.stop()
        moto.stop()

    return RunningStack(
        endpoint=endpoint,
        keys=keys,
        startup_seconds=time.monotonic() - started,
        protections_missing=describe_gaps(mode),
        stop=stop,
        storage=moto,
    )


def banner(stack: RunningStack) -> str:
    key = stack.keys.keys[0]
    lines = [
        f"Lambda Code Interpreter local stack ready in {stack.startup_seconds:.2f} s",
        f"  endpoint  {stack.endpoint}",
        f"  browser   {stack.endpoint}/  (the playground; paste the key there)",
        f"  API key   {key}"
        + ("  (random; set LCI_API_KEY to fix it)" if stack.keys.generated else ""),
    ]
    if len(stack.keys.keys) > 1:
        lines.append(f"  + {len(stack.keys.keys) - 1} more key(s) from LCI_API_KEY")
    lines += [
        "  try:",
        f"    curl -s -X POST {stack.endpoint}/v1/execute -H 'x-api-key: {key}' "
        "-H 'content-type: application/json' -d '{\"code\": \"print(2 + 2)\"}'",
        f"    LCI_ENDPOINT={stack.endpoint} LCI_API_KEY={key} lci run - <<< 'print(2 + 2)'",
    ]
    for gap in stack.protections_missing:
        lines.append(f"  warning: {gap}")
    lines.append("  Ctrl-C stops everything.")
    return "\n".join(lines)


def main() -> int:
    # `make dev` stopped by a signal does not pass it on: stop with our parent, not orphaned.
    parent = os.getppid()
    procs.set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:
        return 0
    try:
        stack = start()
    except ListenError as exc:
        print(f"lci local stack: {exc}; set LCI_PORT to a free port (0: any)", file=sys.stderr)
        return 1
    print(banner(stack), flush=True)
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not done.wait(3600):
            pass
    finally:
        print("stopping...", file=sys.stderr, flush=True)
        stack.stop()
    return 0

"""On-demand install: a real wheelhouse (built by `layers.build --profile ci`) served by a moto S3
server over HTTP; worker-like subprocesses install from it with `lambdas.executor.sandbox.packages`.

beautifulsoup4 is the on-demand package of the ci profile (closure: soupsieve, typing-extensions).
It is not in the dev virtualenv, so an import that works proves the install happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from lambdas.shared.packages.layout import (
    wheelhouse_dir,
    wheelhouse_key_prefix,
    wheelhouse_objects,
)
from layers import build

REPO = Path(__file__).resolve().parents[2]
BUCKET = "lci-wheelhouse-test"

WORKER = r"""
import json, sys
from lambdas.executor.sandbox import packages

args = json.loads(sys.argv[1])
warnings, results = [], []
if args.get("specs") is not None:
    try:
        warnings += packages.install_requirements(
            args["specs"], wheelhouse_url=args["url"], cache_dir=args["cache"]
        )
    except packages.PackageInstallError as exc:
        results.append("PackageInstallError: " + str(exc))
        warnings += exc.warnings
packages.install_import_hook(
    wheelhouse_url=args["url"], cache_dir=args["cache"], on_install=warnings.append
)
for number, cell in enumerate(args.get("cells", []), 1):
    namespace = {}
    try:
        exec(compile(cell, f"<cell-{number}>", "exec"), namespace)
        results.append(namespace.get("result"))
    except Exception as exc:
        results.append(f"{type(exc).__name__}: {exc}")
print(json.dumps({"warnings": warnings, "results": results}))
"""


@pytest.fixture(scope="module")
def built_wheelhouse(tmp_path_factory):
    """The ci profile's wheelhouse (shared build cache with test_layers_build: built once)."""
    base = tmp_path_factory.getbasetemp()
    out = tmp_path_factory.mktemp("ondemand-out")
    cache = base / "layers-cache"
    code = build.main(["--profile", "ci", "--out", str(out), "--cache-dir", str(cache)])
    assert code == 0
    assert (wheelhouse_dir("x86_64", out) / "index.json").is_file()
    return out


@pytest.fixture(scope="module")
def s3_wheelhouse_url(built_wheelhouse):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=BUCKET)
    objects = wheelhouse_objects("x86_64", built_wheelhouse)
    assert any(key.endswith("index.json") for key, _ in objects)
    for key, path in objects:
        # The executor reads the wheelhouse without credentials (on AWS: the VPC endpoint's
        # bucket policy); here the objects are public-read.
        s3.upload_file(str(path), BUCKET, key, ExtraArgs={"ACL": "public-read"})
    yield f"{endpoint}/{BUCKET}/{wheelhouse_key_prefix('x86_64')}"
    server.stop()


def run_worker(url: str, cache: Path, *, cells=(), specs=None) -> dict:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "OPENBLAS_NUM_THREADS": "1",
        "HOME": str(cache.parent),
    }
    args = {"url": url, "cache": str(cache), "cells": list(cells), "specs": specs}
    completed = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(args)],
        capture_output=True, text=True, timeout=300, cwd=cache.parent, env=env,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_first_import_installs_from_the_s3_wheelhouse_and_the_cache_is_reused(
    s3_wheelhouse_url, tmp_path
):
    cache = tmp_path / "packages"
    cell = (
        "import bs4\nresult = [bs4.BeautifulSoup('<p>hi</p>', 'html.parser').p.text, bs4.__file__]"
    )
    first = run_worker(s3_wheelhouse_url, cache, cells=[cell])
    text, location = first["results"][0]
    assert text == "hi"
    assert location.startswith(str(cache))
    assert len(first["warnings"]) == 1
    assert first["warnings"][0].startswith("installed beautifulsoup4 4.15.0 on demand in ")
    # soupsieve (a dependency from the recorded closure) came along; typing-extensions is
    # already importable here, so it was not installed again.
    installed = sorted(p.name for p in (cache / "dists").iterdir())
    assert installed == ["beautifulsoup4-4.15.0", "soupsieve-4.1.3"]
    # The builder's bytecode came along (unchecked-hash: flags == 1), so nothing is compiled.
    pyc = cache / "dists" / "beautifulsoup4-4.15.0" / "bs4" / "__pycache__"
    header = next(pyc.glob("__init__.cpython-313.pyc")).read_bytes()[:8]
    assert int.from_bytes(header[4:8], "little") == 1

    # A later worker of the same environment imports from the cache, no install, no warning.
    second = run_worker(s3_wheelhouse_url, cache, cells=[cell])
    assert second["results"][0][0] == "hi"
    assert second["warnings"] == []


def test_listed_packages_install_before_the_run(s3_wheelhouse_url, tmp_path):
    cache = tmp_path / "packages"
    outcome = run_worker(
        s3_wheelhouse_url,
        cache,
        specs=["beautifulsoup4==4.15.0", "tabulate-not-there"],
        cells=["import soupsieve, bs4\nresult = bs4.__version__"],
    )
    assert outcome["results"][0].startswith("PackageInstallError: ")
    assert "tabulate-not-there" in outcome["results"][0]
    assert outcome["results"][1] == "4.15.0"
    assert [w.split(" on demand")[0] for w in outcome["warnings"]] == [
        "installed beautifulsoup4 4.15.0"
    ]


def test_library_imports_do_not_trigger_installs(s3_wheelhouse_url, tmp_path):
    """pandas-style optional-dependency probes must not download anything."""
    library = tmp_path / "lib" / "site-packages"
    library.mkdir(parents=True)
    (library / "probe.py").write_text(
        "try:\n    import bs4\n    HAS_BS4 = True\nexcept ImportError:\n    HAS_BS4 = False\n"
    )
    cache = tmp_path / "packages"
    outcome = run_worker(
        s3_wheelhouse_url,
        cache,
        cells=[
            f"import sys\nsys.path.insert(0, {str(library)!r})\n"
            "import probe\nresult = probe.HAS_BS4",
            "import not_a_whitelisted_module",
        ],
    )
    assert outcome["results"][0] is False
    assert outcome["results"][1].startswith("ModuleNotFoundError")
    assert outcome["warnings"] == []
    assert not (cache / "dists").exists()


def test_a_tampered_wheel_is_refused(built_wheelhouse, tmp_path):
    """The index's sha256 is checked: a wheel replaced in the bucket is not installed."""
    source = wheelhouse_dir("x86_64", built_wheelhouse)
    copy = tmp_path / "wheelhouse"
    copy.mkdir()
    for path in source.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    wheel = next(copy.glob("soupsieve-*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    outcome = run_worker(copy.as_uri() + "/", tmp_path / "packages", cells=["import bs4"])
    assert outcome["results"][0].startswith("ModuleNotFoundError")
    assert "sha256" in outcome["results"][0]
    assert outcome["warnings"] == []


def test_index_url_with_a_query_string_is_accepted(s3_wheelhouse_url, tmp_path):
    """`WheelhouseAccess.index_url` may point at index.json itself (signed or not)."""
    index_url = s3_wheelhouse_url + "index.json?X-Amz-Signature=0123"
    outcome = run_worker(index_url, tmp_path / "packages", specs=["beautifulsoup4"])
    assert len(outcome["warnings"]) == 1
    assert outcome["warnings"][0].startswith("installed beautifulsoup4 4.15.0 on demand")


def test_without_a_wheelhouse_the_error_says_so(tmp_path):
    from lambdas.executor.sandbox.packages import PackageInstallError, install_requirements

    with pytest.raises(PackageInstallError, match="no wheelhouse is configured"):
        install_requirements(["beautifulsoup4"], wheelhouse_url=None, cache_dir=tmp_path)


def test_a_layered_package_missing_here_is_served_by_the_wheelhouse(s3_wheelhouse_url, tmp_path):
    """The local stack runs without the Lambda layers: tabulate (a layer package of the ci
    profile, absent from the dev venv) still imports, fetched from the wheelhouse."""
    outcome = run_worker(
        s3_wheelhouse_url,
        tmp_path / "packages",
        cells=["import tabulate\nresult = tabulate.tabulate([[1]], tablefmt='plain')"],
    )
    assert outcome["results"] == ["1"]
    assert outcome["warnings"][0].startswith("installed tabulate 0.10.0 on demand")


def test_a_session_imports_a_real_wheel_from_the_s3_wheelhouse_on_demand(
    s3_wheelhouse_url, tmp_path
):
    """The whole path a user meets: no `packages` field, `import bs4` in a session of the real
    executor, the wheel comes from the wheelhouse on moto S3, the result says so."""
    from lambdas.executor.host.engine import Engine
    from lambdas.executor.settings import ExecutorSettings
    from tests.functional.executor_helpers import checked, invocation

    engine = Engine(ExecutorSettings(LCI_TMP_ROOT=str(tmp_path / "env")))
    try:
        access = {"index_url": s3_wheelhouse_url, "allow_pypi": False}
        code = "import bs4\nbs4.BeautifulSoup('<p>hi</p>', 'html.parser').p.text"
        result = checked(engine.invoke(invocation(code, "s-wheel", wheelhouse=access)))["result"]
        assert result["status"] == "ok", result["error"]
        assert result["result"] == {"text/plain": "'hi'"}
        assert any(
            w.startswith("installed beautifulsoup4 4.15.0 on demand") for w in result["warnings"]
        ), result["warnings"]
        # Still importable in the next cell of the session, with nothing installed again.
        again = checked(engine.invoke(invocation("bs4.__name__", "s-wheel", wheelhouse=access)))
        assert again["result"]["result"] == {"text/plain": "'bs4'"}
        assert not any("on demand" in w for w in again["result"]["warnings"])
    finally:
        engine.shutdown()

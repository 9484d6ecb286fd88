"""State and files through presigned S3 URLs against a real moto server over HTTP, the way the
API function prepares them: a presigned POST per prefix and presigned GETs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from lambdas.executor.host.engine import Engine
from lambdas.executor.settings import ExecutorSettings
from tests.functional.executor_helpers import answered_within, checked, invocation

BUCKET = "lci-executor-transfer"


@pytest.fixture(scope="module")
def s3(moto_server) -> Any:
    client = moto_server.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def new_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    engines: list[Engine] = []

    def make() -> Engine:
        # Each engine is a fresh "execution environment": its own zygote and its own /tmp.
        engine = Engine(ExecutorSettings(LCI_TMP_ROOT=str(tmp_path_factory.mktemp("env"))))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.shutdown()


def _post(s3: Any, prefix: str, max_bytes: int = 50 * 1024 * 1024) -> dict[str, Any]:
    presigned = s3.generate_presigned_post(
        BUCKET,
        prefix + "${filename}",
        Conditions=[["starts-with", "$key", prefix], ["content-length-range", 0, max_bytes]],
        ExpiresIn=900,
    )
    fields = {k: v for k, v in presigned["fields"].items() if k != "key"}
    return {"url": presigned["url"], "fields": fields, "key_prefix": prefix, "max_bytes": max_bytes}


def _get(s3: Any, key: str) -> str:
    return s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key})


class Session:
    """Plays the API function's part: versions, state keys, file listings."""

    def __init__(self, s3: Any) -> None:
        self.s3 = s3
        self.id = "s-" + uuid.uuid4().hex[:12]
        self.version = 0
        self.count = 0

    def state(self) -> dict[str, Any]:
        prefix = f"sessions/{self.id}/state/"
        return {
            "version": self.version,
            "download_url": _get(self.s3, f"{prefix}v{self.version}") if self.version else None,
            "upload": _post(self.s3, prefix),
            "upload_key": f"{prefix}v{self.version + 1}",
        }

    def files(self) -> dict[str, Any]:
        prefix = f"sessions/{self.id}/files/"
        listing = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        refs = [
            {
                "path": item["Key"][len(prefix) :],
                "size": item["Size"],
                "etag": item["ETag"],
                "download_url": _get(self.s3, item["Key"]),
            }
            for item in listing
        ]
        return {"files": refs, "upload": _post(self.s3, prefix)}

    def run(self, engine: Engine, code: str, **fields: Any) -> dict[str, Any]:
        self.count += 1
        response = checked(
            engine.invoke(
                invocation(
                    code,
                    self.id,
                    execution_count=self.count,
                    state=self.state(),
                    files=self.files(),
                    **fields,
                )
            )
        )
        if response["state"]["uploaded"]:
            self.version += 1  # the API commits the upload
        return response


def test_state_survives_a_new_environment(s3: Any, engine: Engine, new_engine: Any) -> None:
    session = Session(s3)
    first = engine
    response = session.run(
        first,
        "import numpy as np\nimport threading\n"
        "data = {'rows': [1, 2, 3]}\narr = np.arange(5)\nlock = threading.Lock()",
    )
    assert response["result"]["status"] == "ok"
    assert response["state"]["uploaded"] is True and response["state"]["size"] > 0
    assert response["state"]["dropped"] == ["lock"]
    assert any("lock" in warning for warning in response["result"]["warnings"])
    assert {"name": "data", "type": "dict"} in response["state"]["variables"]
    stored = s3.get_object(Bucket=BUCKET, Key=f"sessions/{session.id}/state/v1")["Body"].read()
    assert len(stored) == response["state"]["size"]

    # A live worker that holds the committed version does not download it again.
    again = session.run(first, "data['rows'].append(4)\nlen(data['rows'])")
    assert again["worker_restored"] is False and again["result"]["result"]["text/plain"] == "4"

    second = new_engine()  # a new execution environment: nothing in memory, empty /tmp
    restored = session.run(second, "int(arr.sum()) + len(data['rows']), np.__name__")
    assert restored["worker_restored"] is True
    assert restored["result"]["result"]["text/plain"] == "(14, 'numpy')"


def test_a_saved_run_reports_each_warning_once(s3: Any, engine: Engine) -> None:
    # The cell goes to the parent before the saving; what is added after it arrives apart.
    session = Session(s3)
    response = session.run(engine, "exit()\nx = 1")
    assert response["state"]["uploaded"] is True
    warnings = response["result"]["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("exit() does nothing"), warnings
    dropped = session.run(engine, "import threading\nlock = threading.Lock()")
    notes = dropped["result"]["warnings"]
    assert [note for note in notes if "lock" in note] == notes and len(notes) == 1, notes


def test_a_crash_restores_the_last_committed_state(s3: Any, engine: Engine) -> None:
    session = Session(s3)
    assert session.run(engine, "total = 41")["state"]["uploaded"] is True
    crashed = session.run(engine, "total = 0\nimport os\nos._exit(1)")
    assert crashed["result"]["error"]["name"] == "WorkerCrashed"
    assert crashed["state"]["uploaded"] is False
    after = session.run(engine, "total + 1")
    assert after["worker_restored"] is True
    assert after["result"]["result"]["text/plain"] == "42"


@pytest.mark.attack(
    "tenant isolation",
    "a run's snapshot upload the API did not commit",
    "never restored: the worker goes back to the committed snapshot",
)
def test_an_uncommitted_upload_is_not_trusted(s3: Any, engine: Engine) -> None:
    """If the API did not commit the last upload (version unchanged), the worker goes back to
    the committed snapshot instead of keeping what it has in memory."""
    session = Session(s3)
    session.run(engine, "value = 'committed'")
    session.run(engine, "value = 'lost'")
    session.version -= 1  # pretend the API rejected the second commit
    assert session.run(engine, "value")["result"]["result"]["text/plain"] == "'committed'"


def test_session_files_in_and_out(s3: Any, engine: Engine, new_engine: Any) -> None:
    session = Session(s3)
    s3.put_object(Bucket=BUCKET, Key=f"sessions/{session.id}/files/in/data.csv", Body=b"a\n1\n2\n")
    response = session.run(
        engine,
        "import os, pandas as pd\nframe = pd.read_csv('in/data.csv')\n"
        "os.makedirs('out', exist_ok=True)\n"
        "frame.assign(b=frame.a * 10).to_csv('out/result.csv', index=False)\n"
        "os.symlink('/etc/passwd', 'leak.txt')",
    )
    assert response["result"]["status"] == "ok", response["result"]["error"]
    assert response["result"]["files"] == [
        {"path": "out/result.csv", "size": 14, "content_type": "text/csv", "download_url": None}
    ]
    key = f"sessions/{session.id}/files/out/result.csv"
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"a,b\n1,10\n2,20\n"
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"sessions/{session.id}/files/")
    assert not [item for item in listing["Contents"] if item["Key"].endswith("leak.txt")]

    # A new environment gets the files back from S3, including the one the cell wrote.
    fresh = new_engine()
    again = session.run(fresh, "open('out/result.csv').read().splitlines()[-1]")
    assert again["result"]["result"]["text/plain"] == "'2,20'"
    assert again["result"]["files"] == []


def test_a_broken_snapshot_url_fails_the_run_and_saves_nothing(s3: Any, engine: Engine) -> None:
    session = Session(s3)
    session.version = 3  # committed elsewhere; this environment's new worker must download it
    state = session.state()
    state["download_url"] = _get(s3, f"sessions/{session.id}/state/missing")
    response = checked(engine.invoke(invocation("x = 2", session.id, state=state)))
    assert response["result"]["status"] == "error"
    assert response["result"]["error"]["name"] == "PreparationFailed"
    assert response["state"]["uploaded"] is False


def test_a_warm_session_with_saved_state_times_out_at_its_own_timeout(
    s3: Any, engine: Engine
) -> None:
    # Issue 11: every run of a session with state carries a download URL, and the deadline
    # used to add the 120 s transfer budget to the cell's timeout whenever it did.
    session = Session(s3)
    s3.put_object(Bucket=BUCKET, Key=f"sessions/{session.id}/files/in.txt", Body=b"x")
    assert session.run(engine, "kept = 41")["state"]["uploaded"] is True
    for code in ("import time\ntime.sleep(300)", "while True:\n    pass"):
        response = answered_within(
            2 + 20, lambda code=code: session.run(engine, code, timeout_ms=2000), engine, session.id
        )
        result = response["result"]
        assert result["status"] == "timeout" and "2000 ms" in result["error"]["value"]
        assert result["duration_ms"] < 2000 + 1500, result["duration_ms"]
    back = session.run(engine, "kept + 1")
    assert back["worker_restored"] is True
    assert back["result"]["result"]["text/plain"] == "42"


def test_restoring_the_state_never_eats_into_the_timeout(
    s3: Any, engine: Engine, new_engine: Any
) -> None:
    session = Session(s3)
    slow = (
        "class SlowToRestore:\n"
        "    def __reduce__(self):\n"
        "        import time\n"
        "        return (time.sleep, (1.5,))\n"
        "slow = SlowToRestore()"
    )
    assert session.run(engine, slow)["state"]["uploaded"] is True
    restored = session.run(new_engine(), "'ran in time'", timeout_ms=1000)
    assert restored["worker_restored"] is True
    assert restored["result"]["status"] == "ok", restored["result"]["error"]
    assert restored["result"]["result"] == {"text/plain": "'ran in time'"}


# -- issue 16: no snapshot upload when no variable changed ------------------------------------


def _state_keys(s3: Any, session: Session) -> list[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"sessions/{session.id}/state/")
    return sorted(item["Key"] for item in listing.get("Contents", []))


def _run_unchanged(s3: Any, session: Session, engine: Engine, code: str) -> dict[str, Any]:
    """A run that changes no variable: nothing at the next state key, version kept."""
    keys, version = _state_keys(s3, session), session.version
    response = session.run(engine, code)
    assert response["result"]["status"] in ("ok", "error"), response["result"]
    assert response["state"]["uploaded"] is False, code
    assert response["state"]["unchanged"] is True, code
    assert _state_keys(s3, session) == keys and session.version == version
    return response


def _run_changed(s3: Any, session: Session, engine: Engine, code: str) -> dict[str, Any]:
    response = session.run(engine, code)
    assert response["state"]["uploaded"] is True, code
    assert response["state"]["unchanged"] is False, code
    assert f"sessions/{session.id}/state/v{session.version}" in _state_keys(s3, session)
    return response


# Each changes what a restore would give back (or what the API lists as the variables) while
# the pickled bytes of much of the namespace stay equal.
CHANGES = [
    "a[0] = 5",  # in place: only an out-of-band buffer changes
    "lst.append(1)",
    "d['k'] = 2",
    "f = open('note.txt', 'w')",  # a new unpicklable variable (dropped, listed)
    "f = threading.Lock()",  # still dropped under the same name, another type
    "del x",
    "x = 1",
    "x = 1.0",  # another type, an equal value
    "import json as j",  # a module as a variable
    "import os as j",  # the same name, another module
]


def test_a_run_that_changes_no_variable_uploads_no_snapshot(
    s3: Any, engine: Engine, new_engine: Any
) -> None:
    session = Session(s3)
    _run_changed(
        s3,
        session,
        engine,
        "import threading\nimport numpy as np\na = np.zeros(3)\nlst = []\nd = {'k': 1}\nx = 1",
    )
    printed = _run_unchanged(s3, session, engine, "print(x)")
    assert printed["result"]["stdout"] == "1\n"
    assert {"name": "x", "type": "int"} in printed["state"]["variables"]
    _run_unchanged(s3, session, engine, "print(x)")
    for change in CHANGES:
        _run_changed(s3, session, engine, change)
        _run_unchanged(s3, session, engine, "pass")
    assert session.version == 1 + len(CHANGES)

    # A new environment restores the last upload: the committed version is the latest state.
    restored = session.run(
        new_engine(), "float(a[0]), lst, d['k'], type(x).__name__, j.__name__, 'f' in dir()"
    )
    assert restored["worker_restored"] is True
    assert restored["result"]["result"]["text/plain"] == "(5.0, [1], 2, 'float', 'os', False)"


def test_skipped_uploads_leave_the_last_upload_for_a_new_environment(
    s3: Any, engine: Engine, new_engine: Any
) -> None:
    session = Session(s3)
    _run_changed(s3, session, engine, "import numpy as np\nframe = np.arange(10)\nx = [1]")
    for _ in range(3):
        _run_unchanged(s3, session, engine, "print(x, int(frame.sum()))")
    again = session.run(new_engine(), "x, int(frame.sum())")
    assert again["worker_restored"] is True
    assert again["result"]["result"]["text/plain"] == "([1], 45)"


def test_failed_and_timed_out_runs_after_a_skip_keep_the_state_right(
    s3: Any, engine: Engine, new_engine: Any
) -> None:
    session = Session(s3)
    _run_changed(s3, session, engine, "x = 1")
    _run_unchanged(s3, session, engine, "print(x)")
    failed = _run_unchanged(s3, session, engine, "1 / 0")
    assert failed["result"]["error"]["name"] == "ZeroDivisionError"
    # A failing cell that changed a variable before failing still saves it.
    _run_changed(s3, session, engine, "x = 2\n1 / 0")
    timed_out = answered_within(
        2 + 20,
        lambda: session.run(engine, "x = 3\nwhile True:\n    pass", timeout_ms=1500),
        engine,
        session.id,
    )
    assert timed_out["result"]["status"] == "timeout"
    assert timed_out["state"]["uploaded"] is False
    back = session.run(engine, "x")
    assert back["worker_restored"] is True and back["result"]["result"]["text/plain"] == "2"
    _run_unchanged(s3, session, engine, "x")
    elsewhere = session.run(new_engine(), "x")
    assert elsewhere["result"]["result"]["text/plain"] == "2"


@pytest.mark.attack(
    "tenant isolation",
    "a run rebuilds, byte for byte, a snapshot it uploaded that the API did not commit",
    "uploaded again: a skipped upload only ever keeps what the worker uploaded as the committed "
    "version",
)
def test_an_uncommitted_upload_is_never_taken_for_unchanged_state(
    s3: Any, engine: Engine, new_engine: Any
) -> None:
    """The worker uploaded `value = 'lost'`, the API did not commit it: the worker restores the
    committed snapshot, and the same cell again must upload, though it dumps to the very bytes
    this worker uploaded last."""
    session = Session(s3)
    _run_changed(s3, session, engine, "value = 'committed'")
    _run_changed(s3, session, engine, "value = 'lost'")
    session.version -= 1  # pretend the API rejected the second commit
    _run_changed(s3, session, engine, "value = 'lost'")
    again = session.run(new_engine(), "value")
    assert again["result"]["result"]["text/plain"] == "'lost'"

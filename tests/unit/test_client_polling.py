"""`Client.wait_for`: the polling schedule of a long run and its timeout."""

import time

import httpx
import pytest
from lci import Client, LciError

RUNNING = {"execution_id": "e1", "status": "running", "success": False}
DONE = {"execution_id": "e1", "status": "ok", "success": True}


def _client(answers):
    def api(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("GET", "/v1/executions/e1")
        return httpx.Response(200, json=next(answers))

    return Client("http://api.test", "k", transport=httpx.MockTransport(api))


def test_polls_back_off_by_half_to_two_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    seen = []
    client = _client(iter([RUNNING] * 8 + [DONE]))
    result = client.wait_for("e1", poll_interval=0.25, on_poll=seen.append)
    assert not result.running and len(seen) == 8 and all(r.running for r in seen)
    assert sleeps == pytest.approx([0.25, 0.375, 0.5625, 0.84375, 1.265625, 1.8984375, 2.0, 2.0])


def test_a_run_still_going_after_the_timeout_is_an_error() -> None:
    seen = []
    client = _client(iter([RUNNING] * 1000))
    started = time.monotonic()
    with pytest.raises(LciError) as raised:
        client.wait_for("e1", poll_interval=0.01, timeout=0.1, on_poll=seen.append)
    assert raised.value.code == "WAIT_TIMEOUT" and "e1" in raised.value.message
    assert time.monotonic() - started >= 0.1 and len(seen) >= 2


def test_a_failed_poll_is_raised_not_retried() -> None:
    def api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"code": "EXECUTION_NOT_FOUND", "message": "no"}})

    client = Client("http://api.test", "k", transport=httpx.MockTransport(api))
    with pytest.raises(LciError) as raised:
        client.wait_for("e1", poll_interval=0.01, timeout=5)
    assert raised.value.code == "EXECUTION_NOT_FOUND"


def test_a_first_interval_above_the_cap_is_kept_once(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    _client(iter([RUNNING] * 3 + [DONE])).wait_for("e1", poll_interval=5)
    assert sleeps == [5, 2.0, 2.0]

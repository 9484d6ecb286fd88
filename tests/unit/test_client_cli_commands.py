"""Each `lci` command a newcomer meets, over a scripted API: configure (file 0600, env wins),
session ls (a client-side record pruned of 404s), rm, download into a folder, --save-images,
timeouts in seconds, exit codes, --version, help text everywhere and a missing extra."""

from __future__ import annotations

import argparse
import io
import json
import stat
import sys
import tomllib

import httpx
import lci
import lci.cli as cli
import lci.setup_commands as setup_commands
import pytest
from lci import Client
from lci.config import SessionBook, config_path

from .client_fakes import Api, image_output, png_bytes, result


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("LCI_ENDPOINT", raising=False)
    monkeypatch.delenv("LCI_API_KEY", raising=False)


def _patch_cli(monkeypatch, api: Api) -> None:
    real = Client

    def make(endpoint=None, api_key=None):
        return real(
            endpoint or "http://api.test", api_key or "k1", transport=httpx.MockTransport(api)
        )

    monkeypatch.setattr(cli, "Client", make)
    monkeypatch.setattr(setup_commands, "Client", make)  # lci configure checks the key


# --- configure ----------------------------------------------------------------------------------


def test_configure_writes_a_private_file_that_client_reads_and_env_overrides(monkeypatch, capsys):
    assert (
        cli.main(
            ["configure", "--endpoint", "https://x.test/", "--api-key", 's3cr"t', "--no-check"]
        )
        == 0
    )
    path = config_path()
    assert "saved" in capsys.readouterr().out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert tomllib.loads(path.read_text()) == {"endpoint": "https://x.test", "api_key": 's3cr"t'}
    client = Client()
    assert (client.endpoint, client.api_key) == ("https://x.test", 's3cr"t')
    monkeypatch.setenv("LCI_ENDPOINT", "http://env.test")
    monkeypatch.setenv("LCI_API_KEY", "from-env")
    client = Client()
    assert (client.endpoint, client.api_key) == ("http://env.test", "from-env")
    assert Client("http://arg.test", "arg").api_key == "arg"


def test_configure_asks_in_a_terminal_and_checks_the_key(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", type("Tty", (io.StringIO,), {"isatty": lambda self: True})())
    monkeypatch.setattr("builtins.input", lambda prompt: "http://typed.test")
    monkeypatch.setattr("getpass.getpass", lambda prompt: "typed-key")
    usage = {"period": "2025-01", "executions": 0, "compute_ms": 0, "quota": {}}
    api = Api({("GET", "/v1/usage"): lambda r: httpx.Response(200, json=usage)})
    _patch_cli(monkeypatch, api)
    assert cli.main(["configure", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["endpoint"] == "http://typed.test" and summary["check"] == "ok"
    assert api.requests[0].headers["x-api-key"] == "typed-key"
    assert tomllib.loads(config_path().read_text())["api_key"] == "typed-key"


def test_configure_without_a_key_or_with_a_bad_endpoint_is_a_usage_error(capsys):
    assert cli.main(["configure", "--no-check"]) == cli.EXIT_USAGE == 2
    assert "--api-key" in capsys.readouterr().err
    assert cli.main(["configure", "--endpoint", "x.test", "--api-key", "k", "--no-check"]) == 2
    assert "http" in capsys.readouterr().err


def test_a_broken_config_file_is_a_usage_error(capsys):
    config_path().parent.mkdir(parents=True)
    config_path().write_text("endpoint = ")
    assert cli.main(["usage"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert str(config_path()) in err and "Traceback" not in err


# --- sessions -------------------------------------------------------------------------------------


def test_session_ls_lists_what_session_new_created_and_prunes_404s(monkeypatch, capsys):
    created = iter(["s1", "s2"])
    api = Api(
        {
            ("POST", "/v1/sessions"): lambda r: httpx.Response(
                201, json={"session_id": next(created), "status": "idle"}
            ),
            ("GET", "/v1/sessions/s1"): lambda r: httpx.Response(
                200, json={"session_id": "s1", "status": "idle", "execution_count": 2}
            ),
            ("DELETE", "/v1/sessions/s1"): lambda r: httpx.Response(204),
        }
    )
    _patch_cli(monkeypatch, api)
    assert cli.main(["session", "new"]) == 0 and cli.main(["session", "new"]) == 0
    assert capsys.readouterr().out.split() == ["s1", "s2"]
    assert cli.main(["session", "ls", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [s["session_id"] for s in listing["sessions"]] == ["s1"]
    assert listing["pruned"] == ["s2"]  # the API answered 404: dropped from the record
    assert [r.session_id for r in SessionBook().records("http://api.test")] == ["s1"]
    assert stat.S_IMODE(SessionBook().path.stat().st_mode) == 0o600
    assert cli.main(["session", "ls"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["s1", "idle", "2"]
    assert cli.main(["session", "rm", "s1"]) == 0
    assert SessionBook().records("http://api.test") == []
    assert cli.main(["session", "ls"]) == 0
    assert "no sessions" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["session", "ls", "--help"])
    assert "no route that lists sessions" in capsys.readouterr().out


def test_rm_deletes_a_file_and_refuses_an_invalid_path_before_asking(monkeypatch, capsys):
    api = Api({("DELETE", "/v1/sessions/s1/files/data/x.csv"): lambda r: httpx.Response(204)})
    _patch_cli(monkeypatch, api)
    assert cli.main(["rm", "data/x.csv", "--session", "s1"]) == 0
    assert capsys.readouterr().out == "deleted data/x.csv\n"
    assert cli.main(["rm", "../x", "--session", "s1"]) == cli.EXIT_API_ERROR
    assert "INVALID_PATH" in capsys.readouterr().err
    assert len(api.requests) == 1


def test_download_into_a_folder_keeps_the_file_name(monkeypatch, tmp_path, capsys):
    api = Api(
        {
            ("GET", "/v1/sessions/s1/files/out/a.png"): lambda r: httpx.Response(
                200, json={"path": "out/a.png", "size": 3, "download_url": "http://s3.test/dl"}
            ),
            ("GET", "/dl"): lambda r: httpx.Response(200, content=b"png"),
        }
    )
    _patch_cli(monkeypatch, api)
    existing = tmp_path / "existing"
    existing.mkdir()
    for local, expected in (
        (str(existing), existing / "a.png"),
        (f"{tmp_path}/new/", tmp_path / "new" / "a.png"),
        (str(tmp_path / "renamed.png"), tmp_path / "renamed.png"),
    ):
        assert cli.main(["download", "out/a.png", local, "--session", "s1"]) == 0
        assert expected.read_bytes() == b"png"
    monkeypatch.chdir(tmp_path)
    assert cli.main(["download", "out/a.png", "--session", "s1"]) == 0
    assert (tmp_path / "a.png").read_bytes() == b"png"


# --- run ------------------------------------------------------------------------------------------


def _run_api(document: dict) -> Api:
    return Api({("POST", "/v1/execute"): lambda r: httpx.Response(200, json=document)})


def test_save_images_writes_pngs_and_prints_their_paths(monkeypatch, tmp_path, capsys):
    png = png_bytes(20, 10)
    document = result(stdout="hi\n", outputs=[image_output(png), image_output(png)])
    _patch_cli(monkeypatch, _run_api(document))
    monkeypatch.setattr(sys, "stdin", io.StringIO("plot()"))
    folder = tmp_path / "images"
    assert cli.main(["run", "-", "--save-images", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert out == "hi\n"
    saved = sorted(folder.iterdir())
    assert [p.name for p in saved] == ["e1-1.png", "e1-2.png"]
    assert saved[0].read_bytes() == png
    assert f"[image saved: {saved[0]}]" in err and "[display:" not in err


def test_timeouts_are_seconds_zero_and_negatives_are_refused(monkeypatch, capsys):
    for bad in ("0", "-1", "nan", "soon"):
        with pytest.raises(SystemExit) as exited:
            cli.build_parser().parse_args(["run", "x.py", "--timeout", bad])
        assert exited.value.code == 2
        assert "--timeout" in capsys.readouterr().err
    api = _run_api(result())
    _patch_cli(monkeypatch, api)
    monkeypatch.setattr(sys, "stdin", io.StringIO("1"))
    assert cli.main(["run", "-", "--timeout", "0.05"]) == 0
    assert json.loads(api.requests[0].content)["timeout_ms"] == 50


def test_api_and_executor_milliseconds_are_said_in_seconds(monkeypatch, capsys):
    message = "timeout_ms must be at most 300000"
    refused = Api(
        {
            ("POST", "/v1/execute"): lambda r: httpx.Response(
                400, json={"error": {"code": "INVALID_REQUEST", "message": message}}
            )
        }
    )
    _patch_cli(monkeypatch, refused)
    monkeypatch.setattr(sys, "stdin", io.StringIO("1"))
    assert cli.main(["run", "-", "--timeout", "900"]) == cli.EXIT_API_ERROR
    assert capsys.readouterr().err == "lci: INVALID_REQUEST: --timeout must be at most 300 s\n"
    error = {
        "name": "TimeoutError",
        "value": "execution exceeded the time limit of 1000 ms",
        "traceback": ["TimeoutError: execution exceeded the time limit of 1000 ms"],
    }
    timed_out = result(status="timeout", success=False, error=error)
    _patch_cli(monkeypatch, _run_api(timed_out))
    monkeypatch.setattr(sys, "stdin", io.StringIO("while True: pass"))
    assert cli.main(["run", "-", "--timeout", "1"]) == cli.EXIT_TIMEOUT == 4
    err = capsys.readouterr().err
    assert "time limit of 1 s" in err and "ms" not in err


def test_a_missing_script_is_a_usage_error(capsys, tmp_path):
    assert cli.main(["run", str(tmp_path / "nope.py")]) == cli.EXIT_USAGE
    assert "cannot read" in capsys.readouterr().err


# --- the parser -----------------------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_argument_and_command_has_help_text():
    for parser in _parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                assert all(helps.values()), (parser.prog, helps)
            else:
                assert action.help, (parser.prog, action.dest)


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "exit status:" in out
    for code, meaning in cli.EXIT_CODES.items():
        assert f"{code:<4}{meaning}" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"lci {lci.__version__}\n"


def test_a_missing_extra_prints_the_pip_line_and_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mcp", None)  # as if `mcp` were not installed
    assert cli.main(["mcp"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "pip install 'lambda-code-interpreter[mcp]'" in err
    assert "Traceback" not in err


def test_mcp_needs_an_existing_root(capsys, tmp_path):
    assert cli.main(["mcp", "--root", str(tmp_path / "missing")]) == cli.EXIT_USAGE
    assert "mcp:" in capsys.readouterr().err

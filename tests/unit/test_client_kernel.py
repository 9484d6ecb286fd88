"""The Jupyter side of `lci` without a server: the kernelspec `lci kernel install` writes (the
key never in it), the missing extra's pip line, is_complete by IPython's rules, and how polled
outputs become Jupyter messages (each once; a growing stream as its new text only). The kernel
against a running stack: tests/e2e/test_jupyter_kernel.py."""

from __future__ import annotations

import importlib
import json
import sys

import lci.cli as cli
import pytest
from lci.kernel import OutputForwarder, is_complete
from lci.kernelspec import DISPLAY_NAME


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "user-data"))  # --user lands here
    monkeypatch.delenv("LCI_ENDPOINT", raising=False)
    monkeypatch.delenv("LCI_API_KEY", raising=False)


def test_install_into_a_prefix_keeps_the_endpoint_and_never_the_key(tmp_path, capsys):
    status = cli.main(
        [
            "kernel", "install", "--prefix", str(tmp_path), "--name", "lci-dev",
            "--endpoint", "https://api.example/dev/", "--api-key", "secret-key", "--json",
        ]
    )  # fmt: skip
    assert status == cli.EXIT_OK
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["path"] == str(tmp_path / "share" / "jupyter" / "kernels" / "lci-dev")
    spec_text = (tmp_path / "share/jupyter/kernels/lci-dev/kernel.json").read_text()
    spec = json.loads(spec_text)
    assert spec["display_name"] == DISPLAY_NAME == "Python 3.13 (Lambda Code Interpreter)"
    assert spec["argv"] == [sys.executable, "-m", "lci.kernel", "-f", "{connection_file}"]
    assert spec["language"] == "python" and spec["interrupt_mode"] == "signal"
    assert spec["env"] == {"LCI_ENDPOINT": "https://api.example/dev"}
    assert "secret-key" not in spec_text
    assert "not written into the kernelspec" in captured.err


def test_install_for_the_user_by_default(tmp_path, capsys):
    assert cli.main(["kernel", "install"]) == cli.EXIT_OK
    spec = json.loads((tmp_path / "user-data/kernels/lci/kernel.json").read_text())
    assert "env" not in spec
    assert "installed kernel" in capsys.readouterr().out


def test_install_refuses_a_bad_name_and_exclusive_locations(tmp_path, capsys):
    assert cli.main(["kernel", "install", "--prefix", str(tmp_path), "--name", "a b"]) == (
        cli.EXIT_USAGE
    )
    assert "kernel install:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["kernel", "install", "--user", "--prefix", str(tmp_path)])


def test_a_missing_jupyter_extra_prints_the_pip_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ipykernel.kernelbase", None)
    assert cli.main(["kernel", "install"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "pip install 'lambda-code-interpreter[jupyter]'" in err
    assert "Traceback" not in err
    monkeypatch.delitem(sys.modules, "lci.kernel")
    with pytest.raises(SystemExit) as exited:
        importlib.import_module("lci.kernel")
    assert "pip install 'lambda-code-interpreter[jupyter]'" in str(exited.value.code)


@pytest.mark.parametrize(
    ("code", "status", "indent"),
    [
        ("x = 1", "complete", None),
        ("def f():", "incomplete", "    "),
        ("!ls", "complete", None),
        ("x = )", "invalid", None),
    ],
)
def test_is_complete(code, status, indent):
    reply = is_complete(code)
    assert reply["status"] == status
    assert reply.get("indent") == indent


def _stream(name, text):
    return {"output_type": "stream", "name": name, "text": text}


def test_polled_outputs_are_sent_once_and_streams_as_their_new_text():
    sent = []
    forwarder = OutputForwarder(lambda kind, content: sent.append((kind, content)), 7)
    forwarder.forward([_stream("stdout", "a\n")])
    forwarder.forward([_stream("stdout", "a\nb\n")])  # the same stream, grown
    image = {"output_type": "display_data", "data": {"image/png": "iVBOR"}, "metadata": {}}
    forwarder.forward([_stream("stdout", "a\nb\n"), image, _stream("stderr", "w\n")])
    final = [
        _stream("stdout", "a\nb\n"),
        image,
        _stream("stderr", "w\n"),
        {"output_type": "execute_result", "data": {"text/plain": "3"}, "metadata": {}},
        {"output_type": "error", "ename": "E", "evalue": "v", "traceback": ["t"]},
    ]
    forwarder.forward(final)
    forwarder.forward(final)  # the finished result polled twice: nothing new
    assert sent == [
        ("stream", {"name": "stdout", "text": "a\n"}),
        ("stream", {"name": "stdout", "text": "b\n"}),
        ("display_data", {"data": {"image/png": "iVBOR"}, "metadata": {}, "transient": {}}),
        ("stream", {"name": "stderr", "text": "w\n"}),
        ("execute_result", {"execution_count": 7, "data": {"text/plain": "3"}, "metadata": {}}),
        ("error", {"ename": "E", "evalue": "v", "traceback": ["t"]}),
    ]
    assert forwarder.sent_error


def test_a_finished_list_that_reorders_the_running_one_sends_nothing_twice():
    sent = []
    forwarder = OutputForwarder(lambda kind, content: sent.append((kind, content["data"])), 1)
    figure = {"output_type": "display_data", "data": {"image/png": "iVBOR"}, "metadata": {}}
    value = {"output_type": "execute_result", "data": {"text/plain": "Text(0.5, 1.0, 'k')"}}
    forwarder.forward([figure])  # while running: the figure, no result yet
    forwarder.forward([value, figure])  # finished: the result first
    assert sent == [("display_data", figure["data"]), ("execute_result", value["data"])]
    forwarder.forward([value, figure, figure])  # a second, identical figure is new
    assert sent[-1] == ("display_data", figure["data"]) and len(sent) == 3

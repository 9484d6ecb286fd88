"""The client's copy of the API's workspace path rules agrees with the API on one table, and local
paths stay inside their root (symlinks included)."""

from __future__ import annotations

import os

import pytest
from lci import LciError
from lci.paths import (
    MAX_REMOTE_PATH_BYTES,
    InvalidRemotePath,
    LocalRoot,
    OutsideRoot,
    validate_remote_path,
)

from lambdas.api.errors import InvalidPath
from lambdas.api.service.common import validate_path
from lambdas.shared import limits

from .client_fakes import Api, client_for

PATHS = [
    "a.txt",
    "dir/sub/x.csv",
    "a//b/./c",
    "./a",
    "a/./b",
    "données/é.txt",
    "with space.txt",
    ".hidden",
    "a..b",
    "...",
    "",
    " ",
    "/etc/passwd",
    "../x",
    "../etc/passwd",
    "a/../../x",
    "a/..",
    "..",
    ".",
    "./",
    "a\x00b",
    "a\nb",
    "a\tb",
    "a\x7fb",
    "d/",
    "a\\b",
    "C:\\x",
    "x" * 512,
    "x" * 513,
    "é" * 256,
    "é" * 257,
]


def _api(raw: str) -> tuple[str, str]:
    try:
        return "ok", validate_path(raw)
    except InvalidPath as exc:
        return "invalid", exc.message


def _client(raw: str) -> tuple[str, str]:
    try:
        return "ok", validate_remote_path(raw)
    except InvalidRemotePath as exc:
        return "invalid", str(exc)


@pytest.mark.parametrize("raw", PATHS)
def test_client_and_api_agree_on_every_path(raw):
    assert _client(raw) == _api(raw)


def test_the_length_limit_is_the_apis():
    assert MAX_REMOTE_PATH_BYTES == limits.MAX_PATH_LENGTH


def test_the_sdk_refuses_an_invalid_remote_path_before_any_request():
    api = Api({})
    with pytest.raises(LciError) as caught:
        client_for(api).download_file("s1", "../etc/passwd")
    assert (caught.value.status, caught.value.code) == (400, "INVALID_PATH")
    assert "must not contain '..'" in caught.value.message
    assert api.requests == []


def test_local_paths_stay_inside_the_root(tmp_path):
    root_dir = tmp_path / "root"
    (root_dir / "sub").mkdir(parents=True)
    (root_dir / "sub" / "in.txt").write_text("in")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, root_dir / "link.txt")
    os.symlink(tmp_path, root_dir / "escape")
    root = LocalRoot(root_dir)
    assert root.resolve("sub/in.txt") == root_dir / "sub" / "in.txt"
    assert root.resolve(root_dir / "sub" / "new.txt") == root_dir / "sub" / "new.txt"
    assert root.resolve("sub/../sub/in.txt") == root_dir / "sub" / "in.txt"
    for escaping in ("../secret.txt", str(outside), "/etc/hostname", "link.txt", "escape/x"):
        with pytest.raises(OutsideRoot):
            root.resolve(escaping)
    assert root.display(root_dir / "sub" / "in.txt") == "sub/in.txt"

"""`SyncedFiles`: the live workspace follows the session's stored files exactly (issue 11
item 4): deleted -> removed, replaced (new ETag, even at the same size) -> downloaded again,
changed locally since the sync -> downloaded again, unknown local files left alone."""

from __future__ import annotations

import os

from lambdas.executor.sandbox.workspace import SyncedFiles, fingerprint


def _ref(path: str, etag: str, size: int = 4) -> dict:
    return {"path": path, "etag": etag, "size": size, "download_url": f"http://s3/{path}"}


def _write(root, relative: str, data: bytes) -> None:
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def test_a_file_held_at_its_etag_is_kept_and_a_new_etag_is_downloaded(tmp_path):
    synced = SyncedFiles()
    workspace = str(tmp_path)
    plan = synced.plan(workspace, [_ref("a.txt", "e1")])
    assert [r["path"] for r in plan.downloads] == ["a.txt"] and plan.removals == []
    _write(tmp_path, "a.txt", b"AAAA")
    synced.record(workspace, "a.txt", "e1")
    assert synced.plan(workspace, [_ref("a.txt", "e1")]).downloads == []
    # Replaced through the API with as many bytes: the ETag says so.
    assert [r["path"] for r in synced.plan(workspace, [_ref("a.txt", "e2")]).downloads] == ["a.txt"]


def test_a_file_changed_or_removed_locally_since_the_sync_is_downloaded_again(tmp_path):
    synced = SyncedFiles()
    workspace = str(tmp_path)
    _write(tmp_path, "a.txt", b"AAAA")
    synced.record(workspace, "a.txt", "e1")
    _write(tmp_path, "a.txt", b"changed!")
    assert len(synced.plan(workspace, [_ref("a.txt", "e1")]).downloads) == 1
    os.unlink(tmp_path / "a.txt")
    assert len(synced.plan(workspace, [_ref("a.txt", "e1")]).downloads) == 1


def test_an_uploaded_file_counts_as_synced_at_the_fingerprint_it_was_uploaded_with(tmp_path):
    synced = SyncedFiles()
    workspace = str(tmp_path)
    _write(tmp_path, "out.csv", b"1,2\n")
    before_upload = fingerprint(workspace, "out.csv")
    synced.record(workspace, "out.csv", "md5", before_upload)
    assert synced.plan(workspace, [_ref("out.csv", "md5")]).downloads == []
    # Deleted through the API: the stored set no longer has it, so the workspace neither.
    plan = synced.plan(workspace, [])
    assert plan.removals == ["out.csv"]
    synced.remove(workspace, "out.csv")
    assert not (tmp_path / "out.csv").exists()
    assert synced.plan(workspace, []).removals == []


def test_files_the_worker_never_synced_and_partial_listings_are_left_alone(tmp_path):
    synced = SyncedFiles()
    workspace = str(tmp_path)
    _write(tmp_path, "scratch.txt", b"local only")
    _write(tmp_path, "kept.txt", b"KEPT")
    synced.record(workspace, "kept.txt", "e1")
    assert synced.plan(workspace, []).removals == ["kept.txt"]
    # Over the file cap the API lists only some files: nothing may be deleted then.
    assert synced.plan(workspace, [], complete=False).removals == []


def test_removal_never_follows_a_parent_replaced_by_a_symlink(tmp_path):
    synced = SyncedFiles()
    workspace = tmp_path / "ws"
    outside = tmp_path / "outside"
    outside.mkdir()
    _write(workspace, "d/f.txt", b"x")
    synced.record(str(workspace), "d/f.txt", "e1")
    (outside / "f.txt").write_bytes(b"not yours")
    (workspace / "d" / "f.txt").unlink()
    (workspace / "d").rmdir()
    (workspace / "d").symlink_to(outside)
    synced.remove(str(workspace), "d/f.txt")
    assert (outside / "f.txt").read_bytes() == b"not yours"

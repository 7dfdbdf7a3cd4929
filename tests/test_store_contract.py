"""The `Store` contract, run against every backend: commit (manifest last), read back,
stream and verify artifacts, clean uncommitted leftovers, LTS records, delete.

Callers rely on exactly these behaviours and nothing else (they never see the layout).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.store import fake_build

from nsls2_artifacts.errors import StoreError
from nsls2_artifacts.records import LtsRecord, isoformat, utcnow
from nsls2_artifacts.store import ArtifactMismatchError, FilesystemStore, Store, open_store
from nsls2_artifacts.store.s3 import S3Store


def _tamper(store: Store, env: str, build_id: str, data: bytes) -> None:
    """Overwrite a committed artifact behind the store's back (a bad sync, a vandal)."""
    if isinstance(store, FilesystemStore):
        (store.root / env / build_id / "env.tar.zst").write_bytes(data)
        return
    assert isinstance(store, S3Store)
    key = f"{store.prefix}{env}/{build_id}/env.tar.zst"
    store.client.put_object(Bucket=store.bucket, Key=key, Body=data)
    time.sleep(1.1)  # a new LastModified second: the stamp is (size, modified)


def _killed_publish(store: Store, env: str, build_id: str) -> None:
    """What a publish killed before its manifest leaves behind in each backend."""
    staging = store.staging_dir(env, build_id)
    (staging / "env.tar.zst").write_bytes(b"half")
    if isinstance(store, S3Store):  # an uploaded lock and an unfinished multipart upload
        key = f"{store.prefix}{env}/{build_id}/"
        store.client.put_object(Bucket=store.bucket, Key=key + "pixi.lock", Body=b"lock")
        store.client.create_multipart_upload(Bucket=store.bucket, Key=key + "env.tar.zst")


def test_commit_then_read_back(store: Store) -> None:
    old = fake_build(store, "demo", 3, b"old")
    new = fake_build(store, "demo", 1, b"new")
    assert store.envs() == ["demo"]
    assert [m.build_id for m in store.builds("demo")] == [old, new]
    manifest = store.manifest("demo", new)
    assert manifest.build_id == new and manifest.artifact.size == 300
    with store.open_artifact(manifest) as stream:
        assert stream.read() == b"new" * 100
    store.verify_build(manifest)
    assert store.invalid_builds("demo") == [] and store.strays() == []
    with pytest.raises(StoreError, match="no such committed build"):
        store.manifest("demo", "2026.01.01T000000Z-00000000")


def test_tampered_artifact_is_refused_by_verify(store: Store) -> None:
    build = fake_build(store, "demo", 1, b"abc")
    manifest = store.manifest("demo", build)
    before = store.artifact_stamp(manifest)
    _tamper(store, "demo", build, b"xyz" * 100)  # same size, other bytes
    with pytest.raises(ArtifactMismatchError, match="sha256 mismatch"):
        store.verify_build(manifest)
    _tamper(store, "demo", build, b"short")
    with pytest.raises(ArtifactMismatchError, match="size 5, manifest says 300"):
        store.verify_build(manifest)
    assert store.artifact_stamp(manifest) != before  # a quarantine of the old bytes lapses


def test_open_artifact_hands_out_no_byte_before_the_hash_matched(
    store: Store, tmp_path: Path
) -> None:
    """Issue 17 item 3: S3 streamed the object into the reader and hashed on the way,
    so a same-size object overwritten after commit was read (and parsed) before the
    mismatch was known. Every backend now refuses at open, before the first byte."""
    build = fake_build(store, "demo", 1, b"abc")
    manifest = store.manifest("demo", build)
    _tamper(store, "demo", build, b"xyz" * 100)  # same size, other bytes
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    handed_out = []
    with (
        pytest.raises(ArtifactMismatchError, match="sha256 mismatch"),
        store.open_artifact(manifest, scratch=scratch) as stream,
    ):
        handed_out.append(stream.read(1))
    assert handed_out == []
    assert list(scratch.iterdir()) == []  # the spool is gone with the refusal


def test_uncommitted_leftovers_are_invisible_and_cleaned(store: Store) -> None:
    committed = fake_build(store, "demo", 1, b"ok")
    _killed_publish(store, "demo", "2026.01.01T000000Z-abcdef12")
    assert [m.build_id for m in store.builds("demo")] == [committed]
    assert store.uncommitted("demo")
    with store.publish_lock("demo"):
        assert store.clean_uncommitted("demo")
    assert store.uncommitted("demo") == []
    if isinstance(store, S3Store):
        assert store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []
    assert [m.build_id for m in store.builds("demo")] == [committed]


def test_lts_records_and_delete(store: Store) -> None:
    build = fake_build(store, "demo", 1, b"lts")
    store.set_lts(LtsRecord("demo", "2026-1", build, isoformat(utcnow())))
    assert [(r.label, r.build_id) for r in store.lts("demo")] == [("2026-1", build)]
    assert store.invalid_lts("demo") == []
    with pytest.raises(StoreError):  # only committed builds can be promoted
        store.set_lts(LtsRecord("demo", "x", "2026.01.01T000000Z-00000000", "2026-01-01"))
    store.delete_build("demo", build)
    assert store.builds("demo") == []


def test_changes_token_moves_with_commits(store: Store) -> None:
    before = store.changes_token()
    fake_build(store, "demo", 1, b"one")
    after = store.changes_token()
    assert before is None or before != after
    if isinstance(store, S3Store):  # agents poll this instead of listing
        assert after is not None and store.changes_token() == after


_: Callable[[Path], Store] = FilesystemStore  # the default backend satisfies the protocol


def test_node_reports_are_replaced_whole_and_listed_by_node(store: Store) -> None:
    assert store.node_reports() == []
    fake_build(store, "demo", 1, b"x")
    store.put_node_report("sdcc-02", {"node": "sdcc-02", "envs": {}})
    store.put_node_report("sdcc-01", {"node": "sdcc-01", "envs": {"base": {"latest": "a"}}})
    store.put_node_report("sdcc-01", {"node": "sdcc-01", "envs": {"base": {"latest": "b"}}})
    reports = store.node_reports()
    assert [r.node for r in reports] == ["sdcc-01", "sdcc-02"]
    assert reports[0].data == {"node": "sdcc-01", "envs": {"base": {"latest": "b"}}}
    assert all(r.error == "" and r.written.tzinfo is not None for r in reports)
    assert store.envs() == ["demo"]  # reports never look like an env
    with pytest.raises(StoreError, match="node name"):
        store.put_node_report("../etc", {})


def test_node_report_never_creates_a_missing_store(tmp_path: Path) -> None:
    store = open_store(tmp_path / "gone")
    with pytest.raises(StoreError, match="does not exist"):
        store.put_node_report("sdcc-01", {})
    assert not (tmp_path / "gone").exists()


_LOCKER = """
import sys
from nsls2_artifacts.config import StoreOptions
from nsls2_artifacts.errors import BuildLockedError
from nsls2_artifacts.store import FilesystemStore
from nsls2_artifacts.store.s3 import S3Store
location, endpoint = sys.argv[1], sys.argv[2]
store = (
    S3Store(location, StoreOptions(endpoint_url=endpoint, addressing_style="path"))
    if location.startswith("s3://")
    else FilesystemStore(location)
)
try:
    with store.publish_lock("demo"):
        pass
except BuildLockedError as exc:
    print(exc)
    sys.exit(3)
"""


def _lock_from_another_process(store: Store) -> subprocess.CompletedProcess[str]:
    endpoint = store.options.endpoint_url if isinstance(store, S3Store) else ""
    return subprocess.run(
        [sys.executable, "-c", _LOCKER, store.location, endpoint or ""],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_one_publish_per_env_and_labels_repoint(store: Store) -> None:
    with store.publish_lock("demo"):
        refused = _lock_from_another_process(store)
        assert refused.returncode == 3, refused.stderr
        assert "another publish of 'demo'" in refused.stdout
    assert _lock_from_another_process(store).returncode == 0  # released on exit
    first = fake_build(store, "demo", 2, b"first")
    second = fake_build(store, "demo", 1, b"second")
    store.set_lts(LtsRecord("demo", "2026-1", first, isoformat(utcnow())))
    store.set_lts(LtsRecord("demo", "2026-1", second, isoformat(utcnow())))  # moved on purpose
    assert [(r.label, r.build_id) for r in store.lts("demo")] == [("2026-1", second)]

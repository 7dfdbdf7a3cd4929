"""The content index format (contentindex.py): round trip, validation of untrusted input
naming the field, the manifest's `index` record, and the store round trip on both backends.

The index against a real archive (every member, hashes, rewritten flags) is tested in
tests/test_pack_frames.py.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard
from msgspec.structs import replace

from nsls2_artifacts.contentindex import (
    INDEX_FILE,
    MAX_COMPRESSED,
    ContentIndex,
    FrameRecord,
    IndexEntry,
    read_index,
    write_index,
)
from nsls2_artifacts.errors import StoreError
from nsls2_artifacts.records import (
    ArtifactInfo,
    BuildManifest,
    IndexInfo,
    LockInfo,
    PackageRef,
    RecordError,
    isoformat,
    make_build_id,
    utcnow,
)
from nsls2_artifacts.store import ArtifactMismatchError, FilesystemStore, Store
from nsls2_artifacts.store.s3 import S3Store

SHA = "ab" * 32


def sample_index() -> ContentIndex:
    frames = (
        FrameRecord(0, 100, 0, 2048, "python", "11" * 32),
        FrameRecord(100, 40, 2048, 1536, "", "22" * 32),
    )
    entries = (
        IndexEntry("bin/python3.11", "file", 10, SHA, 0o755, "", False, 0),
        IndexEntry("bin/python", "symlink", 0, "", 0o777, "python3.11", False, 0),
        IndexEntry("lib/empty", "dir", 0, "", 0o755, "", False, 0),
        IndexEntry("bin/conda-unpack", "file", 5, SHA, 0o755, "", True, 1),
    )
    return ContentIndex(archive_sha256="cd" * 32, frames=frames, entries=entries)


def _blob(data: dict[str, Any]) -> bytes:
    return zstandard.ZstdCompressor().compress(json.dumps(data).encode())


def test_round_trip_through_bytes_and_file(tmp_path: Path) -> None:
    index = sample_index()
    assert ContentIndex.from_bytes(index.to_bytes()) == index
    info = write_index(tmp_path, index)
    blob = (tmp_path / INDEX_FILE).read_bytes()
    assert info == IndexInfo(INDEX_FILE, hashlib.sha256(blob).hexdigest(), len(blob))
    assert read_index(blob, info) == index
    assert index.files()["bin/python"].target == "python3.11"
    assert [e.path for e in index.frame_entries(1)] == ["bin/conda-unpack"]


def test_read_index_checks_size_and_sha256(tmp_path: Path) -> None:
    info = write_index(tmp_path, sample_index())
    blob = (tmp_path / INDEX_FILE).read_bytes()
    with pytest.raises(RecordError, match="size"):
        read_index(blob + b"x", info)
    with pytest.raises(RecordError, match="sha256"):
        read_index(blob, replace(info, sha256="0" * 64))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["entries"][0].update(path="../etc/passwd"), "entries[0].path"),
        (lambda d: d["entries"][0].update(path="/abs"), "entries[0].path"),
        (lambda d: d["entries"][0].update(path="a//b"), "entries[0].path"),
        (lambda d: d["entries"][0].update(sha256="xyz"), "entries[0].sha256"),
        (lambda d: d["entries"][0].update(type="fifo"), "entries[0].type"),
        (lambda d: d["entries"][0].update(frame=7), "entries[0].frame"),
        (lambda d: d["entries"][0].update(size=-1), "entries[0].size"),
        (lambda d: d["entries"][0].update(rewritten=1), "entries[0].rewritten"),
        (lambda d: d["entries"][0].update(mode=0o177777), "entries[0].mode"),
        (lambda d: d["entries"][1].update(target=""), "entries[1].target"),
        # issue 17: the reader's caps hold for members of skipped frames too
        (lambda d: d["entries"][0].update(path="a/" * 300 + "f"), "entries[0].path"),
        (lambda d: d["entries"][0].update(path="n" * 256), "entries[0].path"),
        (lambda d: d["entries"][1].update(target="a/" * 3000), "entries[1].target"),
        (lambda d: d["entries"][2].update(size=3), "entries[2].size"),
        (lambda d: d["entries"].append(dict(d["entries"][0])), "entries[4].path"),
        (lambda d: d["frames"][1].update(offset=99), "frames[1].offset"),
        (lambda d: d["frames"][0].update(key="1"), "frames[0].key"),
        (lambda d: d["frames"][0].pop("package"), "frames[0].package"),
        (lambda d: d.update(schema=99), "schema"),
        (lambda d: d.pop("archive_sha256"), "archive_sha256"),
    ],
)
def test_bad_index_names_the_field(change: Any, field: str) -> None:
    data = sample_index().to_dict()
    change(data)
    with pytest.raises(RecordError) as caught:
        ContentIndex.from_bytes(_blob(data))
    assert caught.value.field == field, str(caught.value)
    assert INDEX_FILE in str(caught.value)


def test_oversized_or_garbage_index_is_refused() -> None:
    with pytest.raises(RecordError, match="limit"):
        ContentIndex.from_bytes(b"\0" * (MAX_COMPRESSED + 1))
    with pytest.raises(RecordError, match="not zstd"):
        ContentIndex.from_bytes(b"plain json is not accepted")
    with pytest.raises(RecordError, match="invalid JSON"):
        ContentIndex.from_bytes(zstandard.ZstdCompressor().compress(b"{nope"))
    with pytest.raises(RecordError, match="not a JSON object"):
        ContentIndex.from_bytes(_blob([]))  # type: ignore[arg-type]


def _manifest(index: IndexInfo | None) -> BuildManifest:
    created = utcnow() - timedelta(hours=1)
    return BuildManifest(
        name="demo",
        build_id=make_build_id(created, "12345678" * 8),
        created=isoformat(created),
        platform="linux-64",
        display_name="NSLS-II demo",
        smoke=("json",),
        artifact=ArtifactInfo("env.tar.zst", SHA, 3, "tar.zst"),
        lock=LockInfo("pixi.lock", SHA),
        packages=(PackageRef("python", "3.11.7", "0", "conda-forge"),),
        index=index,
    )


def test_manifest_index_record_is_optional_and_checked() -> None:
    old = _manifest(None)
    assert "index" not in old.to_dict()
    assert BuildManifest.from_dict(old.to_dict()) == old
    assert old.files() == ["env.tar.zst", "pixi.lock"]
    new = _manifest(IndexInfo(INDEX_FILE, SHA, 10))
    assert new.to_dict()["index"] == {"file": INDEX_FILE, "sha256": SHA, "size": 10}
    assert BuildManifest.from_dict(new.to_dict()) == new
    assert new.files() == ["env.tar.zst", "pixi.lock", INDEX_FILE]
    data = new.to_dict()
    data["index"]["file"] = "../manifest.json"
    with pytest.raises(RecordError) as caught:
        BuildManifest.from_dict(data)
    assert caught.value.field == "file" and "index" in caught.value.record


def _commit_with_index(target: Store, tmp_path: Path, *, lose_index: bool = False) -> BuildManifest:
    created = utcnow() - timedelta(hours=1)
    archive, lock = b"archive" * 50, b"version: 6\n"
    build_id = make_build_id(created, hashlib.sha256(lock).hexdigest())
    staging = target.staging_dir("demo", build_id)
    (staging / "env.tar.zst").write_bytes(archive)
    (staging / "pixi.lock").write_bytes(lock)
    info = write_index(staging, sample_index())
    manifest = replace(
        _manifest(info),
        build_id=build_id,
        created=isoformat(created),
        artifact=ArtifactInfo(
            "env.tar.zst", hashlib.sha256(archive).hexdigest(), len(archive), "tar.zst"
        ),
        lock=LockInfo("pixi.lock", hashlib.sha256(lock).hexdigest()),
    )
    if lose_index:  # named by the manifest, gone before the commit stored it
        (staging / INDEX_FILE).unlink()
    target.commit_build(staging, manifest)
    return manifest


def test_a_build_is_never_visible_before_its_index_is_stored(
    store: Store,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The index is stored before manifest.json (the commit marker), on both backends: a
    commit that cannot store the index fails and leaves no visible build."""
    with pytest.raises(StoreError):
        _commit_with_index(store, tmp_path, lose_index=True)
    assert store.builds("demo") == []


def test_store_round_trip_of_the_index(store: Store, tmp_path: Path) -> None:  # noqa: F811
    manifest = _commit_with_index(store, tmp_path)
    committed = store.manifest("demo", manifest.build_id)
    assert committed.index == manifest.index
    assert store.read_index(committed) == sample_index()
    store.verify_build(committed)
    # a build from before the index has none, and that is no error
    assert store.read_index(replace(committed, index=None)) is None
    # a damaged index fails verify and read, as a property of the stored build
    if isinstance(store, FilesystemStore):
        path = store.root / "demo" / manifest.build_id / INDEX_FILE
        path.write_bytes(path.read_bytes()[:-1] + b"\0")
    else:
        assert isinstance(store, S3Store)
        key = f"{store.prefix}demo/{manifest.build_id}/{INDEX_FILE}"
        store.client.put_object(Bucket=store.bucket, Key=key, Body=b"damaged")
    with pytest.raises(ArtifactMismatchError, match="index"):
        store.verify_build(committed)
    with pytest.raises(ArtifactMismatchError, match="index"):
        store.read_index(committed)
    store.delete_build("demo", manifest.build_id)
    assert store.builds("demo") == []


def test_the_inline_check_and_the_naming_check_agree() -> None:
    """The index is decoded into its Structs either way; the inline check (`_plain`, the
    agent's hot path) accepts the usual index, and one it does not take (a non-ASCII name,
    a field from a newer packer) is still accepted by the check that names a bad field
    (test above)."""
    from nsls2_artifacts.contentindex import _plain

    index = sample_index()
    text = json.dumps(index.to_dict()).encode()
    assert ContentIndex.from_bytes(_blob(index.to_dict())) == index
    assert ContentIndex.from_dict(json.loads(text)) == index and _plain(index)
    data = index.to_dict()
    data["entries"][0]["path"] = "lib/données.py"  # valid, but not the plain ASCII case
    data["entries"][0]["added_by_a_newer_packer"] = 1  # ignored (docs/design.md)
    assert not _plain(ContentIndex.from_dict(data))
    assert ContentIndex.from_bytes(_blob(data)).entries[0].path == "lib/données.py"

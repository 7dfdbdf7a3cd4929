"""A deduplicated deploy verifies frame by frame and reads only the frames it keeps
(issue #20): each kept frame's tar bytes against its content-index record (sha256 = key,
length = tar_length), never the whole archive's sha256. Real archives, real stores (a
directory and SeaweedFS), real deploys; the archive is damaged behind the store's back.

What is proven, on both backends: bytes damaged inside a frame the deploy skips do not
matter (the linked build is byte for byte what the index lists) and are never read (the
bytes read are the kept frames'); a damaged kept frame is quarantined at `verify` with
the frame named, leaves nothing behind, and a later good build deploys; an archive of
another size is refused though its kept frames match; a full deploy (no donor) still
hashes the whole archive and refuses a damaged byte anywhere.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support.agent import events, write_site
from support.dedup import commit_framed

from nsls2_artifacts import layout
from nsls2_artifacts.agent import dedup, deploy
from nsls2_artifacts.agent.log import setup_logging
from nsls2_artifacts.contentindex import ContentIndex, FrameRecord
from nsls2_artifacts.records import BuildManifest
from nsls2_artifacts.store import (
    ArtifactMismatchError,
    FilesystemStore,
    Store,
    interface,
    open_store,
)
from nsls2_artifacts.store.s3 import S3Store

V1 = {"alpha": "1.0", "beta": "1.0"}
V2 = {"alpha": "1.0", "beta": "2.0"}  # the nightly: frames python, alpha skipped; beta, "" kept
V3 = {"alpha": "1.1", "beta": "2.0"}
SKIPPED, KEPT = 1, 2  # frame numbers in V2's archive: alpha's, beta's


@pytest.fixture(params=["filesystem", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, Store]:
    """A fake-env site on each backend, and the store object its deploys use."""
    extra: dict[str, Any] = {}
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        extra = {"store": server.new_store_url(), "store_options": server.site_options()}
    _config, site = write_site(tmp_path / "site", **extra)
    return site, open_store(site)


def commit(site: Any, store: Store, versions: dict[str, str], hours: int) -> BuildManifest:
    staging = Path(tempfile.mkdtemp(dir=site.deploy_root.parent)) if _s3(store) else None
    return commit_framed(site, versions, hours, staging=staging)


def _s3(store: Store) -> bool:
    return isinstance(store, S3Store)


def deployed(site: Any, store: Store, manifest: BuildManifest) -> tuple[str, str, str]:
    """Deploy `manifest` in this process: (result, reason, log text)."""
    stream = io.StringIO()
    log = setup_logging(logging.INFO, stream, name=f"test-dedup-verify-{time.monotonic_ns()}")
    outcome = deploy.deploy_build(site, store, manifest, log)
    return outcome.result, outcome.reason, stream.getvalue()


def index_of(store: Store, manifest: BuildManifest) -> ContentIndex:
    index = store.read_index(manifest)
    assert index is not None
    return index


def damage(store: Store, manifest: BuildManifest, frame: FrameRecord) -> None:
    """Flip one byte in the middle of `frame`'s compressed bytes of the committed archive
    (same size: only the sha256 can tell)."""
    at = frame.offset + frame.length // 2
    _rewrite(store, manifest, lambda data: data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :])


def leftovers(site: Any, manifest: BuildManifest) -> list[str]:
    """What a deploy left in its env directory besides builds and `latest` (a partial
    directory, a spool), and the build directory of `manifest` unless it is ready."""
    names = [p.name for p in layout.env_dir(site.deploy_root, manifest.name).iterdir()]
    ready = layout.read_ready(site.deploy_root, manifest.name, manifest.build_id) is not None
    return [n for n in names if n.startswith(".") or (n == manifest.build_id and not ready)]


def test_a_linked_deploy_reads_only_its_kept_frames_and_a_damaged_skipped_one_is_unread(
    backend: tuple[Any, Store],
) -> None:
    site, store = backend
    first = commit(site, store, V1, 1)
    assert deployed(site, store, first)[0] == "deployed"
    nightly = commit(site, store, V2, 2)
    index = index_of(store, nightly)
    damage(store, nightly, index.frames[SKIPPED])
    with pytest.raises(ArtifactMismatchError, match="sha256 mismatch"):
        store.verify_build(nightly)  # the archive as a whole is damaged
    fetched = store.range_bytes if isinstance(store, S3Store) else 0

    result, reason, log = deployed(site, store, nightly)
    assert result == "deployed", reason
    build = layout.build_dir(site.deploy_root, "demo", nightly.build_id)
    record = dedup.read_record(build)
    assert record is not None and record.skipped_frames == 2
    # byte for byte what the index lists (etc/prefix.txt: conda-unpack's to rewrite)
    for entry in index.entries:
        if entry.type == "file" and entry.path != "etc/prefix.txt":
            digest = hashlib.sha256((build / entry.path).read_bytes()).hexdigest()
            assert digest == entry.sha256, entry.path
    # what was read: the two kept frames' compressed bytes, never the archive
    kept = [index.frames[n] for n in (KEPT, 3)]
    (verified,) = events(log, "verified")
    assert verified["what"] == "frames"
    assert (verified["frames_read"], verified["frames"]) == ("2", "4")
    assert int(verified["bytes_read"]) == sum(f.length for f in kept)
    assert sum(f.length for f in kept) < nightly.artifact.size * 0.6
    if isinstance(store, S3Store):  # counted by the store: only the kept frames came over
        assert store.range_bytes - fetched == sum(f.length for f in kept)
    assert leftovers(site, nightly) == []


def test_a_damaged_kept_frame_is_quarantined_at_verify_and_a_later_build_deploys(
    backend: tuple[Any, Store],
) -> None:
    site, store = backend
    first = commit(site, store, V1, 1)
    assert deployed(site, store, first)[0] == "deployed"
    nightly = commit(site, store, V2, 2)
    damage(store, nightly, index_of(store, nightly).frames[KEPT])

    result, reason, log = deployed(site, store, nightly)
    assert result == "quarantined"
    assert "frame 2 (beta)" in reason, reason
    record = deploy.read_quarantine(site.deploy_root, "demo", nightly.build_id)
    assert record is not None and record.stage == "verify"
    assert events(log, "verified") == []
    assert leftovers(site, nightly) == []  # no partial, no spool, no build directory
    assert layout.read_ready(site.deploy_root, "demo", nightly.build_id) is None

    later = commit(site, store, V3, 3)
    result, reason, _ = deployed(site, store, later)
    assert result == "deployed", reason
    kept = dedup.read_record(layout.build_dir(site.deploy_root, "demo", later.build_id))
    assert kept is not None and kept.linked_files > 0


def test_a_linked_deploy_refuses_an_archive_of_another_size(backend: tuple[Any, Store]) -> None:
    """Only the kept frames are read, but the artifact's size is still checked (the file's,
    or the total of each ranged answer on S3): a truncated or grown archive is quarantined
    at verify even when every kept frame would match."""
    site, store = backend
    first = commit(site, store, V1, 1)
    assert deployed(site, store, first)[0] == "deployed"
    nightly = commit(site, store, V2, 2)
    _rewrite(store, nightly, lambda data: data + b"\0" * 100)
    result, reason, _ = deployed(site, store, nightly)
    assert result == "quarantined", reason
    assert f"manifest says {nightly.artifact.size}" in reason, reason
    record = deploy.read_quarantine(site.deploy_root, "demo", nightly.build_id)
    assert record is not None and record.stage == "verify"
    assert leftovers(site, nightly) == []


def _rewrite(store: Store, manifest: BuildManifest, change: Any) -> None:
    """Replace the committed archive by `change(its bytes)` behind the store's back."""
    if isinstance(store, FilesystemStore):
        path = store.root / manifest.name / manifest.build_id / manifest.artifact.file
        path.write_bytes(change(path.read_bytes()))
        return
    assert isinstance(store, S3Store)
    key = f"{store.prefix}{manifest.name}/{manifest.build_id}/{manifest.artifact.file}"
    data = store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    store.client.put_object(Bucket=store.bucket, Key=key, Body=change(data))


def test_a_full_deploy_still_hashes_the_whole_archive(backend: tuple[Any, Store]) -> None:
    """No donor here: the deploy reads the whole archive and refuses a byte damaged in a
    frame a linked deploy could have skipped."""
    site, store = backend
    only = commit(site, store, V1, 1)
    damage(store, only, index_of(store, only).frames[SKIPPED])
    result, reason, log = deployed(site, store, only)
    assert result == "quarantined" and "sha256 mismatch" in reason, reason
    record = deploy.read_quarantine(site.deploy_root, "demo", only.build_id)
    assert record is not None and record.stage == "verify"
    assert leftovers(site, only) == []


@pytest.mark.parametrize("in_memory", [True, False])
def test_open_frames_hands_out_no_byte_of_a_frame_that_does_not_match(
    backend: tuple[Any, Store], monkeypatch: pytest.MonkeyPatch, in_memory: bool
) -> None:
    """Frames read apart (non-adjacent: two ranged GETs on S3) come out as their records
    say; a frame whose bytes decompress fine but are not its record's (another key,
    another length) is refused before its first byte, whether it is held in memory or
    decompressed twice (a frame over FRAME_IN_MEMORY)."""
    if not in_memory:
        monkeypatch.setattr(interface, "FRAME_IN_MEMORY", 0)
    site, store = backend
    manifest = commit(site, store, V1, 1)
    index = index_of(store, manifest)
    frames = index.frames
    scratch = site.deploy_root
    scratch.mkdir(parents=True, exist_ok=True)
    requests = store.requests if isinstance(store, S3Store) else 0
    with store.open_frames(manifest, [(0, frames[0]), (2, frames[2])], scratch=scratch) as reader:
        data = reader.read(-1) + reader.read(7)
        while chunk := reader.read(1 << 16):
            data += chunk
        reader.finish()
    # the tar bytes of frames 0 and 2, in order, as the packer hashed them
    assert len(data) == frames[0].tar_length + frames[2].tar_length
    assert hashlib.sha256(data[: frames[0].tar_length]).hexdigest() == frames[0].key
    assert hashlib.sha256(data[frames[0].tar_length :]).hexdigest() == frames[2].key
    assert reader.bytes_read == frames[0].length + frames[2].length
    if isinstance(store, S3Store):
        assert store.requests - requests == 2  # one ranged GET per run of adjacent frames

    wrong_key = msgspec.structs.replace(frames[1], key="0" * 64)
    longer = msgspec.structs.replace(frames[1], tar_length=frames[1].tar_length + 1)
    for bad, message in ((wrong_key, "sha256 mismatch"), (longer, "decompresses to")):
        handed_out = []
        with (
            pytest.raises(ArtifactMismatchError, match=f"frame 1 \\(alpha\\).*{message}"),
            store.open_frames(manifest, [(1, bad), (2, frames[2])], scratch=scratch) as reader,
        ):
            handed_out.append(reader.read(1))
        assert handed_out == []
    assert [p for p in scratch.iterdir() if p.name.startswith(".spool-")] == []

"""What every store backend offers, and the checks shared by all of them.

Callers (publish, the agent, retention, store prune, the hook, `status`) are typed
against `Store` and never see the backend's layout: listing, reading manifests and LTS
records, opening and verifying artifacts, committing and deleting builds all go through
these methods. Listings raise StoreError when the store is unreachable.

Two ways to a committed artifact's bytes, both checked before the tar reader sees one:
`open_artifact` (the whole archive, against the manifest's size and sha256) and
`open_frames` (some of its zstd frames, each against its record in the content index,
which the store checked against the manifest): a deduplicated deploy reads only the
frames it does not link.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

import zstandard

from ..contentindex import ContentIndex, FrameRecord, read_index
from ..errors import StoreError
from ..fsutil import parse_json
from ..names import node_name_problem
from ..records import BuildManifest, LtsRecord, RecordError

MANIFEST = "manifest.json"
HASH_CHUNK = 1 << 20
# a frame of at most this many tar bytes is decompressed once, into memory, and handed out
# from there once it matched; a larger one is decompressed twice (checked, then handed out)
FRAME_IN_MEMORY = 64 << 20

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


class ArtifactMismatchError(StoreError):
    """A committed build's file is missing or differs from its manifest (size or sha256).

    A property of the stored artifact, never of the reader: the agent quarantines it."""


@dataclass(frozen=True)
class InvalidBuild:
    """A committed build (or LTS record, `build_id` = "lts/LABEL") that could not be
    read; skipped, never fatal."""

    env: str
    build_id: str
    reason: str


@dataclass(frozen=True)
class ArtifactStamp:
    """What identifies the stored bytes of an artifact without reading them (size plus
    mtime or object version): a quarantine applies only while it is unchanged."""

    size: int
    mtime_ns: int


MISSING = ArtifactStamp(-1, -1)

NODE_REPORT_LIMIT = 1 << 20  # a report is a few kB; anything near this is a bug, refused


@dataclass(frozen=True)
class StoredNodeReport:
    """One node's last rollout report as the store holds it (see `Store.node_reports`).

    `written` is when the store recorded it (file mtime, object time), never the node's
    own clock; `data` is None and `error` says why when the report could not be read."""

    node: str
    data: dict[str, Any] | None
    written: datetime
    error: str = ""


def stored_report(node: str, raw: bytes, where: str, written: datetime) -> StoredNodeReport:
    """NODE's report from the bytes stored under its name (`where` names the file or
    object), or one with `error` saying why it cannot count: not JSON, not an object, or
    naming another node. A report speaks only for the node it is stored as: anyone who can
    write the store could otherwise make one node's report answer for another (docs/store.md,
    "Who can write the store")."""
    try:
        data = parse_json(raw)
    except ValueError as exc:
        return StoredNodeReport(node, None, written, f"{where}: not JSON: {exc}")
    if not isinstance(data, dict):
        return StoredNodeReport(node, None, written, f"{where}: not a JSON object")
    named = data.get("node")
    if named != node:
        return StoredNodeReport(
            node,
            None,
            written,
            f"{where}: stored as node {node!r}'s report but names node {named!r}; "
            "ignored (a report speaks only for the node it is stored as)",
        )
    return StoredNodeReport(node, data, written)


def check_node_name(node: str) -> str:
    """A node name usable as a file or object name in every backend; StoreError if not."""
    if problem := node_name_problem(node):
        raise StoreError(f"{problem} (it names a rollout report in the store)")
    return node


class ArtifactReader(Protocol):
    """A committed artifact's bytes (or the tar bytes of some of its frames), front to
    back. `finish()` reads what is left and raises ArtifactMismatchError unless every byte
    matched: nothing read from it may be trusted (renamed into place, marked ready) before
    `finish()` returned. The readers `Store.open_artifact` and `Store.open_frames` hand
    out check bytes before handing them out (`VerifiedReader`, `FrameReader`), so
    `finish()` there checks only what was not read."""

    def read(self, size: int = -1) -> bytes: ...
    def finish(self) -> None: ...


class CheckedReader:
    """An ArtifactReader that hashes the bytes as they stream by (for stores where reading
    twice costs a second transfer). The size is checked before the first byte."""

    def __init__(self, raw: IO[bytes], name: str, size: int, sha256: str, length: int) -> None:
        if length != size:
            raise ArtifactMismatchError(f"{name}: size {length}, manifest says {size}")
        self._raw, self._name, self._size, self._sha256 = raw, name, size, sha256
        self._digest = hashlib.sha256()
        self._seen = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._digest.update(data)
        self._seen += len(data)
        return data

    def finish(self) -> None:
        while self.read(HASH_CHUNK):
            pass
        if self._seen != self._size:
            raise ArtifactMismatchError(
                f"{self._name}: size {self._seen}, manifest says {self._size}"
            )
        if self._digest.hexdigest() != self._sha256:
            raise ArtifactMismatchError(
                f"{self._name}: sha256 mismatch "
                f"({self._digest.hexdigest()}, manifest says {self._sha256})"
            )


class VerifiedReader:
    """An ArtifactReader over bytes that were verified before the first read (local files:
    hashing first costs no transfer and keeps unverified bytes away from the tar reader)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw

    def read(self, size: int = -1) -> bytes:
        return self._raw.read(size)

    def fileno(self) -> int:
        """The local file's descriptor: the incremental pack copies frames by offset."""
        return self._raw.fileno()

    def finish(self) -> None:
        return None


class FrameReader:
    """An ArtifactReader over the tar bytes of some of an archive's zstd frames, one after
    the other, each checked against its content-index record before its first byte is
    handed out: it must decompress to exactly `tar_length` bytes whose sha256 is its `key`
    (ArtifactMismatchError otherwise, naming the frame). The index was checked against the
    manifest (`Store.read_index`), so a frame that matches holds the very tar bytes the
    build host packed, whatever the rest of the archive holds.

    `raw` is a local file holding each frame's compressed bytes at the offset given with
    it (the store's own file, or a spool of what was downloaded); `bytes_read` is how many
    compressed bytes came from the store. A frame of at most FRAME_IN_MEMORY tar bytes is
    decompressed once, into memory; a larger one is decompressed and checked, then
    decompressed again as it is handed out and checked again at its end (a store file's
    bytes could change in between: that frame's end, or `finish()`, raises)."""

    def __init__(
        self,
        raw: IO[bytes],
        spans: Sequence[tuple[int, FrameRecord, int]],
        name: str,
        bytes_read: int,
    ) -> None:
        """`spans`: (the frame's number in the index, its record, where its compressed
        bytes start in `raw`), in the order its tar bytes are wanted."""
        self._fd = raw.fileno()
        self._spans = list(spans)
        self._name = name
        self.bytes_read = bytes_read
        self._next = 0
        self._source: Iterator[bytes] | None = None  # the current frame's checked bytes
        self._pending = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        size = HASH_CHUNK if size < 0 else size
        while not self._pending:
            if self._source is not None:
                chunk = next(self._source, None)
                if chunk is None:
                    self._source = None
                else:
                    self._pending = memoryview(chunk)
                continue
            if self._next == len(self._spans):
                return b""
            self._source = self._verified(*self._spans[self._next])
            self._next += 1
        data, self._pending = self._pending[:size], self._pending[size:]
        return bytes(data)

    def finish(self) -> None:
        """Check the rest of the frame being read and every frame not read yet."""
        if self._source is not None:
            for _ in self._source:
                pass
        self._source, self._pending = None, memoryview(b"")
        while self._next < len(self._spans):
            number, frame, at = self._spans[self._next]
            self._next += 1
            for _ in self._checked(number, frame, at):
                pass

    def _verified(self, number: int, frame: FrameRecord, at: int) -> Iterator[bytes]:
        """The frame's tar bytes, checked before the first is handed out."""
        if frame.tar_length <= FRAME_IN_MEMORY:
            data = b"".join(self._checked(number, frame, at))  # raises before returning
            return iter((data,))
        for _ in self._checked(number, frame, at):
            pass
        return self._checked(number, frame, at)

    def _checked(self, number: int, frame: FrameRecord, at: int) -> Iterator[bytes]:
        """The frame decompressed from `raw`, raising ArtifactMismatchError at the first
        byte past `tar_length` or at its end, when the length or sha256 is not its record's."""
        what = f"{self._name}: frame {number} ({frame.package or 'no package'})"
        digest = hashlib.sha256()
        seen = 0
        for chunk in _frame_chunks(self._fd, at, frame, what):
            seen += len(chunk)
            if seen > frame.tar_length:
                raise ArtifactMismatchError(
                    f"{what} decompresses to more than its {frame.tar_length} bytes"
                )
            digest.update(chunk)
            yield chunk
        if seen != frame.tar_length:
            raise ArtifactMismatchError(
                f"{what} decompresses to {seen} bytes, the content index says {frame.tar_length}"
            )
        if digest.hexdigest() != frame.key:
            raise ArtifactMismatchError(
                f"{what}: sha256 mismatch ({digest.hexdigest()}, the content index says "
                f"{frame.key})"
            )


def _frame_chunks(fd: int, at: int, frame: FrameRecord, what: str) -> Iterator[bytes]:
    """The frame's compressed bytes (at `at` in the file `fd`) decompressed, bounded: at
    most one byte more than `tar_length` (which shows a frame holding more)."""
    reader = zstandard.ZstdDecompressor().stream_reader(
        _Span(fd, at, frame.length), read_size=HASH_CHUNK, read_across_frames=True
    )
    left = frame.tar_length + 1
    while left > 0:
        try:
            data = reader.read(min(HASH_CHUNK, left))
        except zstandard.ZstdError as exc:
            raise ArtifactMismatchError(f"{what}: not valid zstd data ({exc})") from None
        if not data:
            return
        left -= len(data)
        yield data


class _Span:
    """`length` bytes of the file `fd` from `offset`, read with pread (no shared file
    position): the compressed bytes of one frame."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self._fd, self._offset, self._left = fd, offset, length

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = os.pread(self._fd, size, self._offset) if size else b""
        self._offset += len(data)
        self._left -= len(data)
        return data


class ArtifactStore(Protocol):
    """Builds and LTS records, whatever holds them (see the module doc): what publish
    writes and the agent, retention and the `store` commands read."""

    @property
    def location(self) -> str:
        """Where the store is, for messages and `status` (a path or an URL)."""
        ...

    # -- reading -----------------------------------------------------------------------------
    def envs(self) -> list[str]: ...
    def builds(self, env: str) -> list[BuildManifest]:
        """Committed, readable builds of `env`, oldest first (by `created`)."""
        ...

    def invalid_builds(self, env: str) -> list[InvalidBuild]: ...
    def manifest(self, env: str, build_id: str) -> BuildManifest: ...
    def lts(self, env: str) -> list[LtsRecord]: ...
    def invalid_lts(self, env: str) -> list[InvalidBuild]: ...
    def strays(self) -> list[InvalidBuild]:
        """Entries of the store that are neither builds nor records the layout knows (a
        directory whose name is not a build id, a stray file), each with what it is;
        `env` is "" for entries at the top. `store verify` and `status` name them."""
        ...

    def changes_token(self) -> str | None:
        """Changes whenever a build is committed or deleted or an LTS record written;
        None when the backend cannot tell cheaply (callers then list)."""
        ...

    def watch_path(self) -> Path | None:
        """A local directory whose change events hint at store changes, if any."""
        ...

    def is_change_hint(self, path: str) -> bool:
        """Whether a write, rename or delete at `path` (under `watch_path`) can change
        what an agent plans: a commit marker or an LTS record, never a node report (each
        pass writes its own: a hint from it would start the next pass, forever)."""
        ...

    # -- artifacts ---------------------------------------------------------------------------
    def open_artifact(
        self, manifest: BuildManifest, *, scratch: Path | None = None
    ) -> AbstractContextManager[ArtifactReader]:
        """The committed artifact's bytes, size and sha256 checked against the manifest
        BEFORE the first byte is handed out (ArtifactMismatchError otherwise): nothing
        unverified ever reaches the tar reader. A remote backend spools the download to
        an unlinked file in `scratch` (None: the system temp dir)."""
        ...

    def open_frames(
        self,
        manifest: BuildManifest,
        frames: Sequence[tuple[int, FrameRecord]],
        *,
        scratch: Path | None = None,
    ) -> AbstractContextManager[FrameReader]:
        """The tar bytes of some of the artifact's zstd frames ((number, record) from the
        build's content index, as `read_index` returned it, in archive order), reading only
        their compressed bytes: a deduplicated deploy's frames it does not link. Each
        frame is checked against its record (length and sha256 of its tar bytes) before
        its first byte is handed out (`FrameReader`); the artifact's own sha256 is not
        checked (that would read it all), its size is. A remote backend fetches the
        frames' byte ranges into an unlinked spool file in `scratch`."""
        ...

    def artifact_stamp(self, manifest: BuildManifest) -> ArtifactStamp: ...
    def local_artifact(self, manifest: BuildManifest) -> Path | None:
        """The committed artifact as a local file, NOT checked against the manifest (the
        caller checks size and sha256 before it trusts a byte: the incremental pack does,
        keeping the hash state at each frame so the new archive's hash starts from it);
        None where the artifact is not a local file."""
        ...

    def verify_build(self, manifest: BuildManifest, *, lock: bool = True) -> None:
        """Size and sha256 of the artifact (and the lock and the content index, if any)
        against the manifest; raises ArtifactMismatchError naming the file."""
        ...

    def read_index(self, manifest: BuildManifest) -> ContentIndex | None:
        """The build's content index (`index.json.zst`), checked against the manifest's
        size and sha256 and parsed with its limits; None for a build without one (made
        before the index existed). ArtifactMismatchError when it is missing, differs or
        does not parse (a property of the stored build)."""
        ...

    # -- writing (build host only) -----------------------------------------------------------
    def publish_lock(self, env: str, *, wait: bool = False) -> AbstractContextManager[None]: ...
    def uncommitted(self, env: str) -> list[str]:
        """Leftovers of killed publishes (never visible to readers), by name."""
        ...

    def clean_uncommitted(self, env: str) -> list[str]:
        """Remove leftovers of killed publishes (call under `publish_lock`); their names."""
        ...

    def staging_dir(self, env: str, build_id: str) -> Path:
        """A fresh local directory to write a build's files into before `commit_build`."""
        ...

    def commit_build(
        self, staging: Path, manifest: BuildManifest, progress: Progress | None = None
    ) -> None:
        """Store the staged files, then manifest.json last: its presence commits."""
        ...

    def set_lts(self, record: LtsRecord) -> None: ...
    def delete_build(self, env: str, build_id: str) -> None:
        """Un-commit first (manifest.json goes), then remove the files."""
        ...


class NodeReports(Protocol):
    """Each node's rollout report, kept beside the builds (every agent writes its own; the
    hook, `status` and `rollout.py` read them): a separate contract, so a reader of reports
    needs nothing of the artifacts and a test can stand one in alone."""

    def put_node_report(self, node: str, data: dict[str, Any]) -> None:
        """Replace NODE's rollout report (a small JSON object) atomically: readers see the
        old report or the whole new one. StoreError for a bad node name or a failed write."""
        ...

    def node_reports(self) -> list[StoredNodeReport]:
        """Every node's last report, by node name; an unreadable one comes with `error`."""
        ...


class Store(ArtifactStore, NodeReports, Protocol):
    """The store as `open_store` returns it: artifacts and node reports in one place."""


def check_stream(
    chunks: Iterator[bytes] | Iterator[memoryview], name: str, size: int | None, sha256: str
) -> None:
    """Hash `chunks` and compare with the manifest's size (if given) and sha256."""
    digest = hashlib.sha256()
    seen = 0
    for chunk in chunks:
        digest.update(chunk)
        seen += len(chunk)
    if size is not None and seen != size:
        raise ArtifactMismatchError(f"{name}: size {seen}, manifest says {size}")
    if digest.hexdigest() != sha256:
        raise ArtifactMismatchError(
            f"{name}: sha256 mismatch ({digest.hexdigest()}, manifest says {sha256})"
        )


def parse_index(blob: bytes, manifest: BuildManifest) -> ContentIndex:
    """A stored index's bytes checked against `manifest.index` and parsed (both backends)."""
    assert manifest.index is not None
    try:
        return read_index(blob, manifest.index)
    except RecordError as exc:
        raise ArtifactMismatchError(f"{manifest.name}/{manifest.build_id}: {exc}") from None


def read_chunks(handle: IO[bytes]) -> Iterator[bytes]:
    while chunk := handle.read(HASH_CHUNK):
        yield chunk

"""The content index of a build: every member of its archive, with hashes and frames.

`pack.py` builds a `ContentIndex` while it writes the archive; publish stores it as
`STORE/ENV/BUILD_ID/index.json.zst` (before `manifest.json`, which names it with its
sha256 and size). Readers: the next publish (incremental pack: reuse the compressed
frames whose key did not change) and the agent (hardlink files unchanged since a deployed
build, skip frames it does not need). Records and (de)serialisation only: no policy, and
no file I/O beyond `write_index`/`read_index`. The agent treats an index as untrusted
input: `ContentIndex.from_bytes` bounds its size and refuses any path a tar member name
could not have (the same rules as `tarstream.canonical_name`), naming the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

import msgspec
import zstandard

from .records import IndexInfo, RecordError
from .tarstream import NAME_MAX, TarNameError, canonical_name, check_length

INDEX_SCHEMA = 1
INDEX_FILE = "index.json.zst"
# An index of a 100k-file env is ~17 MB of JSON and ~4 MB compressed (sha256s do not
# compress). Far above that is not an index we wrote: refused before it is decompressed.
MAX_COMPRESSED = 64 * 1024 * 1024
MAX_JSON = 512 * 1024 * 1024
MAX_ENTRIES = 2_000_000
MAX_FRAMES = 1_000_000
MAX_TEXT = 4096  # PATH_MAX: no member name or symlink target is longer
ENTRY_TYPES = ("file", "dir", "symlink")
_RECORD = INDEX_FILE
_HEX = frozenset("0123456789abcdef")
# field types the decoder checks (in C) on the fast path; building a record in code checks
# nothing, as with any msgspec Struct
_Count = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]
_Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
_Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]


class FrameRecord(msgspec.Struct, frozen=True):
    """One zstd frame of the archive: its compressed bytes and the tar bytes it holds.

    `offset`/`length`: the frame's compressed bytes in the archive file. `tar_offset`/
    `tar_length`: where its uncompressed bytes sit in the tar stream (whole members: a frame
    never splits one). `package`: the conda package whose files it holds ("" for files of
    no package, and for the files conda-pack generates plus the end-of-archive marker,
    always the last frame). `key`: sha256 of the frame's uncompressed bytes, so equal keys
    mean byte-identical tar members. `source` (optional, "" if unknown): the packer's
    signature of what the frame was made from (pack.py `Group.signature`), which lets the
    next publish reuse the frame without reading its files; readers other than the
    packer can ignore it.
    """

    offset: _Count
    length: _Count
    tar_offset: _Count
    tar_length: _Count
    package: _Text
    key: _Sha256
    source: Annotated[str, msgspec.Meta(pattern="^([0-9a-f]{64})?$")] = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "length": self.length,
            "tar_offset": self.tar_offset,
            "tar_length": self.tar_length,
            "package": self.package,
            "key": self.key,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> FrameRecord:
        return cls(
            offset=_count(data, where, "offset"),
            length=_count(data, where, "length"),
            tar_offset=_count(data, where, "tar_offset"),
            tar_length=_count(data, where, "tar_length"),
            package=_text(data, where, "package"),
            key=_sha256(data, where, "key"),
            source=_sha256(data, where, "source") if data.get("source") else "",
        )


class IndexEntry(msgspec.Struct, frozen=True):
    """One archive member, as extracted (before conda-unpack).

    `path`: the member name (relative to the prefix, canonical). `size`/`sha256`: of the
    file's bytes in the archive (0/"" for dirs and symlinks). `mode`: permission bits.
    `target`: the symlink's target ("" otherwise). `rewritten`: conda-unpack (or anything
    else at deploy) may rewrite the file, or the packer changed it (prefix placeholders,
    shebang rewrites, conda-unpack and conda-pack's own scripts): never share its inode
    between builds. `frame`: index into `ContentIndex.frames` of the frame that holds it.
    """

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
    type: str  # "file", "dir" or "symlink"
    size: _Count
    sha256: str  # checked per type by `_fast_decode`
    mode: Annotated[int, msgspec.Meta(ge=0, le=0o7777)]
    target: _Text
    rewritten: bool
    frame: _Count

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.type,
            "size": self.size,
            "sha256": self.sha256,
            "mode": self.mode,
            "target": self.target,
            "rewritten": self.rewritten,
            "frame": self.frame,
        }

    @classmethod
    def parse(cls, data: Any, number: int, frames: int) -> IndexEntry:
        """`from_dict` of `entries[number]`, with the well-formed case checked inline: an
        index of a 100k-file env is parsed at every deploy (the generic checks took ~1.5 s
        of it). Anything the fast checks do not accept goes through `from_dict`, which
        accepts or refuses it naming the field."""
        try:
            path, kind, size, digest = data["path"], data["type"], data["size"], data["sha256"]
            mode, target, rewritten, frame = (
                data["mode"], data["target"], data["rewritten"], data["frame"],
            )  # fmt: skip
        except (TypeError, KeyError):
            path = None
        if (
            type(path) is str
            and type(target) is str
            and type(size) is int
            and type(mode) is int
            and type(frame) is int
            and type(rewritten) is bool
            and 0 < len(path) <= MAX_TEXT
            and len(target) <= MAX_TEXT
            and 0 <= mode <= 0o7777
            and 0 <= frame < frames
            and _plain_canonical(path)
            and _short(path)
            and _short(target)
            and (
                (kind == "file" and 0 <= size < 1 << 63 and _is_sha256(digest))
                or (kind == "dir" and size == 0 and digest == "")
                or (
                    kind == "symlink"
                    and size == 0
                    and digest == ""
                    and target
                    and "\0" not in target
                )
            )
        ):
            return cls(path, kind, size, digest, mode, target, rewritten, frame)
        return cls.from_dict(data, f"entries[{number}]", frames)

    @classmethod
    def from_dict(cls, data: Any, where: str, frames: int) -> IndexEntry:
        kind = _text(data, where, "type")
        if kind not in ENTRY_TYPES:
            raise RecordError(_RECORD, f"{where}.type", f"expected one of {ENTRY_TYPES}")
        path = _text(data, where, "path")
        try:  # the reader's rules: members of skipped frames are extracted from these
            check_length(path, "path")
            canonical_name(path, "path")
        except TarNameError as exc:
            raise RecordError(_RECORD, f"{where}.path", str(exc)) from None
        size = _count(data, where, "size")
        digest = _sha256(data, where, "sha256") if kind == "file" else _text(data, where, "sha256")
        target = _text(data, where, "target")
        if kind == "symlink" and (not target or "\0" in target):
            raise RecordError(_RECORD, f"{where}.target", "a symlink needs a target without NUL")
        try:
            check_length(target, "target")
        except TarNameError as exc:
            raise RecordError(_RECORD, f"{where}.target", str(exc)) from None
        if kind != "file" and (size or digest):
            raise RecordError(_RECORD, f"{where}.size", f"a {kind} has no size or sha256")
        mode = _count(data, where, "mode")
        if mode > 0o7777:
            raise RecordError(_RECORD, f"{where}.mode", f"{mode:o} is not a permission mode")
        rewritten = _field(data, where, "rewritten", bool)
        frame = _count(data, where, "frame")
        if frame >= frames:
            raise RecordError(_RECORD, f"{where}.frame", f"{frame} names no frame ({frames})")
        return cls(path, kind, size, digest, mode, target, rewritten, frame)


class ContentIndex(msgspec.Struct, frozen=True):
    """`index.json.zst`: the frames of one build's archive and every member in them.

    The records are msgspec Structs, and a well-formed index is decoded straight from its
    JSON bytes into them (`_fast_decode`: 0.29x the time of json.loads + the dict checks on
    100k entries, benchmarks/bench_index_parse.py); anything that path does not accept is
    parsed again field by field (`from_dict`), which accepts it or names the field.
    Unknown fields are ignored: a newer build host may add one (docs/design.md)."""

    archive_sha256: _Sha256
    frames: Annotated[tuple[FrameRecord, ...], msgspec.Meta(max_length=MAX_FRAMES)]
    entries: Annotated[tuple[IndexEntry, ...], msgspec.Meta(max_length=MAX_ENTRIES)]
    schema: Annotated[int, msgspec.Meta(le=INDEX_SCHEMA)] = INDEX_SCHEMA

    def files(self) -> dict[str, IndexEntry]:
        """Entries by path (the agent's lookup for "same file in an earlier build")."""
        return {e.path: e for e in self.entries}

    def frame_entries(self, frame: int) -> list[IndexEntry]:
        return [e for e in self.entries if e.frame == frame]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "archive_sha256": self.archive_sha256,
            "frames": [f.to_dict() for f in self.frames],
            "entries": [e.to_dict() for e in self.entries],
        }

    def to_bytes(self) -> bytes:
        """Compact JSON, zstd-compressed (one frame, content size recorded)."""
        text = json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)
        return zstandard.ZstdCompressor(level=9, write_checksum=True).compress(text.encode())

    @classmethod
    def from_dict(cls, data: Any) -> ContentIndex:
        if not isinstance(data, dict):
            raise RecordError(_RECORD, None, "not a JSON object")
        schema = _field(data, "", "schema", int)
        if schema > INDEX_SCHEMA:
            raise RecordError(
                _RECORD, "schema", f"schema {schema} is newer than this tool ({INDEX_SCHEMA})"
            )
        frames_raw = _field(data, "", "frames", list)
        entries_raw = _field(data, "", "entries", list)
        if len(frames_raw) > MAX_FRAMES or len(entries_raw) > MAX_ENTRIES:
            raise RecordError(_RECORD, "entries", "more frames or entries than any env has")
        frames = tuple(FrameRecord.from_dict(f, f"frames[{i}]") for i, f in enumerate(frames_raw))
        _check_frames(frames)
        entries = tuple(IndexEntry.parse(e, i, len(frames)) for i, e in enumerate(entries_raw))
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            if entry.path in seen:
                raise RecordError(_RECORD, f"entries[{i}].path", f"{entry.path!r} listed twice")
            seen.add(entry.path)
        return cls(
            schema=schema,
            archive_sha256=_sha256(data, "", "archive_sha256"),
            frames=frames,
            entries=entries,
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> ContentIndex:
        """Parse `index.json.zst` bytes, bounded (see MAX_*); RecordError names the field."""
        if len(blob) > MAX_COMPRESSED:
            raise RecordError(_RECORD, None, f"{len(blob)} bytes (limit {MAX_COMPRESSED})")
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(blob)
            text = reader.read(MAX_JSON + 1)
        except zstandard.ZstdError as exc:
            raise RecordError(_RECORD, None, f"not zstd-compressed JSON: {exc}") from None
        if len(text) > MAX_JSON:
            raise RecordError(_RECORD, None, f"decompresses to over {MAX_JSON} bytes")
        fast = _fast_decode(text)
        if fast is not None:
            return fast
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RecordError(_RECORD, None, f"invalid JSON: {exc}") from None
        return cls.from_dict(data)


_DECODER = msgspec.json.Decoder(ContentIndex)


def _fast_decode(text: bytes) -> ContentIndex | None:
    """The index if it is well-formed in the plain way every index we write is, else None
    (the caller then parses it field by field, which names what is wrong)."""
    try:
        index = _DECODER.decode(text)
        _check_frames(index.frames)
    except (msgspec.MsgspecError, RecordError):
        return None
    count, seen = len(index.frames), set()
    for entry in index.entries:
        path, kind, target = entry.path, entry.type, entry.target
        if not (  # types and ranges were checked by the decoder
            entry.frame < count
            and _plain_canonical(path)
            and _short(path)
            and _short(target)
            and path not in seen
            and (
                (kind == "file" and _is_sha256(entry.sha256))
                or (kind == "dir" and entry.size == 0 and entry.sha256 == "")
                or (
                    kind == "symlink"
                    and entry.size == 0
                    and entry.sha256 == ""
                    and target
                    and "\0" not in target
                )
            )
        ):
            return None
        seen.add(path)
    return index


def _plain_canonical(name: str) -> bool:
    """`canonical_name`'s verdict without building an exception (the fast path)."""
    wrapped = f"/{name}/"
    return not ("//" in wrapped or "/./" in wrapped or "/../" in wrapped or "\0" in name)


def _short(name: str) -> bool:
    """Within `tarstream.check_length`'s caps for sure (ASCII, one component's worth):
    anything longer takes the slow path, which checks and names the field."""
    return len(name) <= NAME_MAX and name.isascii()


def _is_sha256(value: Any) -> bool:
    return type(value) is str and len(value) == 64 and _HEX.issuperset(value)


def write_index(directory: str | Path, index: ContentIndex) -> IndexInfo:
    """Write `index` as `directory/index.json.zst` (flushed; the store's commit fsyncs)."""
    blob = index.to_bytes()
    path = Path(directory) / INDEX_FILE
    with open(path, "wb") as handle:
        handle.write(blob)
    return IndexInfo(file=INDEX_FILE, sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))


def read_index(blob: bytes, info: IndexInfo) -> ContentIndex:
    """Check `blob` against the manifest's `index` record, then parse it."""
    if len(blob) != info.size:
        raise RecordError(_RECORD, None, f"size {len(blob)}, manifest says {info.size}")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != info.sha256:
        raise RecordError(_RECORD, None, f"sha256 {digest}, manifest says {info.sha256}")
    return ContentIndex.from_bytes(blob)


def file_sha256(path: str | Path) -> str:
    """sha256 of a local file (tests and tools compare extracted files with an index)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- field checks ----------------------------------------------------------------------------


def _label(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _field(data: Any, where: str, name: str, kind: type) -> Any:
    label = _label(where, name)
    if not isinstance(data, dict):
        raise RecordError(_RECORD, where or None, "not a JSON object")
    if name not in data:
        raise RecordError(_RECORD, label, "missing")
    value = data[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise RecordError(_RECORD, label, f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _count(data: Any, where: str, name: str) -> int:
    value = _field(data, where, name, int)
    if value < 0 or value >= 1 << 63:
        raise RecordError(_RECORD, _label(where, name), f"{value} is out of range")
    return value


def _text(data: Any, where: str, name: str) -> str:
    value = _field(data, where, name, str)
    if len(value) > MAX_TEXT:
        raise RecordError(_RECORD, _label(where, name), f"longer than {MAX_TEXT} characters")
    return value


def _sha256(data: Any, where: str, name: str) -> str:
    value = _field(data, where, name, str)
    if len(value) != 64 or not set(value) <= _HEX:
        problem = f"{value[:80]!r} is not a sha256 hex digest"
        raise RecordError(_RECORD, _label(where, name), problem)
    return value


def _check_frames(frames: tuple[FrameRecord, ...]) -> None:
    """Frames tile the archive and the tar stream in order, without gaps or overlaps."""
    offset = tar_offset = 0
    for i, frame in enumerate(frames):
        if frame.offset != offset or frame.tar_offset != tar_offset:
            raise RecordError(
                _RECORD, f"frames[{i}].offset", "frames must follow each other without gaps"
            )
        offset += frame.length
        tar_offset += frame.tar_length

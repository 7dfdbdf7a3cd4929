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
from typing import Annotated, Any, Literal

import msgspec
import zstandard

from .records import IndexInfo, RecordError
from .schema import MISSING, literal_message, plain, split_error, to_builtins, type_at
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
EntryType = Literal["file", "dir", "symlink"]
_RECORD = INDEX_FILE
_HEX = frozenset("0123456789abcdef")
# field types the decoder checks (in C) on the fast path; building a record in code checks
# nothing, as with any msgspec Struct
_Count = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]
_Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]
_Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]


class FrameRecord(msgspec.Struct, frozen=True):
    """One zstd frame of the archive: its compressed bytes and the tar bytes it holds.

    `offset`/`length`: the frame's compressed bytes in the archive file. `tar_offset`/
    `tar_length`: where its uncompressed bytes sit in the tar stream (whole members: a frame
    never splits one). `package`: the conda package whose files it holds ("" for files of
    no package, and for the last frame: the packages' files conda-unpack may rewrite,
    then the files conda-pack generates and the end-of-archive marker). `key`: sha256 of
    the frame's uncompressed bytes, so equal keys mean byte-identical tar members.
    `source` (optional, "" if unknown): the packer's signature of what the frame was made
    from (pack.py `Package.signature`), which lets the next publish reuse the frame
    without reading its files; readers other than the packer can ignore it.
    """

    offset: _Count
    length: _Count
    tar_offset: _Count
    tar_length: _Count
    package: _Text
    key: _Sha256
    source: Annotated[str, msgspec.Meta(pattern=r"^([0-9a-f]{64})?\Z")] = ""


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
    type: EntryType
    size: _Count
    sha256: str  # a sha256 for a file, "" otherwise: checked by `_check_entry`
    mode: Annotated[int, msgspec.Meta(ge=0, le=0o7777)]
    target: _Text
    rewritten: bool
    frame: _Count


class ContentIndex(msgspec.Struct, frozen=True):
    """`index.json.zst`: the frames of one build's archive and every member in them.

    The records are msgspec Structs, decoded straight from the JSON bytes (types, ranges,
    hex and entry types checked in C) and then checked for what a type cannot say (path
    rules, frames tiling the archive, one entry per path): `_plain` accepts the usual index
    in one pass, `_check` names the field of anything else. Errors name the dotted field
    (`entries[3].path`). Unknown fields are ignored: a newer build host may add one
    (docs/design.md)."""

    archive_sha256: _Sha256
    frames: Annotated[tuple[FrameRecord, ...], msgspec.Meta(max_length=MAX_FRAMES)]
    entries: Annotated[tuple[IndexEntry, ...], msgspec.Meta(max_length=MAX_ENTRIES)]
    schema: int = INDEX_SCHEMA  # newer than INDEX_SCHEMA: refused by `_check`

    def files(self) -> dict[str, IndexEntry]:
        """Entries by path (the agent's lookup for "same file in an earlier build")."""
        return {e.path: e for e in self.entries}

    def frame_entries(self, frame: int) -> list[IndexEntry]:
        return [e for e in self.entries if e.frame == frame]

    def to_dict(self) -> dict[str, Any]:
        return to_builtins(self)

    def to_bytes(self) -> bytes:
        """Compact JSON, zstd-compressed (one frame, content size recorded)."""
        text = json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)
        return zstandard.ZstdCompressor(level=9, write_checksum=True).compress(text.encode())

    @classmethod
    def from_dict(cls, data: Any) -> ContentIndex:
        """Parsed JSON as an index, or RecordError naming the field."""
        try:
            index = msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise _error(str(exc)) from None
        return _checked(index)

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
        try:
            index = _DECODER.decode(text)
        except msgspec.ValidationError as exc:
            raise _error(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise RecordError(_RECORD, None, f"invalid JSON: {exc}") from None
        return _checked(index)


_DECODER = msgspec.json.Decoder(ContentIndex)


def _error(text: str) -> RecordError:
    """msgspec's error as RecordError naming the dotted field (`entries[3].size`)."""
    message, tokens = split_error(text)
    if found := MISSING.match(message):
        tokens, message = [*tokens, found["name"]], "missing"
    field = ".".join(tokens).replace(".[", "[") or None
    if field is None and message.startswith("Expected `object`"):
        return RecordError(_RECORD, None, "not a JSON object")
    return RecordError(
        _RECORD, field, plain(literal_message(message, type_at(ContentIndex, tokens)))
    )


def _checked(index: ContentIndex) -> ContentIndex:
    """`index` if it keeps the rules its types cannot say, else RecordError naming the field."""
    if not _plain(index):
        _check(index)
    return index


def _check(index: ContentIndex) -> None:
    """RecordError naming the first field that breaks a rule (`_plain` said one does)."""
    if index.schema > INDEX_SCHEMA:
        problem = f"schema {index.schema} is newer than this tool ({INDEX_SCHEMA})"
        raise RecordError(_RECORD, "schema", problem)
    _check_frames(index.frames)
    seen: set[str] = set()
    for i, entry in enumerate(index.entries):
        _check_entry(entry, f"entries[{i}]", len(index.frames))
        if entry.path in seen:
            raise RecordError(_RECORD, f"entries[{i}].path", f"{entry.path!r} listed twice")
        seen.add(entry.path)


def _check_entry(entry: IndexEntry, where: str, frames: int) -> None:
    try:  # the reader's rules: members of skipped frames are extracted from these
        check_length(entry.path, "path")
        canonical_name(entry.path, "path")
    except TarNameError as exc:
        raise RecordError(_RECORD, f"{where}.path", str(exc)) from None
    if entry.type == "file" and not _is_sha256(entry.sha256):
        problem = f"{entry.sha256[:80]!r} is not a sha256 hex digest"
        raise RecordError(_RECORD, f"{where}.sha256", problem)
    if entry.type == "symlink" and (not entry.target or "\0" in entry.target):
        raise RecordError(_RECORD, f"{where}.target", "a symlink needs a target without NUL")
    try:
        check_length(entry.target, "target")
    except TarNameError as exc:
        raise RecordError(_RECORD, f"{where}.target", str(exc)) from None
    if entry.type != "file" and (entry.size or entry.sha256):
        raise RecordError(_RECORD, f"{where}.size", f"a {entry.type} has no size or sha256")
    if entry.frame >= frames:
        problem = f"{entry.frame} names no frame ({frames})"
        raise RecordError(_RECORD, f"{where}.frame", problem)


def _plain(index: ContentIndex) -> bool:
    """Whether `index` keeps every rule, checked inline for the usual case (an index of a
    100k-file env is read at every deploy): short ASCII canonical paths. False sends it
    to `_check`, which accepts anything this refuses only for being unusual (a non-ASCII
    name) and names the field of the rest."""
    if index.schema > INDEX_SCHEMA:
        return False
    try:
        _check_frames(index.frames)
    except RecordError:
        return False
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
            return False
        seen.add(path)
    return True


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

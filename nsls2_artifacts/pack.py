"""Pack an installed prefix into a relocatable conda-pack archive (`env.tar.zst` or `.tar.gz`).

`publish` calls `pack`. conda-pack decides *what* goes in the archive and how (its file
records from the package cache, shebang rewrites, prefix records and the generated
`bin/conda-unpack`), through its own `Packer`. What we replace is the archive writer:
stock conda-pack spends most of its time in `tarfile.add` per file (owner lookups, small
copies), so we hand it an archive that writes tar headers directly, reads each file in one
call, batches writes into large buffers, and compresses with multithreaded zstd, hashing
the compressed bytes as they are written. The result is an ordinary tarball. This is the
only module that imports conda_pack; since it subclasses conda-pack internals (`Packer`,
`ArchiveBase`), pyproject.toml pins the conda-pack versions it is tested with.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import queue
import stat
import struct
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import conda_pack.core
import msgspec
import zstandard
from conda_pack.compat import find_py_source
from conda_pack.core import (
    CondaEnv,
    CondaPackException,
    File,
    Packer,
    check_no_editable_packages,
    find_site_packages,
    read_noarch_type,
)
from conda_pack.formats import ArchiveBase, ParallelGzipFileWriter

from .contentindex import ContentIndex, FrameRecord, IndexEntry, file_sha256
from .errors import PackError

FORMATS = {"zst": "tar.zst", "tar.zst": "tar.zst", "gz": "tar.gz", "tar.gz": "tar.gz"}
# zstd 5: ~0.89x the size of conda-pack's gzip -4 for about the same CPU as gzip alone, and it
# runs on every core. Level 6 is ~3% smaller for ~25% more CPU (docs/benchmarks.md, "Pack").
ZSTD_LEVEL = 5
GZIP_LEVEL = 4  # conda-pack's default
_FLUSH_AT = 8 * 1024 * 1024  # batch small files into large compressor writes
_READ_CHUNK = 8 * 1024 * 1024
_BLOCK = tarfile.BLOCKSIZE
DEFAULT_EPOCH = 1_577_836_800  # 2020-01-01T00:00:00Z: every member's mtime (source_date_epoch)
# Salt of frame signatures: bump when what a frame holds for the same files changes
# (member order, header fields, conda-pack treatment), so no older frame is reused.
PACK_FORMAT = "nsls2-frames-3"  # 3: files conda-unpack may rewrite moved to the last frame

# (files done, files total)
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class PackResult:
    path: Path
    format: str  # "tar.zst" or "tar.gz"
    sha256: str
    size: int
    files: int
    seconds: float
    index: ContentIndex | None = None
    reused_frames: int = 0  # frames copied from the previous build's archive
    packed_frames: int = 0  # frames compressed by this pack


class PreviousArchiveError(PackError):
    """The previous build's archive cannot give the frames its index promised (short,
    unreadable): publish packs in full instead (that build is never this one's problem)."""


class ArchiveStream(Protocol):
    def read(self, size: int = -1) -> bytes: ...


@dataclass
class PreviousPack:
    """A committed build to reuse frames from: its archive, read forward once (frames are
    reused in archive order), and its index.

    `stream` is the archive, or None with `opener`: a function that returns it, called
    when the first frame is copied (publish opens the store's verified reader on another
    thread, so the store's check of the whole archive overlaps the listing of the env).
    A stream with a `fileno()` (a local file: the filesystem store's file, the S3 store's
    spool) has its frames copied by offset in the kernel (`copy_file_range`) instead of
    through Python. The stream may be checked only at its end (a streaming reader hashes
    as it goes): the caller then calls its `finish()` before committing what was packed
    from it.
    """

    stream: ArchiveStream | None
    index: ContentIndex
    position: int = 0  # bytes of the archive passed so far
    opener: Callable[[], ArchiveStream] | None = field(default=None, compare=False)
    _by_frame: dict[int, list[IndexEntry]] = field(default_factory=dict, compare=False)

    def copy_frame(self, number: int, sink: _HashingSink) -> None:
        """Skip to frame `number` (it must lie ahead) and append its bytes to `sink`.
        PreviousArchiveError when the previous archive cannot give them."""
        frame = self.index.frames[number]
        if frame.offset < self.position:
            raise PreviousArchiveError("previous archive frames reused out of order")
        try:
            stream = self._stream()
            fd = _local_fileno(stream)
            if fd is not None:  # by offset: the file position of `stream` is never used
                sink.copy_range(fd, frame.offset, frame.length, getattr(stream, "states", None))
                self.position = frame.offset + frame.length
                return
            self._forward(stream, frame.offset - self.position, None)
            self._forward(stream, frame.length, sink.write)
        except (OSError, ValueError) as exc:  # ValueError: a closed file
            raise PreviousArchiveError(
                f"copying frame {number} of the previous archive: {exc}"
            ) from None

    def _stream(self) -> ArchiveStream:
        if self.stream is None:
            if self.opener is None:
                raise PreviousArchiveError("no previous archive to copy frames from")
            self.stream = self.opener()
        return self.stream

    def _forward(
        self, stream: ArchiveStream, count: int, write: Callable[[bytes], Any] | None
    ) -> None:
        while count:
            chunk = stream.read(min(count, _READ_CHUNK))
            if not chunk:
                raise PreviousArchiveError("the previous archive ends before its index says")
            self.position += len(chunk)
            count -= len(chunk)
            if write is not None:
                write(chunk)

    def entries_of(self, frame: int) -> list[IndexEntry]:
        if not self._by_frame:
            for entry in self.index.entries:
                self._by_frame.setdefault(entry.frame, []).append(entry)
        return self._by_frame.get(frame, [])


class CheckedArchive:
    """The previous build's archive, checked against its manifest by `checked_archive`
    before the first byte is handed out, with the sha256 state after each of its
    frames' bytes (`states`, by offset)."""

    def __init__(self, handle: BinaryIO, states: dict[int, Any]) -> None:
        self._handle = handle
        self.states = states

    def read(self, size: int = -1) -> bytes:
        return self._handle.read(size)

    def fileno(self) -> int:
        return self._handle.fileno()

    def finish(self) -> None:
        return None  # every byte was checked before the first was handed out


@contextlib.contextmanager
def checked_archive(
    path: str | Path, size: int, sha256: str, index: ContentIndex
) -> Iterator[CheckedArchive]:
    """Open the previous build's archive and check it (size, then the sha256 of every
    byte) as the store's verified open does, keeping the hash state at the start of each
    frame: a new archive that begins with the same frames at the same offsets has the
    same hash state there, so its own hash goes on from it instead of reading those
    bytes back (one sha256 pass instead of two for the unchanged front of the archive).
    PreviousArchiveError when it is not the archive its manifest names."""
    with open(path, "rb") as handle:
        found = os.fstat(handle.fileno()).st_size
        if found != size:
            raise PreviousArchiveError(f"{path}: size {found}, its manifest says {size}")
        digest, states, position = hashlib.sha256(), {}, 0
        for offset in sorted({frame.offset for frame in index.frames} | {size}):
            while position < offset:
                chunk = handle.read(min(_READ_CHUNK, offset - position))
                if not chunk:
                    raise PreviousArchiveError(f"{path}: shorter than its manifest says")
                digest.update(chunk)
                position += len(chunk)
            states[offset] = digest.copy()
        if handle.read(1) or digest.hexdigest() != sha256:
            raise PreviousArchiveError(f"{path}: not the archive its manifest names (sha256)")
        handle.seek(0)
        yield CheckedArchive(handle, states)


def _local_fileno(stream: ArchiveStream) -> int | None:
    """The descriptor of a stream that is a local regular file, else None."""
    fileno = getattr(stream, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = int(fileno())
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (OSError, ValueError, io.UnsupportedOperation):
        return None


def archive_name(fmt: str) -> str:
    return f"env.{normalise_format(fmt)}"


def normalise_format(fmt: str) -> str:
    try:
        return FORMATS[fmt]
    except KeyError:
        raise PackError(f"unknown archive format {fmt!r} (use zst or gz)") from None


def source_date_epoch() -> int:
    """The mtime every archive member gets: `$SOURCE_DATE_EPOCH` (the reproducible-builds
    convention) or a fixed default, so identical files make identical tar bytes."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not value:
        return DEFAULT_EPOCH
    if not value.isdigit() or int(value) >= 8**11:
        raise PackError(f"SOURCE_DATE_EPOCH={value!r} is not a time in seconds")
    return int(value)


def pack(
    prefix: str | Path,
    output: str | Path,
    *,
    fmt: str = "tar.zst",
    level: int | None = None,
    threads: int = 0,
    progress: ProgressFn | None = None,
    previous: PreviousPack | None = None,
    mtime: int | None = None,
) -> PackResult:
    """Pack `prefix` into `output`; sha256 and size are of the bytes written to `output`.

    Members are grouped by conda package (one zstd frame each, in package-name order),
    then files of no package, then conda-pack's generated files. With `previous`, a
    package whose frame signature (what its files were made from) equals a frame of the
    previous archive is not read or compressed again: that frame's bytes are copied.
    `threads` 0 means all cores. The archive is written in place: callers write into a
    staging directory and commit it afterwards.
    """
    started = time.perf_counter()
    fmt = normalise_format(fmt)
    prefix = Path(prefix).absolute()
    mtime = source_date_epoch() if mtime is None else mtime
    meta = MetaCache()  # each conda-meta record parsed once for grouping, signing, packing
    try:
        groups, python_id = load_groups(prefix, meta)
    except CondaPackException as exc:
        raise PackError(f"conda-pack cannot pack {prefix}: {exc}") from None
    framed = fmt == "tar.zst"
    plan = _FramePlan(
        salt=f"{PACK_FORMAT}:{mtime}:{python_id}:{prefix}",
        previous=previous if framed else None,
        total=sum(g.count for g in groups),
        progress=progress,
    )
    threads = threads or os.cpu_count() or 1
    try:
        raw = open(output, "wb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise PackError(f"cannot write {output}: {exc.strerror}") from None
    with raw:
        sink = _HashingSink(raw, output)
        try:
            compressor = _compressor(fmt, sink, level, threads)
            archive = FastTarArchive(compressor, sink=sink, mtime=mtime, framed=framed)
            packer = _Packer(str(prefix), archive)
            packer.meta = meta
            try:
                for group in groups:
                    plan.write(group, packer)
                plan.write_deferred(packer)  # opens the last frame, before the generated files
                with archive.generating():
                    packer.finish()  # activate scripts + bin/conda-unpack with the prefix records
                archive.close()
            except (CondaPackException, OSError, ValueError) as exc:
                raise PackError(f"packing {prefix} failed: {exc}") from None
            _finish(compressor)
            archive.close_frames()
            raw.flush()  # no fsync here: Store.commit_build fsyncs what it commits
            digest = sink.hexdigest()  # reads back copied ranges: before the file closes
        finally:
            sink.close()
    if progress:
        progress(plan.total, plan.total)
    return PackResult(
        path=Path(output),
        format=fmt,
        sha256=digest,
        size=sink.size,
        files=archive.members,
        seconds=time.perf_counter() - started,
        index=ContentIndex(
            archive_sha256=digest, frames=tuple(archive.frames), entries=archive.index_entries()
        ),
        reused_frames=archive.reused,
        packed_frames=len(archive.frames) - archive.reused,
    )


@dataclass
class _FramePlan:
    """Writes one group as a frame: copied from the previous archive when its signature
    matches one of that archive's frames, else packed (and progress reported).

    A package's files conda-pack may record a prefix for (those with a `file_mode`: what
    conda-unpack rewrites) are not in its frame: they are deferred to the last frame,
    packed every time with the files conda-pack generates. A deploy that links the
    unchanged files of an earlier build then skips every package frame but the changed
    ones, instead of decompressing a frame for one rewritten entry point (issue #20)."""

    salt: str  # what every signature depends on besides the package (format, python, prefix)
    previous: PreviousPack | None
    total: int
    progress: ProgressFn | None
    done: int = 0
    _reusable: dict[tuple[str, str], int] | None = None
    deferred: list[File] = field(default_factory=list)  # for the last frame, in order

    def write(self, group: Group | Package, packer: _Packer) -> None:
        archive = packer.archive
        signature = group.signature(self.salt, packer.meta)
        reuse = self.reusable().get((group.package, signature)) if signature else None
        previous = self.previous
        if reuse is not None and previous is not None and self._ahead(previous, reuse):
            recorded = group.recorded()
            with archive.discarding():  # conda-pack still reads the conda-meta record
                for record in recorded:
                    if not _deferred(group, record):
                        packer.add(record)
            self.deferred += [r for r in recorded if _deferred(group, r)]
            archive.adopt(previous, reuse)
            self.done += group.count - sum(1 for r in recorded if _deferred(group, r))
            return
        for record in group.members():
            if _deferred(group, record):
                self.deferred.append(record)
                continue
            packer.add(record)
            self._count()
        archive.end_frame(group.package, signature)

    def write_deferred(self, packer: _Packer) -> None:
        """The deferred files, at the start of the last frame (never reused: see `_reusable`)."""
        for record in self.deferred:
            packer.add(record)
            self._count()

    def _count(self) -> None:
        self.done += 1
        if self.progress and self.done % 256 == 0:
            self.progress(self.done, self.total)

    @staticmethod
    def _ahead(previous: PreviousPack, number: int) -> bool:
        """Frames come in package order in both archives, so a reusable one always lies
        ahead in the stream; anything else is packed anew rather than sought back."""
        return previous.index.frames[number].offset >= previous.position

    def reusable(self) -> dict[tuple[str, str], int]:
        if self._reusable is None:
            self._reusable = _reusable(self.previous) if self.previous else {}
        return self._reusable


def _deferred(group: Group | Package, record: File) -> bool:
    """Whether `record` goes to the last frame: a package's file conda-pack may record a
    prefix for (the files of no package keep theirs: conda-pack looks at each one's bytes)."""
    return bool(group.package) and record.file_mode is not None


def _reusable(previous: PreviousPack) -> dict[tuple[str, str], int]:
    """(package, signature) -> frame number of the previous archive, for frames that
    can be reused: made from a known signature, never the last (generated) frame."""
    frames = previous.index.frames
    return {
        (frame.package, frame.source): number
        for number, frame in enumerate(frames[:-1])
        if frame.source
    }


# -- listing the prefix -----------------------------------------------------------------------

# conda-pack's `load_files` skips these top-level names (conda_pack.core, 0.9)
_NOT_LISTED = frozenset(
    {"pkgs", "envs", "conda-bld", ".conda_lock", "users", "conda-recipes", ".index",
     ".unionfs", ".nonadmin", "python.app", "Launcher.app"}
)  # fmt: skip


@contextlib.contextmanager
def _fast_listing() -> Iterator[list[set[str]]]:
    """conda-pack's `load_environment` with `list_prefix` as its `load_files` (same set;
    the stock one costs a `relpath` per directory, a join per file and an `lstat` per
    directory: half of `CondaEnv.from_prefix` on a 30k-file env). The stock function is
    put back after: only our packs use ours (tests compare the two). Yields the list of
    the listings made (grouping takes the pycs from it)."""
    stock = conda_pack.core.load_files
    listings: list[set[str]] = []

    def listing(prefix: str) -> set[str]:
        listings.append(list_prefix(prefix))
        return set(listings[-1])  # conda-pack's to change as it likes

    conda_pack.core.load_files = listing
    try:
        yield listings
    finally:
        conda_pack.core.load_files = stock


def list_prefix(prefix: str) -> set[str]:
    """What conda-pack's `load_files(prefix)` returns, from one `scandir` per directory:
    every non-directory path (relative), symlinks to directories, and empty directories,
    under the top-level entries it does not skip."""
    found: set[str] = set()
    for name in os.listdir(prefix):
        if name in _NOT_LISTED or name.endswith("~") or name.endswith(".DS_STORE"):
            continue
        path = os.path.join(prefix, name)
        if os.path.isfile(path) or os.path.islink(path):
            found.add(name)
        else:
            _list_under(path, name, found)
    return found


def _list_under(path: str, relative: str, found: set[str]) -> None:
    """`os.walk(path)` as conda-pack reads it: unreadable directories are skipped, a
    symlink to a directory is listed and not entered, an empty directory is listed."""
    try:
        with os.scandir(path) as listing:
            entries = list(listing)
    except OSError:
        return
    directories = []
    for entry in entries:
        try:
            is_dir = entry.is_dir()  # follows symlinks, as os.walk sorts them
        except OSError:
            is_dir = False
        if is_dir:
            directories.append(entry)
        else:
            found.add(f"{relative}/{entry.name}")
    if not entries:
        found.add(relative)
    for entry in directories:
        inner = f"{relative}/{entry.name}"
        if entry.is_symlink():
            found.add(inner)
        else:
            _list_under(entry.path, inner, found)


# -- grouping members by package -------------------------------------------------------------

# conda-pack leaves these out of the unmanaged files (older condas put them in child envs)
_CONDA_SCRIPTS = frozenset({"bin/conda", "bin/activate", "bin/deactivate"})


class _PathRecord(msgspec.Struct):
    """One path of a package's `info/paths.json`: the fields conda-pack's `managed_file`
    reads (the others are ignored, as there)."""

    path: str = msgspec.field(name="_path")
    prefix_placeholder: str | None = None
    file_mode: str | None = None


class _PathsJson(msgspec.Struct):
    paths: list[_PathRecord]


_PATHS_JSON = msgspec.json.Decoder(_PathsJson)


@dataclass
class Package:
    """One conda package's frame, loaded as conda-pack's `load_environment` loads it but
    without a `File` per path until it is packed: the paths of its package cache
    directory's `info/paths.json` (conda-pack reads those files from the cache), for a
    noarch python package also the prefix files its record lists that paths.json does not
    (entry points), its conda-meta record, and the pycs install.py compiled for its
    sources. A reused frame needs `File`s only for what conda-pack may record a prefix
    for (conda-unpack's list): `recorded()`."""

    package: str
    prefix: str
    record: str  # its conda-meta/*.json
    cache: str  # its package cache directory
    noarch: bool
    site_packages: str | None
    paths_sha256: str  # of info/paths.json as read
    paths: list[_PathRecord]
    targets: list[str]  # where each of `paths` goes in the prefix
    extras: list[str]  # prefix files of a noarch package that paths.json does not list
    pycs: list[str] = field(default_factory=list)  # install.py's, of its sources
    pyc_stats: list[tuple[int, int]] = field(default_factory=list)  # (size, mode) of each

    @property
    def count(self) -> int:
        return len(self.paths) + len(self.extras) + len(self.pycs) + 1

    def members(self) -> list[File]:
        """Every member's conda-pack record, in path order."""
        base = os.path.join(self.cache, "")
        files = [
            File(base + r.path, t, True, r.file_mode, r.prefix_placeholder)
            for r, t in zip(self.paths, self.targets, strict=True)
        ]
        files += [self._extra(target) for target in self.extras]
        files.append(self._record_file())
        files += [File(os.path.join(self.prefix, t), t, False, None) for t in self.pycs]
        files.sort(key=lambda r: r.target)
        return files

    def recorded(self) -> list[File]:
        """The members conda-pack may record a prefix for (a `file_mode`) and the
        conda-meta record (its `finish` reads the records), in path order."""
        base = os.path.join(self.cache, "")
        files = [
            File(base + r.path, t, True, r.file_mode, r.prefix_placeholder)
            for r, t in zip(self.paths, self.targets, strict=True)
            if r.file_mode is not None
        ]
        files += [f for f in map(self._extra, self.extras) if f.file_mode is not None]
        files.append(self._record_file())
        files.sort(key=lambda r: r.target)
        return files

    def signature(self, salt: str, meta: MetaCache) -> str:
        """sha256 of what this frame is made from, without reading package files: the
        conda-meta record's bytes; the cache directory's paths.json bytes (every path,
        its hash and size as packaged, its prefix placeholder and mode: with the noarch
        type and site-packages, the members and conda-pack's treatment of each); each
        cache file's size, mtime and mode (rattler never changes one in place, and
        extracts with the package's mtimes, so a re-extract of the same package keeps
        them, and any write changes the mtime); a prefix file's content; a pyc
        install.py compiled by its size (its bytes follow from its source, in this frame,
        and the python build and prefix, in `salt`). "" when a file cannot be read: the
        frame is packed and conda-pack says what is wrong."""
        base = os.path.join(self.cache, "")
        try:
            stats = [os.lstat(base + r.path) for r in self.paths]
            links = [
                os.readlink(base + r.path)
                for r, st in zip(self.paths, stats, strict=True)
                if stat.S_ISLNK(st.st_mode)
            ]
            own = [_prefix_file(self.prefix, target) for target in self.extras]
            pycs = [(t, *st) for t, st in zip(self.pycs, self.pyc_stats, strict=True)]
        except OSError:
            return ""
        blob = msgspec.msgpack.encode(
            [
                salt, self.package, meta.file_sha256(self.record), self.paths_sha256,
                self.noarch, self.site_packages, self.extras, links, own, pycs,
                [(st.st_size, st.st_mtime_ns, st.st_mode) for st in stats],
            ]
        )  # fmt: skip
        return hashlib.sha256(blob).hexdigest()

    def _extra(self, target: str) -> File:
        mode = "unknown" if target.startswith(conda_pack.core.BIN_DIR) else None
        return File(os.path.join(self.prefix, target), target, True, mode, None)

    def _record_file(self) -> File:
        target = os.path.join("conda-meta", os.path.basename(self.record))
        return File(self.record, target, True, None, None)


def _prefix_file(prefix: str, target: str) -> tuple[str, int, str]:
    """(target, mode, content) of a file of the prefix: its bytes' sha256, or a link's target."""
    path = os.path.join(prefix, target)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return target, st.st_mode, os.readlink(path)
    return target, st.st_mode, file_sha256(path) if stat.S_ISREG(st.st_mode) else ""


def load_groups(prefix: Path, meta: MetaCache) -> tuple[list[Group | Package], str]:
    """The archive's frames as conda-pack lists their members (`CondaEnv.from_prefix`):
    one per conda package in name order, then the files of no package; plus the python
    package's identity (sha256) or "".

    Each package is loaded the way conda-pack's `load_environment` loads it, but its
    `File` records are made only if it is packed (`Package`). Anything that loader does
    not handle the plain way (no prefix or conda-meta, a package not in the cache or
    without paths.json, a missing file, a path two packages list) is left to conda-pack
    itself, which raises its error or lists what it lists; its packages are then packed
    every time (`Group`, no signature)."""
    loaded = _load_packages(str(prefix), meta)
    if loaded is not None:
        return loaded
    with _fast_listing() as listings:
        env = CondaEnv.from_prefix(str(prefix), on_missing_cache="raise")
    listing = listings[0] if len(listings) == 1 else None
    groups, python_id = group_files(prefix, list(env.files), meta, listing)
    return list(groups), python_id


def _load_packages(prefix: str, meta: MetaCache) -> tuple[list[Group | Package], str] | None:
    """conda-pack's `load_environment(prefix, on_missing_cache="raise")`, one `Package`
    per record, or None for what it should decide itself (see `load_groups`)."""
    conda_meta = os.path.join(prefix, "conda-meta")
    if not os.path.isdir(conda_meta):
        return None
    site_packages = find_site_packages(prefix)
    if site_packages is not None:
        check_no_editable_packages(prefix, site_packages)  # raises conda-pack's error
    listing = list_prefix(prefix)
    packages: list[Package] = []
    owner: dict[str, Package] = {}
    managed: set[str] = set()
    python_id = ""
    for name in sorted(os.listdir(conda_meta)):
        if not name.endswith(".json"):
            continue
        source = os.path.join(conda_meta, name)
        package = _load_package(prefix, source, meta, site_packages, listing)
        if package is None:
            return None
        targets = [*package.targets, *package.extras, os.path.join("conda-meta", name)]
        if not listing.issuperset(targets[:-1]) or not managed.isdisjoint(targets):
            return None  # a file missing (conda-pack's error) or listed by two packages
        managed.update(targets)
        owner.update(dict.fromkeys(targets, package))
        packages.append(package)
        if package.package == "python":
            python_id = meta.identity(source)
    rest = Group("")
    history = os.path.join(conda_meta, "history")
    if os.path.exists(history):
        managed.add("conda-meta/history")
        rest.files.append(File(history, "conda-meta/history", True, None, None))
    inside = os.path.join(prefix, "")
    for target in sorted(listing.difference(managed, _CONDA_SCRIPTS)):
        if "__pycache__" in target:  # else find_py_source is None
            source = _py_source(target)
            if source in managed:  # conda-pack leaves it out
                pyc = _compiled_pyc(inside + target) if target.endswith(".pyc") else None
                if pyc is not None:  # the one install.py compiled: packed with its source
                    owner[source].pycs.append(target)
                    owner[source].pyc_stats.append(pyc)
                continue
        rest.files.append(File(inside + target, target, False, "unknown", None))
    groups: list[Group | Package] = sorted(packages, key=lambda p: p.package)
    rest.files.sort(key=lambda r: r.target)
    if rest.files:
        groups.append(rest)
    return groups, python_id


def _load_package(
    prefix: str, source: str, meta: MetaCache, site_packages: str | None, listing: set[str]
) -> Package | None:
    """conda-pack's `load_managed_package` for the record at `source`, as a `Package`;
    None for what conda-pack should decide itself."""
    cache = meta.cache_dir(source)
    files = meta.view(source).files
    if not cache or not os.path.exists(cache) or not isinstance(files, list):
        return None  # not in the package cache: conda-pack's error
    noarch = read_noarch_type(cache) == "python"
    if noarch and site_packages is None:
        return None
    try:
        with open(os.path.join(cache, "info", "paths.json"), "rb") as handle:
            raw = handle.read()
        paths = _PATHS_JSON.decode(raw).paths
    except (OSError, msgspec.DecodeError):
        return None  # no paths.json (info/files and has_prefix): conda-pack reads it
    if any(r.path.startswith("/") for r in paths):
        return None
    if noarch:
        assert site_packages is not None
        bin_dir = conda_pack.core.BIN_DIR
        targets = [
            site_packages + p[13:]
            if p.startswith("site-packages/")
            else bin_dir + p[14:]
            if p.startswith("python-scripts/")
            else p
            for p in (r.path for r in paths)
        ]
        seen = set(targets)
        if not all(type(f) is str for f in files):
            return None
        extras = [
            f
            for f in files
            if f not in seen and f != ".nonadmin" and not (f.endswith(".pyc") and f not in listing)
        ]
    else:
        targets, extras = [r.path for r in paths], []
    return Package(
        package=meta.name(source),
        prefix=prefix,
        record=source,
        cache=cache,
        noarch=noarch,
        site_packages=site_packages,
        paths_sha256=hashlib.sha256(raw).hexdigest(),
        paths=paths,
        targets=targets,
        extras=extras,
    )


def _py_source(target: str) -> str | None:
    """conda-pack's `find_py_source(target)` (importlib's `source_from_cache`), with the
    usual `DIR/__pycache__/NAME.TAG.pyc` done in a line instead of importlib's path
    splitting (a third of the loader's time for the pycs of an env)."""
    head, _, name = target.rpartition("/")
    if (
        name.count(".") == 2
        and (head == "__pycache__" or head.endswith("/__pycache__"))
        and sys.pycache_prefix is None
        and sys.implementation.cache_tag is not None
    ):
        return head[: -len("__pycache__")] + name.partition(".")[0] + ".py"
    return find_py_source(target)


def _compiled_pyc(path: str) -> tuple[int, int] | None:
    """(size, mode) of an unchecked-hash pyc (what install.py compiles), else None; from
    the descriptor its header is read through (one path lookup, not two)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        st = os.lstat(path)  # a symlink: its header is its target's, it is packed as a link
        return (st.st_size, st.st_mode) if _unchecked_hash(path) else None
    try:
        header = os.read(fd, 16)
        # flags word: bit 0 hash-based, bit 1 check the source; 0b01 = unchecked-hash
        if len(header) < 16 or int.from_bytes(header[4:8], "little") != 0b01:
            return None
        st = os.fstat(fd)
        return st.st_size, st.st_mode
    finally:
        os.close(fd)


def _unchecked_hash(path: str) -> bool:
    """Is this pyc an unchecked-hash one (what install.py compiles)?"""
    header = _head(path, 16)
    # flags word: bit 0 hash-based, bit 1 check the source; 0b01 = unchecked-hash
    return len(header) == 16 and int.from_bytes(header[4:8], "little") == 0b01


@dataclass
class Group:
    """Members of one frame as conda-pack listed them, packed every time: the files of no
    package, or (when conda-pack's own loader had to decide, see `load_groups`) one
    package's files."""

    package: str
    files: list[File] = field(default_factory=list)
    bytecode: set[str] = field(default_factory=set)  # targets of pycs install.py compiled

    @property
    def count(self) -> int:
        return len(self.files)

    def signature(self, salt: str, meta: MetaCache) -> str:
        return ""  # never reused, never reusable

    def members(self) -> list[File]:
        return self.files

    def recorded(self) -> list[File]:
        return self.files


def group_files(
    prefix: Path, files: list[File], meta: MetaCache | None = None, listing: set[str] | None = None
) -> tuple[list[Group], str]:
    """conda-pack's file records grouped by the conda package that installed them (via
    `conda-meta/*.json` file lists), packages in name order, members in path order, then
    the files of no package; plus the python package's identity (sha256) or "".

    The hash-based pycs install.py compiled for package sources are added to their
    source's package (conda-pack leaves out pycs whose source a package owns)."""
    owners, python_id = _owners(prefix, meta or MetaCache())
    groups: dict[str, Group] = {}
    listed = set()
    for record in files:
        package = owners.get(record.target) or owners.get(_pyc_source(record.target), "")
        groups.setdefault(package, Group(package)).files.append(record)
        listed.add(record.target)
    for target in _compiled_pycs(prefix, listed, owners, listing):
        package = owners[_pyc_source(target)]
        group = groups.setdefault(package, Group(package))
        source = os.path.join(prefix, target)
        group.files.append(File(source, target, is_conda=False, file_mode=None))
        group.bytecode.add(target)
    ordered = sorted((g for name, g in groups.items() if name), key=lambda g: g.package)
    if "" in groups:
        ordered.append(groups[""])
    for group in ordered:
        group.files.sort(key=lambda r: r.target)
    return ordered, python_id


def _owners(prefix: Path, records: MetaCache) -> tuple[dict[str, str], str]:
    """target -> package name for every file a conda-meta record lists (and the record
    itself), and the python package's sha256."""
    owners: dict[str, str] = {}
    python_id = ""
    for meta in sorted((prefix / "conda-meta").glob("*.json")):
        data = records.data(str(meta))
        name = str(data.get("name", meta.stem))
        owners[f"conda-meta/{meta.name}"] = name
        for path in data.get("files") or ():
            owners[path] = name
        if name == "python":
            python_id = str(data.get("sha256") or data.get("md5") or data.get("version", ""))
    return owners, python_id


def _pyc_source(target: str) -> str:
    """`a/__pycache__/b.cpython-311.pyc` -> `a/b.py`; "" for anything else."""
    if "/__pycache__/" not in target or not target.endswith(".pyc"):
        return ""
    directory, _, name = target.rpartition("/__pycache__/")
    return f"{directory}/{name.split('.', 1)[0]}.py"


def _compiled_pycs(
    prefix: Path, listed: set[str], owners: dict[str, str], listing: set[str] | None = None
) -> list[str]:
    """Unchecked-hash pycs (what install.py compiles) of package sources that conda-pack
    did not list: it drops pycs whose source a package owns. They are taken from
    `listing` (the prefix as `list_prefix` listed it) or else from the `__pycache__` dirs
    next to package sources."""
    if listing is None:
        candidates = _pycache_files(prefix, owners)
    else:
        candidates = sorted(t for t in listing if t.endswith(".pyc") and "/__pycache__/" in t)
    found = []
    for target in candidates:
        if target in listed or _pyc_source(target) not in owners:
            continue
        if _unchecked_hash(os.path.join(prefix, target)):
            found.append(target)
    return found


def _pycache_files(prefix: Path, owners: dict[str, str]) -> list[str]:
    """`.pyc` files of the `__pycache__` dirs next to package sources."""
    found = []
    directories = {t.rpartition("/")[0] for t in owners if t.endswith(".py") and "/" in t}
    for directory in sorted(directories):
        try:
            with os.scandir(os.path.join(prefix, directory, "__pycache__")) as entries:
                names = sorted(e.name for e in entries if e.name.endswith(".pyc"))
        except OSError:
            continue
        found.extend(f"{directory}/__pycache__/{name}" for name in names)
    return found


def _head(path: str, size: int) -> bytes:
    """The first `size` bytes of a file (os.open: a third of io.open's cost, per pyc)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


class MetaCache:
    """conda-meta records, each read once per pack (loading, signatures and the packer).

    A record carries every path's hash (`paths_data`): most of its bytes. Loading and
    signing need only a few fields (`view`: name, files, link source, hashes), so the
    whole record is decoded only for a frame that is packed (`data`: local cache paths
    blanked; `packed`: its compact sorted JSON). The sha256 of the file as it is is what
    a signature needs: the packed bytes follow from it."""

    def __init__(self) -> None:
        self._records: dict[str, _MetaRecord] = {}
        self._packed: dict[str, bytes] = {}

    def _record(self, source: str) -> _MetaRecord:
        record = self._records.get(source)
        if record is None:
            with open(source, "rb") as handle:
                raw = handle.read()
            record = self._records[source] = _MetaRecord(source, raw)
        return record

    def view(self, source: str) -> _MetaView:
        return self._record(source).view()

    def data(self, source: str) -> dict[str, Any]:
        return self._record(source).data()

    def packed(self, source: str) -> tuple[bytes, dict[str, Any]]:
        data = self.data(source)
        if source not in self._packed:
            self._packed[source] = json.dumps(data, sort_keys=True).encode()
        return self._packed[source], data

    def file_sha256(self, source: str) -> str:
        return self._record(source).sha256

    def name(self, source: str) -> str:
        """The record's `name` (its file name's stem if it has none)."""
        name = self.view(source).name
        return Path(source).stem if name is msgspec.UNSET else str(name)

    def cache_dir(self, source: str) -> str | None:
        """The record's `link.source` as installed (None: no link record)."""
        link = self.view(source).link
        found = link.get("source") if isinstance(link, dict) else None
        return found if isinstance(found, str) else None

    def identity(self, source: str) -> str:
        """sha256, else md5, else version: the python package's identity in the salt."""
        view = self.view(source)
        return str(_set(view.sha256) or _set(view.md5) or _set(view.version) or "")

    def summary(self, source: str) -> dict[str, Any]:
        """What conda-pack's `finish` reads of a record it does not pack (its `name`)."""
        view = self.view(source)
        return {"name": self.name(source), "version": _set(view.version) or ""}


class _MetaView(msgspec.Struct):
    """The fields of a conda-meta record that loading and signing read (msgspec skips the
    rest without making objects of it)."""

    name: Any = msgspec.UNSET
    files: Any = msgspec.UNSET
    link: Any = msgspec.UNSET
    sha256: Any = msgspec.UNSET
    md5: Any = msgspec.UNSET
    version: Any = msgspec.UNSET


_META_VIEW = msgspec.json.Decoder(_MetaView)


def _set(value: Any) -> Any:
    return None if value is msgspec.UNSET else value


class _MetaRecord:
    def __init__(self, source: str, raw: bytes) -> None:
        self.source, self.raw = source, raw
        self.sha256 = hashlib.sha256(raw).hexdigest()
        self._view: _MetaView | None = None
        self._data: dict[str, Any] | None = None

    def view(self) -> _MetaView:
        if self._view is None:
            try:
                self._view = _META_VIEW.decode(self.raw)
            except msgspec.DecodeError:  # what msgspec refuses (NaN, lone surrogates)
                data = _decode_record(self.source, self.raw)
                self._view = _MetaView(**{k: data[k] for k in _VIEWED if k in data})
        return self._view

    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = _blanked(_decode_record(self.source, self.raw))
        return self._data


_VIEWED = ("name", "files", "link", "sha256", "md5", "version")


def _decode_record(source: str, raw: bytes) -> dict[str, Any]:
    """A conda-meta record's JSON: msgspec (a third of json's time), json what msgspec
    refuses (NaN, lone surrogates)."""
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        data = json.loads(raw)
    if not isinstance(data, dict):
        raise PackError(f"{source}: not a conda-meta record (a JSON object)")
    return data


def _blanked(data: dict[str, Any]) -> dict[str, Any]:
    """A conda-meta record as packed: local cache paths blanked (packed as compact sorted
    JSON by `MetaCache.packed`)."""
    link = data.get("link")
    if isinstance(link, dict) and "source" in link:
        link["source"] = ""
    for name in ("extracted_package_dir", "package_tarball_full_path"):
        if name in data:
            data[name] = ""
    return data


class _HashingSink:
    """The file the compressor writes to: counts the bytes on their way out; a worker
    thread hashes them (hashlib lets go of the GIL for large buffers, so the hash of the
    whole archive runs beside the packer's Python work, on another core if there is one).

    `copy_range` appends bytes of another local file without passing them through Python:
    the worker copies them into their place with `copy_file_range` (a copy in the kernel,
    a shared extent on filesystems with reflinks; read and write where the kernel refuses)
    while this thread goes on writing after them. Either way the hash is of the bytes as
    they are in this file, read back from it."""

    def __init__(self, raw: BinaryIO, path: str | Path) -> None:
        self.raw = raw
        self.size = 0
        self._worker = _SinkWorker(path)

    def write(self, data: Any) -> int:
        data = data if isinstance(data, bytes) else bytes(data)  # queued: must not change
        self.raw.write(data)
        self._worker.hash_bytes(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()

    def copy_range(
        self, source: int, offset: int, length: int, states: dict[int, Any] | None = None
    ) -> None:
        """Append `length` bytes of file descriptor `source` from `offset` (the worker
        copies them; PreviousArchiveError from `hexdigest` if it could not). `states`:
        the sha256 state of `source` (checked) at each frame boundary (`checked_archive`)."""
        self.raw.flush()
        self.raw.seek(self.size + length)  # later writes go after the range, a hole till then
        self._worker.copy(self.raw.fileno(), source, offset, self.size, length, states)
        self.size += length

    def hexdigest(self) -> str:
        """sha256 of the whole file, once everything queued was copied and hashed."""
        return self._worker.hexdigest()

    def close(self) -> None:
        self._worker.close()


# (archive fd, previous archive fd, offset there, offset here, length, hash states there)
_CopyItem = tuple[int, int, int, int, int, "dict[int, Any] | None"]

# copy_file_range cannot copy between these two files (another filesystem on older
# kernels, a filesystem without it, a kernel without the call, seccomp): copy in Python
_NO_KERNEL_COPY = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EPERM, errno.EBADF}
)


class _SinkWorker:
    """A thread that does, in order, what `_HashingSink` queues: hash bytes, or copy a
    range of another file into the archive and hash it from the archive. The thread
    starts with the first piece; `hexdigest()` waits for it and raises its first error."""

    def __init__(self, path: str | Path) -> None:
        self._path = path
        self._digest = hashlib.sha256()
        self._queue: queue.SimpleQueue[bytes | _CopyItem | None] = queue.SimpleQueue()
        # While every byte so far is a copy of the checked previous archive at the same
        # offset, its hash state is that archive's (`_states`, at `_position`): nothing
        # is hashed until the first byte that differs.
        self._shared = True
        self._states: dict[int, Any] = {}
        self._position = 0
        self._thread: threading.Thread | None = None
        self._error: PackError | None = None
        self._reader = -1  # the archive opened for reading back what was copied into it
        self.kernel_copy = hasattr(os, "copy_file_range")

    def hash_bytes(self, data: bytes) -> None:
        self._start()
        self._queue.put(data)

    def copy(
        self, out: int, source: int, offset: int, at: int, length: int, states: Any = None
    ) -> None:
        """Copy `length` bytes of `source` from `offset` to `out` at `at`, then hash them."""
        self._start()
        self._queue.put((out, source, offset, at, length, states))

    def hexdigest(self) -> str:
        self.close()
        if self._error is not None:
            raise self._error
        self._diverge()  # (an archive that is all copies: its state at its end)
        return self._digest.hexdigest()

    def close(self) -> None:
        """Stop the thread after what was queued (before the files are closed)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._reader >= 0:
            os.close(self._reader)
            self._reader = -1

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pack-sink", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: hexdigest() reports the first error
            if isinstance(item, bytes):
                self._diverge()
                self._digest.update(item)
                self._position += len(item)
                continue
            out, source, offset, at, length, states = item
            shared = self._shared and states is not None and offset == at and at + length in states
            if not shared:
                self._diverge()
            try:
                self._copy(out, source, offset, at, length)
            except OSError as exc:
                self._error = PreviousArchiveError(f"copying from the previous archive: {exc}")
                continue
            self._position = at + length
            if shared:
                self._states = states
                continue
            try:
                self._hash_back(at, length)
            except OSError as exc:
                self._error = PackError(f"cannot read back the archive to hash it: {exc}")

    def _diverge(self) -> None:
        """The archive stops being a copy of the previous one's front here: its hash
        goes on from that archive's state at this offset."""
        if self._shared:
            self._shared = False
            if self._position:
                self._digest = self._states[self._position].copy()

    def _copy(self, out: int, source: int, offset: int, at: int, length: int) -> None:
        done = 0
        while self.kernel_copy and done < length:
            try:
                copied = os.copy_file_range(source, out, length - done, offset + done, at + done)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise
                self.kernel_copy = False  # not between these files: read and write
                break
            if not copied:
                break  # the source ends early: the loop below says so
            done += copied
        while done < length:
            chunk = os.pread(source, min(_READ_CHUNK, length - done), offset + done)
            if not chunk:
                raise OSError(errno.EIO, "the previous archive ends before its index says")
            written = os.pwrite(out, chunk, at + done)
            done += written

    def _hash_back(self, at: int, length: int) -> None:
        if self._reader < 0:
            self._reader = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        while length:
            chunk = os.pread(self._reader, min(_READ_CHUNK, length), at)
            if not chunk:
                raise OSError(errno.EIO, "the archive is shorter than written")
            self._digest.update(chunk)
            at += len(chunk)
            length -= len(chunk)


def _compressor(fmt: str, sink: _HashingSink, level: int | None, threads: int) -> Any:
    if fmt == "tar.gz":
        return ParallelGzipFileWriter(
            sink, compresslevel=level or GZIP_LEVEL, n_threads=threads, mtime=0
        )
    # Plain levels, no long-distance matching: LDM and big windows make zstd's
    # multithreaded mode run one job at a time (measured: 3x slower for 1% smaller).
    params = zstandard.ZstdCompressionParameters.from_level(
        level or ZSTD_LEVEL, threads=threads if threads > 1 else 0, write_checksum=True
    )
    cctx = zstandard.ZstdCompressor(compression_params=params)
    return cctx.stream_writer(sink, write_size=4 * 1024 * 1024, closefd=False)


def _finish(compressor: Any) -> None:
    if isinstance(compressor, ParallelGzipFileWriter):
        compressor.close()
    else:
        compressor.flush(zstandard.FLUSH_FRAME)


class _Packer(Packer):
    """conda-pack's Packer, with a faster rewrite of `conda-meta/*.json`, telling the
    archive which members conda-unpack will rewrite (those it records a prefix for).

    Stock conda-pack re-encodes every conda-meta record with `indent=True`, which forces
    json's pure-Python encoder (a quarter of its per-file time on a typical env). Same
    fields blanked, compact encoding: conda and rattler read either.
    """

    archive: FastTarArchive
    meta: MetaCache

    def add(self, file: Any) -> None:
        target = file.target
        is_meta = target.startswith("conda-meta/") and target.endswith(".json")
        if file.file_mode is None and self.archive.discards:  # copied from a previous pack
            if is_meta:  # conda-pack's finish() reads the records (parcels, has_conda)
                self.packages.append(self.meta.summary(file.source))
            return  # conda-pack records nothing else for it
        if file.file_mode is None and is_meta:
            packed, data = self.meta.packed(file.source)
            self.packages.append(data)
            self.archive.add_bytes(file.source, packed, target, normalised=True)
            return
        recorded = len(self.prefixes)
        super().add(file)
        if len(self.prefixes) > recorded:  # conda-unpack will replace a prefix in it
            self.archive.mark_rewritten(target)


# ustar header: name, mode, uid, gid, size, mtime, chksum, type, linkname, magic+version,
# uname, gname, devmajor, devminor, prefix, padding (POSIX.1-1988; 512 bytes)
_USTAR = struct.Struct("100s8s8s8s12s12s8s1s100s8s32s32s8s8s155s12s")
_ZERO8 = b"0000000\0"


def ustar_header(name: str, mode: int, size: int, mtime: int, kind: bytes, link: str) -> bytes:
    """A tar header without tarfile's per-member overhead; `b""` if ustar cannot hold it.

    Byte-for-byte what tarfile writes in PAX format for a short ASCII name owned by 0/0.
    """
    try:
        raw_name, raw_link = name.encode("ascii"), link.encode("ascii")
    except UnicodeEncodeError:
        return b""
    if kind == tarfile.DIRTYPE and not raw_name.endswith(b"/"):
        raw_name += b"/"
    raw_prefix = b""
    if len(raw_name) > 100:  # ustar's prefix field holds up to 155 more bytes of directories
        cut = raw_name.find(b"/", len(raw_name) - 101)
        if cut <= 0 or cut > 155:
            return b""
        raw_prefix, raw_name = raw_name[:cut], raw_name[cut + 1 :]
    if len(raw_link) > 100 or size >= 8**11 or not 0 <= mtime < 8**11:
        return b""
    header = _USTAR.pack(
        raw_name, b"%07o\0" % mode, _ZERO8, _ZERO8, b"%011o\0" % size, b"%011o\0" % mtime,
        b" " * 8, kind, raw_link, b"ustar\x0000", b"", b"", b"", b"", raw_prefix, b"",
    )  # fmt: skip
    return header[:148] + b"%06o\0 " % sum(header) + header[156:]


class FastTarArchive(ArchiveBase):
    """A write-only tar stream that conda-pack's `Packer` can drive, in zstd frames.

    Headers are built from one `lstat` (owner 0/0, no name lookups: the agent extracts as
    whoever runs it; mtime fixed, so equal files make equal bytes). Regular files are read
    whole and appended to a large buffer; the buffer goes to the compressor in big writes,
    which zstd spreads over its threads. `end_frame` closes the zstd frame of one package
    and records it (offsets, tar range, key); every member becomes an index entry.
    """

    def __init__(
        self, out: Any, arcroot: str = "", *, sink: Any = None, mtime: int = 0, framed: bool = False
    ) -> None:
        self.out = out
        self.arcroot = arcroot
        self.sink = sink  # the compressed side, for frame offsets (None: no index)
        self.mtime = mtime
        self.framed = framed
        self.members = 0
        self.frames: list[FrameRecord] = []
        self.reused = 0
        # IndexEntry fields, mutable for `rewritten`; reused frames' IndexEntry records as they are
        self._entries: list[list[Any] | IndexEntry] = []
        self._buffer = bytearray()
        self._tar_size = 0
        self._frame_digest = hashlib.sha256()
        self._frame_tar_start = 0
        self._frame_start = 0
        self._discard = False
        self._generating = False

    # conda-pack calls these through ArchiveBase.add / add_bytes
    def _add(self, source: str, target: str) -> None:
        if self._discard:
            return
        st = os.lstat(source)
        if stat.S_ISREG(st.st_mode):
            self._add_regular(source, target, st)
        elif stat.S_ISLNK(st.st_mode):
            link = os.readlink(source)
            self._header(target, st, tarfile.SYMTYPE, 0, link)
            self._entry(target, "symlink", 0, "", st, link)
        elif stat.S_ISDIR(st.st_mode):
            self._header(target, st, tarfile.DIRTYPE, 0, "")
            self._entry(target, "dir", 0, "", st, "")
        else:
            raise PackError(f"{source}: not a regular file, symlink or directory")
        self.members += 1

    def add_bytes(
        self, source: str, sourcebytes: bytes, target: str, normalised: bool = False
    ) -> None:
        """`normalised`: the packer re-encoded the file (conda-meta records), which is not
        a rewrite at deploy; any other change of the bytes (a shebang) is."""
        if self._discard:
            return
        target = os.path.join(self.arcroot, target)
        st = os.lstat(source)
        self._header(target, st, tarfile.REGTYPE, len(sourcebytes), "")
        self._emit(sourcebytes)
        self._pad(len(sourcebytes))
        digest = hashlib.sha256(sourcebytes).hexdigest()
        self._entry(target, "file", len(sourcebytes), digest, st, "")
        if not normalised and not self._generating:
            with open(source, "rb") as handle:
                if handle.read() != sourcebytes:
                    self.mark_rewritten(target)
        self.members += 1

    @property
    def discards(self) -> bool:
        return self._discard

    def mark_rewritten(self, target: str) -> None:
        last = self._entries[-1] if self._entries else None
        if not self._discard and type(last) is list and last[0] == target:
            last[6] = True

    @contextlib.contextmanager
    def discarding(self) -> Iterator[None]:
        """Members added in here are dropped (their frame is copied from a previous pack)."""
        self._discard = True
        try:
            yield
        finally:
            self._discard = False

    @contextlib.contextmanager
    def generating(self) -> Iterator[None]:
        """Members added in here are conda-pack's own (conda-unpack, activate scripts)."""
        self._generating = True
        try:
            yield
        finally:
            self._generating = False

    def close(self) -> None:
        self._emit(b"\0" * (2 * _BLOCK))  # end-of-archive marker, in the last frame
        self._flush()

    def end_frame(self, package: str, source: str = "") -> None:
        """Close the current zstd frame (if it holds anything) and record it."""
        self._flush()
        if not self.framed or self._tar_size == self._frame_tar_start:
            return
        self.out.flush(zstandard.FLUSH_FRAME)
        self._record_frame(package, self._frame_digest.hexdigest(), source)

    def close_frames(self) -> None:
        """After the compressor finished: the last frame (or, unframed, the only one)."""
        if self._tar_size > self._frame_tar_start or not self.frames:
            self._record_frame("", self._frame_digest.hexdigest(), "")

    def adopt(self, previous: PreviousPack, number: int) -> None:
        """Copy frame `number` of the previous archive as the next frame, with its entries."""
        frame = previous.index.frames[number]
        previous.copy_frame(number, self.sink)
        this = len(self.frames)
        entries = previous.entries_of(number)
        if entries and entries[0].frame == this:  # same place: the records as they are
            self._entries.extend(entries)
        else:
            self._entries.extend([*_fields(entry)[:7], this] for entry in entries)
        self.members += len(entries)
        self._tar_size += frame.tar_length
        self._record_frame(frame.package, frame.key, frame.source)
        self.reused += 1

    def index_entries(self) -> tuple[IndexEntry, ...]:
        return tuple(e if type(e) is IndexEntry else IndexEntry(*e) for e in self._entries)

    # -- internals ---------------------------------------------------------------------------

    def _record_frame(self, package: str, key: str, source: str) -> None:
        start = self._frame_start
        end = self.sink.size if self.sink is not None else 0
        self.frames.append(
            FrameRecord(
                offset=start,
                length=end - start,
                tar_offset=self._frame_tar_start,
                tar_length=self._tar_size - self._frame_tar_start,
                package=package,
                key=key,
                source=source,
            )
        )
        self._frame_start, self._frame_tar_start = end, self._tar_size
        self._frame_digest = hashlib.sha256()

    def _entry(
        self, target: str, kind: str, size: int, digest: str, st: os.stat_result, link: str
    ) -> None:
        self._entries.append(
            [target, kind, size, digest, stat.S_IMODE(st.st_mode), link, self._generating,
             len(self.frames)]
        )  # fmt: skip

    def _header(self, target: str, st: os.stat_result, kind: bytes, size: int, link: str) -> None:
        mode, mtime = stat.S_IMODE(st.st_mode), self.mtime
        header = ustar_header(target, mode, size, mtime, kind, link)
        if not header:  # long or non-ASCII name: let tarfile write the PAX extended header
            info = tarfile.TarInfo(target)
            info.mode, info.mtime, info.size, info.type, info.linkname = (
                mode,
                mtime,
                size,
                kind,
                link,
            )
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self._emit(header)

    def _add_regular(self, source: str, target: str, st: os.stat_result) -> None:
        size = st.st_size
        self._header(target, st, tarfile.REGTYPE, size, "")
        written = 0
        digest = hashlib.sha256()
        with open(source, "rb", buffering=0) as handle:
            if size <= _READ_CHUNK:
                data = handle.read(size + 1)
                written = len(data)
                digest.update(data)
                self._emit(data)
            else:
                while chunk := handle.read(_READ_CHUNK):
                    written += len(chunk)
                    digest.update(chunk)
                    self._emit(chunk)
        if written != size:  # the header already promised `size` bytes
            raise PackError(f"{source} changed size while packing ({size} -> {written} bytes)")
        self._pad(size)
        self._entry(target, "file", size, digest.hexdigest(), st, "")

    def _pad(self, size: int) -> None:
        remainder = size % _BLOCK
        if remainder:
            self._emit(b"\0" * (_BLOCK - remainder))

    def _emit(self, data: bytes | bytearray) -> None:
        self._buffer += data
        self._tar_size += len(data)
        if len(self._buffer) >= _FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            # hand over the buffer and start a new one: the gzip writer keeps a reference
            buffer, self._buffer = self._buffer, bytearray()
            self._frame_digest.update(buffer)
            self.out.write(buffer)


def _fields(entry: IndexEntry) -> list[Any]:
    return [
        entry.path, entry.type, entry.size, entry.sha256, entry.mode, entry.target,
        entry.rewritten, entry.frame,
    ]  # fmt: skip

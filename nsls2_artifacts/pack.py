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

import hashlib
import json
import os
import stat
import struct
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard
from conda_pack.core import CondaEnv, CondaPackException, Packer
from conda_pack.formats import ArchiveBase, ParallelGzipFileWriter

from .errors import PackError

FORMATS = {"zst": "tar.zst", "tar.zst": "tar.zst", "gz": "tar.gz", "tar.gz": "tar.gz"}
# zstd 5: ~0.89x the size of conda-pack's gzip -4 for about the same CPU as gzip alone, and it
# runs on every core. Level 6 is ~3% smaller for ~25% more CPU (docs/benchmarks.md, "Pack").
ZSTD_LEVEL = 5
GZIP_LEVEL = 4  # conda-pack's default
_FLUSH_AT = 8 * 1024 * 1024  # batch small files into large compressor writes
_READ_CHUNK = 8 * 1024 * 1024
_BLOCK = tarfile.BLOCKSIZE

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


def archive_name(fmt: str) -> str:
    return f"env.{normalise_format(fmt)}"


def normalise_format(fmt: str) -> str:
    try:
        return FORMATS[fmt]
    except KeyError:
        raise PackError(f"unknown archive format {fmt!r} (use zst or gz)") from None


def pack(
    prefix: str | Path,
    output: str | Path,
    *,
    fmt: str = "tar.zst",
    level: int | None = None,
    threads: int = 0,
    progress: ProgressFn | None = None,
) -> PackResult:
    """Pack `prefix` into `output`; sha256 and size are of the bytes written to `output`.

    `threads` 0 means all cores. The archive is written in place: callers write into a
    staging directory and commit it afterwards.
    """
    started = time.perf_counter()
    fmt = normalise_format(fmt)
    prefix = Path(prefix).absolute()
    try:
        env = CondaEnv.from_prefix(str(prefix), on_missing_cache="raise")
    except CondaPackException as exc:
        raise PackError(f"conda-pack cannot pack {prefix}: {exc}") from None
    files = list(env.files)
    threads = threads or os.cpu_count() or 1
    try:
        raw = open(output, "wb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise PackError(f"cannot write {output}: {exc.strerror}") from None
    with raw:
        sink = _HashingSink(raw)
        compressor = _compressor(fmt, sink, level, threads)
        archive = FastTarArchive(compressor)
        packer = _Packer(str(prefix), archive)
        try:
            for done, record in enumerate(files, 1):
                packer.add(record)
                if progress and (done % 256 == 0 or done == len(files)):
                    progress(done, len(files))
            packer.finish()  # activate scripts + bin/conda-unpack with the prefix records
        except (CondaPackException, OSError, ValueError) as exc:
            raise PackError(f"packing {prefix} failed: {exc}") from None
        archive.close()
        _finish(compressor)
        raw.flush()  # no fsync here: Store.commit_build fsyncs what it commits
    return PackResult(
        path=Path(output),
        format=fmt,
        sha256=sink.digest.hexdigest(),
        size=sink.size,
        files=archive.members,
        seconds=time.perf_counter() - started,
    )


class _HashingSink:
    """The file the compressor writes to: counts and hashes bytes on their way out."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        self.digest.update(data)
        self.size += len(data)
        self.raw.write(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


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
    """conda-pack's Packer, with a faster rewrite of `conda-meta/*.json`.

    Stock conda-pack re-encodes every conda-meta record with `indent=True`, which forces
    json's pure-Python encoder (a quarter of its per-file time on a typical env). Same
    fields blanked, compact encoding: conda and rattler read either.
    """

    def add(self, file: Any) -> None:
        target = file.target
        if file.file_mode is None and target.startswith("conda-meta/") and target.endswith(".json"):
            with open(file.source, encoding="utf-8") as handle:
                data = json.load(handle)
            for name in ("extracted_package_dir", "package_tarball_full_path"):
                if name in data:
                    data[name] = ""
            if isinstance(data.get("link"), dict) and "source" in data["link"]:
                data["link"]["source"] = ""
            self.packages.append(data)
            self.archive.add_bytes(file.source, json.dumps(data, sort_keys=True).encode(), target)
            return
        super().add(file)


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
    """A write-only tar stream that conda-pack's `Packer` can drive.

    Headers are built from one `lstat` (owner 0/0, no name lookups: the agent extracts as
    whoever runs it). Regular files are read whole and appended to a large buffer; the
    buffer goes to the compressor in big writes, which zstd spreads over its threads.
    """

    def __init__(self, out: Any, arcroot: str = "") -> None:
        self.out = out
        self.arcroot = arcroot
        self.members = 0
        self._buffer = bytearray()

    # conda-pack calls these through ArchiveBase.add / add_bytes
    def _add(self, source: str, target: str) -> None:
        st = os.lstat(source)
        if stat.S_ISREG(st.st_mode):
            self._add_regular(source, target, st)
        elif stat.S_ISLNK(st.st_mode):
            self._header(target, st, tarfile.SYMTYPE, 0, os.readlink(source))
        elif stat.S_ISDIR(st.st_mode):
            self._header(target, st, tarfile.DIRTYPE, 0, "")
        else:
            raise PackError(f"{source}: not a regular file, symlink or directory")
        self.members += 1

    def _add_bytes(self, source: str, sourcebytes: bytes, target: str) -> None:
        self._header(target, os.lstat(source), tarfile.REGTYPE, len(sourcebytes), "")
        self._emit(sourcebytes)
        self._pad(len(sourcebytes))
        self.members += 1

    def close(self) -> None:
        self._emit(b"\0" * (2 * _BLOCK))  # end-of-archive marker
        self._flush()

    # -- internals ---------------------------------------------------------------------------

    def _header(self, target: str, st: os.stat_result, kind: bytes, size: int, link: str) -> None:
        mode, mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
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
        with open(source, "rb", buffering=0) as handle:
            if size <= _READ_CHUNK:
                data = handle.read(size + 1)
                written = len(data)
                self._emit(data)
            else:
                while chunk := handle.read(_READ_CHUNK):
                    written += len(chunk)
                    self._emit(chunk)
        if written != size:  # the header already promised `size` bytes
            raise PackError(f"{source} changed size while packing ({size} -> {written} bytes)")
        self._pad(size)

    def _pad(self, size: int) -> None:
        remainder = size % _BLOCK
        if remainder:
            self._emit(b"\0" * (_BLOCK - remainder))

    def _emit(self, data: bytes | bytearray) -> None:
        self._buffer += data
        if len(self._buffer) >= _FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            # hand over the buffer and start a new one: the gzip writer keeps a reference
            buffer, self._buffer = self._buffer, bytearray()
            self.out.write(buffer)

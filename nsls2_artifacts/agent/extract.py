"""Safe extraction of a build archive: a lean reader for the tar features our packers
write reads each header as tarfile would (anything else is refused), every member gets
tarfile's "data" filter verdict, limits on member count and bytes, links made last and
never through another link; decompression overlaps parsing and writing. Regular files,
nearly every member, take a short path with few Python calls: per-member cost, not the
disk, decides how close a deploy comes to plain `tar` (docs/benchmarks.md, Deploy).

Called by `deploy.deploy_build` (after the artifact is verified) and the benchmark.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import posixpath
import queue
import struct
import tarfile
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, NamedTuple

from ..errors import RejectedArtifactError
from . import layout

PAUSE_AFTER_MEMBERS = 3  # the test pause point "extract" fires after this many members
PROGRESS_EVERY = 256  # members between clock reads for the progress callback


class _Chunks:
    """Decompressed bytes in large chunks from a background thread, like the `tar -I zstd`
    pipeline's two processes (zstandard and zlib release the GIL). Few, big handoffs: a
    member's data is usually a slice of the current chunk."""

    CHUNK = 4 << 20

    def __init__(self, source: IO[bytes]) -> None:
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=4)
        self._buf = b""
        self._view = memoryview(self._buf)  # of _buf, made again when _buf changes
        self._pos = 0  # offset into _buf
        self._eof = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, args=(source,), daemon=True)
        self._thread.start()

    def _pump(self, source: IO[bytes]) -> None:
        try:
            while not self._stop.is_set():
                chunk = source.read(self.CHUNK)
                self._queue.put(chunk)
                if not chunk:
                    return
        except BaseException as exc:  # handed to the reader, raised there
            self._queue.put(exc)

    def _next(self) -> bytes:
        """The next chunk; the archive ending here is always an error (the tar
        end-of-archive block comes first)."""
        if not self._eof:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if item:
                return item
            self._eof = True
        raise tarfile.ReadError("unexpected end of data")

    def take(self, size: int) -> bytes:
        """Exactly `size` bytes."""
        end = self._pos + size
        if end <= len(self._buf):
            out = self._buf[self._pos : end]
            self._pos = end
            return out
        pieces = [self._buf[self._pos :]]
        need = end - len(self._buf)
        while True:
            chunk = self._next()
            if len(chunk) >= need:
                pieces.append(chunk[:need])
                self._buf, self._pos = chunk, need
                return b"".join(pieces)
            pieces.append(chunk)
            need -= len(chunk)

    def view(self, size: int, pad: int) -> bytes | memoryview:
        """Exactly `size` bytes, without a copy when they lie in one chunk (a file's data:
        the view keeps its chunk alive only until the file is written); then skips `pad`."""
        end = self._pos + size
        if end + pad > len(self._buf):
            out = self.take(size)
            self.skip(pad)
            return out
        if self._view.obj is not self._buf:
            self._view = memoryview(self._buf)
        out = self._view[self._pos : end]
        self._pos = end + pad
        return out

    def skip(self, size: int) -> None:
        end = self._pos + size
        while end > len(self._buf):
            end -= len(self._buf)
            self._buf, self._pos = self._next(), 0
        self._pos = end

    def copy(self, size: int, fd: int) -> None:
        """Write `size` bytes to `fd` without holding them all (large files)."""
        while size:
            if self._pos == len(self._buf):
                self._buf, self._pos = self._next(), 0
            n = min(size, len(self._buf) - self._pos)
            _write_all(fd, memoryview(self._buf)[self._pos : self._pos + n])
            self._pos += n
            size -= n

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a pump waiting on a full queue
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            self._thread.join(timeout=0.01)


_ZERO_BLOCK = bytes(512)
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
# what our archives (Python tarfile / conda-pack, pax format) hold, plus devices and fifos,
# parsed so that `_check_member` rejects them with its usual reason
_KNOWN = (
    *_REGULAR,
    tarfile.DIRTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
    tarfile.FIFOTYPE,
)
_PAX_OWNER = {"uid": int, "gid": int, "uname": str, "gname": str}


def _nts(field: bytes) -> str:
    """tarfile's `nts`: up to the first NUL, decoded like tarfile reads names."""
    end = field.find(b"\0")
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


def _nti(field: bytes) -> int:
    """tarfile's `nti`: an octal number, or GNU base-256 (rare: handed to tarfile)."""
    try:  # the usual "0000644\0", "012345\0 ": one int()
        return int(field.rstrip(b"\0 "), 8)
    except ValueError:
        pass
    if field[0] & 0x80:
        return tarfile.nti(field)
    end = field.find(b"\0")
    digits = (field if end < 0 else field[:end]).strip()
    return int(digits, 8) if digits else 0


_LOW_BITS = int.from_bytes(b"\1" * 512, "little")


def _byte_sum(block: bytes) -> int:
    """`sum(block)` of a 512-byte header in a third of the time (it runs for every
    member): adler32 gives the sum mod 65521, the count of odd bytes its parity, and as
    65521 is odd the two fix the sum below 2 * 65521 > 512 * 255 exactly."""
    low = ((zlib.adler32(block) & 0xFFFF) - 1) % 65521
    if (int.from_bytes(block, "little") & _LOW_BITS).bit_count() & 1 != low & 1:
        low += 65521
    return low


def _checksum_ok(block: bytes) -> bool:
    """The header checksum, unsigned or (old tars) signed, as tarfile accepts it."""
    stored = _nti(block[148:156])
    unsigned = 256 + _byte_sum(block) - sum(block[148:156])
    if stored == unsigned:
        return True
    return stored == 256 + sum(struct.unpack_from("148b8x356b", block))


def _pax_records(data: bytes) -> dict[str, str]:
    """`"%d %s=%s\\n"` records of a pax extended header."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n"):
            raise tarfile.ReadError("invalid pax header record")
        key, eq, value = record[:-1].partition(b"=")
        if not eq:
            raise tarfile.ReadError("invalid pax header record")
        out[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class Header(NamedTuple):
    """One member's header as tarfile reads it (pax header applied): what the extraction
    loop needs, without building a `tarfile.TarInfo` for every regular file."""

    type: bytes
    name: str
    mode: int
    size: int
    mtime: float
    linkname: str
    block: bytes  # the ustar block (device numbers)
    pax: dict[str, str] | None


def _to_tarinfo(header: Header) -> tarfile.TarInfo:
    """The `tarfile.TarInfo` tarfile builds for this header."""
    info = tarfile.TarInfo(header.name)
    info.type, info.mode, info.size = header.type, header.mode, header.size
    info.mtime, info.linkname = header.mtime, header.linkname
    if header.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = _nti(header.block[329:337]), _nti(header.block[337:345])
    if header.pax is not None:
        for key, value in header.pax.items():
            if key in _PAX_OWNER:
                setattr(info, key, _PAX_OWNER[key](value))
        info.pax_headers = header.pax
    return info


class _TarStream:
    """A lean reader for the tar archives we publish: ustar headers, pax 'x' extended
    headers (path, linkpath, size, mtime, ...), regular files, directories, symlinks,
    hardlinks (and devices/fifos, parsed to be rejected). Its headers are what tarfile
    reads (`__iter__` gives the same `tarfile.TarInfo`), so every safety check judges
    tarfile's view; anything else (GNU long names, pax globals, sparse files) is rejected
    as unsupported. Reading headers ourselves from large chunks costs a fraction of
    tarfile's per-member work.

    Iterate `headers()` (or the stream, for TarInfo); a regular member's data is read
    with `data` or `copy` before the next step (whatever is left is skipped)."""

    def __init__(self, chunks: _Chunks, build_id: str) -> None:
        self.chunks = chunks
        self.build_id = build_id
        self._left = 0  # data bytes of the current member not read yet
        self._pad = 0  # padding after them

    def unsupported(self, what: str) -> RejectedArtifactError:
        return RejectedArtifactError(self.build_id, f"unsupported tar feature: {what}")

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        return map(_to_tarinfo, self.headers())

    def headers(self) -> Iterator[Header]:
        while True:
            if self._left or self._pad:
                self.chunks.skip(self._left + self._pad)
                self._left = self._pad = 0
            header = self._header()
            if header is None:
                return
            if header.type in _REGULAR:
                self._left, self._pad = header.size, -header.size % 512
            yield header

    def data(self) -> bytes | memoryview:
        out = self.chunks.view(self._left, self._pad)
        self._left = self._pad = 0
        return out

    def copy(self, fd: int) -> None:
        self.chunks.copy(self._left, fd)
        self._left = 0

    def _header(self) -> Header | None:
        """The next member's header (with its pax header applied), or None at the end."""
        pax: dict[str, str] | None = None
        while True:
            block = self.chunks.take(512)
            if block == _ZERO_BLOCK:
                if pax is not None:
                    raise tarfile.ReadError("pax header without a member")
                return None
            try:  # the usual header: octal numbers tarfile's nti reads with one int() each
                stored = int(block[148:156].rstrip(b"\0 "), 8)
                mode = int(block[100:108].rstrip(b"\0 "), 8)
                size = int(block[124:136].rstrip(b"\0 "), 8)
                mtime: float = int(block[136:148].rstrip(b"\0 "), 8)
            except ValueError:
                stored, mode, size = -1, _nti(block[100:108]), _nti(block[124:136])
                mtime = _nti(block[136:148])
            if stored != 256 + _byte_sum(block) - sum(block[148:156]) and not _checksum_ok(block):
                raise tarfile.ReadError("bad checksum in a tar header")
            kind = block[156:157]
            if kind != tarfile.XHDTYPE:
                break
            if pax is not None:
                raise self.unsupported("two pax headers for one member")
            pax = _pax_records(self.chunks.take(size))
            self.chunks.skip(-size % 512)
        end = block.find(0, 0, 100)
        name = block[: end if end >= 0 else 100].decode("utf-8", "surrogateescape")
        if kind not in _KNOWN:
            raise self.unsupported(f"member type {kind!r} in {name!r}")
        linkname = "" if block[157] == 0 else _nts(block[157:257])
        # as tarfile.TarInfo.frombuf: V7 directories, trailing slashes, ustar prefix
        if kind == tarfile.AREGTYPE and name.endswith("/"):
            kind = tarfile.DIRTYPE
        if kind == tarfile.DIRTYPE:
            name = name.rstrip("/")
        if block[345] != 0:
            name = _nts(block[345:500]) + "/" + name
        if pax is not None:
            name, size, mtime, linkname = self._apply_pax(pax, name, size, mtime, linkname)
        if size < 0 or mode < 0:
            raise tarfile.ReadError(f"negative size or mode in {name!r}")
        if not name and kind != tarfile.DIRTYPE:
            raise tarfile.ReadError("a member without a name")
        return Header(kind, name, mode, size, mtime, linkname, block, pax)

    def _apply_pax(
        self, pax: dict[str, str], name: str, size: int, mtime: float, linkname: str
    ) -> tuple[str, int, float, str]:
        """As tarfile's `_apply_pax_info` for the standard keywords; GNU sparse and
        other unknown GNU extensions are refused, the rest (atime, xattrs) ignored
        (owner fields are set on the TarInfo, never used)."""
        for key, value in pax.items():
            if key.startswith("GNU."):
                raise self.unsupported(f"pax keyword {key!r} in {name!r}")
            if key == "path":
                name = value.rstrip("/")
            elif key == "linkpath":
                linkname = value
            elif key == "size":
                size = int(value)
            elif key == "mtime":
                mtime = float(value)
        return name, size, mtime, linkname


@contextlib.contextmanager
def _open_stream(archive: Path | IO[bytes], fmt: str, build_id: str) -> Iterator[_TarStream]:
    """The archive's members, read front to back (zstd via `zstandard`, or gzip)."""
    local = isinstance(archive, (str, os.PathLike))
    with open(archive, "rb") if local else contextlib.nullcontext(archive) as raw:  # noqa: SIM115
        if fmt in ("tar.zst", "tar.zstd"):
            import zstandard

            source: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(
                raw, read_size=1 << 20, read_across_frames=True
            )
        elif fmt in ("tar.gz", "tgz"):
            source = gzip.GzipFile(fileobj=raw, mode="rb")
        elif fmt == "tar":
            source = raw
        else:
            raise RejectedArtifactError("", f"unknown artifact format {fmt!r}")
        chunks = _Chunks(source)
        try:
            yield _TarStream(chunks, build_id)
        finally:
            chunks.close()


def _check_name(name: str, build_id: str) -> None:
    """Reject absolute names and any `..` (plain string work: runs for every member)."""
    if name.startswith("/"):
        raise RejectedArtifactError(build_id, f"member {name!r}: absolute path")
    if ".." in name and ".." in name.split("/"):
        raise RejectedArtifactError(build_id, f"member {name!r}: '..' in path")


def _check_member(member: tarfile.TarInfo, build_id: str) -> None:
    """`_check_name`, and reject devices and links leaving the prefix, each with a clear
    reason."""
    name = member.name
    _check_name(name, build_id)
    if member.isdev():
        raise RejectedArtifactError(build_id, f"member {name!r}: device or fifo file")
    if member.issym() or member.islnk():
        link = member.linkname
        base = posixpath.dirname(name.rstrip("/")) if member.issym() else ""
        depth = 0
        for part in f"{base}/{link}".split("/") if not link.startswith("/") else ["/"]:
            if part == "/":
                depth = -1
                break
            depth += -1 if part == ".." else (0 if part in ("", ".") else 1)
            if depth < 0:
                break
        if depth < 0:
            kind = "symlink" if member.issym() else "hardlink"
            raise RejectedArtifactError(
                build_id, f"member {name!r}: {kind} to {link!r} leaves the prefix"
            )


SMALL_FILE = 4 * 1024 * 1024  # larger members are streamed to disk by the parsing thread
BATCH_FILES = 32  # small files handed to a writer at once
BATCH_BYTES = 8 * 1024 * 1024  # ... or this much data
# batches queued: bounds memory to about MAX_INFLIGHT * (BATCH_BYTES + SMALL_FILE)
MAX_INFLIGHT = 16
WRITERS = 4  # file creation is latency-bound (GPFS metadata): overlap it
# ... but on a local disk a file takes ~40 us and handing it to a thread costs more (GIL
# handoffs, futex waits: 2x the CPU on 2 cores). Files are written by the parsing thread;
# the pool takes over for good once the median of PROBE_FILES writes in a row took more
# than SLOW_WRITE seconds (GPFS, NFS, or a local disk throttling writers).
PROBE_FILES = 64
SLOW_WRITE = 300e-6
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def data_mode(mode: int) -> int:
    """tarfile's "data" filter mode for a regular file of mode `mode`: no setuid/setgid/
    sticky, no group/other write, owner rw, execute bits only if the owner's is set."""
    mode &= 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def _umask() -> int | None:
    """This process's umask, read without changing it (`os.umask` would, for every
    thread at once); None where the kernel does not say (then every file is chmodded)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _below(name: str, symlinks: set[str]) -> bool:
    """Whether a parent of `name` (`a`, `a/b` for `a/b/c`) is one of `symlinks` (names
    normalised: `lib//x/f` and `./lib/x/f` lie below `lib/x` too)."""
    name = posixpath.normpath(name)
    cut = name.find("/")
    while cut >= 0:
        if name[:cut] in symlinks:
            return True
        cut = name.find("/", cut + 1)
    return False


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """`os.write` until all of `data` is written (one call for nearly every file)."""
    written = os.write(fd, data) if len(data) else 0
    if written < len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


def _write_file(path: str, data: bytes | memoryview, mode: int, mtime: float, chmod: bool) -> None:
    """Create a new file (O_EXCL|O_NOFOLLOW: never through a link, never over anything),
    with its mode at creation unless the umask would take bits off (`chmod`)."""
    fd = os.open(path, _CREATE, mode)
    try:
        _write_all(fd, data)
        if chmod:
            os.fchmod(fd, mode)
        os.utime(fd, (mtime, mtime))  # by fd: no second path lookup
    finally:
        os.close(fd)


def safe_extract(
    archive: Path | IO[bytes],
    fmt: str,
    dest: Path,
    *,
    build_id: str,
    max_members: int,
    max_bytes: int,
    progress: Callable[[int, int], None] | None = None,
    progress_seconds: float = 10.0,
) -> tuple[int, int]:
    """Extract `archive` (a path or a binary stream read front to back) into the existing,
    empty directory `dest`; returns (members, bytes).
    `progress(members, bytes)` is called about every `progress_seconds` on the way (a
    large env on GPFS takes minutes: the daemon's log shows it moving).

    `_TarStream` reads the archive's headers as tarfile does (tests/test_extract_parser.py);
    every member gets tarfile's "data" filter verdict (no absolute names, no `..`, no links
    leaving `dest`, no device files, no setuid or group/other-write bits). Links and every
    other special member go through `tarfile.data_filter` itself. Regular files and
    directories get the same verdict without its per-member realpath() (135 us each, the
    bulk of our CPU time): our checks reject absolute names and any `..`, and while files
    are written `dest` holds no symlink (links are made last, and no member may lie below
    an archive symlink), so such a name can never resolve outside `dest` and only the
    filter's mode rule is left (`data_mode`; tests/test_extract.py proves both agree).
    Two more rules keep the filter's answers true once links exist: no member lies below
    a symlink of the archive, no link target passes through one. Regular files are
    written by this thread on fast storage, by a small thread pool when the first writes
    show slow storage (file creation is latency-bound on GPFS).
    Raises RejectedArtifactError for anything unsafe, over the limits or unreadable.
    """
    root = os.path.realpath(dest)
    try:
        with (
            _open_stream(archive, fmt, build_id) as tar,
            ThreadPoolExecutor(WRITERS) as pool,
        ):
            job = _Extraction(
                root, build_id, max_members, max_bytes, pool, progress, progress_seconds
            )
            try:
                job.run(tar)
                job.drain()
            finally:
                job.cancel()
        _make_links(job.links, job.symlinks, root, build_id)
    except RejectedArtifactError:
        raise
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        # `dest` starts empty and files are created O_EXCL: a clash means the archive
        # names one path twice (or uses a file as a directory); that never gets better
        raise RejectedArtifactError(
            build_id, f"archive names a path twice or as both file and directory: {exc}"
        ) from None
    except tarfile.FilterError as exc:
        raise RejectedArtifactError(build_id, f"unsafe archive member: {exc}") from None
    except (tarfile.TarError, EOFError, ValueError) as exc:
        # an OSError (disk full, GPFS hiccup) is not the artifact's fault: it propagates and
        # the build is retried next pass instead of being quarantined
        raise RejectedArtifactError(
            build_id, f"unreadable archive: {type(exc).__name__}: {exc}"
        ) from None
    except Exception as exc:
        if type(exc).__name__ == "ZstdError":  # zstandard's error type for corrupt frames
            raise RejectedArtifactError(build_id, f"unreadable archive: {exc}") from None
        raise
    if job.members == 0:
        raise RejectedArtifactError(build_id, "archive is empty")
    return job.members, job.total


class _Extraction:
    """The state of one extraction: limits, directories made, links deferred, writes
    in flight. `run` reads the members in archive order (one thread); `place_all` runs
    in the writer threads once storage proved slow."""

    def __init__(
        self,
        root: str,
        build_id: str,
        max_members: int,
        max_bytes: int,
        pool: ThreadPoolExecutor,
        progress: Callable[[int, int], None] | None = None,
        progress_seconds: float = 10.0,
    ) -> None:
        self.root = root
        self.build_id = build_id
        self.max_members = max_members
        self.max_bytes = max_bytes
        self.pool = pool
        umask = _umask()
        self.chmod = umask is None or bool(umask & 0o755)  # else the mode survives creation
        self.members = self.total = 0
        self.made_dirs = {root}
        self.symlinks: set[str] = set()
        # parent directories (absolute) made and known to lie below none of `symlinks`
        self.clear_dirs: set[str] = set()
        self.links: list[tuple[tarfile.TarInfo, str]] = []
        self.pending: deque[Future[None]] = deque()
        self.batch: list[tuple[str, bytes | memoryview, int, float]] = []
        self.batch_bytes = 0
        self.progress = progress
        self.progress_seconds = progress_seconds
        self.next_progress = time.monotonic() + progress_seconds
        self.inline = True  # writing in this thread until the probe says storage is slow
        self.probe: list[float] = []  # seconds per write, the last few

    def reject(self, message: str) -> RejectedArtifactError:
        return RejectedArtifactError(self.build_id, message)

    def run(self, tar: _TarStream) -> None:
        """Every member in archive order. Regular files and directories - nearly all
        members - take the short path here, with no TarInfo and few calls: Python's
        per-member cost, not the disk, decides how close we come to plain tar."""
        root, clear_dirs, build_id = self.root, self.clear_dirs, self.build_id
        for header in tar.headers():
            self.members += 1
            self.total += header.size
            if self.members > self.max_members:
                raise self.reject(
                    f"archive has more than agent.max_members={self.max_members} members"
                )
            if self.total > self.max_bytes:
                raise self.reject(f"archive holds more than agent.max_bytes={self.max_bytes} bytes")
            name = header.name
            _check_name(name, build_id)
            if name.endswith("/"):
                name = name.rstrip("/")
            kind = header.type
            if kind in _REGULAR:
                path = f"{root}/{name}"
                parent = path.rpartition("/")[0]
                if parent not in clear_dirs:  # one lookup for most files: checked and made
                    self.check_not_below_symlink(name)
                    self.ensure_dir(parent)
                    clear_dirs.add(parent)
                if header.size <= SMALL_FILE:
                    self.write(path, tar.data(), data_mode(header.mode), header.mtime)
                else:
                    _write_large(tar, path, data_mode(header.mode), header.mtime)
            elif kind == tarfile.DIRTYPE:
                self.check_not_below_symlink(name)
                self.ensure_dir(f"{root}/{name}" if name else root)
            else:
                self.check_not_below_symlink(name)
                self.take_special(_to_tarinfo(header), name)
            if self.members == PAUSE_AFTER_MEMBERS:
                layout.test_pause("extract")
            if self.progress is not None and not self.members % PROGRESS_EVERY:
                self.report_progress(self.progress)

    def report_progress(self, progress: Callable[[int, int], None]) -> None:
        now = time.monotonic()
        if now >= self.next_progress:
            progress(self.members, self.total)
            self.next_progress = now + self.progress_seconds

    def check_not_below_symlink(self, name: str) -> None:
        if self.symlinks and _below(name, self.symlinks):
            raise self.reject(f"member {name!r} lies below a symlink of the archive")

    def take_special(self, member: tarfile.TarInfo, name: str) -> None:
        """Links (judged by `tarfile.data_filter`, made at the end) and anything else
        (refused with the reason `_check_member` or the filter gives)."""
        _check_member(member, self.build_id)
        member = tarfile.data_filter(member, self.root)
        if not (member.issym() or member.islnk()):
            raise self.reject(f"member {name!r}: unsupported type {member.type!r}")
        target = os.path.join(self.root, name)
        self.ensure_dir(os.path.dirname(target))
        if member.issym():
            self.symlinks.add(posixpath.normpath(name))  # as `_below` and `_walk` see names
            self.clear_dirs.clear()  # may lie below the new one
        self.links.append((member, target))

    def write(self, path: str, data: bytes | memoryview, mode: int, mtime: float) -> None:
        """Write now (fast storage) or queue a write; writers get them in batches (one
        future per file costs more than writing a small file)."""
        if self.inline:
            start = time.perf_counter()
            _write_file(path, data, mode, mtime, self.chmod)
            self.probe.append(time.perf_counter() - start)
            if len(self.probe) == PROBE_FILES:
                # the median: one stall (a journal commit) must not hand a fast disk
                # to the pool for good; slow storage makes most writes slow
                self.inline = sorted(self.probe)[PROBE_FILES // 2] <= SLOW_WRITE
                self.probe.clear()
            return
        self.batch.append((path, data, mode, mtime))
        self.batch_bytes += len(data)
        if len(self.batch) >= BATCH_FILES or self.batch_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self.pending.append(self.pool.submit(self.place_all, self.batch))
            self.batch, self.batch_bytes = [], 0
        while len(self.pending) > MAX_INFLIGHT:
            self.pending.popleft().result()

    def place_all(self, batch: list[tuple[str, bytes | memoryview, int, float]]) -> None:
        """Write a batch of small files (in a writer thread)."""
        for path, data, mode, mtime in batch:
            _write_file(path, data, mode, mtime, self.chmod)

    def ensure_dir(self, path: str) -> None:
        if path in self.made_dirs:
            return
        if path.rpartition("/")[0] in self.made_dirs:
            # one mkdir instead of makedirs' stat walk; an existing non-directory shows up
            # as NotADirectoryError at the first file created in it
            with contextlib.suppress(FileExistsError):
                os.mkdir(path)
        else:
            os.makedirs(path, exist_ok=True)
        self.made_dirs.add(path)

    def drain(self) -> None:
        self.flush()
        while self.pending:
            self.pending.popleft().result()

    def cancel(self) -> None:
        for future in self.pending:
            future.cancel()


def _write_large(tar: _TarStream, target: str, mode: int, mtime: float) -> None:
    fd = os.open(target, _CREATE, 0o600)
    try:
        tar.copy(fd)
        os.fchmod(fd, mode)
        os.utime(fd, (mtime, mtime))
    finally:
        os.close(fd)


def _walk(path: str, symlinks: set[str]) -> tuple[str, bool]:
    """Resolve `path` lexically; also say whether any step went *through* (not to) one of
    `symlinks` - normalising first would hide `d/..` with `d -> .`."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    stack: list[str] = []
    through = False
    for i, part in enumerate(parts):
        if part == "..":
            if stack:
                stack.pop()
        else:
            stack.append(part)
        if i < len(parts) - 1 and "/".join(stack) in symlinks:
            through = True
    return "/".join(stack), through


def _make_links(
    links: list[tuple[tarfile.TarInfo, str]], symlinks: set[str], root: str, build_id: str
) -> None:
    """Create the archive's links after its files. A link target may end at another
    symlink but never pass through one: the data filter judged targets lexically."""
    for member, target in links:
        base = os.path.dirname(member.name.rstrip("/")) if member.issym() else ""
        resolved, through = _walk(f"{base}/{member.linkname}", symlinks)
        if member.islnk() and resolved in symlinks:
            # a hardlink to a symlink is a second symlink, resolved from a new place
            raise RejectedArtifactError(
                build_id, f"member {member.name!r}: hardlink to the symlink {member.linkname!r}"
            )
        if through:
            raise RejectedArtifactError(
                build_id, f"member {member.name!r}: link target passes through a symlink"
            )
        try:
            if member.issym():
                os.symlink(member.linkname, target)
            else:
                os.link(os.path.join(root, member.linkname), target, follow_symlinks=False)
        except FileExistsError:
            raise RejectedArtifactError(
                build_id, f"member {member.name!r}: a second entry for the same path"
            ) from None
        except FileNotFoundError:
            raise RejectedArtifactError(
                build_id, f"member {member.name!r}: hardlink to a missing {member.linkname!r}"
            ) from None

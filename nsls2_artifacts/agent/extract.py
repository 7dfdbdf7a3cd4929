"""Safe extraction of a build archive: tarfile parses, every member gets tarfile's
"data" filter verdict, limits on member count and bytes, links made last and never through
another link; decompression and file writes overlap.

Called by `deploy.deploy_build` (after the artifact is verified) and the benchmark.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import posixpath
import queue
import shutil
import tarfile
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from ..errors import RejectedArtifactError
from . import layout

PAUSE_AFTER_MEMBERS = 3  # the test pause point "extract" fires after this many members


class _PrefetchReader(io.RawIOBase):
    """Decompress in a background thread while the caller writes files, like the
    `tar -I zstd` pipeline does with two processes (zstandard releases the GIL).

    Read-only and forward-only; `seek` forward is supported (tarfile skips padding that
    way), which lets tarfile use its cheaper random-access mode instead of `r|`.
    """

    CHUNK = 1 << 20

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__()
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=32)
        self._buf = b""
        self._pos = 0  # offset into _buf
        self._offset = 0  # bytes handed out (or skipped) so far
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

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._offset

    def _fill(self) -> bool:
        if self._eof:
            return False
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        if not item:
            self._eof = True
            return False
        self._buf = self._buf[self._pos :] + item
        self._pos = 0
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            size = len(self._buf) - self._pos
        while len(self._buf) - self._pos < size and self._fill():
            pass
        out = self._buf[self._pos : self._pos + size]
        self._pos += len(out)
        self._offset += len(out)
        return out

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._offset + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < self._offset:
            raise OSError(f"cannot seek backwards in a compressed stream (to {target})")
        while target > self._offset:
            if not self.read(min(target - self._offset, self.CHUNK)):
                break
        return self._offset

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a pump waiting on a full queue
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            self._thread.join(timeout=0.01)
        super().close()


@contextlib.contextmanager
def _open_stream(path: Path, fmt: str) -> Any:
    """A tarfile reading the archive front to back (zstd via `zstandard`, or gzip)."""
    with open(path, "rb") as raw:
        if fmt in ("tar.zst", "tar.zstd"):
            import zstandard

            source: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(raw, read_size=1 << 20)
        elif fmt in ("tar.gz", "tgz"):
            source = gzip.GzipFile(fileobj=raw, mode="rb")
        elif fmt == "tar":
            source = raw
        else:
            raise RejectedArtifactError("", f"unknown artifact format {fmt!r}")
        reader = _PrefetchReader(source)
        try:
            with tarfile.open(fileobj=reader, mode="r:") as tar:
                yield tar
        finally:
            reader.close()


def _check_member(member: tarfile.TarInfo, build_id: str) -> None:
    """Reject absolute names, any `..`, devices and links leaving the prefix, each with a
    clear reason (plain string work: this runs for every member)."""
    name = member.name
    if name.startswith("/"):
        raise RejectedArtifactError(build_id, f"member {name!r}: absolute path")
    if ".." in name.split("/"):
        raise RejectedArtifactError(build_id, f"member {name!r}: '..' in path")
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


SMALL_FILE = 4 * 1024 * 1024  # members up to this size are written by the thread pool
BATCH_FILES = 32  # small files handed to a writer at once
BATCH_BYTES = 8 * 1024 * 1024  # ... or this much data
# batches queued: bounds memory to about MAX_INFLIGHT * (BATCH_BYTES + SMALL_FILE)
MAX_INFLIGHT = 16
WRITERS = 4  # file creation is latency-bound (GPFS metadata): overlap it


def data_mode(member: tarfile.TarInfo) -> int:
    """tarfile's "data" filter mode for a regular file: no setuid/setgid/sticky, no
    group/other write, owner rw, execute bits only if the owner's is set."""
    mode = member.mode & 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _write_file(path: str, data: bytes, mode: int, mtime: float) -> None:
    """Create a new file (O_EXCL|O_NOFOLLOW: never through a link, never over anything)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.utime(path, (mtime, mtime), follow_symlinks=False)


def safe_extract(
    archive: Path, fmt: str, dest: Path, *, build_id: str, max_members: int, max_bytes: int
) -> tuple[int, int]:
    """Extract `archive` into the existing, empty directory `dest`; returns (members, bytes).

    tarfile parses the archive; every member gets tarfile's "data" filter verdict (no
    absolute names, no `..`, no links leaving `dest`, no device files, no setuid or
    group/other-write bits). Links and every other special member go through
    `tarfile.data_filter` itself. Regular files and directories get the same verdict
    without its per-member realpath() (135 us each, the bulk of our CPU time): our
    checks reject absolute names and any `..`, and while files are written `dest`
    holds no symlink (links are made last, and no member may lie below an archive
    symlink), so such a name can never resolve outside `dest` and only the filter's
    mode rule is left (`data_mode`; tests/test_extract.py proves both agree). Two more
    rules keep the filter's answers true once links exist: no member lies below a
    symlink of the archive, no link target passes through one. Regular files are
    written by a small thread pool: file creation is latency-bound on shared storage.
    Raises RejectedArtifactError for anything unsafe, over the limits or unreadable.
    """
    root = os.path.realpath(dest)
    try:
        with (
            _open_stream(archive, fmt) as tar,
            ThreadPoolExecutor(WRITERS) as pool,
        ):
            job = _Extraction(root, build_id, max_members, max_bytes, pool)
            try:
                for member in tar:
                    job.take(tar, member)
                job.drain()
            finally:
                job.cancel()
        _make_links(job.links, job.symlinks, root, build_id)
    except RejectedArtifactError:
        raise
    except (FileExistsError, NotADirectoryError) as exc:
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
    in flight. `take` handles one member in archive order (main thread); `place` runs
    in the writer threads."""

    def __init__(
        self, root: str, build_id: str, max_members: int, max_bytes: int, pool: ThreadPoolExecutor
    ) -> None:
        self.root = root
        self.build_id = build_id
        self.max_members = max_members
        self.max_bytes = max_bytes
        self.pool = pool
        self.members = self.total = 0
        self.made_dirs = {root}
        self.symlinks: set[str] = set()
        self.links: list[tuple[tarfile.TarInfo, str]] = []
        self.pending: deque[Future[None]] = deque()
        self.batch: list[tuple[tarfile.TarInfo, bytes]] = []
        self.batch_bytes = 0

    def reject(self, message: str) -> RejectedArtifactError:
        return RejectedArtifactError(self.build_id, message)

    def take(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.members += 1
        self.total += max(member.size, 0)
        if self.members > self.max_members:
            raise self.reject(f"archive has more than agent.max_members={self.max_members} members")
        if self.total > self.max_bytes:
            raise self.reject(f"archive holds more than agent.max_bytes={self.max_bytes} bytes")
        _check_member(member, self.build_id)
        name = member.name.rstrip("/")
        if any(p in self.symlinks for p in _parents(name)):
            raise self.reject(f"member {name!r} lies below a symlink of the archive")
        if member.isreg() and member.size <= SMALL_FILE:
            handle = tar.extractfile(member)
            assert handle is not None  # a regular file always has data
            self.submit(member, handle.read())
        elif member.isdir():
            self.submit(member, b"")
        else:
            self.take_special(tar, tarfile.data_filter(member, self.root), name)
        if self.members == PAUSE_AFTER_MEMBERS:
            layout.test_pause("extract")

    def take_special(self, tar: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> None:
        """Links (deferred to the end) and large files (streamed here), already judged."""
        target = os.path.join(self.root, name)
        self.ensure_dir(os.path.dirname(target))
        if member.issym() or member.islnk():
            if member.issym():
                self.symlinks.add(name)
            self.links.append((member, target))
        elif member.isreg():
            handle = tar.extractfile(member)
            assert handle is not None
            _write_large(handle, target, member)
        else:
            raise self.reject(f"member {name!r}: unsupported type {member.type!r}")

    def submit(self, member: tarfile.TarInfo, data: bytes) -> None:
        """Queue a write; writers get them in batches (one future per file costs more
        than writing a small file)."""
        self.batch.append((member, data))
        self.batch_bytes += len(data)
        if len(self.batch) >= BATCH_FILES or self.batch_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self.pending.append(self.pool.submit(self.place_all, self.batch))
            self.batch, self.batch_bytes = [], 0
        while len(self.pending) > MAX_INFLIGHT:
            self.pending.popleft().result()

    def place_all(self, batch: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        for member, data in batch:
            self.place(member, data)

    def place(self, member: tarfile.TarInfo, data: bytes) -> None:
        """Write one directory or small file (in a writer thread), with the data filter's
        mode (`data_mode`)."""
        target = os.path.join(self.root, member.name.rstrip("/"))
        if member.isdir():
            self.ensure_dir(target)
            return
        self.ensure_dir(os.path.dirname(target))
        _write_file(target, data, data_mode(member), member.mtime)

    def ensure_dir(self, path: str) -> None:
        if path not in self.made_dirs:
            os.makedirs(path, exist_ok=True)  # safe when two writers race for it
            self.made_dirs.add(path)

    def drain(self) -> None:
        self.flush()
        while self.pending:
            self.pending.popleft().result()

    def cancel(self) -> None:
        for future in self.pending:
            future.cancel()


def _write_large(handle: IO[bytes], target: str, member: tarfile.TarInfo) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(target, flags, 0o600), "wb") as out:
        shutil.copyfileobj(handle, out, 1 << 20)
        os.fchmod(out.fileno(), member.mode)
    os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)


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

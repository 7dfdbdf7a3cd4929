"""Crash-safe filesystem primitives shared by the store and the agent.

Every "done" marker in this project (manifest.json, ready.json, the `latest`
symlink, heartbeats) is written through these helpers: temp name on the same
filesystem, fsync, `os.replace`, fsync of the directory. Every small record read back
from the store or the deploy root (manifests, LTS records, rollout reports, heartbeats,
ready markers, notebooks) goes through `read_bounded`: a regular file only, never a
symlink's target unless asked, never more than a stated number of bytes, so a FIFO cannot
hang a reader and a link to /dev/zero cannot fill its memory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import LockBusy, UnsafeFileError


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode(), mode)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


# Size caps of what we read whole. Records are a few kB; a manifest lists a few hundred
# packages (~100 kB). Anything near these is a bug or an attack, refused with a clear error.
RECORD_LIMIT = 1 << 20  # LTS records, locks, the S3 index, heartbeats, ready markers
MANIFEST_LIMIT = 8 << 20  # a build's manifest.json
JSON_LIMIT = MANIFEST_LIMIT  # `read_json`'s default: the largest JSON we read whole
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFLNK: "a symlink",
}


def file_kind(mode: int) -> str:
    """ "a FIFO", "a directory", ... for `st_mode`, in words for error messages."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def too_large(size: int, limit: int) -> str:
    return f"{size} bytes, over the {limit}-byte limit for this file"


def read_bounded(path: str | Path, limit: int, *, follow_symlinks: bool = False) -> bytes:
    """The whole content of the regular file `path`, at most `limit` bytes.

    Opened with O_NONBLOCK (a FIFO cannot hang the open) and, unless `follow_symlinks`,
    O_NOFOLLOW (a symlink to /dev/zero or out of the store is refused, not followed);
    then fstat must say "regular file" no larger than `limit`, and the read stops at
    `limit` + 1 bytes whatever the file does meanwhile. UnsafeFileError otherwise."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks and os.path.islink(path):
            raise UnsafeFileError(
                errno.ELOOP, "a symlink, not a regular file (not followed)", str(path)
            ) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = f"{file_kind(st.st_mode)}, not a regular file"
            raise UnsafeFileError(errno.EINVAL, what, str(path))
        if st.st_size > limit:
            raise UnsafeFileError(errno.EFBIG, too_large(st.st_size, limit), str(path))
        os.set_blocking(fd, True)
        chunks, left = [], limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:  # grew after the fstat
        raise UnsafeFileError(errno.EFBIG, too_large(len(data), limit), str(path))
    return data


def parse_json(data: bytes | str) -> Any:
    """json.loads, with nesting too deep for the parser as a ValueError like any other
    malformed JSON (a RecursionError would escape every reader's error handling)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def read_json(path: str | Path, limit: int = JSON_LIMIT, *, follow_symlinks: bool = False) -> Any:
    """The JSON in the regular file `path` (see `read_bounded`): OSError (UnsafeFileError
    for a FIFO, symlink or oversized file) when it cannot be read, ValueError when it is
    not JSON."""
    return parse_json(read_bounded(path, limit, follow_symlinks=follow_symlinks))


def atomic_symlink(target: str, link: str | Path) -> None:
    """Point `link` at `target` by renaming a fresh symlink over it (never unlink-then-create)."""
    link = Path(link)
    tmp = link.parent / f".{link.name}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def _open_lock_file(path: Path) -> int:
    """Open (or create) a lock file we are about to truncate and write our pid into: never
    through a symlink (it would truncate whatever the link names) and never a FIFO or a
    device (UnsafeFileError naming it)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            raise UnsafeFileError(
                errno.ELOOP, "a symlink, not a lock file (not followed)", str(path)
            ) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafeFileError(errno.EINVAL, f"{file_kind(st.st_mode)}, not a lock file", str(path))
    os.set_blocking(fd, True)
    return fd


@contextlib.contextmanager
def file_lock(path: str | Path, *, wait: bool = True) -> Iterator[Path]:
    """Hold a POSIX record lock on `path` (created if needed).

    POSIX locks (`lockf`), not `flock`: they are the kind GPFS and NFSv4 enforce
    across nodes. The kernel drops the lock when the holder dies, even on kill -9.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_lock_file(path)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise LockBusy(str(path)) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether a process of this host has `pid` (one we may not signal still counts):
    decides if a lock's holder died, so a stale lock can be taken over."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""Deploy one committed build: verify, extract safely, conda-unpack, smoke-test, mark ready.

Called by `reconcile.run_pass` for every committed build that is not ready here. Each
step is safe to redo: the archive is extracted into `envs/ENV/.partial-BUILD_ID`,
renamed to `envs/ENV/BUILD_ID`, `bin/conda-unpack` runs at that final path, the smoke
imports run with the env's own python, and `.nsls2/ready.json` is written last. A
failure quarantines the artifact (reason + what was seen of the artifact) so the same
bad artifact is never retried in a loop.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import logging
import os
import queue
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..config import SiteConfig
from ..errors import DeployError, RejectedArtifactError
from ..fsutil import LockBusy, atomic_write_json, fsync_dir, read_json
from ..records import BuildManifest, ReadyRecord, isoformat, utcnow
from ..store import FilesystemStore
from . import layout
from .locks import build_lock
from .log import event

HASH_CHUNK = 4 * 1024 * 1024
PAUSE_AFTER_MEMBERS = 3  # the test pause point "extract" fires after this many members


@dataclass(frozen=True)
class DeployOutcome:
    """What happened to one build in one pass."""

    env: str
    build_id: str
    result: str  # deployed | ready | quarantined | skipped | busy
    reason: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Quarantine:
    """`state/quarantine/ENV/BUILD_ID.json`: why a build was rejected, and which artifact.

    The artifact is identified by the manifest's sha256 plus the size and mtime seen on
    disk: the same artifact is never retried, a republished or re-synced one is.
    """

    env: str
    build_id: str
    stage: str  # verify | extract | unpack | smoke
    reason: str
    artifact_sha256: str
    artifact_size: int
    artifact_mtime_ns: int
    time: str
    node: str

    def same_artifact(self, sha256: str, seen: tuple[int, int]) -> bool:
        return (self.artifact_sha256, self.artifact_size, self.artifact_mtime_ns) == (sha256, *seen)


class _StageError(DeployError):
    """A failure after verification (unpack, smoke): quarantine with `stage`."""

    def __init__(self, build_id: str, stage: str, message: str) -> None:
        self.stage = stage
        super().__init__(build_id, message)


# -- quarantine records -------------------------------------------------------------------


def read_quarantine(deploy_root: Path, env: str, build_id: str) -> Quarantine | None:
    try:
        return Quarantine(**read_json(layout.quarantine_path(deploy_root, env, build_id)))
    except (OSError, ValueError, TypeError):
        return None


def list_quarantined(deploy_root: Path) -> list[Quarantine]:
    found = []
    for path in sorted((deploy_root / "state" / "quarantine").glob("*/*.json")):
        record = read_quarantine(deploy_root, path.parent.name, path.stem)
        if record:
            found.append(record)
    return found


def _artifact_seen(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def quarantined_for(
    site: SiteConfig, store: FilesystemStore, manifest: BuildManifest
) -> Quarantine | None:
    """The quarantine record that still applies to this exact artifact, if any."""
    record = read_quarantine(site.deploy_root, manifest.name, manifest.build_id)
    if record is None:
        return None
    seen = _artifact_seen(store.root / manifest.name / manifest.build_id / manifest.artifact.file)
    return record if record.same_artifact(manifest.artifact.sha256, seen) else None


def _quarantine(
    site: SiteConfig, manifest: BuildManifest, artifact: Path, stage: str, reason: str
) -> Quarantine:
    size, mtime_ns = _artifact_seen(artifact)
    record = Quarantine(
        env=manifest.name,
        build_id=manifest.build_id,
        stage=stage,
        reason=reason,
        artifact_sha256=manifest.artifact.sha256,
        artifact_size=size,
        artifact_mtime_ns=mtime_ns,
        time=isoformat(utcnow()),
        node=site.agent.node,
    )
    atomic_write_json(
        layout.quarantine_path(site.deploy_root, manifest.name, manifest.build_id), asdict(record)
    )
    return record


# -- verify ---------------------------------------------------------------------------------


def verify_artifact(path: Path, manifest: BuildManifest) -> None:
    """Size, then sha256, against the manifest, before anything reads the archive."""
    expected = manifest.artifact
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise RejectedArtifactError(manifest.build_id, f"artifact {path}: {exc.strerror}") from None
    if size != expected.size:
        raise RejectedArtifactError(
            manifest.build_id, f"artifact {path.name}: size {size} != manifest size {expected.size}"
        )
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != expected.sha256:
        raise RejectedArtifactError(
            manifest.build_id,
            f"artifact {path.name}: sha256 {digest.hexdigest()} "
            f"!= manifest sha256 {expected.sha256}",
        )


# -- safe extraction ------------------------------------------------------------------------


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
    """Our own checks, for clear reasons; tarfile's "data" filter re-checks all of them."""
    name = PurePosixPath(member.name)
    if name.is_absolute():
        raise RejectedArtifactError(build_id, f"member {member.name!r}: absolute path")
    if ".." in name.parts:
        raise RejectedArtifactError(build_id, f"member {member.name!r}: '..' in path")
    if member.isdev():
        raise RejectedArtifactError(build_id, f"member {member.name!r}: device or fifo file")
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        base = name.parent if member.issym() else PurePosixPath()
        depth = 0
        for part in (base / link).parts if not link.is_absolute() else ("/",):
            if part == "/":
                depth = -1
                break
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                break
        if depth < 0:
            kind = "symlink" if member.issym() else "hardlink"
            raise RejectedArtifactError(
                build_id, f"member {member.name!r}: {kind} to {member.linkname!r} leaves the prefix"
            )


SMALL_FILE = 4 * 1024 * 1024  # members up to this size are written by the thread pool
MAX_INFLIGHT = 64  # pending writes (bounds memory to MAX_INFLIGHT * SMALL_FILE)
WRITERS = 4  # file creation is latency-bound (GPFS metadata): overlap it


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

    tarfile parses the archive and `tarfile.data_filter` vets every member (no absolute
    names, no `..`, no links leaving `dest`, no device files, no setuid bits); we check
    the same first for a clear message, plus two rules that keep the filter's answers
    true after extraction: no member lies below a symlink of the archive, and no link
    target passes through one. Symlinks and hardlinks are made last, so no file is ever
    written through a link; regular files are written by a small thread pool because
    creating files on a shared filesystem is latency-bound.
    Raises RejectedArtifactError for anything unsafe, over the limits or unreadable.
    """
    root = os.path.realpath(dest)
    members = total = 0
    made_dirs = {root}
    symlinks: set[str] = set()
    links: list[tuple[tarfile.TarInfo, str]] = []
    pending: deque[Future[None]] = deque()

    def ensure_dir(path: str) -> None:
        if path not in made_dirs:
            os.makedirs(path, exist_ok=True)  # safe when two writers race for it
            made_dirs.add(path)

    def place(member: tarfile.TarInfo, data: bytes) -> None:
        """Judge, then write one directory or small file (in a writer thread).

        tarfile's data filter judges against an empty directory (the cwd): while members
        are placed, `root` holds no symlinks either (links are made last, nothing may lie
        below an archive symlink), so the verdict is the same as against `root`. Its
        realpath() system calls release the GIL, so the writers judge in parallel."""
        member = tarfile.data_filter(member, ".")
        target = os.path.join(root, member.name.rstrip("/"))
        if member.isdir():
            ensure_dir(target)
            return
        ensure_dir(os.path.dirname(target))
        _write_file(target, data, member.mode, member.mtime)

    try:
        with (
            _open_stream(archive, fmt) as tar,
            ThreadPoolExecutor(WRITERS) as pool,
            _empty_dir(Path(root).parent, Path(root).name) as judge,
            _inside(judge),
        ):
            try:
                for member in tar:
                    members += 1
                    total += max(member.size, 0)
                    if members > max_members:
                        raise RejectedArtifactError(
                            build_id,
                            f"archive has more than agent.max_members={max_members} members",
                        )
                    if total > max_bytes:
                        raise RejectedArtifactError(
                            build_id, f"archive holds more than agent.max_bytes={max_bytes} bytes"
                        )
                    _check_member(member, build_id)
                    name = member.name.rstrip("/")
                    if any(p in symlinks for p in _parents(name)):
                        raise RejectedArtifactError(
                            build_id, f"member {name!r} lies below a symlink of the archive"
                        )
                    if member.isreg() and member.size <= SMALL_FILE:
                        handle = tar.extractfile(member)
                        assert handle is not None  # a regular file always has data
                        pending.append(pool.submit(place, member, handle.read()))
                        if len(pending) > MAX_INFLIGHT:
                            pending.popleft().result()
                    elif member.isdir():
                        pending.append(pool.submit(place, member, b""))
                    else:
                        member = tarfile.data_filter(member, ".")
                        target = os.path.join(root, name)
                        ensure_dir(os.path.dirname(target))
                        if member.issym() or member.islnk():
                            if member.issym():
                                symlinks.add(name)
                            links.append((member, target))
                        elif member.isreg():
                            handle = tar.extractfile(member)
                            assert handle is not None
                            _write_large(handle, target, member)
                        else:
                            raise RejectedArtifactError(
                                build_id, f"member {name!r}: unsupported type {member.type!r}"
                            )
                    if members == PAUSE_AFTER_MEMBERS:
                        layout.test_pause("extract")
                while pending:
                    pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()
        _make_links(links, symlinks, root, build_id)
    except RejectedArtifactError:
        raise
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
    if members == 0:
        raise RejectedArtifactError(build_id, "archive is empty")
    return members, total


@contextlib.contextmanager
def _empty_dir(parent: Path, name: str) -> Any:
    """`NAME.judge` next to the extraction dir; the build lock makes the name ours, and a
    killed agent's leftover (always empty) is replaced."""
    path = parent / f"{name}.judge"
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)
    path.mkdir()
    try:
        yield str(path)
    finally:
        os.rmdir(path)


@contextlib.contextmanager
def _inside(directory: str) -> Any:
    """chdir into `directory` for the block (the agent's other threads use absolute paths)."""
    previous = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.chdir(directory)
        yield
    finally:
        os.fchdir(previous)
        os.close(previous)


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


# -- processes --------------------------------------------------------------------------------


def env_for_prefix(prefix: Path) -> dict[str, str]:
    """The environment a deployed env's programs run with: its bin first, its CONDA_PREFIX."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    env["PATH"] = f"{prefix / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["CONDA_PREFIX"] = str(prefix)
    return env


def _run(cmd: list[str], prefix: Path, timeout: float, build_id: str, stage: str) -> None:
    """Run `cmd` in its own process group; kill the whole group on timeout."""
    with tempfile.TemporaryDirectory(prefix="nsls2-agent-") as cwd:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,  # an empty cwd, so nothing there shadows the env's modules
            env=env_for_prefix(prefix),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=timeout or None)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise _StageError(build_id, stage, f"{stage} timed out after {timeout:g} s") from None
    if proc.returncode in (-signal.SIGTERM, -signal.SIGKILL, -signal.SIGINT):
        # killed from outside (shutdown, OOM killer): not the build's fault, retry next pass
        raise DeployError(build_id, f"{stage} was killed by signal {-proc.returncode}")
    if proc.returncode != 0:
        tail = output.decode(errors="replace").strip().splitlines()[-5:]
        raise _StageError(
            build_id, stage, f"{stage} failed (exit {proc.returncode}): {' | '.join(tail)}"
        )


def conda_unpack(prefix: Path, timeout: float, build_id: str) -> None:
    """Run the env's own `bin/conda-unpack` by absolute path, at the final location."""
    script = prefix / "bin" / "conda-unpack"
    if not script.is_file():
        raise _StageError(
            build_id, "unpack", "bin/conda-unpack is missing: not a conda-pack archive"
        )
    python = prefix / "bin" / "python"
    # conda-pack writes it with a `#!/usr/bin/env python` shebang; name the interpreter so
    # the env's python runs it whatever PATH the agent has
    cmd = [str(python), str(script)] if python.exists() else [str(script)]
    _run(cmd, prefix, timeout, build_id, "unpack")


def smoke_test(prefix: Path, imports: tuple[str, ...], timeout: float, build_id: str) -> None:
    """Import every smoke module with the env's own python (isolated mode: no user site)."""
    python = prefix / "bin" / "python"
    if not python.exists():
        raise _StageError(build_id, "smoke", "bin/python is missing")
    code = "\n".join(f"import {name}" for name in imports) or "pass"
    _run([str(python), "-I", "-c", code], prefix, timeout, build_id, "smoke")


# -- the whole step ------------------------------------------------------------------------------


def _discard(path: Path) -> None:
    """Move a stale directory out of the way atomically, then delete it."""
    if not path.exists() and not path.is_symlink():
        return
    trash = path.parent / f"{layout.TRASH_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}"
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean_trash(deploy_root: Path, env: str) -> None:
    for entry in layout.env_dir(deploy_root, env).glob(f"{layout.TRASH_PREFIX}*"):
        shutil.rmtree(entry, ignore_errors=True)


def sweep_leftovers(
    deploy_root: Path, env: str, committed: set[str] | None, log: logging.Logger
) -> list[str]:
    """Remove what killed deploys left behind for builds no pass will redo: partial and
    judge dirs, and build dirs without ready.json whose build left the store.

    `committed` is None when the store said nothing about `env` (unreachable or empty):
    then incomplete build dirs stay, as nothing is removed on an empty listing. Each
    removal happens under the build's lock, skipped if another agent holds it.
    """
    removed = []
    directory = layout.env_dir(deploy_root, env)
    stale: dict[str, list[Path]] = {}
    for entry in directory.glob(f"{layout.PARTIAL_PREFIX}*"):
        build_id = entry.name[len(layout.PARTIAL_PREFIX) :].removesuffix(".judge")
        stale.setdefault(build_id, []).append(entry)
    if committed is not None:
        for build_id in layout.build_dirs(deploy_root, env):
            if build_id not in committed and layout.read_ready(deploy_root, env, build_id) is None:
                stale.setdefault(build_id, []).append(layout.build_dir(deploy_root, env, build_id))
    for build_id, paths in sorted(stale.items()):
        try:
            with build_lock(deploy_root, env, build_id, wait=False):
                for path in paths:
                    if path.name == build_id and layout.read_ready(deploy_root, env, build_id):
                        continue  # became ready meanwhile
                    _discard(path)
                    removed.append(path.name)
                    event(log, "leftover-removed", env=env, path=path.name)
        except LockBusy:
            continue
    return removed


def deploy_build(
    site: SiteConfig,
    store: FilesystemStore,
    manifest: BuildManifest,
    log: logging.Logger,
    *,
    wait: bool = False,
) -> DeployOutcome:
    """Make ENV/BUILD_ID ready here, or quarantine it; never raises for a bad build."""
    env, build_id = manifest.name, manifest.build_id
    root = site.deploy_root
    try:
        with build_lock(root, env, build_id, wait=wait):
            if layout.read_ready(root, env, build_id):
                return DeployOutcome(env, build_id, "ready")
            if (record := quarantined_for(site, store, manifest)) is not None:
                return DeployOutcome(env, build_id, "skipped", record.reason)
            return _deploy_locked(site, store, manifest, log)
    except LockBusy:
        event(log, "busy", env=env, build=build_id, detail="another agent is deploying it")
        return DeployOutcome(env, build_id, "busy")


def _deploy_locked(
    site: SiteConfig, store: FilesystemStore, manifest: BuildManifest, log: logging.Logger
) -> DeployOutcome:
    env, build_id = manifest.name, manifest.build_id
    root = site.deploy_root
    artifact = store.root / env / build_id / manifest.artifact.file
    final = layout.build_dir(root, env, build_id)
    partial = layout.partial_dir(root, env, build_id)
    started = time.monotonic()
    stage = "verify"
    marks: dict[str, float] = {}
    try:
        verify_artifact(artifact, manifest)
        marks["verify"] = time.monotonic()
        event(log, "verified", env=env, build=build_id, seconds=time.monotonic() - started)
        # leftovers of a killed pass: redo from scratch (a dir without ready.json is incomplete)
        _discard(partial)
        _discard(final)
        partial.mkdir(parents=True)
        stage = "extract"
        event(log, "extract", env=env, build=build_id, node=site.agent.node)
        members, nbytes = safe_extract(
            artifact,
            manifest.artifact.format,
            partial,
            build_id=build_id,
            max_members=site.agent.max_members,
            max_bytes=site.agent.max_bytes,
        )
        os.rename(partial, final)
        fsync_dir(final.parent)
        marks["extract"] = time.monotonic()
        stage = "unpack"
        layout.test_pause("unpack")
        conda_unpack(final, site.agent.smoke_timeout_seconds, build_id)
        marks["unpack"] = time.monotonic()
        stage = "smoke"
        layout.test_pause("smoke")
        smoke_test(final, manifest.smoke, site.agent.smoke_timeout_seconds, build_id)
        marks["smoke"] = time.monotonic()
    except (RejectedArtifactError, _StageError) as exc:
        reason = str(exc)
        with contextlib.suppress(OSError):
            _discard(partial)
            _discard(final)
        _quarantine(site, manifest, artifact, getattr(exc, "stage", stage), reason)
        event(log, "quarantine", logging.ERROR, env=env, build=build_id, stage=stage, reason=reason)
        return DeployOutcome(env, build_id, "quarantined", reason, time.monotonic() - started)
    seconds = time.monotonic() - started
    atomic_write_json(final / layout.LOCAL_MANIFEST, manifest.to_dict())
    ready = ReadyRecord(
        env=env,
        build_id=build_id,
        created=manifest.created,
        deployed=isoformat(utcnow()),
        node=site.agent.node,
        artifact_sha256=manifest.artifact.sha256,
        smoke=manifest.smoke,
        seconds=round(seconds, 3),
    )
    atomic_write_json(final / layout.READY, ready.to_dict())  # the done marker, last
    steps, previous = {}, started
    for step in ("verify", "extract", "unpack", "smoke"):
        steps[f"{step}_s"], previous = marks[step] - previous, marks[step]
    event(
        log,
        "deploy",
        env=env,
        build=build_id,
        members=members,
        bytes=nbytes,
        seconds=seconds,
        **steps,
    )
    return DeployOutcome(env, build_id, "deployed", seconds=seconds)

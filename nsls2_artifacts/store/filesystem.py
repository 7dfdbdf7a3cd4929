"""The store as a directory tree (a shared or DTN-synced filesystem): the default backend.

Layout:
    STORE/ENV/BUILD_ID/env.tar.zst     conda-pack archive
    STORE/ENV/BUILD_ID/pixi.lock       the lock the env was installed from
    STORE/ENV/BUILD_ID/index.json.zst  the content index (contentindex.py; newer builds)
    STORE/ENV/BUILD_ID/manifest.json   written LAST: its presence commits the build
    STORE/ENV/lts/LABEL.json           {"build_id": ..., "promoted": ...}
    STORE/ENV/.staging-BUILD_ID-PID/   a publish in progress (invisible to readers)
    STORE/.nodes/NODE.json             each agent's rollout report (replaced every pass)

Built by `open_store` for a `store:` path; nothing outside this module knows the layout.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ..contentindex import MAX_COMPRESSED, ContentIndex, FrameRecord
from ..errors import BuildLockedError, StoreError
from ..fsutil import (
    MANIFEST_LIMIT,
    RECORD_LIMIT,
    LockBusy,
    atomic_write_json,
    atomic_write_text,
    file_lock,
    fsync_dir,
    read_bounded,
    read_json,
)
from ..records import BuildManifest, LtsRecord, RecordError, is_build_id
from .interface import (
    MANIFEST,
    MISSING,
    NODE_REPORT_LIMIT,
    ArtifactMismatchError,
    ArtifactReader,
    ArtifactStamp,
    FrameReader,
    InvalidBuild,
    Progress,
    StoredNodeReport,
    VerifiedReader,
    check_node_name,
    check_stream,
    parse_index,
    read_chunks,
    stored_report,
)

STAGING_PREFIX = ".staging-"
NODES_DIR = ".nodes"  # a dot name: never listed as an env
CACHE_LIMIT = 4096
LOCAL_HASH_CHUNK = 16 << 20  # see _local_chunks


def sha256_file(path: str | Path) -> tuple[str, int]:
    """(sha256 hex, size) of a local file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in read_chunks(handle):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def open_build_file(directory: Path, name: str, label: str) -> IO[bytes]:
    """Open `directory/name` for reading, only if it is a regular file there: `name` is a
    plain file name (the manifest parser already refuses others), opened with O_NOFOLLOW
    (a symlink to /dev/zero or out of the store is refused, not followed) and O_NONBLOCK
    (a FIFO cannot hang the open), then checked by fstat to be a regular file. What the
    file is counts as the artifact's property (ArtifactMismatchError: quarantined); any
    other OSError (EIO, ESTALE) is this node's and propagates."""
    if not name or "/" in name or name in (".", ".."):
        raise ArtifactMismatchError(f"{label} {name!r}: not a plain file name of the build")
    path = directory / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ArtifactMismatchError(f"{label} {path}: missing") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW on a symlink
            raise ArtifactMismatchError(f"{label} {path}: a symlink, not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactMismatchError(f"{label} {path}: not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class FilesystemStore:
    """The store as a directory tree (see the module doc)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        # Parsed manifests keyed by the file's identity: a committed manifest never changes,
        # but the agent and every hook page list every build, and parsing a few dozen
        # manifests of a few hundred packages each is most of that cost. (inode, mtime, size)
        # makes a deleted-and-republished build re-read.
        self._cache: dict[tuple[str, str], tuple[tuple[int, int, int], BuildManifest]] = {}

    @property
    def location(self) -> str:
        return str(self.root)

    def watch_path(self) -> Path | None:
        return self.root if self.root.is_dir() else None

    def is_change_hint(self, path: str) -> bool:
        # manifest.json (renamed into place last) and lts/LABEL.json; dot names are ours
        # (.nodes/NODE.json, .staging-*, the .NAME.tmp of an atomic write) or hidden
        try:
            parts = Path(path).relative_to(self.root).parts
        except ValueError:
            return False
        return path.endswith(".json") and not any(part.startswith(".") for part in parts)

    def changes_token(self) -> str | None:
        return None  # listing a directory is cheap; the agent lists every pass

    # -- reading ---------------------------------------------------------------------------

    def _scan(self, path: Path) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(path) as entries:
                return sorted(entries, key=lambda e: e.name)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot list store directory {path}: {exc.strerror}") from exc

    def envs(self) -> list[str]:
        if not self.root.is_dir():
            raise StoreError(f"store root {self.root} does not exist or is not a directory")
        return [e.name for e in self._scan(self.root) if e.is_dir() and not e.name.startswith(".")]

    def _committed(self, env: str) -> Iterator[tuple[str, os.stat_result]]:
        """(build id, stat of its manifest.json) of every committed build, by id."""
        for entry in self._scan(self.root / env):
            if not is_build_id(entry.name):
                continue
            try:
                yield entry.name, os.stat(os.path.join(entry.path, MANIFEST))
            except OSError:
                continue  # not committed (yet)

    def _load(self, env: str, build_id: str) -> BuildManifest:
        path = self.root / env / build_id / MANIFEST
        try:  # read_json: a regular file (no FIFO, no symlink) of at most MANIFEST_LIMIT
            manifest = BuildManifest.from_dict(read_json(path, MANIFEST_LIMIT))
        except FileNotFoundError:
            raise StoreError(f"{env}/{build_id}: no such committed build in {self.root}") from None
        except ValueError as exc:
            raise StoreError(f"{path}: invalid JSON: {exc}") from None
        except RecordError as exc:
            raise StoreError(f"{path}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"{path}: {exc.strerror}") from None
        if manifest.name != env or manifest.build_id != build_id:
            raise StoreError(
                f"{path}: names {manifest.name}/{manifest.build_id}, but lives at {env}/{build_id}"
            )
        return manifest

    def _cached(self, env: str, build_id: str, st: os.stat_result) -> BuildManifest:
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get((env, build_id))
        if cached is None or cached[0] != key:
            cached = (key, self._load(env, build_id))
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[(env, build_id)] = cached
        return cached[1]

    def builds(self, env: str) -> list[BuildManifest]:
        found = []
        for build_id, st in self._committed(env):
            with contextlib.suppress(StoreError):
                found.append(self._cached(env, build_id, st))
        return sorted(found, key=lambda m: (m.created_at, m.build_id))

    def invalid_builds(self, env: str) -> list[InvalidBuild]:
        bad = []
        for build_id, st in self._committed(env):
            try:
                self._cached(env, build_id, st)
            except StoreError as exc:
                bad.append(InvalidBuild(env, build_id, str(exc)))
        return bad

    def manifest(self, env: str, build_id: str) -> BuildManifest:
        return self._load(env, build_id)

    def _lts_files(self, env: str) -> list[os.DirEntry[str]]:
        return [
            e
            for e in self._scan(self.root / env / "lts")
            if e.name.endswith(".json") and not e.name.startswith(".")
        ]

    def _read_lts(self, env: str, entry: os.DirEntry[str]) -> LtsRecord:
        label = entry.name[: -len(".json")]
        try:
            return LtsRecord.from_dict(env, label, read_json(entry.path, RECORD_LIMIT))
        except OSError as exc:
            raise StoreError(f"unreadable LTS record {entry.path}: {exc.strerror}") from None
        except (ValueError, RecordError) as exc:
            raise StoreError(f"unreadable LTS record {entry.path}: {exc}") from None

    def lts(self, env: str) -> list[LtsRecord]:
        records = []
        for entry in self._lts_files(env):
            with contextlib.suppress(StoreError):
                records.append(self._read_lts(env, entry))
        return sorted(records, key=lambda r: r.label)

    def invalid_lts(self, env: str) -> list[InvalidBuild]:
        bad = []
        for entry in self._lts_files(env):
            try:
                self._read_lts(env, entry)
            except StoreError as exc:
                bad.append(InvalidBuild(env, f"lts/{entry.name[: -len('.json')]}", str(exc)))
        return bad

    def strays(self) -> list[InvalidBuild]:
        # dot names are ours (.nodes, .staging-*, .publish.lock) or hidden on purpose
        found = [
            InvalidBuild("", e.name, "a file at the top of the store, where only envs belong")
            for e in self._scan(self.root)
            if not e.name.startswith(".") and not e.is_dir()
        ]
        for env in self.envs():
            for entry in self._scan(self.root / env):
                found += self._stray_in_env(env, entry)
            found += [
                InvalidBuild(env, f"lts/{e.name}", "not an LTS record (lts/LABEL.json)")
                for e in self._scan(self.root / env / "lts")
                if not e.name.startswith(".") and (not e.name.endswith(".json") or e.is_dir())
            ]
        return found

    @staticmethod
    def _stray_in_env(env: str, entry: os.DirEntry[str]) -> list[InvalidBuild]:
        if entry.name.startswith("."):
            return []
        if entry.name == "lts":
            return [] if entry.is_dir() else [InvalidBuild(env, "lts", "not a directory")]
        if not is_build_id(entry.name):
            what = "directory" if entry.is_dir() else "file"
            return [InvalidBuild(env, entry.name, f"a {what} whose name is not a build id")]
        if not entry.is_dir(follow_symlinks=False):
            return [InvalidBuild(env, entry.name, "named like a build, but not a directory")]
        return []

    # -- artifacts -------------------------------------------------------------------------

    def _file(self, manifest: BuildManifest, name: str) -> Path:
        return self.root / manifest.name / manifest.build_id / name

    def _open(self, manifest: BuildManifest, name: str, label: str) -> IO[bytes]:
        return open_build_file(self.root / manifest.name / manifest.build_id, name, label)

    @contextlib.contextmanager
    def open_artifact(
        self, manifest: BuildManifest, *, scratch: Path | None = None
    ) -> Iterator[ArtifactReader]:
        """Verified first (size, then sha256: a second local read is cheap, and keeps
        unverified bytes away from the tar reader), then read from the same open file
        (`scratch` is not needed: the file is local already)."""
        artifact = manifest.artifact
        with self._open(manifest, artifact.file, "artifact") as handle:
            _check_handle(handle, f"artifact {artifact.file}", artifact.size, artifact.sha256)
            handle.seek(0)
            yield VerifiedReader(handle)

    @contextlib.contextmanager
    def open_frames(
        self,
        manifest: BuildManifest,
        frames: Sequence[tuple[int, FrameRecord]],
        *,
        scratch: Path | None = None,
    ) -> Iterator[FrameReader]:
        """The frames read in place (pread at their offsets), each checked against its
        record before its first byte is handed out; the file's size is checked first."""
        artifact = manifest.artifact
        with self._open(manifest, artifact.file, "artifact") as handle:
            what = f"artifact {artifact.file}"
            actual = os.fstat(handle.fileno()).st_size
            if actual != artifact.size:
                raise ArtifactMismatchError(f"{what}: size {actual}, manifest says {artifact.size}")
            spans = [(number, frame, frame.offset) for number, frame in frames]
            yield FrameReader(handle, spans, what, sum(frame.length for _, frame in frames))

    def local_artifact(self, manifest: BuildManifest) -> Path | None:
        return self._file(manifest, manifest.artifact.file)

    def artifact_stamp(self, manifest: BuildManifest) -> ArtifactStamp:
        try:  # lstat: the stamp of the entry itself, never of what a symlink names
            st = os.lstat(self._file(manifest, manifest.artifact.file))
        except OSError:
            return MISSING
        return ArtifactStamp(st.st_size, st.st_mtime_ns)

    def verify_build(self, manifest: BuildManifest, *, lock: bool = True) -> None:
        files = [
            ("artifact", manifest.artifact.file, manifest.artifact.size, manifest.artifact.sha256)
        ]
        if lock:
            files.append(("lock", manifest.lock.file, None, manifest.lock.sha256))
        if manifest.index is not None:
            index = manifest.index
            files.append(("index", index.file, index.size, index.sha256))
        for label, name, size, sha256 in files:
            with self._open(manifest, name, label) as handle:
                _check_handle(handle, f"{label} {name}", size, sha256)

    def read_index(self, manifest: BuildManifest) -> ContentIndex | None:
        if manifest.index is None:
            return None
        with self._open(manifest, manifest.index.file, "index") as handle:
            blob = handle.read(MAX_COMPRESSED + 1)
        return parse_index(blob, manifest)

    # -- writing (build host only) ---------------------------------------------------------

    def set_lts(self, record: LtsRecord) -> None:
        self._load(record.env, record.build_id)  # only committed builds can be promoted
        path = self.root / record.env / "lts" / f"{record.label}.json"
        with _write_errors(path):
            atomic_write_json(path, record.to_dict())

    @contextlib.contextmanager
    def publish_lock(self, env: str, *, wait: bool = False) -> Iterator[None]:
        """One publish per env at a time; a second one refuses (or waits) instead of racing."""
        lock = self.root / env / ".publish.lock"
        with _write_errors(lock.parent):
            lock.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as held:
            try:  # the lock file itself must be ours: file_lock refuses a symlink or a FIFO
                held.enter_context(file_lock(lock, wait=wait))
            except LockBusy:
                raise BuildLockedError(
                    f"another publish of {env!r} is running (lock {lock})"
                ) from None
            except OSError as exc:
                raise StoreError(f"publish lock {lock}: {exc.strerror or exc}") from None
            yield

    def staging_dir(self, env: str, build_id: str) -> Path:
        """A fresh directory on the store's filesystem (so commit is a rename, no copy)."""
        path = self.root / env / f"{STAGING_PREFIX}{build_id}-{os.getpid()}"
        with _write_errors(path):
            path.mkdir(parents=True)
        return path

    def clean_uncommitted(self, env: str) -> list[str]:
        """Staging dirs and build dirs without manifest.json (killed between rename and
        commit) of killed publishes."""
        removed = []
        for entry in self._scan(self.root / env):
            stale = entry.name.startswith(STAGING_PREFIX) or (
                is_build_id(entry.name) and not os.path.exists(os.path.join(entry.path, MANIFEST))
            )
            if stale:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.name)
        return removed

    def uncommitted(self, env: str) -> list[str]:
        """Names of what `clean_uncommitted` would remove (for `store verify`)."""
        return [
            e.name
            for e in self._scan(self.root / env)
            if e.name.startswith(STAGING_PREFIX)
            or (is_build_id(e.name) and not os.path.exists(os.path.join(e.path, MANIFEST)))
        ]

    def commit_build(
        self, staging: Path, manifest: BuildManifest, progress: Progress | None = None
    ) -> None:
        """Move a staged build into place; manifest.json is written last and atomically."""
        with _write_errors(staging):
            for name in manifest.files():
                with open(staging / name, "rb") as handle:
                    os.fsync(handle.fileno())
            final = self.root / manifest.name / manifest.build_id
            if final.exists():
                raise StoreError(f"{manifest.name}/{manifest.build_id} already exists in the store")
            os.rename(staging, final)
            fsync_dir(final.parent)
            atomic_write_json(final / MANIFEST, manifest.to_dict())
        if progress:
            progress(manifest.artifact.size, manifest.artifact.size)

    def delete_build(self, env: str, build_id: str) -> None:
        path = self.root / env / build_id
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path / MANIFEST)
                fsync_dir(path)
        except OSError as exc:
            raise StoreError(f"cannot delete {path}: {exc.strerror}") from None
        shutil.rmtree(path, ignore_errors=True)

    # -- rollout reports -------------------------------------------------------------------

    def put_node_report(self, node: str, data: dict[str, Any]) -> None:
        path = self.root / NODES_DIR / f"{check_node_name(node)}.json"
        if not self.root.is_dir():  # never re-create a store that went away (an outage)
            raise StoreError(f"store root {self.root} does not exist or is not a directory")
        text = json.dumps(data, indent=1, sort_keys=True) + "\n"
        if len(text) > NODE_REPORT_LIMIT:
            raise StoreError(f"rollout report of {node} is {len(text)} bytes (limit 1 MiB)")
        with _write_errors(path):
            atomic_write_text(path, text)

    def node_reports(self) -> list[StoredNodeReport]:
        reports = []
        for entry in self._scan(self.root / NODES_DIR):
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            node = entry.name[: -len(".json")]
            try:
                written = datetime.fromtimestamp(entry.stat(follow_symlinks=False).st_mtime, UTC)
                raw = read_bounded(entry.path, NODE_REPORT_LIMIT)
            except FileNotFoundError:
                continue  # replaced or removed between listing and reading
            except OSError as exc:
                reason = f"{entry.path}: {exc.strerror or exc}"
                reports.append(StoredNodeReport(node, None, datetime.now(UTC), reason))
                continue
            reports.append(stored_report(node, raw, entry.path, written))
        return reports


def _check_handle(handle: IO[bytes], what: str, size: int | None, sha256: str) -> None:
    """Size (before reading: a truncated copy is refused without hashing gigabytes), then
    sha256 of an open build file."""
    actual = os.fstat(handle.fileno()).st_size
    if size is not None and actual != size:
        raise ArtifactMismatchError(f"{what}: size {actual}, manifest says {size}")
    check_stream(_local_chunks(handle), what, size, sha256)


def _local_chunks(handle: IO[bytes]) -> Iterator[memoryview]:
    """An open local file's bytes in LOCAL_HASH_CHUNK pieces, read into one buffer. Each
    read and each hash update gives the GIL up and waits for it again, up to a switch
    interval (5 ms) while another thread runs Python (a deduplicated deploy plans its
    links while the archive is hashed): in 1 MiB pieces the hash advanced about 1 MiB
    per switch interval while the plan ran (336 MB took 2.7 s under cProfile)."""
    view = memoryview(bytearray(LOCAL_HASH_CHUNK))
    while count := handle.readinto(view):
        yield view[:count]


@contextlib.contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    """A failing store write (full, read-only, not a directory) as a StoreError naming it."""
    try:
        yield
    except OSError as exc:
        raise StoreError(f"cannot write to the store at {path}: {exc.strerror or exc}") from None

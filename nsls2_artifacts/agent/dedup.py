"""Deduplicated deploys: a new build's unchanged files become hardlinks into builds already
deployed here, and the archive's zstd frames that hold nothing else are not decompressed.

Called by `deploy._steps` for a build whose manifest names a content index
(`contentindex.py`); builds without one are deployed in full, as before. The steps:

1. `prepare`: the new build's index (the store checks it against the manifest), then the
   donors: READY builds here (this env's newest first, then other envs'), each with its
   `.nsls2/dedup.json` (of the archive its `ready.json` vouches for) and the copy of its
   own index the agent kept (`.nsls2/index.json.zst`, its sha256 in dedup.json). Every
   file entry of the new index that conda-unpack never rewrites is linked from a donor
   file, if that file is a regular, read-only file of the expected size on this
   filesystem: first whole frames, by key (a frame of the same key the donor shares,
   listed in its dedup.json, holds the same members at the same paths: its index is not
   read), then single files of the same sha256 + size + mode from the donor's kept index,
   read only while over ENOUGH of the files still lack a donor (another env's build, a
   record of an older agent). Donors are held under their build locks (retention cannot
   delete them meanwhile). A frame all of whose members are linked files, directories
   or symlinks is skipped. `prepare` runs in a thread (beside the whole archive's hash
   when no build here kept an index, `may_skip_frames`: then no frame can be skipped),
   and makes the index's directories (on the shared pool) while it plans.
2. `extract`: the ordinary safe extraction (`extract.safe_extract`) with a `_Placer`: the
   members of skipped frames come from the index, in archive order, and pass the same
   checks as the archive's; linked files are made in the deploying thread, or by the
   shared pool's threads once links prove slow (file creation is latency-bound on
   GPFS), and where a link is refused (EXDEV across filesets, EPERM, EMLINK at the
   link-count limit) the file is reflinked (FICLONE) or copied from the donor. Files
   never rewritten are written read-only, so a later build can share them. Verification
   follows the plan (`deploy._open_verified`): a plan that skips frames reads only the
   frames it keeps (`kept_frames`, `Store.open_frames`: in place, or by ranged GETs from
   S3) and checks each against its record in the content index, which the store checked
   against the manifest: its tar bytes' sha256 is the frame's `key`, their length its
   `tar_length`, before the first of them reaches the tar reader. The archive's own
   sha256 is not computed and the skipped frames' bytes are never read: damage there
   cannot reach this build (its files come from donors, whose bytes were verified when
   they were deployed, under the same frame keys or sha256s). A plan that skips nothing reads and
   verifies the whole archive, as a full deploy does.
3. `protect_before_unpack`: every file bin/conda-unpack will rewrite gets an inode of its
   own (a shared one is copied first) whatever the index says, so conda-unpack never
   writes into another build's file; those files are marked rewritten in the kept index.
4. `keep`: the index copy and `.nsls2/dedup.json` (what was linked, what written, the
   archive and the keys of the frames it shares), before ready.json; `status` shows the
   disk a build adds from it.

Retention deletes a build by unlinking its names (`trash.remove`): a file another build
links keeps its inode and bytes; nothing here chmods or writes a shared inode.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any, ClassVar, TypeVar

import msgspec
import zstandard
from msgspec import Meta

from .. import layout
from ..config import SiteConfig
from ..contentindex import ContentIndex, FrameRecord, IndexEntry
from ..errors import NodeFaultError, RejectedArtifactError, StageFailedError
from ..fsutil import LockBusy, atomic_write_json
from ..records import BuildManifest, RecordError, parse_time
from ..schema import Record
from ..store import Store
from ..tarstream import DIRECTORY, REGULAR, SYMLINK, TarMember, TarNameError, TarReader
from ..tarstream import canonical_name as _canonical
from . import slowfs
from .extract import data_mode, safe_extract
from .locks import build_lock
from .log import event

INDEX_COPY = f"{layout.AGENT_DIR}/index.json.zst"
RECORD = f"{layout.AGENT_DIR}/dedup.json"
_PROBE = f"{layout.AGENT_DIR}/link-probe"
MAX_DONORS = 6  # indexes read per deploy: the newest builds hold nearly every file
ENOUGH = 0.05  # ... and after one donor, another is read only while over 5% of files lack one
# links and donor checks are latency-bound metadata calls: made in the deploying thread
# until PROBE_CALLS of a kind prove slow (slowfs.slow), then from slowfs.POOL
LINK_BATCH = 64  # links handed to a thread at once
PROBE_CALLS = 32
READ_CHUNK = 1 << 20
KEPT_LEVEL = 3  # zstd level of the kept index copy: ~0.1 s for 100k entries, 5 MB
_FICLONE = 0x40049409  # ioctl: share the source's extents (btrfs, XFS with reflink)
# a link refused by the filesystem, not by the build: copy the donor's file instead
_LINK_REFUSED = frozenset(
    {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}
)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_END_OF_ARCHIVE = bytes(1024)

Key = tuple[str, int, int]  # sha256, size, mode
INFO, WARNING = logging.INFO, logging.WARNING
T = TypeVar("T")
R = TypeVar("R")


Count = Annotated[int, Meta(ge=0)]


class DedupRecord(Record, frozen=True):
    """`.nsls2/dedup.json`: what one deduplicated deploy linked and wrote, and the sha256
    of the index copy kept beside it (what vouches for it as a later donor). Written by the
    agent that deployed the build, read by every node's agent (donors) and `status`:
    unknown fields are ignored (docs/design.md)."""

    RECORD: ClassVar[str] = "dedup.json"

    index_sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")]
    files: Count  # regular files of the build
    bytes: Count  # ... and their bytes
    linked_files: Count  # hardlinks into earlier builds
    linked_bytes: Count
    copied_files: Count  # a link was refused: reflinked or copied from the donor
    frames: Count
    skipped_frames: Count  # not decompressed
    donors: tuple[str, ...] = ()  # ENV/BUILD_ID
    # the artifact this build was deployed from (its ready.json's), so a later deploy can
    # use `shared_frames` without reading the index copy; "" in records of older agents
    archive_sha256: Annotated[str, Meta(pattern=r"^([0-9a-f]{64})?\Z")] = ""
    # keys of this build's frames whose every file was written or linked read-only (none
    # rewritten at deploy): a later build's frame of the same key holds the very same
    # members (names, modes, bytes: the key is the sha256 of the frame's tar bytes), so
    # its files can be linked from this build's same paths, its index left unread
    shared_frames: tuple[Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")], ...] = ()

    @property
    def added_bytes(self) -> int:
        """Bytes this build's deploy wrote (computed from the index: every file minus the
        hardlinked ones), i.e. what it added to the filesystem at deploy time."""
        return self.bytes - self.linked_bytes


def read_record(build: Path) -> DedupRecord | None:
    """A build's dedup record; None for a build deployed in full (no record). Raises
    RecordError naming the file and the field when the record is unreadable."""
    return layout.read_record(build / RECORD, DedupRecord.from_dict)


@dataclass
class Donor:
    """An earlier READY build here, deployed with a content index: its dedup record's
    `shared_frames` vouch for whole frames' files, its kept index (read only when
    frames leave too many files without a donor) for single files' hashes."""

    env: str
    build_id: str
    path: Path
    record: DedupRecord
    artifact_sha256: str  # of the artifact its ready.json vouches for
    _index: ContentIndex | str | None = None

    @property
    def name(self) -> str:
        return f"{self.env}/{self.build_id}"

    def index(self) -> ContentIndex | str:
        """The kept index (parsed once, cached across deploys), or why it cannot be used."""
        if self._index is None:
            found = INDEXES.load(self.path, self.record)
            if isinstance(found, ContentIndex) and found.archive_sha256 != self.artifact_sha256:
                found = f"{INDEX_COPY} is of another artifact than ready.json vouches for"
            self._index = found
        return self._index


@dataclass
class LinkPlan:
    """What a deduplicated deploy makes from where: `sources` maps a member name to the
    donor file it is linked from; `skip` are the frames not decompressed."""

    index: ContentIndex
    sources: dict[str, str] = field(default_factory=dict)
    skip: frozenset[int] = frozenset()
    donors: list[Donor] = field(default_factory=list)
    linked_files: int = 0
    copied_files: int = 0
    by_frame: int = 0  # sources found by frame key (the rest: by a donor index's hashes)
    # donors passed over: (ENV/BUILD_ID, why, log level: WARNING when a build here is
    # not as its deploy left it, INFO for the routine reasons)
    unused: list[tuple[str, str, int]] = field(default_factory=list)
    dirs: set[str] = field(default_factory=set)  # made ahead (absolute), by `make_dirs`

    @property
    def linked_bytes(self) -> int:
        files = self.index.files()
        return sum(files[name].size for name in self.sources)


# -- where metadata calls run ------------------------------------------------------------------


class _Latency(slowfs.Probe):
    """Whether one kind of metadata call (lstat, mkdir, link) is slow here, by its first
    PROBE_CALLS."""

    def __init__(self) -> None:
        super().__init__(PROBE_CALLS)


def _run_all(work: Callable[[list[T]], list[R]], items: list[T], latency: _Latency) -> list[R]:
    """`work` over `items`: the first ones timed (`slowfs.timed`) until `latency` knows;
    then in this thread while the calls are fast, else in chunks on the shared pool, at
    most LINK_BATCH each and small enough that every thread gets one (a level of 200
    directories in chunks of 64 kept 4 threads busy for 64 round trips each, not 32 for 7:
    ~1 s of a demo deploy's plan under +1 ms latency). Returns when every chunk has
    finished (nothing is left running into a directory the caller may remove after a
    failure), raising the first failure."""
    done: list[R] = []
    start = 0
    if latency.probing:
        start = latency.calls - len(latency.samples)
        for result in latency.run(lambda item: work([item]), items[:start]):
            done += result
    rest = items[start:]
    if not rest:
        return done
    if not latency.slow:
        return done + work(rest)
    pool = slowfs.POOL.get()
    size = min(LINK_BATCH, -(-len(rest) // slowfs.THREADS))
    futures = [pool.submit(work, rest[i : i + size]) for i in range(0, len(rest), size)]
    wait(futures)
    for future in futures:
        done += future.result()
    return done


# -- the donors' indexes ------------------------------------------------------------------------


class _IndexCache:
    """Kept indexes parsed before, by the identity of their file (a daemon deploys one
    build after another from the same donors; parsing 100k entries costs ~0.5 s)."""

    def __init__(self, limit: int = 16) -> None:
        self._found: dict[str, tuple[tuple[int, int, int], ContentIndex]] = {}
        self._limit = limit

    def put(self, build: Path, index: ContentIndex) -> None:
        """Remember the index a deploy just kept (the next deploy's likely donor)."""
        path = build / INDEX_COPY
        with contextlib.suppress(OSError):
            st = os.stat(path)
            if len(self._found) >= self._limit:
                self._found.clear()
            self._found[str(path)] = ((st.st_ino, st.st_mtime_ns, st.st_size), index)

    def get(self, build: Path) -> ContentIndex | None:
        """The index `build` kept, if its sha256 matches its dedup record; else None (an
        unreadable record makes the build no donor: its files are written instead)."""
        found = self.load(build)
        return found if isinstance(found, ContentIndex) else None

    def load(self, build: Path, record: DedupRecord | None = None) -> ContentIndex | str:
        """The index `build` kept (its dedup `record` read here unless given), or why there
        is none the agent can trust (the reason a build is no donor, logged: an operator
        must see why a deploy was not linked)."""
        found = record or _record_of(build)
        if isinstance(found, str):
            return found
        record = found
        path = build / INDEX_COPY
        try:
            st = os.stat(path)
            identity = (st.st_ino, st.st_mtime_ns, st.st_size)
            hit = self._found.get(str(path))
            if hit is not None and hit[0] == identity:
                return hit[1]
            blob = path.read_bytes()
            if hashlib.sha256(blob).hexdigest() != record.index_sha256:
                return f"{INDEX_COPY} does not match the index_sha256 of {RECORD}"
            index = ContentIndex.from_bytes(blob)
        except OSError as exc:
            return f"cannot read {INDEX_COPY}: {exc.strerror or exc}"
        except RecordError as exc:
            return f"{INDEX_COPY}: {exc}"
        if len(self._found) >= self._limit:
            self._found.clear()
        self._found[str(path)] = (identity, index)
        return index


INDEXES = _IndexCache()


def _record_of(build: Path) -> DedupRecord | str:
    """The build's dedup record, or why it has none the agent can use."""
    try:
        record = read_record(build)
    except RecordError as exc:
        return str(exc)
    return f"deployed in full: no {RECORD}" if record is None else record


def _candidates(deploy_root: Path, env: str, build_id: str) -> list[tuple[str, str]]:
    """READY builds here other than ENV/BUILD_ID: this env's newest first, then others'."""
    found = []
    for other in layout.deployed_envs(deploy_root):
        for ready in layout.ready_builds(deploy_root, other):
            if (other, ready.build_id) != (env, build_id):
                found.append((other != env, -parse_time(ready.created).timestamp(), other, ready))
    found.sort(key=lambda item: item[:2])
    return [(other, ready.build_id) for _, _, other, ready in found]


def _donor(deploy_root: Path, env: str, build_id: str) -> Donor | str:
    """ENV/BUILD_ID as a donor: ready here, with a dedup record of the very artifact its
    ready record vouches for (records of older agents name none: their kept index is
    read now to tell); else why it is none."""
    ready = layout.read_ready(deploy_root, env, build_id)
    if ready is None:
        return "not ready here (deleted or redeployed meanwhile)"
    path = layout.build_dir(deploy_root, env, build_id)
    record = _record_of(path)
    if isinstance(record, str):
        return record
    if record.archive_sha256 and record.archive_sha256 != ready.artifact_sha256:
        return f"{RECORD} is of another artifact than ready.json vouches for"
    donor = Donor(env, build_id, path, record, ready.artifact_sha256)
    if not record.archive_sha256:
        index = donor.index()
        if isinstance(index, str):
            return index
    return donor


# -- planning -------------------------------------------------------------------------------------


def shared_mode(entry_mode: int) -> int:
    """The mode a shareable file is written with: the data filter's, without write bits."""
    return data_mode(entry_mode) & ~0o222


def _shareable(entry: IndexEntry) -> bool:
    return entry.type == "file" and not entry.rewritten


def _usable(path: str, entry: IndexEntry, device: int) -> bool:
    """Whether the donor's file is what its index says, cheaply: a regular, read-only file
    of the index's size on the deploy's filesystem (its bytes were verified when that build
    was deployed, and nothing writes a read-only shared file)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_size == entry.size
        and st.st_dev == device
        and stat.S_IMODE(st.st_mode) == shared_mode(entry.mode)
    )


def _link_refused(source: str, dest: Path) -> str:
    """One real link from the donor into the new build's directory: a filesystem (or a
    GPFS fileset boundary) that refuses links shows here, before any frame is skipped.
    Returns why it was refused ("" if the link was made)."""
    probe = dest / _PROBE
    probe.parent.mkdir(exist_ok=True)
    try:
        os.link(source, probe, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _LINK_REFUSED:
            name = errno.errorcode.get(exc.errno, str(exc.errno))
            return f"the filesystem refuses a link from it ({name}: {exc.strerror}): files written"
        raise
    os.unlink(probe)
    return ""


def _why_no_files(donor: Donor, wanted: dict[Key, list[str]], device: int) -> str:
    """Why none of the donor's files that this build wants could be linked ("" when it
    has none of them): called only for a donor that gave nothing, so it costs nothing
    when dedup works. A chmod on a deployed build changes the mode of every inode it
    shares, in every build sharing it, so such files are never linked again: say so."""
    index = donor.index()
    if isinstance(index, str):
        return index
    counts: dict[str, int] = {}
    example: dict[str, str] = {}
    seen: set[Key] = set()
    for entry in index.entries:  # the files `_donor_files` checked: one per key
        key = (entry.sha256, entry.size, entry.mode)
        if key not in wanted or key in seen or not _shareable(entry):
            continue
        seen.add(key)
        why = _unusable(f"{donor.path}/{entry.path}", entry, device)
        counts[why] = counts.get(why, 0) + 1
        example.setdefault(why, entry.path)
    if not counts:
        return ""
    parts = [f"{count} {why}, e.g. {example[why]}" for why, count in sorted(counts.items())]
    return f"none of the {sum(counts.values())} files wanted is usable: " + "; ".join(parts)


def _unusable(path: str, entry: IndexEntry, device: int) -> str:
    """Why `_usable` refuses the donor's file (the same checks, named)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"missing ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "no longer a regular file"
    if st.st_size != entry.size:
        return "changed size"
    if st.st_dev != device:
        return "on another filesystem"
    mode, expected = stat.S_IMODE(st.st_mode), shared_mode(entry.mode)
    if mode != expected:
        return f"with mode {mode:o} instead of read-only {expected:o} (chmod on a build sharing it)"
    return "usable now (changed while checked)"


def plan_links(
    index: ContentIndex,
    donors: Iterator[Donor],
    dest: Path,
    hold: contextlib.ExitStack,
    deploy_root: Path,
) -> LinkPlan:
    """Choose a donor file for every shareable entry that has one, reading at most
    MAX_DONORS donors; each donor used stays locked in `hold`. Whole frames first, by
    key (`DedupRecord.shared_frames`: the donor's index is not read, the new index's
    names are the donor's); single files by hash from the donor's kept index only while
    over ENOUGH of the files still lack one (another env's build, an older agent's)."""
    plan = LinkPlan(index)
    by_frame: dict[int, list[IndexEntry]] = {}
    for entry in index.entries:
        if _shareable(entry):
            by_frame.setdefault(entry.frame, []).append(entry)
    shareable = sum(map(len, by_frame.values()))
    device = os.stat(dest).st_dev
    for donor in donors if shareable else ():
        try:
            hold.enter_context(build_lock(deploy_root, donor.env, donor.build_id, wait=False))
        except LockBusy:  # being deleted or redeployed by another agent: not a donor now
            plan.unused.append((donor.name, "its build lock is held by another agent", INFO))
            continue
        if layout.read_ready(deploy_root, donor.env, donor.build_id) is None:
            plan.unused.append((donor.name, "deleted between listing and locking", INFO))
            continue
        found = _same_frames(donor, index, by_frame, plan.sources, device)
        framed = len(found)
        wanted: dict[Key, list[str]] = {}
        if shareable - len(plan.sources) - len(found) > ENOUGH * shareable:
            wanted = _wanted(by_frame, plan.sources.keys() | found.keys())
            donor_index = donor.index()
            if isinstance(donor_index, ContentIndex):
                for key, source in _donor_files(donor, donor_index, wanted, device).items():
                    for name in wanted[key]:
                        found[name] = source
        if not found:
            why = _why_no_files(donor, wanted, device) if wanted else ""
            if why:  # else it simply holds none of this build's files
                plan.unused.append((donor.name, why, WARNING))
            continue
        refused = _link_refused(next(iter(found.values())), dest)
        if refused:
            plan.unused.append((donor.name, refused, INFO))  # the fallback: by design
            continue
        plan.donors.append(donor)
        plan.sources.update(found)
        plan.by_frame += framed
        if shareable - len(plan.sources) <= ENOUGH * shareable:
            break  # what is left is new in this build (the changed packages): stop looking
    plan.skip = _skippable(index, plan.sources)
    return plan


def _same_frames(
    donor: Donor,
    index: ContentIndex,
    by_frame: dict[int, list[IndexEntry]],
    sources: dict[str, str],
    device: int,
) -> dict[str, str]:
    """Donor files by name for the shareable entries, not yet linked, of every frame
    whose key is one of the donor's shared frames: the same path in the donor, if
    usable (one `lstat` each: by threads on slow storage)."""
    keys = set(donor.record.shared_frames)
    base = str(donor.path)
    candidates = [
        (f"{base}/{entry.path}", entry)
        for number, entries in by_frame.items()
        if index.frames[number].key in keys
        for entry in entries
        if entry.path not in sources
    ]

    def check(chunk: list[tuple[str, IndexEntry]]) -> list[tuple[str, str]]:
        return [(entry.path, path) for path, entry in chunk if _usable(path, entry, device)]

    return dict(_run_all(check, candidates, _Latency()))


def _wanted(by_frame: dict[int, list[IndexEntry]], linked: set[str]) -> dict[Key, list[str]]:
    """Names by content key of the shareable entries not in `linked` (those with a source)."""
    wanted: dict[Key, list[str]] = {}
    for entries in by_frame.values():
        for entry in entries:
            if entry.path not in linked:
                wanted.setdefault((entry.sha256, entry.size, entry.mode), []).append(entry.path)
    return wanted


def _donor_files(
    donor: Donor, donor_index: ContentIndex, wanted: dict[Key, list[str]], device: int
) -> dict[Key, str]:
    """The donor's usable file for each wanted key it has (one `lstat` each: a metadata
    round trip on GPFS, made by threads there)."""
    candidates: dict[Key, tuple[str, IndexEntry]] = {}
    for entry in donor_index.entries:
        key = (entry.sha256, entry.size, entry.mode)
        if key in wanted and key not in candidates and _shareable(entry):
            candidates[key] = (f"{donor.path}/{entry.path}", entry)

    def check(chunk: list[tuple[Key, tuple[str, IndexEntry]]]) -> list[tuple[Key, str]]:
        return [(key, source) for key, (source, entry) in chunk if _usable(source, entry, device)]

    return dict(_run_all(check, list(candidates.items()), _Latency()))


def _skippable(index: ContentIndex, sources: dict[str, str]) -> frozenset[int]:
    """Frames whose every member is a linked file, a directory or a symlink."""
    makeable: dict[int, bool] = {}
    for entry in index.entries:
        ok = entry.type != "file" or entry.path in sources
        makeable[entry.frame] = makeable.get(entry.frame, True) and ok
    return frozenset(frame for frame, ok in makeable.items() if ok)


def _frames_usable(index: ContentIndex, manifest: BuildManifest) -> str | None:
    """Why the frames cannot be skipped (None if they can): they must be zstd frames of
    this very archive, tiling it."""
    if manifest.artifact.format not in ("tar.zst", "tar.zstd"):
        return f"archive format {manifest.artifact.format} has no frames to skip"
    if index.archive_sha256 != manifest.artifact.sha256:
        return "the index describes another archive"
    if sum(f.length for f in index.frames) != manifest.artifact.size:
        return "the index's frames do not cover the archive"
    return None


def prepare(
    site: SiteConfig,
    store: Store,
    manifest: BuildManifest,
    dest: Path,
    hold: contextlib.ExitStack,
    log: logging.Logger,
) -> LinkPlan | None:
    """The link plan for deploying `manifest` into the empty directory `dest`; None for a
    build without a content index (deployed in full). The donors used stay locked in
    `hold` until it is closed."""
    started = time.monotonic()
    index = store.read_index(manifest)
    if index is None:
        return None
    root = site.deploy_root
    unused: list[tuple[str, str, int]] = []

    def donors() -> Iterator[Donor]:
        for env, build_id in _candidates(root, manifest.name, manifest.build_id)[: MAX_DONORS * 2]:
            donor = _donor(root, env, build_id)
            if isinstance(donor, Donor):
                yield donor
            else:  # a build deployed in full is routine; a broken index copy is not
                level = INFO if donor.startswith(("deployed in full", "not ready")) else WARNING
                unused.append((f"{env}/{build_id}", donor, level))

    # the extraction's directories are made meanwhile (a create each: disk- or
    # latency-bound, while the plan is CPU-bound; `prepare` itself runs while the archive
    # is hashed)
    making = slowfs.POOL.get().submit(make_dirs, index, os.path.realpath(dest))
    try:
        plan = plan_links(index, _first(donors(), MAX_DONORS), dest, hold, root)
    finally:
        wait([making])  # nothing is left running into `dest`
    plan.dirs = making.result()
    for name, why, level in unused + plan.unused:
        # one line per donor passed over, so an operator sees why a deploy wrote files
        # it could have linked (a chmodded build, a lost index copy, another fileset)
        event(
            log,
            "dedup-donor-unused",
            level,
            env=manifest.name,
            build=manifest.build_id,
            donor=name,
            reason=why,
        )
    why = _frames_usable(index, manifest)
    if why is not None:
        plan.skip = frozenset()
    event(
        log,
        "dedup-plan",
        env=manifest.name,
        build=manifest.build_id,
        linked=len(plan.sources),
        by_frame=plan.by_frame,
        files=sum(1 for e in index.entries if e.type == "file"),
        skipped_frames=len(plan.skip),
        frames=len(index.frames),
        donors=",".join(d.name for d in plan.donors) or "-",
        seconds=round(time.monotonic() - started, 3),
        **({"frames_kept_because": why} if why and plan.sources else {}),
    )
    return plan


def _first(items: Iterator[Donor], count: int) -> Iterator[Donor]:
    for number, item in enumerate(items):
        if number >= count:
            return
        yield item


# -- extracting ------------------------------------------------------------------------------------


def may_skip_frames(deploy_root: Path, manifest: BuildManifest) -> bool:
    """Whether a link plan for `manifest` may skip frames: it names a content index of a
    zstd archive, and another build ready here kept its index (a donor candidate). When
    not, the deploy verifies the whole archive while the plan is made, as a full deploy
    does, instead of waiting for the plan to choose."""
    if manifest.index is None or manifest.artifact.format not in ("tar.zst", "tar.zstd"):
        return False
    return any(
        (layout.build_dir(deploy_root, env, build_id) / RECORD).exists()
        for env, build_id in _candidates(deploy_root, manifest.name, manifest.build_id)
    )


def kept_frames(plan: LinkPlan | None) -> list[tuple[int, FrameRecord]] | None:
    """The frames a deploy after `plan` decompresses, (number, record) in archive order,
    when it skips any: only these are read from the store, each checked against its record
    (`Store.open_frames`). None when it skips none: the whole archive is read and verified."""
    if plan is None or not plan.skip:
        return None
    return [(n, frame) for n, frame in enumerate(plan.index.frames) if n not in plan.skip]


class _KeptFrames:
    """The tar stream of the frames not skipped (`Store.open_frames`' reader: each frame
    checked against the index before its first byte), then the end-of-archive marker (a
    last frame skipped took it with it). A file object for the extractor's reader."""

    def __init__(self, frames: IO[bytes]) -> None:
        self._frames = frames
        self._tail = _END_OF_ARCHIVE

    def read(self, size: int = -1) -> bytes:
        data = self._frames.read(READ_CHUNK if size < 0 else size)
        if data or not size:
            return data
        tail, self._tail = self._tail, b""
        return tail


def _synthetic(entry: IndexEntry) -> TarMember:
    """The tar member an index entry stands for (of a frame not decompressed)."""
    kind = {"file": REGULAR[0], "dir": DIRECTORY, "symlink": SYMLINK}[entry.type]
    return TarMember(kind, entry.path, entry.mode, entry.size, 0.0, entry.target, 0, 0, None)


class _Placer:
    """The `extract.MemberReuse` of a deduplicated deploy (see the module doc)."""

    def __init__(self, plan: LinkPlan, build_id: str) -> None:
        self.plan = plan
        self.build_id = build_id
        self.entries = plan.index.files()
        self.readonly = {e.path for e in plan.index.entries if _shareable(e)}
        self.links = _Latency()  # the first links timed; then made here if fast, else by the pool
        self.pending: deque[Future[tuple[int, int]]] = deque()
        self.probe: list[tuple[str, str, IndexEntry]] = []  # links waiting to be timed
        self.batch: list[tuple[str, str, IndexEntry]] = []
        self.linked = self.copied = 0

    def members(self, tar: TarReader) -> Iterator[TarMember]:
        """The archive's members, with those of skipped frames put back in from the index
        where they stand in the archive (a frame never splits a member, so the position in
        the kept stream says which frame a member comes from)."""
        frames, skip = self.plan.index.frames, self.plan.skip
        ends: list[tuple[int, int]] = []  # (end in the kept stream, frame number)
        position = 0
        for number, frame in enumerate(frames):
            if number not in skip:
                position += frame.tar_length
                ends.append((position, number))
        by_frame: dict[int, list[IndexEntry]] = {}
        for entry in self.plan.index.entries:
            if entry.frame in skip:
                by_frame.setdefault(entry.frame, []).append(entry)
        waiting = deque(sorted(by_frame))
        expected = sum(1 for e in self.plan.index.entries if e.frame not in skip)
        real = kept = 0
        for member in tar.members():
            real += 1
            while kept < len(ends) and tar.consumed > ends[kept][0]:
                kept += 1
            frame = ends[kept][1] if kept < len(ends) else len(frames)
            while waiting and waiting[0] < frame:
                yield from map(_synthetic, by_frame[waiting.popleft()])
            yield member
        while waiting:
            yield from map(_synthetic, by_frame[waiting.popleft()])
        if skip and real != expected:
            raise RejectedArtifactError(
                self.build_id,
                f"the content index disagrees with the archive: {real} members in the "
                f"frames read, the index lists {expected}",
            )

    def prepare_dirs(self, root: str) -> set[str]:
        """The index's directories: made by `prepare` while the archive was hashed."""
        if not self.plan.dirs or not all(d.startswith(f"{root}/") for d in self.plan.dirs):
            self.plan.dirs = make_dirs(self.plan.index, root)
        return self.plan.dirs

    def place(self, member: TarMember, path: str) -> bool:
        source = self.plan.sources.get(member.name)
        if source is None:
            return False
        entry = self.entries[member.name]
        if (member.size, member.mode) != (entry.size, entry.mode):
            raise RejectedArtifactError(
                self.build_id,
                f"the content index disagrees with the archive at {member.name!r} (size or mode)",
            )
        if self.links.probing:  # timed a few at once (`slowfs.timed`), then decided
            self.probe.append((source, path, entry))
            if len(self.probe) + len(self.links.samples) >= self.links.calls:
                self._time_probe()
            return True
        if not self.links.slow:
            try:  # the usual case, in a line: ~100k of them in a large env
                os.link(source, path, follow_symlinks=False)
                self.linked += 1
            except OSError:  # refused or failed: again, with the fallbacks and the reasons
                self._count(self._link_all([(source, path, entry)]))
            return True
        self.batch.append((source, path, entry))
        if len(self.batch) >= LINK_BATCH:
            self._submit()
        return True

    def mode(self, member: TarMember) -> int:
        if member.name in self.readonly:
            return shared_mode(member.mode)
        return data_mode(member.mode)

    def _time_probe(self) -> None:
        for counts in self.links.run(lambda link: self._link_all([link]), self.probe):
            self._count(counts)
        self.probe = []

    def _submit(self) -> None:
        if self.batch:
            self.pending.append(slowfs.POOL.get().submit(self._link_all, self.batch))
            self.batch = []
        while len(self.pending) > 4 * slowfs.THREADS:
            self._collect(self.pending.popleft())

    def _collect(self, future: Future[tuple[int, int]]) -> None:
        self._count(future.result())

    def _count(self, done: tuple[int, int]) -> None:
        self.linked += done[0]
        self.copied += done[1]

    def drain(self) -> None:
        self._time_probe()
        self._submit()
        while self.pending:
            self._collect(self.pending.popleft())
        self.plan.linked_files, self.plan.copied_files = self.linked, self.copied

    def close(self) -> None:
        for future in self.pending:
            future.cancel()
        wait(self.pending)  # nothing is written into the directory afterwards

    def _link_all(self, batch: list[tuple[str, str, IndexEntry]]) -> tuple[int, int]:
        linked = copied = 0
        for source, path, entry in batch:
            try:
                os.link(source, path, follow_symlinks=False)
                linked += 1
            except OSError as exc:
                if exc.errno == errno.ENOENT and not os.path.lexists(source):
                    raise NodeFaultError(
                        self.build_id, "extract", f"donor file {source} vanished while linking"
                    ) from None
                if exc.errno not in _LINK_REFUSED:
                    raise
                copy_from(source, path, entry, self.build_id)
                copied += 1
        return linked, copied


def make_dirs(index: ContentIndex, root: str) -> set[str]:
    """Every directory of the index (and every parent of an entry) under the empty
    directory `root`, level by level (on GPFS each mkdir is a create, made by threads
    there; a conda env has a directory for every few files); returns them (absolute).
    No link exists yet and index names are canonical: all lie in `root`. The index was
    checked against the manifest; the archive's members are checked against it later,
    and the directory is discarded if they disagree."""
    names: set[str] = set()
    for entry in index.entries:
        if entry.type == "dir":
            names.add(entry.path)
        cut = entry.path.rfind("/")
        while cut > 0 and (parent := entry.path[:cut]) not in names:
            names.add(parent)
            cut = parent.rfind("/")
    levels: dict[int, list[str]] = {}
    for name in names:
        levels.setdefault(name.count("/"), []).append(f"{root}/{name}")
    mkdirs = _Latency()
    for depth in sorted(levels):
        _run_all(_make_dirs, levels[depth], mkdirs)
    return {f"{root}/{name}" for name in names}


def _make_dirs(paths: list[str]) -> list[str]:
    for path in paths:
        try:
            os.mkdir(path)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise
    return paths


def copy_from(source: str, path: str, entry: IndexEntry, build_id: str) -> None:
    """Make `path` a new read-only file with the donor file's bytes: a reflink where the
    filesystem shares extents (FICLONE), else a kernel copy."""
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
            raise NodeFaultError(build_id, "extract", f"donor file {source} changed")
        dst = os.open(path, _CREATE, 0o600)
        try:
            try:
                fcntl.ioctl(dst, _FICLONE, src)
            except OSError:
                _copy_bytes(src, dst, entry.size)
            os.fchmod(dst, shared_mode(entry.mode))
            os.utime(dst, ns=(st.st_mtime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_bytes(src: int, dst: int, size: int) -> None:
    offset = 0
    try:
        while offset < size:
            done = os.copy_file_range(src, dst, size - offset, offset, offset)
            if done == 0:
                break
            offset += done
    except OSError:  # no in-kernel copy between these filesystems: by hand
        os.lseek(src, offset, os.SEEK_SET)
        os.lseek(dst, offset, os.SEEK_SET)
        while chunk := os.read(src, READ_CHUNK):
            os.write(dst, chunk)


def extract(
    artifact: IO[bytes],
    dest: Path,
    plan: LinkPlan,
    *,
    fmt: str,
    build_id: str,
    max_members: int,
    max_bytes: int,
    **progress: Any,
) -> tuple[int, int]:
    """`extract.safe_extract` into `dest` after `plan`, linked files from donors. When the
    plan skips frames, `artifact` is the tar bytes of the frames it keeps
    (`Store.open_frames`, see `kept_frames`) and the skipped frames' members are made from
    the index; else it is the whole archive, in `fmt`."""
    placer = _Placer(plan, build_id)
    if plan.skip:
        source: IO[bytes] = _KeptFrames(artifact)  # type: ignore[assignment]  # read() is all it needs
        fmt = "tar"
    else:
        source = artifact
    return safe_extract(
        source,
        fmt,
        dest,
        build_id=build_id,
        max_members=max_members,
        max_bytes=max_bytes,
        reuse=placer,
        **progress,
    )


# -- before conda-unpack, and after ---------------------------------------------------------


def prefix_records(script: Path, build_id: str) -> list[str]:
    """The files conda-pack's generated bin/conda-unpack rewrites (its `_prefix_records`
    list, read without running it); [] when there is no such script (the unpack step says
    so). StageFailedError when the script cannot be read that way."""
    try:
        text = script.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise StageFailedError(build_id, "unpack", f"cannot read bin/conda-unpack: {exc}") from None
    try:
        tree = ast.parse(text)
        value = next(
            node.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_prefix_records" for t in node.targets)
        )
        records = ast.literal_eval(value)
        paths = [_canonical(record[0], "prefix record") for record in records]
    except (SyntaxError, ValueError, StopIteration, TypeError, IndexError, TarNameError) as exc:
        raise StageFailedError(
            build_id, "unpack", f"cannot read the prefix records of bin/conda-unpack: {exc}"
        ) from None
    return paths


def protect_before_unpack(prefix: Path, build_id: str, log: logging.Logger) -> set[str]:
    """Give every file conda-unpack will rewrite an inode of its own and an owner write
    bit, so it never writes into a file another build shares (it opens them `rb+`, in
    place); returns their names."""
    names = set(prefix_records(prefix / "bin" / "conda-unpack", build_id))
    for name in sorted(names):
        path = prefix / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue  # conda-unpack reports it
        if not stat.S_ISREG(st.st_mode):
            continue
        if st.st_nlink > 1:
            _make_private(path, st)
            event(log, "dedup-unshared", build=build_id, path=name)
        elif not st.st_mode & stat.S_IWUSR:
            os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IWUSR, follow_symlinks=False)
    return names


def _make_private(path: Path, st: os.stat_result) -> None:
    """Replace a linked file by a copy of its own (same bytes, writable by the owner)."""
    temp = path.with_name(f".{path.name}.nsls2-private")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst = os.open(temp, _CREATE, 0o600)
        try:
            _copy_bytes(src, dst, st.st_size)
            os.fchmod(dst, stat.S_IMODE(st.st_mode) | stat.S_IWUSR)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
    finally:
        os.close(src)
    os.replace(temp, path)


def keep(prefix: Path, plan: LinkPlan, rewritten: set[str]) -> DedupRecord:
    """Write the index copy (files conda-unpack rewrote marked so: never shared from here)
    and the dedup record into `.nsls2/`, before ready.json."""
    entries = tuple(
        msgspec.structs.replace(e, rewritten=True) if e.path in rewritten and not e.rewritten else e
        for e in plan.index.entries
    )
    kept = msgspec.structs.replace(plan.index, entries=entries)
    blob = _encode(kept)
    path = prefix / INDEX_COPY
    path.parent.mkdir(exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    with open(temp, "wb") as handle:
        handle.write(blob)
    os.replace(temp, path)
    files = [e for e in entries if e.type == "file"]
    record = DedupRecord(
        index_sha256=hashlib.sha256(blob).hexdigest(),
        files=len(files),
        bytes=sum(e.size for e in files),
        linked_files=plan.linked_files,
        linked_bytes=plan.linked_bytes if plan.copied_files == 0 else _linked_bytes(prefix, plan),
        copied_files=plan.copied_files,
        frames=len(plan.index.frames),
        skipped_frames=len(plan.skip),
        donors=tuple(d.name for d in plan.donors),
        archive_sha256=kept.archive_sha256,
        shared_frames=_shared_frames(kept),
    )
    atomic_write_json(prefix / RECORD, record.to_dict())
    INDEXES.put(prefix, kept)  # by its final path: the build was renamed into place
    return record


def _shared_frames(index: ContentIndex) -> tuple[str, ...]:
    """Keys of the frames holding files, every one of them shareable (written read-only,
    never rewritten here): what a later build may link frame by frame."""
    holds_file: set[int] = set()
    private: set[int] = set()
    for entry in index.entries:
        if entry.type == "file":
            holds_file.add(entry.frame)
            if entry.rewritten:
                private.add(entry.frame)
    return tuple(sorted({index.frames[n].key for n in holds_file - private}))


def _encode(index: ContentIndex) -> bytes:
    """The kept copy's bytes: `ContentIndex.from_bytes` reads them like the store's, but
    they are encoded by msgspec and compressed fast (the store's canonical encoding took
    1.2 s for 100k entries, a third of a linked deploy; this copy is read by agents only)."""
    return zstandard.ZstdCompressor(level=KEPT_LEVEL, write_checksum=True).compress(
        msgspec.json.encode(index)
    )


def _linked_bytes(prefix: Path, plan: LinkPlan) -> int:
    """Bytes of the files that really are links (some links were refused and copied)."""
    files = plan.index.files()
    total = 0
    for name in plan.sources:
        with contextlib.suppress(OSError):
            if os.lstat(prefix / name).st_nlink > 1:
                total += files[name].size
    return total

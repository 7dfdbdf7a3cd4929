"""Deploy one committed build: verify, extract safely, conda-unpack, smoke-test, mark ready.

Called by `reconcile.run_pass` for every committed build that is not ready here. Nothing
reaches the tar reader unchecked: the whole archive against the manifest's size and
sha256 (`Store.open_artifact`), or, for a deduplicated deploy that skips frames
(agent/dedup.py), only the frames it keeps, each against its content-index record
(`Store.open_frames`; see `_open_verified`). Each step is safe to redo: the archive is
extracted into `envs/ENV/.partial-BUILD_ID`, renamed to `envs/ENV/BUILD_ID`,
`bin/conda-unpack` runs at that final path, the smoke imports run with the env's own
python, and `.nsls2/ready.json` is written last. A failure is classified once
(`failures.classify`): a property of the artifact quarantines it (reason + what was seen
of the artifact), so the same bad artifact is never retried in a loop; a fault of this
node is retried later, with backoff.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from msgspec import UNSET

from .. import layout
from ..config import SiteConfig
from ..errors import NodeFaultError, RejectedArtifactError, StageFailedError, StoreError
from ..fsutil import LockBusy, atomic_write_json, fsync_dir
from ..records import BuildManifest, Quarantine, ReadyRecord, RecordError, isoformat, utcnow
from ..store import ArtifactMismatchError, ArtifactReader, Store
from . import dedup, failures, kernel_ceiling, trash
from .extract import safe_extract
from .locks import build_lock
from .log import event

EXTRACT_PROGRESS_SECONDS = 10.0  # a log line this often while a large env unpacks
T = TypeVar("T")


@dataclass(frozen=True)
class DeployOutcome:
    """What happened to one build in one pass."""

    env: str
    build_id: str
    result: str  # deployed | ready | quarantined | retry | waiting | skipped | busy
    reason: str = ""
    seconds: float = 0.0


# -- quarantine records -------------------------------------------------------------------


def read_quarantine(deploy_root: Path, env: str, build_id: str) -> Quarantine | None:
    """ENV/BUILD_ID's quarantine record; None if there is none or it is unreadable (an
    unreadable record quarantines nothing: the build is tried again)."""
    try:
        return layout.read_record(
            layout.quarantine_path(deploy_root, env, build_id), Quarantine.from_dict
        )
    except RecordError:
        return None


def list_quarantined(deploy_root: Path) -> list[Quarantine]:
    found = []
    for path in sorted(layout.quarantine_dir(deploy_root).glob("*/*.json")):
        record = read_quarantine(deploy_root, path.parent.name, path.stem)
        if record:
            found.append(record)
    return found


def release_quarantine(deploy_root: Path, env: str, build_id: str) -> Quarantine | None:
    """Forget ENV/BUILD_ID's quarantine (and any retry backoff) so the next pass deploys
    it again (after a failure that was not the build's after all: a fixed site, a system
    library installed); returns the record removed, None if there was none. Under the
    build lock: never while an agent is deploying that build."""
    with build_lock(deploy_root, env, build_id, wait=True):
        record = read_quarantine(deploy_root, env, build_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(layout.quarantine_path(deploy_root, env, build_id))
        failures.clear_retry(deploy_root, env, build_id)  # and no backoff left to wait out
    return record


def quarantined_for(site: SiteConfig, store: Store, manifest: BuildManifest) -> Quarantine | None:
    """The quarantine record that still applies to this exact artifact, if any."""
    record = read_quarantine(site.deploy_root, manifest.name, manifest.build_id)
    if record is None:
        return None
    seen = store.artifact_stamp(manifest)
    return (
        record if record.same_artifact(manifest.artifact.sha256, seen.size, seen.mtime_ns) else None
    )


def _quarantine(
    site: SiteConfig, store: Store, manifest: BuildManifest, stage: str, reason: str
) -> Quarantine:
    seen = store.artifact_stamp(manifest)
    record = Quarantine(
        env=manifest.name,
        build_id=manifest.build_id,
        stage=stage,
        reason=reason,
        artifact_sha256=manifest.artifact.sha256,
        artifact_size=seen.size,
        artifact_mtime_ns=seen.mtime_ns,
        time=isoformat(utcnow()),
        node=site.agent.node,
    )
    atomic_write_json(
        layout.quarantine_path(site.deploy_root, manifest.name, manifest.build_id),
        record.to_dict(),
    )
    return record


# -- verify ---------------------------------------------------------------------------------


def verify_artifact(store: Store, manifest: BuildManifest) -> None:
    """Size, then sha256, against the manifest, before anything reads the archive."""
    try:
        store.verify_build(manifest, lock=False)
    except ArtifactMismatchError as exc:
        raise RejectedArtifactError(manifest.build_id, str(exc)) from None


# -- processes --------------------------------------------------------------------------------


def env_for_prefix(prefix: Path) -> dict[str, str]:
    """The environment a deployed env's programs run with: its bin first, its CONDA_PREFIX."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    env["PATH"] = f"{prefix / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["CONDA_PREFIX"] = str(prefix)
    return env


# the env's own program cannot be started: its file is missing, not executable or not a
# program (the archive's doing)
_NOT_RUNNABLE = frozenset({errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ELOOP, errno.ENOTDIR})


def _run(
    cmd: list[str],
    prefix: Path,
    timeout: float,
    build_id: str,
    stage: str,
    extra_env: dict[str, str] | None = None,
) -> None:
    """Run `cmd` in its own process group; kill the whole group on timeout."""
    with tempfile.TemporaryDirectory(prefix="nsls2-agent-") as cwd:
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,  # an empty cwd, so nothing there shadows the env's modules
                env={**env_for_prefix(prefix), **(extra_env or {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            if exc.errno not in _NOT_RUNNABLE:
                raise  # EAGAIN, ENOMEM: this node's
            message = f"{stage}: cannot run {cmd[0]}: {exc.strerror}"
            raise StageFailedError(build_id, stage, message) from None
        try:
            output, _ = proc.communicate(timeout=timeout or None)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            # a slow node (load, GPFS) as often as a hanging build: retried with backoff
            raise NodeFaultError(
                build_id, stage, f"{stage} timed out after {timeout:g} s"
            ) from None
    if proc.returncode in (-signal.SIGTERM, -signal.SIGKILL, -signal.SIGINT):
        # killed from outside (shutdown, OOM killer): not the build's fault
        raise NodeFaultError(build_id, stage, f"{stage} was killed by signal {-proc.returncode}")
    if proc.returncode != 0:
        tail = output.decode(errors="replace").strip().splitlines()[-5:]
        raise StageFailedError(
            build_id, stage, f"{stage} failed (exit {proc.returncode}): {' | '.join(tail)}"
        )


def conda_unpack(prefix: Path, timeout: float, build_id: str) -> None:
    """Run the env's own `bin/conda-unpack` by absolute path, at the final location."""
    script = prefix / "bin" / "conda-unpack"
    if not script.is_file():
        raise StageFailedError(
            build_id, "unpack", "bin/conda-unpack is missing: not a conda-pack archive"
        )
    python = prefix / "bin" / "python"
    # conda-pack writes it with a `#!/usr/bin/env python` shebang; name the interpreter so
    # the env's python runs it whatever PATH the agent has
    cmd = [str(python), str(script)] if python.exists() else [str(script)]
    _run(cmd, prefix, timeout, build_id, "unpack")


def memory_limit_for(site: SiteConfig, manifest: BuildManifest | None) -> int | None:
    """The kernels' memory ceiling for a build: its nsls2.yaml's when it names one, else
    the site's `kernels.memory_limit`."""
    limit = manifest.kernel.memory_limit if manifest else UNSET
    return site.kernels.memory_limit if limit is UNSET else limit


def smoke_test(
    prefix: Path,
    imports: tuple[str, ...],
    timeout: float,
    build_id: str,
    memory_limit: int | None = None,
) -> None:
    """Import every smoke module with the env's own python (isolated mode: no user site),
    under the kernels' memory ceiling and thread counts (kernel_ceiling.py, as a kernel
    starts), so a build that cannot start under its ceiling never becomes latest. The
    ceiling is RLIMIT_DATA here whatever the node has: it counts more than a cgroup does
    (private memory reserved but never touched), so a build passing it passes both."""
    python = prefix / "bin" / "python"
    if not python.exists():
        raise StageFailedError(build_id, "smoke", "bin/python is missing")
    code = "\n".join(f"import {name}" for name in imports) or "pass"
    cmd = [str(python), "-I", "-c", code]
    if memory_limit:
        ceiling = str(Path(kernel_ceiling.__file__))
        cmd = [str(python), "-I", "-S", ceiling, str(memory_limit), "smoke", "--", *cmd]
    extra = {kernel_ceiling.MECHANISM_ENV: "rlimit"}
    _run(cmd, prefix, timeout, build_id, "smoke", extra)


# -- the whole step ------------------------------------------------------------------------------


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
                    trash.discard(deploy_root, env, path)
                    removed.append(path.name)
                    event(log, "leftover-removed", env=env, path=path.name)
        except LockBusy:
            continue
    return removed


def deploy_build(
    site: SiteConfig,
    store: Store,
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
            ready = layout.read_ready(root, env, build_id)
            if ready is not None and ready.vouches_for(manifest):
                return DeployOutcome(env, build_id, "ready")
            if (record := quarantined_for(site, store, manifest)) is not None:
                return DeployOutcome(env, build_id, "skipped", record.reason)
            retry = failures.read_retry(root, env, build_id)
            if retry is not None and failures.waiting(retry):
                return DeployOutcome(env, build_id, "waiting", retry.reason)
            return _deploy_locked(site, store, manifest, log)
    except LockBusy:
        event(log, "busy", env=env, build=build_id, detail="another agent is deploying it")
        return DeployOutcome(env, build_id, "busy")


def _deploy_locked(
    site: SiteConfig, store: Store, manifest: BuildManifest, log: logging.Logger
) -> DeployOutcome:
    env, build_id = manifest.name, manifest.build_id
    final = layout.build_dir(site.deploy_root, env, build_id)
    partial = layout.partial_dir(site.deploy_root, env, build_id)
    started = time.monotonic()
    marks: dict[str, float] = {"start": started}
    try:
        members, nbytes = _steps(site, store, manifest, partial, final, marks, log)
        _make_durable(manifest, final)
        marks["sync"] = time.monotonic()
        # what the build took to become usable: its bytes durable included (a full
        # deploy's hundreds of MB are flushed here, a linked deploy's links are journal)
        seconds = marks["sync"] - started
        _mark_ready(site, manifest, final, seconds)
    except Exception as exc:
        stage = _failed_stage(marks)
        failure = failures.classify(exc, stage)
        if failure is None:
            raise  # a bug of ours, never the artifact's: no quarantine
        for path in (partial, final):
            with contextlib.suppress(OSError):
                trash.discard(site.deploy_root, env, path)
        return _failed(site, store, manifest, failure, log, time.monotonic() - started)
    failures.clear_retry(site.deploy_root, env, build_id)
    steps = {f"{b}_s": marks[b] - marks[a] for a, b in zip(STEPS[:-1], STEPS[1:], strict=True)}
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


STEPS = ("start", "verify", "extract", "unpack", "smoke", "sync")


def _failed_stage(marks: dict[str, float]) -> str:
    """The first step without a completion mark is the one that failed."""
    return next((step for step in STEPS if step not in marks), "ready")


def _failed(
    site: SiteConfig,
    store: Store,
    manifest: BuildManifest,
    failure: failures.Failure,
    log: logging.Logger,
    seconds: float,
) -> DeployOutcome:
    """Quarantine the artifact, or remember a node fault for a later retry."""
    env, build_id = manifest.name, manifest.build_id
    if failure.kind == failures.ARTIFACT:
        _quarantine(site, store, manifest, failure.stage, failure.reason)
        event(
            log,
            "quarantine",
            logging.ERROR,
            env=env,
            build=build_id,
            stage=failure.stage,
            reason=failure.reason,
        )
        return DeployOutcome(env, build_id, "quarantined", failure.reason, seconds)
    retry = failures.record_node_fault(site.deploy_root, env, build_id, failure, site.agent.node)
    event(
        log,
        "retry-later",
        logging.WARNING,
        env=env,
        build=build_id,
        stage=failure.stage,
        reason=failure.reason,
        attempt=retry.attempts,
        next_try=retry.next_try,
    )
    return DeployOutcome(env, build_id, "retry", failure.reason, seconds)


def _steps(
    site: SiteConfig,
    store: Store,
    manifest: BuildManifest,
    partial: Path,
    final: Path,
    marks: dict[str, float],
    log: logging.Logger,
) -> tuple[int, int]:
    """Verify, extract to `partial`, rename to `final`, conda-unpack, smoke-test; each
    completed step leaves its time in `marks`. Returns (members, bytes) extracted."""
    env, build_id = manifest.name, manifest.build_id
    # leftovers of a killed pass: redo from scratch (a dir without ready.json is incomplete)
    trash.discard(site.deploy_root, env, partial)
    trash.discard(site.deploy_root, env, final)
    partial.mkdir(parents=True)
    with contextlib.ExitStack() as donors:  # the builds linked from, locked until renamed
        # the link plan (index parses, donor checks: Python) is made in a thread; it reads
        # no archive byte: into `partial` it links one probe and makes the directories of
        # the index (checked against the manifest by the store), so it cannot act on
        # unverified bytes
        planning = _in_thread(dedup.prepare, site, store, manifest, partial, donors, log)
        try:
            with contextlib.ExitStack() as reading:
                plan, artifact, verified = _open_verified(
                    site, store, manifest, planning, partial.parent, reading
                )
                marks["verify"] = time.monotonic()
                event(log, "extract", env=env, build=build_id, node=site.agent.node)
                try:
                    members, nbytes = _extract(site, manifest, artifact, partial, log, plan)
                except RejectedArtifactError:
                    artifact.finish()  # bytes other than the manifest's are the better reason
                    raise
                artifact.finish()  # nothing extracted is trusted before every byte matched
        except ArtifactMismatchError as exc:
            raise StageFailedError(build_id, "verify", str(exc)) from None
        except StoreError as exc:  # the store unreachable mid-stream: this node's, retried
            raise NodeFaultError(build_id, "extract", str(exc)) from None
        finally:
            # a hash that failed first waits for the plan: its donor locks are released
            # with `donors`, and nothing touches `partial` after it is discarded
            futures.wait([planning])
        event(log, "verified", env=env, build=build_id, **verified)
        os.rename(partial, final)
        fsync_dir(final.parent)
    marks["extract"] = time.monotonic()
    # conda-unpack rewrites files in place: never one another build shares
    rewritten = dedup.protect_before_unpack(final, build_id, log) if plan else set()
    # a later deploy may link from this one: its index copy is encoded and written while
    # conda-unpack and the smoke test run (both wait on a child process); before ready.json
    keeping = _in_thread(dedup.keep, final, plan, rewritten) if plan is not None else None
    try:
        layout.test_pause("unpack")
        conda_unpack(final, site.agent.smoke_timeout_seconds, build_id)
        marks["unpack"] = time.monotonic()
        layout.test_pause("smoke")
        limit = memory_limit_for(site, manifest)
        smoke_test(final, manifest.smoke, site.agent.smoke_timeout_seconds, build_id, limit)
        marks["smoke"] = time.monotonic()
    finally:
        if keeping is not None:  # never left writing into a build being discarded
            futures.wait([keeping])
    if keeping is not None:
        record = keeping.result()
        event(
            log,
            "dedup",
            env=env,
            build=build_id,
            linked_files=record.linked_files,
            copied_files=record.copied_files,
            added_mb=round(record.added_bytes / 1e6, 1),
            skipped_frames=record.skipped_frames,
        )
    return members, nbytes


def _open_verified(
    site: SiteConfig,
    store: Store,
    manifest: BuildManifest,
    planning: futures.Future[dedup.LinkPlan | None],
    scratch: Path,
    reading: contextlib.ExitStack,
) -> tuple[dedup.LinkPlan | None, ArtifactReader, dict[str, Any]]:
    """The link plan, what to extract (opened in `reading`) and what was verified (the
    `verified` event's fields). Nothing reaches the tar reader unchecked either way:

    - a plan that skips frames: only the frames it keeps are read from the store, each
      checked against its content-index record (sha256 of its tar bytes, their length)
      before its first byte is handed out (`Store.open_frames`); the archive's own sha256
      is not computed (that alone read the whole archive to use a few frames of it);
    - else the whole archive, size and sha256 against the manifest (`Store.open_artifact`:
      hashed in place, or from S3 spooled next to the env and hashed) before its first
      byte, hashed while the plan is made when no frame can be skipped anyway."""
    size = manifest.artifact.size
    whole = {"sha256": manifest.artifact.sha256, "what": "archive", "bytes_read": size}
    if not dedup.may_skip_frames(site.deploy_root, manifest):
        artifact = reading.enter_context(store.open_artifact(manifest, scratch=scratch))
        plan = planning.result()
        if plan is not None:
            plan.skip = frozenset()  # (frames of dirs and symlinks only) read: it is all here
        return plan, artifact, whole
    plan = planning.result()
    kept = dedup.kept_frames(plan)
    if kept is None:
        return plan, reading.enter_context(store.open_artifact(manifest, scratch=scratch)), whole
    frames = reading.enter_context(store.open_frames(manifest, kept, scratch=scratch))
    assert plan is not None
    verified = {
        "what": "frames",
        "frames_read": len(kept),
        "frames": len(plan.index.frames),
        "bytes_read": frames.bytes_read,
        "archive_bytes": size,
    }
    return plan, frames, verified


def _in_thread(work: Callable[..., T], *args: Any) -> futures.Future[T]:
    """`work(*args)` started in a thread of its own; its result (or exception) in the
    future returned."""
    future: futures.Future[T] = futures.Future()

    def run() -> None:
        try:
            future.set_result(work(*args))
        except BaseException as exc:  # handed to the waiting thread, raised there
            future.set_exception(exc)

    threading.Thread(target=run, name=f"deploy-{work.__name__}", daemon=True).start()
    return future


def _extract(
    site: SiteConfig,
    manifest: BuildManifest,
    artifact: ArtifactReader,
    partial: Path,
    log: logging.Logger,
    plan: dedup.LinkPlan | None = None,
) -> tuple[int, int]:
    env, build_id = manifest.name, manifest.build_id
    limits: dict[str, Any] = {
        "build_id": build_id,
        "max_members": site.agent.max_members,
        "max_bytes": site.agent.max_bytes,
        "progress": lambda members, nbytes: event(
            log, "extract-progress", env=env, build=build_id, members=members, mb=nbytes // 10**6
        ),
        "progress_seconds": EXTRACT_PROGRESS_SECONDS,
    }
    # read() is all the extractor uses of the artifact
    if plan is not None:
        return dedup.extract(artifact, partial, plan, fmt=manifest.artifact.format, **limits)  # type: ignore[arg-type]
    return safe_extract(artifact, manifest.artifact.format, partial, **limits)  # type: ignore[arg-type]


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding `path` (syncfs(2); all filesystems where unavailable).

    Extraction does not fsync file by file (neither does tar); one syncfs before the
    ready marker makes a node crash unable to leave a ready build with lost contents."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)


def _make_durable(manifest: BuildManifest, final: Path) -> None:
    """A local copy of the manifest, then every file of the build flushed: the files must
    be durable before the marker that vouches for them."""
    atomic_write_json(final / layout.LOCAL_MANIFEST, manifest.to_dict())
    _syncfs(final)


def _mark_ready(site: SiteConfig, manifest: BuildManifest, final: Path, seconds: float) -> None:
    """`.nsls2/ready.json`: the done marker, last (after `_make_durable`)."""
    ready = ReadyRecord(
        env=manifest.name,
        build_id=manifest.build_id,
        created=manifest.created,
        deployed=isoformat(utcnow()),
        node=site.agent.node,
        artifact_sha256=manifest.artifact.sha256,
        smoke=manifest.smoke,
        seconds=round(seconds, 3),
    )
    atomic_write_json(final / layout.READY, ready.to_dict())

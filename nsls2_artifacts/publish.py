"""Publish: manifest -> solve -> install -> pack -> store, as one crash-safe build.

Called by `nsls2-artifacts publish` (and through it by the hook). The order keeps bad input
away from the store: the manifest is validated and solved before anything is written. The
build is then installed into a local scratch prefix, packed straight into a staging
directory the store hands out (`Store.staging_dir`), and committed by `Store.commit_build`,
which writes `manifest.json` last. A publish killed at any point leaves only uncommitted
leftovers (invisible to readers), which the next publish of the same env removes under
the lock (`Store.clean_uncommitted`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import platform as host_platform_module
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from hashlib import sha256
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, TypeVar

from msgspec import UNSET

from . import install as installer
from . import pack as packer
from . import solve as solver
from .config import SiteConfig
from .contentindex import write_index
from .errors import ArtifactsError, PromoteRefusedError, StoreError
from .fsutil import pid_alive
from .manifest import EnvManifest, load_manifest, logo_format
from .names import env_name_problem, label_problem
from .records import (
    ArtifactInfo,
    BuildManifest,
    KernelExtras,
    KernelLogo,
    LockInfo,
    LtsRecord,
    PublishLine,
    PublishStatus,
    isoformat,
    make_build_id,
    utcnow,
)
from .rollout import build_failures, read_nodes, reason_gist
from .store import Store, open_store

LOCK_FILE = "pixi.lock"
PAUSE_ENV = "NSLS2_TEST_PAUSE_AT"  # tests: stop at a named point so they can kill -9 there
T = TypeVar("T")


class Reporter(Protocol):
    """Progress sink for the stages: solve, download, install, pypi, pack, upload."""

    def start(self, stage: str, total: int = 0) -> None: ...
    def advance(self, stage: str, done: int, total: int) -> None: ...
    def finish(self, stage: str, detail: str = "") -> None: ...
    def note(self, message: str) -> None: ...


class SilentReporter:
    def start(self, stage: str, total: int = 0) -> None:
        pass

    def advance(self, stage: str, done: int, total: int) -> None:
        pass

    def finish(self, stage: str, detail: str = "") -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class PublishResult:
    env: str
    build_id: str
    status: PublishStatus
    size: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    manifest: BuildManifest | None = None
    lts: str | None = None

    def summary(self) -> str:
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
        if self.status == "unchanged":
            return (
                f"{self.env}: unchanged: the lock equals the newest build {self.build_id}; "
                f"nothing published ({self.seconds:.1f}s)"
                + (f"; LTS {self.lts} -> {self.build_id}" if self.lts else "")
            )
        return (
            f"{self.env}: published {self.build_id}, {self.size / 1e6:.1f} MB "
            f"({steps}; total {self.seconds:.1f}s)" + (f"; LTS {self.lts}" if self.lts else "")
        )

    def to_json(self) -> dict[str, Any]:
        """What `publish --json` prints (`PublishLine`, read back by the hook)."""
        seconds = round(self.seconds, 3)
        return PublishLine(self.env, self.build_id, self.status, self.size, seconds).to_dict()


def publish(
    site: SiteConfig,
    env: str,
    *,
    lts: str | None = None,
    locked: bool = False,
    fmt: str = "tar.zst",
    reporter: Reporter | None = None,
    cache_dir: str | Path | None = None,
) -> PublishResult:
    """Build `env` from `site.manifests/env` and commit it to the store (see module doc)."""
    report = reporter or SilentReporter()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    fmt = packer.normalise_format(fmt)
    if lts is not None:
        _check_label(lts)
    manifest = load_manifest(site.manifests, env)
    cache = Path(cache_dir) if cache_dir else solver.default_cache_dir(site)

    with _stage(report, timings, "solve"):
        if locked:
            solution = solver.load_locked(manifest, site)
        else:
            solution = solver.solve(manifest, site, cache_dir=cache)
    report.note(f"{len(solution.records)} conda packages for {solution.platform}")
    if not locked and manifest.lock_path.is_file():
        report.note(f"solved afresh; {manifest.lock_path} is used only with --locked")
    _pause("solve")

    store = open_store(site)
    set_aside: list[Path] = []  # scratch prefixes renamed under the lock, deleted after it
    try:
        with store.publish_lock(env):
            for leftover in store.clean_uncommitted(env):
                report.note(f"removed the leftover of an interrupted publish: {leftover}")
            with _scratch(cache, site, env, set_aside) as scratch:
                lock_path = scratch / LOCK_FILE
                lock_sha = solver.write_lock(solution, lock_path)
                # Without PyPI dependencies the lock is final now: skip the install if unchanged.
                if not manifest.pypi_dependencies and (same := _unchanged(store, env, lock_sha)):
                    return _finish_unchanged(site, store, env, same, lts, started, timings)
                prefix = scratch / "prefix"
                _install(solution, manifest, prefix, cache, report, timings)
                if manifest.pypi_dependencies:
                    lock_sha = solver.write_lock(solution, lock_path)  # now with uv's packages
                    if same := _unchanged(store, env, lock_sha):
                        return _finish_unchanged(site, store, env, same, lts, started, timings)
                with _stage(report, timings, "bytecode"):
                    pycs = installer.compile_bytecode(prefix, cache, packer.source_date_epoch())
                report.note(
                    f"bytecode: {pycs.compiled} compiled, {pycs.reused} from the cache, "
                    f"{pycs.skipped} sources naming the prefix left to python"
                )
                record = _pack_and_commit(
                    store, manifest, solution, prefix, lock_path, lock_sha, fmt, report, timings
                )
            if lts:
                promote(site, env, record.build_id, lts)
    finally:
        _pause("cleanup")
        _remove_in_background(set_aside)

    return PublishResult(
        env=env,
        build_id=record.build_id,
        status="published",
        size=record.artifact.size,
        seconds=time.perf_counter() - started,
        timings=timings,
        manifest=record,
        lts=lts,
    )


def promote(
    site: SiteConfig, env: str, build_id: str, label: str, *, allow_failed: bool = False
) -> LtsRecord:
    """Mark the committed build `env/build_id` as LTS release `label` (no rebuild).

    A build the nodes report as failed (quarantined, or failing a node's import check) is
    refused with `PromoteRefusedError` unless `allow_failed`: an LTS label is what old
    notebooks start for years, so a broken one must be a decision, not a slip."""
    _check_label(label)
    if problem := env_name_problem(env):  # a store env from before the rule: no LTS kernel
        raise ArtifactsError(problem)
    store = open_store(site)
    store.manifest(env, build_id)  # raises StoreError naming the build if it is not committed
    if not allow_failed:
        nodes, _error = read_nodes(store, site.agent.node_ttl_seconds)
        if failures := build_failures(nodes, env, build_id):
            gists = {node: reason_gist(reason) for node, reason in failures.items()}
            raise PromoteRefusedError(env, build_id, gists)
    record = LtsRecord(env=env, label=label, build_id=build_id, promoted=isoformat(utcnow()))
    store.set_lts(record)
    return record


def builder_info() -> dict[str, Any]:
    """Where and with what a build was made (recorded in manifest.json)."""
    versions = {"python": host_platform_module.python_version()}
    for dist in ("nsls2-artifacts", "py-rattler", "conda-pack", "zstandard", "uv"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return {
        "host": socket.gethostname(),
        "user": _user(),
        "tool": "nsls2-artifacts publish",
        "versions": versions,
    }


def source_info(manifest: EnvManifest, *, locked: bool) -> dict[str, Any]:
    """What the build was made from: manifest hash and, if the manifests are in git, the commit."""
    info: dict[str, Any] = {
        "manifest_sha256": manifest.source_sha256,
        "manifest_dir": str(manifest.directory),
        "locked": locked,
        "git_commit": None,
    }
    git = shutil.which("git")
    if git:
        head = subprocess.run(
            [git, "-C", str(manifest.directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
        if head.returncode == 0:
            info["git_commit"] = head.stdout.strip()
            dirty = subprocess.run(
                [git, "-C", str(manifest.directory), "status", "--porcelain", "--", "."],
                capture_output=True,
                text=True,
                check=False,
            )
            info["git_dirty"] = bool(dirty.stdout.strip())
    return info


# -- steps -----------------------------------------------------------------------------------


def _install(
    solution: solver.Solution,
    manifest: EnvManifest,
    prefix: Path,
    cache: Path,
    report: Reporter,
    timings: dict[str, float],
) -> None:
    _pause("install")
    with _stage(report, timings, "install", total=len(solution.records)):
        report.start("download", len(solution.records))

        def forward(stage: str, done: int, total: int) -> None:
            report.advance(stage, done, total)

        installer.install(solution, prefix, cache, progress=forward)
        report.finish("download")
        # rattler tags its cache directories; an unowned tag in the env is noise
        with contextlib.suppress(FileNotFoundError):
            (prefix / "CACHEDIR.TAG").unlink()
    if manifest.pypi_dependencies or solution.pypi:
        with _stage(report, timings, "pypi"):
            solution.pypi = installer.install_pypi(
                prefix,
                list(manifest.pypi_dependencies.values()),
                pins=solution.pypi if solution.locked else None,
                progress=forward,
            )


def _pack_and_commit(
    store: Store,
    manifest: EnvManifest,
    solution: solver.Solution,
    prefix: Path,
    lock_path: Path,
    lock_sha: str,
    fmt: str,
    report: Reporter,
    timings: dict[str, float],
) -> BuildManifest:
    """Pack straight into the store's staging dir, then commit it."""
    created = utcnow()
    build_id = make_build_id(created, lock_sha)
    staging = store.staging_dir(manifest.name, build_id)
    packed = _pack(store, manifest.name, prefix, staging, fmt, report, timings)
    with _store_errors(staging):
        shutil.copyfile(lock_path, staging / LOCK_FILE)
        index = write_index(staging, packed.index) if packed.index else None
    record = BuildManifest(
        name=manifest.name,
        build_id=build_id,
        created=isoformat(created),
        platform=solution.platform,
        display_name=manifest.display_name,
        smoke=manifest.smoke,
        artifact=ArtifactInfo(
            file=packed.path.name, sha256=packed.sha256, size=packed.size, format=fmt
        ),
        lock=LockInfo(file=LOCK_FILE, sha256=lock_sha),
        packages=solution.packages,
        builder=builder_info(),
        source=source_info(manifest, locked=solution.locked),
        kernel=kernel_extras(manifest),
        index=index,
    )
    _pause("commit")
    with _stage(report, timings, "upload", record.artifact.size):
        store.commit_build(
            staging, record, progress=lambda done, total: report.advance("upload", done, total)
        )
    return record


def kernel_extras(manifest: EnvManifest) -> KernelExtras:
    """What nsls2.yaml says about the kernels, carried in manifest.json (logo included)."""
    logo = (
        KernelLogo(
            logo_format(manifest.logo), base64.b64encode(manifest.logo.read_bytes()).decode()
        )
        if manifest.logo
        else UNSET
    )
    return KernelExtras(
        beamlines=manifest.beamlines,
        memory_limit=manifest.memory_limit if manifest.memory_limit_set else UNSET,
        logo=logo,
    )


def _pack(
    store: Store,
    env: str,
    prefix: Path,
    staging: Path,
    fmt: str,
    report: Reporter,
    timings: dict[str, float],
) -> packer.PackResult:
    pause_at_half = os.environ.get(PAUSE_ENV) == "pack"

    def progress(done: int, total: int) -> None:
        report.advance("pack", done, total)
        if pause_at_half and done >= total // 2:
            _pause("pack")  # half an archive is on disk in the staging directory

    output = staging / packer.archive_name(fmt)
    with _stage(report, timings, "pack"):
        try:
            result = _incremental_pack(store, env, prefix, output, fmt, progress)
        except (StoreError, OSError, packer.PreviousArchiveError) as exc:  # the previous build
            report.note(f"the previous build cannot be reused ({exc}); packing in full")
            result = packer.pack(prefix, output, fmt=fmt, progress=progress)
    reused = (
        f", {result.reused_frames} of {len(result.index.frames)} frames reused"
        if (result.index and result.reused_frames)
        else ""
    )
    report.note(
        f"packed {result.files} files into {result.path.name}: {result.size / 1e6:.1f} MB" + reused
    )
    return result


def _incremental_pack(
    store: Store, env: str, prefix: Path, output: Path, fmt: str, progress: packer.ProgressFn
) -> packer.PackResult:
    """Pack reusing the frames of the newest committed build that has a content index and
    the same format (a full pack when there is none). Its archive is checked (size + sha256
    against its manifest) before its first byte is used, on a worker thread so that check
    runs beside the listing of the env: a local file by `pack.checked_archive`, which keeps
    the hash states the new archive's hash goes on from, else the store's verified reader;
    `finish()` before the result is used. StoreError (or OSError reading it,
    PreviousArchiveError) when it or its index is wrong."""
    newest = next(
        (m for m in reversed(store.builds(env)) if m.index and m.artifact.format == fmt), None
    )
    if newest is None or fmt != "tar.zst":
        return packer.pack(prefix, output, fmt=fmt, progress=progress)
    index = store.read_index(newest)
    if index is None or index.archive_sha256 != newest.artifact.sha256:
        raise StoreError(f"{env}/{newest.build_id}: its index names another archive")
    local = store.local_artifact(newest)
    opening = (  # a local file: checked here, keeping the hash states (one pass, not two)
        packer.checked_archive(local, newest.artifact.size, newest.artifact.sha256, index)
        if local is not None
        else store.open_artifact(newest)
    )
    with opened_in_background(opening) as reader:
        previous = packer.PreviousPack(None, index, opener=reader)
        result = packer.pack(prefix, output, fmt=fmt, progress=progress, previous=previous)
        if result.reused_frames:
            reader().finish()  # every byte reused matched that build's manifest
    return result


@contextlib.contextmanager
def opened_in_background(opening: AbstractContextManager[T]) -> Iterator[Callable[[], T]]:
    """Enter `opening` on a worker thread at once; the body gets a function that waits
    for what it returns (or raises what it raised). On the way out it waits for the
    worker and exits `opening` if it was entered, whatever the body did."""
    with ThreadPoolExecutor(1, thread_name_prefix="open-previous") as pool:
        entering = pool.submit(opening.__enter__)
        try:
            yield entering.result
        finally:
            if entering.exception() is None:  # waits; None: entered, so it must be exited
                opening.__exit__(*sys.exc_info())


def _unchanged(store: Store, env: str, lock_sha: str) -> str | None:
    """The newest committed build's id if its lock hash equals `lock_sha`."""
    builds = store.builds(env)
    if builds and builds[-1].lock.sha256 == lock_sha:
        return builds[-1].build_id
    return None


def _finish_unchanged(
    site: SiteConfig,
    store: Store,
    env: str,
    build_id: str,
    lts: str | None,
    started: float,
    timings: dict[str, float],
) -> PublishResult:
    """Nothing to publish; an `--lts` label still goes to the (identical) newest build."""
    newest = store.manifest(env, build_id)
    if lts:
        promote(site, env, build_id, lts)
    return PublishResult(
        env=env,
        build_id=build_id,
        status="unchanged",
        size=newest.artifact.size,
        seconds=time.perf_counter() - started,
        timings=timings,
        manifest=newest,
        lts=lts,
    )


def _check_label(label: str) -> None:
    if problem := label_problem(label):
        raise ArtifactsError(problem)


@contextlib.contextmanager
def _scratch(cache: Path, site: SiteConfig, env: str, set_aside: list[Path]) -> Iterator[Path]:
    """A local scratch directory for the prefix, next to the package cache (hard links).

    Named per store and env, the same for every build (callers hold the env's publish
    lock, so no other publish uses it): files that name their prefix then pack to the
    same bytes in every build. Leftovers of killed publishes are removed first (also the
    per-pid names older versions used, when that pid is dead). Afterwards it is renamed
    to a per-pid name and appended to `set_aside`: deleting a large prefix takes 9-20 s
    (110k files), which the caller spends after releasing the env's lock.
    """
    tag = sha256(str(site.store).encode()).hexdigest()[:8]
    root = cache / "scratch"
    root.mkdir(parents=True, exist_ok=True)
    for entry in root.glob(f"{env}-{tag}-*"):
        pid = entry.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
    path = root / f"{env}-{tag}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    try:
        yield path
    finally:
        aside = root / f"{env}-{tag}-{os.getpid()}"
        try:
            os.rename(path, aside)
            set_aside.append(aside)
        except OSError:  # gone already, or a leftover of this pid in the way: here and now
            shutil.rmtree(path, ignore_errors=True)


def _remove_in_background(paths: list[Path]) -> None:
    """Delete the set-aside scratch prefixes in a detached `rm -rf`: a build's result is
    reported (and the hook's request ends) without waiting for 100k unlinks. Its own
    session, so a hook stopping its publish's session leaves it running; if it dies,
    the next publish of the env removes what is left (its pid in the name is dead)."""
    for path in paths:
        try:
            subprocess.Popen(
                ["rm", "-rf", "--", str(path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:  # no rm here: in this process
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _store_errors(path: Path) -> Iterator[None]:
    """A failing store write (full, read-only, not a directory) as a StoreError naming it."""
    try:
        yield
    except OSError as exc:
        raise StoreError(f"cannot write to the store at {path}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _stage(
    report: Reporter, timings: dict[str, float], name: str, total: int = 0
) -> Iterator[None]:
    report.start(name, total)
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    report.finish(name, f"{timings[name]:.1f}s")


def _pause(point: str) -> None:
    """Test hook: block at `point` so a test can SIGKILL the publish exactly there."""
    if os.environ.get(PAUSE_ENV) == point:
        sys.stderr.write(f"paused at {point}\n")
        sys.stderr.flush()
        time.sleep(3600)


def _user() -> str:
    with contextlib.suppress(Exception):
        import getpass

        return getpass.getuser()
    return ""


__all__ = ["PublishResult", "Reporter", "SilentReporter", "promote", "publish"]

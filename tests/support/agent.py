"""Helpers for the agent tests: hand-made conda-pack-like archives committed to a store.

A "fake env" is a tiny prefix whose `bin/python` is a shell wrapper around the test
interpreter (so smoke imports and ipykernel work) and whose `bin/conda-unpack` is a
python script that appends a line to `.unpacked` (so tests can count unpacks).
Archives are written with `tarfile` directly, so tests can craft hostile members.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import zstandard

from nsls2_artifacts.agent.log import setup_logging
from nsls2_artifacts.agent.observe import node_platform
from nsls2_artifacts.agent.reconcile import PassResult, run_pass
from nsls2_artifacts.config import SiteConfig
from nsls2_artifacts.contentindex import ContentIndex, write_index
from nsls2_artifacts.fsutil import atomic_write_json
from nsls2_artifacts.records import (
    ArtifactInfo,
    BuildManifest,
    KernelExtras,
    LockInfo,
    PackageRef,
    isoformat,
    make_build_id,
)
from nsls2_artifacts.store import Store, open_store
from support.cli import CLI, run_cli
from support.sites import merged, write_site_config

# recent, so retention's grace period (when it runs in the pass) keeps every test build
T0 = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)

UNPACK_SCRIPT = """\
import os
prefix = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(prefix, ".unpacked"), "a") as handle:
    handle.write(prefix + "\\n")
"""


def write_site(root: Path, **overrides: Any) -> tuple[Path, SiteConfig]:
    """A site config under `root` with its own store and deploy root (no channel needed)."""
    base: dict[str, Any] = {
        "store": "./store",
        "deploy_root": "./deploy",
        "agent": {"poll_seconds": 1, "node": "test-node", "smoke_timeout_seconds": 60},
        "beamlines": {"csx": {"uri": "http://127.0.0.1:9/api", "path": ["csx", "raw"]}},
    }
    return write_site_config(root, merged(base, overrides))


def member(
    name: str, data: bytes = b"", *, mode: int = 0o644, **attrs: Any
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(T0.timestamp())
    for key, value in attrs.items():
        setattr(info, key, value)
    if info.type != tarfile.REGTYPE:
        info.size = 0
        data = b""
    return info, data


def fake_env_members(
    tag: str = "a", python: str = sys.executable
) -> list[tuple[tarfile.TarInfo, bytes]]:
    wrapper = f'#!/bin/sh\nexec {python} "$@"\n'.encode()
    return [
        member("bin/python", wrapper, mode=0o755),
        member("bin/python3", type=tarfile.SYMTYPE, linkname="python"),
        member("bin/conda-unpack", UNPACK_SCRIPT.encode(), mode=0o755),
        member("lib/tag.txt", tag.encode()),
        member("lib/tag-link.txt", type=tarfile.LNKTYPE, linkname="lib/tag.txt"),
        member("share/doc/readme.txt", b"fake env for tests\n"),
    ]


def tar_bytes(members: Iterable[tuple[tarfile.TarInfo, bytes]], fmt: str = "tar.zst") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    if fmt == "tar.zst":
        return zstandard.ZstdCompressor().compress(raw.getvalue())
    if fmt == "tar.gz":
        import gzip

        return gzip.compress(raw.getvalue())
    return raw.getvalue()


def commit_build(
    store: Path,
    env: str,
    archive: bytes,
    *,
    created: datetime | None = None,
    fmt: str = "tar.zst",
    smoke: tuple[str, ...] = ("json",),
    display_name: str = "NSLS-II test",
    manifest_sha256: str | None = None,
    manifest_size: int | None = None,
    lts: str | None = None,
    platform: str | None = None,
    kernel: KernelExtras | None = None,
    packages: tuple[PackageRef, ...] = (PackageRef("python", "3.11.7", "fake_0", "conda-forge"),),
    index: ContentIndex | None = None,
) -> BuildManifest:
    """Write STORE/ENV/BUILD_ID/{env.FMT, pixi.lock, [index.json.zst], manifest.json}
    (manifest last)."""
    created = created or T0
    _no_tie(store, env, created)
    lock = (
        f"# lock for {env} {created.isoformat()} {hashlib.sha256(archive).hexdigest()}\n".encode()
    )
    lock_sha = hashlib.sha256(lock).hexdigest()
    build_id = make_build_id(created, lock_sha)
    directory = store / env / build_id
    directory.mkdir(parents=True)
    (directory / f"env.{fmt}").write_bytes(archive)
    (directory / "pixi.lock").write_bytes(lock)
    index_info = write_index(directory, index) if index is not None else None
    manifest = BuildManifest(
        name=env,
        build_id=build_id,
        created=isoformat(created),
        platform=platform or node_platform(),
        display_name=display_name,
        smoke=smoke,
        artifact=ArtifactInfo(
            file=f"env.{fmt}",
            sha256=manifest_sha256 or hashlib.sha256(archive).hexdigest(),
            size=len(archive) if manifest_size is None else manifest_size,
            format=fmt,
        ),
        lock=LockInfo(file="pixi.lock", sha256=lock_sha),
        packages=packages,
        builder={"host": "test"},
        source={"manifest_sha256": "0" * 64},
        kernel=kernel or KernelExtras(),
        index=index_info,
    )
    atomic_write_json(directory / "manifest.json", manifest.to_dict())
    if lts:
        atomic_write_json(
            store / env / "lts" / f"{lts}.json",
            {"build_id": build_id, "promoted": isoformat(created)},
        )
    return manifest


def _no_tie(store: Path, env: str, created: datetime) -> None:
    """Refuse a second build of `env` created at the same moment as one in `store`: the
    agent takes the newest by (created, build id), so a tie is decided by the build id's
    hash, which changes with T0 every hour: a test relying on its order would pass or fail
    by the hour (test_dedup's nightly did, until its builds got distinct hours)."""
    stamp = isoformat(created)
    for path in (store / env).glob("*/manifest.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a test's deliberately broken manifest: not a build
        if isinstance(data, dict) and data.get("created") == stamp:
            raise ValueError(
                f"{env}/{path.parent.name} is already created at {stamp}: give each "
                "build of an env its own time (hours=...), or the agent's order of "
                "the two depends on their hashes"
            )


def commit_fake(
    site: SiteConfig,
    env: str = "demo",
    tag: str = "a",
    hours: int = 0,
    extra: Iterable[tuple[tarfile.TarInfo, bytes]] = (),
    **kw: Any,
) -> BuildManifest:
    """Commit a good fake build created `hours` after T0 (plus `extra` archive members)."""
    members = [*fake_env_members(tag), *extra]
    return commit_build(
        site.store, env, tar_bytes(members), created=T0 + timedelta(hours=hours), **kw
    )


def promote_fake(site: SiteConfig, env: str, label: str, build_id: str, hours: float) -> None:
    """Write STORE/ENV/lts/LABEL.json naming `build_id`, promoted `hours` after T0, by hand
    (a filesystem store; no check of the build or label, as `promote` would make)."""
    promoted = isoformat(T0 + timedelta(hours=hours))
    atomic_write_json(
        site.store / env / "lts" / f"{label}.json", {"build_id": build_id, "promoted": promoted}
    )


def sizes_and_modes(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its lstat size and mode (no content, no mtime): proves a
    step created, removed, resized or chmod'ed nothing there."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            found[os.path.relpath(path, root)] = (
                st.st_size if not os.path.isdir(path) else 0,
                st.st_mode,
            )
    return found


def agent_pass(site: SiteConfig, store: Store | None = None) -> PassResult:
    """One agent pass (`run_pass`) in this process on `site`'s store, or on `store`."""
    return agent_pass_log(site, store)[0]


def agent_pass_log(site: SiteConfig, store: Store | None = None) -> tuple[PassResult, str]:
    """`agent_pass`, and the log lines it wrote."""
    stream = io.StringIO()
    result = run_pass(site, store or open_store(site), setup_logging(logging.INFO, stream))
    return result, stream.getvalue()


def agent_once(config: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`agent --once` as a process; it must succeed."""
    result = run_cli(config, "agent", "--once", check=False, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def start_agent(
    config: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("NSLS2_ARTIFACTS_CONFIG", None)
    stderr = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [*CLI, "agent", "--config", str(config), *args],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=full_env,
    )


def events(log_text: str, name: str) -> list[dict[str, str]]:
    from nsls2_artifacts.agent.log import parse_line

    return [f for line in log_text.splitlines() if (f := parse_line(line)).get("event") == name]


# run by a small fresh python, so the agent's peak is not the test process's inherited one
# (Linux carries the RSS high-water mark of the forked image across exec)
_MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, _, usage = os.wait4(proc.pid, 0)
print(usage.ru_maxrss * 1024)
"""


def agent_peak_rss(config: Path) -> int:
    """Peak RSS (bytes) of one `agent --once` (and the programs it waited for)."""
    env = {k: v for k, v in os.environ.items() if k != "NSLS2_ARTIFACTS_CONFIG"}
    measured = subprocess.run(
        [sys.executable, "-c", _MEASURE, *CLI, "agent", "--config", str(config), "--once"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=600,
    )
    return int(measured.stdout)

"""Test helpers for retention, nodes and procscan: deploy roots made of plain directories.

A "deployed build" here is a directory tree with what a process can use (a copy of
/bin/sleep, a shared library, a data file) and `.nsls2/ready.json`, plus a committed
manifest in the store, so retention runs against real directories and real processes
without building conda environments.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from nsls2_artifacts.config import SiteConfig
from nsls2_artifacts.fsutil import atomic_symlink, atomic_write_json
from nsls2_artifacts.records import (
    ArtifactInfo,
    BuildManifest,
    LockInfo,
    LtsRecord,
    ReadyRecord,
    isoformat,
    make_build_id,
    utcnow,
)
from nsls2_artifacts.store import open_store
from support.processes import kill9, wait_for
from support.sites import write_site_config

DAY = 86400
ENV = "demo"


def shared_library() -> Path:
    """A real shared library of this system to copy into a build (for ctypes/maps tests)."""
    for name in ("libz.so.1", "libbz2.so.1.0", "liblzma.so.5", "libffi.so.8"):
        for base in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib"):
            path = Path(base) / name
            if path.exists():
                return path
    raise RuntimeError("no shared library found to copy into a test build")


def write_retention_site(
    root: Path,
    *,
    node: str = "test-node",
    ttl: float = 600,
    store: str = "./store",
    store_options: dict[str, Any] | None = None,
    **retention: Any,
) -> tuple[Path, SiteConfig]:
    """A site config for retention tests (keep_latest 1, its own manifests dir) under
    `root` with its own store (a directory, or `store` an
    s3:// URL with its `store_options`), deploy root and manifests dir."""
    policy = {"lts_years": 3, "keep_latest": 1, "grace_days": 7, **retention}
    data = {
        "manifests": "./manifests",
        "store": store,
        **({"store_options": store_options} if store_options else {}),
        "deploy_root": "./deploy",
        "channel_mirrors": {},
        "retention": policy,
        "agent": {"poll_seconds": 2, "node": node, "node_ttl_seconds": ttl},
        "beamlines": {},
    }
    return write_site_config(root, data, dirs=("store", "deploy", "manifests"))


def build_id_days_ago(days: float, tag: str) -> tuple[str, datetime]:
    created = utcnow() - timedelta(days=days)
    return make_build_id(created, (tag * 8)[:8]), created


def make_build(
    site: SiteConfig, days_ago: float, tag: str, env: str = ENV, ready: bool = True
) -> Path:
    """A deployed build created `days_ago`: bin/sleep, lib/<a .so>, share/data.txt, ready.json."""
    build_id, created = build_id_days_ago(days_ago, tag)
    prefix = site.deploy_root / "envs" / env / build_id
    (prefix / "bin").mkdir(parents=True)
    shutil.copy2("/bin/sleep", prefix / "bin" / "sleep")
    lib = shared_library()
    (prefix / "lib").mkdir()
    shutil.copy2(lib, prefix / "lib" / lib.name)
    (prefix / "share").mkdir()
    (prefix / "share" / "data.txt").write_text("x" * 8192)
    if ready:
        record = ReadyRecord(
            env=env,
            build_id=build_id,
            created=isoformat(created),
            deployed=isoformat(utcnow()),
            node="test-node",
            artifact_sha256="0" * 64,
            smoke=(),
            seconds=0.1,
        )
        atomic_write_json(prefix / ".nsls2" / "ready.json", record.to_dict())
    commit_in_store(site, env, build_id, created)
    return prefix


EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def commit_in_store(site: SiteConfig, env: str, build_id: str, created: datetime) -> None:
    """A committed build through the Store interface, so the same test runs on every
    backend (empty artifact and lock: retention never reads them)."""
    store = open_store(site)
    staging = store.staging_dir(env, build_id)
    (staging / "env.tar.zst").write_bytes(b"")
    (staging / "pixi.lock").write_bytes(b"")
    manifest = BuildManifest(
        name=env,
        build_id=build_id,
        created=isoformat(created),
        platform="linux-64",
        display_name="demo",
        smoke=(),
        artifact=ArtifactInfo("env.tar.zst", EMPTY_SHA256, 0, "tar.zst"),
        lock=LockInfo("pixi.lock", EMPTY_SHA256),
        packages=(),
    )
    store.commit_build(staging, manifest)


def set_latest(site: SiteConfig, prefix: Path) -> None:
    atomic_symlink(prefix.name, prefix.parent / "latest")


def promote_deployed(site: SiteConfig, prefix: Path, label: str, days_ago: float) -> None:
    """Make the deployed build at `prefix` LTS `label`, promoted `days_ago`, through the
    Store protocol (either backend)."""
    promoted = isoformat(utcnow() - timedelta(days=days_ago))
    open_store(site).set_lts(LtsRecord(prefix.parent.name, label, prefix.name, promoted))


def write_kernelspec(site: SiteConfig, prefix: Path, label: str) -> Path:
    """An LTS kernelspec naming the build, in the agent's format (metadata.nsls2)."""
    env, build_id = prefix.parent.name, prefix.name
    directory = site.deploy_root / "share" / "jupyter" / "kernels" / f"nsls2-{env}-{label}"
    spec = {
        "argv": [
            str(prefix / "bin" / "python"),
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
        ],
        "display_name": f"demo {label}",
        "language": "python",
        "env": {"CONDA_PREFIX": str(prefix)},
        "metadata": {"nsls2": {"env": env, "build_id": build_id, "channel": "lts", "label": label}},
    }
    atomic_write_json(directory / "kernel.json", spec)
    return directory


def tombstone_file(site: SiteConfig, prefix: Path) -> Path:
    return site.deploy_root / "state" / "tombstones" / prefix.parent.name / f"{prefix.name}.json"


def age(path: Path, days: float) -> None:
    """Backdate a file's mtime (as if written `days` ago on the shared filesystem)."""
    moment = time.time() - days * DAY
    os.utime(path, (moment, moment))


def by_build(decisions: list[Any]) -> dict[str, Any]:
    return {d.build_id: d for d in decisions}


# -- real child processes -----------------------------------------------------------------------

MMAP_CHILD = """
import mmap, os, sys, signal
with open(sys.argv[1], 'rb') as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
# Python's mmap keeps a dup of the fd: close it so only the mapping remains
for fd in os.listdir('/proc/self/fd'):
    try:
        if os.readlink(f'/proc/self/fd/{fd}') == os.path.realpath(sys.argv[1]):
            os.close(int(fd))
    except OSError:
        pass
print('ready', flush=True)
signal.pause()
"""

CTYPES_CHILD = """
import ctypes, sys, signal
lib = ctypes.CDLL(sys.argv[1])
print('ready', flush=True)
signal.pause()
"""


@contextlib.contextmanager
def child(kind: str, prefix: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A sleeping process that uses `prefix` in one way; killed and reaped on exit."""
    clean_env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    stdin: Any = subprocess.DEVNULL
    cwd = "/"
    env = clean_env
    if kind == "exe":
        argv = [str(prefix / "bin" / "sleep"), "600"]
    elif kind == "cwd":
        argv, cwd = ["/bin/sleep", "600"], str(prefix / "share")
    elif kind == "fd":
        argv = ["/bin/sleep", "600"]
        stdin = open(prefix / "share" / "data.txt", "rb")  # noqa: SIM115 - closed below
    elif kind == "mmap":
        argv = [sys.executable, "-c", MMAP_CHILD, str(prefix / "share" / "data.txt")]
    elif kind == "so":
        argv = [sys.executable, "-c", CTYPES_CHILD, str(prefix / "lib" / shared_library().name)]
    elif kind == "conda_prefix":
        argv, env = ["/bin/sleep", "600"], {**clean_env, "CONDA_PREFIX": str(prefix)}
    else:
        raise ValueError(kind)
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=stdin, stdout=subprocess.PIPE)
    if stdin is not subprocess.DEVNULL:
        stdin.close()  # only the child holds it open now
    try:
        if kind in ("mmap", "so"):
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"ready"
        else:
            wait_exec(proc.pid, argv[0])
        yield proc
    finally:
        kill9(proc)


def wait_exec(pid: int, program: str, timeout: float = 10) -> None:
    """Wait until `pid` has exec'd `program` (after fork its exe is still python)."""
    wanted = os.path.realpath(program)

    def exec_done() -> bool:
        with contextlib.suppress(OSError):
            return os.readlink(f"/proc/{pid}/exe") == wanted
        return False

    wait_for(exec_done, timeout, f"pid {pid} to exec {program}", interval=0.01)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def run_as_nobody(work: Callable[[], str]) -> str:
    """Run `work` in a forked child that dropped root for `nobody`; return its text.

    The child never returns into pytest (it always `_exit`s); a failure in it fails here.
    """
    nobody = pwd.getpwnam("nobody")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.write(write_fd, work().encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd) as handle:
        text = handle.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return text

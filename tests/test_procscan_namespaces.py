"""The /proc scan sees builds used from another mount namespace (issue 17, item 8).

A container (here: `unshare --mount`, a private mount namespace) bind-mounts a build
directory at another path and runs a process there. Its /proc links name the path as
the container sees it (`/.../view/share`), which means nothing on the host: matched by
path alone, the build looked UNUSED and retention deleted it under a running kernel.
Real namespaces, real bind mounts, real processes; needs root (as the agent on a node).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.processes import kill9
from support.retention import (
    MMAP_CHILD,
    age,
    by_build,
    make_build,
    set_latest,
    tombstone_file,
    wait_exec,
    write_retention_site,
)

from nsls2_artifacts import procscan
from nsls2_artifacts.agent.retention import run_pass
from nsls2_artifacts.store import FilesystemStore

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="mount namespaces and bind mounts need root and util-linux unshare",
)


@contextmanager
def in_container(build: Path, view: Path, kind: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process in a private mount namespace where `build` is bind-mounted at `view`
    (an empty directory on the host), using the build through `view` in one way."""
    view.mkdir(parents=True, exist_ok=True)
    program = {
        "cwd": f"cd {view}/share && exec /bin/sleep 600",
        "exe": f"exec {view}/bin/sleep 600",
        "fd": f"exec /bin/sleep 600 < {view}/share/data.txt",
        "maps": f'exec {sys.executable} -c "$CHILD" {view}/share/data.txt',
        "environ": f"CONDA_PREFIX={view} exec /bin/sleep 600",
    }[kind]
    script = f"mount --bind {build} {view} && {program}"
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env={"PATH": "/usr/bin:/bin", "CHILD": MMAP_CHILD},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        if kind == "maps":
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        else:
            wait_exec(proc.pid, f"{view}/bin/sleep" if kind == "exe" else "/bin/sleep")
        assert os.readlink(f"/proc/{proc.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert not any(view.iterdir())  # the bind mount is the container's alone
        yield proc
    finally:
        kill9(proc)


@pytest.mark.parametrize("kind", ["cwd", "exe", "fd", "maps", "environ"])
def test_build_used_through_a_bind_mount_in_a_container_is_found(tmp_path: Path, kind: str):
    _config, site = write_retention_site(tmp_path / "site")
    build = make_build(site, 30, "a")
    other = make_build(site, 31, "b")
    with in_container(build, tmp_path / "container" / "opt" / "env", kind) as proc:
        result = procscan.scan([build, other])
        found = [u for u in result.uses[str(build)] if u.pid == proc.pid]
        assert len(found) == 1, result.to_dict()
        use = found[0]
        assert use.path.startswith(str(build)), use  # named as the host sees it
        assert "/container/opt/env" in use.path  # and as the container does
        assert not [u for u in result.uses[str(other)] if u.pid == proc.pid]
        assert result.complete


def test_retention_keeps_a_build_a_container_uses(tmp_path: Path) -> None:
    config, site = write_retention_site(tmp_path / "site", keep_latest=1, grace_days=1)
    old = make_build(site, days_ago=30, tag="a")
    new = make_build(site, days_ago=0.1, tag="b")
    set_latest(site, new)
    log = logging.getLogger("test-procscan-namespaces")

    def decide() -> str:
        decision = by_build(run_pass(site, FilesystemStore(site.store), log))[old.name]
        return f"{decision.action}: {decision.reason}"

    with in_container(old, tmp_path / "container" / "env", "cwd") as proc:
        kept = decide()
        assert kept.startswith(f"keep: kept: in use by pid {proc.pid}"), kept
        dry = subprocess.run(
            [sys.executable, "-m", "nsls2_artifacts.cli", "prune", "--dry-run"]
            + ["--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert f"in use by pid {proc.pid}" in dry.stdout, dry.stdout + dry.stderr
        assert old.is_dir() and not tombstone_file(site, old).exists()
    assert decide().startswith("tombstone")  # the container is gone: the usual course
    age(tombstone_file(site, old), 2)
    decide()
    assert not old.exists() and new.is_dir()


def test_a_container_whose_mounts_cannot_be_read_is_unknown_never_unused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a foreign namespace's mountinfo cannot be read (EACCES: a fault root cannot
    cause for real here, so it is injected), the process is "unknown": the scan is
    incomplete, retention keeps every build and says why."""
    _config, site = write_retention_site(tmp_path / "site", keep_latest=1, grace_days=1)
    old = make_build(site, days_ago=30, tag="a")
    new = make_build(site, days_ago=0.1, tag="b")
    set_latest(site, new)
    real_read = procscan._read_all

    def refuse_mountinfo(name: str, dir_fd: int) -> bytes:
        if name == "mountinfo":
            raise PermissionError(13, "Permission denied")
        return real_read(name, dir_fd)

    monkeypatch.setattr(procscan, "_read_all", refuse_mountinfo)
    with in_container(new, tmp_path / "container" / "env", "cwd") as proc:
        result = procscan.scan([old])
        assert not result.complete
        # (kernel threads such as kdevtmpfs have namespaces of their own too)
        assert (proc.pid, f"/proc/{proc.pid}/mountinfo") in [
            (u.pid, u.path) for u in result.unknown
        ]
        log = logging.getLogger("test-procscan-namespaces")
        decision = by_build(run_pass(site, FilesystemStore(site.store), log))[old.name]
        assert decision.action == "keep", decision
        assert decision.reason.startswith("kept: unknown (pid ")
        assert "/mountinfo) unreadable" in decision.reason
    assert old.is_dir()

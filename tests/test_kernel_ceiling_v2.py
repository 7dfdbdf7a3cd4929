"""The launcher's cgroup v2 path against a fake cgroup2 directory tree (plain files).

This machine (and CI) cannot give a kernel a real cgroup v2 memory limit: the memory
controller is bound to the cgroup v1 hierarchy (/proc/cgroups: memory in hierarchy > 0), so
the cgroup2 mount lists no `memory` in cgroup.controllers and `+memory` in
cgroup.subtree_control fails (EIO, also in a fresh `unshare -m; mount -t cgroup2`). The
real v1 kill path runs in test_kernel_memory.py; here the real launcher process runs with
NSLS2_KERNEL_CGROUP pointing at a directory of plain files shaped like a delegated cgroup2
parent, and the test checks what it writes and which pid it moves (a fault we cannot cause
otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nsls2_artifacts.agent import kernel_ceiling

GIB = 1024**3


def test_launcher_writes_the_v2_limits_and_moves_the_kernel(tmp_path: Path) -> None:
    if not any(kind == "cgroup2" for _, kind, _ in kernel_ceiling._mounts()):
        pytest.skip("no cgroup2 mount in /proc/self/mountinfo: the launcher will not look for v2")
    parent = tmp_path / "user.slice"
    parent.mkdir()
    (parent / "cgroup.controllers").write_text("cpu memory pids\n")
    (parent / "cgroup.subtree_control").write_text("\n")
    env = dict(os.environ, NSLS2_KERNEL_CGROUP=str(parent), NSLS2_MEMORY_CEILING="auto")
    launcher = kernel_ceiling.__file__
    out = subprocess.run(
        [
            sys.executable,
            launcher,
            str(2 * GIB),
            "/run/kernel-abc.json",
            "--",
            "/bin/sh",
            "-c",
            'echo "$$ $NSLS2_MEMORY_MECHANISM"',
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pid, mechanism = out.stdout.split()
    assert mechanism == "cgroup2", out.stdout + out.stderr
    kernel = parent / f"{kernel_ceiling.CGROUP_PREFIX}abc"
    assert (parent / "cgroup.subtree_control").read_text() == "+memory"
    assert (kernel / "memory.max").read_text() == str(2 * GIB)
    high = int((kernel / "memory.high").read_text())
    assert high == 2 * GIB - 128 * 1024**2 and high < 2 * GIB
    assert (kernel / "memory.swap.max").read_text() == "0"
    # the pid written is the one that exec'd the kernel's argv (the kernel itself)
    assert (kernel / "cgroup.procs").read_text() == pid
    assert kernel_ceiling.read_oom_kills(str(kernel)) is None
    (kernel / "memory.events").write_text("low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\n")
    assert kernel_ceiling.read_oom_kills(str(kernel)) == 1

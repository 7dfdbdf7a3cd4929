"""The /proc scanner on its own: each kind of use, aliases, vanishing and unreadable processes."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from support.processes import kill9
from support.retention import (
    child,
    make_build,
    run_as_nobody,
    set_latest,
    wait_exec,
    write_retention_site,
)

from nsls2_artifacts import procscan


@pytest.fixture
def build(tmp_path):
    config, site = write_retention_site(tmp_path / "s")
    return make_build(site, 30, "a")


def uses_of(result, prefix, pid):
    return [u for u in result.uses[str(prefix)] if u.pid == pid]


@pytest.mark.parametrize(
    "kind, via",
    [
        ("exe", "exe"),
        ("cwd", "cwd"),
        ("fd", "fd"),
        ("mmap", "maps"),
        ("so", "maps"),
        ("conda_prefix", "environ"),
    ],
)
def test_each_kind_of_use_is_found(build, kind, via):
    with child(kind, build) as proc:
        result = procscan.scan([build])
        found = uses_of(result, build, proc.pid)
        assert len(found) == 1, result.uses
        assert found[0].via == via
        assert found[0].user == pwd.getpwuid(os.geteuid()).pw_name
        assert found[0].path == str(build) or found[0].path.startswith(f"{build}/")
        assert result.complete
    assert uses_of(procscan.scan([build]), build, proc.pid) == []


def test_path_entry_counts(build):
    env = {"PATH": f"/usr/bin:{build}/bin:/bin"}
    proc = subprocess.Popen(["/bin/sleep", "600"], env=env)
    try:
        wait_exec(proc.pid, "/bin/sleep")
        found = uses_of(procscan.scan([build]), build, proc.pid)
        assert [(u.via, u.path) for u in found] == [("environ", f"{build}/bin")]
    finally:
        kill9(proc)


def test_chroot_inside_build_is_found(build):
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    code = (
        "import os, signal, sys; os.chroot(sys.argv[1]); os.chdir('/'); "
        "print('ready', flush=True); signal.pause()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(build)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        found = uses_of(procscan.scan([build]), build, proc.pid)
        assert found and found[0].via in ("cwd", "root")
    finally:
        kill9(proc)


def test_latest_alias_maps_to_its_target(build):
    """Given envs/ENV/latest, uses are reported for the concrete build it points at."""
    set_latest(None, build)
    alias = build.parent / "latest"
    env = {"CONDA_PREFIX": str(alias), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(["/bin/sleep", "600"], env=env)
    try:
        wait_exec(proc.pid, "/bin/sleep")
        target = procscan.targets_for([alias])[0]
        assert target.path == str(build) and str(alias) in target.prefixes
        for given in ([alias], [build]):  # asked by alias or by concrete path: same answer
            found = uses_of(procscan.scan(given), build, proc.pid)
            assert [(u.via, u.path) for u in found] == [("environ", str(alias))]
    finally:
        kill9(proc)


def test_other_builds_and_similar_names_do_not_match(build, tmp_path):
    sibling = build.with_name(build.name + "x")  # shares a string prefix, not a path prefix
    (sibling / "share").mkdir(parents=True)
    with child("cwd", sibling) as proc:
        result = procscan.scan([build])
        assert uses_of(result, build, proc.pid) == []
        assert uses_of(procscan.scan([sibling]), sibling, proc.pid)


def test_own_process_is_skipped(build):
    here = os.getcwd()
    os.chdir(build)
    try:
        result = procscan.scan([build])
    finally:
        os.chdir(here)
    assert os.getpid() not in {u.pid for u in result.uses[str(build)]}


def test_fd_links_are_never_stat_ed(build, monkeypatch):
    """readlink only: a stat() on /proc/PID/fd/N can hang on a dead NFS mount or FIFO."""

    def no_stat(*args, **kwargs):
        raise AssertionError(f"os.stat called: {args}")

    with child("fd", build) as proc:
        monkeypatch.setattr(os, "stat", no_stat)
        result = procscan.scan([build])
        monkeypatch.undo()
        assert [u.via for u in uses_of(result, build, proc.pid)] == ["fd"]


def test_processes_vanishing_mid_scan_are_skipped(build):
    """Churn of short-lived processes while scanning: no exception, nothing unknown."""
    stop_flag = threading.Event()

    def churn():
        while not stop_flag.is_set():
            procs = [subprocess.Popen(["/bin/true"]) for _ in range(20)]
            for p in procs:
                p.wait()

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    try:
        with child("cwd", build) as proc:
            for _ in range(30):
                result = procscan.scan([build])
                assert result.complete, result.unknown
                assert uses_of(result, build, proc.pid)
    finally:
        stop_flag.set()
        worker.join(timeout=30)


@pytest.mark.skipif(os.geteuid() != 0, reason="a refusal to root is what is retried")
def test_a_refusal_mid_execve_is_looked_at_again(build, monkeypatch):
    """A process changing its image refuses ptrace-checked reads (EACCES) for a moment,
    even to root: the churn above saw it. Such a process is read again after a short
    pause (refused once here: the use is found, the scan complete); one that keeps
    refusing is unknown, never unused. Faked: the moment cannot be hit on purpose."""
    readlink = os.readlink
    refusals = {"left": 1}

    def refuse(path, *args, **kwargs):
        if path == "ns/mnt" and refusals["left"] > 0:
            refusals["left"] -= 1
            raise PermissionError(13, "Permission denied")
        return readlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "readlink", refuse)
    with child("cwd", build) as proc:
        result = procscan.scan([build])
        assert result.complete and uses_of(result, build, proc.pid), result.unknown
        assert refusals["left"] == 0
        refusals["left"] = 10**9  # refuses every time: unknown after the retries
        result = procscan.scan([build])
    assert not result.complete
    assert proc.pid in {use.pid for use in result.unknown}


def _scan_as_nobody(paths) -> tuple[bool, set[int]]:
    def scan() -> str:
        result = procscan.scan(paths)
        return f"{int(result.complete)} " + " ".join(str(u.pid) for u in result.unknown)

    complete, *pids = run_as_nobody(scan).split()
    return complete == "1", {int(p) for p in pids}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a process unreadable")
def test_unreadable_process_makes_scan_incomplete(build):
    with child("cwd", build) as proc:
        complete, unknown = _scan_as_nobody([build])
    assert complete is False
    assert proc.pid in unknown


def test_cli_exit_status_and_output(build):
    command = [sys.executable, "-m", "nsls2_artifacts.procscan", str(build)]
    idle = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert idle.returncode == 0, idle.stderr
    with child("exe", build) as proc:
        busy = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert busy.returncode == 1, busy.stderr
    assert f"pid {proc.pid}\t" in busy.stdout and "\texe\t" in busy.stdout


def test_hidepid_mount_without_root_counts_as_unknown(monkeypatch, tmp_path):
    """With hidepid other users' pids are simply absent: the scan must say it is incomplete."""
    proc_dir = tmp_path / "proc"
    (proc_dir / "self").mkdir(parents=True)
    (proc_dir / "self" / "mountinfo").write_text(
        f"22 27 0:21 / {proc_dir} rw,relatime - proc proc rw,hidepid=invisible\n"
    )
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = procscan.scan([tmp_path], proc=str(proc_dir))
    assert not result.complete
    assert result.unknown[0].via == "hidepid"


def test_scan_with_no_targets_is_trivially_complete():
    result = procscan.scan([])
    assert result.complete and result.uses == {}


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="needs the system python")
def test_system_python_importing_from_a_build_via_pythonpath_is_a_use(build, tmp_path):
    """A system python (exe, cwd, libraries all outside the build) with PYTHONPATH into the
    build's site-packages imports a pure-Python module: after the import it holds no open
    file and no mapping there, and only its environment shows the use."""
    site_packages = build / "lib" / "python3" / "site-packages"
    site_packages.mkdir(parents=True)
    (site_packages / "puremod.py").write_text("VALUE = 42\n")
    script = "import sys, puremod; print(puremod.VALUE, flush=True); sys.stdin.read()"
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", script],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"/nonexistent:{site_packages}"},
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "42\n"  # imported from the build, file closed again
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        fds = [
            os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")
        ]
        assert str(build) not in maps and not any(str(build) in fd for fd in fds)
        found = uses_of(procscan.scan([build]), build, proc.pid)
        assert [(u.via, u.path) for u in found] == [("environ", str(site_packages))]
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PYTHONPATH", "/opt/x:{build}/lib/python3.11/site-packages"),
        ("PYTHONHOME", "{build}"),
        ("PYTHONHOME", "/usr:{build}"),  # PREFIX:EXEC_PREFIX
        ("LD_LIBRARY_PATH", "/usr/lib::{build}/lib"),
        ("CONDA_PREFIX", "{build}"),
        ("PATH", "/usr/bin:{build}/bin/"),
        ("VIRTUAL_ENV", "{build}"),
        ("PYTHONSTARTUP", "{build}/share/data.txt"),
        ("LD_PRELOAD", "/nonexistent.so {build}/lib/nothing-here.so"),
    ],
)
def test_each_path_variable_inside_a_build_is_a_use(build, variable, value):
    env = {"PATH": "/usr/bin:/bin", variable: value.format(build=build)}
    proc = subprocess.Popen(["/bin/sleep", "600"], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_exec(proc.pid, "/bin/sleep")
        found = uses_of(procscan.scan([build]), build, proc.pid)
        assert len(found) == 1 and found[0].via == "environ", found
        assert found[0].path == str(build) or found[0].path.startswith(f"{build}/")
    finally:
        kill9(proc)

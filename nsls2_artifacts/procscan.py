"""Find the local processes that use given build directories, by reading /proc.

Retention (`agent/retention.py`) calls `scan()` once per pass to learn which deployed
builds this node still uses; operators run it alone: `python -m nsls2_artifacts.procscan PATH...`.

Per process the checks run cheapest first and stop once every target has matched:
`exe`, `cwd`, `root` (readlink), `fd/*` (readlink only: a `stat` there would follow into
sockets, FIFOs or hung network mounts), the mapped files in `maps`, then `environ`: every
entry of the variables in `ENV_PATH_VARS` (`PATH`, `PYTHONPATH`, `PYTHONHOME`,
`LD_LIBRARY_PATH`, `CONDA_PREFIX`, ...), since a system python run with `PYTHONPATH` into a
build imports pure-Python modules from it while holding no file open there. A path
counts when it lies under the concrete build directory or under the `envs/ENV/latest`
alias that currently points at it. A process that exits
mid-scan is skipped; one we may not read (EACCES, hidepid) makes the scan incomplete,
which callers must treat as "maybe in use" for every target.

A process in another mount namespace (a container) names paths as *it* sees them: a
build bind-mounted at /opt/env shows as /opt/env/bin/python, which means nothing here.
For such a process every path is translated through its `/proc/PID/mountinfo` (which
filesystem, and which directory of it, the path lies in) into the path of the same
directory in our namespace, then matched as usual; `ProcessUse.path` names both. One
whose mount table cannot be read is "unknown", like an unreadable process.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import pwd
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .records import ProcessUse

PROC = "/proc"
READ_CHUNK = 256 * 1024
# Variables naming directories or files a process loads code from, each a path or a
# ':'-separated list of paths: one lying inside a build is a use (a process may import or
# dlopen from it at any time). Relative entries are relative to the cwd, checked anyway.
ENV_PATH_VARS = frozenset(
    {
        b"CONDA_PREFIX",
        b"PATH",
        b"PYTHONPATH",
        b"PYTHONHOME",  # PREFIX or PREFIX:EXEC_PREFIX
        b"PYTHONUSERBASE",
        b"PYTHONSTARTUP",
        b"PYTHONEXECUTABLE",
        b"VIRTUAL_ENV",
        b"LD_LIBRARY_PATH",
        b"LD_PRELOAD",  # also mapped once loaded; listed for a process that has not yet
    }
)
# PID 1 is the node's init: it never runs a user's kernel, and sandboxes (this project's
# development VMs among them) give it capabilities that make it unreadable even to root.
# Counting it as "unknown" would block every deletion forever, so it is not scanned.
ALWAYS_SKIPPED = frozenset({1})
# A process in the middle of execve(2) refuses ptrace-checked reads (`ns/mnt`, `maps`,
# `fd/`) with EACCES for a moment, even to root and to its own user (seen in 10 of ~70
# errors while /bin/true ran in a loop). Such a process is looked at again after these
# pauses before it counts as unreadable, by a scan that may read it (root, the scan's
# capabilities, its own user's process); one it may not read at all is not (an
# unprivileged scan meets thousands of those).
RETRY_UNREADABLE = (0.002, 0.02)


@dataclass(frozen=True)
class Target:
    """One build directory and every path prefix that means "inside it"."""

    path: str  # the build directory as the caller named it (the key of `ScanResult.uses`)
    prefixes: tuple[str, ...]  # without trailing slash: concrete path(s) and `latest` aliases


@dataclass
class ScanResult:
    """What one pass over /proc found."""

    uses: dict[str, list[ProcessUse]] = field(default_factory=dict)  # target path -> uses
    unknown: list[ProcessUse] = field(default_factory=list)  # processes we could not read
    scanned: int = 0
    vanished: int = 0
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """True when every process could be read, so an absent build is really unused."""
        return not self.unknown

    def to_dict(self) -> dict[str, object]:
        return {
            "uses": {k: [u.to_dict() for u in v] for k, v in self.uses.items()},
            "unknown": [u.to_dict() for u in self.unknown],
            "complete": self.complete,
            "scanned": self.scanned,
            "vanished": self.vanished,
            "seconds": self.seconds,
        }


def targets_for(paths: Iterable[str | Path]) -> list[Target]:
    """Targets for build directories; a path that is itself a symlink (`latest`) names its target.

    Prefixes include the path as given, its real path (the kernel reports resolved paths in
    exe/cwd/fd/maps, while environ holds whatever string the launcher used) and the
    `latest` alias next to it when that alias currently points at this build.
    """
    merged: dict[str, set[str]] = {}
    for raw in paths:
        given = os.path.abspath(os.fspath(raw))
        real = os.path.realpath(given)
        key = real if os.path.islink(given) else given
        prefixes = merged.setdefault(key, set())
        prefixes.update({given, real, key})
        for parent in {os.path.dirname(given), os.path.dirname(real)}:
            alias = os.path.join(parent, "latest")
            if alias != given and os.path.realpath(alias) == real:
                prefixes.add(alias)
                prefixes.add(os.path.join(os.path.realpath(parent), "latest"))
    return [Target(key, tuple(sorted(p.rstrip("/") or "/" for p in merged[key]))) for key in merged]


class _Matcher:
    """Prefix tests for str and bytes paths, precomputed once per scan."""

    def __init__(self, targets: list[Target]) -> None:
        self.targets = targets
        self.str_slash = tuple(p + "/" for t in targets for p in t.prefixes)
        self.owner = {p: t.path for t in targets for p in t.prefixes}
        self.bytes_prefixes = [(os.fsencode(p), t.path) for t in targets for p in t.prefixes]
        # builds share a few parent directories (envs/ENV): one search for each of those
        # rules out most processes before looking for every build separately
        self.bytes_parents = tuple({os.fsencode(os.path.dirname(p)) for p in self.owner})

    def might_contain(self, data: bytes) -> bool:
        return any(parent in data for parent in self.bytes_parents)

    def match(self, path: str) -> str | None:
        """The target that `path` lies in (or is), else None."""
        path = path.removesuffix(" (deleted)")
        if path in self.owner:
            return self.owner[path]
        if not path.startswith(self.str_slash):  # one C-level call for the common miss
            return None
        for prefix, key in self.owner.items():
            if path.startswith(prefix + "/"):
                return key
        return None


@dataclass(frozen=True)
class _Mount:
    """One line of a mountinfo file: which directory (`root`) of which filesystem (`dev`,
    "major:minor") is mounted where (`point`, in that namespace)."""

    dev: str
    root: str
    point: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    if "\\" not in field:
        return field
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(data: bytes) -> list[_Mount]:
    """The mounts of a `/proc/PID/mountinfo`, in mount order (a later one covers an earlier
    one at the same point)."""
    mounts = []
    for line in os.fsdecode(data).splitlines():
        fields = line.split(" ")
        if len(fields) >= 5:
            mounts.append(_Mount(fields[2], _unescape(fields[3]), _unescape(fields[4])))
    return mounts


def _under(path: str, top: str) -> str | None:
    """`path` relative to `top` ("" for `top` itself), or None when it is not below it."""
    if top == "/":
        return path[1:]
    if path == top:
        return ""
    return path[len(top) + 1 :] if path.startswith(top + "/") else None


def _join(top: str, rest: str) -> str:
    return (top.rstrip("/") + "/" + rest) if rest else top


class _Translator:
    """Paths as a process in another mount namespace sees them -> the same directories
    as this namespace sees them (None when this namespace does not mount them at all:
    then they cannot lie in any of our builds)."""

    def __init__(self, theirs: list[_Mount], ours: list[_Mount]) -> None:
        # longest mount point first; among equal ones the later (covering) mount first
        ranked = sorted(enumerate(theirs), key=lambda im: (-len(im[1].point), -im[0]))
        self.theirs = [m for _, m in ranked]
        self.ours: dict[str, list[_Mount]] = {}
        for mount in sorted(ours, key=lambda m: -len(m.root)):
            self.ours.setdefault(mount.dev, []).append(mount)

    def __call__(self, path: str) -> str | None:
        for mount in self.theirs:
            rest = _under(path, mount.point)
            if rest is None:
                continue
            inside = _join(mount.root, rest)  # the path within the filesystem
            for own in self.ours.get(mount.dev, ()):
                below = _under(inside, own.root)
                if below is not None:
                    return _join(own.point, below)
            return None
        return None


class _Namespaces:
    """Which processes run in another mount namespace, and their translators (one
    mountinfo read per namespace and root, not per process)."""

    def __init__(self, proc: str) -> None:
        self.proc = proc
        try:
            self.own = os.readlink(os.path.join(proc, "self", "ns", "mnt"))
        except OSError:
            self.own = ""  # no namespaces to tell apart: every process is in ours
        self.ours: list[_Mount] | None = None
        self.cache: dict[tuple[str, str], _Translator] = {}

    def translator(self, pid_fd: int) -> _Translator | None:
        """None for a process in our namespace (the common case: one readlink)."""
        if not self.own:
            return None
        try:
            ns = os.readlink("ns/mnt", dir_fd=pid_fd)
        except OSError as exc:
            _guard("ns/mnt", exc)
            return None
        if ns == self.own:
            return None
        try:
            key = (ns, os.readlink("root", dir_fd=pid_fd))
            if key not in self.cache:
                theirs = parse_mountinfo(_read_all("mountinfo", pid_fd))
                if self.ours is None:
                    with open(os.path.join(self.proc, "self", "mountinfo"), "rb") as handle:
                        self.ours = parse_mountinfo(handle.read())
                self.cache[key] = _Translator(theirs, self.ours)
        except OSError as exc:
            # its paths cannot be placed: "unknown", never "unused"
            _guard("mountinfo", exc)
            raise _Unreadable("mountinfo") from None
        return self.cache[key]


class _Unreadable(Exception):
    def __init__(self, what: str) -> None:
        self.what = what


class _Vanished(Exception):
    pass


def _read_all(name: str, dir_fd: int) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        chunks = []
        while chunk := os.read(fd, READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _guard(what: str, exc: OSError) -> None:
    """Classify an error from one check: re-raise as vanished/unreadable, or ignore."""
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        raise _Unreadable(what) from None
    if isinstance(exc, ProcessLookupError) or exc.errno == errno.ESRCH:
        raise _Vanished() from None
    # ENOENT and friends: a kernel thread has no exe, a zombie no maps, an fd was closed
    # between listdir and readlink. Nothing to see for this check; go on with the next.


class _ProcessScan:
    """The checks for one process; `hits` maps target -> (via, path)."""

    def __init__(
        self, matcher: _Matcher, pid_fd: int, translate: _Translator | None = None
    ) -> None:
        self.matcher = matcher
        self.pid_fd = pid_fd
        self.translate = translate  # set for a process in another mount namespace
        self.hits: dict[str, tuple[str, str]] = {}

    def done(self) -> bool:
        return len(self.hits) == len(self.matcher.targets)

    def note(self, via: str, path: str) -> None:
        seen = path
        if self.translate is not None:
            here = self.translate(path.removesuffix(" (deleted)"))
            if here is None:
                return
            path, seen = here, f"{here} (as {path} in its mount namespace)"
        key = self.matcher.match(path)
        if key is not None and key not in self.hits:
            self.hits[key] = (via, seen)

    def run(self) -> None:
        for check in (self.links, self.fds, self.maps, self.environ):
            check()
            if self.done():
                return

    def links(self) -> None:
        for name in ("exe", "cwd", "root"):
            try:
                self.note(name, os.readlink(name, dir_fd=self.pid_fd))
            except OSError as exc:
                _guard(name, exc)
            if self.done():
                return

    def fds(self) -> None:
        try:
            fd_dir = os.open("fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.pid_fd)
        except OSError as exc:
            _guard("fd", exc)
            return
        try:
            try:
                names = os.listdir(fd_dir)
            except OSError as exc:
                _guard("fd", exc)
                return
            for name in names:
                try:
                    target = os.readlink(name, dir_fd=fd_dir)
                except OSError as exc:
                    _guard("fd", exc)
                    continue
                if target.startswith("/"):  # skip socket:[..], pipe:[..], anon_inode:..
                    self.note("fd", target)
                    if self.done():
                        return
        finally:
            os.close(fd_dir)

    def maps(self) -> None:
        try:
            data = _read_all("maps", self.pid_fd)
        except OSError as exc:
            _guard("maps", exc)
            return
        if self.translate is not None:  # its paths are not ours: parse and translate each
            for line in data.split(b"\n"):
                start = line.find(b" /")
                if start >= 0:
                    self.note("maps", os.fsdecode(line[start:].lstrip(b" ")))
                    if self.done():
                        return
            return
        if not self.matcher.might_contain(data):
            return
        # bytes.find over the whole file is far cheaper than splitting thousands of lines;
        # only a hit is parsed. A path field starts after a run of spaces.
        for prefix, key in self.matcher.bytes_prefixes:
            if key in self.hits:
                continue
            start = data.find(prefix)
            while start > 0:
                end = data.find(b"\n", start)
                path = os.fsdecode(data[start : end if end >= 0 else len(data)])
                if data[start - 1 : start] == b" " and self.matcher.match(path) == key:
                    self.hits[key] = ("maps", path)
                    break
                start = data.find(prefix, start + 1)

    def environ(self) -> None:
        try:
            data = _read_all("environ", self.pid_fd)
        except OSError as exc:
            _guard("environ", exc)
            return
        if self.translate is None and not self.matcher.might_contain(data):
            return
        for entry in data.split(b"\0"):
            name, _, value = entry.partition(b"=")
            if name not in ENV_PATH_VARS:
                continue
            if name == b"LD_PRELOAD":  # ld.so splits it at spaces too
                value = value.replace(b" ", b":")
            for part in value.split(b":"):
                if part.startswith(b"/"):
                    self.note("environ", os.path.normpath(os.fsdecode(part)))
                    if self.done():
                        return


class _Users:
    """uid -> user name, cached (a name lookup per process would dominate the scan)."""

    def __init__(self) -> None:
        self.cache: dict[int, str] = {}

    def of(self, pid_fd: int) -> str:
        try:
            uid = os.fstat(pid_fd).st_uid  # the /proc/PID directory is owned by the euid
        except OSError:
            return "?"
        if uid not in self.cache:
            try:
                self.cache[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self.cache[uid] = str(uid)
        return self.cache[uid]


def _hidden_processes(proc: str) -> bool:
    """True if /proc is mounted with hidepid and we are not root: other users' pids are absent."""
    if os.geteuid() == 0:
        return False
    try:
        with open(os.path.join(proc, "self", "mountinfo"), encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 4 and fields[4] == proc and "hidepid=" in line:
                    return not any(opt in line for opt in ("hidepid=0", "hidepid=off"))
    except OSError:
        return False
    return False


# What an unprivileged agent needs to read other users' processes: CAP_SYS_PTRACE for
# their links, maps and environ, CAP_DAC_READ_SEARCH to list their fd directories.
SCAN_CAPABILITIES = {"CAP_DAC_READ_SEARCH": 2, "CAP_SYS_PTRACE": 19}
SCAN_PRIVILEGE_HINT = (
    "run the agent as root or with AmbientCapabilities=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH "
    "(deploy/nsls2-agent.service)"
)
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4


def missing_capabilities(proc: str = PROC) -> list[str]:
    """The capabilities of SCAN_CAPABILITIES this process lacks (effective set; [] as root)."""
    try:
        with open(os.path.join(proc, "self", "status"), encoding="ascii") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
        effective = int(fields["CapEff"].strip(), 16)
    except (OSError, KeyError, ValueError):
        return sorted(SCAN_CAPABILITIES)
    return sorted(name for name, bit in SCAN_CAPABILITIES.items() if not effective >> bit & 1)


def keep_capabilities_to_self() -> None:
    """Empty the ambient capability set: the agent keeps the scan's capabilities, but the
    programs it starts (an archive's conda-unpack, its python for the smoke test: code
    from the store) do not inherit them across exec. Called once when the agent starts."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)


def scan(
    paths: Iterable[str | Path],
    *,
    proc: str = PROC,
    skip_pids: Iterable[int] = (),
) -> ScanResult:
    """Scan every process in `proc` for use of the build directories `paths`."""
    started = time.perf_counter()
    targets = targets_for(paths)
    result = ScanResult(uses={t.path: [] for t in targets})
    if not targets:
        result.seconds = time.perf_counter() - started
        return result
    if _hidden_processes(proc):
        result.unknown.append(ProcessUse(0, "?", "hidepid", proc))
    matcher = _Matcher(targets)
    users = _Users()
    namespaces = _Namespaces(proc)
    skipped = {os.getpid(), *ALWAYS_SKIPPED, *skip_pids}
    privileged = os.geteuid() == 0 or not missing_capabilities(proc)
    proc_fd = os.open(proc, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in os.listdir(proc_fd):
            if not name.isdigit() or int(name) in skipped:
                continue
            _scan_one(int(name), proc_fd, matcher, users, namespaces, result, privileged)
    finally:
        os.close(proc_fd)
    result.seconds = time.perf_counter() - started
    return result


def _scan_one(
    pid: int,
    proc_fd: int,
    matcher: _Matcher,
    users: _Users,
    namespaces: _Namespaces,
    result: ScanResult,
    privileged: bool,
) -> None:
    try:
        pid_fd = os.open(str(pid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=proc_fd)
    except OSError:
        result.vanished += 1
        return
    try:
        for pause in (*RETRY_UNREADABLE, None):
            process = None  # what an attempt found before its refusal still counts
            try:
                process = _ProcessScan(matcher, pid_fd, namespaces.translator(pid_fd))
                process.run()
                break
            except _Vanished:
                result.vanished += 1
                return
            except _Unreadable as exc:
                if pause is not None and (privileged or _own(pid_fd)):
                    time.sleep(pause)  # mid-execve: readable again in a moment
                    continue
                where = f"/proc/{pid}/{exc.what}"
                result.unknown.append(ProcessUse(pid, users.of(pid_fd), "unreadable", where))
                break
        result.scanned += 1
        if process is not None and process.hits:
            user = users.of(pid_fd)
            for key, (via, path) in process.hits.items():
                result.uses[key].append(ProcessUse(pid, user, via, path))
    finally:
        os.close(pid_fd)


def _own(pid_fd: int) -> bool:
    """Whether the process is of this scanner's user (which may read it unprivileged: a
    refusal is then transient, the process changing its image)."""
    try:
        return os.fstat(pid_fd).st_uid == os.geteuid()
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    """`python -m nsls2_artifacts.procscan PATH...`: exit 0 unused, 1 in use, 2 unknown."""
    parser = argparse.ArgumentParser(
        prog="python -m nsls2_artifacts.procscan",
        description="List local processes that use the given build directories.",
    )
    parser.add_argument("paths", nargs="+", help="build directories (or envs/ENV/latest)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = scan(args.paths)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for key, uses in result.uses.items():
            for use in uses:
                print(f"{key}\tpid {use.pid}\t{use.user}\t{use.via}\t{use.path}")
        for use in result.unknown:
            print(f"unknown\tpid {use.pid}\t{use.user}\t{use.via}\t{use.path}")
        print(
            f"# {result.scanned} processes in {result.seconds * 1000:.1f} ms"
            f"{'' if result.complete else ', INCOMPLETE'}",
            file=sys.stderr,
        )
    if not result.complete:
        return 2
    return 1 if any(result.uses.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

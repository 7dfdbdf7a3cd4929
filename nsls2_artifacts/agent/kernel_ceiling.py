"""The memory ceiling and thread counts of one NSLS-II kernel, applied just before it starts.

Every NSLS-II kernel's `/bin/sh` launcher (agent/kernels.py) execs, with the build's own
python in isolated mode,

    python -I -S DEPLOY_ROOT/share/jupyter/nsls2/kernel_ceiling.py LIMIT NAME -- ARGV...

which puts this very process under the ceiling and then `exec`s ARGV (the kernel), so the
kernel keeps this pid and inherits the ceiling. The agent copies this file there (stdlib
only, python >= 3.8: it runs in every build's python). The agent, `status` and the Jupyter
server extension import it for `probe`, `cgroup_dir_for` and `read_oom_kills`.

The ceiling, first that works (docs/kernels.md "Memory ceiling"):
- cgroup2: the kernel gets its own cgroup `nsls2-kernel-ID` beside the cgroup the Jupyter
  server runs in (the unit's delegated subtree), with memory.max = LIMIT, memory.high a
  little under, memory.swap.max = 0. It counts what the kernel and its children really use
  (resident memory, page cache the kernel cannot reclaim); over the limit the kernel is
  stopped and the server extension tells the user (memory.events oom_kill).
- cgroup1: the same with a writable v1 memory hierarchy (memory.limit_in_bytes, and
  memory.memsw.limit_in_bytes = the same value: no swap), oom_kill in memory.oom_control.
- rlimit: RLIMIT_DATA = LIMIT. It counts the process's private writable memory (heap,
  anonymous mappings, thread stacks), not address space only reserved (PROT_NONE, such as
  malloc arenas) and not mapped files; an allocation past it fails inside the kernel with a
  MemoryError (kernel_memory.py explains it), and the kernel carries on.
`NSLS2_MEMORY_CEILING=rlimit` in the server's environment skips the cgroups on purpose.

Whatever the ceiling, thread pools are sized for the kernel's CPU allowance (its affinity
mask and cgroup cpu.max), at most MAX_THREADS: OpenBLAS, MKL, OpenMP, BLIS and numexpr
otherwise start one thread per core of a 128-core node in every kernel, each with its own
stack and ~40 MB of buffers (numpy and scipy each bundle an OpenBLAS: with 64 CPUs that is
126 threads and 5 GB of private writable memory, which RLIMIT_DATA counts although it is
never touched). Under RLIMIT_DATA they get one thread per GiB of ceiling as well. A value
the user set in the server's environment is kept.
"""

import contextlib
import errno
import math
import os
import resource
import sys

CGROUP_PREFIX = "nsls2-kernel-"
MECHANISM_ENV = "NSLS2_MEMORY_CEILING"  # auto (default) | rlimit
# the knobs of the thread pools a scientific kernel loads; OMP_NUM_THREADS first: a value
# the user set there is the default for the others
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
)
MAX_ARENAS = 8
MAX_THREADS = 8  # per pool and kernel: kernels share a node with other users' kernels
STALE_SECONDS = 600  # an empty kernel cgroup this old is swept (the server had time to read it)


class Ceiling:
    """Which mechanism holds a kernel and where (what `probe` and `apply` return)."""

    def __init__(self, mechanism, detail, cgroup=None):
        self.mechanism = mechanism  # cgroup2 | cgroup1 | rlimit | none
        self.detail = detail  # why this one (and why not the cgroups)
        self.cgroup = cgroup  # the kernel's cgroup directory, if any

    def to_dict(self):
        return {"mechanism": self.mechanism, "detail": self.detail, "cgroup": self.cgroup}


# -- where the cgroups are --------------------------------------------------------------------


def _read(path):
    with open(path, encoding="ascii", errors="replace") as handle:
        return handle.read()


def _write(path, value):
    with open(path, "w", encoding="ascii") as handle:
        handle.write(value)


def _mounts(proc="/proc/self"):
    """(mount point, fstype, super options) of every cgroup mount, from mountinfo."""
    found = []
    try:
        text = _read(os.path.join(proc, "mountinfo"))
    except OSError:
        return found
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if sep and len(fields) > 4 and len(tail) > 2 and tail[0].startswith("cgroup"):
            point = fields[4].replace("\\040", " ")
            found.append((point, tail[0], set(tail[2].split(","))))
    return found


def _own_cgroups(proc="/proc/self"):
    """{"": v2 path, "memory": v1 memory path, "cpu": v1 cpu path} of this process."""
    found = {}
    try:
        text = _read(os.path.join(proc, "cgroup"))
    except OSError:
        return found
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                found[controller] = parts[2]
    return found


def _v2_parent(proc="/proc/self"):
    """(the cgroup2 directory kernel cgroups are made in, None) or (None, why not)."""
    mount = next((m[0] for m in _mounts(proc) if m[1] == "cgroup2"), None)
    own = _own_cgroups(proc).get("")
    if mount is None or own is None:
        return None, "no cgroup2 hierarchy"
    override = os.environ.get("NSLS2_KERNEL_CGROUP")
    # the server runs in a leaf (no-internal-processes rule): kernels go beside it
    parent = override or os.path.join(mount, os.path.dirname(own).lstrip("/"))
    parent = os.path.normpath(parent)
    try:
        controllers = _read(os.path.join(parent, "cgroup.controllers")).split()
    except OSError as exc:
        return None, f"cgroup2 {parent} unreadable: {exc.strerror}"
    if "memory" not in controllers:
        have = " ".join(controllers) or "none"
        return None, f"cgroup2 {parent} has no memory controller (controllers: {have})"
    if not os.access(parent, os.W_OK):
        return None, f"cgroup2 {parent} is not writable by this user (not delegated)"
    return parent, None


def _v1_parent(proc="/proc/self"):
    """(the v1 memory cgroup kernel cgroups are made in, None) or (None, why not)."""
    mount = next((m[0] for m in _mounts(proc) if m[1] == "cgroup" and "memory" in m[2]), None)
    own = _own_cgroups(proc).get("memory")
    if mount is None or own is None:
        return None, "no cgroup v1 memory hierarchy"
    parent = os.path.normpath(os.path.join(mount, own.lstrip("/")))
    if not os.access(parent, os.W_OK):
        return None, f"cgroup v1 memory {parent} is not writable by this user"
    return parent, None


def cgroup_dir_for(name, proc="/proc/self"):
    """The directories a kernel named `name` (its kernel id) would have, v2 then v1: what
    the server extension watches (it runs in the cgroup its kernels start from)."""
    found = []
    for finder in (_v2_parent, _v1_parent):
        parent, _ = finder(proc)
        if parent:
            found.append(os.path.join(parent, CGROUP_PREFIX + name))
    return found


def read_oom_kills(directory):
    """How many processes the kernel's cgroup has OOM-killed (v2 memory.events, v1
    memory.oom_control); None when it cannot be read."""
    for file_name in ("memory.events", "memory.oom_control"):
        try:
            text = _read(os.path.join(directory, file_name))
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


def _sweep(parent):
    """Remove empty kernel cgroups older than STALE_SECONDS (rmdir refuses busy ones)."""
    import time

    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(CGROUP_PREFIX):
            continue
        try:
            if time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                os.rmdir(entry.path)
        except OSError:
            pass  # in use (EBUSY), or already gone


def _make(parent, name):
    directory = os.path.join(parent, CGROUP_PREFIX + name)
    # a restart of the same kernel: the same cgroup, its oom_kill count continues
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory)
    return directory


def _enter_v2(parent, name, limit):
    subtree = _read(os.path.join(parent, "cgroup.subtree_control")).split()
    if "memory" not in subtree:
        # fails with EBUSY while `parent` itself holds processes (put the server in a leaf)
        _write(os.path.join(parent, "cgroup.subtree_control"), "+memory")
    directory = _make(parent, name)
    _write(os.path.join(directory, "memory.max"), str(limit))
    # memory.high makes the kernel reclaim (page cache of mapped files first) before max
    _write(os.path.join(directory, "memory.high"), str(high_mark(limit)))
    with contextlib.suppress(OSError):  # no swap accounting on this node: nothing to turn off
        _write(os.path.join(directory, "memory.swap.max"), "0")
    _write(os.path.join(directory, "cgroup.procs"), str(os.getpid()))
    return directory


def _enter_v1(parent, name, limit):
    directory = _make(parent, name)
    _write(os.path.join(directory, "memory.limit_in_bytes"), str(limit))
    _write(os.path.join(directory, "memory.soft_limit_in_bytes"), str(high_mark(limit)))
    # swap accounting off (swapaccount=0): memory.limit_in_bytes alone is the limit
    with contextlib.suppress(OSError):
        _write(os.path.join(directory, "memory.memsw.limit_in_bytes"), str(limit))
    _write(os.path.join(directory, "cgroup.procs"), str(os.getpid()))
    return directory


def high_mark(limit):
    """memory.high: 1/16 (at most 256 MiB) under the limit."""
    return limit - min(limit // 16, 256 * 1024 * 1024)


def _set_rlimit(limit):
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft == resource.RLIM_INFINITY or limit < soft:  # a lower limit the site set stays
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def _try_cgroups(name, limit, enter):
    """Ceiling in a cgroup, or None and why not (each step's reason kept)."""
    reasons = []
    for kind, finder, entering in (
        ("cgroup2", _v2_parent, _enter_v2),
        ("cgroup1", _v1_parent, _enter_v1),
    ):
        parent, why = finder()
        if parent is None:
            reasons.append(why)
            continue
        if not enter:
            return Ceiling(kind, f"kernels get their own cgroup under {parent}"), reasons
        try:
            _sweep(parent)
            directory = entering(parent, name, limit)
        except OSError as exc:
            hint = (
                " (the server's cgroup holds processes: run it in a leaf)"
                if exc.errno == errno.EBUSY
                else ""
            )
            reasons.append(f"{kind} {exc.filename or parent}: {exc.strerror}{hint}")
            continue
        return Ceiling(kind, f"cgroup {directory}", directory), reasons
    return None, reasons


def probe():
    """Which mechanism a kernel started from this process would get (nothing changed)."""
    return decide("probe", None, enter=False)


def decide(name, limit, enter=True):
    """Put this process under `limit` bytes (None: only thread counts) and say how."""
    if os.environ.get(MECHANISM_ENV, "auto") != "rlimit":
        found, reasons = _try_cgroups(name, limit, enter)
        if found is not None:
            return found
    else:
        reasons = [f"{MECHANISM_ENV}=rlimit"]
    if enter and limit:
        _set_rlimit(limit)
    return Ceiling("rlimit", f"RLIMIT_DATA (no cgroup: {'; '.join(reasons)})")


# -- CPU allowance and thread pools ------------------------------------------------------------


def _quota_v2(directory, stop):
    """The smallest cpu.max quota on the way from `directory` up to `stop`, in CPUs."""
    best = None
    while True:
        try:
            quota, period = _read(os.path.join(directory, "cpu.max")).split()[:2]
            if quota != "max":
                cpus = int(quota) / int(period)
                best = cpus if best is None else min(best, cpus)
        except (OSError, ValueError):
            pass
        if os.path.normpath(directory) == os.path.normpath(stop):
            return best
        directory = os.path.dirname(directory)


def cpu_allowance(proc="/proc/self"):
    """How many CPUs this kernel may use: its affinity mask and cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    mounts, own = _mounts(proc), _own_cgroups(proc)
    for point, fstype, options in mounts:
        quota = None
        if fstype == "cgroup2" and "" in own:
            quota = _quota_v2(os.path.join(point, own[""].lstrip("/")), point)
        elif fstype == "cgroup" and "cpu" in options and "cpu" in own:
            directory = os.path.join(point, own["cpu"].lstrip("/"))
            try:
                q = int(_read(os.path.join(directory, "cpu.cfs_quota_us")))
                p = int(_read(os.path.join(directory, "cpu.cfs_period_us")))
                quota = q / p if q > 0 and p > 0 else None
            except (OSError, ValueError):
                quota = None
        if quota:
            cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def thread_count(cpus, limit, mechanism):
    """Threads per pool: the CPU allowance, at most MAX_THREADS; under RLIMIT_DATA also at
    most one per GiB of ceiling (each OpenBLAS thread's buffers count there)."""
    count = min(cpus, MAX_THREADS)
    if limit and mechanism == "rlimit":
        count = min(count, limit // 1024**3)
    return max(1, count)


def thread_env(environ, threads):
    """The variables to set (never one the environment already has)."""
    chosen = {}
    default = environ.get("OMP_NUM_THREADS") or str(threads)
    for name in THREAD_VARS:
        if not environ.get(name):
            chosen[name] = default
    if not environ.get("MALLOC_ARENA_MAX"):
        # glibc makes up to 8 arenas per core; a few per kernel are plenty
        chosen["MALLOC_ARENA_MAX"] = str(min(MAX_ARENAS, max(2, threads)))
    return chosen


# -- the launcher --------------------------------------------------------------------------------


def kernel_name_of(connection_file):
    """`kernel-ID.json` -> `ID`: one cgroup per kernel, the same across its restarts."""
    base = os.path.basename(connection_file)
    if base.startswith("kernel-") and base.endswith(".json"):
        return base[len("kernel-") : -len(".json")] or str(os.getpid())
    return str(os.getpid())


def main(argv):
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: kernel_ceiling.py LIMIT|none CONNECTION_FILE -- ARGV...\n")
        return 2
    limit = int(argv[0]) if argv[0].isdigit() else None
    mechanism = None
    if limit:
        ceiling = decide(kernel_name_of(argv[1]), limit)
        mechanism = ceiling.mechanism
        # for the MemoryError explanation (kernel_memory.py) and `status --check-kernels`
        os.environ["NSLS2_MEMORY_LIMIT"] = str(limit)
        os.environ["NSLS2_MEMORY_MECHANISM"] = ceiling.mechanism
        os.environ["NSLS2_MEMORY_DETAIL"] = ceiling.detail
    threads = thread_count(cpu_allowance(), limit, mechanism)
    os.environ.update(thread_env(os.environ, threads))
    command = argv[3:]
    os.execv(command[0], command)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

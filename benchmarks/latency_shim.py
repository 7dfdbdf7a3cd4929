"""GPFS-like metadata latency for a benchmark's processes: an LD_PRELOAD shim.

A parallel filesystem makes every namespace change a round trip to a metadata server
(~1 ms on GPFS), while reads of existing files and data stream, and many round trips
are in flight at once (one per thread). `strace --inject=...:delay_exit` (the older
harness) overlaps its delays across threads too (it resumes each stopped thread on a
timer), but it delays every traced syscall, so each read-only `openat` pays the 1 ms
as well (the agent's reads of the store, conda-unpack's and the kernel's imports), and
every traced call costs two ptrace stops served by one tracer process, CPU a shared
2-core VM does not have to spare.

This shim is a small shared library, compiled with `cc` at bench time into a temp dir,
that interposes the libc calls that change the namespace and sleeps `delay` µs in the
calling thread before calling the real one (found with dlsym(RTLD_NEXT)):

- open, open64, openat, openat64 with O_CREAT (or O_TMPFILE), creat, creat64,
  fopen/fopen64 with "w" or "a";
- mkdir, mkdirat, link, linkat, symlink, symlinkat, mknod, mknodat;
- rename, renameat, renameat2, unlink, unlinkat, rmdir.

Reads, writes, stat and opens without O_CREAT run at full speed. Python releases the GIL
around these calls, so the agent's threads overlap their latency as they would on GPFS.
Children inherit the shim (LD_PRELOAD), so conda-unpack and the smoke test pay it too;
so does every create of the process, wherever it is (its logs, state, temp files): a
little more than GPFS would charge. At exit each process appends "PID CALLS" to the file
named by NSLS2_SHIM_COUNT_FILE, if set, so a run can say how many calls were delayed.
(The CLI leaves by os._exit, which skips destructors: the shim's _exit counts too.)
Calls libc makes internally (not through its PLT) are not seen, and neither are raw
syscalls: `check` proves the ones Python makes are.

    python benchmarks/latency_shim.py [--delay-us 1000]   # build it and time the check
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DELAY_VAR = "NSLS2_SHIM_DELAY_US"
COUNT_VAR = "NSLS2_SHIM_COUNT_FILE"

SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long delay_ns;
static atomic_long calls;

__attribute__((constructor)) static void shim_init(void) {
    const char *value = getenv("NSLS2_SHIM_DELAY_US");
    delay_ns = value ? atol(value) * 1000L : 0;
}

static void shim_count(void) {
    const char *path = getenv("NSLS2_SHIM_COUNT_FILE");
    long n = atomic_exchange(&calls, 0);  /* once, whichever exit path comes first */
    if (path == NULL || n == 0) return;
    delay_ns = 0;  /* the shim's own fopen is neither delayed nor counted */
    FILE *out = fopen(path, "a");
    if (out) { fprintf(out, "%d %ld\n", getpid(), n); fclose(out); }
}

__attribute__((destructor)) static void shim_fini(void) { shim_count(); }

/* sleep in the calling thread: other threads (and Python, which released the GIL) go on */
static void pay(void) {
    if (delay_ns <= 0) return;
    atomic_fetch_add(&calls, 1);
    struct timespec t = {delay_ns / 1000000000L, delay_ns % 1000000000L};
    while (nanosleep(&t, &t) != 0) {}
}

#define REAL(name) \
    static __typeof__(name) *real_##name; \
    if (!real_##name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

static int creates(int flags) { return (flags & O_CREAT) || ((flags & O_TMPFILE) == O_TMPFILE); }

static mode_t mode_arg(int flags, va_list ap) {
    return creates(flags) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...) {
    REAL(open); va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
    if (creates(flags)) pay();
    return real_open(path, flags, m);
}
int open64(const char *path, int flags, ...) {
    REAL(open64); va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
    if (creates(flags)) pay();
    return real_open64(path, flags, m);
}
int openat(int dirfd, const char *path, int flags, ...) {
    REAL(openat); va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
    if (creates(flags)) pay();
    return real_openat(dirfd, path, flags, m);
}
int openat64(int dirfd, const char *path, int flags, ...) {
    REAL(openat64); va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
    if (creates(flags)) pay();
    return real_openat64(dirfd, path, flags, m);
}
int creat(const char *path, mode_t m) { REAL(creat); pay(); return real_creat(path, m); }
int creat64(const char *path, mode_t m) { REAL(creat64); pay(); return real_creat64(path, m); }

static int writes(const char *mode) { return strpbrk(mode, "wa") != NULL; } /* r+ creates nothing */
FILE *fopen(const char *path, const char *mode) {
    REAL(fopen); if (writes(mode)) pay(); return real_fopen(path, mode);
}
FILE *fopen64(const char *path, const char *mode) {
    REAL(fopen64); if (writes(mode)) pay(); return real_fopen64(path, mode);
}

int mkdir(const char *p, mode_t m) { REAL(mkdir); pay(); return real_mkdir(p, m); }
int mkdirat(int d, const char *p, mode_t m) { REAL(mkdirat); pay(); return real_mkdirat(d, p, m); }
int mknod(const char *p, mode_t m, dev_t v) { REAL(mknod); pay(); return real_mknod(p, m, v); }
int mknodat(int d, const char *p, mode_t m, dev_t v) {
    REAL(mknodat); pay(); return real_mknodat(d, p, m, v);
}
int link(const char *a, const char *b) { REAL(link); pay(); return real_link(a, b); }
int linkat(int da, const char *a, int db, const char *b, int f) {
    REAL(linkat); pay(); return real_linkat(da, a, db, b, f);
}
int symlink(const char *a, const char *b) { REAL(symlink); pay(); return real_symlink(a, b); }
int symlinkat(const char *a, int d, const char *b) {
    REAL(symlinkat); pay(); return real_symlinkat(a, d, b);
}
int rename(const char *a, const char *b) { REAL(rename); pay(); return real_rename(a, b); }
int renameat(int da, const char *a, int db, const char *b) {
    REAL(renameat); pay(); return real_renameat(da, a, db, b);
}
int renameat2(int da, const char *a, int db, const char *b, unsigned int f) {
    REAL(renameat2); pay(); return real_renameat2(da, a, db, b, f);
}
int unlink(const char *p) { REAL(unlink); pay(); return real_unlink(p); }
int unlinkat(int d, const char *p, int f) { REAL(unlinkat); pay(); return real_unlinkat(d, p, f); }
int rmdir(const char *p) { REAL(rmdir); pay(); return real_rmdir(p); }

/* the CLI leaves by os._exit (no finalization): count there too, destructors do not run */
void _exit(int status) {
    REAL(_exit); shim_count(); real__exit(status); __builtin_unreachable();
}
"""

# what `check` times: the calls Python's own code makes for each kind of create
CHECK = """
import os, sys, time
root, count = sys.argv[1], int(sys.argv[2])
os.mkdir(os.path.join(root, "d"))
def timed(make):
    start = time.perf_counter()
    for i in range(count):
        make(i)
    return (time.perf_counter() - start) / count * 1e6
seed = os.path.join(root, "seed")
open(seed, "w").close()
out = {
    "open(w)": timed(lambda i: open(os.path.join(root, "d", f"f{i}"), "w").close()),
    "os.mkdir": timed(lambda i: os.mkdir(os.path.join(root, "d", f"m{i}"))),
    "os.link": timed(lambda i: os.link(seed, os.path.join(root, "d", f"l{i}"),
                                       follow_symlinks=False)),
    "os.symlink": timed(lambda i: os.symlink("seed", os.path.join(root, "d", f"s{i}"))),
    "open(r)": timed(lambda i: open(seed, "rb").close()),
}
# 8 threads linking at once: on GPFS the round trips overlap, so must the shim's sleeps
from concurrent.futures import ThreadPoolExecutor
def threaded():
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: os.link(seed, os.path.join(root, "d", f"t{i}")), range(count)))
start = time.perf_counter()
threaded()
out["os.link/8threads"] = (time.perf_counter() - start) / count * 1e6
print(" ".join(f"{k}={v:.1f}" for k, v in out.items()))
"""


def build(directory: Path) -> Path:
    """Compile the shim into `directory`; returns the .so path."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("the latency shim needs a C compiler (cc/gcc)")
    source = directory / "latency_shim.c"
    source.write_text(SOURCE)
    library = directory / "latency_shim.so"
    subprocess.run(
        [compiler, "-O2", "-shared", "-fPIC", "-Wall", "-o", str(library), str(source), "-ldl"],
        check=True,
    )
    return library


def environ(library: Path, delay_us: int, count_file: Path | None = None) -> dict[str, str]:
    """The environment a process needs to run under the shim (os.environ plus)."""
    env = {**os.environ, "LD_PRELOAD": str(library), DELAY_VAR: str(delay_us)}
    if count_file is not None:
        env[COUNT_VAR] = str(count_file)
    return env


def delayed_calls(count_file: Path) -> int:
    """Calls the shim delayed, summed over every process that exited."""
    if not count_file.exists():
        return 0
    return sum(int(line.split()[1]) for line in count_file.read_text().splitlines() if line)


def check(library: Path, delay_us: int, count: int = 1000) -> dict[str, dict[str, float]]:
    """µs per call of Python's creates, without and with the shim: proves the shim sees
    them (a create that is not delayed would cost the same in both rows) and what one
    delayed call really costs (nanosleep overshoots by the timer slack)."""
    rows: dict[str, dict[str, float]] = {}
    for label, env in (("plain", dict(os.environ)), ("shim", environ(library, delay_us))):
        with tempfile.TemporaryDirectory(prefix="shim-check-") as root:
            out = subprocess.run(
                [sys.executable, "-c", CHECK, root, str(count)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        rows[label] = {k: float(v) for k, v in (pair.split("=") for pair in out.split())}
    single = [k for k in rows["shim"] if k not in ("open(r)", "os.link/8threads")]
    missed = [k for k in single if rows["shim"][k] < delay_us * 0.9]
    if missed:
        sys.exit(f"the latency shim did not delay {', '.join(missed)}: {rows}")
    if rows["shim"]["open(r)"] > delay_us / 2:
        sys.exit(f"the latency shim delayed a read-only open: {rows}")
    if rows["shim"]["os.link/8threads"] > delay_us / 3:
        sys.exit(f"the latency shim's delays did not overlap across threads: {rows}")
    return rows


def describe(rows: dict[str, dict[str, float]], delay_us: int) -> str:
    return f"shim check (+{delay_us} us, µs per call, plain -> shim): " + ", ".join(
        f"{k} {rows['plain'][k]:.0f} -> {rows['shim'][k]:.0f}" for k in rows["plain"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-us", type=int, default=1000)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="latency-shim-") as work:
        start = time.perf_counter()
        library = build(Path(work))
        print(f"built {library.name} in {time.perf_counter() - start:.2f}s")
        print(describe(check(library, opts.delay_us), opts.delay_us))


if __name__ == "__main__":
    main()

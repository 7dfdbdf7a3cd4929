"""Benchmark: our /proc scan vs `fuser` and `lsof +D` on the same build directory, same run.

Spawns ~2,000 sleeping processes (some with their cwd inside the build, some running a
copy of `sleep` from the build's bin/), then times, per 1,000 processes:
  - `procscan.scan([build])` in-process (what the agent does every pass),
  - `python -m nsls2_artifacts.procscan BUILD` as a command (includes interpreter start),
  - `fuser -m BUILD` (every process on the build's filesystem: cheaper question, same walk),
  - `fuser -v BUILD` (processes using the directory itself, not the tree below it),
  - `lsof +D BUILD` (the tree below the directory: the same question we answer).
Prints a table and the ratios. Every process is killed at the end (and `sleep` exits on its
own after 10 minutes if this script is killed). Usage: python benchmarks/bench_procscan.py
[--processes N] [--files N] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nsls2_artifacts import procscan

SLEEP_SECONDS = "600"  # bound: orphans die on their own


def make_build(root: Path, files: int) -> Path:
    """A build-like tree: bin/sleep plus `files` small files in 50 subdirectories."""
    build = root / "envs" / "bench" / "2026.01.01T000000Z-0badcafe"
    (build / "bin").mkdir(parents=True)
    shutil.copy2("/bin/sleep", build / "bin" / "sleep")
    for index in range(files):
        sub = build / "lib" / f"pkg{index % 50:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"mod{index}.py").write_text("x = 1\n")
    return build


def spawn(build: Path, count: int) -> tuple[list[subprocess.Popen[bytes]], set[int]]:
    """`count` sleepers: every 10th with cwd in the build, every 25th exe from the build."""
    procs, inside = [], set()
    for index in range(count):
        argv, cwd = ["/bin/sleep", SLEEP_SECONDS], "/"
        if index % 25 == 0:
            argv = [str(build / "bin" / "sleep"), SLEEP_SECONDS]
        elif index % 10 == 0:
            cwd = str(build / "lib" / "pkg00")
        proc = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True
        )
        procs.append(proc)
        if argv[0] != "/bin/sleep" or cwd != "/":
            inside.add(proc.pid)
    return procs, inside


def wait_exec(procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """Until every child has exec'd (a forked child still shows our exe and environ)."""
    ours = os.readlink("/proc/self/exe")
    deadline = time.monotonic() + timeout
    pending = list(procs)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if os.readlink(f"/proc/{p.pid}/exe") == ours]
        time.sleep(0.05)


def timed(command: list[str], repeat: int) -> tuple[float, str]:
    """Median wall time of a command (seconds) and its last stdout+stderr."""
    times, output = [], ""
    for _ in range(repeat):
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        times.append(time.perf_counter() - started)
        output = result.stdout + result.stderr
    return statistics.median(times), output


def pids_in(text: str) -> set[int]:
    return {int(tok) for tok in text.replace(":", " ").split() if tok.isdigit()}


def lsof_pids(text: str) -> set[int]:
    pids = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 1 and fields[1].isdigit():
            pids.add(int(fields[1]))
    return pids


PY = platform.python_version()


def cpu_model() -> str:
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2000)
    parser.add_argument("--files", type=int, default=2000, help="files in the build tree")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    missing = [tool for tool in ("fuser", "lsof") if not shutil.which(tool)]
    if missing:
        print(f"missing {missing}: apt-get install -y psmisc lsof", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-procscan-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        build = make_build(root, args.files)
        started = time.perf_counter()
        procs, inside = spawn(build, args.processes)
        spawned = time.perf_counter() - started
        wait_exec(procs)
        total = sum(1 for name in os.listdir("/proc") if name.isdigit())
        per_k = 1000 / total

        procscan.scan([build])  # warm the dentry cache for everyone alike
        ours = []
        for _ in range(args.repeat):
            result = procscan.scan([build])
            ours.append(result.seconds)
        ours_s = statistics.median(ours)
        found = {u.pid for u in result.uses[str(build)]}
        cli_s, _ = timed(
            [sys.executable, "-m", "nsls2_artifacts.procscan", str(build)], args.repeat
        )
        fuser_m_s, fuser_m_out = timed(["fuser", "-m", str(build)], args.repeat)
        fuser_v_s, fuser_v_out = timed(["fuser", "-v", str(build)], args.repeat)
        lsof_s, lsof_out = timed(["lsof", "-n", "-w", "+D", str(build)], max(1, args.repeat // 2))

        print(f"# /proc scan benchmark — {cpu_model()}, {os.cpu_count()} CPUs, Python {PY}")
        print(
            f"processes in /proc: {total} ({len(procs)} spawned in {spawned:.1f}s; "
            f"{len(inside)} use the build); build tree: {args.files} files; median of {args.repeat}"
        )
        rows = [
            ("procscan.scan (in-process)", ours_s, len(found & inside), "exact: tree under build"),
            (
                "python -m nsls2_artifacts.procscan",
                cli_s,
                len(inside),
                "same, incl. interpreter start",
            ),
            ("fuser -m BUILD", fuser_m_s, len(pids_in(fuser_m_out) & inside), "whole filesystem"),
            (
                "fuser -v BUILD",
                fuser_v_s,
                len(pids_in(fuser_v_out) & inside),
                "the dir itself only",
            ),
            ("lsof +D BUILD", lsof_s, len(lsof_pids(lsof_out) & inside), "tree under build"),
        ]
        print(f"{'tool':38} {'total ms':>9} {'ms/1k procs':>11} {'found':>6}  scope")
        for name, seconds, hits, scope in rows:
            print(
                f"{name:38} {seconds * 1000:9.1f} {seconds * 1000 * per_k:11.1f} {hits:6d}  {scope}"
            )
        print(f"ratio fuser -m / procscan: {fuser_m_s / ours_s:.1f}x")
        print(f"ratio fuser -v / procscan: {fuser_v_s / ours_s:.1f}x")
        print(f"ratio lsof +D  / procscan: {lsof_s / ours_s:.1f}x")
        print(f"ratio lsof +D  / procscan CLI: {lsof_s / cli_s:.1f}x")
        if found & inside != inside:
            print(f"WARNING: procscan missed {len(inside - found)} processes", file=sys.stderr)
            return 1
        return 0
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

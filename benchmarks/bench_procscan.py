"""Benchmark: our /proc scan vs `fuser` and `lsof +D` on the same build directory, same run.

Spawns ~2,000 sleeping processes (some with their cwd inside the build, some running a
copy of `sleep` from the build's bin/), then times, per 1,000 processes:
  - `procscan.scan([build])` in-process (what the agent does every pass),
  - `python -m nsls2_artifacts.procscan BUILD` as a command (includes interpreter start),
  - `fuser -m BUILD` (every process on the build's filesystem: cheaper question, same walk),
  - `fuser -v BUILD` (processes using the directory itself, not the tree below it),
  - `lsof +D BUILD` (the tree below the directory: the same question we answer).
With `--containers N` (default 20 as root), N more users of the build each run in a private
mount namespace with the build bind-mounted at another path (as in a container): the
"found" column shows which tools see them. Prints a table and the ratios. Every process
is killed at the end (and `sleep` exits on its own after 10 minutes if this script is
killed). Usage: python benchmarks/bench_procscan.py [--processes N] [--files N]
[--repeat N] [--containers N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
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


def spawn_containers(build: Path, root: Path, count: int) -> list[subprocess.Popen[bytes]]:
    """`count` sleepers each in its own private mount namespace (a container), the build
    bind-mounted at ROOT/view (empty on the host) and their cwd inside it: users that
    only a namespace-aware scan sees. Needs root and util-linux `unshare`."""
    view = root / "view"
    view.mkdir(exist_ok=True)
    script = (
        f"mount --bind {build} {view} && cd {view}/lib/pkg00 && exec /bin/sleep {SLEEP_SECONDS}"
    )
    procs = [
        subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    deadline = time.monotonic() + 60
    for proc in procs:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{proc.pid}/exe").endswith("/sleep"):
                    break
            time.sleep(0.02)
    return procs


def wait_exec(procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """Until every child has exec'd (a forked child still shows our exe and environ)."""
    ours = os.readlink("/proc/self/exe")
    deadline = time.monotonic() + timeout
    pending = list(procs)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if os.readlink(f"/proc/{p.pid}/exe") == ours]
        time.sleep(0.05)


def run_once(command: list[str]) -> tuple[float, float, str]:
    """Wall and CPU seconds (user+sys of the child) of one command, and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.stdout + result.stderr


def scan_once(build: Path) -> tuple[float, float, procscan.ScanResult]:
    cpu_started = time.process_time()
    result = procscan.scan([build])
    return result.seconds, time.process_time() - cpu_started, result


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
    parser.add_argument(
        "--containers",
        type=int,
        default=20 if os.geteuid() == 0 and shutil.which("unshare") else 0,
        help="extra users of the build, each in its own mount namespace (root only)",
    )
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
        wait_exec(procs)
        contained = spawn_containers(build, root, args.containers)
        procs += contained
        inside |= {p.pid for p in contained}
        spawned = time.perf_counter() - started
        total = sum(1 for name in os.listdir("/proc") if name.isdigit())
        per_k = 1000 / total

        commands = {
            "python -m nsls2_artifacts.procscan": [
                sys.executable,
                "-m",
                "nsls2_artifacts.procscan",
                str(build),
            ],
            "fuser -m BUILD": ["fuser", "-m", str(build)],
            "fuser -v BUILD": ["fuser", "-v", str(build)],
            "lsof +D BUILD": ["lsof", "-n", "-w", "+D", str(build)],
        }
        procscan.scan([build])  # warm the dentry cache for everyone alike
        walls: dict[str, list[float]] = {name: [] for name in ["procscan.scan", *commands]}
        cpus: dict[str, list[float]] = {name: [] for name in walls}
        outputs: dict[str, str] = {}
        # round-robin, so a load spike from other jobs on the machine hits every tool alike
        for _ in range(args.repeat):
            wall, cpu, result = scan_once(build)
            walls["procscan.scan"].append(wall)
            cpus["procscan.scan"].append(cpu)
            for name, command in commands.items():
                wall, cpu, outputs[name] = run_once(command)
                walls[name].append(wall)
                cpus[name].append(cpu)
        wall_ms = {name: statistics.median(v) * 1000 for name, v in walls.items()}
        cpu_ms = {name: statistics.median(v) * 1000 for name, v in cpus.items()}
        found = {
            "procscan.scan": {u.pid for u in result.uses[str(build)]},
            "python -m nsls2_artifacts.procscan": pids_in(
                outputs["python -m nsls2_artifacts.procscan"].replace("pid ", "")
            ),
            "fuser -m BUILD": pids_in(outputs["fuser -m BUILD"]),
            "fuser -v BUILD": pids_in(outputs["fuser -v BUILD"]),
            "lsof +D BUILD": lsof_pids(outputs["lsof +D BUILD"]),
        }
        scope = {
            "procscan.scan": "tree under the build (in-process, what the agent runs)",
            "python -m nsls2_artifacts.procscan": "same, plus interpreter start",
            "fuser -m BUILD": "every process on the build's filesystem",
            "fuser -v BUILD": "the directory itself only",
            "lsof +D BUILD": "tree under the build",
        }
        print(f"# /proc scan benchmark — {cpu_model()}, {os.cpu_count()} CPUs, Python {PY}")
        print(
            f"processes in /proc: {total} ({len(procs)} spawned in {spawned:.1f}s; "
            f"{len(inside)} use the build, {len(contained)} of them from their own mount "
            f"namespace); build tree: {args.files} files; "
            f"median of {args.repeat}, tools interleaved"
        )
        print(
            f"{'tool':36} {'wall ms':>8} {'wall/1k':>8} {'cpu ms':>8} {'cpu/1k':>8} "
            f"{'found':>6}  scope"
        )
        for name in walls:
            print(
                f"{name:36} {wall_ms[name]:8.1f} {wall_ms[name] * per_k:8.1f} {cpu_ms[name]:8.1f} "
                f"{cpu_ms[name] * per_k:8.1f} {len(found[name] & inside):6d}  {scope[name]}"
            )
        ours = "procscan.scan"
        for name in ("fuser -m BUILD", "fuser -v BUILD", "lsof +D BUILD"):
            print(
                f"ratio {name} / {ours}: wall {wall_ms[name] / wall_ms[ours]:.1f}x, "
                f"cpu {cpu_ms[name] / cpu_ms[ours]:.1f}x"
            )
        cli = "python -m nsls2_artifacts.procscan"
        print(
            f"ratio lsof +D BUILD / {cli}: wall {wall_ms['lsof +D BUILD'] / wall_ms[cli]:.1f}x, "
            f"cpu {cpu_ms['lsof +D BUILD'] / cpu_ms[cli]:.1f}x"
        )
        found = found[ours]
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

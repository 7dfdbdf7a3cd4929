"""Extraction when creating a file is slow (GPFS, NFS): the agent's `safe_extract` vs
`tar -I zstd -xf`, both run under a harness adding a fixed delay to file creation
(what a parallel filesystem makes slow; data writes stream).

The delay is paid per call, so tar (one file at a time) pays it once per file while
the agent, once its probe sees slow writes, creates files from the 64 threads of
agent/slowfs.py's pool. Two
harnesses (`--harness`, both by default):
- `strace`: `strace` injects the delay on exit of every `openat` (reads pay it too);
  each is a ptrace stop served by one tracer, so the agent's threads wait in line and
  strace's own stop is in both sides. Needs `strace` (Debian package).
- `shim`: latency_shim.py's LD_PRELOAD library sleeps in the calling thread before
  every create (open with O_CREAT, mkdir, link, symlink, rename, unlink), so threads
  overlap their waits as on GPFS, and reads run at full speed. Needs `cc`.

    .venv/bin/python benchmarks/bench_slow_metadata.py [--archive A.tar.zst] [--delays-us 500 1000]
        [--harness strace shim]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import latency_shim  # noqa: E402

EXTRACT = """
import sys
from pathlib import Path
from nsls2_artifacts.agent import extract
extract.safe_extract(Path(sys.argv[1]), "tar.zst", Path(sys.argv[2]), build_id="bench",
                     max_members=10**7, max_bytes=1 << 40)
"""


def demo_archive(work: Path) -> Path:
    """The demo env's archive, published from the offline channel (cached channel)."""
    from bench_deploy import cli, make_site

    config = make_site(work, 10)
    cli(config, "publish", "demo", timeout=1800)
    return next((work / "store" / "demo").glob("*/env.tar.zst"))


def timed(harness: str, delay_us: int, argv: list[str], shim: Path | None) -> float:
    """Wall seconds of `argv` under `harness` ("strace", or "shim" with the built `shim`)."""
    env = None
    if harness == "strace":
        argv = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=openat",
                "-e", f"inject=openat:delay_exit={delay_us}", *argv]  # fmt: skip
    else:
        assert shim is not None
        env = latency_shim.environ(shim, delay_us)
    start = time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=None)
    parser.add_argument("--delays-us", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--scratch", type=Path, default=Path("/dev/shm"))
    parser.add_argument(
        "--harness", nargs="+", choices=("strace", "shim"), default=["strace", "shim"]
    )
    opts = parser.parse_args()
    if "strace" in opts.harness and shutil.which("strace") is None:
        sys.exit("--harness strace needs strace (apt-get install strace)")
    work = Path(tempfile.mkdtemp(prefix="bench-slowmeta-"))
    try:
        shim = latency_shim.build(work) if "shim" in opts.harness else None
        archive = opts.archive or demo_archive(work)
        print(f"archive: {archive} ({archive.stat().st_size / 1e6:.1f} MB)")
        for delay in opts.delays_us:
            for harness in opts.harness:
                compare(harness, delay, archive, opts.scratch, shim)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compare(harness: str, delay: int, archive: Path, scratch: Path, shim: Path | None) -> None:
    times = {}
    for side in ("tar", "agent"):
        dest = Path(tempfile.mkdtemp(dir=scratch, prefix=f"slowmeta-{side}-"))
        if side == "tar":
            argv = ["tar", "-I", "zstd", "-xf", str(archive), "-C", str(dest)]
        else:
            argv = [sys.executable, "-c", EXTRACT, str(archive), str(dest)]
        times[side] = timed(harness, delay, argv, shim)
        shutil.rmtree(dest)
    what = "openat (strace)" if harness == "strace" else "create (shim)"
    print(
        f"{what} +{delay} us: tar {times['tar']:.2f}s  agent {times['agent']:.2f}s "
        f"(incl. interpreter start) -> ratio {times['agent'] / times['tar']:.2f}x"
    )


if __name__ == "__main__":
    main()

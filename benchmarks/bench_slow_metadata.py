"""Extraction when creating a file is slow (GPFS, NFS): the agent's `safe_extract` vs
`tar -I zstd -xf`, both run under `strace` injecting a fixed delay into every `openat`
(file creation is what a parallel filesystem makes slow; data writes stream).

The delay is injected per call, so tar (one file at a time) pays it once per file while
the agent, once its probe sees slow writes, creates files from four threads. strace's
own ptrace stop per `openat` is in both sides. Needs `strace` (Debian package).

    .venv/bin/python benchmarks/bench_slow_metadata.py [--archive A.tar.zst] [--delays-us 500 1000]
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


def timed_under_strace(delay_us: int, argv: list[str]) -> float:
    inject = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=openat",
              "-e", f"inject=openat:delay_exit={delay_us}"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run([*inject, *argv], check=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=None)
    parser.add_argument("--delays-us", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--scratch", type=Path, default=Path("/dev/shm"))
    opts = parser.parse_args()
    if shutil.which("strace") is None:
        sys.exit("needs strace (apt-get install strace)")
    work = Path(tempfile.mkdtemp(prefix="bench-slowmeta-"))
    archive = opts.archive or demo_archive(work)
    print(f"archive: {archive} ({archive.stat().st_size / 1e6:.1f} MB)")
    for delay in opts.delays_us:
        times = {}
        for side in ("tar", "agent"):
            dest = Path(tempfile.mkdtemp(dir=opts.scratch, prefix=f"slowmeta-{side}-"))
            if side == "tar":
                argv = ["tar", "-I", "zstd", "-xf", str(archive), "-C", str(dest)]
            else:
                argv = [sys.executable, "-c", EXTRACT, str(archive), str(dest)]
            times[side] = timed_under_strace(delay, argv)
            shutil.rmtree(dest)
        print(
            f"openat +{delay} us: tar {times['tar']:.2f}s  agent {times['agent']:.2f}s "
            f"(incl. interpreter start) -> ratio {times['agent'] / times['tar']:.2f}x"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()

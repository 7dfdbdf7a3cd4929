"""Pack benchmark: our pack step vs stock `conda-pack -o x.tar.gz` vs plain `tar | zstd -T0`.

All of them pack the same prefix in one run (interleaved, median of --repeat), and the script
prints seconds, sizes and the ratios the build-side issue targets: our time at most 1/3
of stock conda-pack's gzip time, our archive at most 0.9x the gzip one.

    .venv/bin/python benchmarks/bench_pack.py                  # builds the demo env offline
    .venv/bin/python benchmarks/bench_pack.py --prefix /path/to/env
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nsls2_artifacts import pack as ourpack  # noqa: E402


def demo_prefix(work: Path) -> Path:
    """Build the demo env from the offline channel (cached) into `work/prefix`."""
    from nsls2_artifacts import devchannel, install, solve
    from nsls2_artifacts.config import parse_config
    from nsls2_artifacts.manifest import load_manifest

    channel = devchannel.build_channel(
        devchannel.default_cache_dir() / "bench-channel", progress=lambda m: print(f"  {m}")
    )
    site = parse_config(
        f"manifests: {ROOT / 'manifests'}\nstore: {work / 'store'}\n"
        f"deploy_root: {work / 'deploy'}\nchannel_mirrors: {{conda-forge: {channel}}}\n",
        source=None,
        base=work,
    )
    manifest = load_manifest(site.manifests, "demo")
    solution = solve.solve(manifest, site, cache_dir=devchannel.default_cache_dir() / "rattler")
    prefix = work / "prefix"
    install.install(solution, prefix, devchannel.default_cache_dir() / "rattler")
    return prefix


def timed(fn) -> tuple[float, float]:  # noqa: ANN001 - a zero-argument callable
    """(wall seconds, CPU seconds of this process's threads and its children)."""
    before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(
        (a.ru_utime + a.ru_stime) - (b.ru_utime + b.ru_stime)
        for a, b in zip(after, before, strict=True)
    )
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=Path, help="an installed conda prefix to pack")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs per method")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-pack-"))
    try:
        prefix = args.prefix or demo_prefix(work)
        files = sum(len(f) + len(d) for _, d, f in os.walk(prefix))
        size = sum(os.lstat(os.path.join(r, n)).st_size for r, _, fs in os.walk(prefix) for n in fs)
        conda_pack = shutil.which("conda-pack", path=str(Path(sys.executable).parent))
        if not conda_pack or not shutil.which("zstd"):
            sys.exit("needs conda-pack (pip) and zstd (apt) on PATH")
        out = work / "out"
        out.mkdir()
        methods = {
            "ours (zstd)": lambda: ourpack.pack(prefix, out / "ours.tar.zst"),
            "ours (zstd -6)": lambda: ourpack.pack(prefix, out / "ours6.tar.zst", level=6),
            "ours (gzip)": lambda: ourpack.pack(prefix, out / "ours.tar.gz", fmt="gz"),
            "stock conda-pack gzip": lambda: subprocess.run(
                [conda_pack, "-p", str(prefix), "-o", str(out / "stock.tar.gz"), "--force", "-q"],
                check=True,
            ),
            "plain tar + zstd -T0": lambda: subprocess.run(
                [
                    "tar",
                    "-I",
                    "zstd -T0",
                    "-cf",
                    str(out / "plain.tar.zst"),
                    "-C",
                    str(prefix),
                    ".",
                ],
                check=True,
            ),
        }
        outputs = {
            "ours (zstd)": "ours.tar.zst",
            "ours (zstd -6)": "ours6.tar.zst",
            "ours (gzip)": "ours.tar.gz",
            "stock conda-pack gzip": "stock.tar.gz",
            "plain tar + zstd -T0": "plain.tar.zst",
        }
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
        for fn in methods.values():  # warm-up, untimed: page cache, imports, first-call costs
            fn()
        for _ in range(args.repeat):
            for name, fn in methods.items():
                # a fresh file each time, as in publish: rewriting a file in place makes ext4
                # flush it on close (auto_da_alloc), which would tax whoever runs next
                (out / outputs[name]).unlink(missing_ok=True)
                runs[name].append(timed(fn))
        median = {name: statistics.median(w for w, _ in r) for name, r in runs.items()}
        cpu = {name: statistics.median(c for _, c in r) for name, r in runs.items()}
        # fastest run: the one least disturbed by other load on a shared machine
        fastest = {name: min(w for w, _ in r) for name, r in runs.items()}
        sizes = {name: (out / outputs[name]).stat().st_size for name in methods}

        stock_t, stock_s = median["stock conda-pack gzip"], sizes["stock conda-pack gzip"]
        stock_c = cpu["stock conda-pack gzip"]
        print(
            f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {platform.platform()}"
        )
        print(
            f"prefix: {prefix} ({size / 1e6:.0f} MB, {files} files and dirs); median of "
            f"{args.repeat} interleaved runs after a warm-up; "
            f"load average {os.getloadavg()[0]:.1f}\n"
        )
        print(
            f"{'method':24s} {'wall s':>7s} {'x stock':>8s} {'best s':>7s} {'x stock':>8s} "
            f"{'CPU s':>7s} {'x stock':>8s} {'MB':>7s} {'size x stock':>13s}"
        )
        stock_f = fastest["stock conda-pack gzip"]
        for name in methods:
            print(
                f"{name:24s} {median[name]:7.2f} {median[name] / stock_t:8.2f} "
                f"{fastest[name]:7.2f} {fastest[name] / stock_f:8.2f} "
                f"{cpu[name]:7.2f} {cpu[name] / stock_c:8.2f} "
                f"{sizes[name] / 1e6:7.1f} {sizes[name] / stock_s:13.2f}"
            )
        print("\nwall and CPU: medians; best: the fastest run of each method")
        time_ok = median["ours (zstd)"] <= stock_t / 3
        best_ok = fastest["ours (zstd)"] <= stock_f / 3
        size_ok = sizes["ours (zstd)"] <= 0.9 * stock_s
        print(
            f"target time <= 1/3 stock: median {'met' if time_ok else 'MISSED'}, "
            f"fastest runs {'met' if best_ok else 'MISSED'}; "
            f"target size <= 0.9x stock gzip: {'met' if size_ok else 'MISSED'}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

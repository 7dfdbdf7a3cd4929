"""Pack benchmark: our pack step vs stock `conda-pack -o x.tar.gz` vs plain `tar | zstd -T0`.

All three pack the same prefix in one run (interleaved, best of --repeat), and the script
prints seconds, sizes and the ratios the build-side issue targets: our time at most 1/3
of stock conda-pack's gzip time, our archive at most 0.9x the gzip one.

    .venv/bin/python benchmarks/bench_pack.py                  # builds the demo env offline
    .venv/bin/python benchmarks/bench_pack.py --prefix /path/to/env
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
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


def timed(fn) -> float:  # noqa: ANN001 - a zero-argument callable
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=Path, help="an installed conda prefix to pack")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method (best is kept)")
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
            "ours (gzip)": "ours.tar.gz",
            "stock conda-pack gzip": "stock.tar.gz",
            "plain tar + zstd -T0": "plain.tar.zst",
        }
        best = {name: float("inf") for name in methods}
        for _ in range(args.repeat):
            for name, fn in methods.items():
                best[name] = min(best[name], timed(fn))
        sizes = {name: (out / outputs[name]).stat().st_size for name in methods}

        stock_t, stock_s = best["stock conda-pack gzip"], sizes["stock conda-pack gzip"]
        print(
            f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {platform.platform()}"
        )
        print(
            f"prefix: {prefix} ({size / 1e6:.0f} MB, {files} files and dirs); "
            f"best of {args.repeat}\n"
        )
        print(f"{'method':24s} {'seconds':>8s} {'x stock':>8s} {'MB':>8s} {'size x stock':>13s}")
        for name in methods:
            print(
                f"{name:24s} {best[name]:8.2f} {best[name] / stock_t:8.2f} "
                f"{sizes[name] / 1e6:8.1f} {sizes[name] / stock_s:13.2f}"
            )
        time_ok = best["ours (zstd)"] <= stock_t / 3
        size_ok = sizes["ours (zstd)"] <= 0.9 * stock_s
        print(
            f"\ntarget time <= 1/3 stock: {'met' if time_ok else 'MISSED'}; "
            f"target size <= 0.9x stock gzip: {'met' if size_ok else 'MISSED'}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Incremental pack benchmark: a one-package nightly, packed in full vs from the previous build.

For the demo env and a larger one (100+ packages), two builds that differ by one package
(six 1.16.0 -> 1.17.0) are installed at the same scratch path (as publish does) and given
their hash-based pycs. Build A is packed once (the previous nightly). Then build B is packed
in one run, interleaved, median of --repeat:
- full: `pack.pack` as a publish without a previous build runs it;
- incremental: what publish runs with a previous build in a filesystem store: the check of
  A (`pack.checked_archive`: whole-file sha256 before the first byte is used, keeping the
  hash state at each frame) on a worker thread while `pack.pack(previous=A)` lists the
  env, then A's frames copied by offset; the new archive's hash goes on from A's state
  after the last frame both share at the same offset.
Target (issue #20): incremental <= 0.1x full. It also prints archive sizes, frames and how
many were reused, and checks that both archives index the same members with the same hashes.

    .venv/bin/python benchmarks/bench_incremental_pack.py             # demo + large
    .venv/bin/python benchmarks/bench_incremental_pack.py --env demo
    .venv/bin/python benchmarks/bench_incremental_pack.py --env large --other-env-between
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nsls2_artifacts import devchannel, install, pack, solve  # noqa: E402
from nsls2_artifacts.config import parse_config  # noqa: E402
from nsls2_artifacts.manifest import load_manifest  # noqa: E402
from nsls2_artifacts.publish import opened_in_background  # noqa: E402

# The larger env: a typical analysis stack on top of the demo's, 100+ packages once their
# dependencies are in (all from PyPI wheels, repackaged by devchannel.py).
LARGE = (
    "ipykernel",
    "databroker",
    "numpy",
    "scipy",
    "pandas",
    "matplotlib",
    "h5py",
    "xarray",
    "dask",
    "jupyterlab",
    "scikit-image",
    "bokeh",
    "ipywidgets",
)
CACHE = devchannel.default_cache_dir()


def channel_for(env: str) -> tuple[Path, tuple[str, ...]]:
    if env == "demo":
        path = devchannel.build_channel(CACHE / "bench-channel", progress=_say)
        return path, ("ipykernel", "databroker")
    return devchannel.build_channel(CACHE / "bench-channel-large", LARGE, progress=_say), LARGE


def _say(message: str) -> None:
    print(f"  {message}", flush=True)


def install_build(work: Path, channel: Path, requirements: tuple[str, ...], six: str) -> Path:
    """Solve + install the env with `six==SIX` at work/scratch/prefix, then its pycs."""
    manifests = work / f"manifests-{six}"
    (manifests / "bench").mkdir(parents=True, exist_ok=True)
    deps = "\n".join(f'{name} = "*"' for name in requirements)
    (manifests / "bench" / "pixi.toml").write_text(
        '[workspace]\nname = "bench"\nchannels = ["conda-forge"]\nplatforms = ["linux-64"]\n\n'
        f'[dependencies]\npython = "3.11.*"\n{deps}\nsix = "=={six}"\n'
    )
    site = parse_config(
        f"manifests: {manifests}\nstore: {work / 'store'}\n"
        f"deploy_root: {work / 'deploy'}\nchannel_mirrors: {{conda-forge: {channel}}}\n",
        source=None,
        base=work,
    )
    manifest = load_manifest(site.manifests, "bench")
    solution = solve.solve(manifest, site, cache_dir=CACHE / "rattler")
    prefix = work / "scratch" / "prefix"
    shutil.rmtree(prefix, ignore_errors=True)
    install.install(solution, prefix, CACHE / "rattler")
    install.compile_bytecode(prefix, CACHE / "rattler", pack.DEFAULT_EPOCH)
    return prefix


def timed(fn: Callable[[], object]) -> tuple[float, float]:
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


def bench(env: str, repeat: int, work: Path, between: bool = False) -> dict[str, float]:
    print(f"\n== {env} env", flush=True)
    channel, requirements = channel_for(env)
    prefix = install_build(work, channel, requirements, "1.16.0")
    previous = pack.pack(prefix, work / "a.tar.zst")  # last night's build
    if between:  # another env from another channel, into the same rattler cache
        other = "large" if env == "demo" else "demo"
        print(f"installing the {other} env between the two builds", flush=True)
        install_build(work / "other", *channel_for(other), "1.16.0")
    assert previous.index is not None
    prefix = install_build(work, channel, requirements, "1.17.0")
    packages = len(list((prefix / "conda-meta").glob("*.json")))
    files = sum(len(f) for _, _, f in os.walk(prefix))
    size = sum(os.lstat(os.path.join(r, n)).st_size for r, _, fs in os.walk(prefix) for n in fs)
    results: dict[str, pack.PackResult] = {}

    def full() -> None:
        (work / "full.tar.zst").unlink(missing_ok=True)  # a fresh file, as in publish
        results["full"] = pack.pack(prefix, work / "full.tar.zst")

    def incremental() -> None:
        (work / "incr.tar.zst").unlink(missing_ok=True)
        assert previous.index is not None
        # as publish._incremental_pack with a filesystem store: the check of the previous
        # archive (keeping its hash states) runs on a worker thread
        checking = pack.checked_archive(
            previous.path, previous.size, previous.sha256, previous.index
        )
        with opened_in_background(checking) as stream:
            last = pack.PreviousPack(None, previous.index, opener=stream)
            results["incremental"] = pack.pack(prefix, work / "incr.tar.zst", previous=last)

    methods = {"full": full, "incremental": incremental}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    for fn in methods.values():  # warm-up, untimed
        fn()
    for _ in range(repeat):
        for name, fn in methods.items():
            runs[name].append(timed(fn))
    wall = {name: statistics.median(w for w, _ in r) for name, r in runs.items()}
    best = {name: min(w for w, _ in r) for name, r in runs.items()}
    cpu = {name: statistics.median(c for _, c in r) for name, r in runs.items()}
    full_index, incr_index = results["full"].index, results["incremental"].index
    assert full_index is not None and incr_index is not None
    same = full_index.entries == incr_index.entries
    print(
        f"prefix: {packages} packages, {files} files, {size / 1e6:.0f} MB; "
        f"archive {results['full'].size / 1e6:.1f} MB in {len(full_index.frames)} frames; "
        f"incremental reused {results['incremental'].reused_frames} frames, packed "
        f"{results['incremental'].packed_frames}; same members and hashes: {same}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'method':12s} {'wall s':>7s} {'best s':>7s} {'CPU s':>7s} {'MB':>7s}")
    for name in methods:
        print(
            f"{name:12s} {wall[name]:7.2f} {best[name]:7.2f} {cpu[name]:7.2f} "
            f"{results[name].size / 1e6:7.1f}"
        )
    ratio = wall["incremental"] / wall["full"]
    best_ratio = best["incremental"] / best["full"]
    cpu_ratio = cpu["incremental"] / cpu["full"]
    print(
        f"incremental / full: wall {ratio:.3f} (best runs {best_ratio:.3f}, CPU {cpu_ratio:.3f}); "
        f"target <= 0.1: {'met' if ratio <= 0.1 else 'MISSED'}",
        flush=True,
    )
    return {"ratio": ratio, "best": best_ratio, "cpu": cpu_ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=["demo", "large", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs per method")
    parser.add_argument(
        "--other-env-between",
        action="store_true",
        help="install the other env (its own channel, the same rattler cache) between the "
        "two builds: rattler re-extracts the packages they share",
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    for env in ["demo", "large"] if args.env == "both" else [args.env]:
        work = Path(tempfile.mkdtemp(prefix=f"bench-incremental-{env}-"))
        try:
            bench(env, args.repeat, work, args.other_env_between)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Deduplicated deploys of the real envs (issue #20): the demo env and the larger one
(100+ packages) of bench_incremental_pack.py, a one-package nightly (six 1.16.0 -> 1.17.0)
deployed next to the previous build (hardlinks, skipped frames) vs in full.

bench_dedup.py measures the same on generated envs; this one installs the real envs with
rattler at the same scratch path (as publish does), packs build A in full and the nightly
B incrementally from A (as publish does with a previous build), and commits both into a
filesystem store with their content index (bench_dedup's `commit`). A is deployed with a
real `agent --once`; then bench_dedup's interleaved rounds (warm-up, then `--rounds`):
B linked next to A, then B in full into a fresh deploy root. Times are the agent's
`event=deploy seconds`; the ratio is of the medians, with every round's, and each
deploy's verify/extract/unpack/smoke/sync split and what was read to verify it (`event=verified`:
the whole archive, or the frames a linked deploy keeps). `--s3` puts both builds in a
SeaweedFS store on 127.0.0.1 (tests/s3server.py) and the agents deploy from it.

`--latency-shim [--delay-us 1000]` runs every `agent --once` (A's, the linked and the
full ones) under latency_shim.py's LD_PRELOAD library, as bench_facility does: +1 ms
before every create, mkdir, link, symlink, rename and unlink of the agent and of its
children (conda-unpack, the smoke test), reads at full speed: GPFS-like metadata
latency on the real envs. The shim is checked first (µs per call, plain vs shim).

    .venv/bin/python benchmarks/bench_dedup_real.py [--env demo|large|both]
        [--rounds 3] [--warmup 1] [--deploy-dir /dev/shm] [--scratch DIR] [--keep]
        [--delete-first] [--latency-shim [--delay-us 1000]] [--s3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH.parent / "tests"))

import bench_dedup  # noqa: E402
from bench_dedup import (  # noqa: E402
    Latency,
    _load,
    add_latency_options,
    agent_once,
    commit,
    latency,
    report,
    rounds,
    site,
    split,
)
from bench_incremental_pack import channel_for, install_build  # noqa: E402

from nsls2_artifacts import pack  # noqa: E402
from nsls2_artifacts.contentindex import ContentIndex  # noqa: E402
from nsls2_artifacts.records import BuildManifest  # noqa: E402
from nsls2_artifacts.store.s3 import S3Store  # noqa: E402


def packed_build(
    work: Path,
    store: Path,
    prefix: Path,
    name: str,
    created: datetime,
    previous: tuple[Path, ContentIndex] | None,
) -> tuple[BuildManifest, pack.PackResult]:
    """Pack `prefix` into a staging directory (incrementally from `previous`'s archive,
    as publish does with a previous build) and commit it into `store`."""
    staging = work / f"staging-{name}"
    staging.mkdir()
    last = None
    if previous is not None:
        archive, index = previous
        last = pack.PreviousPack(open(archive, "rb"), index)  # noqa: SIM115 - closed below
    try:
        result = pack.pack(prefix, staging / "env.tar.zst", previous=last)
    finally:
        if last is not None and last.stream is not None:
            last.stream.close()  # type: ignore[attr-defined]
    assert result.index is not None
    return commit(store, staging, result.index, created), result


def bench(env: str, opts: argparse.Namespace, harness: Latency) -> None:
    print(f"\n== {env} env", flush=True)
    work = Path(tempfile.mkdtemp(prefix=f"bench-dedup-real-{env}-", dir=opts.scratch))
    roots = (
        Path(tempfile.mkdtemp(prefix=f"bench-dedup-real-{env}-", dir=opts.deploy_dir))
        if opts.deploy_dir
        else work
    )
    store = work / "store"
    s3 = _s3_store(work) if opts.s3 else None
    where = s3.url if s3 is not None else store  # what the agents' site configs name
    try:
        channel, requirements = channel_for(env)
        prefix = install_build(work, channel, requirements, "1.16.0")
        first, packed = packed_build(
            work, store, prefix, "a", datetime(2026, 12, 1, 2, tzinfo=UTC), None
        )
        assert packed.index is not None
        packages = len(list((prefix / "conda-meta").glob("*.json")))
        print(
            f"build A: {packages} packages, {len(packed.index.entries)} entries, "
            f"{sum(e.size for e in packed.index.entries) / 1e6:.0f} MB, archive "
            f"{packed.size / 1e6:.0f} MB in {len(packed.index.frames)} frames "
            f"(packed in {packed.seconds:.1f}s)"
        )
        if s3 is not None:
            _upload(s3, store, first)
        wall, fields = agent_once(site(work, "linked", where, roots=roots), harness)
        print(
            f"build A, full deploy (no donor): {float(fields['seconds']):.2f}s "
            f"({split(fields)}; agent --once {wall:.2f}s)"
        )
        prefix = install_build(work, channel, requirements, "1.17.0")
        second, packed = packed_build(
            work,
            store,
            prefix,
            "b",
            datetime(2026, 12, 2, 2, tzinfo=UTC),
            (store / "demo" / first.build_id / "env.tar.zst", packed.index),
        )
        print(
            f"nightly B (six 1.17.0): packed in {packed.seconds:.1f}s, reused "
            f"{packed.reused_frames} frames, packed {packed.packed_frames}"
        )
        if s3 is not None:
            _upload(s3, store, second)
        print(f"load average before the rounds: {_load()}; deploy roots in {roots}", flush=True)
        pairs = rounds(roots, work, where, second, opts, harness)  # type: ignore[arg-type]
        report(roots, second, pairs)
        print(f"load average after: {_load()}", flush=True)
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(roots, ignore_errors=True)


def _s3_store(work: Path) -> S3Store:
    """A SeaweedFS server on 127.0.0.1 for this run (stopped at exit), the agents' site
    configs pointed at a fresh prefix of it."""
    import atexit

    from s3server import CREDENTIALS, S3Server

    from nsls2_artifacts.config import StoreOptions

    os.environ.update(CREDENTIALS)  # the agents (subprocesses) find the key there
    server = S3Server(work / "s3")
    server.start()
    atexit.register(server.kill)
    options = server.site_options()
    bench_dedup.SITE_EXTRA = (
        "store_options: {" + ", ".join(f"{k}: '{v}'" for k, v in options.items()) + "}\n"
    )
    return S3Store(server.new_store_url(), StoreOptions(**options), local_dir=work)


def _upload(s3: S3Store, store: Path, manifest: BuildManifest) -> None:
    """Commit a build of the filesystem store into the S3 one (as publish would)."""
    staging = s3.staging_dir(manifest.name, manifest.build_id)
    for name in manifest.files():
        shutil.copy(store / manifest.name / manifest.build_id / name, staging / name)
    s3.commit_build(staging, manifest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=["demo", "large", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of both deploys")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--scratch", type=Path, default=None, help="work directory's parent")
    parser.add_argument(
        "--deploy-dir", type=Path, default=None, help="deploy roots' parent (/dev/shm: tmpfs)"
    )
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--delete-first",
        action="store_true",
        help="remove the previous round's full deploy root before the linked deploy, not "
        "between the two deploys",
    )
    add_latency_options(parser)
    parser.add_argument("--s3", action="store_true", help="deploy from a local SeaweedFS")
    opts = parser.parse_args()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.platform()}; load {_load()}"
    )
    print(f"code: {_commit()}; deploy roots under {opts.deploy_dir or opts.scratch or 'TMPDIR'}")
    with tempfile.TemporaryDirectory(prefix="bench-dedup-real-shim-", dir=opts.scratch) as tmp:
        harness = latency(opts, Path(tmp))
        print(f"metadata latency: {harness.describe()}", flush=True)
        for env in ["demo", "large"] if opts.env == "both" else [opts.env]:
            bench(env, opts, harness)


def _commit() -> str:
    """The checkout's commit, and whether the agent's code (nsls2_artifacts/) differs
    from it: the agent processes run this checkout's code."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(BENCH), *args], capture_output=True, text=True
        ).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (
        " (nsls2_artifacts/ modified)" if git("status", "--porcelain", "nsls2_artifacts") else ""
    )


if __name__ == "__main__":
    main()

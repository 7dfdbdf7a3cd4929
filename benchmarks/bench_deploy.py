"""Deploy benchmark: the agent's deploy vs plain `tar -I zstd -xf` + `conda-unpack`, the
latency from a committed manifest to a startable kernel with a running daemon, and the
kernel start through the latest launcher vs a direct python argv.

Everything runs on the same archive in one run: the demo env published from the
offline channel (cached). Deploy pairs are interleaved and the best of --repeat taken.

    .venv/bin/python benchmarks/bench_deploy.py [--repeat 5] [--archive-from STORE_BUILD_DIR]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nsls2_artifacts import layout  # noqa: E402
from nsls2_artifacts.agent import deploy, extract  # noqa: E402
from nsls2_artifacts.config import load_config  # noqa: E402
from nsls2_artifacts.fsutil import atomic_write_json, read_json  # noqa: E402
from nsls2_artifacts.records import BuildManifest, isoformat, make_build_id, utcnow  # noqa: E402
from nsls2_artifacts.store import FilesystemStore  # noqa: E402

CLI = [sys.executable, "-m", "nsls2_artifacts.cli"]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def make_site(work: Path, poll_seconds: float) -> Path:
    from nsls2_artifacts import devchannel

    channel = devchannel.build_channel(devchannel.default_cache_dir() / "test-channel")
    if not (work / "manifests").exists():
        shutil.copytree(ROOT / "manifests", work / "manifests")
    config = work / "site.yaml"
    config.write_text(
        f"manifests: ./manifests\nstore: ./store\ndeploy_root: ./deploy\n"
        f"channel_mirrors: {{conda-forge: {channel}}}\n"
        f"agent: {{poll_seconds: {int(poll_seconds)}, node: bench, prune: false}}\n"
        "beamlines: {}\n"
    )
    (work / "store").mkdir(exist_ok=True)
    return config


def cli(config: Path, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("NSLS2_ARTIFACTS_CONFIG", None)
    return subprocess.run(
        [*CLI, args[0], "--config", str(config), *args[1:]],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        **kw,
    )


def timed(fn) -> float:
    subprocess.run(["sync"], check=True)  # start each side with no dirty pages pending
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def plain_deploy(archive: Path, dest: Path, steps: dict[str, float]) -> None:
    start = time.perf_counter()
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-I", "zstd", "-xf", str(archive), "-C", str(dest)], check=True)
    steps["tar"] = time.perf_counter() - start
    subprocess.run([str(dest / "bin" / "python"), str(dest / "bin" / "conda-unpack")], check=True)
    steps["unpack"] = time.perf_counter() - start - steps["tar"]


def agent_deploy(archive: Path, manifest: BuildManifest, dest: Path) -> dict[str, float]:
    """The agent's own steps (verify, safe extract into a partial dir, rename, unpack)."""
    marks = {"start": time.perf_counter()}
    deploy.verify_artifact(FilesystemStore(archive.parents[2]), manifest)
    marks["verify"] = time.perf_counter()
    partial = dest.parent / f".partial-{dest.name}"
    partial.mkdir(parents=True)
    extract.safe_extract(
        archive,
        manifest.artifact.format,
        partial,
        build_id=manifest.build_id,
        max_members=10**7,
        max_bytes=1 << 40,
    )
    os.rename(partial, dest)
    marks["extract"] = time.perf_counter()
    deploy.conda_unpack(dest, 600, manifest.build_id)
    marks["unpack"] = time.perf_counter()
    deploy.smoke_test(dest, manifest.smoke, 600, manifest.build_id)
    marks["smoke"] = time.perf_counter()
    steps, previous = {}, marks["start"]
    for step in ("verify", "extract", "unpack", "smoke"):
        steps[step], previous = marks[step] - previous, marks[step]
    return steps


def clone_build(store: Path, manifest: BuildManifest) -> BuildManifest:
    """Commit a copy of a build under a new id (artifact + lock first, manifest last)."""
    created = utcnow()
    build_id = make_build_id(created, f"{time.time_ns():064x}")
    source = store / manifest.name / manifest.build_id
    staging = store / manifest.name / f".staging-{build_id}"
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("manifest.json"))
    os.rename(staging, store / manifest.name / build_id)
    clone = replace(manifest, build_id=build_id, created=isoformat(created))
    atomic_write_json(store / manifest.name / build_id / "manifest.json", clone.to_dict())
    return clone


def latency(
    config: Path, store: Path, deploy_root: Path, base: BuildManifest, events: bool
) -> tuple[float, float]:
    """Seconds from a manifest commit to a startable latest kernel, and the deploy part."""
    log = config.parent / f"daemon-{'events' if events else 'poll'}.log"
    env = {**os.environ}
    env.pop("NSLS2_ARTIFACTS_CONFIG", None)
    args = [*CLI, "agent", "--config", str(config)] + ([] if events else ["--no-events"])
    daemon = subprocess.Popen(args, stderr=open(log, "wb"), env=env)  # noqa: SIM115
    link = layout.latest_link(deploy_root, base.name)
    spec = (
        deploy_root / "share" / "jupyter" / "kernels" / f"nsls2-{base.name}-latest" / "kernel.json"
    )
    try:
        time.sleep(3)  # let it settle into its wait
        clone = clone_build(store, base)
        committed = os.stat(store / base.name / clone.build_id / "manifest.json").st_mtime
        while not (link.is_symlink() and os.readlink(link) == clone.build_id and spec.exists()):
            time.sleep(0.02)
            if time.time() - committed > 900:
                raise SystemExit("the daemon never flipped")
        seconds = time.time() - committed
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)
    from nsls2_artifacts.agent.log import parse_line

    deploy_s = [
        float(f["seconds"])
        for line in log.read_text().splitlines()
        if (f := parse_line(line)).get("event") == "deploy" and f.get("build") == clone.build_id
    ]
    return seconds, deploy_s[0]


def kernel_start(deploy_root: Path, name: str) -> float:
    from jupyter_client.manager import start_new_kernel

    os.environ["JUPYTER_PATH"] = str(deploy_root / "share" / "jupyter")
    start = time.perf_counter()
    manager, client = start_new_kernel(kernel_name=name, startup_timeout=120)
    seconds = time.perf_counter() - start
    client.stop_channels()
    manager.shutdown_kernel(now=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--work", type=Path, default=None, help="keep files here")
    parser.add_argument("--poll-seconds", type=int, default=10)
    parser.add_argument(
        "--scratch", type=Path, default=None, help="deploy pairs here (e.g. /dev/shm/x)"
    )
    parser.add_argument(
        "--settle", type=float, default=0, help="seconds to wait (after sync) before each side"
    )
    parser.add_argument("--deploy-only", action="store_true", help="skip latency and kernels")
    opts = parser.parse_args()
    work = opts.work or Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    work.mkdir(parents=True, exist_ok=True)
    config = make_site(work, opts.poll_seconds)
    site = load_config(config)
    if not list(site.store.glob("demo/*/manifest.json")):
        cli(config, "publish", "demo", timeout=1800)
    base = BuildManifest.from_dict(read_json(sorted(site.store.glob("demo/*/manifest.json"))[0]))
    archive = site.store / "demo" / base.build_id / base.artifact.file
    print(f"cpu: {cpu_model()} x{os.cpu_count()}; python {platform.python_version()}")
    print(f"archive: {archive.name} {archive.stat().st_size / 1e6:.1f} MB, build {base.build_id}")

    plain, ours, extract_ratios = [], [], []
    scratch = opts.scratch or work / "scratch"
    for round_ in range(opts.repeat):
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        first_plain = round_ % 2 == 0  # alternate who goes first (page cache, writeback)
        steps: dict[str, float] = {}
        plain_steps: dict[str, float] = {}
        for side in ("plain", "ours") if first_plain else ("ours", "plain"):
            if opts.settle:  # let a throttled disk catch up, so both sides start even
                subprocess.run(["sync"], check=True)
                time.sleep(opts.settle)
            if side == "plain":
                plain.append(
                    timed(lambda p=plain_steps: plain_deploy(archive, scratch / "plain", p))
                )
            else:
                t = timed(lambda s=steps: s.update(agent_deploy(archive, base, scratch / "ours")))
                ours.append((t - steps["smoke"], steps))
        print(
            f"  round {round_ + 1}: plain {plain[-1]:.2f}s ("
            + " ".join(f"{k}={v:.2f}" for k, v in plain_steps.items())
            + f")  agent {ours[-1][0]:.2f}s ("
            + " ".join(f"{k}={v:.2f}" for k, v in ours[-1][1].items())
            + ")"
        )
        extract_ratios.append(steps["extract"] / plain_steps["tar"])
    shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"  extraction alone (agent extract / tar): median {statistics.median(extract_ratios):.2f}x"
    )
    best_plain = min(plain)
    best_ours, best_steps = min(ours, key=lambda x: x[0])
    median_plain = statistics.median(plain)
    median_ours = statistics.median(t for t, _ in ours)
    print(
        f"deploy (verify+extract+conda-unpack) on {scratch}: best agent {best_ours:.2f}s vs "
        f"tar+conda-unpack {best_plain:.2f}s -> ratio {best_ours / best_plain:.2f}x; median "
        f"{median_ours:.2f}s vs {median_plain:.2f}s -> {median_ours / median_plain:.2f}x "
        "(target <= 1.15x)"
    )
    print("  best agent steps: " + " ".join(f"{k}={v:.2f}s" for k, v in best_steps.items()))
    if opts.deploy_only:
        return

    # a first deploy through the real agent gives the daemon a `latest` to flip from
    cli(config, "agent", "--once", timeout=1800)
    for events in (True, False):
        seconds, deploy_s = latency(config, site.store, site.deploy_root, base, events)
        budget = deploy_s + (2 if events else opts.poll_seconds)
        mode = "events+poll" if events else f"poll only ({opts.poll_seconds:g}s)"
        print(
            f"latency committed -> kernel startable, {mode}: {seconds:.2f}s "
            f"(deploy {deploy_s:.2f}s, overhead {seconds - deploy_s:.2f}s; target <= {budget:.2f}s)"
        )

    cli(config, "promote", "demo", base.build_id, "--lts", "bench")
    cli(config, "agent", "--once")
    latest_s = min(kernel_start(site.deploy_root, "nsls2-demo-latest") for _ in range(3))
    direct_s = min(kernel_start(site.deploy_root, "nsls2-demo-bench") for _ in range(3))
    print(
        f"kernel start to ready: latest launcher {latest_s:.2f}s vs direct python "
        f"{direct_s:.2f}s -> ratio {latest_s / direct_s:.2f}x"
    )
    if opts.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    logging.basicConfig(stream=io.StringIO())
    main()

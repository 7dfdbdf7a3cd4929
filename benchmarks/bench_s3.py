"""S3 store benchmark against a local SeaweedFS (the test server, 127.0.0.1):

1. deploy from the S3 store vs from the filesystem store, same archive, same run (the
   agent's whole deploy: verify + extract, conda-unpack, smoke); the S3 store spools and
   verifies before extracting, and is also timed as it was before (streamed straight
   into extraction, hashed on the way: `StreamingS3Store`), to show what that costs;
2. publish's upload (conditional multipart, 8 threads) vs boto3's plain `upload_file` of
   the same file with the same client (what `aws s3 cp` does);
3. N simulated agents (threads, one client each) polling one server with nothing new:
   requests per pass per agent, and the time from a commit to every agent noticing it.

    .venv/bin/python benchmarks/bench_s3.py [--repeat 3] [--agents 100] [--poll 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from s3server import CREDENTIALS, S3Server  # noqa: E402

from nsls2_artifacts.agent import deploy  # noqa: E402
from nsls2_artifacts.agent.log import setup_logging  # noqa: E402
from nsls2_artifacts.config import SiteConfig, StoreOptions, load_config  # noqa: E402
from nsls2_artifacts.fsutil import read_json  # noqa: E402
from nsls2_artifacts.records import BuildManifest  # noqa: E402
from nsls2_artifacts.store import FilesystemStore, Store  # noqa: E402
from nsls2_artifacts.store.s3 import S3Store  # noqa: E402

CLI = [sys.executable, "-m", "nsls2_artifacts.cli"]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def demo_build(work: Path) -> tuple[Path, BuildManifest]:
    """The demo env published from the offline channel into a filesystem store (cached)."""
    from nsls2_artifacts import devchannel

    channel = devchannel.build_channel(devchannel.default_cache_dir() / "test-channel")
    if not (work / "manifests").exists():
        shutil.copytree(ROOT / "manifests", work / "manifests")
    config = work / "site.yaml"
    config.write_text(
        f"manifests: ./manifests\nstore: ./store\ndeploy_root: ./deploy\n"
        f"channel_mirrors: {{conda-forge: {channel}}}\nagent: {{node: bench, prune: false}}\n"
        "beamlines: {}\n"
    )
    (work / "store").mkdir(exist_ok=True)
    if not list((work / "store").glob("demo/*/manifest.json")):
        env = {**os.environ}
        env.pop("NSLS2_ARTIFACTS_CONFIG", None)
        subprocess.run([*CLI, "publish", "--config", str(config), "demo"], check=True, env=env)
    manifest_path = sorted((work / "store").glob("demo/*/manifest.json"))[0]
    return config, BuildManifest.from_dict(read_json(manifest_path))


def site_with(config: Path, store: str, deploy_root: Path, options: dict[str, str]) -> SiteConfig:
    text = config.read_text().replace("store: ./store", f"store: {store}")
    text = text.replace("deploy_root: ./deploy", f"deploy_root: {deploy_root}")
    if options:
        text += "store_options: {" + ", ".join(f"{k}: {v}" for k, v in options.items()) + "}\n"
    path = deploy_root.parent / f"site-{deploy_root.name}.yaml"
    path.write_text(text)
    return load_config(path)


def timed_deploy(site: SiteConfig, store: Store, manifest: BuildManifest) -> tuple[float, float]:
    """(whole deploy, verify + extract) seconds: the smoke test's imports swing by
    seconds on a loaded VM, while the store only changes verify + extract."""
    shutil.rmtree(site.deploy_root, ignore_errors=True)
    subprocess.run(["sync"], check=True)
    stream = io.StringIO()
    log = setup_logging(logging.INFO, stream)
    start = time.perf_counter()
    outcome = deploy.deploy_build(site, store, manifest, log)
    seconds = time.perf_counter() - start
    assert outcome.result == "deployed", outcome
    steps = [line for line in stream.getvalue().splitlines() if "event=deploy " in line]
    where = f"{type(store).__name__} {store.location}"
    print(f"  {where}: {seconds:.2f} s  {steps[0].split('seconds=', 1)[1]}")
    fields = dict(part.split("=", 1) for part in steps[0].split() if "=" in part)
    return seconds, float(fields["verify_s"]) + float(fields["extract_s"])


class StreamingS3Store(S3Store):
    """The S3 store as it deployed before issue 17: the object streamed straight into
    extraction, hashed on the way (unsafe: the extractor read unverified bytes). Kept
    here only as the baseline of the spool's cost."""

    @contextlib.contextmanager
    def open_artifact(self, manifest: BuildManifest, *, scratch: Path | None = None):
        with self._stream_artifact(manifest) as reader:
            yield reader


def bench_deploy(
    config: Path, work: Path, server: S3Server, base: BuildManifest, repeat: int, scratch: Path
):
    scratch.mkdir(parents=True, exist_ok=True)
    fs_site = site_with(config, str(work / "store"), scratch / "deploy-fs", {})
    s3_url = server.new_store_url()
    s3_site = site_with(config, s3_url, scratch / "deploy-s3", server.site_options())
    s3 = S3Store(s3_url, s3_site.store_options, local_dir=work)
    staging = s3.staging_dir(base.name, base.build_id)
    for name in (base.artifact.file, base.lock.file):
        shutil.copy(work / "store" / base.name / base.build_id / name, staging / name)
    s3.commit_build(staging, base)
    fs = FilesystemStore(work / "store")
    streaming = StreamingS3Store(s3_url, s3_site.store_options, local_dir=work)
    times: dict[str, list[float]] = {"fs": [], "s3": [], "s3-stream": []}
    fetch: dict[str, list[float]] = {"fs": [], "s3": [], "s3-stream": []}
    for round_ in range(repeat):
        sides = [("fs", fs_site, fs), ("s3", s3_site, s3), ("s3-stream", s3_site, streaming)]
        for name, site, store in sides if round_ % 2 == 0 else reversed(sides):
            whole, verify_extract = timed_deploy(site, store, base)
            times[name].append(whole)
            fetch[name].append(verify_extract)
    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    fbest = {name: min(values) for name, values in fetch.items()}
    fmed = {name: statistics.median(values) for name, values in fetch.items()}
    print(
        f"verify + extract: filesystem {fbest['fs']:.2f} s, S3 spooled {fbest['s3']:.2f} s, "
        f"S3 streamed {fbest['s3-stream']:.2f} s (best; medians {fmed['fs']:.2f} / "
        f"{fmed['s3']:.2f} / {fmed['s3-stream']:.2f} s) -> spool vs streaming "
        f"{fbest['s3'] / fbest['s3-stream']:.2f}x (medians {fmed['s3'] / fmed['s3-stream']:.2f}x)"
    )
    print(
        f"deploy: filesystem store {best['fs']:.2f} s, S3 store (spool, verify, extract) "
        f"{best['s3']:.2f} s, S3 streamed as before {best['s3-stream']:.2f} s (best of "
        f"{repeat}; medians {median['fs']:.2f} / {median['s3']:.2f} / "
        f"{median['s3-stream']:.2f} s) -> S3 vs filesystem {best['s3'] / best['fs']:.2f}x, "
        f"spool vs streaming {best['s3'] / best['s3-stream']:.2f}x "
        f"(medians {median['s3'] / median['s3-stream']:.2f}x)"
    )


def bench_upload(work: Path, server: S3Server, size_mb: int, repeat: int) -> None:
    from boto3.s3.transfer import TransferConfig

    path = work / "upload.bin"
    if not path.exists() or path.stat().st_size != size_mb << 20:
        path.write_bytes(os.urandom(size_mb << 20))
    url = server.new_store_url()
    store = S3Store(url, StoreOptions(**server.site_options()), local_dir=work)
    client = store.client
    config = TransferConfig()  # boto3's defaults: 8 MiB parts, 10 threads
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    for round_ in range(repeat):
        sides = ["ours", "plain"] if round_ % 2 == 0 else ["plain", "ours"]
        for side in sides:
            key = f"{side}-{round_}"
            start = time.perf_counter()
            if side == "ours":
                store.upload(path, key)
            else:
                client.upload_file(str(path), store.bucket, store.prefix + key, Config=config)
            times[side].append(time.perf_counter() - start)
    ours, plain = min(times["ours"]), min(times["plain"])
    print(
        f"upload {size_mb} MiB: publish's conditional multipart {ours:.2f} s, boto3 upload_file "
        f"{plain:.2f} s (best of {repeat}) -> ratio {ours / plain:.2f}x"
    )


def bench_agents(work: Path, server: S3Server, base: BuildManifest, agents: int, poll: float):
    """Agents poll like the daemon: every `poll` s (random phase), list the builds."""
    url = server.new_store_url()
    options = StoreOptions(**server.site_options())
    publisher = S3Store(url, options, local_dir=work)
    staging = publisher.staging_dir(base.name, base.build_id)
    for name in (base.artifact.file, base.lock.file):
        shutil.copy(work / "store" / base.name / base.build_id / name, staging / name)
    publisher.commit_build(staging, base)
    stores = [S3Store(url, options, local_dir=work) for _ in range(agents)]
    for store in stores:
        store.builds(base.name)  # the first pass lists everything once
    before = [s.requests for s in stores]
    idle_passes = 3
    for _ in range(idle_passes):
        for store in stores:
            store._checked = 0.0  # a new pass (the daemon's passes are poll seconds apart)
            store.envs()
            store.builds(base.name)
    per_pass = [(s.requests - b) / idle_passes for s, b in zip(stores, before, strict=True)]
    print(
        f"{agents} agents, nothing new: {statistics.mean(per_pass):.2f} requests per pass per "
        f"agent (max {max(per_pass):.0f})"
    )

    noticed: dict[int, float] = {}
    stop = threading.Event()
    new_id: list[str] = []

    def agent(index: int, store: S3Store) -> None:
        time.sleep(random.uniform(0, poll))
        while not stop.is_set():
            store._checked = 0.0
            if new_id and any(m.build_id == new_id[0] for m in store.builds(base.name)):
                noticed[index] = time.perf_counter()
                return
            time.sleep(poll)

    threads = [threading.Thread(target=agent, args=(i, s)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    time.sleep(poll * 1.5)
    from dataclasses import replace

    fresh = replace(base, build_id=base.build_id[:-8] + "feedf00d")
    staging = publisher.staging_dir(fresh.name, fresh.build_id)
    for name in (base.artifact.file, base.lock.file):
        shutil.copy(work / "store" / base.name / base.build_id / name, staging / name)
    publisher.commit_build(staging, fresh)
    committed = time.perf_counter()
    new_id.append(fresh.build_id)
    for thread in threads:
        thread.join(timeout=poll * 10)
    stop.set()
    delays = sorted(t - committed for t in noticed.values())
    print(
        f"commit -> noticed by all {len(delays)}/{agents} agents: {max(delays):.2f} s "
        f"(median {statistics.median(delays):.2f} s, poll interval {poll:g} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--poll", type=float, default=2.0)
    parser.add_argument("--upload-mb", type=int, default=256)
    parser.add_argument("--work", type=Path, default=None, help="keep files here")
    parser.add_argument(
        "--scratch", type=Path, default=None, help="deploy roots here (e.g. /dev/shm/x)"
    )
    parser.add_argument("--only", choices=["deploy", "upload", "agents"], default=None)
    opts = parser.parse_args()
    work = opts.work or Path(tempfile.mkdtemp(prefix="bench-s3-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.update(CREDENTIALS)
    config, base = demo_build(work)
    print(f"cpu: {cpu_model()} x{os.cpu_count()}; python {platform.python_version()}")
    print(f"archive: {base.artifact.file} {base.artifact.size / 1e6:.1f} MB")
    server = S3Server(work / "s3")
    server.start()
    try:
        if opts.only in (None, "deploy"):
            bench_deploy(config, work, server, base, opts.repeat, opts.scratch or work)
        if opts.only in (None, "upload"):
            bench_upload(work, server, opts.upload_mb, opts.repeat)
        if opts.only in (None, "agents"):
            bench_agents(work, server, base, opts.agents, opts.poll)
    finally:
        server.kill()


if __name__ == "__main__":
    main()

"""Facility scale (issue #20): staff click -> a user's kernel restarted on the new build,
end to end, under GPFS-like metadata latency, reported with its parts.

The env is bench_dedup.py's generator (`--packages` packages, `--files` files, `--mb`
MB; a directory per 10 files, ~3:1 compressible, one zstd frame per package with its
content index; the nightly changes one package and copies the other frames, as the
incremental pack does). In one run:

1. the first build is committed to a filesystem store and the real agent daemon
   (`nsls2-artifacts agent`, filesystem events on, as a node runs it) deploys it in full;
2. a kernel is started through the env's latest kernelspec (the `/bin/sh` launcher that
   resolves `envs/ENV/latest` when it starts) and reports its CONDA_PREFIX;
3. the click: the nightly is published and committed, the daemon takes it up, deploys
   it linked to the first build, flips latest, and the kernel is restarted (as
   JupyterLab's restart does) and reports its CONDA_PREFIX, which must be the new build.

The publish (`--publish`): `stand-in` writes the nightly with the generator (frames of
unchanged packages copied, the archive hashed, index and manifest written); `real` runs
`nsls2-artifacts publish` (solve, rattler install, bytecode, incremental conda-pack,
commit) of an env holding the dev channel's python and ipykernel and the generated
packages as real conda packages (facility_publish.py), the nightly after `pkg000` 2
appeared in the channel; the agent then unpacks and smoke-tests a real env. The
commit is the moment manifest.json appears (a real publish goes on removing its
scratch prefix while the agent already deploys).

The parts come from the daemon's own log (`event=... time=...`): commit -> the deploy
starts, the deploy's verify / extract / unpack / smoke / sync split, deploy end -> flip.

Latency harness (`--harness`): `shim` (default) runs the daemon, and the kernel, with
latency_shim.py's LD_PRELOAD library, which sleeps `--delay-us` in the calling thread
before every create, link, mkdir, rename or unlink; threads overlap their waits as on
GPFS, and reads run at full speed. `strace` is the older harness (`strace --seccomp-bpf`
injecting the delay on exit of openat/mkdir/link/symlink): its delays overlap across
threads as well, but every openat pays, reads included, and every traced call is two
ptrace stops served by one tracer process. `none`: no delay.

    .venv/bin/python benchmarks/bench_facility.py [--files 100000 --mb 3000 --packages 100]
        [--delay-us 1000] [--harness shim|strace|none] [--publish stand-in|real]
        [--scratch DIR] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import facility_publish  # noqa: E402
import latency_shim  # noqa: E402
from bench_dedup import CLI, Latency, Shape, commit, fields, site, write_build  # noqa: E402

from nsls2_artifacts import layout  # noqa: E402
from nsls2_artifacts.agent import dedup  # noqa: E402
from nsls2_artifacts.contentindex import ContentIndex  # noqa: E402

PREFIX_CODE = "import os; print(os.environ['CONDA_PREFIX'])"


class Harness(Latency):
    """How the daemon (and the kernel) are run: bench_dedup's argv wrapper and
    environment, and how to stop the daemon under it."""

    def stop(self, daemon: subprocess.Popen) -> None:
        """SIGTERM the agent and wait for it. Under strace the agent is strace's child,
        and strace run with `-o FILE PROG` blocks fatal signals (its `-I` default): a
        SIGTERM to strace is ignored and the wait never returns (the "stalled daemon" of
        the first facility runs: the agent had deployed, the bench hung here)."""
        pids = [daemon.pid]
        if self.kind == "strace":
            children = Path(f"/proc/{daemon.pid}/task/{daemon.pid}/children")
            with contextlib.suppress(OSError):
                pids = [int(pid) for pid in children.read_text().split()] or pids
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=120)
        except subprocess.TimeoutExpired:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            daemon.wait()


def check_disk(scratch: Path, shape: Shape, real: bool) -> None:
    """Two archives (~1/3 of the bytes each), the first build in full, the nightly's own
    package, and the generator's staging; for a real publish also the channel (~1/3)
    and rattler's extracted cache (the bytes again): refuse to start where that does
    not fit."""
    need = int(shape.mb * 1e6 * (2 / 3 + 1 + 0.1 + (4 / 3 if real else 0)) * 1.2)
    free = shutil.disk_usage(scratch).free
    print(f"disk: {free / 1e9:.1f} GB free under {scratch}, the run needs ~{need / 1e9:.1f} GB")
    if free < need * 1.5:
        sys.exit("not enough free disk for this shape (use --scratch or a smaller --mb)")


def daemon_events(log_path: Path) -> list[dict[str, str]]:
    return [fields(line) for line in log_path.read_text().splitlines() if "event=" in line]


def stamp(f: dict[str, str]) -> float:
    return datetime.strptime(f["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def wait_for(predicate, daemon: subprocess.Popen, log_path: Path, what: str) -> None:
    while not predicate():
        if daemon.poll() is not None:
            sys.exit(f"the agent died while waiting for {what}:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.02)


def kernel_prefix(kc) -> str:
    """Run PREFIX_CODE in the kernel; its stdout."""
    out: list[str] = []

    def hook(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"].get("text", ""))

    reply = kc.execute_interactive(PREFIX_CODE, timeout=120, output_hook=hook)
    if reply["content"]["status"] != "ok":
        sys.exit(f"the kernel could not report its prefix: {reply['content']}")
    return "".join(out).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=100)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--mb", type=int, default=3000)
    parser.add_argument("--delay-us", type=int, default=1000)
    parser.add_argument("--harness", choices=("shim", "strace", "none"), default="shim")
    parser.add_argument("--poll", type=float, default=30.0, help="agent.poll_seconds")
    parser.add_argument(
        "--publish", choices=("stand-in", "real"), default="stand-in", help="the click"
    )
    parser.add_argument("--scratch", type=Path, default=None, help="work directory's parent")
    parser.add_argument("--keep", action="store_true")
    opts = parser.parse_args()
    if opts.harness == "strace" and shutil.which("strace") is None:
        sys.exit("--harness strace needs strace (apt-get install strace)")
    shape = Shape(opts.packages, opts.files, opts.mb)
    check_disk(opts.scratch or Path(tempfile.gettempdir()), shape, opts.publish == "real")
    work = Path(tempfile.mkdtemp(prefix="bench-facility-", dir=opts.scratch))
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    try:
        harness = Harness(opts.harness, opts.delay_us if opts.harness != "none" else 0)
        if harness.kind == "shim":
            harness.library = latency_shim.build(work)
            harness.count_file = work / "shim-calls.txt"
            rows = latency_shim.check(harness.library, opts.delay_us)
            print(latency_shim.describe(rows, opts.delay_us))
        run(work, shape, harness, opts.poll, opts.publish == "real")
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)


class StandIn:
    """The publish stand-in: bench_dedup's generator writes and commits each build."""

    env = "demo"

    def __init__(self, work: Path, shape: Shape, poll: float) -> None:
        self.work, self.shape, self.store = work, shape, work / "store"
        self.config = site(work, "linked", self.store, poll=int(poll))
        self.v1 = {n: 1 for n in range(shape.packages)}
        self.previous: tuple[Path, ContentIndex, dict[int, int]] | None = None

    def first(self) -> str:
        staging = self.work / "staging-1"
        staging.mkdir()
        index, seconds = write_build(staging, self.shape, self.v1, None)
        first = commit(self.store, staging, index, datetime(2026, 12, 1, 2, tzinfo=UTC))
        self.previous = (self.store / "demo" / first.build_id / "env.tar.zst", index, self.v1)
        print(
            f"env: {self.shape.packages} packages, {len(index.entries):,} entries, "
            f"{sum(e.size for e in index.entries) / 1e6:,.0f} MB, archive "
            f"{first.artifact.size / 1e6:,.0f} MB (generated in {seconds:.1f}s)"
        )
        return first.build_id

    def before_click(self) -> None:
        pass

    def nightly(self) -> tuple[str, float]:
        """Publish the nightly (one package changed): its build id and when it was
        committed (manifest.json written)."""
        staging = self.work / "staging-2"
        staging.mkdir()
        index, _ = write_build(staging, self.shape, {**self.v1, 0: 2}, self.previous)
        build_id = commit(self.store, staging, index, datetime.now(UTC)).build_id
        return build_id, time.time()

    def finish(self) -> str:
        """What the publish did (once the kernel restarted)."""
        return "stand-in: frames of unchanged packages copied, archive hashed, index written"


class RealPublish:
    """`nsls2-artifacts publish` of a real env: the dev channel's python and ipykernel
    plus the generated packages (facility_publish.py)."""

    env = facility_publish.ENV

    def __init__(self, work: Path, shape: Shape, poll: float) -> None:
        self.work, self.shape = work, shape
        start = time.perf_counter()
        self.channel = facility_publish.make_channel(work, shape)
        print(
            f"channel with {shape.packages} generated packages: {time.perf_counter() - start:.1f}s"
        )
        self.config = facility_publish.write_site(work, self.channel, poll)
        self.cache = work / "rattler-cache"  # cold for the first build, warm for the nightly

    def first(self) -> str:
        seconds, result, steps = facility_publish.publish(self.config, self.cache, self.work)
        print(
            f"first build, real publish in full: {seconds:.1f}s ({steps}), archive "
            f"{result['size'] / 1e6:,.0f} MB"
        )
        self.first_id = result["build_id"]
        return self.first_id

    def before_click(self) -> None:
        start = time.perf_counter()
        facility_publish.add_nightly_package(self.channel, self.shape)
        print(f"pkg000 2 added to the channel: {time.perf_counter() - start:.1f}s")

    def nightly(self) -> tuple[str, float]:
        """Start the publish and return once it committed (manifest.json appeared): the
        process goes on (it removes its scratch prefix) while the agent deploys, and the
        bench must be free to see the flip meanwhile."""
        self.publishing = facility_publish.start_publish(self.config, self.cache, self.work)
        builds = self.work / "store" / self.env
        while True:
            new = [
                m
                for m in builds.glob("*/manifest.json")
                if m.parent.name not in (self.first_id, "lts") and m.parent.name[0] != "."
            ]
            if new:
                return new[0].parent.name, new[0].stat().st_mtime
            if self.publishing.process.poll() is not None:
                self.publishing.finish()  # raises with its stderr
                sys.exit("publish exited without committing a build")
            time.sleep(0.02)

    def finish(self) -> str:
        _, result, steps = self.publishing.finish()
        manifest = self.work / "store" / self.env / result["build_id"] / "manifest.json"
        exits = self.publishing.ended - manifest.stat().st_mtime
        return f"real `publish`: {steps}; the process exits {exits:.1f}s after its commit"


def run(work: Path, shape: Shape, harness: Harness, poll: float, real: bool) -> None:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    publisher = RealPublish(work, shape, poll) if real else StandIn(work, shape, poll)
    publisher.first()
    print(f"harness {harness.kind}, +{harness.delay_us} us per create")
    deploy_root = work / "linked"
    log_path = work / "daemon.log"
    latest = layout.latest_link(deploy_root, publisher.env)
    km = kc = None
    with open(log_path, "ab") as log:
        daemon = subprocess.Popen(
            harness.argv([*CLI, "agent", "--config", str(publisher.config)]),
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=harness.env(),
        )
    try:
        # the first pass ends after the flip and the kernelspecs
        wait_for(lambda: _idle(log_path), daemon, log_path, "the first deploy")
        full = [f for f in daemon_events(log_path) if f["event"] == "deploy"][-1]
        print(
            f"first build, full deploy by the daemon: {_split(full)}; "
            f"{int(full['members']):,} members, {int(full['bytes']) / 1e6:,.0f} MB"
        )
        ksm = KernelSpecManager(kernel_dirs=[str(deploy_root / "share/jupyter/kernels")])
        name = f"nsls2-{publisher.env}-latest"
        km = KernelManager(kernel_name=name, kernel_spec_manager=ksm)
        km.start_kernel(env=harness.env())
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=300)
        before = kernel_prefix(kc)
        print(f"kernel started through the latest launcher on {Path(before).name}")
        publisher.before_click()
        time.sleep(3)  # a user works in the kernel for a while

        click = time.time()
        build_id, committed = publisher.nightly()
        target = layout.build_dir(deploy_root, publisher.env, build_id)
        wait_for(lambda: os.path.realpath(latest) == str(target), daemon, log_path, "the flip")
        flipped = time.time()
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=300)
        after = kernel_prefix(kc)
        restarted = time.time()
        how = publisher.finish()
    finally:
        if kc is not None and km is not None:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
        harness.stop(daemon)
    if after != str(target):
        sys.exit(f"the restarted kernel is on {after}, not the new build {target}")
    times = (click, committed, flipped, restarted)
    report(log_path, build_id, target, harness, how, times)


def _idle(log_path: Path) -> bool:
    """The daemon finished its first pass (the `pass` event after the first deploy)."""
    return any(f["event"] == "pass" for f in daemon_events(log_path))


def _split(f: dict[str, str]) -> str:
    steps = ("verify_s", "extract_s", "unpack_s", "smoke_s", "sync_s")
    parts = ", ".join(f"{s[:-2]} {float(f[s]):.1f}" for s in steps if s in f)
    return f"{float(f['seconds']):.1f}s ({parts})"


def report(
    log_path: Path,
    build_id: str,
    target: Path,
    harness: Harness,
    how: str,
    times: tuple[float, float, float, float],
) -> None:
    click, committed, flipped, restarted = times
    events = daemon_events(log_path)
    mine = [f for f in events if f.get("build") == build_id]
    deployed = next(f for f in mine if f["event"] == "deploy")
    flip = next(f for f in mine if f["event"] == "flip")
    end = stamp(deployed)
    seconds = float(deployed["seconds"])
    # the deploy event is logged at its end; its `seconds` start when the agent took it up
    start = end - seconds
    hints = [stamp(f) for f in events if f["event"] == "hint" and stamp(f) >= committed]
    record = dedup.read_record(target)
    assert record is not None
    print(f"kernel restarted on {target.name}: the new build")
    rows = [
        (f"publish ({how})", committed - click),
        ("commit (manifest.json written) -> agent takes it up", start - committed),
        (f"deploy linked: {_split(deployed)}", seconds),
        ("deploy done -> flip (sweep, re-look, flip)", stamp(flip) - end),
        ("flip -> seen by the bench", flipped - stamp(flip)),
        ("kernel restart -> reports CONDA_PREFIX", restarted - flipped),
    ]
    print("| part | seconds |\n|---|---:|")
    for label, value in rows:
        print(f"| {label} | {value:.1f} |")
    print(f"| **click -> restarted kernel on the new build** | **{restarted - click:.1f}** |")
    print(
        f"(target <= 120 s; first hint {hints[0] - committed:.1f}s after the commit; "
        f"linked {record.linked_files:,}/{record.files:,} files, skipped "
        f"{record.skipped_frames}/{record.frames} frames, copied {record.copied_files})"
        if hints
        else "(target <= 120 s; no filesystem hint: taken up by the poll)"
    )
    if harness.count_file is not None:
        calls = latency_shim.delayed_calls(harness.count_file)
        print(f"shim: {calls:,} delayed calls in the daemon and its children (exited ones)")
    print(f"load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""Deduplicated deploys (issue #20): a one-package nightly deployed next to the previous
build (hardlinks, skipped frames) vs the same nightly deployed in full, and the disk it
adds. (The facility-scale timeline, staff click -> restarted kernel on the new build with
a running agent daemon under GPFS-like metadata latency, is bench_facility.py, which
uses this generator.)

The env is generated: `--packages` packages of `--files` files and `--mb` MB in all, each
package one zstd frame of a conda-pack-like archive with its content index (the format of
contentindex.py), plus an interpreter wrapper (this Python, so smoke imports and the
kernel work) and a conda-unpack that rewrites one file. The nightly changes one package.
Both deploys are real `agent --once` runs on the same archive in one run; `--delay-us`
runs the agent under `strace` adding that delay to every create-like syscall (openat,
mkdir, link, symlink: GPFS metadata latency; reads via openat pay it too);
`--latency-shim` runs it with latency_shim.py's LD_PRELOAD library instead (`--delay-us`,
default 1000, before every create, mkdir, link, symlink, rename and unlink of the agent
and of its children, conda-unpack and the smoke test; reads at full speed), checked
first (µs per call, plain vs shim), with the delayed calls counted per deploy.

Fairness (a shared VM's disk is throttled and its load varies 3x within minutes): one
warm-up round of each deploy, untimed; then `--rounds` rounds, each a linked deploy of
the nightly (next to the first build, its previous copy removed) then a full one (into a
fresh deploy root), interleaved so both sides see the same moments; the medians and
their ratio are reported, with every round's pair. `--deploy-dir /dev/shm` puts the
deploy roots on tmpfs (no disk throttling: the metadata and CPU work only).

    .venv/bin/python benchmarks/bench_dedup.py [--files 10000 --mb 300 --packages 100]
        [--delay-us 1000] [--latency-shim] [--rounds 3] [--warmup 1] [--deploy-dir DIR]
        [--scratch DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import latency_shim  # noqa: E402

from nsls2_artifacts import layout  # noqa: E402
from nsls2_artifacts.agent import dedup  # noqa: E402
from nsls2_artifacts.contentindex import (  # noqa: E402
    ContentIndex,
    FrameRecord,
    IndexEntry,
    write_index,  # noqa: E402
)
from nsls2_artifacts.fsutil import atomic_write_json  # noqa: E402
from nsls2_artifacts.records import (  # noqa: E402
    ArtifactInfo,
    BuildManifest,
    LockInfo,
    PackageRef,
    isoformat,
    make_build_id,
)

CLI = [sys.executable, "-m", "nsls2_artifacts.cli"]
PLACEHOLDER = "/opt/nsls2-placeholder-prefix-0123456789abcdef0123456789abcdef"
UNPACK = f"""\
#!/usr/bin/env python
_prefix_records = [
    ("etc/prefix.txt", {PLACEHOLDER!r}, "text"),
]

if __name__ == "__main__":
    import os
    prefix = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for path, placeholder, mode in _prefix_records:
        with open(os.path.join(prefix, path), "rb+") as handle:
            data = handle.read().replace(placeholder.encode(), prefix.encode())
            handle.seek(0)
            handle.write(data)
            handle.truncate()
"""
FILES_PER_DIR = 10  # a conda env has a directory for every few files (site-packages trees)
CREATES = "openat,mkdir,mkdirat,link,linkat,symlink,symlinkat"


@dataclass(frozen=True)
class Shape:
    packages: int
    files: int
    mb: int

    @property
    def file_size(self) -> int:
        return max(1, self.mb * 10**6 // self.files)


def _member(
    name: str, data: bytes = b"", mode: int = 0o644, kind: bytes = tarfile.REGTYPE, link: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, 1_700_000_000, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def _content(seed: str, size: int) -> bytes:
    """About 3:1 compressible, like a typical env (code, text, some binaries)."""
    rng = random.Random(seed)
    piece = rng.randbytes(max(1, size // 3))
    return (piece * 3 + piece)[:size]


def package_members(number: int, version: int, shape: Shape) -> list[tuple[tarfile.TarInfo, bytes]]:
    name = f"pkg{number:03d}"
    count = shape.files // shape.packages
    members = [_member(f"lib/site/{name}", mode=0o755, kind=tarfile.DIRTYPE)]
    for i in range(count):
        directory = f"lib/site/{name}/d{i // 100:03d}/s{i // FILES_PER_DIR % 10}"
        if i % FILES_PER_DIR == 0:
            if i % 100 == 0:
                members.append(
                    _member(directory.rpartition("/")[0], mode=0o755, kind=tarfile.DIRTYPE)
                )
            members.append(_member(directory, mode=0o755, kind=tarfile.DIRTYPE))
        path = f"{directory}/m{i:05d}.py"
        members.append(_member(path, _content(f"{name}-{version}-{i}", shape.file_size)))
    return members


def _frame_bytes(members: list[tuple[tarfile.TarInfo, bytes]], last: bool) -> bytes:
    raw = io.BytesIO()
    for info, data in members:
        raw.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if info.isfile():
            raw.write(data + bytes(-len(data) % 512))
    if last:
        raw.write(bytes(1024))
    return raw.getvalue()


def _entries(members, frame: int, rewritten: set[str]) -> list[IndexEntry]:
    out = []
    for info, data in members:
        if info.isfile():
            digest = hashlib.sha256(data).hexdigest()
            out.append(
                IndexEntry(
                    info.name,
                    "file",
                    len(data),
                    digest,
                    info.mode,
                    "",
                    info.name in rewritten,
                    frame,
                )
            )
        else:
            kind = "dir" if info.isdir() else "symlink"
            out.append(IndexEntry(info.name, kind, 0, "", info.mode, info.linkname, False, frame))
    return out


def write_build(
    directory: Path,
    shape: Shape,
    versions: dict[int, int],
    previous: tuple[Path, ContentIndex, dict[int, int]] | None,
) -> tuple[ContentIndex, float]:
    """Write env.tar.zst + index for `versions`; frames of packages whose version did not
    change are copied from `previous` (what the incremental pack does). Returns the index
    and the seconds it took (the publish stand-in)."""
    start = time.perf_counter()
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True, threads=-1)
    frames: list[FrameRecord] = []
    entries: list[IndexEntry] = []
    digest = hashlib.sha256()
    offset = tar_offset = 0
    old_frames = {}
    if previous is not None:
        old_path, old_index, old_versions = previous
        old_frames = {f.package: f for f in old_index.frames}
        old_entries: dict[int, list[IndexEntry]] = {}
        for e in old_index.entries:
            old_entries.setdefault(e.frame, []).append(e)
    wrapper = f'#!/bin/sh\nexec {sys.executable} "$@"\n'.encode()
    groups: list[tuple[str, int | None]] = [("python", None)]
    groups += [(f"pkg{n:03d}", n) for n in range(shape.packages)] + [("", None)]
    with (
        open(directory / "env.tar.zst", "wb") as out,
        open(previous[0], "rb") if previous else open(os.devnull, "rb") as old,
    ):
        for number, (package, pkg) in enumerate(groups):
            last = number == len(groups) - 1
            reuse = (
                previous is not None
                and pkg is not None
                and previous[2].get(pkg) == versions.get(pkg)
            )
            if reuse:
                frame = old_frames[package]
                old.seek(frame.offset)
                compressed = old.read(frame.length)
                tar_length, key = frame.tar_length, frame.key
                entries += [
                    IndexEntry(
                        e.path, e.type, e.size, e.sha256, e.mode, e.target, e.rewritten, number
                    )
                    for e in old_entries[old_index.frames.index(frame)]
                ]
            else:
                if package == "python":
                    members = [
                        _member("bin/python", wrapper, 0o755),
                        _member("bin/python3", kind=tarfile.SYMTYPE, link="python"),
                    ]
                elif package == "":
                    members = [
                        _member("bin/conda-unpack", UNPACK.encode(), 0o755),
                        _member("etc/prefix.txt", f"prefix={PLACEHOLDER}\n".encode()),
                    ]
                else:
                    members = package_members(pkg, versions[pkg], shape)
                tar = _frame_bytes(members, last)
                compressed = cctx.compress(tar)
                tar_length, key = len(tar), hashlib.sha256(tar).hexdigest()
                entries += _entries(members, number, {"bin/conda-unpack", "etc/prefix.txt"})
            out.write(compressed)
            digest.update(compressed)
            frames.append(
                FrameRecord(offset, len(compressed), tar_offset, tar_length, package, key)
            )
            offset += len(compressed)
            tar_offset += tar_length
    index = ContentIndex(digest.hexdigest(), tuple(frames), tuple(entries))
    return index, time.perf_counter() - start


def commit(store: Path, directory: Path, index: ContentIndex, created: datetime) -> BuildManifest:
    """Move a written build into STORE/demo/BUILD_ID and commit its manifest last."""
    lock = f"# bench lock {created.isoformat()} {index.archive_sha256}\n".encode()
    lock_sha = hashlib.sha256(lock).hexdigest()
    build_id = make_build_id(created, lock_sha)
    (directory / "pixi.lock").write_bytes(lock)
    info = write_index(directory, index)
    final = store / "demo" / build_id
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(directory, final)
    archive = final / "env.tar.zst"
    manifest = BuildManifest(
        name="demo",
        build_id=build_id,
        created=isoformat(created),
        platform=_platform(),
        display_name="NSLS-II bench",
        smoke=("json",),
        artifact=ArtifactInfo(
            "env.tar.zst", index.archive_sha256, archive.stat().st_size, "tar.zst"
        ),
        lock=LockInfo("pixi.lock", lock_sha),
        packages=(PackageRef("python", "3.11.7", "bench_0", "conda-forge"),),
        builder={"host": "bench"},
        source={"manifest_sha256": "0" * 64},
        index=info,
    )
    atomic_write_json(final / "manifest.json", manifest.to_dict())
    return manifest


def _platform() -> str:
    from nsls2_artifacts.agent.observe import node_platform

    return node_platform()


# appended to every site config `site` writes (bench_dedup_real --s3: the store_options)
SITE_EXTRA = ""


def site(
    work: Path, name: str, store: Path | str, poll: int = 2, roots: Path | None = None
) -> Path:
    """A site config NAME.yaml in `work`, its deploy root `roots/NAME` (`work` by default)."""
    config = work / f"{name}.yaml"
    config.write_text(
        f"store: {store}\ndeploy_root: {(roots or work) / name}\n"
        f"agent: {{poll_seconds: {poll}, node: bench, prune: false, smoke_timeout_seconds: 600}}\n"
        "beamlines: {}\n" + SITE_EXTRA
    )
    return config


def traced(argv: list[str], delay_us: int) -> list[str]:
    if not delay_us:
        return argv
    return [
        "strace",
        "-f",
        "-qq",
        "--seccomp-bpf",  # only the traced syscalls stop: the others run at full speed
        "-o",
        "/dev/null",
        "-e",
        f"trace={CREATES}",
        "-e",
        f"inject={CREATES}:delay_exit={delay_us}",
        *argv,
    ]


@dataclass
class Latency:
    """How an agent process pays GPFS-like metadata latency: `none`, `strace` (injected
    delays on exit of CREATES) or `shim` (latency_shim.py's LD_PRELOAD library, inherited
    by the agent's children: conda-unpack and the smoke test pay it too)."""

    kind: str = "none"
    delay_us: int = 0
    library: Path | None = None
    count_file: Path | None = None

    def argv(self, argv: list[str]) -> list[str]:
        return traced(argv, self.delay_us) if self.kind == "strace" else argv

    def env(self) -> dict[str, str]:
        if self.kind == "shim" and self.library is not None:
            env = latency_shim.environ(self.library, self.delay_us, self.count_file)
        else:
            env = dict(os.environ)
        env.pop("NSLS2_ARTIFACTS_CONFIG", None)
        return env

    def describe(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}, +{self.delay_us} us"


def latency(opts: argparse.Namespace, work: Path) -> Latency:
    """The harness `--latency-shim` / `--delay-us` ask for; the shim is compiled into
    `work` and checked (every kind of create delayed, reads not, threads overlapping)
    before any agent runs under it, and the check's µs per call printed."""
    if getattr(opts, "latency_shim", False):
        delay = opts.delay_us or 1000
        found = Latency("shim", delay, latency_shim.build(work), work / "shim-calls.txt")
        assert found.library is not None
        print(latency_shim.describe(latency_shim.check(found.library, delay), delay), flush=True)
        return found
    if opts.delay_us:
        if shutil.which("strace") is None:
            sys.exit("--delay-us without --latency-shim needs strace (apt-get install strace)")
        return Latency("strace", opts.delay_us)
    return Latency()


def agent_once(config: Path, latency: Latency) -> tuple[float, dict[str, str]]:
    """Wall seconds of one `agent --once`, and its deploy event's fields (under the shim
    also `shim_calls`: the calls it delayed in the agent and its children; `read_bytes`
    and `read_frames`: what its verified event says was read to verify it)."""
    subprocess.run(["sync"], check=True)
    if latency.count_file is not None:
        latency.count_file.unlink(missing_ok=True)
    start = time.perf_counter()
    out = subprocess.run(
        latency.argv([*CLI, "agent", "--config", str(config), "--once"]),
        capture_output=True,
        text=True,
        env=latency.env(),
        check=True,
    )
    wall = time.perf_counter() - start
    deployed = [fields(line) for line in out.stderr.splitlines() if "event=deploy " in line]
    if not deployed:
        sys.exit(f"no deploy in this pass:\n{out.stderr}")
    planned = [fields(line) for line in out.stderr.splitlines() if "event=dedup-plan " in line]
    if planned:  # the link plan's own time, inside "verify" (made beside the archive's hash)
        deployed[-1]["plan_s"] = planned[-1]["seconds"]
    if latency.count_file is not None:
        deployed[-1]["shim_calls"] = str(latency_shim.delayed_calls(latency.count_file))
    verified = [fields(line) for line in out.stderr.splitlines() if "event=verified " in line]
    if verified and "bytes_read" in verified[-1]:  # agents before 74ebd20 did not say
        deployed[-1]["read_bytes"] = verified[-1]["bytes_read"]
        if verified[-1].get("what") == "frames":
            deployed[-1]["read_frames"] = verified[-1]["frames_read"]
    return wall, deployed[-1]


def fields(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=('[^']*'|\S+)", line))


def build_blocks(path: Path, only_single: bool) -> int:
    """Bytes of disk blocks of the build's files (only those with one link: what it alone
    holds)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if not only_single or st.st_nlink == 1:
                total += st.st_blocks * 512
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=100)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mb", type=int, default=300)
    add_latency_options(parser)
    parser.add_argument("--scratch", type=Path, default=None, help="work directory's parent")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of both deploys")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument(
        "--deploy-dir", type=Path, default=None, help="deploy roots' parent (/dev/shm: tmpfs)"
    )
    opts = parser.parse_args()
    shape = Shape(opts.packages, opts.files, opts.mb)
    work = Path(tempfile.mkdtemp(prefix="bench-dedup-", dir=opts.scratch))
    roots = (
        Path(tempfile.mkdtemp(prefix="bench-dedup-", dir=opts.deploy_dir))
        if opts.deploy_dir
        else work
    )
    store = work / "store"
    v1 = {n: 1 for n in range(shape.packages)}
    v2 = {**v1, 0: 2}  # the nightly: one package changed
    try:
        harness = latency(opts, work)
        staging = work / "staging-1"
        staging.mkdir()
        index1, gen1 = write_build(staging, shape, v1, None)
        first = commit(store, staging, index1, datetime(2026, 12, 1, 2, tzinfo=UTC))
        archive1 = store / "demo" / first.build_id / "env.tar.zst"
        print(
            f"env: {shape.packages} packages, {len(index1.entries)} entries, "
            f"{sum(e.size for e in index1.entries) / 1e6:.0f} MB, archive "
            f"{first.artifact.size / 1e6:.0f} MB (generated in {gen1:.1f}s); "
            f"metadata latency: {harness.describe()}"
        )
        linked_cfg = site(work, "linked", store, roots=roots)
        wall, fields1 = agent_once(linked_cfg, harness)
        print(
            f"first build, full deploy (no donor): {float(fields1['seconds']):.2f}s "
            f"(agent --once {wall:.2f}s)"
        )
        staging = work / "staging-2"
        staging.mkdir()
        index2, gen2 = write_build(staging, shape, v2, (archive1, index1, v1))
        second = commit(store, staging, index2, datetime(2026, 12, 2, 2, tzinfo=UTC))
        print(
            f"nightly written in {gen2:.2f}s (frames of unchanged packages copied; full "
            f"write {gen1:.2f}s)"
        )
        print(f"load average before the rounds: {_load()}; deploy roots in {roots}")
        pairs = rounds(roots, work, store, second, opts, harness)
        report(roots, second, pairs)
        print(f"load average after: {_load()}")
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(roots, ignore_errors=True)


def add_latency_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--delay-us",
        type=int,
        default=0,
        help="metadata latency per create (alone: under strace; with --latency-shim: the "
        "shim's, 1000 if not given)",
    )
    parser.add_argument(
        "--latency-shim",
        action="store_true",
        help="run every agent under latency_shim.py's LD_PRELOAD library (GPFS-like)",
    )


Run = tuple[float, dict[str, str]]  # agent --once wall seconds, its deploy event
STEPS = ("verify_s", "extract_s", "unpack_s", "smoke_s", "sync_s")


def split(f: dict[str, str]) -> str:
    """The agent's own marks: verify / extract / unpack / smoke / sync seconds, and the link
    plan's seconds (part of verify), the calls the shim delayed and what was read to
    verify, when there are."""
    parts = "/".join(f"{float(f[s]):.2f}" for s in STEPS if s in f)
    plan = f", plan {float(f['plan_s']):.2f}" if "plan_s" in f else ""
    calls = f", {int(f['shim_calls']):,} delayed" if "shim_calls" in f else ""
    read = ""
    if "read_bytes" in f:
        what = f"{f['read_frames']} frames" if "read_frames" in f else "the archive"
        read = f", verified {what}: {int(f['read_bytes']):,} bytes read"
    return f"{parts}{plan}{calls}{read}"


def rounds(
    roots: Path, work: Path, store: Path, second: BuildManifest, opts, harness: Latency
) -> list[tuple[Run, Run]]:
    """Warm-up rounds, then timed ones: the nightly linked (next to the first build; the
    previous round's copy removed first), then in full into a fresh deploy root."""
    linked_cfg = work / "linked.yaml"
    nightly = layout.build_dir(roots / "linked", "demo", second.build_id)
    pairs = []
    full_root = roots / "full"
    for number in range(opts.warmup + opts.rounds):
        if nightly.exists():
            shutil.rmtree(nightly)
        if getattr(opts, "delete_first", False):
            # both deletions before both deploys: what the disk still does for the
            # deleted full root falls on the linked deploy first, not only on the full one
            shutil.rmtree(full_root, ignore_errors=True)
        linked = agent_once(linked_cfg, harness)
        shutil.rmtree(full_root, ignore_errors=True)
        full = agent_once(site(work, "full", store, roots=roots), harness)
        timed = number >= opts.warmup
        label = f"round {number - opts.warmup + 1}" if timed else "warm-up"
        print(
            f"{label}: linked {float(linked[1]['seconds']):.2f}s ({split(linked[1])}), full "
            f"{float(full[1]['seconds']):.2f}s ({split(full[1])}) (load {_load()})",
            flush=True,
        )
        if timed:
            pairs.append((linked, full))
    return pairs


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def report(roots: Path, second: BuildManifest, pairs: list[tuple[Run, Run]]) -> None:
    linked_dir = layout.build_dir(roots / "linked", "demo", second.build_id)
    full_dir = layout.build_dir(roots / "full", "demo", second.build_id)
    record = dedup.read_record(linked_dir)
    assert record is not None
    medians = {}
    for side, label in ((0, "linked"), (1, "full")):
        runs = sorted((pair[side] for pair in pairs), key=lambda run: float(run[1]["seconds"]))
        wall, f = runs[len(runs) // 2]  # the median round's (the lower one of an even count)
        medians[label] = statistics.median(float(pair[side][1]["seconds"]) for pair in pairs)
        print(
            f"nightly deploy, {label:>6}: median {medians[label]:.2f}s of {len(runs)} "
            f"(median round, verify/extract/unpack/smoke/sync: {split(f)}; agent --once "
            f"{wall:.2f}s)"
        )
    ratio = medians["linked"] / medians["full"]
    each = ", ".join(f"{float(a[1]['seconds']) / float(b[1]['seconds']):.3f}" for a, b in pairs)
    print(
        f"-> deploy ratio linked/full {ratio:.3f}x of the medians (rounds: {each}; target <= 0.2x)"
    )
    alone = build_blocks(linked_dir, only_single=True)
    whole = build_blocks(full_dir, only_single=False)
    print(
        f"linked {record.linked_files}/{record.files} files, skipped {record.skipped_frames}/"
        f"{record.frames} frames, copied {record.copied_files}"
    )
    print(
        f"extra disk: {alone / 1e6:.1f} MB of blocks in files with one link vs "
        f"{whole / 1e6:.1f} MB for the full build -> {alone / whole:.3f} (target <= 0.10); "
        f"from the index: {record.added_bytes / 1e6:.1f} of {record.bytes / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    main()

"""A real publish for bench_facility.py (`--publish real`): a conda channel holding the
offline dev channel (python, ipykernel and what they need) and `packages` generated
packages of `files / packages` files each (`mb` MB in all, bench_dedup's content and
layout, as `.dat` files so no bytecode is compiled for them), and an env `facility`
depending on all of them. `nsls2-artifacts publish` then solves, installs with rattler,
packs with conda-pack (incrementally from the previous build) and commits, exactly as a
nightly does; the nightly is the same env after `pkg000` 2 appeared in the channel.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import zstandard
from bench_dedup import CLI, Shape, package_members

from nsls2_artifacts import devchannel

ENV = "facility"


def _tar_zst(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor(level=3, threads=-1).compress(raw.getvalue())


def _info(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
    return info, data


def write_package(out_dir: Path, number: int, version: int, shape: Shape) -> Path:
    """`pkgNNN-VERSION-0.conda`: the generator's files of that package (no directory
    entries: conda packages list files only) with its info/ (index, paths, files)."""
    payload = []
    for info, data in package_members(number, version, shape):
        if info.isfile():
            info.name = info.name.removesuffix(".py") + ".dat"
            payload.append((info, data))
    name = f"pkg{number:03d}"
    index = {
        "name": name,
        "version": str(version),
        "build": "0",
        "build_number": 0,
        "depends": [],
        "subdir": devchannel.SUBDIR,
        "platform": "linux",
        "arch": "x86_64",
        "license": "bench",
        "timestamp": 1_700_000_000_000,
    }
    paths = [
        {
            "_path": info.name,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_in_bytes": len(data),
        }
        for info, data in payload
    ]
    infos = [
        _info("info/index.json", json.dumps(index).encode()),
        _info("info/paths.json", json.dumps({"paths": paths, "paths_version": 1}).encode()),
        _info("info/files", "".join(p["_path"] + "\n" for p in paths).encode()),
    ]
    stem = f"{name}-{version}-0"
    target = out_dir / f"{stem}.conda"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        archive.writestr(f"pkg-{stem}.tar.zst", _tar_zst(payload))
        archive.writestr(f"info-{stem}.tar.zst", _tar_zst(infos))
    return target


def make_channel(work: Path, shape: Shape) -> Path:
    """The dev channel's packages (hard links) plus the generated ones, indexed."""
    dev = devchannel.build_channel(devchannel.default_cache_dir() / "test-channel")
    channel = work / "channel"
    for subdir in ("noarch", devchannel.SUBDIR):
        (channel / subdir).mkdir(parents=True)
        for package in (dev / subdir).glob("*.conda"):
            os.link(package, channel / subdir / package.name)
    for number in range(shape.packages):
        write_package(channel / devchannel.SUBDIR, number, 1, shape)
    devchannel._index(channel)
    return channel


def add_nightly_package(channel: Path, shape: Shape) -> None:
    """pkg000 2 appears in the channel (what makes tonight's build differ)."""
    write_package(channel / devchannel.SUBDIR, 0, 2, shape)
    devchannel._index(channel)


def write_site(work: Path, channel: Path, poll: float) -> Path:
    env_dir = work / "manifests" / ENV
    env_dir.mkdir(parents=True)
    deps = "".join(f'pkg{n:03d} = "*"\n' for n in range(_packages(channel)))
    (env_dir / "pixi.toml").write_text(
        f'[workspace]\nname = "{ENV}"\nchannels = ["conda-forge"]\nplatforms = ["linux-64"]\n\n'
        f'[dependencies]\npython = "3.11.*"\nipykernel = "*"\n{deps}'
    )
    (env_dir / "nsls2.yaml").write_text(
        "display_name: NSLS-II facility bench\nsmoke: [ipykernel]\n"
    )
    config = work / "site.yaml"
    config.write_text(
        f"manifests: {work / 'manifests'}\nstore: {work / 'store'}\n"
        f"deploy_root: {work / 'linked'}\nchannel_mirrors: {{conda-forge: {channel}}}\n"
        f"agent: {{poll_seconds: {int(poll)}, node: bench, prune: false, "
        "smoke_timeout_seconds: 600}\nbeamlines: {}\n"
    )
    (work / "store").mkdir(exist_ok=True)
    return config


def _packages(channel: Path) -> int:
    return len({p.name.split("-")[0] for p in (channel / devchannel.SUBDIR).glob("pkg*.conda")})


@dataclass
class Publishing:
    """A `nsls2-artifacts publish facility --json` running in the background (the bench
    watches the store and the agent meanwhile)."""

    process: subprocess.Popen
    out: Path
    err: Path
    started: float
    ended: float = 0.0  # wall clock (time.time) when it exited, set by `watcher`
    watcher: threading.Thread | None = None

    def finish(self) -> tuple[float, dict, str]:
        """Wait for it: wall seconds, its JSON result and the stages' seconds (solve,
        install, bytecode, pack, upload) from its summary line."""
        code = self.process.wait()
        if self.watcher is not None:
            self.watcher.join()
        seconds = time.perf_counter() - self.started
        stderr = self.err.read_text()
        if code != 0:
            raise SystemExit(f"publish failed ({code}):\n{stderr[-4000:]}")
        summary = next((line for line in stderr.splitlines() if "published" in line), "")
        steps = re.search(r"\((solve [^;]*); total", summary)
        result = json.loads(self.out.read_text().strip().splitlines()[-1])
        return seconds, result, steps[1] if steps else ""


def start_publish(config: Path, cache: Path, logs: Path) -> Publishing:
    env = {**os.environ, "NSLS2_ARTIFACTS_CACHE": str(cache)}
    env.pop("NSLS2_ARTIFACTS_CONFIG", None)
    number = len(list(logs.glob("publish-*.out")))
    out, err = logs / f"publish-{number}.out", logs / f"publish-{number}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(
            [*CLI, "publish", ENV, "--config", str(config), "--json"],
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
    publishing = Publishing(process, out, err, time.perf_counter())

    def watch() -> None:
        process.wait()
        publishing.ended = time.time()

    publishing.watcher = threading.Thread(target=watch, daemon=True)
    publishing.watcher.start()
    return publishing


def publish(config: Path, cache: Path, logs: Path) -> tuple[float, dict, str]:
    """A whole publish: see `Publishing.finish`."""
    return start_publish(config, cache, logs).finish()


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)

"""Helpers for the deduplicated-deploy tests: fake envs packed as one zstd frame per
"package" with a content index (contentindex.py records), committed to a store.

The fake env's `bin/conda-unpack` does what conda-pack's does: it rewrites the files of its
`_prefix_records` in place (`open(path, "rb+")`), so a shared inode would show it.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
import sys
import tarfile
from datetime import timedelta
from pathlib import Path

import zstandard

from nsls2_artifacts.config import SiteConfig
from nsls2_artifacts.contentindex import ContentIndex, FrameRecord, IndexEntry
from nsls2_artifacts.records import BuildManifest
from nsls2_artifacts.store import open_store
from support.agent import T0, commit_build, member

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
Members = list[tuple[tarfile.TarInfo, bytes]]


def blob(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def package(name: str, version: str) -> Members:
    """A package's members: a module, a data file and a subdirectory."""
    return [
        member(f"lib/site/{name}", type=tarfile.DIRTYPE, mode=0o755),
        member(f"lib/site/{name}/__init__.py", f"VERSION = {version!r}\n".encode()),
        member(f"lib/site/{name}/data.bin", blob(f"{name}-{version}", 200_000)),
        member(f"lib/site/{name}/sub", type=tarfile.DIRTYPE, mode=0o755),
        member(f"lib/site/{name}/sub/tool.sh", b"#!/bin/sh\necho tool\n", mode=0o755),
    ]


def fake_env(versions: dict[str, str], python: str = sys.executable) -> dict[str, Members]:
    """Frames by package: `python` (the interpreter wrapper), one per entry of `versions`,
    and "" (conda-pack's own files: conda-unpack and a file it rewrites) last."""
    wrapper = f'#!/bin/sh\nexec {python} "$@"\n'.encode()
    frames: dict[str, Members] = {
        "python": [
            member("bin/python", wrapper, mode=0o755),
            member("bin/python3", type=tarfile.SYMTYPE, linkname="python"),
            member("lib/site/common.py", b"COMMON = 1\n"),
        ]
    }
    for name, version in versions.items():
        frames[name] = package(name, version)
    frames[""] = [
        member("bin/conda-unpack", UNPACK.encode(), mode=0o755),
        member("etc/prefix.txt", f"prefix={PLACEHOLDER}\n".encode()),
    ]
    return frames


def framed(frames: dict[str, Members], rewritten: set[str]) -> tuple[bytes, ContentIndex]:
    """One zstd frame per package (the end-of-archive marker in the last) and its index."""
    records, entries, parts = [], [], []
    offset = tar_offset = 0
    for number, (name, members) in enumerate(frames.items()):
        raw = io.BytesIO()
        for info, data in members:
            raw.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
            if info.isfile():
                raw.write(data + bytes(-len(data) % 512))
            entries.append(_entry(info, data, number, rewritten))
        if number == len(frames) - 1:
            raw.write(bytes(1024))
        tar = raw.getvalue()
        compressed = zstandard.ZstdCompressor(write_checksum=True).compress(tar)
        key = hashlib.sha256(tar).hexdigest()
        records.append(FrameRecord(offset, len(compressed), tar_offset, len(tar), name, key))
        parts.append(compressed)
        offset += len(compressed)
        tar_offset += len(tar)
    archive = b"".join(parts)
    index = ContentIndex(hashlib.sha256(archive).hexdigest(), tuple(records), tuple(entries))
    return archive, index


def _entry(info: tarfile.TarInfo, data: bytes, frame: int, rewritten: set[str]) -> IndexEntry:
    if info.isfile():
        digest = hashlib.sha256(data).hexdigest()
        return IndexEntry(
            info.name, "file", len(data), digest, info.mode, "", info.name in rewritten, frame
        )
    kind = "dir" if info.isdir() else "symlink"
    return IndexEntry(info.name, kind, 0, "", info.mode, info.linkname, False, frame)


def commit_framed(
    site: SiteConfig,
    versions: dict[str, str],
    hours: int,
    *,
    env: str = "demo",
    rewritten: set[str] | None = None,
    smoke: tuple[str, ...] = ("json",),
    staging: Path | None = None,
) -> BuildManifest:
    """Commit a fake env with the given package versions, created `hours` after T0: into
    the site's store directory, or with `staging` (a scratch directory) through the
    Store protocol (`open_store(site).commit_build`: for an S3 store)."""
    if rewritten is None:
        rewritten = {"bin/conda-unpack", "etc/prefix.txt"}
    archive, index = framed(fake_env(versions), rewritten)
    manifest = commit_build(
        site.store if staging is None else staging,
        env,
        archive,
        created=T0 + timedelta(hours=hours),
        index=index,
        smoke=smoke,
    )
    if staging is not None:
        open_store(site).commit_build(staging / env / manifest.build_id, manifest)
    return manifest


def tree(root: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under `root` except the agent's `.nsls2/`: (kind, a file's mode, its
    content hash or a link's target), read byte for byte; directories by kind only."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (dirpath == str(root) and d == ".nsls2")]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("symlink", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", 0, "")
            else:
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                found[rel] = ("file", stat.S_IMODE(st.st_mode), digest)
    return found


def inode(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_dev, st.st_ino

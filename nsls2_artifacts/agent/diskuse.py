"""What deleting deployed builds gives back, when builds share files by hardlinks.

A linked deploy (`agent/dedup.py`) makes a nightly's unchanged files hardlinks of an
earlier build's, so `du` of one build counts bytes that deleting it would not free: an
inode's blocks come back only when its last name goes. `prune --dry-run` asks this module
for the set of builds it would delete: their inodes are counted by name, and an inode
whose every link lies in the set is freed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 512  # st_blocks unit (POSIX), whatever the filesystem's block size


@dataclass(frozen=True)
class DiskFreed:
    """The disk of a set of builds: `bytes` allocated to everything under them, `freed`
    the part no directory outside the set holds (what deleting them all gives back);
    `files` distinct files (inodes), `shared` of them keep a name outside the set."""

    builds: int
    bytes: int = 0
    freed: int = 0
    files: int = 0
    shared: int = 0
    unreadable: int = 0  # entries that could not be read: counted as not freed


@dataclass(frozen=True)
class Held:
    """One build walked: its directories' own blocks, and its files by (dev, ino) with
    their names in it and their stat."""

    dir_bytes: int = 0
    files: dict[tuple[int, int], tuple[int, os.stat_result]] = field(default_factory=dict)
    unreadable: int = 0
    found: bool = True


def disk_freed(prefixes: Iterable[Path]) -> DiskFreed:
    """What deleting every directory of `prefixes` together would free, in allocated
    blocks (one `lstat` per entry, by `os.scandir`)."""
    return freed_by([walk(prefix) for prefix in prefixes])


def freed_by(builds: Iterable[Held]) -> DiskFreed:
    """`disk_freed` of builds walked before (`walk`): a build walked once counts for every
    set it is in."""
    names: dict[tuple[int, int], int] = {}
    files: dict[tuple[int, int], os.stat_result] = {}
    count = allocated = unreadable = 0
    for held in builds:
        count += held.found
        allocated += held.dir_bytes
        unreadable += held.unreadable
        for key, (here, st) in held.files.items():
            names[key] = names.get(key, 0) + here
            files[key] = st
    freed = allocated
    shared = 0
    for key, st in files.items():
        allocated += st.st_blocks * BLOCK
        if names[key] >= st.st_nlink:
            freed += st.st_blocks * BLOCK
        else:
            shared += 1
    return DiskFreed(count, allocated, freed, len(files), shared, unreadable)


def walk(prefix: Path) -> Held:
    """Every entry under `prefix`, `lstat`ed once; a directory's own blocks are freed
    with it (a build's directories are its own)."""
    try:
        dir_bytes = os.lstat(prefix).st_blocks * BLOCK
    except OSError:
        return Held(unreadable=1, found=False)
    files: dict[tuple[int, int], tuple[int, os.stat_result]] = {}
    unreadable = 0
    stack = [str(prefix)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        unreadable += 1
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        dir_bytes += st.st_blocks * BLOCK
                        stack.append(entry.path)
                    else:
                        key = (st.st_dev, st.st_ino)
                        files[key] = (files[key][0] + 1 if key in files else 1, st)
        except OSError:
            unreadable += 1
    return Held(dir_bytes, files, unreadable)

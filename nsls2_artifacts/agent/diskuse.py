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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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


def disk_freed(prefixes: Iterable[Path]) -> DiskFreed:
    """What deleting every directory of `prefixes` together would free, in allocated
    blocks (one `lstat` per entry, by `os.scandir`)."""
    names: dict[tuple[int, int], int] = {}  # (dev, ino) -> its names in the set
    files: dict[tuple[int, int], os.stat_result] = {}
    walk = _Walk()
    for prefix in prefixes:
        for st in walk.files(prefix):
            key = (st.st_dev, st.st_ino)
            names[key] = names.get(key, 0) + 1
            files[key] = st
    allocated = freed = walk.dir_bytes
    shared = 0
    for key, st in files.items():
        allocated += st.st_blocks * BLOCK
        if names[key] >= st.st_nlink:
            freed += st.st_blocks * BLOCK
        else:
            shared += 1
    return DiskFreed(walk.builds, allocated, freed, len(files), shared, walk.unreadable)


class _Walk:
    """Every non-directory under the prefixes walked, and the directories' own blocks
    (freed with them: a build's directories are its own)."""

    def __init__(self) -> None:
        self.builds = self.dir_bytes = self.unreadable = 0

    def files(self, prefix: Path) -> Iterator[os.stat_result]:
        try:
            self.dir_bytes += os.lstat(prefix).st_blocks * BLOCK
        except OSError:
            self.unreadable += 1
            return
        self.builds += 1
        stack = [str(prefix)]
        while stack:
            try:
                with os.scandir(stack.pop()) as entries:
                    for entry in entries:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            self.unreadable += 1
                            continue
                        if stat.S_ISDIR(st.st_mode):
                            self.dir_bytes += st.st_blocks * BLOCK
                            stack.append(entry.path)
                        else:
                            yield st
            except OSError:
                self.unreadable += 1

"""Package diff between a build and the build before it, for the build pages.

The app calls `previous_build` and `diff_builds`; both work on `BuildManifest`s read
from the store, so any two committed builds can be compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..records import BuildManifest, PackageRef


@dataclass(frozen=True)
class Change:
    name: str
    old: str
    new: str


@dataclass(frozen=True)
class PackageDiff:
    """Added, removed and changed packages from `old` to `new` (sorted by name)."""

    old_build: str | None
    new_build: str
    added: list[PackageRef] = field(default_factory=list)
    removed: list[PackageRef] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def _version(package: PackageRef, other: PackageRef) -> str:
    # Same version, different build string (a rebuild): show the build to make it visible.
    if package.version == other.version:
        return f"{package.version} ({package.build})"
    return package.version


def diff_builds(old: BuildManifest | None, new: BuildManifest) -> PackageDiff:
    before = {p.name: p for p in old.packages} if old else {}
    after = {p.name: p for p in new.packages}
    added = [after[n] for n in sorted(after.keys() - before.keys())]
    removed = [before[n] for n in sorted(before.keys() - after.keys())]
    changed = [
        Change(name, _version(before[name], after[name]), _version(after[name], before[name]))
        for name in sorted(before.keys() & after.keys())
        if (before[name].version, before[name].build) != (after[name].version, after[name].build)
    ]
    return PackageDiff(old.build_id if old else None, new.build_id, added, removed, changed)


def previous_build(builds: list[BuildManifest], build_id: str) -> BuildManifest | None:
    """The build committed just before `build_id` in `builds` (oldest first), if any."""
    ids = [b.build_id for b in builds]
    if build_id not in ids:
        return None
    index = ids.index(build_id)
    return builds[index - 1] if index > 0 else None

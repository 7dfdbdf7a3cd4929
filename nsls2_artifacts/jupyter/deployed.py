"""What a deploy root offers to Jupyter: the NSLS-II kernelspecs, the retired kernels, and
which concrete build a running kernel process uses.

Read by the server extension (save hook and REST API) and by `notebook info|pin`. The deploy
root is found from the kernelspec directories themselves
(`DEPLOY_ROOT/share/jupyter/kernels/nsls2-*`), so a Jupyter server needs nothing but
`JUPYTER_PATH`. Nothing here writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import layout
from ..errors import RecordError
from ..kernelmeta import MANAGED, KernelMetadata, RetiredFile, kernel_metadata
from ..records import build_id_time, is_build_id

log = logging.getLogger(__name__)

SPEC_PREFIX = "nsls2-"


@dataclass(frozen=True)
class NsKernel:
    """One NSLS-II kernelspec as Jupyter sees it."""

    name: str
    display_name: str
    resource_dir: Path
    meta: KernelMetadata  # the spec's metadata.nsls2 (kernelmeta.py)

    @property
    def nsls2(self) -> dict[str, Any]:
        return self.meta.to_dict()

    @property
    def env(self) -> str:
        return self.meta.env

    @property
    def build_id(self) -> str:
        return self.meta.build_id

    @property
    def is_latest(self) -> bool:
        return self.meta.is_latest

    @property
    def label(self) -> str:
        return self.meta.track

    @property
    def labels(self) -> tuple[str, ...]:
        """Every LTS label this kernel answers to (one spec may name two labels of a build)."""
        return tuple(dict.fromkeys(x for x in (self.label, *self.meta.labels) if x))

    @property
    def listed(self) -> bool:
        return self.meta.listed

    @property
    def deploy_root(self) -> Path:
        return deploy_root_of_spec(self.resource_dir)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name,
            "metadata": {MANAGED: self.nsls2},
        }


@dataclass(frozen=True)
class RetiredKernel:
    """An LTS kernelspec the agent removed for good (expired or pruned)."""

    name: str
    env: str
    label: str
    build_id: str
    display_name: str
    retired: str

    def to_dict(self) -> dict[str, str]:
        return {
            "env": self.env,
            "label": self.label,
            "build_id": self.build_id,
            "display_name": self.display_name,
            "retired": self.retired,
        }


@dataclass(frozen=True)
class ConcreteBuild:
    """The build a process really runs: `DEPLOY_ROOT/envs/ENV/BUILD_ID`."""

    env: str
    build_id: str
    deploy_root: Path

    def to_dict(self) -> dict[str, str]:
        return {"env": self.env, "build_id": self.build_id}


@dataclass
class Catalogue:
    """Every NSLS-II kernel visible on the Jupyter path, plus the retired ones."""

    kernels: dict[str, NsKernel] = field(default_factory=dict)
    retired: dict[str, RetiredKernel] = field(default_factory=dict)

    @property
    def deploy_roots(self) -> list[Path]:
        return list(dict.fromkeys(k.deploy_root for k in self.kernels.values()))

    def lts_of(self, env: str) -> list[NsKernel]:
        return [k for k in self.kernels.values() if k.env == env and not k.is_latest]

    def latest_of(self, env: str) -> NsKernel | None:
        return next((k for k in self.kernels.values() if k.env == env and k.is_latest), None)

    def is_deployed(self, env: str, build_id: str) -> bool:
        """The build is unpacked and smoke-tested (ready) under one of the deploy roots."""
        return any(layout.read_ready(root, env, build_id) for root in self.deploy_roots)


def deploy_root_of_spec(resource_dir: str | Path) -> Path:
    """`DEPLOY_ROOT/share/jupyter/kernels/NAME` -> `DEPLOY_ROOT`."""
    return Path(resource_dir).absolute().parents[3]


def read_kernelspec(name: str, resource_dir: str | Path) -> NsKernel | None:
    """The NSLS-II kernel in `resource_dir`, or None for a foreign or unreadable spec."""
    resource_dir = Path(resource_dir)
    try:
        with open(resource_dir / "kernel.json", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        log.warning("skipping kernelspec %s: %s", resource_dir, exc)
        return None
    if not isinstance(data, dict):
        return None
    try:
        meta = kernel_metadata(data.get("metadata"))
    except RecordError as exc:
        log.warning("skipping kernelspec %s: %s", resource_dir, exc)
        return None
    if meta is None or not meta.env:
        return None
    return NsKernel(name, str(data.get("display_name", name)), resource_dir, meta)


def kernel_dirs_in(deploy_root: str | Path) -> dict[str, Path]:
    """NSLS-II kernelspec directories written under one deploy root (name -> directory)."""
    base = layout.kernels_dir(Path(deploy_root))
    found: dict[str, Path] = {}
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            if entry.name.startswith(SPEC_PREFIX) and entry.is_dir():
                found[entry.name] = Path(entry.path)
    return found


def read_retired(deploy_root: str | Path) -> dict[str, RetiredKernel]:
    """`DEPLOY_ROOT/share/jupyter/nsls2/retired.json`'s readable entries; absent or
    unreadable means none (logged, naming the file and the field)."""
    path = layout.retired_kernels_path(deploy_root)
    try:
        found = layout.read_record(path, RetiredFile.from_dict)
    except RecordError as exc:
        log.warning("ignoring %s", exc)
        return {}
    if found is None:
        return {}
    entries, bad = found.entries()
    for problem in bad:
        log.warning("ignoring an entry of %s: %s", path, problem)
    return {
        name: RetiredKernel(
            name=name,
            env=entry.env,
            label=entry.label,
            build_id=entry.build_id,
            display_name=entry.display_name or name,
            retired=entry.retired,
        )
        for name, entry in entries.items()
    }


def build_catalogue(kernel_dirs: Mapping[str, str | Path]) -> Catalogue:
    """Read the NSLS-II specs among `kernel_dirs` (name -> resource dir, as
    `KernelSpecManager.find_kernel_specs()` returns) and the retired records of their roots."""
    catalogue = Catalogue()
    for name, directory in kernel_dirs.items():
        if name.startswith(SPEC_PREFIX) and (kernel := read_kernelspec(name, directory)):
            catalogue.kernels[name] = kernel
    for root in catalogue.deploy_roots:
        for name, retired in read_retired(root).items():
            # a name that is a live spec again (re-promoted) is not retired
            if name not in catalogue.kernels:
                catalogue.retired.setdefault(name, retired)
    return catalogue


def build_of_path(path: str, deploy_roots: Iterable[Path]) -> ConcreteBuild | None:
    """`DEPLOY_ROOT/envs/ENV/BUILD_ID/...` -> that build (symlinks in the root resolved)."""
    path = os.path.realpath(path)
    for root in deploy_roots:
        envs = os.path.realpath(layout.envs_dir(root))
        if not path.startswith(envs + os.sep):
            continue
        parts = path[len(envs) + 1 :].split(os.sep)
        if len(parts) >= 2 and is_build_id(parts[1]):
            return ConcreteBuild(parts[0], parts[1], root)
    return None


def _process_exe(pid: int) -> str | None:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    # the kernel appends this when the binary was replaced or removed since exec
    return exe.removesuffix(" (deleted)")


def _process_conda_prefix(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(b"CONDA_PREFIX="):
            return os.fsdecode(entry[len(b"CONDA_PREFIX=") :])
    return None


def build_of_process(pid: int, deploy_roots: Iterable[Path]) -> ConcreteBuild | None:
    """The build a running kernel process uses, from `/proc/PID/exe` (the python binary
    inside the build), else its `CONDA_PREFIX` (which the kernel's launcher sets to the
    resolved build directory). None when neither lies in a deploy root, e.g. while the
    latest kernel's `/bin/sh` has not yet exec'd python."""
    roots = list(deploy_roots)
    for path in (_process_exe(pid), _process_conda_prefix(pid)):
        if path and (build := build_of_path(path, roots)):
            return build
    return None


def build_time(build_id: str) -> datetime | None:
    """The time a build id names (`2026.11.25T020000Z-1a2b3c4d`), None if it is not one."""
    return build_id_time(build_id)

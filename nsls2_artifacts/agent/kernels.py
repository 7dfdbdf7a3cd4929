"""Kernelspecs in DEPLOY_ROOT/share/jupyter/kernels: the only module that writes them.

`reconcile` decides which specs should exist and calls `write_kernelspec` /
`remove_kernelspec`; prune calls `remove_kernelspecs_for` before deleting a build.
The latest kernel's argv resolves `envs/ENV/latest` when it is executed (docs/design.md
rule 6), so a restart after a flip starts the new build and a running kernel's
`sys.prefix` is the concrete build directory; LTS kernels name their build directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec

from .. import layout, names
from ..fsutil import atomic_write_bytes, atomic_write_json, fsync_dir
from ..kernelmeta import (
    MANAGED,
    KernelMetadata,
    RetiredFile,
    RetiredKernelRecord,
    kernel_metadata_or_none,
)
from ..records import RecordError, utcnow
from . import latest, logos
from .log import LOGGER_NAME, event
from .logos import Logo

PREFIX = "nsls2-"
LOGO_FILES = ("logo-svg.svg", "logo-64x64.png")  # the names stock Jupyter looks for


def kernel_name(env: str, label: str | None = None) -> str:
    """`nsls2-ENV-latest` or `nsls2-ENV-LABEL`: one name per (env, label), never shared
    (the rules are in names.py; a name that breaks them raises KernelNameError)."""
    return names.kernel_name(env, label)


HYGIENE_UNSET = (
    # what the server's environment could use to change what a kernel imports or loads
    "PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE PYTHONSAFEPATH PYTHONPLATLIBDIR "
    "PYTHONEXECUTABLE VIRTUAL_ENV LD_LIBRARY_PATH LD_PRELOAD "
    "CONDA_DEFAULT_ENV CONDA_SHLVL CONDA_PROMPT_MODIFIER CONDA_EXE CONDA_PYTHON_EXE "
    "CONDA_PREFIX_1 CONDA_PREFIX_2 CONDA_PREFIX_3 CONDA_PREFIX_4 _CE_CONDA _CE_M"
)
# ipykernel version -> the protocol it speaks, for a build whose _version.py is unreadable
_PROTOCOL_BY_IPYKERNEL_MAJOR = {4: "5.0", 5: "5.1", 6: "5.3", 7: "5.3"}
_PROTOCOL_RE = re.compile(r"^kernel_protocol_version_info\s*=\s*\((\d+),\s*(\d+)\)", re.M)


@dataclass(frozen=True)
class KernelPlan:
    """Everything one kernelspec is made from; `reconcile` plans these, `write_kernelspec`
    writes them. `labels` are every LTS label shown in the display name (merged labels)."""

    name: str
    env: str
    build_id: str
    channel: str  # latest | lts
    label: str  # "latest" or this spec's LTS label
    base_name: str  # the env's display name from nsls2.yaml, e.g. "NSLS-II base"
    created: str
    python: str | None
    listed: bool
    labels: tuple[str, ...] = ()
    expires: str | None = None  # LTS: ISO date its support ends
    promoted: str | None = None
    beamlines: tuple[str, ...] = ()
    memory_limit: int | None = None
    ipykernel: str | None = None  # its version in the build, for `kernel_protocol_version`
    logo: Logo | None = field(default=None, repr=False, compare=False)

    @property
    def display_name(self) -> str:
        return display_name(self)

    def summary(self) -> dict[str, Any]:
        """For `--dry-run` output (no logo bytes)."""
        data = asdict(self)
        data.pop("logo")
        data["display_name"] = self.display_name
        return data


def short_python(version: str | None) -> str | None:
    """`3.11.7` -> `3.11`."""
    return ".".join(version.split(".")[:2]) if version else None


def display_name(plan: KernelPlan) -> str:
    """What a user chooses by: "NSLS-II base 2026-1 (Python 3.11, until 2029-05)" or
    "NSLS-II base (latest, Python 3.11, 2026-11-30)"."""
    python = short_python(plan.python)
    details = [f"Python {python}"] if python else []
    if plan.channel == "latest":
        return f"{plan.base_name} ({', '.join(['latest', *details, plan.created[:10]])})"
    if plan.expires:
        details.append(f"until {plan.expires[:7]}")
    labels = " / ".join(plan.labels or (plan.label,))
    return f"{plan.base_name} {labels}" + (f" ({', '.join(details)})" if details else "")


def _hygiene() -> str:
    return f"unset {HYGIENE_UNSET}; export PYTHONNOUSERSITE=1; "


def _launch(deploy_root: Path, python: str, limit: int | None, exec_files: list[Path]) -> str:
    """`exec` the build's python through kernel_ceiling.py, which puts the process under
    the memory ceiling (cgroup, else RLIMIT_DATA) and sizes thread pools for its CPUs,
    then execs the kernel itself (same pid). `python` is already shell-quoted."""
    ceiling = shlex.quote(str(layout.kernel_ceiling_path(deploy_root)))
    if limit:
        exec_files = [*exec_files, layout.kernel_memory_path(deploy_root)]
    files = "".join(f" {shlex.quote(f'--IPKernelApp.exec_files={f}')}" for f in exec_files)
    return (
        f'exec {python} -I -S {ceiling} {limit or "none"} "$0" -- '
        f'{python} -m ipykernel_launcher -f "$0"{files}'
    )


def _common_env(deploy_root: Path) -> dict[str, str]:
    return {"TILED_SITE_PROFILES": str(layout.profiles_dir(deploy_root)), "PYTHONNOUSERSITE": "1"}


@lru_cache(maxsize=512)
def protocol_version(prefix: str, ipykernel_version: str | None) -> str:
    """The Jupyter protocol the build's ipykernel speaks: read from its `_version.py`
    (builds are immutable, so once per build), else known by ipykernel's major version."""
    for found in sorted(Path(prefix).glob("lib/python3*/site-packages/ipykernel/_version.py")):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if match := _PROTOCOL_RE.search(found.read_text()):
                return f"{match.group(1)}.{match.group(2)}"
    major = (ipykernel_version or "").split(".")[0]
    return _PROTOCOL_BY_IPYKERNEL_MAJOR.get(int(major) if major.isdigit() else 6, "5.3")


def _metadata(plan: KernelPlan) -> dict[str, Any]:
    meta = KernelMetadata(
        env=plan.env,
        build_id=plan.build_id,
        channel="latest" if plan.channel == "latest" else "lts",
        label=plan.label,
        labels=plan.labels,
        env_display_name=plan.base_name,
        created=plan.created,
        python=plan.python,
        expires=plan.expires,
        promoted=plan.promoted,
        listed=plan.listed,
        beamlines=plan.beamlines,
        memory_limit=plan.memory_limit,
    )
    return {"debugger": True, MANAGED: meta.to_dict()}


def build_spec(deploy_root: Path, plan: KernelPlan) -> KernelSpec:
    """The kernelspec for `plan`: latest resolves its link at exec time, LTS names its build."""
    prefix = layout.build_dir(deploy_root, plan.env, plan.build_id)
    env = _common_env(deploy_root)
    if plan.channel == "latest":
        link = shlex.quote(str(layout.latest_link(deploy_root, plan.env)))
        launch = _launch(
            deploy_root, '"$p/bin/python"', plan.memory_limit, [startup_path(deploy_root)]
        )
        script = (
            f'{_hygiene()}p=$(readlink -f {link}) && PATH="$p/bin:$PATH" CONDA_PREFIX="$p" {launch}'
        )
    else:
        python = shlex.quote(str(prefix / "bin" / "python"))
        script = f"{_hygiene()}{_launch(deploy_root, python, plan.memory_limit, [])}"
        # jupyter_client expands ${PATH} from the server's environment (string.Template)
        env.update({"PATH": f"{prefix / 'bin'}:${{PATH}}", "CONDA_PREFIX": str(prefix)})
    return KernelSpec(
        argv=["/bin/sh", "-c", script, "{connection_file}"],
        display_name=plan.display_name,
        language="python",
        interrupt_mode="signal",  # `exec` makes the python the process jupyter signals
        kernel_protocol_version=protocol_version(str(prefix), plan.ipykernel),
        env=env,
        metadata=_metadata(plan),
    )


def spec_dict(spec: KernelSpec) -> dict[str, Any]:
    return spec.to_dict()


def installed(deploy_root: Path) -> dict[str, dict[str, Any]]:
    """Our kernelspecs (name -> kernel.json content); unreadable or foreign ones are skipped."""
    found: dict[str, dict[str, Any]] = {}
    base = layout.kernels_dir(deploy_root)
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(base):
            if not entry.name.startswith(PREFIX):
                continue
            try:
                with open(os.path.join(entry.path, "kernel.json"), encoding="utf-8") as handle:
                    data = json.load(handle)
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and isinstance(data.get("metadata", {}).get(MANAGED), dict):
                found[entry.name] = data
    return found


def spec_target(data: dict[str, Any]) -> dict[str, Any]:
    """The `metadata.nsls2` block as written (for output; read it with `spec_meta`)."""
    return data["metadata"][MANAGED]


def spec_meta(data: dict[str, Any]) -> KernelMetadata | None:
    """The spec's typed `metadata.nsls2`, None when it does not parse."""
    return kernel_metadata_or_none(data.get("metadata"))


def spec_pair(data: dict[str, Any]) -> names.Pair:
    """(env, label), label None for the rolling kernel: whose kernel this spec is. An
    unreadable record is nobody's ("", None): the spec is rewritten or removed by name."""
    meta = spec_meta(data)
    return (meta.env, meta.lts_label) if meta else ("", None)


def is_current(deploy_root: Path, name: str, wanted: dict[str, Any], found: Any) -> bool:
    """True when kernels/NAME already holds `wanted` and both logo files."""
    directory = layout.kernels_dir(deploy_root) / name
    return found == wanted and all((directory / f).exists() for f in LOGO_FILES)


def write_kernelspec(deploy_root: Path, plan: KernelPlan) -> bool:
    """Write the logos, then `kernels/NAME/kernel.json` last (atomically: Jupyter lists a
    spec once kernel.json exists); returns False when everything was already so."""
    directory = layout.kernels_dir(deploy_root) / plan.name
    wanted = spec_dict(build_spec(deploy_root, plan))
    found = None
    with contextlib.suppress(OSError, ValueError):
        found = json.loads((directory / "kernel.json").read_text())
    if is_current(deploy_root, plan.name, wanted, found):
        return False
    logo = plan.logo or logos.logo_for(plan.env, None)
    for file_name, data in zip(LOGO_FILES, (logo.svg, logo.png), strict=True):
        path = directory / file_name
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                continue
        atomic_write_bytes(path, data)
    atomic_write_json(directory / "kernel.json", wanted)
    if plan.channel == "lts":
        forget_retired(deploy_root, plan.name)  # a revived LTS kernel is not retired
    return True


def remove_kernelspec(deploy_root: Path, name: str, when: datetime | None = None) -> bool:
    """Remove kernel.json first (Jupyter stops listing it), then the directory. An LTS
    spec removed is recorded in retired.json, so a notebook naming it can be told why."""
    directory = layout.kernels_dir(deploy_root) / name
    data = None
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((directory / "kernel.json").read_text())
    try:
        os.unlink(directory / "kernel.json")
    except FileNotFoundError:
        if not directory.exists():
            return False
    else:
        fsync_dir(directory)
        if isinstance(data, dict):
            _record_retired(deploy_root, name, data, when or utcnow())
    shutil.rmtree(directory, ignore_errors=True)
    return True


def startup_path(deploy_root: Path) -> Path:
    """The file every latest kernel runs at start (the restart notice)."""
    return layout.kernel_startup_path(deploy_root)


# the files every kernel's launcher names, copied into DEPLOY_ROOT/share/jupyter/nsls2/
KERNEL_FILES = ("kernel_startup.py", "kernel_ceiling.py", "kernel_memory.py")


def write_startup(deploy_root: Path) -> bool:
    """Copy the kernel-side files (restart notice, memory ceiling, MemoryError hook) into
    the deploy root, before the specs that name them; False when all were already so."""
    changed = False
    for name in KERNEL_FILES:
        wanted = (Path(__file__).parent / name).read_bytes()
        path = layout.jupyter_dir(deploy_root) / "nsls2" / name
        with contextlib.suppress(OSError):
            if path.read_bytes() == wanted:
                continue
        atomic_write_bytes(path, wanted)
        changed = True
    return changed


def retired_path(deploy_root: Path) -> Path:
    return layout.retired_kernels_path(deploy_root)


def read_retired(deploy_root: Path) -> dict[str, dict[str, Any]]:
    """`retired.json`'s readable kernels (name -> {env, label, build_id, display_name,
    retired}); none when the file is absent or unreadable (for readers: nothing is written)."""
    with contextlib.suppress(RecordError):
        found = layout.read_record(retired_path(deploy_root), RetiredFile.from_dict)
        if found is not None:
            return {name: entry.to_dict() for name, entry in found.entries()[0].items()}
    return {}


def _retired_for_update(deploy_root: Path) -> dict[str, Any]:
    """`retired.json`'s kernels as written, to be changed and written back: {} only when
    there is no file. RecordError (naming the file) when it cannot be parsed, so that nobody
    writes `{}` plus one entry over the records it still holds for an operator to recover."""
    found = layout.read_record(retired_path(deploy_root), RetiredFile.from_dict)
    return dict(found.kernels) if found is not None else {}


def _warn_unreadable(kernel: str, exc: RecordError) -> None:
    log = logging.getLogger(LOGGER_NAME)  # the agent's logger (its CLI sets it up)
    event(log, "retired-unreadable", logging.WARNING, kernel=kernel, error=str(exc))


def _record_retired(deploy_root: Path, name: str, data: dict[str, Any], when: datetime) -> None:
    info = spec_meta(data)
    if info is None or info.is_latest:
        return
    try:
        retired = _retired_for_update(deploy_root)
    except RecordError as exc:
        # the kernel still goes (its build is being retired); the unreadable file stays
        # as it is for an operator, and notebooks naming this kernel get the plain
        # "missing kernel" dialog instead of the retired one
        _warn_unreadable(name, exc)
        return
    display = data.get("display_name")
    retired[name] = RetiredKernelRecord(
        env=info.env,
        label=info.label,
        build_id=info.build_id,
        display_name=display if isinstance(display, str) else None,
        retired=when.date().isoformat(),
    ).to_dict()
    atomic_write_json(retired_path(deploy_root), {"kernels": retired})


def forget_retired(deploy_root: Path, name: str) -> None:
    try:
        retired = _retired_for_update(deploy_root)
    except RecordError as exc:
        _warn_unreadable(name, exc)
        return
    if retired.pop(name, None) is not None:
        atomic_write_json(retired_path(deploy_root), {"kernels": retired})


def remove_kernelspecs_for(deploy_root: str | Path, env: str, build_id: str) -> list[str]:
    """Remove every kernelspec that would start ENV/BUILD_ID; returns their names.

    For prune: LTS specs naming the build, and the latest spec only if `latest` points at
    it (otherwise the latest spec starts another build and must stay).
    """
    deploy_root = Path(deploy_root)
    removed = []
    latest_target = latest.current_latest(deploy_root, env)
    for name, data in sorted(installed(deploy_root).items()):
        target = spec_meta(data)
        if target is None or target.env != env:
            continue
        hit = latest_target == build_id if target.is_latest else target.build_id == build_id
        if hit and remove_kernelspec(deploy_root, name):
            removed.append(name)
    return removed

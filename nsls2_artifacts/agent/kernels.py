"""Kernelspecs in DEPLOY_ROOT/share/jupyter/kernels: the only module that writes them.

`reconcile` decides which specs should exist and calls `write_kernelspec` /
`remove_kernelspec`; prune calls `remove_kernelspecs_for` before deleting a build.
The latest kernel's argv resolves `envs/ENV/latest` when it is executed (DESIGN.md
rule 6), so a restart after a flip starts the new build and a running kernel's
`sys.prefix` is the concrete build directory; LTS kernels name their build directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec

from ..fsutil import atomic_write_json, fsync_dir
from . import layout

MANAGED = "nsls2"  # metadata key marking the specs this module owns
PREFIX = "nsls2-"


def kernel_name(env: str, label: str | None = None) -> str:
    """`nsls2-ENV-latest` or `nsls2-ENV-LABEL`, limited to the characters Jupyter allows."""
    raw = f"{PREFIX}{env}-{label or 'latest'}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw).lower()


def _common_env(deploy_root: Path) -> dict[str, str]:
    return {"TILED_SITE_PROFILES": str(layout.profiles_dir(deploy_root))}


def latest_spec(deploy_root: Path, env: str, build_id: str, display_name: str) -> KernelSpec:
    """The rolling kernel: `/bin/sh` resolves the `latest` link at every (re)start."""
    link = shlex.quote(str(layout.latest_link(deploy_root, env)))
    script = (
        f"p=$(readlink -f {link}) && "
        'PATH="$p/bin:$PATH" CONDA_PREFIX="$p" exec "$p/bin/python" -m ipykernel_launcher -f "$0"'
    )
    return KernelSpec(
        argv=["/bin/sh", "-c", script, "{connection_file}"],
        display_name=f"{display_name} (latest)",
        language="python",
        interrupt_mode="signal",  # `exec` makes the python the process jupyter signals
        env=_common_env(deploy_root),
        metadata={
            "debugger": True,
            MANAGED: {"env": env, "build_id": build_id, "channel": "latest", "label": "latest"},
        },
    )


def lts_spec(
    deploy_root: Path, env: str, label: str, build_id: str, display_name: str
) -> KernelSpec:
    """A long-term-support kernel: the concrete build's python, never re-pointed."""
    prefix = layout.build_dir(deploy_root, env, build_id)
    return KernelSpec(
        argv=[
            str(prefix / "bin" / "python"),
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
        ],
        display_name=f"{display_name} {label}",
        language="python",
        interrupt_mode="signal",
        # jupyter_client expands ${PATH} from the server's environment (string.Template)
        env={
            **_common_env(deploy_root),
            "PATH": f"{prefix / 'bin'}:${{PATH}}",
            "CONDA_PREFIX": str(prefix),
        },
        metadata={
            "debugger": True,
            MANAGED: {"env": env, "build_id": build_id, "channel": "lts", "label": label},
        },
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


def spec_target(data: dict[str, Any]) -> dict[str, str]:
    """The `metadata.nsls2` block: env, build_id, channel, label."""
    return data["metadata"][MANAGED]


def write_kernelspec(deploy_root: Path, name: str, spec: KernelSpec) -> bool:
    """Write `kernels/NAME/kernel.json` atomically; returns False when it was already so."""
    path = layout.kernels_dir(deploy_root) / name / "kernel.json"
    wanted = spec_dict(spec)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()) == wanted:
            return False
    atomic_write_json(path, wanted)
    return True


def remove_kernelspec(deploy_root: Path, name: str) -> bool:
    """Remove kernel.json first (Jupyter stops listing it), then the directory."""
    directory = layout.kernels_dir(deploy_root) / name
    try:
        os.unlink(directory / "kernel.json")
    except FileNotFoundError:
        if not directory.exists():
            return False
    else:
        fsync_dir(directory)
    shutil.rmtree(directory, ignore_errors=True)
    return True


def remove_kernelspecs_for(deploy_root: str | Path, env: str, build_id: str) -> list[str]:
    """Remove every kernelspec that would start ENV/BUILD_ID; returns their names.

    For prune: LTS specs naming the build, and the latest spec only if `latest` points at
    it (otherwise the latest spec starts another build and must stay).
    """
    deploy_root = Path(deploy_root)
    removed = []
    latest_target = (
        os.path.basename(os.path.realpath(layout.latest_link(deploy_root, env)))
        if layout.latest_link(deploy_root, env).is_symlink()
        else None
    )
    for name, data in sorted(installed(deploy_root).items()):
        target = spec_target(data)
        if target.get("env") != env:
            continue
        if target.get("channel") == "latest":
            hit = latest_target == build_id
        else:
            hit = target.get("build_id") == build_id
        if hit and remove_kernelspec(deploy_root, name):
            removed.append(name)
    return removed

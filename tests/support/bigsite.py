"""A facility-sized site in seconds: N envs x M LTS labels of kernelspecs written by the
real `agent/kernels.py` (and `latest.flip`, `profiles.render_profile`), every build being a
symlink to ONE real deployed build, so each kernel really starts. For the lab and hub tests
that count launcher cards and dialog entries (issue 19: 30 envs x 5 labels = 180 specs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nsls2_artifacts import layout
from nsls2_artifacts.agent import kernels, latest
from nsls2_artifacts.agent.profiles import render_beamline_envs, render_profile
from nsls2_artifacts.config import Beamline

# real NSLS-II beamline names first (a few get their own env), then made-up ones
ENV_NAMES = (
    "base",
    "csx",
    "hxn",
    "chx",
    "cms",
    "smi",
    "srx",
    "xpd",
    "pdf",
    "isr",
    "iss",
    "qas",
    "bmm",
    "tes",
    "fxi",
    "six",
    "ios",
    "amx",
    "fmx",
    "lix",
    "nyx",
    "cdi",
    "ara",
    "sst",
    "ucal",
    "rsoxs",
    "opls",
    "esm",
    "haxpes",
    "xfp",
    "hex",
)
LTS_LABELS = ("2023-1", "2024-1", "2024-2", "2025-1", "2026-1")  # oldest first


@dataclass(frozen=True)
class BigSite:
    deploy_root: Path
    envs: tuple[str, ...]
    labels: tuple[str, ...]
    listed_lts: int
    beamlines: tuple[str, ...]  # those with a tiled profile (beamline cards)
    kernel_names: tuple[str, ...] = field(default=())

    @property
    def share(self) -> Path:
        return layout.jupyter_dir(self.deploy_root)

    def listed_labels(self) -> tuple[str, ...]:
        """The LTS labels shown per env (the newest `listed_lts`)."""
        return self.labels[-self.listed_lts :]


def build_id(index: int, env_index: int) -> str:
    """A time-sorted build id: label `index` (0 = oldest) of env `env_index`."""
    year = 2023 + index // 2 if index < 5 else 2026
    month = 5 if index % 2 == 0 else 11
    if index == 5:  # the latest build: newest of all
        month = 12
    return f"{year}.{month:02d}.01T0200Z-{env_index:04x}{index:04x}"


def generate_site(
    deploy_root: Path,
    real_build: Path,
    envs: int = 30,
    labels: tuple[str, ...] = LTS_LABELS,
    listed_lts: int = 2,
    beamlines: tuple[str, ...] = ("csx", "hxn", "chx", "amx", "tst", "hex"),
    tiled_uri: str = "http://127.0.0.1:9/api",
    beamline_envs: Mapping[str, str] | None = None,
) -> BigSite:
    """Write the site under `deploy_root`. `base` serves every beamline (the union env);
    an env named after a beamline serves that beamline; `tst` has a profile but no env of
    its own, so its card must fall back to the env that lists it; `hex` (the 31st name, no
    env at 30) has none either but the site config names its env (`beamlines.hex.env: fmx`,
    `beamline_envs`)."""
    beamline_envs = {"hex": "fmx"} if beamline_envs is None else beamline_envs
    names = ENV_NAMES[:envs]
    written: list[str] = []
    kernels.write_startup(deploy_root)
    for env_index, env in enumerate(names):
        served = tuple(beamlines) if env == "base" else ((env,) if env in beamlines else ())
        if env == "hxn":
            served = ("hxn", "tst")  # the most specific env listing tst
        ids = [build_id(i, env_index) for i in range(len(labels) + 1)]
        for bid in ids:
            path = layout.build_dir(deploy_root, env, bid)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_symlink():
                os.symlink(real_build, path)
        latest.flip(deploy_root, env, ids[-1])
        base_name = "NSLS-II base" if env == "base" else f"NSLS-II {env.upper()}"
        plans = [_plan(env, ids[-1], "latest", base_name, True, served)]
        for i, label in enumerate(labels):
            listed = i >= len(labels) - listed_lts
            plans.append(_plan(env, ids[i], label, base_name, listed, served))
        for plan in plans:
            kernels.write_kernelspec(deploy_root, plan)
            written.append(plan.name)
    profiles = layout.profiles_dir(deploy_root)
    profiles.mkdir(parents=True, exist_ok=True)
    configured = {
        name: Beamline(name=name, uri=tiled_uri, path=(name,), env=beamline_envs.get(name))
        for name in beamlines
    }
    for name, beamline in configured.items():
        (profiles / f"{name}.yml").write_text(render_profile(beamline))
    envs_file = layout.beamline_envs_file(deploy_root)
    envs_file.parent.mkdir(parents=True, exist_ok=True)
    envs_file.write_text(render_beamline_envs(configured))
    return BigSite(deploy_root, names, labels, listed_lts, tuple(beamlines), tuple(written))


def _plan(
    env: str, bid: str, label: str, base_name: str, listed: bool, served: tuple[str, ...]
) -> kernels.KernelPlan:
    channel = "latest" if label == "latest" else "lts"
    created = f"{bid[0:4]}-{bid[5:7]}-{bid[8:10]}T02:00:00Z"
    expires = None if channel == "latest" else f"{int(bid[0:4]) + 3}-{bid[5:7]}-01"
    return kernels.KernelPlan(
        name=kernels.kernel_name(env, None if channel == "latest" else label),
        env=env,
        build_id=bid,
        channel=channel,
        label=label,
        base_name=base_name,
        created=created,
        python="3.12.8",
        listed=listed,
        labels=() if channel == "latest" else (label,),
        expires=expires,
        beamlines=served,
    )

"""Solve a manifest into exact packages with py-rattler, and read/write `pixi.lock` files.

`publish` calls `solve` (or `load_locked` for `--locked`), then `write_lock` once the
install is done. Channels are fetched from their `channel_mirrors` URL, but the lock names
every package by its canonical channel URL, so a lock is the same on every site and a
rebuild from another mirror hashes the same. Only this module and install.py import rattler.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import platform as host
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import rattler
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from rattler.exceptions import (
    FetchRepoDataError,
    GatewayError,
    InvalidMatchSpecError,
    ParseCondaLockError,
    SolverError,
)

from .config import SiteConfig
from .errors import ChannelUnreachableError, ManifestError, SolveError
from .manifest import EnvManifest
from .records import PackageRef

LOCK_ENVIRONMENT = "default"  # pixi's name for the workspace's default environment

# pixi's defaults for linux-64 when the workspace has no [system-requirements]
_DEFAULT_SYSTEM = {"linux": "4.18", "libc": "2.28"}


@dataclass(frozen=True)
class PypiPin:
    """A PyPI package installed by uv on top of the conda packages."""

    name: str
    version: str
    location: str


@dataclass
class Solution:
    """The exact packages of one build. `records` are rattler objects: pass them to install."""

    env: str
    platform: str
    records: list[Any]  # rattler.RepoDataRecord, with canonical (mirror-independent) URLs
    canonical_channels: list[str]
    mirrors: dict[str, str]  # canonical channel base URL -> mirror base URL
    virtual_packages: list[str]
    specs: list[str]
    pypi: list[PypiPin] = field(default_factory=list)
    locked: bool = False  # from a committed pixi.lock (`publish --locked`), not a fresh solve

    @property
    def packages(self) -> tuple[PackageRef, ...]:
        return tuple(
            PackageRef(
                name=r.name.normalized,
                version=str(r.version),
                build=str(r.build),
                channel=_channel_label(r.channel),
            )
            for r in self.records
        ) + tuple(PackageRef(p.name, p.version, "pypi", "pypi") for p in self.pypi)

    def install_records(self) -> list[Any]:
        """The records with their URLs pointing at the mirrors they are fetched from."""
        return [_with_url(r, _apply_prefix_map(r.url, self.mirrors)) for r in self.records]


def host_platform() -> str:
    """The conda subdir of this machine (builds are made for the host: they run here)."""
    return str(rattler.Subdir.current())


def default_cache_dir(site: SiteConfig) -> Path:
    """Shared rattler cache (repodata + extracted packages) for every publish on this host."""
    override = os.environ.get("NSLS2_ARTIFACTS_CACHE")
    return Path(override) if override else site.local_dir / "cache" / "rattler"


def solve(
    manifest: EnvManifest,
    site: SiteConfig,
    *,
    platform: str | None = None,
    cache_dir: str | Path | None = None,
) -> Solution:
    """Solve `manifest` for `platform` against its channels (after `channel_mirrors`)."""
    target = _check_platform(manifest, platform or host_platform())
    channels = _resolve_channels(manifest, site)
    specs = _match_specs(manifest)
    virtual = _virtual_packages(manifest, target)
    cache = Path(cache_dir) if cache_dir else default_cache_dir(site)
    for name, _canonical, mirror in channels:
        _precheck_local_channel(name, mirror)
    gateway = rattler.Gateway(cache_dir=cache / "repodata", show_progress=False)
    try:
        records = asyncio.run(
            rattler.solve(
                sources=[rattler.Channel(mirror) for _, _, mirror in channels],
                specs=specs,
                gateway=gateway,
                platforms=[target, "noarch"],
                virtual_packages=[v for _, v in virtual],
            )
        )
    except SolverError as exc:
        raise SolveError(
            f"{manifest.pixi_toml}: the dependencies of {manifest.name!r} cannot be solved "
            f"for {target}:\n{exc}"
        ) from None
    except (GatewayError, FetchRepoDataError, OSError) as exc:
        raise _unreachable(channels, gateway, target, exc) from None
    mirrors = {_base(mirror): canonical for _, canonical, mirror in channels}
    canonical_records = sorted(
        (_canonicalise(r, mirrors) for r in records), key=lambda r: r.name.normalized
    )
    return Solution(
        env=manifest.name,
        platform=target,
        records=canonical_records,
        canonical_channels=[canonical for _, canonical, _ in channels],
        mirrors={canonical: _base(mirror) for _, canonical, mirror in channels},
        virtual_packages=[text for text, _ in virtual],
        specs=[str(s) for s in specs],
    )


def load_locked(
    manifest: EnvManifest,
    site: SiteConfig,
    lock_path: str | Path | None = None,
    *,
    platform: str | None = None,
) -> Solution:
    """`publish --locked`: the committed lock's packages, after checking it fits the manifest."""
    path = Path(lock_path) if lock_path else manifest.lock_path
    target = _check_platform(manifest, platform or host_platform())
    if not path.is_file():
        raise ManifestError(path, None, "--locked needs a committed pixi.lock next to pixi.toml")
    environment = _lock_environment(path)
    lock_platform = next((p for p in environment.platforms() if p.name == target), None)
    if lock_platform is None:
        raise ManifestError(path, "environments.default", f"the lock has no packages for {target}")
    records = environment.conda_repodata_records_for_platform(lock_platform) or []
    pypi = environment.pypi_packages_for_platform(lock_platform) or []
    specs = _match_specs(manifest)
    _check_lock_satisfies(path, manifest, specs, records, pypi)
    channels = _resolve_channels(manifest, site)
    return Solution(
        env=manifest.name,
        platform=target,
        records=sorted(records, key=lambda r: r.name.normalized),
        canonical_channels=[c.__str__() for c in environment.channels()]
        or [canonical for _, canonical, _ in channels],
        mirrors={canonical: _base(mirror) for _, canonical, mirror in channels},
        virtual_packages=list(lock_platform.virtual_packages),
        specs=[str(s) for s in specs],
        pypi=[PypiPin(p.name, str(p.version), str(p.location)) for p in pypi],
        locked=True,
    )


def write_lock(solution: Solution, path: str | Path) -> str:
    """Write `solution` as a pixi.lock at `path`; return the file's sha256."""
    path = Path(path)
    lock_platform = rattler.LockPlatform(
        solution.platform, virtual_packages=list(solution.virtual_packages)
    )
    lock = rattler.LockFile([lock_platform])
    lock.set_channels(
        LOCK_ENVIRONMENT, [rattler.LockChannel(c) for c in solution.canonical_channels]
    )
    for record in solution.records:
        lock.add_conda_package(LOCK_ENVIRONMENT, lock_platform, record)
    for pin in sorted(solution.pypi, key=lambda p: canonicalize_name(p.name)):
        lock.add_pypi_package(LOCK_ENVIRONMENT, lock_platform, pin.name, pin.version, pin.location)
    lock.to_path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- helpers ---------------------------------------------------------------------------------


def _check_platform(manifest: EnvManifest, target: str) -> str:
    if target not in manifest.platforms:
        raise ManifestError(
            manifest.pixi_toml,
            "workspace.platforms",
            f"this host builds for {target}, which the manifest does not list",
        )
    return target


def _resolve_channels(manifest: EnvManifest, site: SiteConfig) -> list[tuple[str, str, str]]:
    """(name as written, canonical base URL, URL to fetch from) for every manifest channel."""
    out = []
    for name in manifest.channels:
        canonical = _base(rattler.Channel(name).base_url)
        mirror = site.mirror_for(name)
        if mirror == name and canonical in site.channel_mirrors:
            mirror = site.channel_mirrors[canonical]
        out.append((name, canonical, _base(rattler.Channel(mirror).base_url)))
    return out


def _match_specs(manifest: EnvManifest) -> list[rattler.MatchSpec]:
    specs = []
    for name, text in manifest.dependencies.items():
        try:
            specs.append(rattler.MatchSpec(text))
        except InvalidMatchSpecError as exc:
            raise ManifestError(manifest.pixi_toml, f"dependencies.{name}", str(exc)) from None
    if not specs:
        raise ManifestError(manifest.pixi_toml, "dependencies", "no conda dependencies to install")
    return specs


def _virtual_packages(manifest: EnvManifest, target: str) -> list[tuple[str, Any]]:
    """Fixed virtual packages (like pixi's system-requirements), not the build host's."""
    if not target.startswith("linux"):
        return []
    system = {**_DEFAULT_SYSTEM, **manifest.system_requirements}
    arch = {"linux-64": "x86_64", "linux-aarch64": "aarch64", "linux-ppc64le": "ppc64le"}
    wanted = [
        ("__unix", "0", "0"),
        ("__linux", system["linux"], "0"),
        ("__glibc", system["libc"], "0"),
        ("__archspec", "1", arch.get(target, host.machine())),
    ]
    if "cuda" in system:
        wanted.append(("__cuda", system["cuda"], "0"))
    out = []
    for name, version, build in wanted:
        try:
            package = rattler.GenericVirtualPackage(
                rattler.PackageName(name), rattler.Version(version), rattler.BuildString(build)
            )
        except Exception as exc:  # rattler's parse errors share no useful base class
            field_name = {"__linux": "linux", "__glibc": "libc", "__cuda": "cuda"}.get(name, name)
            raise ManifestError(
                manifest.pixi_toml, f"system-requirements.{field_name}", str(exc)
            ) from None
        out.append((f"{name}={version}={build}", package))
    return out


def _base(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _apply_prefix_map(url: str, mapping: dict[str, str]) -> str:
    for old, new in mapping.items():
        if url.startswith(old):
            return new + url[len(old) :]
    return url


def _with_url(record: Any, url: str) -> Any:
    if record.url != url:
        record.url = url
    return record


def _canonicalise(record: Any, mirror_to_canonical: dict[str, str]) -> Any:
    """Name a solved record by its canonical channel, whatever mirror it came from."""
    record.url = _apply_prefix_map(record.url, mirror_to_canonical)
    channel = _base(record.channel) if record.channel else ""
    if channel in mirror_to_canonical:
        record.channel = mirror_to_canonical[channel]
    return record


def _channel_label(channel: str | None) -> str:
    """`conda-forge` for `https://conda.anaconda.org/conda-forge/`, else the URL."""
    if not channel:
        return ""
    prefix = "https://conda.anaconda.org/"
    return channel[len(prefix) :].strip("/") if channel.startswith(prefix) else channel


def _precheck_local_channel(name: str, mirror: str) -> None:
    """A file:// channel without repodata reads as empty; call it unreachable instead."""
    if not mirror.startswith("file://"):
        return
    root = Path(unquote(urlparse(mirror).path))
    if not (root / "noarch" / "repodata.json").is_file():
        raise ChannelUnreachableError(
            name, mirror, f"{root} is not a conda channel (no noarch/repodata.json)"
        )


def _unreachable(
    channels: list[tuple[str, str, str]], gateway: Any, target: str, exc: BaseException
) -> SolveError:
    """Find which channel failed (probe each alone) and name it with its mirror setting."""
    for name, _canonical, mirror in channels:
        if mirror.rstrip("/") in str(exc):
            return ChannelUnreachableError(name, mirror, str(exc).strip())
    for name, _canonical, mirror in channels:
        try:
            asyncio.run(gateway.names([rattler.Channel(mirror)], [target, "noarch"]))
        except Exception as probe:  # any failure of the probe names the culprit
            return ChannelUnreachableError(name, mirror, str(probe).strip())
    return SolveError(f"fetching repodata failed: {exc}")


def _lock_environment(path: Path) -> Any:
    try:
        lock = rattler.LockFile.from_path(path)
    except (ParseCondaLockError, OSError, ValueError) as exc:
        raise ManifestError(path, None, f"not a readable pixi.lock: {exc}") from None
    environment = lock.environment(LOCK_ENVIRONMENT)
    if environment is None:
        raise ManifestError(path, "environments.default", "the lock has no default environment")
    return environment


def _check_lock_satisfies(
    path: Path, manifest: EnvManifest, specs: list[Any], records: list[Any], pypi: list[Any]
) -> None:
    """Every manifest dependency must be matched by a locked package, or the lock is stale."""
    problems = []
    for spec in specs:
        name = spec.name.normalized if hasattr(spec.name, "normalized") else str(spec.name)
        candidates = [r for r in records if r.name.normalized == name]
        if not candidates:
            problems.append(f"{spec} is not in the lock")
        elif not any(spec.matches(r) for r in candidates):
            locked = ", ".join(f"{r.name.normalized} {r.version} {r.build}" for r in candidates)
            problems.append(f"{spec} does not match the locked {locked}")
    locked_pypi = {canonicalize_name(p.name): p for p in pypi}
    for name, text in manifest.pypi_dependencies.items():
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue  # already validated by the manifest loader
        pin = locked_pypi.get(canonicalize_name(name))
        if pin is None:
            problems.append(f"PyPI {text} is not in the lock")
        elif requirement.specifier and str(pin.version) not in requirement.specifier:
            problems.append(f"PyPI {text} does not match the locked {pin.name} {pin.version}")
    if problems:
        raise ManifestError(
            path,
            "environments.default",
            f"does not match {manifest.pixi_toml}: "
            + "; ".join(problems)
            + " (re-lock: publish without --locked and commit the new pixi.lock)",
        )

"""Environment manifests: read and validate `manifests/ENV/{pixi.toml,nsls2.yaml}`.

`publish` calls `load_manifest` before anything touches the network or the store, so a
malformed manifest fails fast with a `ManifestError` naming the file and the field. The
hook and the CLI call `list_manifests` to find buildable environments.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
import yaml
from msgspec import Meta
from packaging.requirements import InvalidRequirement, Requirement

from .config import MemoryLimit, RetentionOverrides, RetentionPolicy, Section, convert_section
from .errors import ConfigError, ManifestError
from .names import BEAMLINE_NAME_PATTERN, env_name_problem

PIXI_TOML = "pixi.toml"
NSLS2_YAML = "nsls2.yaml"
PIXI_LOCK = "pixi.lock"

KNOWN_PLATFORMS = frozenset(
    {"linux-64", "linux-aarch64", "linux-ppc64le", "osx-64", "osx-arm64", "win-64", "noarch"}
)

_CONDA_NAME_RE = re.compile(r"^[a-z0-9_][a-z0-9_.+-]*\Z")
_PYPI_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?\Z")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
# A bare version ("1.2.3") means exactly that version in pixi; conda would read it fuzzily.
_BARE_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z._+!]*\Z")

ModuleName = Annotated[str, Meta(pattern=_MODULE_RE.pattern)]
NonBlank = Annotated[str, Meta(pattern=r"\S")]


class KernelOverrides(Section):
    """`kernels:` in nsls2.yaml: `memory_limit` given (null: no ceiling) or not at all."""

    memory_limit: MemoryLimit | None | msgspec.UnsetType = msgspec.UNSET


class Nsls2File(Section):
    """`nsls2.yaml` as written: every field optional, unknown keys refused (a typo must not
    pass silently), decoded like the site config (errors name the file and dotted key)."""

    display_name: NonBlank | None = None  # None: "NSLS-II ENV"
    description: str = ""
    smoke: tuple[ModuleName, ...] = ("ipykernel",)  # modules every build must import
    nightly: bool = True
    beamlines: tuple[Annotated[str, Meta(pattern=BEAMLINE_NAME_PATTERN)], ...] = ()
    logo: NonBlank | None = None  # an SVG or PNG file, relative to the env's directory
    kernels: KernelOverrides = msgspec.field(default_factory=KernelOverrides)
    retention: RetentionOverrides = msgspec.field(default_factory=RetentionOverrides)

    def memory_limit(self) -> tuple[int | None, bool]:
        """(bytes or None, whether nsls2.yaml sets it at all)."""
        limit = self.kernels.memory_limit
        if limit is msgspec.UNSET:
            return None, False
        return (None if limit is None else int(limit)), True


# nsls2.yaml's words for its fields where a type name says little
_NSLS2_MESSAGES = {
    "display_name": "expected a non-empty string",
    "description": "expected a string",
    "smoke": "expected a list of module names to import",
    "smoke[]": "not an importable module name",
    "nightly": "expected true or false",
    "beamlines": "expected a list of beamline names, e.g. [csx, hxn]",
    "beamlines[]": "not a beamline name",
    "logo": "expected a path to an SVG or PNG file",
}
LOGO_MAX_BYTES = 256 * 1024  # it travels inside manifest.json


@dataclass(frozen=True)
class EnvManifest:
    """One buildable environment, validated. Specs are conda MatchSpec / PEP 508 strings."""

    name: str
    directory: Path
    channels: tuple[str, ...]
    platforms: tuple[str, ...]
    dependencies: dict[str, str]  # conda package name -> MatchSpec string
    pypi_dependencies: dict[str, str]  # PyPI project name -> PEP 508 requirement string
    display_name: str
    smoke: tuple[str, ...]
    retention: dict[str, float] = field(default_factory=dict)  # overrides of the site policy
    nightly: bool = True
    description: str = ""
    system_requirements: dict[str, str] = field(default_factory=dict)  # e.g. {"libc": "2.28"}
    source_sha256: str = ""
    beamlines: tuple[str, ...] = ()
    logo: Path | None = None  # an SVG or PNG file; None: a generated default
    # `kernels.memory_limit` in nsls2.yaml (bytes, None: no ceiling) overrides the site's
    # only when `memory_limit_set`
    memory_limit: int | None = None
    memory_limit_set: bool = False

    @property
    def pixi_toml(self) -> Path:
        return self.directory / PIXI_TOML

    @property
    def lock_path(self) -> Path:
        """Where a committed lock lives (it may not exist: only LTS rebuilds need one)."""
        return self.directory / PIXI_LOCK

    def retention_policy(self, site: RetentionPolicy) -> RetentionPolicy:
        """The site's retention policy with this environment's overrides applied."""
        return msgspec.structs.replace(site, **self.retention)


def list_manifests(manifests_dir: str | Path) -> list[str]:
    """Names of the environments under `manifests_dir` (directories holding a pixi.toml)."""
    root = Path(manifests_dir)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if (p / PIXI_TOML).is_file() and env_name_problem(p.name) is None
    )


def load_manifest(manifests_dir: str | Path, env: str) -> EnvManifest:
    """Read and validate `manifests_dir/env`; raise ManifestError naming file and field."""
    directory = Path(manifests_dir).absolute() / env
    if problem := env_name_problem(env):
        raise ManifestError(directory, None, problem)
    toml_path = directory / PIXI_TOML
    if not toml_path.is_file():
        known = ", ".join(list_manifests(manifests_dir)) or "none"
        raise ManifestError(toml_path, None, f"no such environment manifest (known: {known})")
    toml_bytes = _read_bytes(toml_path)
    yaml_path = directory / NSLS2_YAML
    yaml_bytes = _read_bytes(yaml_path) if yaml_path.exists() else b""

    pixi = _PixiReader(toml_path, toml_bytes)
    extras = read_nsls2(yaml_path, yaml_bytes)
    platform_deps = pixi.platform_dependencies()
    memory_limit, memory_limit_set = extras.memory_limit()
    return EnvManifest(
        name=env,
        directory=directory,
        channels=pixi.channels(),
        platforms=pixi.platforms(),
        dependencies={**pixi.dependencies("dependencies"), **platform_deps[0]},
        pypi_dependencies={**pixi.pypi_dependencies("pypi-dependencies"), **platform_deps[1]},
        display_name=(extras.display_name or f"NSLS-II {env}").strip(),
        smoke=extras.smoke,
        retention=extras.retention.given(),
        nightly=extras.nightly,
        description=extras.description.strip(),
        system_requirements=pixi.system_requirements(),
        source_sha256=source_digest(toml_bytes, yaml_bytes),
        beamlines=extras.beamlines,
        logo=_logo(yaml_path, directory, extras.logo),
        memory_limit=memory_limit,
        memory_limit_set=memory_limit_set,
    )


def read_nsls2(path: Path, data: bytes) -> Nsls2File:
    """nsls2.yaml's bytes (empty: no file) as an `Nsls2File`, or ManifestError naming the
    file and the dotted key."""
    try:
        doc = yaml.safe_load(data.decode("utf-8")) if data else {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ManifestError(path, None, f"invalid YAML: {exc}") from None
    if doc is not None and not isinstance(doc, dict):
        raise ManifestError(path, None, "expected a mapping at the top level")
    try:
        return convert_section(doc, Nsls2File, "", path, _NSLS2_MESSAGES)
    except ConfigError as exc:
        raise ManifestError(path, exc.field, exc.detail) from None


def _logo(path: Path, directory: Path, value: str | None) -> Path | None:
    """The logo file nsls2.yaml names (relative to the env's directory), checked."""
    if value is None:
        return None
    logo = (directory / value.strip()).resolve()
    if not logo.is_file():
        raise ManifestError(path, "logo", f"no such file: {logo}")
    logo_format(logo)
    return logo


def _nsls2_file(manifests_dir: str | Path, env: str) -> Nsls2File | None:
    """ENV's nsls2.yaml alone (pixi.toml need not exist any more), None without one."""
    path = Path(manifests_dir).absolute() / env / NSLS2_YAML
    if env_name_problem(env) or not path.exists():
        return None
    return read_nsls2(path, _read_bytes(path))


def env_retention(
    manifests_dir: str | Path, env: str, site: RetentionPolicy
) -> tuple[RetentionPolicy, bool]:
    """(policy, whether nsls2.yaml overrides it): the site policy with the `retention:`
    overrides of ENV's nsls2.yaml. Agent retention and `store prune` both ask here, so they
    apply one policy. Raises ManifestError naming file and field if nsls2.yaml is malformed.
    """
    found = _nsls2_file(manifests_dir, env)
    overrides = found.retention.given() if found else {}
    return msgspec.structs.replace(site, **overrides), bool(overrides)


def env_nightly(manifests_dir: str | Path, env: str) -> bool:
    """`nightly:` of ENV's nsls2.yaml (default true); ManifestError if it is malformed."""
    found = _nsls2_file(manifests_dir, env)
    return found.nightly if found else True


def logo_format(path: Path) -> str:
    """`svg` or `png` from the file's content; ManifestError naming the file otherwise."""
    data = _read_bytes(path)
    if len(data) > LOGO_MAX_BYTES:
        raise ManifestError(path, None, f"logo is {len(data)} bytes, at most {LOGO_MAX_BYTES}")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if b"<svg" in data[:4096]:
        return "svg"
    raise ManifestError(path, None, "logo must be an SVG or a PNG image")


def source_digest(toml_bytes: bytes, yaml_bytes: bytes) -> str:
    """sha256 naming the manifest sources (both files, framed so they cannot run together)."""
    digest = hashlib.sha256()
    for name, data in ((PIXI_TOML, toml_bytes), (NSLS2_YAML, yaml_bytes)):
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ManifestError(path, None, f"cannot read: {exc.strerror}") from None


def conda_spec(name: str, value: Any, path: Path, key: str) -> str:
    """A pixi dependency value (string or table) as a conda MatchSpec string."""
    if isinstance(value, str):
        version, build, channel = value, None, None
    elif isinstance(value, dict):
        unknown = sorted(set(value) - {"version", "build", "channel"})
        if unknown:
            raise ManifestError(path, f"{key}.{unknown[0]}", "unsupported for a conda dependency")
        version = value.get("version", "*")
        build, channel = value.get("build"), value.get("channel")
        for sub, item in (("version", version), ("build", build), ("channel", channel)):
            if item is not None and (not isinstance(item, str) or not item.strip()):
                raise ManifestError(path, f"{key}.{sub}", "expected a non-empty string")
    else:
        raise ManifestError(path, key, "expected a version string or a table {version, build}")
    version = "".join(version.split()) or "*"
    if _BARE_VERSION_RE.match(version):
        version = f"=={version}"
    spec = name if version == "*" and not build else f"{name} {version}"
    if build:
        spec += f" {build.strip()}"
    return f"{channel.strip()}::{spec}" if channel else spec


def pypi_requirement(name: str, value: Any, path: Path, key: str) -> str:
    """A pixi pypi-dependency value as a PEP 508 requirement string uv understands."""
    extras = ""
    if isinstance(value, str):
        text = name if value.strip() in ("", "*") else f"{name}{value.strip()}"
    elif isinstance(value, dict):
        unknown = sorted(
            set(value) - {"version", "extras", "url", "git", "rev", "tag", "branch", "path"}
        )
        if unknown:
            raise ManifestError(path, f"{key}.{unknown[0]}", "unsupported for a PyPI dependency")
        raw_extras = value.get("extras", [])
        if not isinstance(raw_extras, list) or not all(isinstance(e, str) for e in raw_extras):
            raise ManifestError(path, f"{key}.extras", "expected a list of strings")
        extras = f"[{','.join(raw_extras)}]" if raw_extras else ""
        text = _pypi_from_table(name + extras, value, path, key)
    else:
        raise ManifestError(path, key, "expected a version string or a table")
    try:
        Requirement(text)
    except InvalidRequirement as exc:
        raise ManifestError(path, key, f"invalid requirement {text!r}: {exc}") from None
    return text


def _pypi_from_table(head: str, value: dict[str, Any], path: Path, key: str) -> str:
    if "git" in value:
        ref = value.get("rev") or value.get("tag") or value.get("branch")
        return f"{head} @ git+{value['git']}" + (f"@{ref}" if ref else "")
    if "url" in value:
        return f"{head} @ {value['url']}"
    if "path" in value:
        local = Path(value["path"])
        local = local if local.is_absolute() else (path.parent / local).resolve()
        return f"{head} @ {local.as_uri()}"
    version = value.get("version", "*")
    if not isinstance(version, str):
        raise ManifestError(path, f"{key}.version", "expected a string")
    return head if version.strip() in ("", "*") else f"{head}{version.strip()}"


class _PixiReader:
    """Field-by-field reading of a pixi workspace file."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path = path
        try:
            self.doc = tomllib.loads(data.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(path, None, f"invalid TOML: {exc}") from None
        self.table_name = "workspace" if "workspace" in self.doc else "project"
        table = self.doc.get(self.table_name)
        if not isinstance(table, dict):
            raise ManifestError(path, "workspace", "missing [workspace] table")
        self.table = table

    def fail(self, key: str, message: str) -> ManifestError:
        return ManifestError(self.path, key, message)

    def channels(self) -> tuple[str, ...]:
        key = f"{self.table_name}.channels"
        raw = self.table.get("channels")
        if not isinstance(raw, list) or not raw:
            raise self.fail(key, "expected a non-empty list of channel names or URLs")
        channels = []
        for index, item in enumerate(raw):
            if isinstance(item, dict):  # pixi's {channel = "...", priority = n} form
                item = item.get("channel")
            if not isinstance(item, str) or not item.strip():
                raise self.fail(f"{key}[{index}]", "expected a channel name or URL")
            channels.append(item.strip())
        return tuple(channels)

    def platforms(self) -> tuple[str, ...]:
        key = f"{self.table_name}.platforms"
        raw = self.table.get("platforms")
        if not isinstance(raw, list) or not raw:
            raise self.fail(key, 'expected a non-empty list of platforms, e.g. ["linux-64"]')
        for index, item in enumerate(raw):
            if item not in KNOWN_PLATFORMS:
                known = ", ".join(sorted(KNOWN_PLATFORMS))
                raise self.fail(f"{key}[{index}]", f"unknown platform {item!r} (known: {known})")
        return tuple(raw)

    def _table(self, key: str, parent: dict[str, Any] | None = None) -> dict[str, Any]:
        raw = (self.doc if parent is None else parent).get(key.rsplit(".", 1)[-1], {})
        if not isinstance(raw, dict):
            raise self.fail(key, "expected a table")
        return raw

    def dependencies(self, key: str, parent: dict[str, Any] | None = None) -> dict[str, str]:
        deps = {}
        for name, value in self._table(key, parent).items():
            if not _CONDA_NAME_RE.match(name):
                raise self.fail(f"{key}.{name}", "conda package names are lowercase")
            deps[name] = conda_spec(name, value, self.path, f"{key}.{name}")
        return deps

    def pypi_dependencies(self, key: str, parent: dict[str, Any] | None = None) -> dict[str, str]:
        deps = {}
        for name, value in self._table(key, parent).items():
            if not _PYPI_NAME_RE.match(name):
                raise self.fail(f"{key}.{name}", "not a valid PyPI project name")
            deps[name] = pypi_requirement(name, value, self.path, f"{key}.{name}")
        return deps

    def platform_dependencies(self) -> tuple[dict[str, str], dict[str, str]]:
        """`[target.PLATFORM.*dependencies]`, merged over the common ones (linux-64 only here).

        Only the build platform's target table applies; we build for linux-64 (SDCC).
        """
        targets = self._table("target")
        conda: dict[str, str] = {}
        pypi: dict[str, str] = {}
        for platform, table in targets.items():
            if not isinstance(table, dict):
                raise self.fail(f"target.{platform}", "expected a table")
            if platform not in ("linux-64", "linux", "unix"):
                continue
            conda.update(self.dependencies(f"target.{platform}.dependencies", table))
            pypi.update(self.pypi_dependencies(f"target.{platform}.pypi-dependencies", table))
        return conda, pypi

    def system_requirements(self) -> dict[str, str]:
        out = {}
        for name, value in self._table("system-requirements").items():
            if isinstance(value, dict):  # libc = {family = "glibc", version = "2.28"}
                value = value.get("version")
            if isinstance(value, float) and not math.isfinite(value):
                raise self.fail(f"system-requirements.{name}", f"expected a version, got {value}")
            if isinstance(value, int | float):
                value = str(value)
            if not isinstance(value, str) or not value:
                raise self.fail(f"system-requirements.{name}", "expected a version string")
            out[str(name)] = value
        return out

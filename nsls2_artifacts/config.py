"""Site config: load and validate the YAML that tells every command where things live.

Resolution order: `--config PATH`, then `$NSLS2_ARTIFACTS_CONFIG`, then the embedded
`default-site.yaml` (paths relative to the current directory). Relative paths in a
config file are relative to that file. Errors name the file and the key.
"""

from __future__ import annotations

import math
import os
import re
import socket
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import yaml

from .errors import ConfigError
from .names import beamline_name_problem, node_name_problem
from .schema import record_error

CONFIG_ENV = "NSLS2_ARTIFACTS_CONFIG"


@dataclass(frozen=True)
class RetentionPolicy:
    lts_years: float = 3
    keep_latest: int = 3
    grace_days: float = 7


@dataclass(frozen=True)
class AgentSettings:
    poll_seconds: float = 30
    node: str = field(default_factory=socket.gethostname)
    node_ttl_seconds: float = 600
    prune: bool = True
    smoke_timeout_seconds: float = 300
    max_members: int = 500_000
    max_bytes: int = 64 * 1024**3
    # modules this node's users need beyond each build's smoke list (a GPU node's cupy):
    # every build `latest` points at is imported here once, and a failure is reported
    node_imports: tuple[str, ...] = ()


@dataclass(frozen=True)
class Beamline:
    name: str
    uri: str
    path: tuple[str, ...] = ()


@dataclass(frozen=True)
class HookSettings:
    listen: str = "127.0.0.1:8707"
    tokens_sha256: tuple[str, ...] = ()
    token_names: dict[str, str] = field(default_factory=dict)  # sha256 -> staff member's name
    webhook_secret_env: str = "NSLS2_HOOK_SECRET"
    nightly: str | None = "02:00"
    webhook_repos: dict[str, list[str]] = field(default_factory=dict)
    concurrency: int = 1
    build_timeout_seconds: float = 3600
    state_dir: Path | None = None
    max_failed_signins: int = 20  # wrong tokens per client address per window; 0: no limit
    failed_signin_window_seconds: float = 300
    keep_history_days: float = 365  # finished build requests and their logs; 0: forever
    # a hook running as root starts every build as this unprivileged user (hook/builduser.py)
    build_user: str | None = None
    # a YAML list of token entries, mode 0600: read by `hook serve` only, never by builds
    tokens_file: Path | None = None

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True)
class KernelSettings:
    """`kernels:` in the site config: what every NSLS-II kernel runs with."""

    memory_limit: int | None = None  # bytes of virtual memory per kernel process; None: none
    listed_lts: int = 2  # LTS kernels per env marked `listed` (newest first)


@dataclass(frozen=True)
class NumberRule:
    """The allowed values of one numeric config field: a finite int or float in a range."""

    kind: type  # int (a whole number) or float (any finite number)
    low: float
    high: float
    low_open: bool = False  # `low` itself is refused (a zero timeout or poll interval)

    def check(self, value: Any) -> int | float:
        """The value, as `kind`; ValueError with a message fit to follow file and key."""
        what = "int (a whole number)" if self.kind is int else "float (a number)"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected {what}, got {value!r}")
        if self.kind is int and not isinstance(value, int):
            raise ValueError(f"expected {what}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        too_low = value <= self.low if self.low_open else value < self.low
        if too_low or value > self.high:
            raise ValueError(f"expected {self.describe()}, got {value!r}")
        return float(value) if self.kind is float else value

    def describe(self) -> str:
        noun = "whole number" if self.kind is int else "number"
        if self.low == 0 and not self.low_open:
            return f"a non-negative {noun} up to {self.high:g}"
        bound = "more than" if self.low_open else "at least"
        return f"a {noun} {bound} {self.low:g} and up to {self.high:g}"


_DAY = 86400.0
# Every numeric field of the site config and of nsls2.yaml (`retention.*`, shared), by key.
# The upper bounds are far above any sensible value; they exist so that a typo or a
# crafted value (1e308, .inf) cannot turn into "never stale" or "never expires".
NUMBER_RULES: dict[str, NumberRule] = {
    "retention.lts_years": NumberRule(float, 0, 100),
    "retention.keep_latest": NumberRule(int, 0, 10_000),
    "retention.grace_days": NumberRule(float, 0, 3650),
    "agent.poll_seconds": NumberRule(float, 0, _DAY, low_open=True),
    "agent.node_ttl_seconds": NumberRule(float, 0, 365 * _DAY, low_open=True),
    "agent.smoke_timeout_seconds": NumberRule(float, 0, _DAY, low_open=True),
    "agent.max_members": NumberRule(int, 1, 10**9),
    "agent.max_bytes": NumberRule(int, 1, 2**60),
    "hook.concurrency": NumberRule(int, 1, 64),
    "hook.build_timeout_seconds": NumberRule(float, 0, 7 * _DAY, low_open=True),
    "hook.max_failed_signins": NumberRule(int, 0, 10**6),
    "hook.failed_signin_window_seconds": NumberRule(float, 0, _DAY, low_open=True),
    "hook.keep_history_days": NumberRule(float, 0, 36500),
    "kernels.listed_lts": NumberRule(int, 0, 1000),
    "store_options.relist_seconds": NumberRule(float, 0, _DAY, low_open=True),
    "store_options.timeout_seconds": NumberRule(float, 0, 3600, low_open=True),
    "store_options.attempts": NumberRule(int, 1, 20),
}
MAX_MEMORY_LIMIT = 2**60  # 1 EiB: more than any node has, less than RLIMIT_INFINITY
# below this a kernel with numpy and its thread pools cannot start (issue #17: at 200MB or
# 64MiB it died with "can't start new thread" and the user saw only "kernel died")
MIN_MEMORY_LIMIT = 512 * 1024**2


@dataclass(frozen=True)
class StoreOptions:
    """`store_options:` for an object store (`store: s3://BUCKET/PREFIX`). Credentials are
    never here: they come from the standard places (AWS_* environment variables, the
    shared credentials file, an instance role)."""

    endpoint_url: str | None = None  # e.g. https://s3.sdcc.bnl.gov (Ceph RadosGW); None: AWS
    region: str | None = None
    addressing_style: str = "auto"  # auto | path | virtual
    relist_seconds: float = 600  # agents list everything at least this often (index or not)
    timeout_seconds: float = 30  # per request: connect, and each read while streaming
    attempts: int = 4  # per request, with exponential backoff between them


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*$", re.IGNORECASE)
_SIZE_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}


def parse_size(value: Any) -> int | None:
    """`16GiB`, `512MiB`, `16G` (binary), `16GB` (decimal), a byte count, or null -> bytes.

    Raises ValueError with a message fit to follow the file and key it came from.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 16GiB or null, got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE_RE.match(value) if isinstance(value, str) else None
        if not match:
            raise ValueError(f"expected a size like 16GiB, 512MiB or null, got {value!r}")
        number, unit, suffix = match.groups()
        decimal = suffix.upper() == "B" and unit != ""  # GB = 10**9, GiB and G = 2**30
        base = 1000 if decimal else 1024
        scaled = float(number) * base ** _SIZE_POWERS[unit.upper()]
        if not math.isfinite(scaled) or scaled > MAX_MEMORY_LIMIT:
            raise ValueError(f"a memory limit above 1EiB is not a limit, got {value!r}")
        size = int(scaled)
    if size > MAX_MEMORY_LIMIT:
        raise ValueError(f"a memory limit above 1EiB is not a limit, got {value!r}")
    if size < MIN_MEMORY_LIMIT:
        raise ValueError(
            f"a memory limit below 512MiB cannot start a kernel (python, ipykernel, numpy and "
            f"their threads), got {value!r}: use at least 512MiB, or null for no ceiling"
        )
    return size


@dataclass(frozen=True)
class SiteConfig:
    source: Path | None  # the config file, None for the embedded default
    manifests: Path
    store: Path | str  # a directory, or an object-store URL (s3://BUCKET/PREFIX)
    deploy_root: Path
    channel_mirrors: dict[str, str] = field(default_factory=dict)
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    agent: AgentSettings = field(default_factory=AgentSettings)
    beamlines: dict[str, Beamline] = field(default_factory=dict)
    hook: HookSettings = field(default_factory=HookSettings)
    kernels: KernelSettings = field(default_factory=KernelSettings)
    store_options: StoreOptions = field(default_factory=StoreOptions)

    @property
    def local_dir(self) -> Path:
        """Where this host keeps its own files (hook state, solver cache) by default: next
        to a directory store, else `var/` next to the config file."""
        if isinstance(self.store, Path):
            return self.store.parent
        return (self.source.parent if self.source else Path.cwd()) / "var"

    @property
    def hook_state_dir(self) -> Path:
        return self.hook.state_dir or (self.local_dir / "hook")

    def mirror_for(self, channel: str) -> str:
        """The URL to fetch `channel` from, after `channel_mirrors` (by name or by URL)."""
        if channel in self.channel_mirrors:
            return self.channel_mirrors[channel]
        name = channel.rstrip("/").rsplit("/", 1)[-1]
        if channel.startswith(("http://", "https://")) and name in self.channel_mirrors:
            return self.channel_mirrors[name]
        return channel


_TOP_KEYS = {
    "manifests",
    "store",
    "store_options",
    "deploy_root",
    "channel_mirrors",
    "retention",
    "agent",
    "beamlines",
    "hook",
    "kernels",
}


def load_config(path: str | Path | None = None) -> SiteConfig:
    """Load the site config from `path`, `$NSLS2_ARTIFACTS_CONFIG`, or the embedded default."""
    if path is None and os.environ.get(CONFIG_ENV):
        path = os.environ[CONFIG_ENV]
    if path is None:
        text = resources.files("nsls2_artifacts").joinpath("default-site.yaml").read_text()
        return parse_config(text, source=None, base=Path.cwd())
    path = Path(path).absolute()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read site config: {exc.strerror}") from None
    return parse_config(text, source=path, base=path.parent)


def parse_config(text: str, *, source: Path | None, base: Path) -> SiteConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, None, f"invalid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, None, "expected a mapping at the top level")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            source, unknown[0], f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})"
        )
    reader = _Reader(source, base)
    return SiteConfig(
        source=source,
        manifests=reader.path(data, "manifests", "./manifests"),
        store=reader.store(data),
        store_options=reader.store_options(data),
        deploy_root=reader.path(data, "deploy_root", "./var/deploy"),
        channel_mirrors=reader.mirrors(data.get("channel_mirrors") or {}),
        retention=reader.section(data, "retention", RetentionPolicy),
        agent=reader.agent(data),
        beamlines=reader.beamlines(data.get("beamlines") or {}),
        hook=reader.hook(data.get("hook") or {}),
        kernels=reader.kernels(data.get("kernels") or {}),
    )


class _Reader:
    """Field-by-field validation that names the file and the dotted key on error."""

    def __init__(self, source: Path | None, base: Path) -> None:
        self.source = source
        self.base = base

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.source, key, message)

    def number(self, key: str, value: Any) -> Any:
        """A numeric field checked against `NUMBER_RULES[key]` (finite, in range)."""
        try:
            return NUMBER_RULES[key].check(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def path(self, data: dict[str, Any], key: str, default: str) -> Path:
        value = data.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(key, "expected a path")
        return (self.base / Path(value).expanduser()).resolve()

    def store(self, data: dict[str, Any]) -> Path | str:
        value = data.get("store", "./var/store")
        if isinstance(value, str) and "://" in value:
            scheme, _, rest = value.partition("://")
            if scheme != "s3":
                raise self.fail(
                    "store", f"expected a directory or s3://BUCKET/PREFIX, got {value!r}"
                )
            if not rest.split("/", 1)[0]:
                raise self.fail("store", f"no bucket in {value!r} (expected s3://BUCKET/PREFIX)")
            return value.rstrip("/")
        return self.path(data, "store", "./var/store")

    def store_options(self, data: dict[str, Any]) -> StoreOptions:
        raw = data.get("store_options") or {}
        if not isinstance(raw, dict):
            raise self.fail("store_options", "expected a mapping")
        for key in raw:
            if key not in StoreOptions.__dataclass_fields__:
                known = ", ".join(StoreOptions.__dataclass_fields__)
                if key in (
                    "aws_access_key_id",
                    "aws_secret_access_key",
                    "access_key",
                    "secret_key",
                ):
                    raise self.fail(
                        f"store_options.{key}",
                        "credentials do not belong in the site config: use AWS_ACCESS_KEY_ID/"
                        "AWS_SECRET_ACCESS_KEY, a shared credentials file or an instance role",
                    )
                raise self.fail(f"store_options.{key}", f"unknown key (known: {known})")
        for key in ("endpoint_url", "region"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise self.fail(f"store_options.{key}", f"expected a string, got {raw[key]!r}")
        style = raw.get("addressing_style", "auto")
        if style not in ("auto", "path", "virtual"):
            raise self.fail(
                "store_options.addressing_style", f"expected auto, path or virtual, got {style!r}"
            )
        numbers: dict[str, Any] = {}
        for key in ("relist_seconds", "timeout_seconds", "attempts"):
            try:
                numbers[key] = NUMBER_RULES[f"store_options.{key}"].check(
                    raw.get(key, getattr(StoreOptions, key))
                )
            except ValueError as exc:
                raise self.fail(f"store_options.{key}", str(exc)) from None
        return StoreOptions(raw.get("endpoint_url"), raw.get("region"), style, **numbers)

    def mirrors(self, data: Any) -> dict[str, str]:
        if not isinstance(data, dict):
            raise self.fail("channel_mirrors", "expected a mapping of channel -> mirror URL")
        out = {}
        for name, url in data.items():
            if not isinstance(url, str) or not url:
                raise self.fail(f"channel_mirrors.{name}", "expected a URL or path")
            if "://" not in url:
                url = (self.base / url).resolve().as_uri()
            out[str(name)] = url
        return out

    def section(self, data: dict[str, Any], key: str, kind: type) -> Any:
        raw = data.get(key) or {}
        if not isinstance(raw, dict):
            raise self.fail(key, "expected a mapping")
        defaults = kind()
        values = {}
        types = typing.get_type_hints(kind)  # the declared types, not their spelling
        for name, value in raw.items():
            if not hasattr(defaults, name):
                raise self.fail(f"{key}.{name}", "unknown key")
            if f"{key}.{name}" in NUMBER_RULES:
                values[name] = self.number(f"{key}.{name}", value)
                continue
            try:  # msgspec checks the type (a list for a tuple, every element's type)
                values[name] = msgspec.convert(value, types[name])
            except msgspec.ValidationError as exc:
                problem = record_error(str(exc), key, {}).detail
                raise self.fail(f"{key}.{name}", f"{problem} (got {value!r})") from None
        return kind(**values)

    def agent(self, data: dict[str, Any]) -> AgentSettings:
        settings = self.section(data, "agent", AgentSettings)
        # checked here, once, so a bad name stops the agent at start and not mid-pass
        if problem := node_name_problem(settings.node):
            raise self.fail("agent.node", problem)
        return settings

    def beamlines(self, data: Any) -> dict[str, Beamline]:
        if not isinstance(data, dict):
            raise self.fail("beamlines", "expected a mapping of beamline -> {uri, path}")
        out = {}
        for name, entry in data.items():
            # the name is a file name in the deploy root (etc/tiled/profiles/NAME.yml)
            if problem := beamline_name_problem(name):
                raise self.fail(f"beamlines.{name}", problem)
            if not isinstance(entry, dict) or not isinstance(entry.get("uri"), str):
                raise self.fail(f"beamlines.{name}.uri", "expected a URI string")
            path = entry.get("path") or []
            if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
                raise self.fail(f"beamlines.{name}.path", "expected a list of strings")
            out[str(name)] = Beamline(name=str(name), uri=entry["uri"], path=tuple(path))
        return out

    def kernels(self, data: Any) -> KernelSettings:
        if not isinstance(data, dict):
            raise self.fail("kernels", "expected a mapping {memory_limit, listed_lts}")
        for key in data:
            if key not in KernelSettings.__dataclass_fields__:
                raise self.fail(f"kernels.{key}", "unknown key (known: listed_lts, memory_limit)")
        try:
            memory_limit = parse_size(data.get("memory_limit"))
        except ValueError as exc:
            raise self.fail("kernels.memory_limit", str(exc)) from None
        listed = data.get("listed_lts", KernelSettings.listed_lts)
        listed = self.number("kernels.listed_lts", listed)
        return KernelSettings(memory_limit=memory_limit, listed_lts=listed)

    def tokens(
        self, entries: Any, key: str = "hook.tokens_sha256"
    ) -> tuple[tuple[str, ...], dict[str, str]]:
        """`hook.tokens_sha256` (or a tokens file, `key` ""): plain sha256 hex digests, or
        {name, sha256} mappings (`hook token --name NAME`) so the history says who asked."""
        if not isinstance(entries, list):
            raise self.fail(key or "(top level)", "expected a list of sha256 hex digests")
        hashes, names = [], {}
        for i, entry in enumerate(entries):
            name = None
            if isinstance(entry, dict):
                name, entry = entry.get("name"), entry.get("sha256")
                if not isinstance(name, str) or not name.strip():
                    raise self.fail(f"{key}[{i}].name", "expected a name")
            if not isinstance(entry, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", entry):
                where = f"{key}[{i}]" + (".sha256" if name else "")
                raise self.fail(where, f"expected a sha256 hex digest, got {entry!r}")
            hashes.append(entry.lower())
            if name:
                names[entry.lower()] = name.strip()
        return tuple(hashes), names

    def hook(self, data: Any) -> HookSettings:
        if not isinstance(data, dict):
            raise self.fail("hook", "expected a mapping")
        d = HookSettings()  # the defaults, written once (in the dataclass)
        known = set(HookSettings.__dataclass_fields__) - {"token_names"}
        for key in data:
            if key not in known:
                raise self.fail(f"hook.{key}", "unknown key")
        listen = data.get("listen", d.listen)
        port = listen.rsplit(":", 1)[1] if isinstance(listen, str) and ":" in listen else ""
        if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise self.fail("hook.listen", f"expected HOST:PORT, got {listen!r}")
        tokens, names = self.tokens(data.get("tokens_sha256") or [])
        repos = data.get("webhook_repos") or {}
        if not isinstance(repos, dict) or not all(isinstance(v, list) for v in repos.values()):
            raise self.fail("hook.webhook_repos", "expected a mapping of owner/repo -> [env, ...]")
        nightly = data.get("nightly", d.nightly)
        if nightly is not None and not isinstance(nightly, str):
            raise self.fail("hook.nightly", "expected a time of day (HH:MM) or a cron expression")
        state_dir = data.get("state_dir")
        build_user = data.get("build_user")
        if build_user is not None and (not isinstance(build_user, str | int) or build_user == ""):
            raise self.fail("hook.build_user", f"expected a user name, got {build_user!r}")
        tokens_file = data.get("tokens_file")
        if tokens_file is not None and (not isinstance(tokens_file, str) or not tokens_file):
            raise self.fail("hook.tokens_file", f"expected a path, got {tokens_file!r}")
        return HookSettings(
            listen=listen,
            tokens_sha256=tokens,
            token_names=names,
            webhook_secret_env=str(data.get("webhook_secret_env", d.webhook_secret_env)),
            nightly=nightly,
            webhook_repos={str(k): [str(e) for e in v] for k, v in repos.items()},
            concurrency=self.number("hook.concurrency", data.get("concurrency", d.concurrency)),
            build_timeout_seconds=self.number(
                "hook.build_timeout_seconds",
                data.get("build_timeout_seconds", d.build_timeout_seconds),
            ),
            state_dir=(self.base / state_dir).resolve() if state_dir else None,
            max_failed_signins=self.number(
                "hook.max_failed_signins", data.get("max_failed_signins", d.max_failed_signins)
            ),
            failed_signin_window_seconds=self.number(
                "hook.failed_signin_window_seconds",
                data.get("failed_signin_window_seconds", d.failed_signin_window_seconds),
            ),
            keep_history_days=self.number(
                "hook.keep_history_days", data.get("keep_history_days", d.keep_history_days)
            ),
            build_user=str(build_user) if build_user is not None else None,
            tokens_file=(self.base / tokens_file).resolve() if tokens_file else None,
        )


def read_tokens_file(path: Path) -> tuple[tuple[str, ...], dict[str, str]]:
    """The token entries of `hook.tokens_file` (the same entries as hook.tokens_sha256).

    Only `hook serve` calls this: builds read the site config but not this file."""
    try:
        text = path.read_text()
    except OSError as exc:
        problem = f"cannot read the hook's tokens file: {exc.strerror}"
        raise ConfigError(path, None, problem) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, f"invalid YAML: {exc}") from None
    return _Reader(path, path.parent).tokens(data or [], key="")

"""Site config: load and validate the YAML that tells every command where things live.

Resolution order: `--config PATH`, then `$NSLS2_ARTIFACTS_CONFIG`, then the embedded
`default-site.yaml` (paths relative to the current directory). Relative paths in a
config file are relative to that file. Every section is a msgspec Struct (`SiteFile`):
types, ranges (`Meta(ge=..., le=...)`), literals and unknown keys are checked in one
decode, and errors name the file and the dotted key (`hook.tokens_sha256[0].sha256`).
"""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import msgspec.inspect
import yaml
from msgspec import Meta

from .errors import ConfigError
from .names import beamline_name_problem, env_name_problem, node_name_problem
from .schedule import parse_schedule
from .schema import (
    FIELD,
    KEY_TOKEN,
    MISSING,
    UNKNOWN,
    Key,
    fails,
    field_problem,
    literal_message,
    name_keys,
    plain,
    split_error,
    type_at,
    value_at,
)

T = TypeVar("T")

CONFIG_ENV = "NSLS2_ARTIFACTS_CONFIG"


# Ranges of the numeric fields. The upper bounds are far above any sensible value; they
# exist so that a typo or a crafted value (1e308, .inf) cannot turn into "never stale" or
# "never expires". NaN fails every bound, so no field accepts it.
_DAY = 86400.0
Years = Annotated[float, Meta(ge=0, le=100)]
KeepCount = Annotated[int, Meta(ge=0, le=10_000)]
GraceDays = Annotated[float, Meta(ge=0, le=3650)]


# positive durations (a zero poll interval or timeout is refused), by their upper bound
HourSeconds = Annotated[float, Meta(gt=0, le=3600)]
DaySeconds = Annotated[float, Meta(gt=0, le=_DAY)]
WeekSeconds = Annotated[float, Meta(gt=0, le=7 * _DAY)]
YearSeconds = Annotated[float, Meta(gt=0, le=365 * _DAY)]


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One section of the site config: typed, ranged, and refusing keys it does not know (a
    typo must not pass silently; the site config is read only by the version that ships it)."""


class RetentionPolicy(Section):
    lts_years: Years = 3.0
    keep_latest: KeepCount = 3
    grace_days: GraceDays = 7.0


class RetentionOverrides(Section):
    """`retention:` in an environment's nsls2.yaml: any of the site policy's fields, same ranges."""

    lts_years: Years | msgspec.UnsetType = msgspec.UNSET
    keep_latest: KeepCount | msgspec.UnsetType = msgspec.UNSET
    grace_days: GraceDays | msgspec.UnsetType = msgspec.UNSET

    def given(self) -> dict[str, float]:
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not msgspec.UNSET}


class AgentSettings(Section):
    poll_seconds: DaySeconds = 30.0
    node: str = msgspec.field(default_factory=socket.gethostname)
    node_ttl_seconds: YearSeconds = 600.0
    prune: bool = True
    smoke_timeout_seconds: DaySeconds = 300.0
    max_members: Annotated[int, Meta(ge=1, le=10**9)] = 500_000
    max_bytes: Annotated[int, Meta(ge=1, le=2**60)] = 64 * 1024**3
    # modules this node's users need beyond each build's smoke list (a GPU node's cupy):
    # every build `latest` points at is imported here once, and a failure is reported
    node_imports: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # checked here, once, so a bad name stops the agent at start and not mid-pass
        if problem := node_name_problem(self.node):
            raise field_problem("node", problem)


class Beamline(Section):
    name: str
    uri: str
    path: tuple[str, ...] = ()
    env: str | None = None  # the env its launcher card starts when none is named after it


class BeamlineEntry(Section):
    """`beamlines.NAME` as written: the name is the key."""

    uri: str
    path: tuple[str, ...] = ()
    env: str | None = None


class Mirror(Section):
    """A `channel_mirrors` value: a URL, or a path relative to the config file."""

    url: Annotated[str, Meta(min_length=1)]


Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{64}\Z")]


class StaffToken(Section):
    """A `hook.tokens_sha256` entry with the staff member's name (`hook token --name`), so
    the history says who asked for a build."""

    name: Annotated[str, Meta(pattern=r"\S")]
    sha256: Sha256Hex


DEFAULT_LISTEN = "127.0.0.1:8707"  # the hook's, and `hook demo`'s


class HookSettings(Section):
    listen: str = DEFAULT_LISTEN
    # plain sha256 hex digests, or {name, sha256} entries
    tokens: tuple[Sha256Hex | StaffToken, ...] = msgspec.field(default=(), name="tokens_sha256")
    webhook_secret_env: str = "NSLS2_HOOK_SECRET"
    nightly: str | None = "02:00"  # a time of day (HH:MM) or a cron expression; null: none
    webhook_repos: dict[str, tuple[str, ...]] = {}  # owner/repo -> [env, ...]
    concurrency: Annotated[int, Meta(ge=1, le=64)] = 1
    build_timeout_seconds: WeekSeconds = 3600.0
    state_dir: Path | None = None  # relative to the config file
    # wrong tokens per client address per window; 0: no limit
    max_failed_signins: Annotated[int, Meta(ge=0, le=10**6)] = 20
    failed_signin_window_seconds: DaySeconds = 300.0
    # finished build requests and their logs; 0: forever
    keep_history_days: Annotated[float, Meta(ge=0, le=36500)] = 365.0
    # a hook running as root starts every build as this unprivileged user (hook/builduser.py)
    build_user: Annotated[str, Meta(min_length=1)] | int | None = None
    # a YAML list of token entries, mode 0600: read by `hook serve` only, never by builds
    tokens_file: Path | None = None  # relative to the config file

    def __post_init__(self) -> None:
        listen = self.listen
        port = listen.rsplit(":", 1)[1] if ":" in listen else ""
        if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise field_problem("listen", f"expected HOST:PORT, got {listen!r}")
        if self.nightly:  # checked here, once: every command loads it, not only the hook
            try:
                parse_schedule(self.nightly).next_after(datetime.now())
            except ValueError as exc:
                raise field_problem("nightly", str(exc)) from None

    @property
    def tokens_sha256(self) -> tuple[str, ...]:
        return tuple((t.sha256 if isinstance(t, StaffToken) else t).lower() for t in self.tokens)

    @property
    def token_names(self) -> dict[str, str]:
        """sha256 -> the staff member's name, for the tokens that have one."""
        return {t.sha256.lower(): t.name.strip() for t in self.tokens if isinstance(t, StaffToken)}

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class MemoryLimit(int):
    """Bytes, written in the YAML as `16GiB`, `512MiB`, a byte count: the type only marks the
    field for `parse_size`; `parse_config` hands out a plain int (JSON writers take it)."""


class KernelSettings(Section):
    """`kernels:` in the site config: what every NSLS-II kernel runs with."""

    memory_limit: MemoryLimit | None = None  # bytes of virtual memory per kernel; None: none
    listed_lts: Annotated[int, Meta(ge=0, le=1000)] = 2  # LTS kernels marked `listed`


MAX_MEMORY_LIMIT = 2**60  # 1 EiB: more than any node has, less than RLIMIT_INFINITY
# below this a kernel with numpy and its thread pools cannot start (issue #17: at 200MB or
# 64MiB it died with "can't start new thread" and the user saw only "kernel died")
MIN_MEMORY_LIMIT = 512 * 1024**2
_CREDENTIAL_KEYS = ("aws_access_key_id", "aws_secret_access_key", "access_key", "secret_key")


class StoreOptions(Section):
    """`store_options:` for an object store (`store: s3://BUCKET/PREFIX`). Credentials are
    never here: they come from the standard places (AWS_* environment variables, the
    shared credentials file, an instance role)."""

    endpoint_url: str | None = None  # e.g. https://s3.sdcc.bnl.gov (Ceph RadosGW); None: AWS
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # agents list everything at least this often (index or not)
    relist_seconds: DaySeconds = 600.0
    # per request: connect, and each read while streaming
    timeout_seconds: HourSeconds = 30.0
    attempts: Annotated[int, Meta(ge=1, le=20)] = 4  # per request, with backoff


class SiteFile(Section):
    """The site config file as written (paths not yet resolved); `SiteConfig` is the result."""

    manifests: Annotated[str, Meta(min_length=1)] = "./manifests"
    store: Annotated[str, Meta(min_length=1)] = "./var/store"
    store_options: StoreOptions = msgspec.field(default_factory=StoreOptions)
    deploy_root: Annotated[str, Meta(min_length=1)] = "./var/deploy"
    channel_mirrors: dict[str, Any] = {}  # channel -> MirrorURL, decoded one by one to name it
    retention: RetentionPolicy = msgspec.field(default_factory=RetentionPolicy)
    agent: AgentSettings = msgspec.field(default_factory=AgentSettings)
    beamlines: dict[str, Any] = {}  # NAME -> BeamlineEntry, decoded one by one to name NAME
    hook: HookSettings = msgspec.field(default_factory=HookSettings)
    kernels: KernelSettings = msgspec.field(default_factory=KernelSettings)


# clearer words than a type name for the fields whose type says little
_MESSAGES = {
    "manifests": "expected a path",
    "deploy_root": "expected a path",
    "store": "expected a path (a directory) or s3://BUCKET/PREFIX",
    "channel_mirrors": "expected a mapping of channel -> mirror URL or path",
    "beamlines": "expected a mapping of beamline -> {uri, path, env}",
    "uri": "expected a URI string",
    "name": "expected a name",
    "state_dir": "expected a path",
    "tokens_file": "expected a path",
    "build_user": "expected a user name",
    "url": "expected a URL or path",
    "tokens_sha256": "expected a list of sha256 hex digests or {name, sha256} entries",
    "tokens": "expected a list of sha256 hex digests or {name, sha256} entries",
    "tokens_sha256[]": "expected a sha256 hex digest (or {name, sha256})",
    "tokens[]": "expected a sha256 hex digest (or {name, sha256})",
    "sha256": "expected a sha256 hex digest",
    "nightly": "expected a time of day (HH:MM), a cron expression or null",
    "webhook_repos": "expected a mapping of owner/repo -> [env, ...]",
    "webhook_repos.*": "expected a list of env names",
    "webhook_repos.*[]": "expected an env name",
    "addressing_style": "expected auto, path or virtual",
}


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


@dataclass(frozen=True, kw_only=True)
class SiteConfig:
    """The site config resolved against its file: paths absolute, mirrors as URLs, beamlines
    named. A view of `SiteFile` made only by `parse_config`, so it has no defaults of its own
    (each default is written once, in the Structs above); the sections are those Structs."""

    source: Path | None  # the config file, None for the embedded default
    manifests: Path
    store: Path | str  # a directory, or an object-store URL (s3://BUCKET/PREFIX)
    deploy_root: Path
    channel_mirrors: dict[str, str]  # channel -> URL
    retention: RetentionPolicy
    agent: AgentSettings
    beamlines: dict[str, Beamline]
    hook: HookSettings
    kernels: KernelSettings
    store_options: StoreOptions

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
    site = convert_section(data, SiteFile, "", source)
    resolve = _Resolver(source, base)
    return SiteConfig(
        source=source,
        manifests=resolve.path(site.manifests),
        store=resolve.store(site.store),
        store_options=site.store_options,
        deploy_root=resolve.path(site.deploy_root),
        channel_mirrors={
            name: resolve.mirror(name, url) for name, url in site.channel_mirrors.items()
        },
        retention=site.retention,
        agent=site.agent,
        beamlines={name: resolve.beamline(name, entry) for name, entry in site.beamlines.items()},
        hook=resolve.hook(site.hook),
        kernels=msgspec.structs.replace(site.kernels, memory_limit=_plain_int(site.kernels)),
    )


def _plain_int(kernels: KernelSettings) -> int | None:
    limit = kernels.memory_limit
    return None if limit is None else int(limit)


class _Resolver:
    """What the schema cannot say: paths relative to the config file, the store URL, and
    beamline names (file names in the deploy root)."""

    def __init__(self, source: Path | None, base: Path) -> None:
        self.source = source
        self.base = base

    def path(self, value: str | Path) -> Path:
        return (self.base / Path(value).expanduser()).resolve()

    def store(self, value: str) -> Path | str:
        if "://" not in value:
            return self.path(value)
        scheme, _, rest = value.partition("://")
        if scheme != "s3":
            message = f"expected a directory or s3://BUCKET/PREFIX, got {value!r}"
            raise ConfigError(self.source, "store", message)
        if not rest.split("/", 1)[0]:
            message = f"no bucket in {value!r} (expected s3://BUCKET/PREFIX)"
            raise ConfigError(self.source, "store", message)
        return value.rstrip("/")

    def hook(self, hook: HookSettings) -> HookSettings:
        for repo, envs in hook.webhook_repos.items():
            for i, env in enumerate(envs):
                if problem := env_name_problem(env):
                    raise ConfigError(self.source, f"hook.webhook_repos.{repo}[{i}]", problem)
        user = hook.build_user
        return msgspec.structs.replace(
            hook,
            state_dir=self.path(hook.state_dir) if hook.state_dir else None,
            tokens_file=self.path(hook.tokens_file) if hook.tokens_file else None,
            build_user=str(user) if user is not None else None,  # a uid works as a name
        )

    def mirror(self, name: str, value: Any) -> str:
        key = f"channel_mirrors.{name}"
        url = convert_section({"url": value}, Mirror, key, self.source).url
        return url if "://" in url else self.path(url).as_uri()

    def beamline(self, name: str, entry: Any) -> Beamline:
        # the name is a file name in the deploy root (etc/tiled/profiles/NAME.yml)
        if problem := beamline_name_problem(name):
            raise ConfigError(self.source, f"beamlines.{name}", problem)
        given = convert_section(entry, BeamlineEntry, f"beamlines.{name}", self.source)
        if given.env is not None and (problem := env_name_problem(given.env)):
            raise ConfigError(self.source, f"beamlines.{name}.env", problem)
        return Beamline(name=name, uri=given.uri, path=given.path, env=given.env)


def convert_section(
    value: Any,
    kind: type[T],
    key: str,
    source: Path | str | None,
    messages: dict[str, str] | None = None,
) -> T:
    """`value` (parsed YAML) as a `kind`, or ConfigError naming `source` and the dotted
    key of the field that is wrong (`key` is where `value` sits in its file). A null
    where the schema has no null means "the default", as an empty YAML key does.
    `messages` (field name, `NAME[]` for an element) replace the site config's wording
    for another file's fields (nsls2.yaml)."""
    if value is None:
        value = {}
    value = _drop_nulls(value, kind)
    try:
        return msgspec.convert(value, kind, dec_hook=_decode_custom)
    except msgspec.ValidationError as exc:
        field, message = _explain(str(exc), value, kind, {**_MESSAGES, **(messages or {})})
        if kind is Mirror:  # the value itself, not a field of it
            field = ""
        field = field.replace("[...]", "")  # a mapping's key `_explain` could not find
        where = ".".join(part for part in (key, field) if part).replace(".[", "[")
        raise ConfigError(source, where or None, message) from None


def _decode_custom(kind: type, value: Any) -> Any:
    if kind is MemoryLimit:
        size = parse_size(value)
        return None if size is None else MemoryLimit(size)
    if kind is Path and isinstance(value, str) and value:
        return Path(value)
    raise TypeError(f"expected {'a path' if kind is Path else kind.__name__}")


def _drop_nulls(value: Any, kind: Any) -> Any:
    """A mapping for a Struct without its null values for fields that take no null (YAML's
    `hook:` with nothing under it), recursively through the Structs it contains."""
    info = msgspec.inspect.type_info(kind)
    if not isinstance(value, dict) or not isinstance(info, msgspec.inspect.StructType):
        return value
    fields = {f.encode_name: f for f in info.fields}
    out = {}
    for name, item in value.items():
        field = fields.get(name) if isinstance(name, str) else None
        if item is None and field is not None and not _takes_null(field.type):
            continue
        if field is not None and isinstance(field.type, msgspec.inspect.StructType):
            item = _drop_nulls(item, field.type.cls)
        out[name] = item
    return out


def _takes_null(info: msgspec.inspect.Type) -> bool:
    if isinstance(info, msgspec.inspect.NoneType):
        return True
    if isinstance(info, msgspec.inspect.UnionType):
        return any(isinstance(t, msgspec.inspect.NoneType) for t in info.types)
    return False


def _explain(text: str, data: Any, kind: type, words: dict[str, str]) -> tuple[str, str]:
    """msgspec's message and path as (dotted field, message in the words of this file)."""
    message, tokens = split_error(text)
    tokens = name_keys(data, tokens, lambda trial: fails(trial, kind, _decode_custom))
    if tokens[-1:] == [KEY_TOKEN]:  # a mapping's key, not its value
        mapping = value_at(data, tokens[:-1])
        keys = [k for k in mapping if not isinstance(k, str)] if isinstance(mapping, dict) else []
        dotted = ".".join(tokens[:-1])
        return dotted, f"expected names (strings) as keys, got {keys[0] if keys else '?'!r}"
    info = type_at(kind, tokens)
    dotted = ".".join(tokens).replace(".[", "[")
    join = lambda name: f"{dotted}.{name}" if dotted else name  # noqa: E731
    if found := UNKNOWN.match(message):
        name = found["name"]
        if name in _CREDENTIAL_KEYS:
            return join(name), (
                "credentials do not belong in the site config: use AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, a shared credentials file or an instance role"
            )
        if isinstance(info, msgspec.inspect.UnionType):  # a token: plain digest or {name, sha256}
            info = next((t for t in info.types if isinstance(t, msgspec.inspect.StructType)), info)
        known = sorted(f.encode_name for f in getattr(info, "fields", ()))
        return join(name), f"unknown key (known: {', '.join(known)})"
    if found := MISSING.match(message):
        return join(found["name"]), words.get(found["name"], "missing")
    if found := FIELD.match(message):  # a __post_init__ check (field_problem)
        return join(found["name"]), found["detail"]
    value = value_at(data, tokens)
    message = literal_message(message, info)
    if isinstance(info, msgspec.inspect.UnionType):  # `int | None`: the number's rules
        numbers = [t for t in info.types if isinstance(t, _NUMBER_TYPES)]
        rest = [
            t for t in info.types if not isinstance(t, (*_NUMBER_TYPES, msgspec.inspect.NoneType))
        ]
        info = numbers[0] if len(numbers) == 1 and not rest else info
    if isinstance(info, _NUMBER_TYPES):
        return dotted, number_problem(info, value)
    last = _name_of(tokens)
    if isinstance(info, msgspec.inspect.StructType) and message.startswith("Expected `object`"):
        return dotted, f"expected a mapping, got {value!r}"
    known_value = "[...]" not in tokens  # msgspec does not say which key of a mapping
    if tokens and tokens[-1].startswith("[") and f"{last}[]" in words:  # one element
        last = f"{last}[]"
    if last in words:
        return dotted, words[last] + (f", got {value!r}" if known_value else "")
    detail = plain(message)
    if known_value and repr(value) not in detail:
        detail += f" (got {value!r})"
    return dotted, detail


_NUMBER_TYPES = (msgspec.inspect.IntType, msgspec.inspect.FloatType)


def number_problem(info: msgspec.inspect.IntType | msgspec.inspect.FloatType, value: Any) -> str:
    """Why `value` is not allowed by a ranged int or float field, in words."""
    whole = isinstance(info, msgspec.inspect.IntType)
    what = "int (a whole number)" if whole else "float (a number)"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected {what}, got {value!r}"
    if whole and not isinstance(value, int):
        return f"expected {what}, got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number, got {value!r}"
    return f"expected {describe_range(info)}, got {value!r}"


def describe_range(info: msgspec.inspect.IntType | msgspec.inspect.FloatType) -> str:
    noun = "whole number" if isinstance(info, msgspec.inspect.IntType) else "number"
    high = f" up to {info.le:g}" if info.le is not None else ""
    if info.ge == 0:
        return f"a non-negative {noun}{high}"
    if info.gt is not None:
        return f"a {noun} more than {info.gt:g} and{high}"
    return f"a {noun} at least {info.ge:g} and{high}"


def _name_of(tokens: list[str]) -> str:
    """The last field name in `tokens`, for `_MESSAGES`: a mapping's value (a `Key`) is
    `MAPPING.*` (`webhook_repos.*`), whichever its key."""
    for i in range(len(tokens) - 1, -1, -1):
        if isinstance(tokens[i], Key):
            return f"{_name_of(tokens[:i])}.*"
        if not tokens[i].startswith("["):
            return tokens[i]
    return ""


class _TokensFile(Section):
    tokens: tuple[Sha256Hex | StaffToken, ...] = ()


def read_tokens_file(path: Path) -> tuple[tuple[str, ...], dict[str, str]]:
    """The token entries of `hook.tokens_file` (the same entries as hook.tokens_sha256):
    (hashes, sha256 -> name). Only `hook serve` calls this: builds read the site config but
    not this file."""
    try:
        text = path.read_text()
    except OSError as exc:
        problem = f"cannot read the hook's tokens file: {exc.strerror}"
        raise ConfigError(path, None, problem) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, f"invalid YAML: {exc}") from None
    try:
        entries = convert_section({"tokens": data or []}, _TokensFile, "", path).tokens
    except ConfigError as exc:  # the file is the list itself: name the entry, not "tokens"
        field = (exc.field or "").removeprefix("tokens") or "(top level)"
        raise ConfigError(path, field, exc.detail) from None
    settings = HookSettings(tokens=entries)
    return settings.tokens_sha256, settings.token_names

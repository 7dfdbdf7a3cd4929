"""Plain records that cross module boundaries: no I/O here, only data and (de)serialisation.

The build side writes `BuildManifest` into the store; the agent reads it back, writes
`ReadyRecord` into the deploy root and its shared state (`NodeHeartbeat`, `Quarantine`,
`Hold`, `Tombstone`, `DeletedMarker`, `PassRecord`) under `DEPLOY_ROOT/state`; prune
returns `RetentionDecision`s. Every `from_dict` names the field that is wrong. Every stage
imports this module; it imports none of them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import RecordError

MANIFEST_SCHEMA = 1

_BUILD_ID_RE = re.compile(r"^(\d{4}\.\d{2}\.\d{2}T\d{6}Z)-([0-9a-f]{8})$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    """ISO 8601 in UTC with a trailing Z, the one time format we write anywhere."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def make_build_id(created: datetime, lock_sha256: str) -> str:
    """`2026.11.25T020000Z-1a2b3c4d`: sorts by time, names its content (the lock hash)."""
    return f"{created.astimezone(UTC):%Y.%m.%dT%H%M%SZ}-{lock_sha256[:8]}"


def is_build_id(text: str) -> bool:
    return bool(_BUILD_ID_RE.match(text))


def build_id_lock_prefix(build_id: str) -> str:
    match = _BUILD_ID_RE.match(build_id)
    if not match:
        raise ValueError(f"not a build id: {build_id!r}")
    return match.group(2)


def _require(data: dict[str, Any], record: str, name: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(data, dict):
        raise RecordError(record, name, "record is not a JSON object")
    if name not in data:
        raise RecordError(record, name, "missing")
    value = data[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise RecordError(record, name, f"expected {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _optional(
    data: dict[str, Any], record: str, name: str, kind: type | tuple[type, ...], default: Any
) -> Any:
    return _require(data, record, name, kind) if name in data else default


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _kinds(kind))


def _plain_file_name(data: dict[str, Any], record: str, name: str) -> str:
    """A file name of the build directory (`artifact.file`, `lock.file`): a plain name,
    so joining it to the build directory can only name a file there (no `/`, `.`, `..`,
    NUL, nothing longer than a name can be, not the manifest itself)."""
    value = _require(data, record, name, str)
    if (
        value in ("", ".", "..", "manifest.json")
        or "/" in value
        or "\0" in value
        or len(value.encode("utf-8", "surrogateescape")) > 255
    ):
        raise RecordError(record, name, f"{value!r} is not a plain file name of the build")
    return value


@dataclass(frozen=True)
class PackageRef:
    """One installed package, as the lock and the manifest name it."""

    name: str
    version: str
    build: str
    channel: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PackageRef:
        return cls(
            **{
                k: str(_require(data, "package", k, str))
                for k in ("name", "version", "build", "channel")
            }
        )


@dataclass(frozen=True)
class ArtifactInfo:
    file: str
    sha256: str
    size: int
    format: str  # "tar.zst" or "tar.gz"


@dataclass(frozen=True)
class IndexInfo:
    """`index` in manifest.json: the build's content index file (contentindex.py), with
    what it must hash to. Absent in builds from before the index: the agent deploys those
    in full and the next publish packs in full."""

    file: str
    sha256: str
    size: int


@dataclass(frozen=True)
class LockInfo:
    file: str
    sha256: str


@dataclass(frozen=True)
class KernelExtras:
    """`kernel` in manifest.json: what nsls2.yaml says about the env's kernels.

    `memory_limit` overrides the site's `kernels.memory_limit` only when
    `memory_limit_set` (nsls2.yaml named it; null there means "no ceiling").
    `logo` is the image itself (base64), so the store stays the agent's only source.
    """

    beamlines: tuple[str, ...] = ()
    memory_limit: int | None = None
    memory_limit_set: bool = False
    logo_format: str = ""  # "svg" or "png"; "" = generated default
    logo_base64: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"beamlines": list(self.beamlines)}
        if self.memory_limit_set:
            data["memory_limit"] = self.memory_limit
        if self.logo_format:
            data["logo"] = {"format": self.logo_format, "base64": self.logo_base64}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KernelExtras:
        record = "manifest.json kernel"
        beamlines = _require(data, record, "beamlines", list)
        if not all(isinstance(b, str) for b in beamlines):
            raise RecordError(record, "beamlines", "expected a list of names")
        limit = data.get("memory_limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise RecordError(record, "memory_limit", f"expected bytes or null, got {limit!r}")
        logo = data.get("logo") or {}
        fmt = _require(logo, f"{record} logo", "format", str) if logo else ""
        if fmt not in ("", "svg", "png"):
            raise RecordError(f"{record} logo", "format", f"expected svg or png, got {fmt!r}")
        return cls(
            beamlines=tuple(beamlines),
            memory_limit=limit,
            memory_limit_set="memory_limit" in data,
            logo_format=fmt,
            logo_base64=_require(logo, f"{record} logo", "base64", str) if logo else "",
        )


@dataclass(frozen=True)
class BuildManifest:
    """`STORE/ENV/BUILD_ID/manifest.json`: written last; its presence commits the build."""

    name: str
    build_id: str
    created: str
    platform: str
    display_name: str
    smoke: tuple[str, ...]
    artifact: ArtifactInfo
    lock: LockInfo
    packages: tuple[PackageRef, ...]
    builder: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    kernel: KernelExtras = field(default_factory=KernelExtras)  # optional in older manifests
    index: IndexInfo | None = None  # optional: builds from before the content index
    schema: int = MANIFEST_SCHEMA

    @property
    def created_at(self) -> datetime:
        return parse_time(self.created)

    def package_version(self, name: str) -> str | None:
        """The version of package `name` in this build (e.g. `python`), if it has one."""
        return next((p.version for p in self.packages if p.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["smoke"] = list(self.smoke)
        data["packages"] = [asdict(p) for p in self.packages]
        data["kernel"] = self.kernel.to_dict()
        if self.index is None:
            del data["index"]
        return data

    def files(self) -> list[str]:
        """The build's files in the store besides manifest.json (what a backend stores,
        verifies and deletes): the artifact, the lock and, when there is one, the index."""
        names = [self.artifact.file, self.lock.file]
        if self.index is not None:
            names.append(self.index.file)
        return names

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildManifest:
        record = "manifest.json"
        schema = _require(data, record, "schema", int)
        if schema > MANIFEST_SCHEMA:
            raise RecordError(
                record, "schema", f"schema {schema} is newer than this tool ({MANIFEST_SCHEMA})"
            )
        artifact = _require(data, record, "artifact", dict)
        lock = _require(data, record, "lock", dict)
        created = _require(data, record, "created", str)
        try:
            parse_time(created)
        except ValueError as exc:
            raise RecordError(record, "created", f"not an ISO 8601 time: {exc}") from None
        size = _require(artifact, "manifest.json artifact", "size", int)
        return cls(
            schema=schema,
            name=_require(data, record, "name", str),
            build_id=_require(data, record, "build_id", str),
            created=created,
            platform=_require(data, record, "platform", str),
            display_name=_require(data, record, "display_name", str),
            smoke=tuple(_require(data, record, "smoke", list)),
            artifact=ArtifactInfo(
                file=_plain_file_name(artifact, "manifest.json artifact", "file"),
                sha256=_require(artifact, "manifest.json artifact", "sha256", str),
                size=size,
                format=_require(artifact, "manifest.json artifact", "format", str),
            ),
            lock=LockInfo(
                file=_plain_file_name(lock, "manifest.json lock", "file"),
                sha256=_require(lock, "manifest.json lock", "sha256", str),
            ),
            packages=tuple(
                PackageRef.from_dict(p) for p in _require(data, record, "packages", list)
            ),
            builder=_require(data, record, "builder", dict),
            source=_require(data, record, "source", dict),
            kernel=KernelExtras.from_dict(_require(data, record, "kernel", dict))
            if "kernel" in data
            else KernelExtras(),
            index=_index_info(data["index"]) if data.get("index") is not None else None,
        )


def _index_info(index: Any) -> IndexInfo:
    record = "manifest.json index"
    size = _require(index, record, "size", int)
    if size < 0:
        raise RecordError(record, "size", f"{size} is not a size")
    return IndexInfo(
        file=_plain_file_name(index, record, "file"),
        sha256=_require(index, record, "sha256", str),
        size=size,
    )


@dataclass(frozen=True)
class LtsRecord:
    """`STORE/ENV/lts/LABEL.json`: a long-term-support label pointing at one build."""

    env: str
    label: str
    build_id: str
    promoted: str

    def to_dict(self) -> dict[str, Any]:
        return {"build_id": self.build_id, "promoted": self.promoted}

    @classmethod
    def from_dict(cls, env: str, label: str, data: dict[str, Any]) -> LtsRecord:
        record = f"lts/{label}.json"
        return cls(
            env=env,
            label=label,
            build_id=_require(data, record, "build_id", str),
            promoted=_require(data, record, "promoted", str),
        )


@dataclass(frozen=True)
class ReadyRecord:
    """`DEPLOY_ROOT/envs/ENV/BUILD_ID/.nsls2/ready.json`: written last by the agent."""

    env: str
    build_id: str
    created: str
    deployed: str
    node: str
    artifact_sha256: str
    smoke: tuple[str, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["smoke"] = list(self.smoke)
        return data

    def vouches_for(self, manifest: BuildManifest) -> bool:
        """Whether this record was written for `manifest`'s artifact: anything else (a
        record the archive shipped, one left from another artifact of that build id) is
        not trusted as "ready"."""
        return (self.env, self.build_id, self.artifact_sha256) == (
            manifest.name,
            manifest.build_id,
            manifest.artifact.sha256,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReadyRecord:
        record = "ready.json"
        return cls(
            env=_require(data, record, "env", str),
            build_id=_require(data, record, "build_id", str),
            created=_require(data, record, "created", str),
            deployed=_require(data, record, "deployed", str),
            node=_require(data, record, "node", str),
            artifact_sha256=_require(data, record, "artifact_sha256", str),
            smoke=tuple(_require(data, record, "smoke", list)),
            seconds=float(_require(data, record, "seconds", (int, float))),
        )


@dataclass(frozen=True)
class ProcessUse:
    """A process found using a deployed build (or `unknown` when it could not be read)."""

    pid: int
    user: str
    via: str  # exe, cwd, root, fd, maps, environ, or "unreadable"
    path: str

    @classmethod
    def from_dict(cls, data: dict[str, Any], record: str = "process use") -> ProcessUse:
        return cls(
            pid=_require(data, record, "pid", int),
            user=_require(data, record, "user", str),
            via=_require(data, record, "via", str),
            path=_require(data, record, "path", str),
        )


@dataclass(frozen=True)
class NodeHeartbeat:
    """`DEPLOY_ROOT/state/nodes/NODE.json`: what one node's agent saw on its last pass."""

    node: str
    time: str
    version: str
    in_use: dict[str, list[dict[str, Any]]]  # "ENV/BUILD_ID" -> [ProcessUse as dict]
    complete: bool
    # processes the scan could not read ([ProcessUse as dict]); any makes `complete` False
    unknown: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeHeartbeat:
        record = "node heartbeat"
        in_use = _require(data, record, "in_use", dict)
        unknown = _optional(data, record, "unknown", list, [])
        # every use is checked here: a use dropped as unreadable could let its build be deleted
        for key, uses in in_use.items():
            if not isinstance(uses, list):
                raise RecordError(record, f"in_use.{key}", "expected a list")
            for i, use in enumerate(uses):
                ProcessUse.from_dict(use, f"{record} in_use.{key}[{i}]")
        for i, use in enumerate(unknown):
            ProcessUse.from_dict(use, f"{record} unknown[{i}]")
        return cls(
            node=_require(data, record, "node", str),
            time=_require(data, record, "time", str),
            version=_require(data, record, "version", str),
            in_use=in_use,
            complete=_require(data, record, "complete", bool),
            unknown=unknown,
        )

    def uses(self) -> dict[str, list[ProcessUse]]:
        """`in_use` as records ("ENV/BUILD_ID" -> uses); `from_dict` checked every entry."""
        return {key: [ProcessUse.from_dict(u) for u in uses] for key, uses in self.in_use.items()}

    def unknown_uses(self) -> list[ProcessUse]:
        return [ProcessUse.from_dict(u) for u in self.unknown]


# -- the agents' shared state under DEPLOY_ROOT/state (paths: layout.py) ------------------


@dataclass(frozen=True)
class Quarantine:
    """`state/quarantine/ENV/BUILD_ID.json`: why a build was rejected, and which artifact.

    The artifact is identified by the manifest's sha256 plus the size and mtime seen on
    disk: the same artifact is never retried, a republished or re-synced one is.
    """

    env: str
    build_id: str
    stage: str  # verify | extract | unpack | smoke
    reason: str
    artifact_sha256: str
    artifact_size: int
    artifact_mtime_ns: int
    time: str
    node: str

    def same_artifact(self, sha256: str, size: int, mtime_ns: int) -> bool:
        """Whether the artifact now in the store is the one that was rejected."""
        return (self.artifact_sha256, self.artifact_size, self.artifact_mtime_ns) == (
            sha256,
            size,
            mtime_ns,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Quarantine:
        record = "quarantine record"
        return cls(
            env=_require(data, record, "env", str),
            build_id=_require(data, record, "build_id", str),
            stage=_require(data, record, "stage", str),
            reason=_require(data, record, "reason", str),
            artifact_sha256=_require(data, record, "artifact_sha256", str),
            artifact_size=_require(data, record, "artifact_size", int),
            artifact_mtime_ns=_require(data, record, "artifact_mtime_ns", int),
            time=_require(data, record, "time", str),
            node=_require(data, record, "node", str),
        )


@dataclass(frozen=True)
class RetryRecord:
    """`state/retry/ENV/BUILD_ID.json`: a deploy that failed for a reason of the node
    (disk full, I/O error, killed, timed out), when it is tried again and how often it
    was; removed once the build is ready."""

    env: str
    build_id: str
    stage: str
    reason: str
    attempts: int
    time: str
    next_try: str
    node: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetryRecord:
        record = "retry record"
        next_try = _require(data, record, "next_try", str)
        try:
            parse_time(next_try)
        except ValueError as exc:
            raise RecordError(record, "next_try", f"not an ISO 8601 time: {exc}") from None
        return cls(
            env=_require(data, record, "env", str),
            build_id=_require(data, record, "build_id", str),
            stage=_require(data, record, "stage", str),
            reason=_require(data, record, "reason", str),
            attempts=_require(data, record, "attempts", int),
            time=_require(data, record, "time", str),
            next_try=next_try,
            node=_require(data, record, "node", str),
        )


@dataclass(frozen=True)
class Hold:
    """`state/holds/ENV.json`, a rollback pin: keep latest at `build_id` until something
    newer than `newest_at_hold` (created `newest_at_hold_created`) is ready."""

    env: str
    build_id: str
    newest_at_hold: str
    newest_at_hold_created: str
    time: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hold:
        record = "rollback hold"
        created = _require(data, record, "newest_at_hold_created", str)
        try:
            parse_time(created)
        except ValueError as exc:
            raise RecordError(record, "newest_at_hold_created", f"not a time: {exc}") from None
        return cls(
            env=_require(data, record, "env", str),
            build_id=_require(data, record, "build_id", str),
            newest_at_hold=_require(data, record, "newest_at_hold", str),
            newest_at_hold_created=created,
            time=_require(data, record, "time", str),
        )


@dataclass(frozen=True)
class Tombstone:
    """`state/tombstones/ENV/BUILD_ID.json`: retention marked the build for deletion. Its
    file mtime (the shared filesystem's clock) is the tombstone's time; `time` is
    informational."""

    env: str
    build_id: str
    node: str
    time: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tombstone:
        record = "tombstone"
        return cls(
            env=_require(data, record, "env", str),
            build_id=_require(data, record, "build_id", str),
            node=_require(data, record, "node", str),
            time=_require(data, record, "time", str),
        )


@dataclass(frozen=True)
class DeletedMarker:
    """`state/deleted/ENV/BUILD_ID.json`: retention deleted the build here on purpose, so
    the agent does not deploy it again from the store. `time` is empty when an interrupted
    delete was finished by a later pass."""

    env: str
    build_id: str
    node: str
    time: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeletedMarker:
        record = "deleted marker"
        return cls(
            env=_require(data, record, "env", str),
            build_id=_require(data, record, "build_id", str),
            node=_require(data, record, "node", str),
            time=_optional(data, record, "time", str, ""),
        )


@dataclass(frozen=True)
class PassRecord:
    """`state/agent/NODE.json`: when this node last finished a pass and what failed (`status`
    shows it)."""

    node: str
    time: str
    seconds: float
    ok: bool
    failures: list[str]
    outcomes: list[dict[str, Any]]  # agent.deploy.DeployOutcome as dicts
    store_ok: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PassRecord:
        record = "agent pass record"
        return cls(
            node=_require(data, record, "node", str),
            time=_require(data, record, "time", str),
            seconds=float(_require(data, record, "seconds", (int, float))),
            ok=_require(data, record, "ok", bool),
            failures=_require(data, record, "failures", list),
            outcomes=_require(data, record, "outcomes", list),
            store_ok=_require(data, record, "store_ok", bool),
        )


@dataclass(frozen=True)
class RetentionDecision:
    """What prune decided for one deployed build, and why (shown by `prune --dry-run`)."""

    env: str
    build_id: str
    # "keep", "tombstone", "delete", "untombstone", "wait"; also "finish" (an interrupted
    # delete completed), "revive" (a deleted build became a root again), "error"
    action: str
    reason: str


@dataclass(frozen=True)
class NodeCheck:
    """`state/nodecheck/NODE/ENV/BUILD_ID.json`: whether the build imported `imports` on
    NODE (`reason` empty: it did)."""

    imports: tuple[str, ...]
    reason: str
    time: str

    def to_dict(self) -> dict[str, Any]:
        return {"imports": list(self.imports), "reason": self.reason, "time": self.time}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeCheck:
        record = "node check"
        imports = _require(data, record, "imports", list)
        if not all(isinstance(name, str) for name in imports):
            raise RecordError(record, "imports", "expected a list of module names")
        return cls(
            imports=tuple(imports),
            reason=_require(data, record, "reason", str),
            time=_require(data, record, "time", str),
        )

"""Plain records that cross module boundaries: no I/O here, only data and (de)serialisation.

The build side writes `BuildManifest` into the store; the agent reads it back, writes
`ReadyRecord` into the deploy root and its shared state (`NodeHeartbeat`, `Quarantine`,
`Hold`, `Tombstone`, `DeletedMarker`, `PassRecord`, `MemoryProbe`) under
`DEPLOY_ROOT/state`; prune returns `RetentionDecision`s. Each is a msgspec Struct
(`schema.Record`): its types are checked on the way in and `from_dict` names the field
that is wrong. Build-id times are parsed here only (`build_id_time`). Every stage imports
this module; it imports none of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType, field

from .errors import RecordError
from .names import BEAMLINE_NAME_PATTERN
from .schema import Record, decode, field_problem, to_builtins

MANIFEST_SCHEMA = 1

_BUILD_ID_RE = re.compile(r"^(\d{4}\.\d{2}\.\d{2}T\d{6}Z)-([0-9a-f]{8})\Z")


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


def build_id_time(build_id: str) -> datetime | None:
    """When a build id says its build was made (UTC), None if it is not a build id: the
    one parser of the id's time (the agent's, retention's and the notebook tools')."""
    match = _BUILD_ID_RE.match(build_id)
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y.%m.%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:  # the right shape, no such time (month 13)
        return None


def is_build_id(text: str) -> bool:
    return bool(_BUILD_ID_RE.match(text))


def _check_time(name: str, text: str, what: str = "not an ISO 8601 time") -> None:
    try:
        parse_time(text)
    except ValueError as exc:
        raise field_problem(name, f"{what}: {exc}") from None


def _check_plain_file_name(name: str, value: str) -> None:
    """A file name of the build directory (`artifact.file`, `lock.file`, `index.file`): a
    plain name, so joining it to the build directory can only name a file there (no `/`,
    `.`, `..`, NUL, nothing longer than a name can be, not the manifest itself)."""
    if (
        value in ("", ".", "..", "manifest.json")
        or "/" in value
        or "\0" in value
        or len(value.encode("utf-8", "surrogateescape")) > 255
    ):
        raise field_problem(name, f"{value!r} is not a plain file name of the build")


Size = Annotated[int, Meta(ge=0)]


class PackageRef(Record, frozen=True):
    """One installed package, as the lock and the manifest name it."""

    RECORD: ClassVar[str] = "package"

    name: str
    version: str
    build: str
    channel: str


class ArtifactInfo(Record, frozen=True):
    RECORD: ClassVar[str] = "manifest.json artifact"

    file: str
    sha256: str
    size: Size
    format: str  # "tar.zst" or "tar.gz"

    def __post_init__(self) -> None:
        _check_plain_file_name("file", self.file)


class IndexInfo(Record, frozen=True):
    """`index` in manifest.json: the build's content index file (contentindex.py), with
    what it must hash to. Absent in builds from before the index: the agent deploys those
    in full and the next publish packs in full."""

    RECORD: ClassVar[str] = "manifest.json index"

    file: str
    sha256: str
    size: Size

    def __post_init__(self) -> None:
        _check_plain_file_name("file", self.file)


class LockInfo(Record, frozen=True):
    RECORD: ClassVar[str] = "manifest.json lock"

    file: str
    sha256: str

    def __post_init__(self) -> None:
        _check_plain_file_name("file", self.file)


class KernelLogo(msgspec.Struct, frozen=True):
    """`kernel.logo` in manifest.json: the image itself, so the store stays the agent's only
    source."""

    format: Literal["svg", "png"]
    base64: str


class KernelExtras(Record, frozen=True):
    """`kernel` in manifest.json: what nsls2.yaml says about the env's kernels, as written.

    `memory_limit` is written only when nsls2.yaml names it (null there: "no ceiling"),
    so it overrides the site's `kernels.memory_limit` only then (`memory_limit_set`);
    `logo` only when the env has one (else a generated default). `beamlines` is always
    written (readers before this Struct require it)."""

    RECORD: ClassVar[str] = "manifest.json kernel"
    MESSAGES: ClassVar[dict[str, str]] = {"beamlines": "expected a list of beamline names"}

    # the names nsls2.yaml gives (one rule: names.BEAMLINE_NAME_PATTERN)
    beamlines: tuple[Annotated[str, Meta(pattern=BEAMLINE_NAME_PATTERN)], ...] = ()
    memory_limit: Annotated[int, Meta(ge=0)] | None | UnsetType = UNSET
    logo: KernelLogo | None | UnsetType = UNSET

    @property
    def memory_limit_set(self) -> bool:
        return self.memory_limit is not UNSET

    @property
    def logo_format(self) -> str:
        """ "svg" or "png"; "" for none (a generated default)."""
        return self.logo.format if self.logo else ""

    @property
    def logo_base64(self) -> str:
        return self.logo.base64 if self.logo else ""


class BuildManifest(Record, frozen=True):
    """`STORE/ENV/BUILD_ID/manifest.json`: written last; its presence commits the build."""

    RECORD: ClassVar[str] = "manifest.json"

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

    def __post_init__(self) -> None:
        if self.schema > MANIFEST_SCHEMA:
            raise field_problem(
                "schema", f"schema {self.schema} is newer than this tool ({MANIFEST_SCHEMA})"
            )
        _check_time("created", self.created)

    @property
    def created_at(self) -> datetime:
        return parse_time(self.created)

    def package_version(self, name: str) -> str | None:
        """The version of package `name` in this build (e.g. `python`), if it has one."""
        return next((p.version for p in self.packages if p.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        data = to_builtins(self)
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
    def from_dict(cls, data: Any) -> BuildManifest:
        if not isinstance(data, dict):
            raise RecordError(cls.RECORD, None, "record is not a JSON object")
        for name in ("schema", "builder", "source"):  # required on disk, defaulted in code
            if name not in data:
                raise RecordError(cls.RECORD, name, "missing")
        if data.get("kernel", 0) is None:  # older builds: no kernel record (or null)
            data = {k: v for k, v in data.items() if k != "kernel"}
        return decode(data, cls, cls.RECORD, KernelExtras.MESSAGES)


class LtsRecord(Record, frozen=True):
    """`STORE/ENV/lts/LABEL.json`: a long-term-support label pointing at one build."""

    env: str
    label: str
    build_id: str
    promoted: str

    def to_dict(self) -> dict[str, Any]:
        return {"build_id": self.build_id, "promoted": self.promoted}

    @classmethod
    def from_dict(cls, env: str, label: str, data: Any) -> LtsRecord:  # type: ignore[override]
        raw = decode(data, _LtsJson, f"lts/{label}.json")
        return cls(env=env, label=label, build_id=raw.build_id, promoted=raw.promoted)


class _LtsJson(msgspec.Struct, frozen=True):
    build_id: str
    promoted: str


class ReadyRecord(Record, frozen=True):
    """`DEPLOY_ROOT/envs/ENV/BUILD_ID/.nsls2/ready.json`: written last by the agent."""

    RECORD: ClassVar[str] = "ready.json"

    env: str
    build_id: str
    created: str
    deployed: str
    node: str
    artifact_sha256: str
    smoke: tuple[str, ...]
    seconds: float

    def vouches_for(self, manifest: BuildManifest) -> bool:
        """Whether this record was written for `manifest`'s artifact: anything else (a
        record the archive shipped, one left from another artifact of that build id) is
        not trusted as "ready"."""
        return (self.env, self.build_id, self.artifact_sha256) == (
            manifest.name,
            manifest.build_id,
            manifest.artifact.sha256,
        )


class ProcessUse(Record, frozen=True):
    """A process found using a deployed build (or `unknown` when it could not be read)."""

    RECORD: ClassVar[str] = "process use"

    pid: int
    user: str
    via: str  # exe, cwd, root, fd, maps, environ, or "unreadable"
    path: str


class NodeHeartbeat(Record, frozen=True):
    """`DEPLOY_ROOT/state/nodes/NODE.json`: what one node's agent saw on its last pass."""

    RECORD: ClassVar[str] = "node heartbeat"

    node: str
    time: str
    version: str
    # "ENV/BUILD_ID" -> the processes using it; every use is checked on the way in (a use
    # dropped as unreadable could let its build be deleted)
    in_use: dict[str, list[ProcessUse]]
    complete: bool
    # processes the scan could not read; any makes `complete` False
    unknown: list[ProcessUse] = field(default_factory=list)


# -- the agents' shared state under DEPLOY_ROOT/state (paths: layout.py) ------------------


class Quarantine(Record, frozen=True):
    """`state/quarantine/ENV/BUILD_ID.json`: why a build was rejected, and which artifact.

    The artifact is identified by the manifest's sha256 plus the size and mtime seen on
    disk: the same artifact is never retried, a republished or re-synced one is.
    """

    RECORD: ClassVar[str] = "quarantine record"

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


class RetryRecord(Record, frozen=True):
    """`state/retry/ENV/BUILD_ID.json`: a deploy that failed for a reason of the node
    (disk full, I/O error, killed, timed out), when it is tried again and how often it
    was; removed once the build is ready."""

    RECORD: ClassVar[str] = "retry record"

    env: str
    build_id: str
    stage: str
    reason: str
    attempts: Annotated[int, Meta(ge=0)]
    time: str
    next_try: str
    node: str

    def __post_init__(self) -> None:
        _check_time("next_try", self.next_try)


class Hold(Record, frozen=True):
    """`state/holds/ENV.json`, a rollback pin: keep latest at `build_id` until something
    newer than `newest_at_hold` (created `newest_at_hold_created`) is ready."""

    RECORD: ClassVar[str] = "rollback hold"

    env: str
    build_id: str
    newest_at_hold: str
    newest_at_hold_created: str
    time: str

    def __post_init__(self) -> None:
        _check_time("newest_at_hold_created", self.newest_at_hold_created, "not a time")


class Tombstone(Record, frozen=True):
    """`state/tombstones/ENV/BUILD_ID.json`: retention marked the build for deletion. Its
    file mtime (the shared filesystem's clock) is the tombstone's time; `time` is
    informational."""

    RECORD: ClassVar[str] = "tombstone"

    env: str
    build_id: str
    node: str
    time: str


class DeletedMarker(Record, frozen=True):
    """`state/deleted/ENV/BUILD_ID.json`: retention deleted the build here on purpose, so
    the agent does not deploy it again from the store. `time` is empty when an interrupted
    delete was finished by a later pass."""

    RECORD: ClassVar[str] = "deleted marker"

    env: str
    build_id: str
    node: str
    time: str = ""


class PassRecord(Record, frozen=True):
    """`state/agent/NODE.json`: when this node last finished a pass and what failed (`status`
    shows it)."""

    RECORD: ClassVar[str] = "agent pass record"

    node: str
    time: str
    seconds: float
    ok: bool
    failures: list[Any]
    outcomes: list[Any]  # agent.deploy.DeployOutcome as dicts
    store_ok: bool


# what one env's publish did: a new build, or none (the lock equals the newest build's)
PublishStatus = Literal["published", "unchanged"]


class PublishLine(Record, frozen=True):
    """The JSON line `publish --json` prints per env; the hook reads the last one to tell a
    published build from an unchanged one (hook/runner.py)."""

    RECORD: ClassVar[str] = "publish --json result"

    env: str
    build_id: str
    status: PublishStatus
    size: Size
    seconds: float


# how a kernel's memory ceiling is held (agent/kernel_ceiling.py, docs/kernels.md)
CeilingMechanism = Literal["cgroup2", "cgroup1", "rlimit"]


class MemoryProbe(Record, frozen=True):
    """`state/memory/NODE.json`: which memory ceiling kernels get on NODE and why, as NODE's
    agent last probed it (agent/ceiling.py); `status` shows it per node."""

    RECORD: ClassVar[str] = "memory probe"

    node: str
    mechanism: CeilingMechanism
    detail: str  # where the cgroup is, or why no cgroup is used
    checked: str  # when the probe said this first
    cgroup: str | None = None

    def __post_init__(self) -> None:
        _check_time("checked", self.checked)


# what retention may decide for one deployed build (shown by `prune --dry-run`): "finish" is
# an interrupted delete completed, "revive" a deleted build that became a root again
RetentionAction = Literal[
    "keep", "tombstone", "delete", "untombstone", "wait", "finish", "revive", "error"
]


@dataclass(frozen=True)
class RetentionDecision:
    """What prune decided for one deployed build, and why (shown by `prune --dry-run`)."""

    env: str
    build_id: str
    action: RetentionAction
    reason: str


class NodeCheck(Record, frozen=True, forbid_unknown_fields=True):
    """`state/nodecheck/NODE/ENV/BUILD_ID.json`: whether the build imported `imports` on
    NODE (`reason` empty: it did).

    Only NODE's own agent writes and reads it, so it refuses unknown fields: a record this
    version does not fully understand (left by a newer agent before a downgrade) is
    unreadable, which `nodecheck` treats as "check again" - a few seconds of imports, never
    a wrong answer about this node."""

    RECORD: ClassVar[str] = "node check"
    MESSAGES: ClassVar[dict[str, str]] = {"imports": "expected a list of module names"}

    imports: tuple[str, ...]
    reason: str
    time: str

"""One classification of deploy failures, in one place.

A failure is either a property of the artifact - it happens the same way on every node
and every try (a hostile or broken member, a name too long for any filesystem, a link
to a directory, a file where a directory must go, conda-unpack or the smoke imports
failing) - and the build is quarantined by artifact identity; or a fault of this node
(disk full, I/O error, stale NFS handle, a timeout under load, being killed), and the
build is retried later with backoff. Anything the tar reader raises is the artifact's:
it parses bytes the manifest's sha256 vouched for, and turns whatever its parsing
raises (ValueError, OverflowError, ...) into a TarStreamError. Anything else is a bug
in our code: it is raised, never turned into a quarantine.

Called by `deploy._deploy_locked` for every exception a deploy step raises; the retry
record it writes is read by `reconcile` (to wait) and `status` (to say so).
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from .. import layout
from ..errors import NodeFaultError, RejectedArtifactError, StageFailedError
from ..fsutil import atomic_write_json
from ..records import RecordError, RetryRecord, isoformat, parse_time, utcnow
from ..tarstream import TarStreamError

ARTIFACT = "artifact"
NODE = "node"

# errnos of writing the archive's members into its own, new, empty directory: they
# come from the archive's shape (names, link targets, what is a file and what a
# directory), so they happen on every node and every try
_SHAPE_ERRNOS = frozenset(
    {
        errno.ENAMETOOLONG,  # a name component over 255 bytes, a symlink target too long
        errno.ELOOP,
        errno.EEXIST,  # one path twice
        errno.ENOTDIR,  # a file used as a directory
        errno.EISDIR,
        errno.ENOTEMPTY,
        errno.EMLINK,  # more hardlinks to one file than the filesystem allows
    }
)
BACKOFF_FIRST = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=1)


@dataclass(frozen=True)
class Failure:
    kind: str  # ARTIFACT | NODE
    stage: str  # verify | extract | unpack | smoke | sync | ready
    reason: str


def classify(exc: BaseException, stage: str) -> Failure | None:
    """What `exc`, raised at `stage` of a deploy, says; None for a bug (re-raise it)."""
    if isinstance(exc, NodeFaultError):
        return Failure(NODE, exc.stage or stage, str(exc))
    if isinstance(exc, StageFailedError):
        return Failure(ARTIFACT, exc.stage, str(exc))
    if isinstance(exc, RejectedArtifactError):
        return Failure(ARTIFACT, stage, str(exc))
    if isinstance(exc, TarStreamError):
        # the reader's verdict on verified bytes (never on the node): the artifact's
        return Failure(ARTIFACT, stage, f"unreadable archive: {exc}")
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror or exc}{where}"
        if stage == "extract" and exc.errno in _SHAPE_ERRNOS:
            return Failure(ARTIFACT, stage, f"the archive cannot be written out: {text}")
        return Failure(NODE, stage, f"{type(exc).__name__}: {text}")
    if isinstance(exc, MemoryError):
        return Failure(NODE, stage, "out of memory")
    return None


# -- retry records --------------------------------------------------------------------------


def read_retry(deploy_root: Path, env: str, build_id: str) -> RetryRecord | None:
    """ENV/BUILD_ID's retry record; None if there is none or it is unreadable."""
    try:
        return layout.read_record(
            layout.retry_path(deploy_root, env, build_id), RetryRecord.from_dict
        )
    except RecordError:
        return None


def list_retrying(deploy_root: Path) -> list[RetryRecord]:
    found = []
    for path in sorted(layout.retry_dir(deploy_root).glob("*/*.json")):
        record = read_retry(deploy_root, path.parent.name, path.stem)
        if record:
            found.append(record)
    return found


def waiting(record: RetryRecord) -> bool:
    """Whether the build's backoff has not run out yet."""
    return parse_time(record.next_try) > utcnow()


def record_node_fault(
    deploy_root: Path, env: str, build_id: str, failure: Failure, node: str
) -> RetryRecord:
    """Remember a node fault: attempts so far and when to try again (doubling, capped)."""
    previous = read_retry(deploy_root, env, build_id)
    attempts = (previous.attempts if previous else 0) + 1
    delay = min(BACKOFF_FIRST * 2 ** (attempts - 1), BACKOFF_MAX)
    now = utcnow()
    record = RetryRecord(
        env=env,
        build_id=build_id,
        stage=failure.stage,
        reason=failure.reason,
        attempts=attempts,
        time=isoformat(now),
        next_try=isoformat(now + delay),
        node=node,
    )
    atomic_write_json(layout.retry_path(deploy_root, env, build_id), record.to_dict())
    return record


def clear_retry(deploy_root: Path, env: str, build_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(layout.retry_path(deploy_root, env, build_id))

"""One error type per pipeline stage, each carrying what the user needs to fix it.

Every stage raises a subclass of `ArtifactsError`; the CLI prints the message and
exits non-zero, so a message must name the file, field, channel or build involved.
"""

from __future__ import annotations

from pathlib import Path


class ArtifactsError(Exception):
    """Base class for every error this project raises on purpose."""


class RecordError(ArtifactsError, ValueError):
    """A serialised record is missing a field or has one of the wrong type (`field` names
    it), or is not a JSON object at all (`field` None). A ValueError too, for the callers
    that treat any unparseable value alike."""

    def __init__(self, record: str, field_name: str | None, message: str) -> None:
        self.record = record
        self.field = field_name
        self.detail = message
        where = f"field {field_name!r}: " if field_name is not None else ""
        super().__init__(f"{record}: {where}{message}")

    def at(self, path: str) -> RecordError:
        """The same error, naming the file it came from."""
        return RecordError(f"{path} ({self.record})", self.field, self.detail)


class KernelNameError(ArtifactsError, ValueError):
    """An environment name, LTS label or node name that cannot name a kernel or a file
    (the message says why)."""


class UnsafeFileError(ArtifactsError, OSError):
    """A file read whole (a store record, a heartbeat, a notebook) is not a regular file of
    bounded size: what it is (FIFO, symlink, device, too large) is in `strerror`, the path
    in `filename`. Still an OSError, so every reader that skips an unreadable file skips
    this one the same way (`fsutil.read_bounded`)."""


class LockBusy(ArtifactsError):
    """The lock is held by another process and we asked not to wait."""


class ConfigError(ArtifactsError):
    """The site config is missing, unreadable or has a bad field."""

    def __init__(self, path: str | Path | None, field: str | None, message: str) -> None:
        self.path = str(path) if path is not None else "<embedded default>"
        self.field = field
        self.detail = message
        where = f"{self.path}: {field}" if field else self.path
        super().__init__(f"{where}: {message}")


class ManifestError(ArtifactsError):
    """An environment manifest (pixi.toml, nsls2.yaml, pixi.lock) is malformed."""

    def __init__(self, path: str | Path, field: str | None, message: str) -> None:
        self.path = str(path)
        self.field = field
        where = f"{self.path}: {field}" if field else self.path
        super().__init__(f"{where}: {message}")


class SolveError(ArtifactsError):
    """The solver found no solution, or a channel could not be reached."""


class ChannelUnreachableError(SolveError):
    """A channel (after channel_mirrors) could not be fetched."""

    def __init__(self, channel: str, url: str, reason: str) -> None:
        self.channel = channel
        self.url = url
        super().__init__(
            f"channel {channel!r} is unreachable at {url}: {reason}\n"
            f"hint: point it at a reachable mirror with `channel_mirrors: {{{channel}: URL}}` "
            "in the site config"
        )


class InstallError(ArtifactsError):
    """Installing the solved packages into the scratch prefix failed."""


class PackError(ArtifactsError):
    """conda-pack could not pack the prefix."""


class StoreError(ArtifactsError):
    """The artifact store is unreadable, inconsistent or refused a write."""


class BuildLockedError(StoreError):
    """Another publish of the same environment holds the build lock."""


class PromoteRefusedError(ArtifactsError):
    """`promote` of a build that failed on nodes (quarantined or failing an import check)
    without the explicit override; `failures` maps node -> reason."""

    def __init__(self, env: str, build_id: str, failures: dict[str, str]) -> None:
        self.env, self.build_id, self.failures = env, build_id, failures
        count = f"{len(failures)} node{'s' * (len(failures) != 1)}"
        reasons = "; ".join(f"{node}: {reason}" for node, reason in sorted(failures.items()))
        super().__init__(
            f"{env}/{build_id} failed on {count} ({reasons}): an LTS kernel of it would not "
            "start or import what users need. Fix manifests/" + env + " and publish a new "
            "build, or promote anyway with --allow-failed"
        )


class DeployError(ArtifactsError):
    """A build could not be deployed; `build_id` names it, the message says why."""

    def __init__(self, build_id: str, message: str) -> None:
        self.build_id = build_id
        super().__init__(f"{build_id}: {message}")


class RejectedArtifactError(DeployError):
    """The artifact failed verification or safe extraction and must never be retried."""


class StageFailedError(DeployError):
    """conda-unpack or the smoke test of the artifact itself failed (`stage` says which):
    the same on every node, so the artifact is quarantined."""

    def __init__(self, build_id: str, stage: str, message: str) -> None:
        self.stage = stage
        super().__init__(build_id, message)


class NodeFaultError(DeployError):
    """A step failed for a reason of this node, not of the artifact (killed from
    outside, timed out under load): retried later with backoff."""

    def __init__(self, build_id: str, stage: str, message: str) -> None:
        self.stage = stage
        super().__init__(build_id, message)


class PruneError(ArtifactsError):
    """Retention could not be applied."""


class NotebookError(ArtifactsError):
    """A notebook given to `notebook info|pin` cannot be read or re-pointed; names the file."""

    def __init__(self, path: str | Path, field: str | None, message: str) -> None:
        self.path = str(path)
        self.field = field
        where = f"{self.path}: {field}" if field else self.path
        super().__init__(f"{where}: {message}")

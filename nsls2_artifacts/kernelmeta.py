"""`metadata.nsls2` of the kernelspecs the agent writes: one typed record, read one way.

`agent/kernels.py` writes it (`KernelMetadata.to_dict` into kernel.json); the agent's
reconcile and retention, `status`, the Jupyter server extension (`jupyter/deployed.py`,
`jupyter/extension.py`, `jupyter/oom.py`) read it with `kernel_metadata`. The lab extension
mirrors it field for field in `jupyter/labextension_src/src/metadata.ts`: change both
together (docs/design.md "What users see"). No I/O here; below the agent and jupyter/.

`channel` is required: a spec without it is not one the agent wrote, so no reader has to
guess whether it is the rolling kernel (they once disagreed: Python read a missing
channel as LTS, the lab extension as latest).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from msgspec import Meta

from .errors import RecordError
from .schema import Record

MANAGED = "nsls2"  # the key under a kernelspec's `metadata`
Channel = Literal["latest", "lts"]


class KernelMetadata(Record, frozen=True):
    """What one NSLS-II kernel starts and how the launcher shows it."""

    RECORD: ClassVar[str] = "kernelspec metadata.nsls2"

    env: str
    build_id: str
    channel: Channel
    label: str  # "latest" for the rolling kernel, else this spec's LTS label
    labels: tuple[str, ...] = ()  # every LTS label the display name shows (merged labels)
    env_display_name: str = ""  # "NSLS-II base": the env's name without label or details
    created: str = ""
    python: str | None = None
    expires: str | None = None  # LTS: ISO date its support ends
    promoted: str | None = None
    listed: bool = True  # in the launcher's short list (latest + newest listed_lts labels)
    beamlines: tuple[str, ...] = ()
    memory_limit: Annotated[int, Meta(ge=0)] | None = None  # bytes; None = no ceiling

    @property
    def is_latest(self) -> bool:
        return self.channel == "latest"

    @property
    def track(self) -> str:
        """What a notebook records (`metadata.nsls2.track`): "latest" or the LTS label."""
        return "latest" if self.is_latest else self.label

    @property
    def lts_label(self) -> str | None:
        """The LTS label, None for the rolling kernel (names.Pair's second half)."""
        return None if self.is_latest else self.label


def kernel_metadata(spec_metadata: Any) -> KernelMetadata | None:
    """The NSLS-II record in a kernelspec's `metadata`, None when there is none (a stock or
    foreign kernel). RecordError naming the field when there is one that does not parse."""
    block = spec_metadata.get(MANAGED) if isinstance(spec_metadata, dict) else None
    if block is None:
        return None
    return KernelMetadata.from_dict(block)


def kernel_metadata_or_none(spec_metadata: Any) -> KernelMetadata | None:
    """`kernel_metadata`, with an unparseable record read as none (for lists of specs,
    where one bad spec is skipped, not fatal: jupyter_client does the same)."""
    try:
        return kernel_metadata(spec_metadata)
    except RecordError:
        return None


class RetiredKernelRecord(Record, frozen=True):
    """One kernel in `DEPLOY_ROOT/share/jupyter/nsls2/retired.json`: an LTS kernelspec the
    agent removed for good (expired or pruned), so a notebook naming it can be told why."""

    RECORD: ClassVar[str] = "retired.json kernel"

    env: str
    label: str
    build_id: str
    display_name: str | None = None  # the spec's, when it had one
    retired: str = ""  # ISO date


class RetiredFile(Record, frozen=True):
    """`retired.json`: kernel name -> its record, kept as written so the agent, adding or
    removing one kernel, writes every other entry back byte for byte (even one it cannot
    read); `entries` gives the readable ones."""

    RECORD: ClassVar[str] = "retired.json"

    kernels: dict[str, Any]

    def entries(self) -> tuple[dict[str, RetiredKernelRecord], list[RecordError]]:
        """(name -> record of each readable entry, why each other one is not)."""
        found: dict[str, RetiredKernelRecord] = {}
        bad: list[RecordError] = []
        for name, entry in self.kernels.items():
            try:
                found[name] = RetiredKernelRecord.from_dict(entry)
            except RecordError as exc:
                bad.append(RecordError(f"retired.json kernels.{name}", exc.field, exc.detail))
        return found, bad


class NotebookMeta(Record, frozen=True):
    """`metadata.nsls2` of a notebook: the build it ran on, written by the server extension
    when the notebook is saved (`jupyter/extension.py`), read by `notebook info|pin`. The
    lab extension's beamline notebooks add `beamline`."""

    RECORD: ClassVar[str] = "notebook metadata.nsls2"
    MESSAGES: ClassVar[dict[str, str]] = {
        "env": "missing or not a string",
        "build_id": "missing or not a string",
    }

    env: Annotated[str, Meta(min_length=1)]
    build_id: Annotated[str, Meta(min_length=1)]
    track: str = ""  # "latest" or the LTS label
    beamline: str | None = None

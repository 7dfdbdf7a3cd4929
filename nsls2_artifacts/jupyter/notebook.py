"""Read and re-point a saved notebook: the logic behind `nsls2-artifacts notebook info|pin`.

A notebook saved under an NSLS-II kernel carries `metadata.nsls2 = {env, build_id, track}`
(written by the server extension). `notebook_info` says whether that build is still deployed
and which kernel gets it back: the LTS kernel of that very build, else the kept LTS kernel of
the env built nearest in time. `pin` points `metadata.kernelspec` at such a kernel, rewriting
the file atomically and otherwise byte-identical when its JSON layout can be reproduced.
Bad input raises `NotebookError` before anything is written.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import layout
from ..errors import NotebookError, RecordError, UnsafeFileError
from ..fsutil import atomic_write_bytes, parse_json, read_bounded
from ..kernelmeta import NotebookMeta
from .deployed import MANAGED, Catalogue, NsKernel, RetiredKernel, build_time

# Notebooks with many image outputs reach tens of MB; a few hundred MB is no notebook a
# person opens (and parsing it would cost gigabytes): refused unread.
NOTEBOOK_LIMIT = 256 << 20

# nbformat's own layout (nbformat.v4.nbjson): what Jupyter writes
NBFORMAT_STYLE: dict[str, Any] = {
    "indent": 1,
    "sort_keys": True,
    "ensure_ascii": False,
    "separators": (",", ": "),
}


@dataclass(frozen=True)
class NotebookRecord:
    """What a notebook says it ran on."""

    path: Path
    env: str
    build_id: str
    track: str
    kernel_name: str | None  # metadata.kernelspec.name


@dataclass(frozen=True)
class Recovery:
    """The kernel that gets a notebook's build (or the closest one) back, and why."""

    kernel: NsKernel | None
    exact: bool  # the kernel starts the very build the notebook ran on
    reason: str


@dataclass(frozen=True)
class NotebookInfo:
    record: NotebookRecord
    deployed: bool
    latest_runs_it: bool  # the env's latest kernel starts that build today
    retired: tuple[RetiredKernel, ...]  # retired LTS kernels of that build
    recovery: Recovery

    def to_dict(self) -> dict[str, Any]:
        kernel = self.recovery.kernel
        return {
            "path": str(self.record.path),
            "env": self.record.env,
            "build_id": self.record.build_id,
            "track": self.record.track,
            "kernel_name": self.record.kernel_name,
            "deployed": self.deployed,
            "latest_runs_it": self.latest_runs_it,
            "retired": {r.name: r.to_dict() for r in self.retired},
            "recovery": {
                "kernel_name": kernel.name if kernel else None,
                "display_name": kernel.display_name if kernel else None,
                "label": kernel.label if kernel else None,
                "exact": self.recovery.exact,
                "reason": self.recovery.reason,
            },
        }


# --- reading ---------------------------------------------------------------------------
def load_notebook(path: str | Path) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes and parsed JSON, or a NotebookError naming what is wrong.

    A regular file only (a FIFO or a device is refused unread, never waited on; a symlink
    to a notebook is fine: `pin` rewrites its target), at most NOTEBOOK_LIMIT bytes."""
    path = Path(path)
    try:
        raw = read_bounded(path, NOTEBOOK_LIMIT, follow_symlinks=True)
    except UnsafeFileError as exc:
        raise NotebookError(path, None, f"{exc.strerror}, not a notebook") from None
    except IsADirectoryError:
        raise NotebookError(path, None, "is a directory, not a notebook") from None
    except OSError as exc:
        raise NotebookError(path, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        data = parse_json(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise NotebookError(path, None, f"not UTF-8 text, not a notebook ({exc})") from None
    except ValueError as exc:
        raise NotebookError(path, None, f"not valid JSON: {exc}") from None
    if (
        not isinstance(data, dict)
        or "nbformat" not in data
        or not isinstance(data.get("cells"), list)
    ):
        raise NotebookError(path, None, "not a Jupyter notebook (no 'nbformat' and 'cells')")
    if not isinstance(data.get("metadata", {}), dict):
        raise NotebookError(path, "metadata", "is not an object")
    return raw, data


def read_record(path: str | Path, notebook: dict[str, Any]) -> NotebookRecord:
    metadata = notebook.get("metadata", {})
    nsls2 = metadata.get(MANAGED)
    spec = metadata.get("kernelspec")
    kernel_name = spec.get("name") if isinstance(spec, dict) else None
    kernel_name = kernel_name if isinstance(kernel_name, str) else None
    if nsls2 is None:
        hint = (
            f"; it names kernel {kernel_name!r}: open it with that kernel and save it once"
            if kernel_name and kernel_name.startswith("nsls2-")
            else ""
        )
        raise NotebookError(
            path,
            f"metadata.{MANAGED}",
            "missing: this notebook was not saved while an NSLS-II kernel ran "
            f"(the server extension records it on save){hint}",
        )
    if not isinstance(nsls2, dict):
        raise NotebookError(path, f"metadata.{MANAGED}", "is not an object")
    try:
        meta = NotebookMeta.from_dict(nsls2)
    except RecordError as exc:
        raise NotebookError(path, f"metadata.{MANAGED}.{exc.field}", exc.detail) from None
    return NotebookRecord(
        path=Path(path),
        env=meta.env,
        build_id=meta.build_id,
        track=meta.track,
        kernel_name=kernel_name,
    )


# --- deciding --------------------------------------------------------------------------
def _preference(kernel: NsKernel, track: str) -> tuple[bool, bool, bool, str]:
    # the spec of the label asked for, then one naming it among merged labels, then
    # listed kernels, then the newest label
    return (kernel.label != track, track not in kernel.labels, not kernel.listed, kernel.label)


def recovery_kernel(record: NotebookRecord, catalogue: Catalogue) -> Recovery:
    """The LTS kernel of the notebook's build, else the nearest kept LTS of its env."""
    lts = catalogue.lts_of(record.env)
    same_build = [k for k in lts if k.build_id == record.build_id]
    if same_build:
        best = min(same_build, key=lambda k: _preference(k, record.track))
        return Recovery(best, True, f"the LTS kernel of build {record.build_id}")
    if not lts:
        return Recovery(
            None, False, f"no LTS kernel of env {record.env!r} is kept on this deploy root"
        )
    when = build_time(record.build_id)
    if when is None:
        newest = max(lts, key=lambda k: (k.listed, k.build_id))
        return Recovery(newest, False, "the newest kept LTS of the env (build time unknown)")

    def distance(kernel: NsKernel) -> tuple[float, bool, bool]:
        other = build_time(kernel.build_id)
        gap = abs((other - when).total_seconds()) if other else float("inf")
        return (gap, not kernel.listed, bool(other and other < when))  # ties: listed, newer

    best = min(lts, key=distance)
    other = build_time(best.build_id)
    direction = "after" if other and other > when else "before"
    gap = abs((other - when).total_seconds()) if other else 0.0
    return Recovery(
        best,
        False,
        f"build {record.build_id} has no LTS kernel; nearest kept LTS of {record.env!r}, "
        f"built {duration_words(gap)} {direction} it",
    )


def duration_words(seconds: float) -> str:
    """`3 minutes`, `1 hour`, `12 days`: the largest whole unit, singular when one
    (a timedelta's `.days` is -1 for three minutes before, which read "1 days")."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return "less than a minute"


def notebook_info(path: str | Path, catalogue: Catalogue) -> NotebookInfo:
    """What a notebook ran on and how to get that back (reads only)."""
    _, notebook = load_notebook(path)
    record = read_record(path, notebook)
    latest_kernel = catalogue.latest_of(record.env)
    return NotebookInfo(
        record=record,
        deployed=catalogue.is_deployed(record.env, record.build_id),
        latest_runs_it=bool(
            latest_kernel and _latest_build(catalogue, record.env) == record.build_id
        ),
        retired=tuple(
            r
            for r in catalogue.retired.values()
            if r.env == record.env and r.build_id == record.build_id
        ),
        recovery=recovery_kernel(record, catalogue),
    )


def _latest_build(catalogue: Catalogue, env: str) -> str | None:
    for root in catalogue.deploy_roots:
        if (build_id := layout.current_latest(root, env)) is not None:
            return build_id
    return None


def describe(info: NotebookInfo) -> list[str]:
    """Human-readable lines for `notebook info`."""
    record, recovery = info.record, info.recovery
    lines = [
        f"notebook:    {record.path}",
        f"ran on:      env {record.env}, build {record.build_id} (track: {record.track or '?'})",
        f"kernel:      {record.kernel_name or '(none named in metadata.kernelspec)'}",
        "deployed:    "
        + ("yes, that build is still deployed" if info.deployed else "no, that build is gone"),
    ]
    if info.latest_runs_it:
        lines.append(f"latest:      the {record.env} latest kernel still starts this build")
    for retired in info.retired:
        lines.append(
            f"retired:     {retired.name} ({retired.display_name}) since {retired.retired}"
        )
    if recovery.kernel:
        kernel = recovery.kernel
        lines.append(f"get it back: {kernel.name} ({kernel.display_name}): {recovery.reason}")
        lines.append(f"             nsls2-artifacts notebook pin {record.path} {kernel.label}")
    else:
        lines.append(f"get it back: no kernel: {recovery.reason}")
    return lines


# --- pinning ---------------------------------------------------------------------------
def pin_target(record: NotebookRecord, catalogue: Catalogue, label: str | None) -> NsKernel:
    """The kernel `pin` points at: the given LABEL of the notebook's env, else the recovery."""
    if label is None:
        recovery = recovery_kernel(record, catalogue)
        if recovery.kernel is None:
            raise NotebookError(record.path, f"metadata.{MANAGED}.env", recovery.reason)
        return recovery.kernel
    matches = [
        k
        for k in catalogue.kernels.values()
        if k.env == record.env and (label in k.labels or (label == "latest" and k.is_latest))
    ]
    if matches:
        return min(matches, key=lambda k: _preference(k, label))
    retired = [r for r in catalogue.retired.values() if r.env == record.env and r.label == label]
    kept = sorted({k.label for k in catalogue.kernels.values() if k.env == record.env})
    why = f"retired on {retired[0].retired}" if retired else "no such kernel"
    raise NotebookError(
        record.path,
        None,
        f"label {label!r} of env {record.env!r}: {why}; kept: {', '.join(kept) or 'none'}",
    )


def pin(path: str | Path, catalogue: Catalogue, label: str | None = None) -> PinResult:
    """Point the notebook's `metadata.kernelspec` at an NSLS-II kernel (atomic rewrite)."""
    path = Path(path)
    raw, notebook = load_notebook(path)
    record = read_record(path, notebook)
    kernel = pin_target(record, catalogue, label)
    metadata = notebook.setdefault("metadata", {})
    spec = metadata.get("kernelspec")
    if not isinstance(spec, dict):
        spec = metadata["kernelspec"] = {}
    if spec.get("name") == kernel.name and spec.get("display_name") == kernel.display_name:
        return PinResult(kernel, changed=False, reformatted=False)
    spec["name"] = kernel.name
    spec["display_name"] = kernel.display_name
    spec.setdefault("language", "python")
    try:
        data, reformatted = serialize_like(raw, notebook)
    except RecursionError:  # loads fine, but too deep for json.dumps' layouts
        raise NotebookError(
            path, None, "JSON nested too deeply to write back; left as it is"
        ) from None

    real = Path(os.path.realpath(path))  # rewrite the file a symlink points at, keep the link
    atomic_write_bytes(real, data, mode=stat.S_IMODE(real.stat().st_mode))
    return PinResult(kernel, changed=True, reformatted=reformatted)


@dataclass(frozen=True)
class PinResult:
    kernel: NsKernel
    changed: bool
    reformatted: bool  # the original JSON layout could not be reproduced


def _candidate_styles() -> list[dict[str, Any]]:
    styles = []
    for sort_keys in (True, False):
        for ensure_ascii in (False, True):
            for indent in (1, 2, 4, 3, 0):
                styles.append(
                    {
                        "indent": indent,
                        "sort_keys": sort_keys,
                        "ensure_ascii": ensure_ascii,
                        "separators": (",", ": "),
                    }
                )
            for separators in ((", ", ": "), (",", ":")):
                styles.append(
                    {
                        "indent": None,
                        "sort_keys": sort_keys,
                        "ensure_ascii": ensure_ascii,
                        "separators": separators,
                    }
                )
    return styles


def serialize_like(original: bytes, data: dict[str, Any]) -> tuple[bytes, bool]:
    """`data` as JSON in the layout of `original` (found by re-serialising the original
    content), so that only the changed values differ; nbformat's layout when none fits."""
    text = original.decode("utf-8")
    body = text.rstrip("\r\n")
    ending = text[len(body) :]
    parsed = parse_json(text)
    for style in _candidate_styles():
        if json.dumps(parsed, **style) == body:
            return (json.dumps(data, **style) + ending).encode("utf-8"), False
    return (json.dumps(data, **NBFORMAT_STYLE) + "\n").encode("utf-8"), True

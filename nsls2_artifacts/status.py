"""What is deployed here: envs, builds and their state, latest, holds, LTS labels,
kernels, quarantined builds with reasons, invalid manifests, each node's last pass.

Called by `nsls2-artifacts status [--json]`. Reads only, and all of it in one look
(`collect_status`): the envs, builds, latest, holds, kernels and failures come from one
`agent.observe` snapshot, the look an agent pass plans from; what the nodes wrote beside
it (each node's last pass, heartbeat scan and memory probe, the dedup record of each
ready build, this node's rollout report, the store's stray entries) is read right after,
into `Beside`. `status_of` is a function of those two and reads nothing, so status shows
exactly what that look saw (`tests/test_one_look.py`). The store's absence is reported,
not fatal.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import layout
from .agent import ceiling, dedup, heartbeat, kernels
from .agent.diskuse import disk_freed
from .agent.observe import Observed, observe
from .config import SiteConfig
from .errors import StoreError
from .names import Pair, assign_kernel_names
from .procscan import SCAN_PRIVILEGE_HINT
from .records import PassRecord, RecordError
from .rollout import NodeRollout
from .store import NodeReports, Store


@dataclass
class Beside:
    """What status shows beside the snapshot, read in the same look as it: records the
    nodes wrote about themselves and what only the store's listing and reports say."""

    location: str  # the store, as the config names it
    superseded: dict[tuple[str, str], str] = field(default_factory=dict)  # -> the newer build
    strays: list[dict[str, Any]] = field(default_factory=list)  # store entries, not builds
    passes: dict[str, Any] = field(default_factory=dict)  # node -> its last pass
    scans: dict[str, Any] = field(default_factory=dict)  # node -> its last /proc scan
    memory: dict[str, Any] = field(default_factory=dict)  # node -> the ceiling it offers
    disk: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)


def collect_status(site: SiteConfig, store: Store, *, walk_disk: bool = False) -> dict[str, Any]:
    """One look (as an agent pass takes it, plus `look_beside`), then `status_of` it.
    `walk_disk`: also what each ready build holds alone now (a walk of every build)."""
    quiet = logging.getLogger("nsls2_artifacts.status")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False  # what the look logs, status shows itself
    obs = observe(site, store, quiet)
    return status_of(site, obs, look_beside(site, store, obs, walk_disk=walk_disk))


def look_beside(
    site: SiteConfig, store: Store, obs: Observed, *, walk_disk: bool = False
) -> Beside:
    """The rest of status's look, right after the snapshot `obs` (a store failure here
    is recorded in `obs`, as the snapshot's own would be)."""
    root = site.deploy_root
    beside = Beside(
        location=store.location,
        passes=_passes(root),
        scans=_scans(root),
        memory=ceiling.read_probes(root),
        disk={
            (env, r.build_id): _disk(root, env, r.build_id, walk_disk)
            for env, ready in obs.ready.items()
            for r in ready
        },
    )
    if obs.store_ok:
        try:
            beside.superseded = _superseded(store, site.agent.node)
            beside.strays = [asdict(s) for s in store.strays()]
        except StoreError as exc:
            obs.store_ok, obs.store_error = False, str(exc)
    return beside


def status_of(site: SiteConfig, obs: Observed, beside: Beside) -> dict[str, Any]:
    """Status as a function of the snapshot `obs` and what was read `beside` it; reads
    nothing itself."""
    out: dict[str, Any] = {
        "deploy_root": str(site.deploy_root),
        "store": beside.location,
        "store_error": obs.store_error or None,
        "envs": {},
        "quarantined": [q.to_dict() for q in obs.quarantine_records],
        "retrying": [r.to_dict() for r in obs.retrying],
        "invalid": [asdict(i) for i in obs.invalid],
        "not_builds": beside.strays,  # store entries that are neither builds nor known records
        "kernels": {},
        "nodes": beside.passes,
        "scans": beside.scans,
        "memory": beside.memory,  # which ceiling kernels get, per node
    }
    labels: dict[tuple[str, str], list[str]] = {}
    for env, records in obs.lts.items():
        for record in records:
            labels.setdefault((env, record.build_id), []).append(record.label)
    quarantined = {(q["env"], q["build_id"]): q for q in out["quarantined"]}
    retrying = {(r["env"], r["build_id"]): r for r in out["retrying"]}
    for env in sorted(set(obs.manifests) | set(obs.deployed_envs)):
        out["envs"][env] = _env_status(env, obs, beside, labels, quarantined, retrying)
    installed = obs.kernels
    for name, data in sorted(installed.items()):
        out["kernels"][name] = {
            "display_name": data.get("display_name"),
            **kernels.spec_target(data),
        }
    out["kernel_clashes"] = _kernel_clashes(out["envs"], labels, installed)
    return out


def _kernel_clashes(
    envs: dict[str, Any], labels: dict[tuple[str, str], list[str]], installed: dict[str, Any]
) -> list[str]:
    """The kernels the agent refuses to write (a name breaking the rules, or one that would
    overwrite another kernel's), the same way the agent decides it."""
    wanted: list[Pair] = [(env, None) for env in sorted(envs)]
    wanted += [(env, label) for (env, _), names in sorted(labels.items()) for label in names]
    on_disk = {name: kernels.spec_pair(data) for name, data in installed.items()}
    return [c.describe() for c in assign_kernel_names(wanted, on_disk).clashes]


def _env_status(
    env: str,
    obs: Observed,
    beside: Beside,
    labels: dict[tuple[str, str], list[str]],
    quarantined: dict[tuple[str, str], dict[str, Any]],
    retrying: dict[tuple[str, str], dict[str, Any]],
) -> dict[str, Any]:
    superseded = beside.superseded
    committed = {m.build_id: m for m in obs.manifests.get(env, [])}
    ready = {r.build_id: r for r in obs.ready.get(env, [])}
    dirs = obs.dirs.get(env, {})
    hold, hold_error = obs.holds.get(env), obs.hold_errors.get(env)
    builds = []
    for build_id in sorted(set(committed) | set(dirs) | set(ready)):
        manifest = committed.get(build_id)
        if build_id in ready:
            state = "ready"
        elif (env, build_id) in quarantined:
            state = "quarantined"
        elif (env, build_id) in retrying:
            state = "retrying"  # a fault of a node, not of the artifact: tried again
        elif build_id in dirs:
            state = "incomplete"
        elif manifest is not None and manifest.platform not in (obs.platform, "noarch"):
            state = "other-platform"
        elif (env, build_id) in superseded:
            state = "superseded"  # skipped on purpose: a newer build was deployed instead
        else:
            state = "pending"
        builds.append(
            {
                "build_id": build_id,
                "state": state,
                "created": manifest.created
                if manifest
                else ready[build_id].created
                if build_id in ready
                else None,
                "in_store": manifest is not None,
                "lts": sorted(labels.get((env, build_id), [])),
                "reason": (
                    quarantined.get((env, build_id)) or retrying.get((env, build_id), {})
                ).get("reason")
                or (
                    f"superseded by {superseded[(env, build_id)]}"
                    if (env, build_id) in superseded
                    else None
                ),
                "disk": beside.disk.get((env, build_id)) if build_id in ready else None,
            }
        )
    return {
        "latest": obs.current.get(env),
        "hold": hold.to_dict() if hold else None,
        "hold_error": hold_error,
        "builds": builds,
    }


def _disk(root: Path, env: str, build_id: str, walk: bool = False) -> dict[str, Any] | None:
    """The disk a ready build added when it was deployed, from its dedup record (None for
    a build deployed in full, before content indexes: it added all of its files; an
    unreadable record says why, naming the file and the field); with `walk`, also what it
    holds alone now (`_held_now`)."""
    prefix = layout.build_dir(root, env, build_id)
    now = _held_now(prefix) if walk else {}
    try:
        record = dedup.read_record(prefix)
    except RecordError as exc:
        return {"error": str(exc), **now}
    if record is None:
        return now or None
    return {
        **now,
        "added_bytes": record.added_bytes,
        "bytes": record.bytes,
        "files": record.files,
        "linked_files": record.linked_files,
        "linked_bytes": record.linked_bytes,
        "copied_files": record.copied_files,
        "donors": list(record.donors),
        "how": "at deploy, from the content index: bytes of the files written, not "
        "hardlinked to an earlier build (if those builds are deleted since, the shared "
        "files are this build's alone)",
    }


def _held_now(prefix: Path) -> dict[str, Any]:
    """What deleting this build alone would free now (`diskuse.disk_freed`): its deploy's
    figure grows when a build it shared files with is deleted."""
    freed = disk_freed([prefix])
    return {
        "alone_bytes": freed.freed,
        "held_bytes": freed.bytes,
        "shared_files_now": freed.shared,
        "unreadable_entries": freed.unreadable,
    }


def _superseded(store: NodeReports, node: str) -> dict[tuple[str, str], str]:
    """(env, build) -> the newer build this node's agent deployed instead (from its last
    rollout report in the store)."""
    for item in store.node_reports():
        if item.node != node or item.data is None:
            continue
        try:
            report = NodeRollout.from_dict(item.data)
        except RecordError:
            return {}
        return {
            (env, build): newer
            for env, state in report.envs.items()
            for build, newer in state.superseded.items()
        }
    return {}


def _passes(root: Path) -> dict[str, Any]:
    found = {}
    for path in sorted(layout.pass_records_dir(root).glob("*.json")):
        try:
            record = layout.read_record(path, PassRecord.from_dict)
        except RecordError as exc:  # shown as that node's failure, not hidden
            found[path.stem] = {"time": None, "seconds": None, "ok": False, "failures": [str(exc)]}
            continue
        if record is not None:
            found[path.stem] = {
                "time": record.time,
                "seconds": record.seconds,
                "ok": record.ok,
                "failures": record.failures,
            }
    return found


def _scans(root: Path) -> dict[str, Any]:
    """Each node's last /proc scan as its heartbeat reports it: complete, or which
    processes it could not read (then nothing on the deploy root can be deleted)."""
    found = {}
    for report in heartbeat.read_reports(root):
        beat = report.heartbeat
        if beat is None:
            continue
        unknown = beat.unknown
        found[report.node] = {
            "complete": beat.complete,
            "unreadable": len(unknown),
            "example": unknown[0].to_dict() if unknown else None,
        }
    return found


def _scan_lines(scans: dict[str, Any]) -> list[str]:
    lines = []
    for node, scan in sorted(scans.items()):
        if scan["complete"]:
            continue
        example = scan["example"]
        seen = (
            f"; e.g. pid {example['pid']} ({example['user']}): {example['via']} {example['path']}"
            if example
            else ""
        )
        lines.append(
            f"SCAN INCOMPLETE on node {node}: the agent cannot read {scan['unreadable']} "
            f"process(es) (other users', or in a mount namespace whose mounts it cannot "
            f"read){seen}. They may use any build, so NOTHING on this "
            f"deploy root is deleted and the disk only grows: {SCAN_PRIVILEGE_HINT}."
        )
    return lines


DISK_LEGEND = (
    "disk: 'adds' is what a build's deploy wrote; the rest of its files are hardlinks to "
    "identical read-only files of earlier builds, kept while any build links them"
)
DISK_NOW_LEGEND = (
    "disk: 'alone now' is what deleting that build alone would free today (it grows as "
    "builds it shares files with are deleted)"
)


def _disk_text(disk: dict[str, Any] | None) -> str:
    """`adds 12.0 MB (1.48 GB of 1.49 GB hardlinked to earlier builds: 41230 files)`,
    then (`status --disk`) `; alone now 14.2 MB of 1.49 GB (41100 files shared)`."""
    if not disk:
        return ""
    now = _now_text(disk)
    if "error" in disk:
        return f"  disk added unknown ({disk['error']}){now}"
    if "added_bytes" not in disk:  # deployed in full, walked: only what it holds now
        return f"  {now.lstrip('; ')}"
    if not disk["linked_files"]:
        shared = "nothing linked"
    else:
        shared = (
            f"{size_text(disk['linked_bytes'])} of {size_text(disk['bytes'])} hardlinked to "
            f"earlier builds: {disk['linked_files']} files"
        )
    if disk["copied_files"]:
        shared += f"; {disk['copied_files']} copied, the filesystem refused a link"
    return f"  adds {size_text(disk['added_bytes'])} ({shared}){now}"


def _now_text(disk: dict[str, Any]) -> str:
    if "alone_bytes" not in disk:
        return ""
    text = f"; alone now {size_text(disk['alone_bytes'])} of {size_text(disk['held_bytes'])}"
    if disk["shared_files_now"]:
        text += f" ({disk['shared_files_now']} files shared with other builds)"
    if disk["unreadable_entries"]:
        text += f", {disk['unreadable_entries']} entries unreadable"
    return text


def size_text(nbytes: int) -> str:
    """`1.48 GB`, `12.0 MB`, `24.6 kB` (a nightly that linked nearly everything adds kB)."""
    if nbytes >= 1e9:
        return f"{nbytes / 1e9:.2f} GB"
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e6 else f"{nbytes / 1e3:.1f} kB"


def quarantine_hint(env: str, build_id: str, stage: str) -> str:
    """What to do about a quarantined build. Only the node's own trouble is transient
    (those are retried by the agent, not quarantined); a stage failing on the artifact
    is the build's fault and fails the same way every time."""
    if stage == "smoke":
        return (
            f"a smoke import failed: the build lacks a module its smoke list names. Fix "
            f"manifests/{env} (add the package to pixi.toml, or correct `smoke:` in "
            f"nsls2.yaml) and publish again; retrying the same build fails the same way"
        )
    if stage in ("verify", "extract"):
        return (
            "the artifact in the store does not match its manifest or is not a safe "
            f"archive: publish {env} again (a retry reads the same bytes)"
        )
    return (
        f"fix manifests/{env} and publish again; only if the cause was outside the build "
        f"(a full disk, a node fault) and is gone: `nsls2-artifacts retry {env} {build_id}`"
    )


def render_text(status: dict[str, Any]) -> str:
    """A terse human summary (the --json form carries everything)."""
    lines = [f"deploy root {status['deploy_root']}", f"store       {status['store']}"]
    if status["store_error"]:
        lines.append(f"  STORE UNAVAILABLE: {status['store_error']}")
    lines += _scan_lines(status.get("scans", {}))
    legend = walked = False  # the disk columns explained once, under the builds, when shown
    for env, info in status["envs"].items():
        hold = f" (held by rollback to {info['hold']['build_id']})" if info["hold"] else ""
        lines.append(f"env {env}: latest -> {info['latest'] or '-'}{hold}")
        if info.get("hold_error"):
            lines.append(f"  ROLLBACK HOLD UNREADABLE (ignored): {info['hold_error']}")
        for b in info["builds"]:
            lts = f" lts={','.join(b['lts'])}" if b["lts"] else ""
            mark = " *" if b["build_id"] == info["latest"] else ""
            reason = f"  reason: {b['reason']}" if b["reason"] else ""
            disk = _disk_text(b.get("disk"))
            legend = legend or bool(disk)
            walked = walked or "alone_bytes" in (b.get("disk") or {})
            lines.append(f"  {b['build_id']}  {b['state']:<11}{lts}{mark}{disk}{reason}")
    if legend:
        lines.append(DISK_LEGEND)
    if walked:
        lines.append(DISK_NOW_LEGEND)
    if status["kernels"]:
        lines.append("kernels:")
        for name, k in status["kernels"].items():
            unlisted = "  (unlisted)" if k.get("listed") is False else ""
            target = f"{k['env']}/{k['build_id']}"
            lines.append(f"  {name:<28} {k['display_name']}  -> {target}{unlisted}")
    if status.get("kernel_clashes"):
        lines.append("KERNELS NOT WRITTEN (rename, or promote under another label):")
        lines += [f"  {text}" for text in status["kernel_clashes"]]
    if status["quarantined"]:
        lines.append("quarantined (never made latest; the same artifact is not tried again):")
        for q in status["quarantined"]:
            lines.append(f"  {q['env']}/{q['build_id']} [{q['stage']}] {q['reason']}")
            lines.append(f"    -> {quarantine_hint(q['env'], q['build_id'], q['stage'])}")
    if status["retrying"]:
        lines.append("retrying after a fault of the node, not of the artifact (with backoff):")
        for r in status["retrying"]:
            lines.append(
                f"  {r['env']}/{r['build_id']} [{r['stage']}] attempt {r['attempts']} on "
                f"{r['node']}, next try {r['next_try']}: {r['reason']}"
            )
    if status["invalid"]:
        lines.append("invalid manifests (ignored):")
        for i in status["invalid"]:
            lines.append(f"  {i['env']}/{i['build_id']}: {i['reason']}")
    if status.get("not_builds"):
        lines.append("store entries that are not builds (ignored; remove or move them):")
        for i in status["not_builds"]:
            where = f"{i['env']}/{i['build_id']}" if i["env"] else i["build_id"]
            lines.append(f"  {where}: {i['reason']}")
    for node, probe in sorted(status.get("memory", {}).items()):
        lines.append(f"node {node}: kernel memory ceiling {probe['mechanism']}: {probe['detail']}")
    for node, p in status["nodes"].items():
        state = "ok" if p.get("ok") else f"{len(p.get('failures') or [])} failure(s)"
        lines.append(f"node {node}: last pass {p.get('time')} ({state})")
    return "\n".join(lines)

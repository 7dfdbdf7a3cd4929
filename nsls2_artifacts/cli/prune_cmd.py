"""`prune [--dry-run]`, `nodes list`, `nodes retire NODE`: retention from the command line.

Thin wrappers: the policy lives in `agent/retention.py`, heartbeats in `agent/heartbeat.py`.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import layout
from ..agent import heartbeat as hb
from ..agent.diskuse import DiskFreed, freed_by, walk
from ..agent.log import setup_logging
from ..agent.retention import run_pass
from ..records import RetentionDecision
from ..status import size_text
from ..store import open_store
from .common import ConfigOption, console, out, reported_errors, site

_STYLE = {
    "keep": "green",
    "untombstone": "green",
    "revive": "green",
    "wait": "yellow",
    "tombstone": "yellow",
    "delete": "red",
    "finish": "red",
    "error": "bold red",
}


def _show(*lines: Table | str) -> None:
    """Full width on a terminal; in a pipe, wide enough that reasons are not wrapped."""
    shown = out if out.is_terminal else Console(file=out.file, width=240)
    for line in lines:
        shown.print(line)


def decisions_table(decisions: list[RetentionDecision], *, dry_run: bool) -> Table:
    title = "retention plan (dry run: nothing changed)" if dry_run else "retention"
    table = Table(title=title, title_justify="left")
    for column in ("env", "build", "decision", "reason"):
        table.add_column(column, overflow="fold")
    for d in decisions:
        action = d.action if not dry_run or d.action in ("keep", "wait") else f"would {d.action}"
        style = _STYLE.get(d.action, "")
        table.add_row(
            d.env, d.build_id, f"[{style}]{action}[/]" if style else action, escape(d.reason)
        )
    return table


# the builds on their way out: deleted by this pass, or tombstoned (deleted after the grace)
_NOW = ("delete",)
_LATER = ("delete", "tombstone", "wait")


def disk_lines(root: Path, decisions: list[RetentionDecision]) -> list[str]:
    """What the deletions give back: builds share unchanged files by hardlinks, so the
    disk freed is what no build that stays still names (`agent/diskuse.py`; each build
    walked once)."""
    lines = []
    now = [d for d in decisions if d.action in _NOW]
    later = [d for d in decisions if d.action in _LATER]
    held = {d: walk(layout.build_dir(root, d.env, d.build_id)) for d in later}
    if now:
        freed = freed_by(held[d] for d in now)
        lines.append(f"disk: deleting the {_builds(now)} marked 'would delete' {_freed(freed)}")
    if len(later) > len(now):  # some are tombstoned, deleted after the grace period
        freed = freed_by(held.values())
        lines.append(f"disk: once the {_builds(later)} on their way out are gone: {_freed(freed)}")
    return lines


def _builds(decisions: list[RetentionDecision]) -> str:
    return "1 build" if len(decisions) == 1 else f"{len(decisions)} builds"


def _freed(freed: DiskFreed) -> str:
    text = f"frees {size_text(freed.freed)} of the {size_text(freed.bytes)} they hold"
    if freed.shared:
        text += f" ({freed.shared} of their {freed.files} files stay: hardlinked by builds kept)"
    if freed.unreadable:
        text += f"; {freed.unreadable} entries could not be read, counted as kept"
    return text


def prune(
    config: ConfigOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and explain; change nothing")
    ] = False,
) -> None:
    """Apply retention to the deploy root and explain every keep/delete decision."""
    cfg = site(config)
    log = setup_logging(logging.WARNING)  # warnings and errors, with their fields
    with reported_errors():
        # a host that runs no agent must not register as a node: its heartbeat would go
        # stale and block all deletion. Only refresh a heartbeat this node already writes.
        beating = layout.heartbeat_path(cfg.deploy_root, cfg.agent.node).exists()
        decisions = run_pass(
            cfg, open_store(cfg), log, apply=not dry_run, heartbeat=beating, enforce=True
        )
    if not decisions:
        console.print(f"no deployed builds under {layout.envs_dir(cfg.deploy_root)}")
    else:
        disk = disk_lines(cfg.deploy_root, decisions) if dry_run else []
        _show(decisions_table(decisions, dry_run=dry_run), *map(escape, disk))
    if any(d.action == "error" for d in decisions):
        sys.exit(1)


def nodes_list(config: ConfigOption = None) -> None:
    """Show every node's last heartbeat: age, alive or stale, scan complete, builds in use."""
    cfg = site(config)
    with reported_errors():
        reports = hb.read_reports(cfg.deploy_root)
        try:
            now_ns = hb.fs_now_ns(cfg.deploy_root, cfg.agent.node)
        except OSError:  # read-only deploy root: this host's clock is the best we have
            now_ns = time.time_ns()
    ttl = cfg.agent.node_ttl_seconds
    table = Table(title=f"nodes (stale after {ttl:g}s without a heartbeat)", title_justify="left")
    for column in ("node", "last report", "age", "status", "scan", "builds in use", "version"):
        table.add_column(column, overflow="fold")
    for report in reports:
        beat = report.heartbeat
        if report.from_the_future(now_ns):
            status = f"[red]stale: {report.stale_reason(now_ns)}[/]"
        elif report.stale(now_ns, ttl):
            status = "[red]stale[/]"
        elif beat is None:
            status = "[red]unreadable[/]"
        else:
            status = "[green]alive[/]"
        table.add_row(
            report.node,
            report.since,
            hb.span(report.age_seconds(now_ns)),
            status,
            "-" if beat is None else ("complete" if beat.complete else "[yellow]incomplete[/]"),
            "-" if beat is None else escape(", ".join(sorted(beat.in_use)) or "none"),
            "-" if beat is None else beat.version,
        )
    if not reports:
        console.print(f"no heartbeats under {layout.nodes_dir(cfg.deploy_root)}")
        return
    _show(table)


def nodes_retire(
    node: Annotated[str, typer.Argument(help="The node to retire (its heartbeat file name)")],
    config: ConfigOption = None,
) -> None:
    """Retire a node that is gone for good, so its stale heartbeat stops blocking deletion."""
    from ..errors import PruneError
    from ..rollout import retire_node

    cfg = site(config)
    with reported_errors():
        in_store = retire_node(open_store(cfg), node)
        try:
            target = hb.retire(cfg.deploy_root, node)
        except PruneError:
            if not in_store:
                raise
            target = None
    if target is not None:
        out.print(f"retired node {escape(node)}: heartbeat moved to {escape(str(target))}")
    if in_store:
        out.print(f"retired node {escape(node)}: its rollout report no longer counts")
    out.print("if its agent still runs, its next heartbeat registers it again")


def register(app: typer.Typer) -> None:
    """Add `prune` and the `nodes` group to the main app."""
    app.command("prune")(prune)
    nodes = typer.Typer(help="The agents that report heartbeats.", no_args_is_help=True)
    nodes.command("list")(nodes_list)
    nodes.command("retire")(nodes_retire)
    app.add_typer(nodes, name="nodes")

"""`store list|show|verify|prune`: inspect and maintain the artifact store.

Thin wrappers over the store package (reading; `storeprune` for retention).
`--config` is accepted before or after the subcommand (`store --config X list`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import StoreError
from ..records import BuildManifest
from ..store import Store, open_store
from .common import ConfigOption, console, out, print_table, reported_errors, site

store_app = typer.Typer(help="Inspect and maintain the artifact store.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout")]


def register(app: typer.Typer) -> None:
    """Add the `store` command group to the main app."""
    app.add_typer(store_app, name="store")


@store_app.callback()
def _group(ctx: typer.Context, config: ConfigOption = None) -> None:
    ctx.obj = config


def _store(ctx: typer.Context, config: Path | None) -> tuple[Any, Store]:
    cfg = site(config or ctx.obj)
    return cfg, open_store(cfg)


@store_app.command("list")
def list_builds(
    ctx: typer.Context,
    env: Annotated[str | None, typer.Argument(help="Only this environment")] = None,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Committed builds, oldest first, with size and LTS labels."""
    _cfg, store = _store(ctx, config)
    rows = []
    with reported_errors():
        for name in [env] if env else store.envs():
            labels = _labels(store, name)
            for m in store.builds(name):
                rows.append(
                    {
                        "env": name,
                        "build_id": m.build_id,
                        "created": m.created,
                        "size": m.artifact.size,
                        "format": m.artifact.format,
                        "packages": len(m.packages),
                        "lts": labels.get(m.build_id, []),
                    }
                )
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    table = _table("env", "build", "created", "size", "packages", "LTS")
    for row in rows:
        table.add_row(
            row["env"],
            row["build_id"],
            row["created"][:19].replace("T", " "),
            f"{row['size'] / 1e6:.1f} MB",
            str(row["packages"]),
            ", ".join(row["lts"]),
        )
    print_table(table if rows else "no committed builds", highlight=False)


@store_app.command("show")
def show(
    ctx: typer.Context,
    env: Annotated[str, typer.Argument(help="Environment name")],
    build_id: Annotated[str, typer.Argument(help="Build id")],
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """One build: artifact, lock, builder, source, LTS labels and its packages."""
    _cfg, store = _store(ctx, config)
    with reported_errors():
        m = store.manifest(env, build_id)
    labels = _labels(store, env).get(build_id, [])
    if json_out:
        print(json.dumps({**m.to_dict(), "lts": labels}, indent=2))
        return
    out.print(f"[bold]{escape(env)} {escape(build_id)}[/]  {escape(m.display_name)}")
    lines = [
        ("created", m.created),
        ("platform", m.platform),
        (
            "artifact",
            f"{m.artifact.file}  {m.artifact.size / 1e6:.1f} MB  sha256 {m.artifact.sha256}",
        ),
        ("lock", f"{m.lock.file}  sha256 {m.lock.sha256}"),
        ("index", f"{m.index.file}  sha256 {m.index.sha256}" if m.index else "- (full deploys)"),
        ("LTS", ", ".join(labels) or "-"),
        ("smoke", ", ".join(m.smoke)),
        ("builder", json.dumps(m.builder, sort_keys=True)),
        ("source", json.dumps(m.source, sort_keys=True)),
    ]
    for key, value in lines:
        out.print(f"  {key:9s} {escape(str(value))}", highlight=False, soft_wrap=True)
    table = Table("package", "version", "build", "channel", box=None)
    for p in m.packages:
        table.add_row(p.name, p.version, p.build, p.channel)
    out.print(f"\n{len(m.packages)} packages:")
    print_table(table, highlight=False)


@store_app.command("verify")
def verify(
    ctx: typer.Context,
    config: ConfigOption = None,
    json_out: JsonOption = False,
) -> None:
    """Re-hash every committed artifact and lock; exit 1 on any mismatch."""
    _cfg, store = _store(ctx, config)
    with reported_errors():
        results = verify_store(store)
    bad = [r for r in results if not r["ok"]]
    if json_out:
        print(json.dumps({"ok": not bad, "builds": results}, indent=2))
    else:
        table = _table("env", "build", "result")
        for r in results:
            style = "green" if r["ok"] else "bold red"
            table.add_row(r["env"], r["build_id"], f"[{style}]{escape(r['detail'])}[/]")
        print_table(table if results else "store is empty", highlight=False)
        console.print(
            f"{len(results) - len(bad)} ok, {len(bad)} bad", highlight=False, soft_wrap=True
        )
    sys.exit(1 if bad else 0)


@store_app.command("prune")
def prune(
    ctx: typer.Context,
    config: ConfigOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print the decisions")] = False,
    json_out: JsonOption = False,
) -> None:
    """Delete old artifacts from the store (never LTS ones); print every decision and why."""
    from .. import storeprune

    cfg, store = _store(ctx, config)
    with reported_errors():
        decisions = storeprune.plan(cfg, store)
        failed = [] if dry_run else storeprune.apply(store, decisions)
        leftovers = storeprune.leftovers(store) if dry_run else storeprune.clean_leftovers(store)
    verb = "would remove" if dry_run else "removed"
    for env, name in leftovers:
        console.print(
            f"{env}: {verb} {name} (left by an interrupted publish)",
            highlight=False,
            soft_wrap=True,
        )
    if json_out:
        rows = [d.__dict__ for d in decisions + failed]
        print(json.dumps({"dry_run": dry_run, "decisions": rows}, indent=2))
    else:
        print_table(_prune_title(store, decisions, failed, dry_run), highlight=False)
        verb = "would delete" if dry_run else "deleted"
        table = _table("env", "build", "decision", "reason")
        for d in decisions + failed:
            action = d.action if d.action != "delete" else verb
            style = {"keep": "green", "delete": "red", "error": "bold red"}[d.action]
            table.add_row(d.env, d.build_id, f"[{style}]{action}[/]", escape(d.reason))
        print_table(table if decisions else "store is empty", highlight=False)
    sys.exit(1 if failed else 0)


def _prune_title(store: Store, decisions: list, failed: list, dry_run: bool) -> str:
    """The line above the decisions: what they are, of which store, how many go."""
    going = sum(d.action == "delete" for d in decisions)
    total = len(decisions) + len(failed)
    if dry_run:
        return (
            f"store prune --dry-run: what a prune of {store.location} would do (nothing was "
            f"changed): {going} of {total} builds to go, {total - going} kept"
        )
    gone = going - len(failed)
    return f"store prune of {store.location}: {gone} of {total} builds gone, {total - gone} kept"


def verify_store(store: Store) -> list[dict[str, Any]]:
    """Check size + sha256 of every committed build's artifact and lock, and every LTS label."""
    results = [
        {
            "env": s.env or "-",
            "build_id": s.build_id,
            "ok": False,
            "detail": f"not a build: {s.reason}",
        }
        for s in store.strays()
    ]
    for env in store.envs():
        committed = set()
        for m in store.builds(env):
            committed.add(m.build_id)
            results.append({"env": env, "build_id": m.build_id, **_check_build(store, m)})
        for bad in store.invalid_builds(env):
            results.append(
                {"env": env, "build_id": bad.build_id, "ok": False, "detail": bad.reason}
            )
        for record in store.lts(env):
            if record.build_id not in committed:
                results.append(
                    {
                        "env": env,
                        "build_id": f"lts/{record.label}",
                        "ok": False,
                        "detail": f"points at {record.build_id}, which is not a committed build",
                    }
                )
        for bad in store.invalid_lts(env):
            results.append(
                {"env": env, "build_id": bad.build_id, "ok": False, "detail": bad.reason}
            )
        if leftovers := store.uncommitted(env):
            console.print(
                f"{env}: {len(leftovers)} uncommitted leftover(s) of interrupted publishes "
                f"(removed by the next publish): {', '.join(leftovers)}",
                highlight=False,
            )
    return results


def _check_build(store: Store, m: BuildManifest) -> dict[str, Any]:
    try:
        store.verify_build(m)
    except StoreError as exc:
        return {"ok": False, "detail": str(exc)}
    return {"ok": True, "detail": f"ok ({m.artifact.size / 1e6:.1f} MB)"}


def _table(*columns: str) -> Table:
    """A borderless table whose identifiers (env, build) are never cut or wrapped."""
    table = Table(box=None)
    for name in columns:
        keep_whole = name not in ("reason", "result", "LTS")
        table.add_column(name, no_wrap=keep_whole, min_width=27 if name == "build" else None)
    return table


def _labels(store: Store, env: str) -> dict[str, list[str]]:
    labels: dict[str, list[str]] = {}
    for record in store.lts(env):
        labels.setdefault(record.build_id, []).append(record.label)
    return labels

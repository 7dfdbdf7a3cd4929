"""`agent`, `status`, `rollback` and the hidden `demo-kernel`: thin wrappers over the agent."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import ConfigOption, out, reported_errors, site


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("agent")(agent)
    app.command("status")(status)
    app.command("rollback")(rollback)
    app.command("retry")(retry)
    app.command("demo-kernel", hidden=True)(demo_kernel)


def agent(
    config: ConfigOption = None,
    once: Annotated[bool, typer.Option("--once", help="Reconcile once and exit")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (as if every deploy succeeds)")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="With --dry-run: the plan as JSON")
    ] = False,
    events: Annotated[
        bool, typer.Option(help="Use filesystem events as a reconcile-now hint", hidden=True)
    ] = True,
) -> None:
    """The sync daemon: deploy committed builds, write kernelspecs, flip latest."""
    from ..agent.log import setup_logging
    from ..agent.reconcile import run_pass
    from ..agent.watch import install_stop_signals, run_daemon
    from ..store import open_store

    cfg = site(config)
    log = setup_logging()
    store = open_store(cfg)
    _check_scan_privileges(log)
    with reported_errors():
        if dry_run:
            plan = run_pass(cfg, store, log, dry_run=True).plan
            out.print(
                json.dumps(plan.to_dict(), indent=2) if json_out else plan.describe(),
                highlight=False,
                markup=False,
                soft_wrap=True,  # one line per step, whatever the terminal width
            )
            return
        if once:
            result = run_pass(cfg, store, log)
            sys.exit(0 if result.ok else 1)
        stop = threading.Event()
        install_stop_signals(stop, log)
        run_daemon(cfg, store, log, stop, events=events)


def _check_scan_privileges(log: Any) -> None:
    """Keep the scan's capabilities from the agent's children; say at once when the scan
    will not be able to read other users' processes (then nothing is ever deleted)."""
    import logging

    from ..agent.log import event
    from ..procscan import SCAN_PRIVILEGE_HINT, keep_capabilities_to_self, missing_capabilities

    keep_capabilities_to_self()
    if missing := missing_capabilities():
        event(
            log,
            "scan-unprivileged",
            logging.WARNING,
            missing=",".join(missing),
            hint=f"other users' processes will read as unknown and block deletion; "
            f"{SCAN_PRIVILEGE_HINT}",
        )


def status(
    config: ConfigOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    disk: Annotated[
        bool,
        typer.Option(
            "--disk",
            help="Also what each ready build holds alone now (walks every build: one lstat "
            "per file)",
        ),
    ] = False,
    check_kernels: Annotated[
        bool,
        typer.Option(
            "--check-kernels",
            help="Start every NSLS-II kernel under its memory ceiling and import its smoke "
            "modules; exit 1 if one fails",
        ),
    ] = False,
) -> None:
    """What is deployed: envs, builds, latest, LTS labels, quarantined builds, last passes."""
    from ..status import collect_status, render_text
    from ..store import open_store

    cfg = site(config)
    with reported_errors():
        data = collect_status(cfg, open_store(cfg), walk_disk=disk)
    checks = []
    if check_kernels:
        from ..kernelcheck import check_kernels as run_checks
        from ..kernelcheck import render

        checks = run_checks(cfg.deploy_root)
        data["kernel_checks"] = [c.to_dict() for c in checks]
    if json_out:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(render_text(data))  # plain: rich would re-wrap the columns
        if check_kernels:
            print("\n".join(render(checks)))
    if any(not c.ok for c in checks):
        raise typer.Exit(1)


def rollback(
    env: Annotated[str, typer.Argument(help="Environment name")],
    build_id: Annotated[
        str | None, typer.Argument(help="Ready build to point latest at (default: the previous)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Point ENV's latest at an older ready build and hold it there until the next publish."""
    from ..agent import latest
    from ..agent.kernels import kernel_name
    from ..agent.locks import apply_lock
    from ..agent.log import setup_logging
    from ..agent.reconcile import refresh_state
    from ..store import open_store

    cfg = site(config)
    with reported_errors():
        with apply_lock(cfg.deploy_root):  # not while an agent flips
            previous, target = latest.rollback(cfg.deploy_root, env, build_id)
        refresh_state(cfg, open_store(cfg), setup_logging())
    out.print(
        f"{env}/latest: {previous or '-'} -> {target} (held until a newer build is published; "
        f"restart {kernel_name(env)} kernels to use it)",
        highlight=False,
        markup=False,
    )


def retry(
    env: Annotated[str, typer.Argument(help="Environment name")],
    build_id: Annotated[str, typer.Argument(help="The quarantined build to deploy again")],
    config: ConfigOption = None,
) -> None:
    """Let the agents deploy a quarantined build again (after a transient failure).

    Exit 0 when the quarantine was lifted, and also when there is nothing to do (the
    build is ready, or not deployed yet): the message says which. Exit 1 when the store
    has no such build."""
    from ..agent.deploy import release_quarantine
    from ..agent.failures import read_retry

    cfg = site(config)
    with reported_errors():
        backoff = read_retry(cfg.deploy_root, env, build_id)
        record = release_quarantine(cfg.deploy_root, env, build_id)
    if record is None:
        state, code = _not_quarantined(cfg, env, build_id, backoff)
        out.print(f"{env}/{build_id}: {state}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(code)
    out.print(
        f"{env}/{build_id}: quarantine lifted (was: {record.stage} failed on {record.node} at "
        f"{record.time}: {record.reason}); the next agent pass deploys it again "
        f"(within agent.poll_seconds={cfg.agent.poll_seconds:g}, or now: `agent --once`)",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def _not_quarantined(cfg: Any, env: str, build_id: str, backoff: Any) -> tuple[str, int]:
    """What a build that `retry` found no quarantine for is doing, and the exit status."""
    from .. import layout
    from ..errors import ArtifactsError
    from ..store import open_store

    if layout.read_ready(cfg.deploy_root, env, build_id) is not None:
        latest = layout.current_latest(cfg.deploy_root, env) == build_id
        where = "it is latest" if latest else "not latest"
        return f"not quarantined: deployed and ready here ({where}); nothing to retry", 0
    if backoff is not None:
        return (
            f"not quarantined: its deploy failed for a reason of node {backoff.node} "
            f"({backoff.stage}: {backoff.reason}) and was waiting to retry; the wait is cut "
            "short, the next agent pass deploys it again",
            0,
        )
    try:
        open_store(cfg).manifest(env, build_id)
    except ArtifactsError as exc:
        return f"no such build in the store ({exc}); see `nsls2-artifacts store list {env}`", 1
    return (
        "not quarantined: committed in the store, not deployed here yet; the next agent "
        "pass deploys it (see `nsls2-artifacts status`); nothing to retry",
        0,
    )


def demo_kernel(
    config: ConfigOption = None,
    env: Annotated[str, typer.Option(help="Environment whose latest kernel to start")] = "demo",
    jupyter_path: Annotated[
        Path | None, typer.Option(help="Default: DEPLOY_ROOT/share/jupyter")
    ] = None,
) -> None:
    """Start ENV's latest kernel by kernelspec name, run a databroker cell, explain JupyterLab."""
    from ..demo import run_demo_kernel

    cfg = site(config)
    with reported_errors():
        run_demo_kernel(cfg, env, jupyter_path)

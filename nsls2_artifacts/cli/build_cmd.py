"""`publish ENV` and `promote ENV BUILD_ID --lts LABEL`: thin wrappers over publish.py.

Contract (the hook runs `publish ENV --json` as a subprocess): stdout carries only the
result — the build id line, or with `--json` exactly one JSON object
`{"env", "build_id", "status": "published"|"unchanged", "size", "seconds"}`. Progress and
the summary go to stderr; an error is a message on stderr and exit status 1.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from .common import ConfigOption, console, reported_errors, require_extra, site


class ArchiveFormat(StrEnum):
    zst = "zst"
    gz = "gz"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("publish")(publish)
    app.command("promote")(promote)


def publish(
    env: Annotated[str, typer.Argument(help="Environment: a directory under manifests/")],
    config: ConfigOption = None,
    lts: Annotated[
        str | None, typer.Option("--lts", help="Also mark the build as LTS release LABEL")
    ] = None,
    locked: Annotated[
        bool,
        typer.Option("--locked", help="Install exactly manifests/ENV/pixi.lock (LTS rebuilds)"),
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object with the result on stdout")
    ] = False,
    fmt: Annotated[
        ArchiveFormat, typer.Option("--format", help="Archive compression")
    ] = ArchiveFormat.zst,
) -> None:
    """Build ENV from manifests/ENV, pack it and commit it to the store; prints the build id."""
    require_extra("build", "rattler", "conda_pack")
    from ..publish import publish as run_publish

    cfg = site(config)
    with reported_errors(), RichReporter(console) as reporter:
        result = run_publish(
            cfg, env, lts=lts, locked=locked, fmt=f"tar.{fmt.value}", reporter=reporter
        )
    console.print(escape(result.summary()), highlight=False, soft_wrap=True)
    if json_out:
        print(json.dumps(result.to_json()), flush=True)
    else:
        print(result.build_id, flush=True)


def promote(
    env: Annotated[str, typer.Argument(help="Environment name")],
    build_id: Annotated[str, typer.Argument(help="A committed build of ENV")],
    lts: Annotated[str, typer.Option("--lts", help="The LTS release label, e.g. 2026-1")],
    config: ConfigOption = None,
    allow_failed: Annotated[
        bool,
        typer.Option(
            "--allow-failed",
            help="Promote even though nodes report the build failed (quarantined or "
            "failing an import check); refused without it",
        ),
    ] = False,
) -> None:
    """Mark an existing build as LTS release LABEL (no rebuild)."""
    require_extra("build", "rattler", "conda_pack")  # publish.py imports both
    from ..publish import promote as run_promote

    cfg = site(config)
    with reported_errors():
        record = run_promote(cfg, env, build_id, lts, allow_failed=allow_failed)
    console.print(f"{env}: LTS {record.label} -> {record.build_id}", highlight=False)
    print(record.build_id, flush=True)


class RichReporter:
    """publish.Reporter drawn with rich on stderr (live bars on a terminal, lines otherwise)."""

    _LABELS = {
        "solve": "solve",
        "download": "download",
        "install": "install",
        "pypi": "PyPI (uv)",
        "pack": "pack",
        "upload": "upload",
    }

    def __init__(self, stderr: Console) -> None:
        self.console = stderr
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=stderr,
            transient=not stderr.is_terminal,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, stage: str, total: int = 0) -> None:
        label = self._LABELS.get(stage, stage)
        if stage in self.tasks:
            self.progress.reset(self.tasks[stage], total=total or None)
        else:
            self.tasks[stage] = self.progress.add_task(label, total=total or None)

    def advance(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.start(stage, total)
        self.progress.update(self.tasks[stage], completed=done, total=total or None)

    def finish(self, stage: str, detail: str = "") -> None:
        task = self.tasks.get(stage)
        if task is not None:
            total = self.progress.tasks[task].total or 1
            self.progress.update(task, completed=total, total=total)
        if not self.console.is_terminal:
            self.console.print(f"{self._LABELS.get(stage, stage)}: done {detail}", highlight=False)

    def note(self, message: str) -> None:
        self.progress.console.print(escape(message), highlight=False, soft_wrap=True)

"""The `nsls2-artifacts` command line: one thin module per command group.

Each module here parses arguments, loads the site config and calls one stage;
the work itself lives in the stage modules (publish, store, agent, prune, hook).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import typer

from . import agent_cmd, build_cmd, dev_cmd, hook_cmd, notebook_cmd, prune_cmd, store_cmd
from .common import reported_errors

app = typer.Typer(
    name="nsls2-artifacts",
    help="Build, ship and deploy immutable Jupyter environments for NSLS-II.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

for module in (build_cmd, store_cmd, agent_cmd, prune_cmd, hook_cmd, dev_cmd, notebook_cmd):
    module.register(app)


def main() -> None:
    try:
        # a backstop: commands report their own errors (`reported_errors`), and one that
        # escapes them (raised while a command sets up) is still one line, not a traceback
        with reported_errors():
            app()
    except SystemExit as done:
        exit_process(done.code)
    exit_process(0)


def exit_process(code: int | str | None) -> None:
    """Leave without interpreter finalization. py-rattler's runtime threads can still call
    into Python while the interpreter finalizes and abort it (SIGABRT, "PyGILState_Release
    ... finalizing") after the work is done and printed, turning a good publish or
    dev-channel into exit -6. Everything a command writes is committed before it returns,
    so only the streams and log handlers need flushing."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to add
            stream.flush()
    os._exit(code or 0)

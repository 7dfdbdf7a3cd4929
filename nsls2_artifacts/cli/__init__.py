"""The `nsls2-artifacts` command line: one thin module per command group.

Each module here parses arguments, loads the site config and calls one stage;
the work itself lives in the stage modules (publish, store, agent, prune, hook).
"""

from __future__ import annotations

import typer

from . import agent_cmd, build_cmd, dev_cmd, hook_cmd, notebook_cmd, prune_cmd, store_cmd

app = typer.Typer(
    name="nsls2-artifacts",
    help="Build, ship and deploy immutable Jupyter environments for NSLS-II.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

for module in (build_cmd, store_cmd, agent_cmd, prune_cmd, hook_cmd, dev_cmd, notebook_cmd):
    module.register(app)


def main() -> None:
    app()

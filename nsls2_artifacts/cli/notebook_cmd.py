"""`notebook info|pin`: what a saved notebook ran on, and pointing it at an LTS kernel.

Thin: finds the NSLS-II kernels (the Jupyter path, as the user's Jupyter sees them; with
`--config` or `$NSLS2_ARTIFACTS_CONFIG`, that site's deploy root) and calls
`nsls2_artifacts.jupyter.notebook`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from .common import ConfigOption, console, printable, reported_errors, site

notebook_app = typer.Typer(help="What a notebook ran on; point it at an LTS kernel.")

NotebookArg = Annotated[Path, typer.Argument(help="The .ipynb file")]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(notebook_app, name="notebook")


def _catalogue(config: Path | None):  # -> Catalogue
    from ..jupyter.deployed import build_catalogue, kernel_dirs_in

    if config is None and not os.environ.get("NSLS2_ARTIFACTS_CONFIG"):
        from jupyter_client.kernelspec import KernelSpecManager

        found = build_catalogue(KernelSpecManager().find_kernel_specs())
        if found.kernels:
            return found
    return build_catalogue(kernel_dirs_in(site(config).deploy_root))


@notebook_app.command("info")
def info(
    path: NotebookArg,
    config: ConfigOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """What PATH ran on, whether that build is still deployed, which kernel gets it back."""
    from ..jupyter.notebook import describe, notebook_info

    with reported_errors():
        result = notebook_info(path, _catalogue(config))
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    for line in describe(result):
        typer.echo(printable(line))  # plain: paths and build ids stay whole for grep


@notebook_app.command("pin")
def pin(
    path: NotebookArg,
    label: Annotated[
        str | None, typer.Argument(help="LTS label (default: the kernel `info` recommends)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Point PATH's kernelspec at the LTS kernel LABEL of its env (or the recommended one)."""
    from ..jupyter.notebook import pin as pin_notebook

    with reported_errors():
        result = pin_notebook(path, _catalogue(config), label)
    kernel = result.kernel
    if not result.changed:
        typer.echo(printable(f"{path}: already uses {kernel.name} ({kernel.display_name})"))
        return
    typer.echo(printable(f"{path}: kernel is now {kernel.name} ({kernel.display_name})"))
    if result.reformatted:
        note = f"note: {path} was re-serialised in nbformat's layout"
        console.print(printable(note), highlight=False, markup=False)

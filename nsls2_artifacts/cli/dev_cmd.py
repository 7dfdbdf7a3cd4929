"""`dev-channel`: build the offline conda channel used by `just demo` and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import console, reported_errors, require_extra


def register(app: typer.Typer) -> None:
    app.command("dev-channel")(dev_channel)


def dev_channel(
    dest: Annotated[Path, typer.Argument(help="Channel directory to create")] = Path("var/channel"),
    requirement: Annotated[
        list[str] | None, typer.Option("--requirement", "-r", help="PyPI requirement (repeatable)")
    ] = None,
) -> None:
    """Build a conda channel from PyPI wheels (python from this interpreter); cached."""
    require_extra("build", "rattler")
    from ..devchannel import DEFAULT_REQUIREMENTS, build_channel

    with reported_errors(), console.status("building offline channel") as status:
        path = build_channel(
            dest,
            requirement or DEFAULT_REQUIREMENTS,
            progress=lambda message: status.update(message) or console.log(message),
        )
    typer.echo(str(path))

"""Shared CLI plumbing: the --config option, error reporting, the console."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..config import SiteConfig, load_config
from ..errors import ArtifactsError

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Site config YAML (default: $NSLS2_ARTIFACTS_CONFIG, then embedded)"
    ),
]

# C0/C1 controls and DEL (cursor moves, screen clears, title changes, hyperlinks) and the
# bidi overrides that reorder what a line seems to say; newline and tab stay.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with terminal control characters shown as escapes (ESC -> "\\x1b"): values
    from notebooks, kernelspecs and the store reach the user's terminal only this way."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


console = Console(stderr=True)
out = Console()


def print_table(table: object, **kwargs: object) -> None:
    """Print to stdout at the terminal's width; in a pipe (scripts, logs), wide enough that
    build ids and LTS labels are never cut to fit rich's default of 80 columns."""
    if out.is_terminal:
        out.print(table, **kwargs)
    else:
        Console(file=out.file, width=240).print(table, **kwargs)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn an ArtifactsError into a red one-line message and exit status 1."""
    try:
        yield
    except ArtifactsError as exc:
        # escape: messages quote TOML tables and match specs ("[workspace]", "pkg[...]");
        # soft_wrap: keep long paths and solver lines whole for logs and callers that grep
        message = escape(printable(str(exc)))
        console.print(
            f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True
        )
        sys.exit(1)


def require_extra(extra: str, *modules: str) -> None:
    """Stop with one line naming the pip extra when an engine this command drives is not
    installed (a user's Jupyter server has the CLI but no solver, packer or web server)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        console.print(
            "[bold red]error:[/] "
            + escape(
                f"this command needs {', '.join(missing)}, which come with the {extra!r} "
                f"extra: pip install 'nsls2-artifacts[{extra}]'"
            ),
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


def site(config: Path | None) -> SiteConfig:
    with reported_errors():
        return load_config(config)

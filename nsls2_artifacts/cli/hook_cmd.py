"""`nsls2-artifacts hook serve|token`: run the staff build hook, or make a staff token.

Thin: loads the site config and hands it to `hook.app.create_app` on uvicorn.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .common import ConfigOption, console, reported_errors, site

hook_app = typer.Typer(help="The staff build hook: web page, API, CI webhook, nightly builds.")


@hook_app.command("serve")
def serve(
    config: ConfigOption = None,
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT to listen on (default: hook.listen)")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the staff web page and API on hook.listen (127.0.0.1:8707 by default)."""
    import uvicorn

    from ..hook.app import create_app

    settings = site(config)
    with reported_errors():
        app = create_app(settings)
    address = listen or settings.hook.listen
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        console.print(f"[bold red]error:[/] --listen: expected HOST:PORT, got {address!r}")
        raise typer.Exit(2)
    console.print(f"hook: serving on http://{host}:{port}/ (state in {settings.hook_state_dir})")
    # proxy_headers: behind a TLS reverse proxy the scheme decides the cookies' Secure flag.
    uvicorn.run(app, host=host, port=int(port), log_level=log_level, proxy_headers=True)


@hook_app.command("token")
def token() -> None:
    """Print a new staff token and the sha256 line to add to hook.tokens_sha256."""
    from ..hook.auth import new_token, token_hash

    value = new_token()
    # plain print: rich would read "[...]" as markup and eat the hash
    print(f"token:  {value}")
    print(f"config: hook: {{tokens_sha256: [{token_hash(value)}]}}")


def register(app: typer.Typer) -> None:
    """Add the `hook` command group to the main app."""
    app.add_typer(hook_app, name="hook")

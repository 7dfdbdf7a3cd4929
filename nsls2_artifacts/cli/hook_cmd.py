"""`nsls2-artifacts hook serve|token|demo`: run the staff build hook, make a staff token,
or set up and serve a local demo hook in one step (`just hook-demo`).

Thin: loads the site config and hands it to `hook.app.create_app` on uvicorn.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import DEFAULT_LISTEN
from .common import ConfigOption, console, reported_errors, require_extra, site

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
    require_extra("hook", "starlette", "uvicorn", "rattler")
    settings = site(config)
    from ..hook.builduser import hook_tokens, require_root

    with reported_errors():
        require_root(settings)
        tokens, _ = hook_tokens(settings)
    if not tokens and not os.environ.get(settings.hook.webhook_secret_env):
        where = settings.source or "the embedded default config"
        console.print(
            f"[bold red]error:[/] nobody could use this hook: {where} has no "
            f"hook.tokens_sha256 (nor hook.tokens_file) and "
            f"${settings.hook.webhook_secret_env} is unset. Make a "
            "token with `nsls2-artifacts hook token --name YOU` and add its config line, "
            "or try `just hook-demo`.",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    _serve(settings, listen, log_level)


def _serve(settings: Any, listen: str | None, log_level: str) -> None:
    import logging

    import uvicorn

    from ..agent.log import setup_logging
    from ..hook.app import create_app
    from ..hook.builduser import ROOT_WARNING
    from ..hook.runner import child_env
    from ..hook.secrecy import keep_memory_private, scrub_environ

    # the hook's own lines (startup warnings, recovered builds) as key=value, like the agent's
    setup_logging(logging.INFO, name="nsls2_artifacts.hook")
    if os.geteuid() == 0 and settings.hook.build_user is None:
        console.print(f"[bold yellow]warning:[/] {ROOT_WARNING}", soft_wrap=True, highlight=False)
    # Builds may run as this user and must read neither the session key (made in memory by
    # create_app) nor the credentials a build's environment leaves out.
    keep_memory_private()
    scrub_environ(sorted(set(os.environ) - set(child_env(settings))))
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
def token(
    name: Annotated[
        str | None, typer.Option(help="Who gets it: shown in the build history instead of a hash")
    ] = None,
) -> None:
    """Print a new staff token and the line to add to hook.tokens_sha256."""
    from ..hook.auth import new_token, token_hash

    value = new_token()
    # plain print: rich would read "[...]" as markup and eat the hash
    print(f"token:  {value}")
    entry = (
        f"{{name: {_yaml_name(name)}, sha256: {token_hash(value)}}}" if name else token_hash(value)
    )
    print(f"config: hook: {{tokens_sha256: [{entry}]}}")
    print(f"or, in hook.tokens_file: - {entry}")


def _yaml_name(name: str) -> str:
    import yaml

    return yaml.safe_dump(name.strip(), default_flow_style=True).strip().removesuffix("...").strip()


@hook_app.command("demo")
def demo(
    directory: Annotated[
        Path, typer.Option(help="Where the demo site file and hook state go")
    ] = Path("./var/hook-demo"),
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on")] = DEFAULT_LISTEN,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Write a local site file with a fresh staff token (the embedded default's paths:
    ./manifests, ./var/store, ./var/deploy, the offline channel), print the URL and the
    token, and serve the staff page over the demo env."""
    from ..config import load_config
    from ..hook.demo import write_demo_site

    with reported_errors():
        path, value = write_demo_site(directory, listen)
        settings = load_config(path)
    print(f"site:   {path}")
    print(f"url:    http://{listen}/")
    print(f"token:  {value}   (sign in with it; it is new each time)")
    print("agents: run `just agent` in another terminal to see builds roll out", flush=True)
    _serve(settings, listen, log_level)


def register(app: typer.Typer) -> None:
    """Add the `hook` command group to the main app."""
    app.add_typer(hook_app, name="hook")

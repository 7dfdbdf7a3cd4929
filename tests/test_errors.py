"""Every error the project raises on purpose derives from `ArtifactsError`, so the CLI
prints it as one line (file and field) and exits 1 instead of printing a traceback."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
from pathlib import Path

import pytest
from support.cli import CLI, cli_env

import nsls2_artifacts
from nsls2_artifacts.cli.common import reported_errors
from nsls2_artifacts.errors import ArtifactsError, KernelNameError, LockBusy, RecordError
from nsls2_artifacts.layout import heartbeat_path
from nsls2_artifacts.names import kernel_name


def _project_modules() -> list[str]:
    found = []
    for info in pkgutil.walk_packages(nsls2_artifacts.__path__, "nsls2_artifacts."):
        if ".labextension" in info.name or info.name.endswith("__main__"):
            continue
        found.append(info.name)
    return found


def test_every_public_exception_class_derives_from_the_one_base() -> None:
    strays = []
    for name in _project_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if not (inspect.isclass(value) and issubclass(value, BaseException)):
                continue
            if value.__module__ != name or attr.startswith("_"):
                continue  # imported from elsewhere, or private control flow (procscan)
            if not issubclass(value, ArtifactsError):
                strays.append(f"{name}.{attr}")
    assert strays == []


@pytest.mark.parametrize(
    "raiser",
    [
        lambda: kernel_name("Bad-Env"),
        lambda: heartbeat_path("/deploy", "../etc"),
        lambda: (_ for _ in ()).throw(RecordError("x.json", "build_id", "missing")),
        lambda: (_ for _ in ()).throw(LockBusy("/shared/state/locks/apply.lock")),
    ],
    ids=["kernel-name", "node-name", "record", "lock-busy"],
)
def test_cli_reports_them_in_one_line_and_exit_1(raiser, capsys) -> None:
    with pytest.raises(SystemExit) as done, reported_errors():
        raiser()
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_the_old_value_error_catchers_still_catch_them() -> None:
    assert issubclass(RecordError, ValueError) and issubclass(KernelNameError, ValueError)


def test_a_store_that_cannot_be_reached_is_one_line_from_the_real_cli(tmp_path: Path) -> None:
    """StoreUnavailableError once escaped the CLI as a traceback: the real command prints
    one line naming the config key to fix, and exits 1."""
    config = tmp_path / "site.yaml"
    config.write_text(
        "store: s3://bucket/prefix\n"
        "store_options: {endpoint_url: 'http://127.0.0.1:9', attempts: 1, timeout_seconds: 1}\n"
    )
    env = cli_env({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})
    done = subprocess.run(
        [*CLI, "store", "list", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith("error: store_options.endpoint_url: cannot reach"), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_error_escaping_a_command_is_still_one_line() -> None:
    """`main` reports any ArtifactsError a command did not (one raised while it sets up)."""
    script = (
        "from nsls2_artifacts import cli\n"
        "from nsls2_artifacts.errors import RecordError\n"
        "@cli.app.command('boom')\n"
        "def boom():\n"
        "    raise RecordError('/x/ready.json', 'build_id', 'missing')\n"
        "cli.main()\n"
    )
    done = subprocess.run(
        [CLI[0], "-c", script, "boom"], capture_output=True, text=True, timeout=120, env=cli_env()
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == "error: /x/ready.json: field 'build_id': missing\n"

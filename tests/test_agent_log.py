"""Agent log lines: every one through `event` (key=value fields), and an unexpected error's
traceback in the line, from the formatter down to a real pass."""

from __future__ import annotations

import errno
import io
import logging
from pathlib import Path

import pytest
from support.agent import commit_fake, events, write_site

from nsls2_artifacts import layout
from nsls2_artifacts.agent import deploy, failures
from nsls2_artifacts.agent.log import event, parse_line, setup_logging
from nsls2_artifacts.agent.reconcile import run_pass
from nsls2_artifacts.store import FilesystemStore


def test_event_carries_the_traceback_of_an_unexpected_error() -> None:
    buf = io.StringIO()
    log = setup_logging(logging.INFO, buf)
    try:
        {}["missing"]
    except KeyError as exc:
        event(log, "pass-error", logging.ERROR, exc=exc, reason="KeyError")
    event(log, "pass", deployed=0)
    first, second = buf.getvalue().splitlines()
    fields = parse_line(first)
    assert fields["event"] == "pass-error" and fields["level"] == "error"
    assert "Traceback (most recent call last)" in fields["traceback"]
    assert '{}["missing"]' in fields["traceback"] and "KeyError: 'missing'" in fields["traceback"]
    assert "traceback" not in parse_line(second)


def test_a_bug_during_a_deploy_is_logged_with_its_traceback(tmp_path: Path, monkeypatch) -> None:
    """A programming error (not the artifact's fault) fails that deploy, logged as
    deploy-error with where it happened; the pass goes on and reports it."""
    _, cfg = write_site(tmp_path / "site")
    build = commit_fake(cfg, tag="one", hours=1)

    def broken(*args, **kwargs):  # a fault no real input can cause: a bug in our code
        raise RuntimeError("bug in the deploy step")

    monkeypatch.setattr(deploy, "deploy_build", broken)
    buf = io.StringIO()
    result = run_pass(cfg, FilesystemStore(cfg.store), setup_logging(logging.INFO, buf))
    assert not result.ok
    [error] = events(buf.getvalue(), "deploy-error")
    assert error["build"] == build.build_id
    assert "RuntimeError: bug in the deploy step" in error["traceback"]
    assert "in broken" in error["traceback"]
    assert events(buf.getvalue(), "pass")  # the pass finished anyway


def test_deploy_event_times_every_step_until_the_build_is_durable(tmp_path: Path) -> None:
    """The deploy line splits its seconds into steps, the last the flush that makes the
    files durable (a full deploy's bytes are written out there): they add up to the
    seconds, which ready.json records too (the time until the build could be used)."""
    _, cfg = write_site(tmp_path / "site")
    build = commit_fake(cfg, tag="one", hours=1)
    buf = io.StringIO()
    assert run_pass(cfg, FilesystemStore(cfg.store), setup_logging(logging.INFO, buf)).ok
    [line] = events(buf.getvalue(), "deploy")
    steps = [float(line[f"{step}_s"]) for step in deploy.STEPS[1:]]
    assert [f"{step}_s" for step in deploy.STEPS[1:]][-1] == "sync_s"
    assert abs(sum(steps) - float(line["seconds"])) < 0.01, line
    ready = layout.read_ready(cfg.deploy_root, "demo", build.build_id)
    assert ready is not None and abs(ready.seconds - float(line["seconds"])) < 0.001


def test_a_failed_flush_is_a_node_fault_of_the_sync_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that cannot flush (EIO: no real input causes it) fails the deploy at its
    sync step as this node's fault, retried later; nothing is marked ready."""
    _, cfg = write_site(tmp_path / "site")
    build = commit_fake(cfg, tag="one", hours=1)

    def failing(path: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(deploy, "_syncfs", failing)
    buf = io.StringIO()
    run_pass(cfg, FilesystemStore(cfg.store), setup_logging(logging.INFO, buf))
    [retry] = events(buf.getvalue(), "retry-later")
    assert retry["stage"] == "sync" and "Input/output error" in retry["reason"]
    assert layout.read_ready(cfg.deploy_root, "demo", build.build_id) is None
    record = failures.read_retry(cfg.deploy_root, "demo", build.build_id)
    assert record is not None and record.stage == "sync"

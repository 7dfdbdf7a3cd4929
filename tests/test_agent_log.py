"""Agent log lines: every one through `event` (key=value fields), and an unexpected error's
traceback in the line, from the formatter down to a real pass."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from support.agent import commit_fake, events, write_site

from nsls2_artifacts.agent import deploy
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

"""Waiting for a condition and ending the processes a test started: one copy of each.

`wait_for` polls a predicate until it returns something truthy (and returns it);
`kill9` is a crash (SIGKILL, no cleanup); `stop` asks first (SIGTERM) and kills only a
process that does not go. Every helper module and test uses these.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 60,
    what: str = "condition",
    *,
    interval: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> Any:
    """The first truthy value of `predicate()` within `timeout` seconds; AssertionError
    naming `what` (and `detail()`, e.g. a server's log tail) when there is none."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    extra = f"\n{detail()}" if detail else ""
    raise AssertionError(f"timed out waiting for {what}{extra}")


def kill9(proc: subprocess.Popen[Any], timeout: float = 30, *, group: bool = False) -> None:
    """SIGKILL and reap: what a crash or the OOM killer does (no chance to clean up).
    `group`: the whole process group (a process started with `start_new_session`)."""
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    proc.wait(timeout=timeout)
    if proc.stdout:
        proc.stdout.close()


def stop(proc: subprocess.Popen[Any], timeout: float = 30, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL (to the group, with `group`) if it is still there after
    `timeout`; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill9(proc, timeout, group=group)
            return
    if proc.stdout:
        proc.stdout.close()

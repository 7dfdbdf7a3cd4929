"""The agent daemon loop: reconcile on store changes (a hint) and every `poll_seconds`.

Called by `nsls2-artifacts agent`. The full reconcile pass is the ground truth: it
lists the store itself, so writes made by other nodes (which inotify never sees on
GPFS/NFS) are picked up at the next poll. watchdog's native observer on the store
only shortens the wait when it does see something; events are debounced so one
publish (several files) causes one pass. SIGTERM/SIGINT stop the loop between builds.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from ..config import SiteConfig
from ..store import Store
from .log import event
from .reconcile import PassResult, run_pass

DEBOUNCE_SECONDS = 0.5  # quiet time after the last event before a hinted pass starts
DEBOUNCE_MAX_SECONDS = 5.0  # ... but never wait longer than this once hinted


class _Hint:
    """Collects filesystem events into one "reconcile now" flag with a debounce."""

    def __init__(self) -> None:
        self.flag = threading.Event()
        self.last = 0.0

    def poke(self) -> None:
        self.last = time.monotonic()
        self.flag.set()

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """Wait up to `timeout` for a hint (True) or the poll interval (False)."""
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.flag.wait(min(remaining, 0.5)):
                break
        if stop.is_set():
            return False
        first = time.monotonic()
        while (
            time.monotonic() - self.last < DEBOUNCE_SECONDS
            and time.monotonic() - first < DEBOUNCE_MAX_SECONDS
            and not stop.is_set()
        ):
            time.sleep(DEBOUNCE_SECONDS / 5)
        self.flag.clear()
        return True


# watchdog's event types that change a file (not "opened", "closed_no_write", "attrib")
CHANGES = frozenset({"created", "modified", "moved", "deleted", "closed"})
RETRY_FIRST_SECONDS = 2.0  # first retry after the store was unreachable; doubles per pass


def _start_observer(store: Store, hint: _Hint, log: logging.Logger) -> Any:
    """A native (inotify) observer on the store's local directory, or None where it
    cannot run (no local directory, no inotify)."""
    path = store.watch_path()
    if path is None:
        return None
    try:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        class Handler(FileSystemEventHandler):
            def on_any_event(self, ev: Any) -> None:
                # only writes to the commit marker and LTS records matter: a pass reads
                # every manifest (opened/closed_no_write events) and writes this node's
                # report, and a hint from either would start the next pass, forever
                if ev.event_type not in CHANGES:
                    return
                path = str(getattr(ev, "dest_path", "") or ev.src_path)
                if store.is_change_hint(path):
                    hint.poke()

        observer = Observer()
        observer.schedule(Handler(), str(path), recursive=True)
        observer.daemon = True
        observer.start()
    except Exception as exc:  # no inotify, store missing, watch limit: polling still works
        event(log, "watch-unavailable", logging.WARNING, reason=f"{type(exc).__name__}: {exc}")
        return None
    event(log, "watching", path=str(path))
    return observer


def install_stop_signals(stop: threading.Event, log: logging.Logger) -> None:
    def handler(signum: int, _frame: Any) -> None:
        event(log, "stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_daemon(
    site: SiteConfig,
    store: Store,
    log: logging.Logger,
    stop: threading.Event,
    on_pass: Callable[[PassResult], None] | None = None,
    events: bool = True,
) -> None:
    """Reconcile until `stop` is set: at start, on a debounced hint, every poll_seconds.

    `events=False` polls only (what a node sees when the store is written by other nodes).
    """
    hint = _Hint()
    observer = _start_observer(store, hint, log) if events else None
    event(log, "agent-start", node=site.agent.node, poll_seconds=site.agent.poll_seconds)
    unreachable = 0  # passes in a row that could not read the store
    try:
        while not stop.is_set():
            wait = site.agent.poll_seconds
            try:
                result = run_pass(site, store, log, stop=stop)
            except Exception as exc:  # never let one bad pass kill the daemon
                reason = f"{type(exc).__name__}: {exc}"
                event(log, "pass-error", logging.ERROR, exc=exc, reason=reason)
            else:
                if on_pass is not None:
                    on_pass(result)
                unreachable = 0 if result.plan.store_ok else unreachable + 1
                if unreachable:  # retry sooner, backing off to the poll interval
                    wait = min(wait, RETRY_FIRST_SECONDS * 2 ** (unreachable - 1))
                    event(log, "store-retry", logging.WARNING, seconds=wait, attempt=unreachable)
            if events and observer is None and not stop.is_set():
                observer = _start_observer(store, hint, log)
            hinted = hint.wait(wait, stop)
            if hinted:
                event(log, "hint", detail="store changed")
    finally:
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)
        event(log, "agent-stop", node=site.agent.node)

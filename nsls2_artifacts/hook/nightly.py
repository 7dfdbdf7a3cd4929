"""The nightly schedule: `hook.nightly` ("HH:MM" or a 5-field cron line) → queued builds.

The app starts `run_nightly` as a background task; it sleeps until the next time the
schedule matches (the build host's local time, like cron) and then calls `enqueue_nightly`,
which queues a latest build of every env whose nsls2.yaml does not say `nightly: false`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from ..config import SiteConfig
from ..schedule import Schedule, parse_schedule
from .envs import list_envs, nightly_opt_in
from .queue import BuildQueue

log = logging.getLogger("nsls2_artifacts.hook")


def site_schedule(site: SiteConfig) -> Schedule | None:
    """The site's nightly schedule, None when `hook.nightly` is empty or null (the config
    checked it when it was loaded)."""
    return parse_schedule(site.hook.nightly) if site.hook.nightly else None


def enqueue_nightly(site: SiteConfig, queue: BuildQueue) -> list[int]:
    """Queue (or join) a build of every env that opts in; returns the request ids."""
    ids = []
    for env in list_envs(site):
        if nightly_opt_in(site, env):
            record, _joined = queue.request(env, source="nightly", requested_by="nightly")
            ids.append(record.id)
    return ids


def _fire(
    site: SiteConfig, schedule: Schedule, queue: BuildQueue, now: Callable[[], datetime]
) -> list[int]:
    """Queue tonight's builds and record when that was and when the next night is (one
    thread hop, so the page never shows tonight as "next" once the builds are queued)."""
    ids = enqueue_nightly(site, queue)
    fired = now()
    queue.set_meta("nightly_last", fired.isoformat(timespec="seconds"))
    queue.set_meta("nightly_next", schedule.next_after(fired).isoformat(timespec="minutes"))
    return ids


async def run_nightly(
    site: SiteConfig,
    schedule: Schedule,
    queue: BuildQueue,
    wake: Callable[[], None],
    now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Fire `enqueue_nightly` at every match of `schedule`, forever (cancel to stop).
    `now` and `sleep` are the clock (tests inject one that needs no real waiting)."""
    while True:
        due = schedule.next_after(now())
        await asyncio.to_thread(queue.set_meta, "nightly_next", due.isoformat(timespec="minutes"))
        # Sleep in short steps so a changed wall clock (suspend, NTP step) is noticed.
        while (remaining := (due - now()).total_seconds()) > 0:
            await sleep(min(remaining, 30))
        try:
            ids = await asyncio.to_thread(_fire, site, schedule, queue, now)
        except Exception:  # noqa: BLE001 - one bad night must not end the schedule
            log.exception("nightly schedule %r could not queue builds", schedule.text)
            continue
        log.info("nightly schedule %r queued build requests %s", schedule.text, ids)
        wake()

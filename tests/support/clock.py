"""An injected clock for code that waits for wall-clock times (the nightly schedule):
`now()` reads it, `sleep()` moves it forward at once, so a test never waits for real time."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.moment = start
        self.slept = 0.0

    def now(self) -> datetime:
        return self.moment

    async def sleep(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)
        self.slept += seconds
        await asyncio.sleep(0)  # still yield to the event loop, as a real sleep does

"""Threads for filesystem calls on slow storage, shared by the extractor's writers and the
deduplicated deploy's linkers.

A create on GPFS is a metadata round trip (~1 ms); on a local disk a file takes ~40 us,
less than handing it to a thread. Callers time their first calls (`timed`: a few at
once) and, when their median shows the storage slow (`SLOW_CALL`), hand the rest in
batches to one pool of `THREADS` threads, else make them in their own thread:
latency-bound work wants many calls in flight
(64: 6,000 links into 60 directories under +1 ms (latency_shim) took 0.20 s from 64
threads, 0.25-0.31 s from 32, 0.18-0.21 s from 128, at load 8.8 on 2 cores).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

THREADS = 64
# the median call over this is slow storage (GPFS, NFS, a local disk throttling writers)
SLOW_CALL = 300e-6
# calls in flight while they are timed: a probe of 32 round trips waits 8 of them, not 32
# (~30 ms less per probe under +1 ms), and 4 threads add too little waiting for the GIL
# (~10 us each) for a median to take a fast disk for a slow one
PROBE_STRANDS = 4

T = TypeVar("T")
R = TypeVar("R")


def slow(seconds: list[float]) -> bool:
    """Whether calls that took `seconds` show slow storage: their median over SLOW_CALL (a
    median: one stall, a journal commit, must not send a fast disk's calls to threads;
    slow storage makes most calls slow)."""
    return sorted(seconds)[len(seconds) // 2] > SLOW_CALL


class SharedPool:
    """One pool of THREADS threads for the life of the process, started on first need:
    a daemon deploys night after night, and starting THREADS threads for each step of each
    deploy cost ~0.3 s on a loaded 2-core node (each new thread waits for the GIL)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="slowfs")
            return self._pool


POOL = SharedPool()


class Probe:
    """Whether one kind of call is slow here, by the first `calls` of it (`slow`); `run`
    makes and times them a few at once (`timed`)."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.samples: list[float] = []
        self.slow = False

    @property
    def probing(self) -> bool:
        return len(self.samples) < self.calls

    def run(self, call: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """`call` on every item (`timed`), their times counted; the results in order."""
        results, seconds = timed(call, items)
        self.samples += seconds
        if not self.probing:
            self.slow = slow(self.samples)
        return results


def timed(call: Callable[[T], R], items: Sequence[T]) -> tuple[list[R], list[float]]:
    """`call` on every item, PROBE_STRANDS at a time on the pool: the results in the
    items' order, and the seconds each call took. Returns once every call has ended
    (nothing runs on into a directory the caller may remove), raising the first failure."""

    def strand(numbers: range) -> list[tuple[int, R, float]]:
        done = []
        for number in numbers:
            began = time.perf_counter()
            result = call(items[number])
            done.append((number, result, time.perf_counter() - began))
        return done

    pool = POOL.get()
    strands = [range(first, len(items), PROBE_STRANDS) for first in range(PROBE_STRANDS)]
    futures = [pool.submit(strand, numbers) for numbers in strands if numbers]
    wait(futures)
    found = sorted((f for future in futures for f in future.result()), key=lambda f: f[0])
    return [result for _, result, _ in found], [seconds for _, _, seconds in found]

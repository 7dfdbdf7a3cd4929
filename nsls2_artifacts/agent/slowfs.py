"""Threads for filesystem calls on slow storage, shared by the extractor's writers and the
deduplicated deploy's linkers.

A create on GPFS is a metadata round trip (~1 ms); on a local disk a file takes ~40 us,
less than handing it to a thread. Callers make their calls in their own thread until a
median of their first calls shows the storage slow (`SLOW_CALL`), then hand them in
batches to one pool of `THREADS` threads: latency-bound work wants many calls in flight
(64: 6,000 links into 60 directories under +1 ms (latency_shim) took 0.20 s from 64
threads, 0.25-0.31 s from 32, 0.18-0.21 s from 128, at load 8.8 on 2 cores).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

THREADS = 64
# the median call over this is slow storage (GPFS, NFS, a local disk throttling writers)
SLOW_CALL = 300e-6


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

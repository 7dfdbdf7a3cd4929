"""Where a deduplicated deploy makes its metadata calls (issue #20): in the deploying
thread while they are fast, on the shared pool once they prove slow (GPFS-like latency),
and what a failure on the pool leaves.

The pool path cannot be reached on a local disk (its calls take microseconds), so these
tests lower the threshold in-process; the deploys themselves are real (agent code, real
archives and links), only the verdict "slow" is forced.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest
from support.agent import write_site
from support.dedup import commit_framed, inode, tree

from nsls2_artifacts import layout
from nsls2_artifacts.agent import dedup, deploy, slowfs
from nsls2_artifacts.store import open_store

V1 = {"alpha": "1.0", "beta": "1.0"}
V2 = {"alpha": "1.0", "beta": "2.0"}


def slow_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kind of call judged slow after one probe: the rest goes to the pool."""
    monkeypatch.setattr(dedup, "PROBE_CALLS", 1)
    monkeypatch.setattr(slowfs, "SLOW_CALL", -1.0)
    monkeypatch.setattr(dedup, "LINK_BATCH", 2)  # several chunks even for a small env


def test_slow_calls_go_to_the_pool_and_a_failure_waits_for_every_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slow_everything(monkeypatch)
    finished: list[int] = []
    threads: set[str] = set()
    release = threading.Event()

    failed: list[int] = []

    def work(chunk: list[int]) -> list[int]:
        threads.add(threading.current_thread().name)
        if 1 in chunk:
            failed.extend(chunk)
            raise OSError(5, "this chunk fails first")
        if chunk != [0]:  # the probe (timed first, alone) does not wait
            release.wait(10)  # the others are still running when the failure is known
        finished.extend(chunk)
        return chunk

    timer = threading.Timer(0.2, release.set)
    timer.start()
    try:
        with pytest.raises(OSError, match="fails first"):
            dedup._run_all(work, list(range(11)), dedup._Latency())
    finally:
        timer.cancel()
    # every chunk after the probe had finished when the failure was raised
    assert sorted(finished + failed) == list(range(11)) and failed
    assert any(name.startswith("slowfs") for name in threads)


def test_slow_calls_keep_every_pool_thread_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 slow calls (a level of directories) go out in a chunk for each of the pool's
    threads (4 calls each for 64), not in 4 chunks of 64: each call is a round trip."""
    monkeypatch.setattr(dedup, "PROBE_CALLS", 1)
    monkeypatch.setattr(slowfs, "SLOW_CALL", -1.0)
    chunks: list[list[int]] = []

    def work(chunk: list[int]) -> list[int]:
        chunks.append(chunk)
        return chunk

    assert sorted(dedup._run_all(work, list(range(201)), dedup._Latency())) == list(range(201))
    pooled = chunks[1:]  # the first: the probe, in this thread
    assert max(map(len, pooled)) == -(-200 // slowfs.THREADS) < dedup.LINK_BATCH
    assert len(pooled) >= slowfs.THREADS * 3 // 4
    assert len(dedup._run_all(work, list(range(10_001)), dedup._Latency())) == 10_001
    assert max(map(len, chunks[len(pooled) + 2 :])) == dedup.LINK_BATCH


def test_fast_calls_stay_in_the_deploying_thread() -> None:
    """The probe's calls are timed a few at once on the pool; once they prove fast, the
    rest is made in the calling thread (handing a fast call to a thread costs more)."""
    threads: dict[int, str] = {}

    def work(chunk: list[int]) -> list[int]:
        for item in chunk:
            threads[item] = threading.current_thread().name
        return chunk

    latency = dedup._Latency()
    assert dedup._run_all(work, list(range(200)), latency) == list(range(200))
    assert not latency.slow and len(latency.samples) == dedup.PROBE_CALLS
    probed = {threads[item] for item in range(dedup.PROBE_CALLS)}
    assert all(name.startswith("slowfs") for name in probed), probed
    rest = {threads[item] for item in range(dedup.PROBE_CALLS, 200)}
    assert rest == {threading.current_thread().name}


def test_a_probe_times_its_calls_a_few_at_once_and_waits_for_all() -> None:
    """`slowfs.timed`: every call's result in order and its own seconds, never more than
    PROBE_STRANDS calls at once, and a failure raised only once every call has ended."""
    lock = threading.Lock()
    running = [0, 0]  # now, most

    def call(item: int) -> int:
        with lock:
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.01 if item % 2 else 0.001)
        with lock:
            running[0] -= 1
        return item * 10

    results, seconds = slowfs.timed(call, list(range(20)))
    assert results == [item * 10 for item in range(20)]
    assert running[1] == slowfs.PROBE_STRANDS
    assert all(s >= 0.01 for s in seconds[1::2]) and all(s < 0.01 for s in seconds[0::2])
    ended: list[int] = []

    def failing(item: int) -> None:
        time.sleep(0.02)
        ended.append(item)
        if item == 0:
            raise OSError(5, "the first call fails")

    with pytest.raises(OSError, match="first call fails"):
        slowfs.timed(failing, list(range(8)))
    # the other strands ran to their end; the failed one stopped (4 came after 0 in it)
    assert sorted(ended) == [0, 1, 2, 3, 5, 6, 7]


def test_linked_deploy_on_slow_storage_links_through_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same linked build as on a fast disk: links, read-only, the earlier build
    untouched, when every lstat, mkdir and link is made by the pool's threads."""
    _config, site = write_site(tmp_path / "site")
    store = open_store(site)
    log = logging.getLogger("test-dedup-calls")
    first_manifest = commit_framed(site, V1, 1)
    assert deploy.deploy_build(site, store, first_manifest, log).result == "deployed"
    first = layout.build_dir(site.deploy_root, "demo", first_manifest.build_id)
    before = tree(first)

    slow_everything(monkeypatch)
    used: set[str] = set()
    link = os.link

    def spy(*args: object, **kwargs: object) -> None:
        used.add(threading.current_thread().name)
        link(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dedup.os, "link", spy)
    second_manifest = commit_framed(site, V2, 2)
    assert deploy.deploy_build(site, store, second_manifest, log).result == "deployed"
    second = layout.build_dir(site.deploy_root, "demo", second_manifest.build_id)
    record = dedup.read_record(second)
    assert record is not None and record.linked_files == 6 and record.skipped_frames == 2
    assert any(name.startswith("slowfs") for name in used), used
    for name in ("lib/site/alpha/data.bin", "lib/site/common.py"):
        assert inode(second / name) == inode(first / name)
        assert not os.stat(second / name).st_mode & 0o222
    assert (second / "lib/site/alpha/sub").is_dir()
    assert tree(first) == before

"""An expired LTS build on its way out keeps no kernel: reconcile does not write back
the kernelspec that retention removed when it tombstoned the build."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from support.agent import agent_pass, write_site
from support.store import commit_to

from nsls2_artifacts.agent import kernels
from nsls2_artifacts.layout import tombstones
from nsls2_artifacts.records import LtsRecord, isoformat, utcnow
from nsls2_artifacts.store import open_store


def _kernel_names(site) -> set[str]:
    return set(kernels.installed(site.deploy_root))


def test_tombstoned_lts_build_loses_its_kernel_for_good(backend, tmp_path: Path) -> None:
    # fake builds are a day old: past a half-day grace, while a fresh tombstone is not
    _, site = write_site(
        tmp_path / "site",
        retention={"lts_years": 1, "keep_latest": 1, "grace_days": 0.5},
        **backend,
    )
    store = open_store(site)
    old = commit_to(store, tmp_path / "scratch", "old")
    new = commit_to(store, tmp_path / "scratch", "new", hours=1)
    promoted = isoformat(utcnow() - timedelta(days=800))  # older than lts_years
    store.set_lts(LtsRecord("demo", "2024-1", old.build_id, promoted))

    agent_pass(site)  # deploys both, flips latest to `new`, tombstones the expired LTS build
    assert old.build_id in tombstones(site.deploy_root, "demo")
    lts_kernel = kernels.kernel_name("demo", "2024-1")
    assert lts_kernel not in _kernel_names(site)
    assert kernels.kernel_name("demo") in _kernel_names(site)
    # retired for good: recorded for the server and lab extensions
    retired = kernels.read_retired(site.deploy_root)[lts_kernel]
    assert (retired["env"], retired["label"], retired["build_id"]) == (
        "demo",
        "2024-1",
        old.build_id,
    )
    assert retired["display_name"].startswith("NSLS-II test 2024-1 (")

    agent_pass(site)  # the next pass must not bring the kernel back while the build waits
    assert old.build_id in tombstones(site.deploy_root, "demo")
    assert lts_kernel not in _kernel_names(site)
    assert new.build_id not in tombstones(site.deploy_root, "demo")

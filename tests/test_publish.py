"""`publish` end to end against the offline conda channel, and its faults.

Every publish here is the real CLI in a subprocess: rattler solves and installs from the
offline channel, conda-pack's Packer drives our archive writer, the store commits. Kills
are real SIGKILLs at named points (NSLS2_TEST_PAUSE_AT makes the publish wait there).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import rattler
from support.build import (
    BUILD_CACHE,
    LineWatcher,
    all_files,
    committed_manifests,
    conda_unpack,
    env_python,
    extract,
    publish,
    start_publish,
)
from support.cli import run_cli
from support.manifests import edit_pixi_toml
from support.processes import kill9, wait_for

from nsls2_artifacts.contentindex import ContentIndex
from nsls2_artifacts.records import BuildManifest, is_build_id
from nsls2_artifacts.store import open_store, sha256_file

pytestmark = pytest.mark.slow

DESIGN_FIELDS = {
    "schema", "name", "build_id", "created", "platform", "display_name", "smoke",
    "artifact", "lock", "packages", "builder", "source",
}  # fmt: skip


@pytest.fixture
def build_cache() -> Path:
    return BUILD_CACHE


def only_build(store: Path) -> tuple[Path, dict]:
    manifests = committed_manifests(store)
    assert len(manifests) == 1, manifests
    return manifests[0].parent, json.loads(manifests[0].read_text())


def test_publish_demo_end_to_end(make_site, build_cache: Path, tmp_path: Path) -> None:
    config, site = make_site()
    result = publish(config, build_cache, "demo")
    build_id = result.stdout.strip()
    assert is_build_id(build_id), result.stdout
    assert result.stdout == f"{build_id}\n"  # stdout is the build id line, nothing else
    assert "published" in result.stderr

    build, data = only_build(site.store)
    assert build.name == build_id
    assert set(data) >= DESIGN_FIELDS
    BuildManifest.from_dict(data)  # every field present with the right type
    assert set(data["artifact"]) == {"file", "sha256", "size", "format"}
    assert data["artifact"] == {
        "file": "env.tar.zst",
        "format": "tar.zst",
        "sha256": sha256_file(build / "env.tar.zst")[0],
        "size": (build / "env.tar.zst").stat().st_size,
    }
    assert data["lock"] == {"file": "pixi.lock", "sha256": sha256_file(build / "pixi.lock")[0]}
    assert build_id.endswith(data["lock"]["sha256"][:8])
    assert data["display_name"] == "NSLS-II demo" and data["smoke"] == ["ipykernel", "databroker"]
    assert data["platform"] == "linux-64"
    assert data["builder"]["host"] and "py-rattler" in data["builder"]["versions"]
    assert len(data["source"]["manifest_sha256"]) == 64 and "git_commit" in data["source"]
    assert all(set(p) == {"name", "version", "build", "channel"} for p in data["packages"])
    assert {p["channel"] for p in data["packages"]} == {"conda-forge"}
    assert sorted(f.name for f in build.iterdir()) == [
        "env.tar.zst",
        "index.json.zst",
        "manifest.json",
        "pixi.lock",
    ]
    index_bytes = (build / "index.json.zst").read_bytes()
    assert data["index"] == {
        "file": "index.json.zst",
        "sha256": hashlib.sha256(index_bytes).hexdigest(),
        "size": len(index_bytes),
    }
    assert ContentIndex.from_bytes(index_bytes).archive_sha256 == data["artifact"]["sha256"]

    # The tarball unpacks with tarfile at a new path and works after conda-unpack there.
    prefix = tmp_path / "somewhere" / "else" / "demo-env"
    extract(build / "env.tar.zst", prefix)
    unpack = conda_unpack(prefix)
    assert unpack.returncode == 0, unpack.stderr
    check = env_python(prefix, "import databroker, ipykernel, sys; print(sys.prefix)")
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == str(prefix)

    # The artifact's lock loads with rattler and lists exactly the installed packages.
    lock = rattler.LockFile.from_path(build / "pixi.lock")
    env = lock.default_environment()
    platform = next(p for p in env.platforms() if p.name == "linux-64")
    locked = {
        (r.name.normalized, str(r.version), str(r.build))
        for r in env.conda_repodata_records_for_platform(platform)
    }
    installed = set()
    for meta in (prefix / "conda-meta").glob("*.json"):
        record = json.loads(meta.read_text())
        installed.add((record["name"], record["version"], record["build"]))
    assert locked == installed
    assert {(p["name"], p["version"], p["build"]) for p in data["packages"]} == installed
    assert {"python", "ipykernel", "databroker"} <= {name for name, _, _ in installed}


def test_republish_is_unchanged_json_and_lts(make_site, build_cache: Path) -> None:
    config, site = make_site()
    first = json.loads(publish(config, build_cache, "demo", "--json").stdout)
    build, data = only_build(site.store)
    assert first == {
        "env": "demo",
        "build_id": build.name,
        "status": "published",
        "size": data["artifact"]["size"],
        "seconds": first["seconds"],
    }

    again = publish(config, build_cache, "demo", "--json", "--lts", "2026-1")
    lines = again.stdout.strip().splitlines()
    assert len(lines) == 1, again.stdout  # exactly one JSON object on stdout
    assert json.loads(lines[0])["status"] == "unchanged"
    assert json.loads(lines[0])["build_id"] == build.name
    assert "unchanged" in again.stderr and "nothing published" in again.stderr
    assert len(committed_manifests(site.store)) == 1
    lts = json.loads((site.store / "demo" / "lts" / "2026-1.json").read_text())
    assert lts["build_id"] == build.name

    # promote: an existing build gets a label without a rebuild; a missing one is refused
    promoted = run_cli(config, "promote", "demo", build.name, "--lts", "2026-2")
    assert promoted.stdout.strip() == build.name
    assert json.loads((site.store / "demo" / "lts" / "2026-2.json").read_text())["build_id"] == (
        build.name
    )
    missing = run_cli(
        config, "promote", "demo", "2026.01.01T000000Z-deadbeef", "--lts", "x", check=False
    )
    assert missing.returncode == 1
    assert "2026.01.01T000000Z-deadbeef" in missing.stderr
    assert not (site.store / "demo" / "lts" / "x.json").exists()
    shown = run_cli(config, "store", "show", "demo", build.name)
    assert "2026-1" in shown.stdout and "databroker" in shown.stdout


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_one_package_nightly_reuses_the_other_frames(
    make_site, make_s3_site, build_cache: Path, backend: str
) -> None:
    """A nightly that changes one package: every other file is byte-identical in the
    store's two indexes, and the second publish copies their frames instead of packing."""
    config, site = (make_site if backend == "filesystem" else make_s3_site)()
    edit_pixi_toml(config, 'databroker = "*"', 'databroker = "*"\nsix = "==1.16.0"')
    first = publish(config, build_cache, "demo")
    assert "frames reused" not in first.stderr  # nothing to reuse yet
    edit_pixi_toml(config, 'six = "==1.16.0"', 'six = "==1.17.0"')
    second = publish(config, build_cache, "demo")
    assert "frames reused" in second.stderr, second.stderr
    store = open_store(site)
    old, new = store.builds("demo")
    old_index, new_index = store.read_index(old), store.read_index(new)
    assert old_index is not None and new_index is not None
    before = old_index.files()
    changed = {
        e.path
        for e in new_index.entries
        if e.type == "file" and e.path in before and before[e.path].sha256 != e.sha256
    }
    assert changed == {
        "lib/python3.11/site-packages/six.py",
        "lib/python3.11/site-packages/__pycache__/six.cpython-311.pyc",
    }
    assert run_cli(config, "store", "verify").returncode == 0


def test_a_damaged_previous_build_means_a_full_pack(make_site, build_cache: Path) -> None:
    """The previous build's archive changed behind the store's back: the next publish
    reuses none of it (never a byte that fails its manifest) and packs in full."""
    config, site = make_site()
    edit_pixi_toml(config, 'databroker = "*"', 'databroker = "*"\nsix = "==1.16.0"')
    publish(config, build_cache, "demo")
    build, data = only_build(site.store)
    archive = build / "env.tar.zst"
    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # same size, one byte off: only the sha256 tells
    archive.write_bytes(bytes(damaged))
    edit_pixi_toml(config, 'six = "==1.16.0"', 'six = "==1.17.0"')
    second = publish(config, build_cache, "demo")
    assert "cannot be reused" in second.stderr and "frames reused" not in second.stderr
    store = open_store(site)
    newest = store.builds("demo")[-1]
    store.verify_build(newest)
    assert newest.build_id != data["build_id"]


def test_gzip_format(make_site, build_cache: Path, tmp_path: Path) -> None:
    config, site = make_site()
    publish(config, build_cache, "demo", "--format", "gz")
    build, data = only_build(site.store)
    assert data["artifact"]["file"] == "env.tar.gz" and data["artifact"]["format"] == "tar.gz"
    prefix = tmp_path / "gz-env"
    extract(build / "env.tar.gz", prefix)
    assert conda_unpack(prefix).returncode == 0
    assert env_python(prefix, "import databroker").returncode == 0


def test_unsolvable_shows_solver_explanation_and_writes_nothing(make_site, build_cache) -> None:
    config, site = make_site()
    edit_pixi_toml(config, 'python = "3.11.*"', 'python = "2.7.*"')
    result = publish(config, build_cache, "demo", check=False)
    assert result.returncode == 1
    assert "cannot be solved" in result.stderr
    assert "python 2.7" in result.stderr  # the solver's own explanation
    assert "pixi.toml" in result.stderr
    assert result.stdout == ""
    assert all_files(site.store) == []


@pytest.mark.parametrize("mirror", ["file:///nonexistent/conda-forge", "http://127.0.0.1:1/cf"])
def test_unreachable_channel_names_channel_and_mirror_setting(
    make_site, build_cache: Path, mirror: str
) -> None:
    config, site = make_site(channel_mirrors={"conda-forge": mirror})
    result = publish(config, build_cache, "demo", check=False)
    assert result.returncode == 1
    assert "'conda-forge' is unreachable" in result.stderr
    assert mirror.rstrip("/") in result.stderr
    assert "channel_mirrors" in result.stderr
    assert all_files(site.store) == []


@pytest.mark.parametrize(
    ("target", "old", "new", "field"),
    [
        ("pixi.toml", 'platforms = ["linux-64"]', "platforms = 5", "workspace.platforms"),
        ("pixi.toml", 'ipykernel = "*"', 'ipykernel = "=>=6"', "dependencies.ipykernel"),
        ("nsls2.yaml", "smoke:", "smokes:", "smokes"),
    ],
)
def test_malformed_manifest_names_file_and_field_and_writes_nothing(
    make_site, build_cache: Path, target: str, old: str, new: str, field: str
) -> None:
    config, site = make_site()
    path = config.parent / "manifests" / "demo" / target
    path.write_text(path.read_text().replace(old, new))
    result = publish(config, build_cache, "demo", check=False)
    assert result.returncode == 1
    assert str(path) in result.stderr and field in result.stderr
    assert all_files(site.store) == []


def test_locked_installs_the_committed_lock_and_refuses_a_stale_one(
    make_site, build_cache: Path
) -> None:
    config, site = make_site("first")
    publish(config, build_cache, "demo")
    build, data = only_build(site.store)

    # An LTS rebuild elsewhere from the committed lock: same packages, same lock hash.
    config2, site2 = make_site("second")
    lock = config2.parent / "manifests" / "demo" / "pixi.lock"
    lock.write_bytes((build / "pixi.lock").read_bytes())
    publish(config2, build_cache, "demo", "--locked")
    _build2, data2 = only_build(site2.store)
    assert data2["lock"]["sha256"] == data["lock"]["sha256"]
    assert data2["packages"] == data["packages"]
    assert data2["source"]["locked"] is True

    # The manifest moves on but the lock does not: a clear error, nothing written.
    edit_pixi_toml(config2, 'databroker = "*"', 'databroker = "<2"\nsix = "*"')
    stale = publish(config2, build_cache, "demo", "--locked", check=False)
    assert stale.returncode == 1
    assert str(lock) in stale.stderr
    assert "does not match" in stale.stderr
    assert "databroker <2" in stale.stderr and "six is not in the lock" in stale.stderr
    assert len(committed_manifests(site2.store)) == 1

    lock.unlink()
    missing = publish(config2, build_cache, "demo", "--locked", check=False)
    assert missing.returncode == 1 and "committed pixi.lock" in missing.stderr


def scratch_dirs(cache: Path, site: Any) -> list[Path]:
    """The scratch prefix of demo publishes to this site's store (one name per store+env)."""
    tag = hashlib.sha256(str(site.store).encode()).hexdigest()[:8]
    return [p for p in (cache / "scratch").glob(f"demo-{tag}") if p.is_dir()]


@pytest.mark.parametrize("point", ["solve", "install", "pack", "commit"])
def test_sigkill_leaves_no_visible_build_and_is_cleaned_up(
    make_site, build_cache: Path, point: str
) -> None:
    config, site = make_site()
    proc = start_publish(config, build_cache, "demo", NSLS2_TEST_PAUSE_AT=point)
    watcher = LineWatcher(proc)
    try:
        watcher.wait_for(f"paused at {point}")
    finally:
        kill9(proc, 60)
    assert committed_manifests(site.store) == []
    staging = list((site.store / "demo").glob(".staging-*"))
    if point in ("pack", "commit"):
        assert staging, "the kill should have left a half-written build behind"
        assert (staging[0] / "env.tar.zst").stat().st_size > 0
    if point == "commit":  # the index is written (before the manifest) but not committed
        assert (staging[0] / "index.json.zst").stat().st_size > 0
    if point != "solve":  # the scratch prefix is made after the solve
        assert scratch_dirs(build_cache, site), "the killed publish's scratch prefix"
    # A kill inside commit_build, between its rename and manifest.json, leaves this:
    renamed = site.store / "demo" / "2026.01.01T000000Z-deadbeef"
    renamed.mkdir(parents=True)
    (renamed / "env.tar.zst").write_bytes(b"partial")
    assert run_cli(config, "store", "verify").returncode == 0
    assert run_cli(config, "store", "list").stdout.strip() == "no committed builds"

    result = publish(config, build_cache, "demo")
    assert "leftover of an interrupted publish" in result.stderr
    assert not renamed.exists()
    assert list((site.store / "demo").glob(".staging-*")) == []
    assert scratch_dirs(build_cache, site) == []
    only_build(site.store)
    assert run_cli(config, "store", "verify").returncode == 0


def test_concurrent_publishes_never_corrupt(make_site, build_cache: Path) -> None:
    config, site = make_site()
    # Deterministic: while one publish holds the lock, another refuses cleanly.
    holder = start_publish(config, build_cache, "demo", NSLS2_TEST_PAUSE_AT="commit")
    watcher = LineWatcher(holder)
    try:
        watcher.wait_for("paused at commit")
        second = publish(config, build_cache, "demo", "--json", check=False)
        assert second.returncode == 1
        assert "another publish of 'demo' is running" in second.stderr
        assert second.stdout == ""
    finally:
        kill9(holder, 60)

    # Free-running race: both finish, or one refuses; one good build either way.
    procs = [start_publish(config, build_cache, "demo", "--json") for _ in range(2)]
    outcomes = [(*p.communicate(timeout=900), p.returncode) for p in procs]
    statuses = []
    for stdout, stderr, code in outcomes:
        if code == 0:
            statuses.append(json.loads(stdout)["status"])
        else:
            assert code == 1 and "another publish" in stderr, stderr
            statuses.append("refused")
    assert statuses.count("published") == 1, outcomes
    only_build(site.store)
    assert run_cli(config, "store", "verify").returncode == 0


def test_the_scratch_prefix_is_deleted_after_the_lock_is_released(
    make_site, build_cache: Path
) -> None:
    """Deleting a large scratch prefix takes seconds (110k files: 9-20 s): it is renamed
    aside under the env's publish lock and deleted after the lock is released, by a
    detached `rm -rf`, so the next publish of the env need not wait for it, nor the hook
    for the result. Paused right after the lock is released: the build is committed, the
    lock is free, the prefix is set aside under this publish's pid; then it is deleted."""
    config, site = make_site()
    proc = start_publish(config, build_cache, "demo", NSLS2_TEST_PAUSE_AT="cleanup")
    watcher = LineWatcher(proc)
    try:
        watcher.wait_for("paused at cleanup")
        only_build(site.store)
        with open_store(site).publish_lock("demo"):  # free: raises if still held
            pass
        tag = hashlib.sha256(str(site.store).encode()).hexdigest()[:8]
        assert scratch_dirs(build_cache, site) == []
        aside = build_cache / "scratch" / f"demo-{tag}-{proc.pid}"
        assert (aside / "prefix" / "conda-meta").is_dir()
    finally:
        kill9(proc, 60)
    # killed before it started the rm: the next publish removes the leftover of a dead pid
    publish(config, build_cache, "demo")
    assert not aside.exists()
    # and a publish left to finish starts an rm that deletes its prefix by itself
    result = publish(config, build_cache, "demo", "--json")
    assert json.loads(result.stdout)["status"] in ("published", "unchanged")
    wait_for(lambda: not list((build_cache / "scratch").glob(f"demo-{tag}*")), 120)


def test_pypi_dependencies_go_through_uv_into_the_lock(
    make_site, build_cache: Path, tmp_path: Path
) -> None:
    config, site = make_site()
    toml = config.parent / "manifests" / "demo" / "pixi.toml"
    toml.write_text(toml.read_text() + '\n[pypi-dependencies]\niniconfig = ">=2"\n')
    publish(config, build_cache, "demo")
    build, data = only_build(site.store)
    assert ("iniconfig", "pypi") in {(p["name"], p["channel"]) for p in data["packages"]}
    env = rattler.LockFile.from_path(build / "pixi.lock").default_environment()
    platform = env.platforms()[0]
    assert [p.name for p in env.pypi_packages_for_platform(platform)] == ["iniconfig"]
    prefix = tmp_path / "pypi-env"
    extract(build / "env.tar.zst", prefix)
    assert conda_unpack(prefix).returncode == 0
    assert env_python(prefix, "import iniconfig, databroker").returncode == 0


def test_unwritable_store_is_a_clear_error(make_site, build_cache: Path) -> None:
    config, site = make_site()
    site.store.rmdir()
    site.store.write_text("not a directory\n")  # e.g. a mount that is not there
    result = publish(config, build_cache, "demo", check=False)
    assert result.returncode == 1
    assert f"cannot write to the store at {site.store / 'demo'}" in result.stderr
    assert "Traceback" not in result.stderr


def test_package_missing_from_the_mirror_fails_the_install_cleanly(
    make_site, offline_channel: Path, tmp_path: Path
) -> None:
    import shutil

    channel = tmp_path / "channel-copy"
    shutil.copytree(offline_channel, channel, symlinks=True)
    (broken,) = (channel / "linux-64").glob("databroker-*.conda")
    broken.unlink()  # still listed in repodata.json: solvable, not installable
    config, site = make_site(channel_mirrors={"conda-forge": str(channel)})
    result = publish(config, tmp_path / "fresh-cache", "demo", check=False)
    assert result.returncode == 1
    assert "installing demo" in result.stderr and "databroker" in result.stderr
    assert "Traceback" not in result.stderr
    assert committed_manifests(site.store) == []
    assert list((site.store / "demo").glob(".staging-*")) == []

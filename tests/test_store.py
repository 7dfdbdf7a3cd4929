"""`store list|show|verify|prune` on a store of small synthetic builds (real files, real CLI).

The builds are committed through `FilesystemStore.staging_dir`/`commit_build`, the same
path publish uses; only their archives are small stand-ins, which is all these commands
read (sizes and hashes).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from support.cli import run_cli
from support.store import fake_build

from nsls2_artifacts.records import (
    LtsRecord,
    isoformat,
    utcnow,
)
from nsls2_artifacts.store import FilesystemStore, Store, open_store


def label(store: Store, env: str, name: str, build_id: str) -> None:
    store.set_lts(LtsRecord(env, name, build_id, isoformat(utcnow())))


@pytest.fixture(params=["filesystem", "s3"])
def backend_site(request: pytest.FixtureRequest, make_site: Any) -> Any:
    """make_site with its store on each backend (the S3 one in a real SeaweedFS)."""
    if request.param == "filesystem":
        return make_site
    return request.getfixturevalue("make_s3_site")


def test_list_and_show(backend_site) -> None:
    config, site = backend_site()
    store = open_store(site)
    old = fake_build(store, "demo", 10, b"old")
    new = fake_build(store, "demo", 1, b"new")
    label(store, "demo", "2026-1", old)

    rows = json.loads(run_cli(config, "store", "list", "--json").stdout)
    assert [(r["build_id"], r["lts"]) for r in rows] == [(old, ["2026-1"]), (new, [])]
    text = run_cli(config, "store", "list", "demo").stdout
    assert old in text and new in text and "2026-1" in text
    assert run_cli(config, "store", "--config", str(config), "list").returncode == 0

    shown = json.loads(run_cli(config, "store", "show", "demo", old, "--json").stdout)
    assert shown["build_id"] == old and shown["lts"] == ["2026-1"]
    assert shown["packages"] == [
        {"name": "python", "version": "3.11.7", "build": "0", "channel": "conda-forge"}
    ]
    human = run_cli(config, "store", "show", "demo", old).stdout
    assert "python" in human and "2026-1" in human and "0.0 MB" in human
    missing = run_cli(config, "store", "show", "demo", "2020.01.01T000000Z-00000000", check=False)
    assert missing.returncode == 1 and "2020.01.01T000000Z-00000000" in missing.stderr


def test_list_in_a_pipe_shows_lts_labels_whole(make_site) -> None:
    config, site = make_site()
    store = open_store(site)
    payloads = (b"x" * 400_000 + b"1", b"x" * 400_000 + b"2")  # 40 MB stand-ins: a wide row
    builds = [fake_build(store, "demo", 3, payloads[0]), fake_build(store, "demo", 2, payloads[1])]
    label(store, "demo", "2026-1", builds[0])
    label(store, "demo", "2026-2", builds[0])
    text = run_cli(config, "store", "list", env={"COLUMNS": "80"}).stdout
    row = next(line for line in text.splitlines() if builds[0] in line)
    assert "2026-1, 2026-2" in row


def test_verify_is_green_then_finds_every_kind_of_damage(make_site) -> None:
    config, site = make_site()
    store = FilesystemStore(site.store)
    ids = [fake_build(store, "demo", age, f"build{age}".encode()) for age in (4, 3, 2, 1)]
    staging = store.staging_dir("demo", "2026.01.01T000000Z-abcdef12")  # a killed publish
    (staging / "env.tar.zst").write_bytes(b"half")
    ok = run_cli(config, "store", "verify")
    assert "4 ok, 0 bad" in ok.stderr and "interrupted publishes" in ok.stderr

    root = site.store / "demo"
    flipped = bytearray((root / ids[0] / "env.tar.zst").read_bytes())
    flipped[5] ^= 0xFF
    (root / ids[0] / "env.tar.zst").write_bytes(bytes(flipped))  # same size, other bytes
    with open(root / ids[1] / "env.tar.zst", "r+b") as handle:
        handle.truncate(10)
    os.unlink(root / ids[2] / "pixi.lock")
    (root / ids[3] / "manifest.json").write_text("{not json")
    label(store, "demo", "gone", ids[0])
    (root / "lts" / "gone.json").write_text(
        json.dumps({"build_id": "2020.01.01T000000Z-00000000", "promoted": "2020-01-01T00:00:00Z"})
    )

    bad = run_cli(config, "store", "verify", "--json", check=False)
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False
    by_id = {r["build_id"]: r for r in report["builds"]}
    assert "sha256 mismatch" in by_id[ids[0]]["detail"]
    assert "size 10" in by_id[ids[1]]["detail"]
    assert "pixi.lock" in by_id[ids[2]]["detail"]
    assert "invalid JSON" in by_id[ids[3]]["detail"]
    assert "not a committed build" in by_id["lts/gone"]["detail"]
    assert not any(r["ok"] for r in report["builds"])


def test_prune_keeps_lts_newest_young_and_deployed_latest(backend_site) -> None:
    config, site = backend_site(retention={"lts_years": 3, "keep_latest": 3, "grace_days": 7})
    store = open_store(site)
    ages = (100, 90, 80, 70, 60, 3, 1)
    other = {age: fake_build(store, "other", age, f"o{age}".encode()) for age in ages}
    label(store, "other", "2025-3", other[100])
    latest = site.deploy_root / "envs" / "other" / "latest"
    latest.parent.mkdir(parents=True)
    os.symlink(other[80], latest)
    # demo's nsls2.yaml keeps only the newest 2
    demo = {age: fake_build(store, "demo", age, f"d{age}".encode()) for age in (50, 40, 30)}

    dry = json.loads(run_cli(config, "store", "prune", "--dry-run", "--json").stdout)
    decisions = {(d["env"], d["build_id"]): d for d in dry["decisions"]}
    assert len(decisions) == len(ages) + 3
    to_delete = {k for k, d in decisions.items() if d["action"] == "delete"}
    assert to_delete == {("other", other[90]), ("other", other[70]), ("demo", demo[50])}
    assert "LTS 2025-3" in decisions[("other", other[100])]["reason"]
    assert "latest on the deploy root" in decisions[("other", other[80])]["reason"]
    assert "younger than 7 days" in decisions[("other", other[1])]["reason"]
    assert "newest 3" in decisions[("other", other[60])]["reason"]
    assert "newest 2 (nsls2.yaml policy)" in decisions[("demo", demo[40])]["reason"]
    assert len(store.builds("other")) == len(ages)  # dry run deleted nothing
    table = run_cli(config, "store", "prune", "--dry-run").stdout
    assert table.count("would delete") == 3 and "keep" in table
    title = " ".join(table.split("\n", 1)[0].split())
    assert title.startswith("store prune --dry-run: what a prune of "), table
    assert "(nothing was changed): 3 of 10 builds to go, 7 kept" in title

    done = run_cli(config, "store", "prune")
    assert done.stdout.count("deleted") == 3
    assert "3 of 10 builds gone, 7 kept" in done.stdout.splitlines()[0]
    store = open_store(site)  # a new reader: nothing cached from before the prune
    kept = {m.build_id for m in store.builds("other")} | {m.build_id for m in store.builds("demo")}
    assert kept == {other[a] for a in (100, 80, 60, 3, 1)} | {demo[40], demo[30]}
    for env in {env for env, _ in to_delete}:
        assert store.uncommitted(env) == []  # files gone with the manifest, nothing left over
    assert run_cli(config, "store", "verify").returncode == 0
    # the LTS build survives any number of prunes, whatever its age
    run_cli(config, "store", "prune")
    open_store(site).verify_build(store.manifest("other", other[100]))


def test_verify_and_status_name_entries_that_are_not_builds(make_site) -> None:
    """Whatever lands in the store that is not a build (a hand-made directory, a stray file,
    a note among the LTS records, a file named like a build) is named by `store verify`
    (exit 1) and by `status`, never skipped silently; a manifest that does not parse too."""
    config, site = make_site()
    store = FilesystemStore(site.store)
    good = fake_build(store, "demo", 2, b"good")
    broken = fake_build(store, "demo", 1, b"broken")
    root = site.store
    (root / "README.txt").write_text("copied here by hand\n")
    (root / "demo" / "backup-of-2025").mkdir()
    (root / "demo" / "2026.01.01T000000Z-0000abcd").write_text("a file, not a build\n")
    (root / "demo" / "lts").mkdir(exist_ok=True)
    (root / "demo" / "lts" / "notes.txt").write_text("promote 2026-1 next week\n")
    (root / "demo" / broken / "manifest.json").write_text('{"schema": 1, "name": "demo"')
    expected = {
        ("-", "README.txt"): "file at the top of the store",
        ("demo", "backup-of-2025"): "not a build id",
        ("demo", "2026.01.01T000000Z-0000abcd"): "not a directory",
        ("demo", "lts/notes.txt"): "not an LTS record",
        ("demo", broken): "invalid JSON",
    }

    result = run_cli(config, "store", "verify", "--json", check=False)
    assert result.returncode == 1
    rows = {(r["env"], r["build_id"]): r for r in json.loads(result.stdout)["builds"]}
    assert rows.pop(("demo", good))["ok"] is True
    assert set(rows) == set(expected)
    for key, text in expected.items():
        assert text in rows[key]["detail"] and rows[key]["ok"] is False, rows[key]

    status = run_cli(config, "status", "--json")
    data = json.loads(status.stdout)
    named = {(s["env"] or "-", s["build_id"]) for s in data["not_builds"]}
    assert named == set(expected) - {("demo", broken)}
    assert [i["build_id"] for i in data["invalid"]] == [broken]
    text = run_cli(config, "status").stdout
    assert "store entries that are not builds" in text
    for _env, name in expected:
        assert name in text, name

"""Deduplicated deploys (issue #20, agent side): real `agent --once` passes over archives
packed one zstd frame per package with a content index (tests/support/dedup.py).

What is proven: unchanged files of a nightly are hardlinks into the earlier build and their
frames are never decompressed; conda-unpack'ed files are per-build; every earlier build is
byte-for-byte unchanged after a new deploy; deleting any one build leaves the others
whole; kill -9 mid-deploy leaves nothing partial; links refused by the filesystem
(EPERM from an immutable file, another filesystem) fall back to copies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from support.agent import agent_once, events, start_agent, write_site
from support.cli import CLI, cli_env, run_cli
from support.dedup import PLACEHOLDER, commit_framed, inode, tree
from support.processes import kill9, wait_for
from support.retention import age

from nsls2_artifacts import layout
from nsls2_artifacts import status as status_module
from nsls2_artifacts.agent import dedup, retention
from nsls2_artifacts.agent.diskuse import disk_freed
from nsls2_artifacts.records import RetentionDecision

V1 = {"alpha": "1.0", "beta": "1.0"}
V2 = {"alpha": "1.0", "beta": "2.0"}  # the nightly: one package changed
V3 = {"alpha": "1.1", "beta": "2.0"}


def build_dir(site, build_id: str, env: str = "demo") -> Path:
    return layout.build_dir(site.deploy_root, env, build_id)


def deploy_in_turn(config: Path, site, *versions: dict[str, str]) -> list[Path]:
    """Publish and deploy each version in turn (each one deployed before the next)."""
    dirs = []
    for version in versions:
        hours = len(list(site.store.glob("*/*/manifest.json")))  # each newer than the last
        manifest = commit_framed(site, version, hours)
        agent_once(config)
        dirs.append(build_dir(site, manifest.build_id))
        assert layout.read_ready(site.deploy_root, "demo", manifest.build_id) is not None
    return dirs


def test_nightly_links_unchanged_files_and_skips_their_frames(tmp_path: Path) -> None:
    config, site = write_site(tmp_path / "site")
    (first,) = deploy_in_turn(config, site, V1)
    before = tree(first)
    first_record = dedup.read_record(first)
    assert first_record is not None and first_record.linked_files == 0  # nothing to link from

    (second,) = deploy_in_turn(config, site, V2)
    record = dedup.read_record(second)
    assert record is not None
    # python + alpha frames skipped; beta (changed) and conda-pack's frame decompressed
    assert (record.frames, record.skipped_frames) == (4, 2)
    for name in ("lib/site/alpha/data.bin", "lib/site/alpha/__init__.py", "lib/site/common.py"):
        assert inode(second / name) == inode(first / name), name
        assert not os.stat(second / name).st_mode & 0o222, f"{name} is writable"
    assert os.readlink(second / "bin/python3") == "python"  # from the index: a skipped frame
    assert (second / "lib/site/alpha/sub").is_dir()
    assert inode(second / "lib/site/beta/data.bin") != inode(first / "lib/site/beta/data.bin")
    # conda-unpack'ed files are the build's own, with its own prefix
    for build in (first, second):
        assert os.stat(build / "etc/prefix.txt").st_nlink == 1
        assert os.stat(build / "bin/conda-unpack").st_nlink == 1
        assert (build / "etc/prefix.txt").read_text() == f"prefix={build}\n"
    assert record.linked_files == 6  # common.py, alpha's 3 files, bin/python, beta's tool.sh
    assert record.added_bytes < record.bytes * 0.6
    # the earlier build, byte for byte
    assert tree(first) == before
    # imports work in the linked build
    out = subprocess.run(
        [
            str(second / "bin/python"),
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import alpha, beta, common; "
            "print(alpha.VERSION, beta.VERSION, common.COMMON)",
            str(second / "lib/site"),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert out.stdout.split() == ["1.0", "2.0", "1"]
    status = json.loads(run_cli(config, "status", "--json", check=False).stdout)
    builds = {b["build_id"]: b for b in status["envs"]["demo"]["builds"]}
    disk = builds[second.name]["disk"]
    assert disk["added_bytes"] == record.added_bytes and disk["linked_files"] == 6
    assert "index" in disk["how"]
    # what an operator reads: per build what its deploy wrote and what it shares
    text = run_cli(config, "status", check=False).stdout
    size = status_module.size_text
    mb, shared = size(record.added_bytes), f"{size(record.linked_bytes)} of {size(record.bytes)}"
    assert mb.endswith(" kB") and shared.count(" kB") == 2  # a small env: kB, not "0.0 MB"
    (line,) = [line for line in text.splitlines() if line.startswith(f"  {second.name}")]
    assert line.endswith(f"adds {mb} ({shared} hardlinked to earlier builds: 6 files)"), text
    (line,) = [line for line in text.splitlines() if line.startswith(f"  {first.name}")]
    assert line.endswith("(nothing linked)"), text
    assert status_module.DISK_LEGEND in text


def test_whole_frames_are_linked_by_key_and_an_older_record_by_its_index(
    tmp_path: Path,
) -> None:
    """A build's dedup.json names the frames it shares (keys of frames none of whose
    files was rewritten) and its artifact: the next deploy links those frames' files
    from the same paths without reading the donor's index copy. A record of an older
    agent (neither field) still lends files, by the hashes of its kept index; a record
    of another artifact than ready.json vouches for lends nothing and says why."""
    config, site = write_site(tmp_path / "site")
    (first,) = deploy_in_turn(config, site, V1)
    record = dedup.read_record(first)
    ready = layout.read_ready(site.deploy_root, "demo", first.name)
    assert record is not None and ready is not None
    assert record.archive_sha256 == ready.artifact_sha256
    index = dedup.INDEXES.get(first)
    assert index is not None
    # python, alpha and beta: not conda-pack's frame, which holds etc/prefix.txt (rewritten)
    keys = {f.package: f.key for f in index.frames}
    assert set(record.shared_frames) == {keys["python"], keys["alpha"], keys["beta"]}

    os.unlink(first / dedup.INDEX_COPY)  # by key alone: the index copy is not needed
    second_manifest = commit_framed(site, V2, 1)
    result = agent_once(config)
    (plan,) = events(result.stderr, "dedup-plan")
    assert (plan["linked"], plan["by_frame"]) == ("5", "5"), plan  # python 2, alpha 3
    second = build_dir(site, second_manifest.build_id)
    assert inode(second / "lib/site/alpha/data.bin") == inode(first / "lib/site/alpha/data.bin")

    # an older agent's record: the frames unknown, the index copy read for single files
    legacy = json.loads((second / dedup.RECORD).read_text())
    for name in ("archive_sha256", "shared_frames"):
        del legacy[name]
    (second / dedup.RECORD).write_text(json.dumps(legacy))
    shutil.rmtree(first)  # the second build is the only donor
    third_manifest = commit_framed(site, V3, 2)
    result = agent_once(config)
    (plan,) = events(result.stderr, "dedup-plan")
    assert plan["by_frame"] == "0" and int(plan["linked"]) >= 3, plan  # python, beta 2.0
    third = build_dir(site, third_manifest.build_id)
    assert inode(third / "lib/site/beta/data.bin") == inode(second / "lib/site/beta/data.bin")

    # a record naming another artifact than ready.json: no donor, and the log says why
    forged = json.loads((third / dedup.RECORD).read_text()) | {"archive_sha256": "0" * 64}
    (third / dedup.RECORD).write_text(json.dumps(forged))
    fourth_manifest = commit_framed(site, V3 | {"gamma": "1.0"}, 3)
    result = agent_once(config)
    unused = {e["donor"]: e for e in events(result.stderr, "dedup-donor-unused")}
    assert "of another artifact" in unused[f"demo/{third.name}"]["reason"], result.stderr
    assert unused[f"demo/{third.name}"]["level"] == "warning"
    fourth = dedup.read_record(build_dir(site, fourth_manifest.build_id))
    assert fourth is not None and f"demo/{third.name}" not in fourth.donors


def test_two_builds_of_an_env_are_never_committed_at_one_time(tmp_path: Path) -> None:
    """The cause of this file's flaky nightly test: it committed both nightlies at T0, so
    which was newer came down to their build ids' hashes, which change with T0 every hour
    (at b7f15cc it failed in 16 of 24 hours: the agent skipped the nightly as superseded).
    The helpers refuse such a tie, so no test can depend on the hour again."""
    _, site = write_site(tmp_path / "site")
    commit_framed(site, V1, 0)
    with pytest.raises(ValueError, match="already created at"):
        commit_framed(site, V2, 0)
    commit_framed(site, V2, 1)


def test_every_earlier_build_is_unchanged_and_deleting_any_one_leaves_the_others(
    tmp_path: Path,
) -> None:
    config, site = write_site(tmp_path / "site")
    dirs = deploy_in_turn(config, site, V1, V2, V3)
    trees = {d: tree(d) for d in dirs}
    for victim in dirs:
        # a copy of the deploy root per victim: retention's own delete of one build
        copy = Path(tempfile.mkdtemp(dir=tmp_path))
        shutil.copytree(site.deploy_root, copy / "deploy", symlinks=True, copy_function=_link)
        moved = type(site)(**{**site.__dict__, "deploy_root": copy / "deploy"})
        latest = layout.latest_link(moved.deploy_root, "demo")
        if os.readlink(latest) == victim.name:  # latest is never deleted: point it elsewhere
            latest.unlink()
            latest.symlink_to(dirs[0].name)
        decision = RetentionDecision("demo", victim.name, "delete", "test")
        (done,) = retention.apply_plan(moved, [decision], logging.getLogger("test"))
        assert done.action == "delete", done.reason
        assert not build_dir(moved, victim.name).exists()
        for other in dirs:
            if other != victim:
                assert tree(build_dir(moved, other.name)) == trees[other], (victim, other)
    # and in place, the originals never changed
    assert {d: tree(d) for d in dirs} == trees


@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_retention_in_an_agent_pass_deletes_a_linked_build_and_no_shared_file(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """Three linked builds deployed by the agent from the store (a directory or an S3
    bucket); the oldest falls out of retention (keep_latest 2) and the agent's own passes
    tombstone and delete it: the two others are byte for byte as before, their files
    shared with it keep their bytes (one name fewer), and the newest still imports."""
    store: dict = {}
    if backend == "s3":
        server = request.getfixturevalue("s3_server")
        store = {"store": server.new_store_url(), "store_options": server.site_options()}
    retention = {"keep_latest": 2, "grace_days": 1, "lts_years": 3}
    config, site = write_site(tmp_path / "site", retention=retention, **store)
    dirs = []
    for hours, version in ((-30 * 24, V1), (-29 * 24, V2), (0, V3)):
        staging = Path(tempfile.mkdtemp(dir=tmp_path)) if backend == "s3" else None
        manifest = commit_framed(site, version, hours, staging=staging)
        agent_once(config)
        dirs.append(build_dir(site, manifest.build_id))
    oldest, kept = dirs[0], dirs[1:]
    assert all(dedup.read_record(d).linked_files > 0 for d in kept)  # type: ignore[union-attr]
    shared = inode(kept[0] / "lib/site/common.py")
    assert shared == inode(oldest / "lib/site/common.py") == inode(kept[1] / "lib/site/common.py")
    links = os.stat(oldest / "lib/site/common.py").st_nlink
    trees = {d: tree(d) for d in kept}
    stay = _inodes(oldest) & (_inodes(kept[0]) | _inodes(kept[1]))
    agent_once(config)  # tombstone
    tombstone = layout.tombstone_path(site.deploy_root, "demo", oldest.name)
    assert tombstone.exists(), list(tombstone.parent.iterdir())
    age(tombstone, 2)
    (deleted,) = events(agent_once(config).stderr, "deleted")  # delete
    assert not oldest.exists()
    # the log says what the deletion gave back: not the files the kept builds still link
    assert deleted["build"] == oldest.name and int(deleted["shared_files"]) == len(stay) > 0
    assert 0 < float(deleted["freed_mb"]) < sum(f.stat().st_size for f in kept[0].rglob("*")) / 1e6
    assert {d: tree(d) for d in kept} == trees
    assert inode(kept[0] / "lib/site/common.py") == shared
    assert os.stat(kept[0] / "lib/site/common.py").st_nlink == links - 1
    for build in kept:
        assert layout.read_ready(site.deploy_root, "demo", build.name) is not None
    code = "import sys; sys.path.insert(0, sys.argv[1]); import alpha; print(alpha.VERSION)"
    out = subprocess.run(
        [str(kept[1] / "bin/python"), "-c", code, str(kept[1] / "lib/site")],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert out.stdout.split() == ["1.1"]


def _link(source: str, target: str) -> None:
    """copytree's copy function: hardlink (the copies share the inodes, as builds do)."""
    os.link(source, target)


@pytest.mark.parametrize("point", ["extract", "unpack"])
def test_kill9_during_a_linked_deploy_leaves_nothing_partial(tmp_path: Path, point: str) -> None:
    """Killed while linking (the partial dir) or after the rename, before conda-unpack
    (a build dir holding links, without ready.json): never a donor nor ready, discarded
    by the next pass, which deploys the build linked; the earlier build unchanged."""
    config, site = write_site(tmp_path / "site")
    (first,) = deploy_in_turn(config, site, V1)
    before = tree(first)
    second = commit_framed(site, V2, 1)
    marker = tmp_path / "paused"
    agent = start_agent(
        config,
        "--once",
        env={"NSLS2_TEST_PAUSE_AT": point, "NSLS2_TEST_PAUSE_FILE": str(marker)},
        log=tmp_path / "agent.log",
    )
    try:
        wait_for(marker.exists, what=f"the agent to pause at {point}")
    finally:
        kill9(agent)
    killed = build_dir(site, second.build_id)
    if point == "extract":
        assert not killed.exists()  # only ever the partial dir
    else:  # renamed, its links in place, but not ready: no later deploy links from it
        assert inode(killed / "lib/site/alpha/data.bin") == inode(first / "lib/site/alpha/data.bin")
        assert layout.read_ready(site.deploy_root, "demo", second.build_id) is None
        status = json.loads(run_cli(config, "status", "--json", check=False).stdout)
        states = {b["build_id"]: b["state"] for b in status["envs"]["demo"]["builds"]}
        assert states[second.build_id] == "incomplete"
    assert os.readlink(layout.latest_link(site.deploy_root, "demo")) == first.name
    assert tree(first) == before
    agent_once(config)
    final = build_dir(site, second.build_id)
    assert layout.read_ready(site.deploy_root, "demo", second.build_id) is not None
    assert not list(layout.env_dir(site.deploy_root, "demo").glob(".partial-*"))
    assert inode(final / "lib/site/alpha/data.bin") == inode(first / "lib/site/alpha/data.bin")
    assert tree(first) == before


@contextlib.contextmanager
def immutable(paths: list[Path]):
    """chattr +i: link(2) to these fails with EPERM, for real (ext4, XFS, btrfs)."""
    subprocess.run(["chattr", "+i", *map(str, paths)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


def _needs_chattr(path: Path) -> None:
    probe = path / "chattr-probe"
    probe.write_text("x")
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("needs chattr as root")
    if subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode:
        pytest.skip(f"the filesystem of {path} has no immutable flag")
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    probe.unlink()


def test_links_refused_fall_back_to_copies(tmp_path: Path) -> None:
    config, site = write_site(tmp_path / "site")
    _needs_chattr(tmp_path)
    (first,) = deploy_in_turn(config, site, V1)
    before = tree(first)
    refused = first / "lib/site/alpha/data.bin"
    with immutable([refused]):  # one file refuses links: copied, the others linked
        (second,) = deploy_in_turn(config, site, V2)
    record = dedup.read_record(second)
    assert record is not None and record.copied_files == 1
    assert (
        "; 1 copied, the filesystem refused a link)"
        in run_cli(config, "status", check=False).stdout
    )
    assert os.stat(second / "lib/site/alpha/data.bin").st_nlink == 1
    assert (second / "lib/site/alpha/data.bin").read_bytes() == refused.read_bytes()
    assert inode(second / "lib/site/common.py") == inode(first / "lib/site/common.py")
    assert tree(first) == before
    assert tree(second)["lib/site/alpha/data.bin"] == before["lib/site/alpha/data.bin"]

    files = [p for d in (first, second) for p in d.rglob("*") if p.is_file() and not p.is_symlink()]
    with immutable(files):  # every link refused: no donor is used, every frame is read
        (third,) = deploy_in_turn(config, site, V3)
    record = dedup.read_record(third)
    assert record is not None
    assert (record.linked_files, record.skipped_frames, record.donors) == (0, 0, ())
    assert tree(third)["lib/site/beta/data.bin"] == tree(second)["lib/site/beta/data.bin"]
    assert tree(first) == before


def test_a_refused_link_is_a_reflink_where_the_filesystem_offers_it(tmp_path: Path) -> None:
    """The deploy root on XFS with reflink (a loop-mounted image, in a mount namespace of
    its own held by a sleeping process: the agent runs in it through nsenter, the test
    reads it through /proc/PID/root). A donor file refusing links (chattr +i: EPERM) is
    cloned: an inode of its own sharing the donor's extents, no bytes copied (FICLONE,
    else copy_file_range, which XFS also serves by sharing extents; a copy through
    read/write would fail this test)."""
    tools = ("unshare", "nsenter", "mkfs.xfs", "filefrag", "chattr", "mount")
    if os.geteuid() != 0 or not all(map(shutil.which, tools)):
        pytest.skip(f"needs root and {', '.join(tools)} (xfsprogs)")
    config, site = write_site(tmp_path / "site")
    image = tmp_path / "xfs.img"
    with open(image, "wb") as handle:
        handle.truncate(320 << 20)  # sparse: the smallest XFS is 300 MB
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    site.deploy_root.mkdir(exist_ok=True)
    mounted = tmp_path / "mounted"
    holder = subprocess.Popen(
        ["unshare", "-m", "sh", "-c", 'mount -o loop "$1" "$2" && touch "$3" && exec sleep 600',
         "sh", str(image), str(site.deploy_root), str(mounted)],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: mounted.exists() or holder.poll() is not None, what="the XFS mount")
        if not mounted.exists():
            pytest.skip(f"cannot loop-mount XFS here: {holder.stderr.read().decode().strip()}")  # type: ignore[union-attr]
        inside = Path(f"/proc/{holder.pid}/root")

        def agent_pass() -> None:
            command = ["nsenter", f"--mount=/proc/{holder.pid}/ns/mnt", *CLI, "agent"]
            command += ["--config", str(config), "--once"]
            out = subprocess.run(command, capture_output=True, text=True, env=cli_env())
            assert out.returncode == 0, out.stderr

        first_manifest = commit_framed(site, V1, 0)
        agent_pass()
        first = inside / str(build_dir(site, first_manifest.build_id)).lstrip("/")
        before = tree(first)
        refused = first / "lib/site/alpha/data.bin"
        second_manifest = commit_framed(site, V2, 1)
        with immutable([refused]):
            agent_pass()
        second = inside / str(build_dir(site, second_manifest.build_id)).lstrip("/")
        record = dedup.read_record(second)
        assert record is not None and record.copied_files == 1
        clone = second / "lib/site/alpha/data.bin"
        assert inode(clone) != inode(refused) and os.stat(clone).st_nlink == 1
        assert not os.stat(clone).st_mode & 0o222
        extents = subprocess.run(
            ["filefrag", "-v", str(clone)], capture_output=True, text=True, check=True
        ).stdout
        assert "shared" in extents, extents  # the donor's blocks, not a copy of them
        assert inode(second / "lib/site/common.py") == inode(first / "lib/site/common.py")
        assert tree(second)["lib/site/alpha/data.bin"] == before["lib/site/alpha/data.bin"]
        assert tree(first) == before
    finally:
        kill9(holder)  # the mount goes with its namespace


def test_earlier_build_on_another_mount_exdev_writes_the_files(tmp_path: Path) -> None:
    """The earlier build is a mount of its own (a bind mount in a private mount namespace,
    like a GPFS fileset: same filesystem, but link(2) across it fails with EXDEV)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and mount as root")
    config, site = write_site(tmp_path / "site")
    (first,) = deploy_in_turn(config, site, V1)
    before = tree(first)
    manifest = commit_framed(site, V2, 1)
    mounted = 'mount --bind "$1" "$1" && shift && exec "$@"'
    out = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            mounted,
            "sh",
            str(first),
            *CLI,
            "agent",
            "--config",
            str(config),
            "--once",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )
    if "mount" in out.stderr and out.returncode:
        pytest.skip(f"cannot bind-mount here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    second = build_dir(site, manifest.build_id)
    record = dedup.read_record(second)
    assert record is not None
    assert (record.linked_files, record.skipped_frames, record.donors) == (0, 0, ())
    assert os.stat(second / "lib/site/alpha/data.bin").st_nlink == 1
    assert tree(second)["lib/site/alpha/data.bin"] == before["lib/site/alpha/data.bin"]
    assert tree(first) == before


def test_conda_unpack_never_writes_a_shared_inode_whatever_the_index_says(
    tmp_path: Path,
) -> None:
    config, site = write_site(tmp_path / "site")
    # a wrong index: etc/prefix.txt (a prefix record of conda-unpack) "never rewritten"
    wrong = {"bin/conda-unpack"}
    first_manifest = commit_framed(site, V1, 0, rewritten=wrong)
    agent_once(config)
    first = build_dir(site, first_manifest.build_id)
    before = tree(first)
    second_manifest = commit_framed(site, V2, 1, rewritten=wrong)
    result = agent_once(config)
    second = build_dir(site, second_manifest.build_id)
    assert "event=dedup-unshared" not in result.stderr  # the first build's copy is private
    assert (first / "etc/prefix.txt").read_text() == f"prefix={first}\n"
    assert (second / "etc/prefix.txt").read_text() == f"prefix={second}\n"
    assert os.stat(second / "etc/prefix.txt").st_nlink == 1
    assert tree(first) == before
    # the kept index now says so: no later build links it
    kept = dedup.INDEXES.get(second)
    assert kept is not None
    assert {e.path for e in kept.entries if e.rewritten} >= {"etc/prefix.txt"}
    assert PLACEHOLDER not in (second / "etc/prefix.txt").read_text()


def test_protect_before_unpack_copies_a_shared_prefix_record(tmp_path: Path) -> None:
    """The guard itself: a prefix record that is a hardlink gets an inode of its own."""
    shared = tmp_path / "elsewhere.txt"
    shared.write_text(f"prefix={PLACEHOLDER}\n")
    shared.chmod(0o444)
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "etc").mkdir()
    from support.dedup import UNPACK

    (prefix / "bin/conda-unpack").write_text(UNPACK)
    os.link(shared, prefix / "etc/prefix.txt")
    names = dedup.protect_before_unpack(prefix, "b", logging.getLogger("test"))
    assert names == {"etc/prefix.txt"}
    assert inode(prefix / "etc/prefix.txt") != inode(shared)
    assert os.stat(prefix / "etc/prefix.txt").st_mode & 0o200
    assert os.stat(shared).st_nlink == 1 and shared.read_text() == f"prefix={PLACEHOLDER}\n"


def test_a_chmodded_build_is_no_donor_and_the_agent_says_why(tmp_path: Path) -> None:
    """`chmod -R u+w` on a linked build changes the mode of every inode it shares, in
    every build sharing it: none of those files is linked again (nothing vouches they
    were not written since). The next deploy writes them, and logs a warning per donor
    passed over naming the reason, so an operator sees why the disk grew."""
    config, site = write_site(tmp_path / "site")
    first, second = deploy_in_turn(config, site, V1, V2)
    subprocess.run(["chmod", "-R", "u+w", str(second)], check=True)
    third = commit_framed(site, V3, 2)
    result = agent_once(config)
    record = dedup.read_record(build_dir(site, third.build_id))
    assert record is not None and (record.linked_files, record.donors) == (0, ())
    unused = {e["donor"]: e for e in events(result.stderr, "dedup-donor-unused")}
    # the chmodded build, and the earlier one whose files it shares (now writable too)
    assert set(unused) == {f"demo/{second.name}", f"demo/{first.name}"}, result.stderr
    for line in unused.values():
        assert line["level"] == "warning" and line["build"] == third.build_id
        assert line["reason"].startswith("none of the"), line
        assert "(chmod on a build sharing it), e.g. " in line["reason"], line
    assert "3 with mode 644 instead of read-only 444" in unused[f"demo/{second.name}"]["reason"]
    # a donor whose kept index is gone still lends whole frames (their keys are in its
    # dedup.json): the first build's beta 1.0, never shared with the chmodded build
    os.unlink(first / dedup.INDEX_COPY)
    fourth = commit_framed(site, V1, 3)
    result = agent_once(config)
    record = dedup.read_record(build_dir(site, fourth.build_id))
    assert record is not None and f"demo/{first.name}" in record.donors, result.stderr
    assert f"demo/{first.name}" not in events(result.stderr, "dedup-donor-unused")
    beta = build_dir(site, fourth.build_id) / "lib/site/beta/data.bin"
    assert inode(beta) == inode(first / "lib/site/beta/data.bin")
    # ... but no single file of a frame it does not share: a deploy wanting one says why
    fifth = commit_framed(site, {"gamma": "1.0"}, 4)
    result = agent_once(config)
    unused = {e["donor"]: e for e in events(result.stderr, "dedup-donor-unused")}
    reason = unused[f"demo/{first.name}"]["reason"]
    assert reason.startswith(f"cannot read {dedup.INDEX_COPY}"), reason
    assert unused[f"demo/{first.name}"]["level"] == "warning"
    assert layout.read_ready(site.deploy_root, "demo", fifth.build_id) is not None


def _inodes(root: Path) -> set[tuple[int, int]]:
    found = set()
    for path in root.rglob("*"):
        st = path.lstat()
        if not path.is_dir() or path.is_symlink():
            found.add((st.st_dev, st.st_ino))
    return found


def test_prune_dry_run_says_what_deleting_linked_builds_frees(tmp_path: Path) -> None:
    """Two old nightlies fall out of retention while the newest shares files with them:
    `prune --dry-run` says what their deletion gives back, which is not their size - the
    files the kept build also names (hardlinks) stay - first for the tombstoned builds,
    then for the builds it would delete now."""
    retention = {"keep_latest": 1, "grace_days": 1, "lts_years": 3}
    config, site = write_site(tmp_path / "site", retention=retention)
    dirs = []
    for hours, version in ((-30 * 24, V1), (-29 * 24, V2), (0, V3)):
        manifest = commit_framed(site, version, hours)
        agent_once(config)  # deploys it, linked from the last; tombstones the older ones
        dirs.append(build_dir(site, manifest.build_id))
    old, (kept,) = dirs[:2], dirs[2:]
    assert all(layout.read_ready(site.deploy_root, "demo", d.name) for d in dirs)
    inodes = _inodes(old[0]) | _inodes(old[1])
    stay = inodes & _inodes(kept)
    assert 0 < len(stay) < len(inodes)  # some shared with the kept build, some not

    def disk_line(output: str) -> str:
        (line,) = [line for line in output.splitlines() if line.startswith("disk: ")]
        return " ".join(line.split())

    expected = f"({len(stay)} of their {len(inodes)} files stay: hardlinked by builds kept)"
    waiting = run_cli(config, "prune", "--dry-run").stdout
    line = disk_line(waiting)
    assert line.startswith("disk: once the 2 builds on their way out are gone: frees "), line
    assert line.endswith(expected), line
    for tombstoned in old:
        age(layout.tombstone_path(site.deploy_root, "demo", tombstoned.name), 2)
    now = run_cli(config, "prune", "--dry-run").stdout
    assert now.count("│ would delete") == 2, now
    line = disk_line(now)
    assert line.startswith("disk: deleting the 2 builds marked 'would delete' frees "), line
    assert line.endswith(expected), line
    freed, held = re.match(r".* frees (.+) of the (.+) they hold", line).groups()  # type: ignore[union-attr]
    assert freed != held
    assert all(d.is_dir() for d in dirs)  # a dry run


def test_disk_freed_counts_a_file_only_when_every_name_of_it_goes(tmp_path: Path) -> None:
    """x is in a and b, y only in a, z in a and c: deleting a frees y; a and b, x and y;
    all three, everything. Blocks, as the filesystem allocated them."""
    for name in "abc":
        (tmp_path / name).mkdir()
    sizes = {"x": 10_000, "y": 20_000, "z": 40_000}
    for name, size in sizes.items():
        (tmp_path / "a" / name).write_bytes(name.encode() * size)
    os.link(tmp_path / "a/x", tmp_path / "b/x")
    os.link(tmp_path / "a/z", tmp_path / "c/z")

    def blocks(*paths: str) -> int:
        return sum(os.lstat(tmp_path / p).st_blocks * 512 for p in paths)

    a = disk_freed([tmp_path / "a"])
    assert (a.freed, a.bytes) == (blocks("a", "a/y"), blocks("a", "a/x", "a/y", "a/z"))
    assert (a.files, a.shared, a.builds, a.unreadable) == (3, 2, 1, 0)
    ab = disk_freed([tmp_path / "a", tmp_path / "b"])
    assert ab.freed == blocks("a", "b", "a/x", "a/y") and ab.shared == 1
    abc = disk_freed(tmp_path / n for n in "abc")
    assert abc.freed == abc.bytes == blocks("a", "b", "c", "a/x", "a/y", "a/z")
    gone = disk_freed([tmp_path / "missing"])
    assert (gone.builds, gone.freed, gone.unreadable) == (0, 0, 1)


def test_status_disk_says_what_a_build_holds_alone_now(tmp_path: Path) -> None:
    """`status --disk` walks the builds: what deleting one alone would free today. A
    nightly that linked from an earlier build holds little alone; once that build is
    deleted (retention's way: renamed out, then removed), it holds every file alone."""
    config, site = write_site(tmp_path / "site")
    first, second = deploy_in_turn(config, site, V1, V2)
    shared = _inodes(first) & _inodes(second)

    def disk_of(build: Path) -> dict:
        status = json.loads(run_cli(config, "status", "--json", "--disk").stdout)
        builds = {b["build_id"]: b for b in status["envs"]["demo"]["builds"]}
        return builds[build.name]["disk"]

    now = disk_of(second)
    assert now["shared_files_now"] == len(shared) > 0 and now["unreadable_entries"] == 0
    assert now["alone_bytes"] < now["held_bytes"]
    assert now["added_bytes"] == dedup.read_record(second).added_bytes  # type: ignore[union-attr]
    text = run_cli(config, "status", "--disk").stdout
    (line,) = [line for line in text.splitlines() if line.startswith(f"  {second.name}")]
    assert f"({len(shared)} files shared with other builds)" in line, text
    assert status_module.DISK_NOW_LEGEND in text
    assert "alone now" not in run_cli(config, "status").stdout  # no walk unless asked

    retention.trash.discard(site.deploy_root, "demo", first)
    later = disk_of(second)
    assert later["shared_files_now"] == 0 and later["alone_bytes"] == later["held_bytes"]
    assert later["added_bytes"] == now["added_bytes"]  # the deploy's figure does not move

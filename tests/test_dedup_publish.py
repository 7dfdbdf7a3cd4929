"""A real one-package nightly, deduplicated (issue #20): the demo env published from the
offline channel (real rattler install, conda-pack, per-package frames and content index),
deployed by `agent --once`, then republished with one package changed (six 1.16 -> 1.17)
and deployed next to it. Real conda-unpack rewrites real prefix placeholders; the new
build's python imports the env's packages.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.build import BUILD_CACHE, publish
from support.cli import run_cli
from support.dedup import inode, tree
from support.manifests import edit_pixi_toml
from support.sites import write_demo_site

from nsls2_artifacts import layout
from nsls2_artifacts.agent import dedup
from nsls2_artifacts.store import open_store

pytestmark = pytest.mark.slow


def publish_and_deploy(config: Path, site) -> Path:
    publish(config, BUILD_CACHE, "demo")
    result = run_cli(config, "agent", "--once", check=False)
    assert result.returncode == 0, result.stderr
    newest = open_store(site).builds("demo")[-1]
    assert layout.read_ready(site.deploy_root, "demo", newest.build_id) is not None
    return layout.build_dir(site.deploy_root, "demo", newest.build_id)


@dataclass(frozen=True)
class Nightly:
    first: Path  # the build with six 1.16, deployed first
    second: Path  # the one-package nightly (six 1.17), linked from `first`
    before: dict[str, tuple[str, int, str]]  # `first`'s tree before `second` was deployed


@pytest.fixture(scope="module")
def nightly(tmp_path_factory: pytest.TempPathFactory, offline_channel: Path) -> Nightly:
    root = tmp_path_factory.mktemp("nightly")
    config, site = write_demo_site(root, offline_channel)  # make_site's, once per module
    edit_pixi_toml(config, 'databroker = "*"', 'databroker = "*"\nsix = "==1.16.0"')
    first = publish_and_deploy(config, site)
    before = tree(first)
    edit_pixi_toml(config, 'six = "==1.16.0"', 'six = "==1.17.0"')
    return Nightly(first, publish_and_deploy(config, site), before)


def test_real_one_package_nightly_is_linked_and_works(nightly: Nightly, tmp_path: Path) -> None:
    first, second, before = nightly.first, nightly.second, nightly.before
    index = dedup.INDEXES.get(second)
    record = dedup.read_record(second)
    assert index is not None and record is not None
    # a frame is decompressed only if it holds a file not linked: six's, the rewritten ones
    unlinked = {
        e.frame
        for e in index.entries
        if e.type == "file" and os.lstat(second / e.path).st_nlink == 1
    }
    assert record.skipped_frames == record.frames - len(unlinked) > record.frames // 2, record
    six_frame = {e.frame for e in index.entries if e.path.endswith("site-packages/six.py")}
    assert six_frame <= unlinked
    assert record.linked_files >= 0.9 * record.files, record
    assert record.added_bytes <= 0.1 * record.bytes, record
    six = "lib/python3.11/site-packages/six.py"
    assert inode(second / six) != inode(first / six)
    for entry in index.entries:
        if entry.type != "file":
            continue
        path = second / entry.path
        if entry.rewritten:  # conda-unpack'ed and conda-pack's own: the build's alone
            assert os.lstat(path).st_nlink == 1, entry.path
        elif os.lstat(path).st_nlink > 1:
            assert not os.lstat(path).st_mode & 0o222, entry.path  # shared: read-only
    # every earlier file byte for byte, after the new build's conda-unpack and smoke test
    assert tree(first) == before
    out = subprocess.run(
        [
            str(second / "bin" / "python"),
            "-c",
            "import sys, six, databroker, ipykernel; print(six.__version__, sys.prefix)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert out.stdout.split() == ["1.17.0", str(second)]


def test_only_the_changed_package_and_the_rewritten_files_frames_are_decompressed(
    nightly: Nightly,
) -> None:
    """The packer puts every package file conda-unpack rewrites into the last frame
    (pack.py `_FramePlan`), so no unchanged package's frame is kept for an entry point."""
    index = dedup.INDEXES.get(nightly.second)
    record = dedup.read_record(nightly.second)
    assert index is not None and record is not None
    six = {e.frame for e in index.entries if e.path.endswith("site-packages/six.py")}
    last = len(index.frames) - 1
    rewritten = {e.frame for e in index.entries if e.rewritten and e.type == "file"}
    assert len(six) == 1 and six != {last}, six
    assert index.frames[next(iter(six))].package == "six"
    assert rewritten <= {last} | six | _unmanaged(index)
    assert record.skipped_frames == record.frames - 2, (record, rewritten)


def _unmanaged(index) -> set[int]:
    return {n for n, frame in enumerate(index.frames) if not frame.package}

"""pack.list_prefix: our faster stand-in for conda-pack's `load_files` must return the
same set on every shape of tree conda-pack handles (it decides which files of no
package go into the archive). Compared with the stock function on a tree with the odd
cases: symlinks to files, directories and nowhere, empty directories, skipped names,
an unreadable directory, a FIFO."""

from __future__ import annotations

import os
from pathlib import Path

import conda_pack.core
import pytest

from nsls2_artifacts import pack


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "prefix"
    for name in ("conda-meta/a.json", "lib/python3.11/site-packages/m/__init__.py", "top.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    (root / "lib" / "empty" / "deeper-empty").mkdir(parents=True)
    (root / "share" / "emptydir").mkdir(parents=True)
    (root / "lib" / "link-to-dir").symlink_to("python3.11")
    (root / "lib" / "link-to-file").symlink_to("python3.11/site-packages/m/__init__.py")
    (root / "lib" / "dangling").symlink_to("nowhere")
    (root / "top-link").symlink_to("lib")
    (root / "top-file-link").symlink_to("top.txt")
    for skipped in ("pkgs", "envs", ".nonadmin", "backup~"):
        (root / skipped).mkdir()
        (root / skipped / "f").write_text("x")
    os.mkfifo(root / "lib" / "fifo")
    os.mkfifo(root / "top-fifo")
    (root / "emptytop").mkdir()
    locked = root / "share" / "locked"
    (locked / "inner").mkdir(parents=True)
    (locked / "inner" / "f").write_text("x")
    return root


def test_lists_what_conda_pack_lists(tree: Path) -> None:
    ours = pack.list_prefix(str(tree))
    assert ours == conda_pack.core.load_files(str(tree))
    assert "lib/link-to-dir" in ours and "lib/dangling" in ours and "lib/empty/deeper-empty" in ours
    assert not any(p.startswith(("pkgs", "envs", "backup~")) for p in ours)


def test_an_unreadable_directory_is_skipped_as_conda_pack_skips_it(tree: Path) -> None:
    locked = tree / "share" / "locked"
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as a user who reads any directory (root)")
        assert pack.list_prefix(str(tree)) == conda_pack.core.load_files(str(tree))
    finally:
        locked.chmod(0o755)


def test_the_stock_listing_is_put_back_after_a_pack(tree: Path) -> None:
    stock = conda_pack.core.load_files
    with pack._fast_listing() as listings:
        assert conda_pack.core.load_files is not stock
        assert conda_pack.core.load_files(str(tree)) == stock(str(tree))
        assert listings == [stock(str(tree))]  # kept for the packer (its pycs)
    assert conda_pack.core.load_files is stock

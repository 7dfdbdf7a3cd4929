"""pack.py against a real installed env: same members as stock conda-pack, exact contents.

The prefix is the demo env installed by rattler from the offline channel, plus the
awkward things pip users leave behind: long and non-ASCII names, symlinks, an empty
directory, a file naming the prefix. After extraction with tarfile at a new path and
`conda-unpack`, every file must equal the original with the prefix swapped.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import zstandard
from conda_pack import pack as stock_pack
from support.build import ODD_FILES, conda_unpack, env_python, extract

from nsls2_artifacts import pack

pytestmark = pytest.mark.slow


def members(archive: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """name -> (member, content) for every member (content only for regular files)."""
    data = archive.read_bytes()
    if archive.name.endswith(".zst"):
        data = (
            zstandard.ZstdDecompressor()
            .stream_reader(io.BytesIO(data), read_across_frames=True)
            .read()
        )
    mode = "r:gz" if archive.name.endswith(".gz") else "r:"
    with tarfile.open(fileobj=io.BytesIO(data), mode=mode) as tar:
        return {
            m.name: (m, tar.extractfile(m).read() if m.isfile() else b"") for m in tar.getmembers()
        }


def test_same_members_as_stock_conda_pack(prefix: Path, tmp_path: Path) -> None:
    ours = pack.pack(prefix, tmp_path / "ours.tar.zst")
    stock = stock_pack(prefix=str(prefix), output=str(tmp_path / "stock.tar"), format="tar")
    ours_members, stock_members = members(ours.path), members(Path(stock))
    assert set(ours_members) == set(stock_members)
    assert ours.files == len(ours_members)
    for name, (theirs, their_data) in stock_members.items():
        mine, my_data = ours_members[name]
        assert (mine.type, mine.mode, mine.linkname) == (theirs.type, theirs.mode, theirs.linkname)
        if name.startswith("conda-meta/") and name.endswith(".json"):
            # compact instead of indented JSON, same record (local cache paths blanked)
            assert json.loads(my_data) == json.loads(their_data), name
            assert json.loads(my_data)["link"]["source"] == ""
        elif name == "bin/conda-unpack":  # the same prefix records, in another order
            # (ours: the files of no package first, then each package's, in package order)
            assert _records(my_data) == _records(their_data)
        else:  # byte-identical
            assert my_data == their_data, name
    for rel in ODD_FILES:
        assert rel in ours_members


def _records(script: bytes) -> list[bytes]:
    """conda-unpack's lines, sorted, without the comma that every record but the last has."""
    return sorted(line.rstrip(b",") for line in script.splitlines())


@pytest.mark.parametrize("fmt", ["zst", "gz"])
def test_round_trip_at_a_new_path(prefix: Path, tmp_path: Path, fmt: str) -> None:
    result = pack.pack(prefix, tmp_path / f"env.tar.{fmt}", fmt=fmt)
    data = result.path.read_bytes()
    import hashlib

    assert (result.sha256, result.size) == (hashlib.sha256(data).hexdigest(), len(data))

    moved = tmp_path / "a" / "different" / "place"
    extract(result.path, moved)
    unpack = conda_unpack(moved)
    assert unpack.returncode == 0, unpack.stderr
    old, new = str(prefix).encode(), str(moved).encode()
    checked = 0
    for path in prefix.rglob("*"):
        rel = path.relative_to(prefix)
        twin = moved / rel
        if path.is_symlink():
            assert os.readlink(twin) == os.readlink(path), rel
        elif path.is_dir():
            assert twin.is_dir(), rel
        elif rel.parts[0] != "conda-meta":  # conda-pack blanks local cache paths there
            original, copied = path.read_bytes(), twin.read_bytes()
            if original.startswith(b"#!" + old) and copied.startswith(b"#!/usr/bin/env "):
                continue  # conda-pack makes prefix shebangs relocatable
            if old in original and b"\0" in original:
                assert len(copied) == len(original), rel  # binary prefix: padded in place
                continue
            assert copied == original.replace(old, new), rel
            checked += 1
    assert checked > 5000
    assert (moved / "etc" / "where.conf").read_text() == f"prefix={moved}\n"
    assert (moved / "share" / "empty-dir").is_dir()
    assert env_python(moved, "import databroker, ipykernel").returncode == 0


def test_pack_refuses_a_prefix_that_is_not_an_env(tmp_path: Path) -> None:
    from nsls2_artifacts.errors import PackError

    (tmp_path / "not-an-env").mkdir()
    with pytest.raises(PackError, match="not-an-env"):
        pack.pack(tmp_path / "not-an-env", tmp_path / "x.tar.zst")


def test_ustar_headers_match_tarfile() -> None:
    cases = [
        ("lib/python3.11/site-packages/foo.py", 0o644, 12345, tarfile.REGTYPE, ""),
        ("bin/python", 0o777, 0, tarfile.SYMTYPE, "python3.11"),
        ("share/empty", 0o755, 0, tarfile.DIRTYPE, ""),
    ]
    for name, mode, size, kind, link in cases:
        info = tarfile.TarInfo(name)
        info.mode, info.size, info.mtime, info.type, info.linkname = (
            mode,
            size,
            1700000000,
            kind,
            link,
        )
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        expected = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        assert pack.ustar_header(name, mode, size, 1700000000, kind, link) == expected
    assert pack.ustar_header("x" * 300, 0o644, 1, 1, tarfile.REGTYPE, "") == b""  # PAX instead
    assert pack.ustar_header("é", 0o644, 1, 1, tarfile.REGTYPE, "") == b""

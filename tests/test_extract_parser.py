"""The agent's tar reader (`tarstream.TarReader`, opened by `extract.open_reader`) sees
exactly what tarfile sees - names, types, sizes, modes, mtimes, link targets, data - on
archives made by tarfile in every way our packers use, and on real ones from `pack.pack`
and stock conda-pack; anything it does not read (GNU long names, pax globals), a broken
header checksum, a device and a truncated archive are rejected; both ways of writing
files give one tree.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import threading
from pathlib import Path

import pytest
import zstandard

from nsls2_artifacts.agent import extract, slowfs
from nsls2_artifacts.errors import RejectedArtifactError

Member = tuple[str, bytes, int, int, str, float, bytes]


def _member(m: tarfile.TarInfo, data: bytes) -> Member:
    return (m.name, m.type, m.size, m.mode, m.linkname, m.mtime, data)


def ours(archive: Path, fmt: str) -> list[Member]:
    with extract.open_reader(archive, fmt, max_members=10**6, max_bytes=1 << 40) as tar:
        return [
            _member(extract.to_tarinfo(m), bytes(tar.data()) if m.isreg() else b"")
            for m in tar.members()
        ]


def tarfiles(archive: Path, fmt: str) -> list[Member]:
    with open(archive, "rb") as raw:
        source = (
            zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            if fmt == "tar.zst"
            else gzip.GzipFile(fileobj=raw)
            if fmt == "tar.gz"
            else raw
        )
        with tarfile.open(fileobj=source, mode="r|") as tar:
            return [
                _member(m, tar.extractfile(m).read() if m.isreg() else b"")  # type: ignore[union-attr]
                for m in tar
            ]


def info(name: str, data: bytes = b"", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    member = tarfile.TarInfo(name)
    member.size, member.mode, member.mtime = len(data), 0o644, 1_700_000_000
    for key, value in attrs.items():
        setattr(member, key, value)
    return member, data


def write(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], **open_args: object) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", **open_args) as tar:  # type: ignore[call-overload]
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    data = raw.getvalue()
    if path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    elif path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


LONG = "lib/python3.11/site-packages/" + "/".join(["deeply-nested-directory"] * 4)
AWKWARD = [
    info("bin", type=tarfile.DIRTYPE, mode=0o755),
    info("bin/python3.11", b"\x7fELF" * 1000, mode=0o755),
    info("bin/python", type=tarfile.SYMTYPE, linkname="python3.11", mode=0o777),
    info("bin/hard", type=tarfile.LNKTYPE, linkname="bin/python3.11"),
    info("empty.txt"),
    info("block.bin", b"b" * 512),
    info(LONG + "/module_with_a_long_name.py", b"x = 1\n"),  # > 100 chars: ustar prefix
    info(LONG + "/" + "d" * 120 + "/leaf.txt", b"leaf\n"),  # > 255 chars: pax path
    info("share/données/été.txt", b"non-ASCII\n"),  # pax path (not ASCII)
    info("share/link", type=tarfile.SYMTYPE, linkname="x/" + "l" * 120),  # pax linkpath
    info("share/float-mtime", b"t", mtime=1_700_000_000.5),  # pax mtime
    info("share/private", b"p", mode=0o600),
    info("lib/big.bin", bytes(range(256)) * (extract.SMALL_FILE // 256 + 3)),  # streamed
    info("lib/last.txt", b"end\n"),
]


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "tar.zst"])
@pytest.mark.parametrize("tar_format", [tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_same_members_as_tarfile(tmp_path: Path, fmt: str, tar_format: int) -> None:
    members = AWKWARD
    if tar_format == tarfile.USTAR_FORMAT:  # no pax headers there
        members = [m for m in AWKWARD if m[0].name.isascii() and len(m[0].name) < 200]
        members = [m for m in members if len(m[0].linkname) < 100 and m[0].mtime % 1 == 0]
    archive = write(tmp_path / f"a.{fmt}", members, format=tar_format)
    mine = ours(archive, fmt)
    assert mine == tarfiles(archive, fmt)
    assert len(mine) == len(members)


@pytest.mark.slow
def test_real_archives(prefix: Path, tmp_path: Path) -> None:  # noqa: F811
    """What `pack.pack` publishes and what stock conda-pack makes, from the demo env (with
    long, non-ASCII names and symlinks added)."""
    from conda_pack import pack as stock_pack

    from nsls2_artifacts import pack

    published = pack.pack(prefix, tmp_path / "env.tar.zst").path
    stock = Path(stock_pack(prefix=str(prefix), output=str(tmp_path / "stock.tar.gz")))
    for archive, fmt in ((published, "tar.zst"), (stock, "tar.gz")):
        mine = ours(archive, fmt)
        assert mine == tarfiles(archive, fmt), archive
        assert len(mine) > 1000
        assert {m[1] for m in mine} >= {tarfile.REGTYPE, tarfile.SYMTYPE}


def rejected(archive: Path, fmt: str, tmp_path: Path) -> str:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(RejectedArtifactError) as caught:
        extract.safe_extract(archive, fmt, dest, build_id="b", max_members=100, max_bytes=1 << 30)
    return str(caught.value)


def test_gnu_long_name_unsupported(tmp_path: Path) -> None:
    archive = write(tmp_path / "a.tar", [info("x/" + "n" * 120, b"x")], format=tarfile.GNU_FORMAT)
    assert "unsupported tar feature" in rejected(archive, "tar", tmp_path)


def test_pax_global_header_unsupported(tmp_path: Path) -> None:
    archive = write(
        tmp_path / "a.tar", [info("a.txt", b"x")], format=tarfile.PAX_FORMAT, pax_headers={"c": "1"}
    )
    assert "unsupported tar feature" in rejected(archive, "tar", tmp_path)


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_devices_rejected_with_their_reason(tmp_path: Path, kind: bytes) -> None:
    archive = write(tmp_path / "a.tar", [info("a.txt", b"x"), info("dev/x", type=kind)])
    assert "device or fifo file" in rejected(archive, "tar", tmp_path)


def test_bad_header_checksum_rejected(tmp_path: Path) -> None:
    archive = write(tmp_path / "a.tar", [info("a.txt", b"x"), info("b.txt", b"y")])
    data = bytearray(archive.read_bytes())
    data[1024] ^= 1  # the second header's name ("b.txt" -> "c.txt")
    archive.write_bytes(bytes(data))
    assert "unreadable archive" in rejected(archive, "tar", tmp_path)


@pytest.mark.parametrize("cut", [700, 1024 + 100, 2048 + 200])
def test_truncated_plain_tar_rejected(tmp_path: Path, cut: int) -> None:
    archive = write(tmp_path / "a.tar", [info("a.txt", b"x" * 600), info("b.txt", b"y")])
    archive.write_bytes(archive.read_bytes()[:cut])  # in data, in a header, before the end
    assert "unreadable archive" in rejected(archive, "tar", tmp_path)


class _OddDecompressor:
    """zstandard's reader, raising what zstandard and gzip never raised in any test (a
    fault this suite cannot cause with real bytes): ValueError after the first chunk."""

    real = zstandard.ZstdDecompressor.stream_reader

    def __init__(self, decompressor: zstandard.ZstdDecompressor, raw: object, **kw: object):
        self.inner = _OddDecompressor.real(decompressor, raw, **kw)
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise ValueError("a frame shape nobody thought of")
        return self.inner.read(1024)


def test_any_decompressor_error_is_the_archives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17 item 2: the decompressor reads verified bytes only, so whatever it raises
    is a property of the artifact (quarantined once), not only the error types someone
    listed; an I/O error of the file underneath stays the node's (passed through)."""
    members = [info(f"f{i}.txt", os.urandom(700)) for i in range(4)]
    archive = write(tmp_path / "a.tar.zst", members)
    monkeypatch.setattr(
        zstandard.ZstdDecompressor,
        "stream_reader",
        lambda self, raw, **kw: _OddDecompressor(self, raw, **kw),
    )
    assert "ValueError: a frame shape nobody thought of" in rejected(archive, "tar.zst", tmp_path)


def tree_with_every_mode(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """Every entry's full st_mode (directories' and links' too) and bytes or link target."""
    out: dict[str, tuple[int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        body: bytes | str = os.readlink(path) if path.is_symlink() else b""
        if path.is_file() and not path.is_symlink():
            body = path.read_bytes()
        out[str(path.relative_to(root))] = (st.st_mode, body)
    return out


def test_thread_pool_and_inline_writes_give_one_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fast storage: files are written by the parsing thread; slow storage (the probe
    says so): by the pool. Both give the same files, modes and links."""
    members = [*AWKWARD, *(info(f"many/f{i}.txt", b"%d" % i, mode=0o755) for i in range(150))]
    archive = write(tmp_path / "a.tar.zst", members, format=tarfile.PAX_FORMAT)
    batches: list[int] = []
    real_place_all = extract._Extraction.place_all

    def place_all(self: extract._Extraction, batch: list) -> None:
        batches.append(len(batch))
        real_place_all(self, batch)

    monkeypatch.setattr(extract._Extraction, "place_all", place_all)
    trees = []
    for slow in (False, True):
        monkeypatch.setattr(slowfs, "SLOW_CALL", -1.0 if slow else 1e9)
        batches.clear()
        dest = tmp_path / f"dest-{slow}"
        dest.mkdir()
        count, _ = extract.safe_extract(
            archive, "tar.zst", dest, build_id="b", max_members=1000, max_bytes=1 << 30
        )
        assert count == len(members)
        assert bool(batches) == slow  # the pool gets batches only when storage is slow
        trees.append(tree_with_every_mode(dest))
    assert trees[0] == trees[1]
    assert trees[0]["many/f7.txt"] == (0o100755, b"7")


def test_the_first_writes_are_timed_a_few_at_once_then_fast_storage_writes_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's PROBE_FILES writes run on the pool, PROBE_STRANDS at a time (under +1 ms
    per create: 16 round trips, not 64); fast storage then gets every other write from the
    parsing thread, slow storage from the pool."""
    members = [info(f"many/f{i:03}.txt", b"%d" % i) for i in range(150)]
    archive = write(tmp_path / "a.tar", members)
    writers: dict[str, str] = {}
    real_write = extract._write_file

    def spy(path: str, *args: object) -> None:
        writers[os.path.basename(path)] = threading.current_thread().name
        real_write(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(extract, "_write_file", spy)
    for slow in (False, True):
        monkeypatch.setattr(slowfs, "SLOW_CALL", -1.0 if slow else 1e9)
        writers.clear()
        dest = tmp_path / f"dest-{slow}"
        dest.mkdir()
        extract.safe_extract(
            archive, "tar", dest, build_id="b", max_members=1000, max_bytes=1 << 30
        )
        names = sorted(writers)
        first = {writers[n] for n in names[: extract.PROBE_FILES]}
        rest = {writers[n] for n in names[extract.PROBE_FILES :]}
        assert len(names) == 150 and all(t.startswith("slowfs") for t in first), first
        assert len(first) <= slowfs.PROBE_STRANDS  # a few at once, not one thread per file
        if slow:
            assert all(t.startswith("slowfs") for t in rest), rest
        else:
            assert rest == {threading.current_thread().name}, rest


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_modes_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """Files get the data filter's mode: at creation when the umask leaves it alone,
    by fchmod when the umask would take bits off."""
    modes = [0o644, 0o755, 0o600, 0o777, 0o4755, 0o444, 0o700]
    archive = write(tmp_path / "a.tar", [info(f"f{m:o}", b"x", mode=m) for m in modes])
    dest = tmp_path / "dest"
    dest.mkdir()
    old = os.umask(umask)
    try:
        extract.safe_extract(archive, "tar", dest, build_id="b", max_members=100, max_bytes=1 << 20)
    finally:
        os.umask(old)
    for mode in modes:
        assert (dest / f"f{mode:o}").stat().st_mode & 0o7777 == extract.data_mode(mode), oct(mode)


def test_multi_frame_zstd_archive(tmp_path: Path) -> None:
    """An archive compressed as several zstd frames (pzstd, per-package frames) reads to
    its end, not only to the end of the first frame."""
    members = [info(f"lib/f{i}.txt", b"%d\n" % i * 300) for i in range(40)]
    plain = write(tmp_path / "a.tar", members).read_bytes()
    cut = len(plain) // 3
    frames = [plain[:cut], plain[cut : 2 * cut], plain[2 * cut :]]
    archive = tmp_path / "a.tar.zst"
    archive.write_bytes(b"".join(zstandard.ZstdCompressor().compress(f) for f in frames))
    dest = tmp_path / "dest"
    dest.mkdir()
    count, _ = extract.safe_extract(
        archive, "tar.zst", dest, build_id="b", max_members=100, max_bytes=1 << 20
    )
    assert count == 40
    assert (dest / "lib" / "f39.txt").read_bytes() == b"39\n" * 300


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("lib/x/f.txt", "lies below a symlink of the archive"),
        ("lib//x/f.txt", "not a canonical path"),
        ("./lib/x/f.txt", "not a canonical path"),
        ("lib/./x/f.txt", "not a canonical path"),
    ],
)
def test_below_a_symlink_however_the_name_is_spelled(
    tmp_path: Path, name: str, reason: str
) -> None:
    """A member below an archive symlink is refused; spelled with `//` or `./` it is
    refused by the reader already (non-canonical), so no rule has to normalise."""
    members = [info("lib/x", type=tarfile.SYMTYPE, linkname="."), info(name, b"data")]
    archive = write(tmp_path / "a.tar", members, format=tarfile.PAX_FORMAT)
    assert reason in rejected(archive, "tar", tmp_path)


def test_progress_is_reported_on_the_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`progress(members, bytes)` comes while extracting (the daemon logs it), growing."""
    monkeypatch.setattr(extract, "PROGRESS_EVERY", 10)
    members = [info(f"lib/f{i}.txt", b"x" * 100) for i in range(45)]
    archive = write(tmp_path / "a.tar", members)
    dest = tmp_path / "dest"
    dest.mkdir()
    seen: list[tuple[int, int]] = []
    extract.safe_extract(
        archive, "tar", dest, build_id="b", max_members=100, max_bytes=1 << 20,
        progress=lambda m, b: seen.append((m, b)), progress_seconds=0,
    )  # fmt: skip
    assert seen == [(10, 1000), (20, 2000), (30, 3000), (40, 4000)]

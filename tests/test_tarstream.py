"""The pure tar reader (`nsls2_artifacts.tarstream`) on its own: canonical names only,
a hard cap on pax extended headers, every byte read counted against `max_bytes`, and
lying size fields that neither allocate nor read what they claim."""

from __future__ import annotations

import io
import random
import tarfile
from collections.abc import Callable, Iterator

import pytest

from nsls2_artifacts import tarstream
from nsls2_artifacts.tarstream import (
    TarLimitError,
    TarNameError,
    TarReader,
    TarStreamError,
    UnsupportedTarError,
)


def tar(*members: tuple[tarfile.TarInfo, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as out:
        for info, data in members:
            out.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return raw.getvalue()


def entry(name: str, data: bytes = b"", **attrs: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def chunks(data: bytes, size: int = 1000) -> Callable[[], bytes]:
    """A source handing out `data` in pieces, as the decompressing thread does."""
    pieces: Iterator[bytes] = iter([data[i : i + size] for i in range(0, len(data), size)])
    return lambda: next(pieces, b"")


def read_all(data: bytes, **limits: int) -> list[tuple[str, bytes, bytes]]:
    reader = TarReader(
        chunks(data),
        max_members=limits.get("max_members", 1000),
        max_bytes=limits.get("max_bytes", 1 << 30),
    )
    return [(m.name, m.type, bytes(reader.data()) if m.isreg() else b"") for m in reader.members()]


def raw_header(name: bytes, kind: bytes = b"0", size: int = 0, link: bytes = b"") -> bytes:
    """A ustar header with any name and size (tarfile would not write these)."""
    block = bytearray(512)
    block[: len(name)] = name
    block[100:108] = b"0000644\0"
    block[108:116] = block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"%011o\0" % 1_700_000_000
    block[148:156] = b" " * 8
    block[156:157] = kind
    block[157 : 157 + len(link)] = link
    block[257:265] = b"ustar\x0000"
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def test_reads_files_dirs_links_like_tarfile() -> None:
    data = tar(
        entry("bin", type=tarfile.DIRTYPE, mode=0o755),
        entry("bin/python", b"\x7fELF"),
        entry("bin/py", type=tarfile.SYMTYPE, linkname="python"),
        entry("bin/hard", type=tarfile.LNKTYPE, linkname="bin/python"),
        entry("lib/" + "x" * 200 + "/f.py", b"x = 1\n"),
    )
    assert read_all(data) == [
        ("bin", b"5", b""),
        ("bin/python", b"0", b"\x7fELF"),
        ("bin/py", b"2", b""),
        ("bin/hard", b"1", b""),
        ("lib/" + "x" * 200 + "/f.py", b"0", b"x = 1\n"),
    ]


@pytest.mark.parametrize(
    "name",
    ["./x", "a//b", "a/./b", "a/..", "../x", "a/../b", "/abs", "x/", ".", "..", "a/b/"],
)
@pytest.mark.parametrize("via", ["ustar", "pax"])
def test_non_canonical_names_refused_at_parse_time(name: str, via: str) -> None:
    if via == "ustar":
        data = raw_header(name.encode()) + bytes(1024)
    else:
        data = tar(entry("placeholder.txt", b"x", pax_headers={"path": name}))
    with pytest.raises(TarNameError):
        read_all(data)


def test_directory_keeps_one_trailing_slash_only() -> None:
    assert read_all(raw_header(b"d/", b"5") + bytes(1024)) == [("d", b"5", b"")]
    with pytest.raises(TarNameError):
        read_all(raw_header(b"d//", b"5") + bytes(1024))


@pytest.mark.parametrize(
    "link", ["", "a//b", "../b", "/etc/passwd", "./b"], ids=["empty", "dslash", "up", "abs", "dot"]
)
def test_hardlink_targets_must_be_canonical(link: str) -> None:
    data = tar(entry("b", b"x"), entry("h", type=tarfile.LNKTYPE, linkname=link))
    with pytest.raises(TarNameError):
        read_all(data)


def test_nul_in_a_pax_path_or_link_refused() -> None:
    with pytest.raises(TarNameError):
        read_all(tar(entry("a", b"x", pax_headers={"path": "a\0b"})))
    with pytest.raises(TarNameError):
        read_all(
            tar(entry("s", type=tarfile.SYMTYPE, linkname="x", pax_headers={"linkpath": "\0"}))
        )


def test_pax_header_over_the_cap_refused_before_reading_it() -> None:
    """A pax header claiming 400 MB in a tiny archive is refused at its header: nothing
    of the claimed size is read or allocated (before, it was read whole into memory)."""
    header = raw_header(b"././@PaxHeader", b"x", size=400 * 10**6)
    data = header + b"20 path=innocent.py\n" + bytes(1024)
    reads: list[int] = []
    source = chunks(data)

    def counted() -> bytes:
        chunk = source()
        reads.append(len(chunk))
        return chunk

    reader = TarReader(counted, max_members=10, max_bytes=1 << 40)
    with pytest.raises(TarLimitError, match="pax extended header of 400000000 bytes"):
        list(reader.members())
    assert reader.consumed == 512 and sum(reads) <= 1000


def test_pax_header_just_under_the_cap_is_read() -> None:
    value = "p/" + "x" * 200
    data = tar(entry("f", b"x", pax_headers={"path": value, "comment": "c" * 5000}))
    reader = TarReader(chunks(data), max_members=10, max_bytes=1 << 20, max_pax=8192)
    assert [m.name for m in reader.members()] == [value]
    reader = TarReader(chunks(data), max_members=10, max_bytes=1 << 20, max_pax=4096)
    with pytest.raises(TarLimitError):
        list(reader.members())


def test_every_byte_read_counts_against_max_bytes() -> None:
    """Headers, padding and pax data count too, not only the data sizes: 100 empty files
    hold no data but take 51,200 bytes of headers."""
    data = tar(*(entry(f"f{i}") for i in range(100)))
    assert len(read_all(data, max_bytes=60_000)) == 100
    with pytest.raises(TarLimitError):
        read_all(data, max_bytes=40_000)


def test_a_size_claim_over_the_budget_is_refused_at_its_header() -> None:
    """A member claiming more data than the budget left is refused before any of it is
    handed out (the extractor never starts writing it)."""
    data = raw_header(b"big.bin", size=5 * 10**9) + b"x" * 512
    reader = TarReader(chunks(data), max_members=10, max_bytes=1 << 30)
    with pytest.raises(TarLimitError, match="claims 5000000000"):
        list(reader.members())
    assert reader.consumed == 512


def test_member_count_limit() -> None:
    data = tar(*(entry(f"f{i}", b"x") for i in range(11)))
    assert len(read_all(data, max_members=11)) == 11
    with pytest.raises(TarLimitError):
        read_all(data, max_members=10)


@pytest.mark.parametrize(
    ("records", "why"),
    [
        (b"99 path=x\n", "length"),
        (b"8 path=x\n\0\0", "length or newline"),  # length 8 ends before the newline
        (b"x path=a\n", "length"),
        (b"10 pathxx\n", "no keyword"),
        (b"11 path=ab\n\0JUNK", "after the padding"),
    ],
)
def test_malformed_pax_records_refused(records: bytes, why: str) -> None:
    with pytest.raises(TarStreamError, match=why):
        tarstream.parse_pax(records)


@pytest.mark.parametrize(
    ("key", "value"), [("size", "-1"), ("size", "12abc"), ("mtime", "nan"), ("mtime", "inf")]
)
def test_bad_pax_numbers_refused(key: str, value: str) -> None:
    with pytest.raises(TarStreamError):
        read_all(tar(entry("f", b"x", pax_headers={key: value})))


def test_bad_octal_field_refused() -> None:
    block = bytearray(raw_header(b"f"))
    block[100:108] = b"00006x4\0"  # mode
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    with pytest.raises(TarStreamError, match="invalid number"):
        read_all(bytes(block) + bytes(1024))


def test_unsupported_features() -> None:
    gnu = tar(entry("x/" + "n" * 120, b"x"), fmt=tarfile.GNU_FORMAT)
    with pytest.raises(UnsupportedTarError):
        read_all(gnu)
    with pytest.raises(UnsupportedTarError):
        read_all(tar(entry("f", b"x", pax_headers={"GNU.sparse.size": "1"})))


def test_truncated_stream_refused() -> None:
    data = tar(entry("a", b"x" * 600))
    for cut in (100, 700, 1100):
        with pytest.raises(TarStreamError, match="unexpected end"):
            read_all(data[:cut])


def test_source_errors_pass_through_unchanged() -> None:
    """An error of the byte source (an I/O fault of this node) is not the archive's:
    the reader does not wrap it into a TarStreamError."""

    def failing() -> bytes:
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        list(TarReader(failing, max_members=1, max_bytes=1 << 20).members())


def test_large_member_streamed_in_pieces() -> None:
    body = bytes(range(256)) * 40
    data = tar(entry("big", body))
    reader = TarReader(chunks(data, 1000), max_members=10, max_bytes=1 << 20)
    pieces: list[int] = []
    out = bytearray()
    for _ in reader.members():
        reader.copy(lambda piece: (pieces.append(len(piece)), out.extend(piece)))
    assert bytes(out) == body and max(pieces) <= 1000


def test_header_byte_sum_is_exact() -> None:
    """The checksum's fast byte sum equals `sum()` on every kind of block, the extremes
    (where the mod-65521 answer has two candidates) included."""
    rng = random.Random(7)
    blocks = [bytes(512), b"\xff" * 512, b"\x01" * 512, b"\xfe" * 511 + b"\x01"]
    blocks += [
        bytes(rng.choice((0, 255, rng.randrange(256))) for _ in range(512)) for _ in range(300)
    ]
    blocks += [rng.randbytes(512) for _ in range(3000)]
    for block in blocks:
        assert tarstream.byte_sum(block) == sum(block)


def test_numbers_read_as_tarfile_reads_them() -> None:
    fields = [b"0000644\0", b"644 \0   ", b"     644", b"\0" * 8, b"0000000 "]
    fields += [b"\x80" + (1234).to_bytes(7, "big"), b"\xff" * 8]
    for field in fields:
        assert tarstream._number(field) == tarfile.nti(field), field


def test_numbers_of_a_pax_header_block_are_checked_too() -> None:
    """Found by the differential fuzz test: tarfile refuses an archive whose pax header
    block has a broken mode field; we read only its size and accepted it."""
    data = bytearray(tar(entry("lib", type=tarfile.DIRTYPE, pax_headers={"comment": "c"})))
    data[100:108] = b"00000.0\0"
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    with pytest.raises(TarStreamError, match="invalid number"):
        read_all(bytes(data))


# -- issue 17: names, link targets and numbers are bounded at parse time -------------------


def deep(depth: int, part: str = "a") -> str:
    return "/".join([part] * depth)


@pytest.mark.parametrize(
    ("name", "attrs", "why"),
    [
        ("n" * 256, {}, "component"),
        ("lib/" + "é" * 128, {}, "component"),  # 128 characters, 256 bytes
        ("b" + deep(2048), {}, "longer than"),  # 4096 bytes: PATH_MAX counts its NUL
        ("l", {"type": tarfile.SYMTYPE, "linkname": "b" + deep(2048)}, "longer than"),
        ("l", {"type": tarfile.SYMTYPE, "linkname": "../" + "t" * 256}, "component"),
        ("l", {"type": tarfile.SYMTYPE, "linkname": "a/" * 500_000}, "longer than"),
        ("h", {"type": tarfile.LNKTYPE, "linkname": "b" + deep(2048)}, "longer than"),
        (deep(1500), {}, "components"),  # raised RecursionError in os.makedirs
        ("l", {"type": tarfile.SYMTYPE, "linkname": "../" * 257 + "x"}, "components"),
    ],
    ids=[
        *("component", "component-utf8", "path", "target", "target-part", "target-1MiB"),
        *("hard", "deep-name", "deep-target"),
    ],
)
def test_names_and_link_targets_capped(name: str, attrs: dict, why: str) -> None:
    """A 1 MiB symlink target of 500,000 parts cost the extraction policy K^2 time (187 s
    of CPU for an 852-byte artifact); a name component no filesystem can hold was left
    to fail at write time. The reader refuses both before any policy sees them."""
    with pytest.raises(TarNameError, match=why):
        read_all(tar(entry(name, **attrs)))


def test_names_at_the_caps_are_read() -> None:
    longest = "/".join(["p" * 255] * 15) + "/" + "f" * 254  # 4094 bytes
    deepest = deep(256)
    target = "../" * 255 + "t" * 255  # 256 components
    members = read_all(
        tar(
            entry(longest, b"x"),
            entry(deepest, b"y"),
            entry("l", type=tarfile.SYMTYPE, linkname=target),
        )
    )
    assert [m[0] for m in members] == [longest, deepest, "l"]


def test_name_bytes_budget() -> None:
    """Names and link targets are held for the whole extraction (links are made last):
    their total is capped, so 100,000 symlinks with 4 kB targets cannot cost GBs."""
    target = deep(20, "t" * 200)  # 4019 characters
    members = [entry(f"l{i}", type=tarfile.SYMTYPE, linkname=target) for i in range(40)]
    reader = TarReader(chunks(tar(*members)), max_members=100, max_bytes=1 << 30, max_names=50_000)
    with pytest.raises(TarLimitError, match="names"):
        list(reader.members())


@pytest.mark.parametrize(
    ("attrs", "fmt"),
    [
        ({"pax_headers": {"mtime": "1e20"}}, tarfile.PAX_FORMAT),
        ({"pax_headers": {"mtime": "-1e20"}}, tarfile.PAX_FORMAT),
        ({"mtime": 2**70}, tarfile.GNU_FORMAT),  # base-256 in the header
        ({"pax_headers": {"size": "1" * 5000}}, tarfile.PAX_FORMAT),
        ({"pax_headers": {"mtime": "1" * 5000}}, tarfile.PAX_FORMAT),
    ],
    ids=[
        "pax-mtime-1e20",
        "pax-mtime-neg",
        "base256-mtime",
        "pax-size-5000-digits",
        "pax-mtime-digits",
    ],
)
def test_numbers_out_of_range_refused_at_parse(attrs: dict, fmt: int) -> None:
    """These raised OverflowError (os.utime) or ValueError (int() of over 4300 digits):
    never quarantined, so the daemon redeployed the build every pass. Now the reader
    refuses them as the archive's, with the field named."""
    with pytest.raises(TarStreamError, match="mtime|size"):
        read_all(tar(entry("f", b"x", **attrs), fmt=fmt))


def test_any_parse_error_is_the_archives(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the parsing code raises about the bytes (here a ValueError injected into
    the pax parser: a shape no test found yet) is a TarStreamError naming it; the
    source's own errors still pass through unchanged (test above)."""

    def broken(data: bytes) -> dict[str, str]:
        raise ValueError("a shape nobody thought of")

    monkeypatch.setattr(tarstream, "parse_pax", broken)
    with pytest.raises(TarStreamError, match="ValueError: a shape nobody thought of"):
        read_all(tar(entry("f", b"x", pax_headers={"comment": "c"})))

"""A pure reader of ustar/pax tar streams: members and their data, in archive order.

Job: turn an (already decompressed) byte stream into members whose names are canonical
and whose sizes fit the caller's budget, reading and holding a bounded amount of memory
whatever the header fields claim. It imports nothing from the rest of the project and
touches no filesystem: the policy (what may be written where) is the extractor's,
`agent/extract.py`. Callers: the extractor and the tests (tests/test_tarstream.py,
the differential fuzz test against `tarfile` in tests/test_tarstream_fuzz.py).

What it reads, as `tarfile` reads it: ustar headers (prefix field included, V7
directories), pax 'x' extended headers with the standard keywords, regular files,
directories, symlinks, hardlinks, and devices/fifos (returned, for the caller to refuse
by name). What it refuses, with a `TarStreamError` saying why:
- other tar features (GNU long names, pax global headers, sparse files, unknown types);
- non-canonical names, so no later step has to normalise: absolute, empty, `.` or `..`
  components, `//`, a trailing `/` on anything but a directory, NUL; the same for
  hardlink targets (they name another member), and empty or NUL symlink targets;
- names and link targets longer than a path can be (PATH_MAX: 4095 bytes and its NUL),
  with a component over NAME_MAX (255 bytes) or more than MAX_DEPTH components,
  refused before any policy walks them: the work per member is then bounded by
  constants whatever a pax header holds, and no tree we write is too deep for a
  recursive walk (`shutil.rmtree`, `os.walk`) to remove or scan it;
- times outside what `os.utime` takes (`MTIME_RANGE`), numbers of over 20 digits;
- a pax extended header over `max_pax` bytes (tarfile-compatible writers need a few kB);
- more members than `max_members`, more bytes than `max_bytes`: every byte read counts
  (headers, extended headers, data, padding), refused before it is read; more than
  `max_names` characters of names and link targets in all (the extractor holds them).
Anything else the parsing raises (ValueError, OverflowError, ...) is turned into a
TarStreamError: it is a property of the bytes. Only the source's own errors pass as
they are. Memory: one source chunk plus what the caller asks for with `data()`;
`copy()` streams.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

from .errors import ArtifactsError

BLOCK = 512
MAX_PAX_BYTES = 1 << 20  # a pax header of a real archive holds a few long names: kB
PATH_MAX = 4095  # bytes of a path (Linux PATH_MAX, 4096, counts the NUL)
NAME_MAX = 255  # bytes of one component
# components of a name or link target: real envs stay below 40 (node_modules); Python's
# recursive tree walks (rmtree, makedirs) fail near 1000
MAX_DEPTH = 256
# characters of all names and link targets of an archive: the extractor keeps them (file
# names for hardlinks, links until the end). A 200,000-file env has ~20 M; 4 kB links by
# the 100,000 would cost GBs of RSS
MAX_NAME_CHARS = 256 << 20
# mtimes os.utime takes on every filesystem we deploy to (signed 64-bit nanoseconds),
# far beyond any real archive's: outside it, utime raised OverflowError
MTIME_RANGE = (-(2**62) / 1e9, 2**62 / 1e9)
MAX_DIGITS = 20  # of a pax number (2**64 has 20): int() of 4300+ digits raises ValueError

REGULAR = (b"0", b"\0", b"7")  # REGTYPE, AREGTYPE, CONTTYPE
LINK, SYMLINK, CHR, BLK, DIRECTORY, FIFO = b"1", b"2", b"3", b"4", b"5", b"6"
_PAX = b"x"
_KNOWN = frozenset((*REGULAR, LINK, SYMLINK, CHR, BLK, DIRECTORY, FIFO))
_ZERO_BLOCK = bytes(BLOCK)
_OCTAL = frozenset(b"01234567")
_ZERO_IDS = b"0000000\0" * 2  # uid, gid as tarfile and our packer write them: 0
_NO_DEVICE = (bytes(16), b"0000000\0" * 2)


class TarStreamError(ArtifactsError):
    """The stream is not an archive this reader accepts; the message says why. Always a
    property of the archive bytes (the same on every read), never of the reader."""


class UnsupportedTarError(TarStreamError):
    """A tar feature this reader does not read (GNU long names, pax globals, ...)."""


class TarNameError(TarStreamError):
    """A member or hardlink-target name that is not canonical."""


class TarLimitError(TarStreamError):
    """More members or bytes than the caller's limits, or an oversized extended header."""


class TarMember(NamedTuple):
    """One member, pax header applied: the fields an extractor needs (a NamedTuple: one
    is made per member, and this is the cheapest record Python has)."""

    type: bytes  # one byte: see REGULAR, LINK, SYMLINK, ...
    name: str  # canonical, relative, no trailing slash
    mode: int
    size: int  # data bytes (0 for everything but regular files)
    mtime: float
    linkname: str
    devmajor: int
    devminor: int
    pax: dict[str, str] | None

    def isreg(self) -> bool:
        return self.type in REGULAR

    def isdir(self) -> bool:
        return self.type == DIRECTORY


def _number(field: bytes) -> int:
    """A numeric header field, as tarfile's `nti` reads it: octal digits (spaces and
    what follows a NUL ignored), or GNU base-256 (first byte 0x80 / 0xff)."""
    try:  # the usual "0000644\0": one int(); it takes nothing tarfile's int() would not
        return int(field.rstrip(b"\0 "), 8)
    except ValueError:
        pass
    if field and field[0] in (0o200, 0o377):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0o377 else value
    end = field.find(b"\0")
    digits = (field if end < 0 else field[:end]).strip(b" ")
    if not digits:
        return 0
    if not _OCTAL.issuperset(digits):
        raise TarStreamError(f"invalid number {bytes(field)!r} in a tar header")
    return int(digits, 8)


def _numbers(block: bytes) -> tuple[int, int, int, int, int]:
    """(mode, size, mtime, devmajor, devminor) of a header block. Every numeric field is
    parsed, of every header (pax ones too), as tarfile does: a broken one refuses the
    archive."""
    mode, size, mtime = _number(block[100:108]), _number(block[124:136]), _number(block[136:148])
    if block[108:124] != _ZERO_IDS:
        _number(block[108:116]), _number(block[116:124])  # uid, gid: read, not used
    devmajor = devminor = 0
    if block[329:345] not in _NO_DEVICE:
        devmajor, devminor = _number(block[329:337]), _number(block[337:345])
    return mode, size, mtime, devmajor, devminor


def _text(field: bytes) -> str:
    """A text header field: up to the first NUL, decoded as tarfile decodes names."""
    end = field.find(b"\0")
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


_LOW_BITS = int.from_bytes(b"\1" * BLOCK, "little")


def byte_sum(block: bytes) -> int:
    """`sum(block)` of a 512-byte header in a third of the time (it runs for every
    member; the deploy benchmark shows it): adler32 gives the sum mod 65521, the count of
    odd bytes its parity, and as 65521 is odd the two fix the sum below 2 * 65521 >
    512 * 255 exactly (tests/test_tarstream.py checks it against `sum`)."""
    low = ((zlib.adler32(block) & 0xFFFF) - 1) % 65521
    if (int.from_bytes(block, "little") & _LOW_BITS).bit_count() & 1 != low & 1:
        low += 65521
    return low


def _checksum_ok(block: bytes) -> bool:
    """The header checksum, unsigned or (old tars) signed, as tarfile accepts it."""
    stored = _number(block[148:156])
    if stored == 256 + byte_sum(block) - sum(block[148:156]):
        return True
    return stored == 256 + sum(struct.unpack_from("148b8x356b", block))


def check_length(path: str, what: str) -> None:
    """TarNameError if `path` (a name or a link target) is longer than PATH_MAX bytes,
    has a component longer than NAME_MAX bytes or more than MAX_DEPTH components. Cheap
    for the usual short ASCII name (255 characters hold neither)."""
    if path.isascii():
        if len(path) <= NAME_MAX:
            return
        size, parts = len(path), path.split("/")
        longest = max(map(len, parts))
    else:
        encoded = path.encode("utf-8", "surrogateescape")
        size, bparts = len(encoded), encoded.split(b"/")
        longest, parts = max(map(len, bparts)), bparts  # type: ignore[assignment]
    if size > PATH_MAX:
        raise TarNameError(f"{what} {path[:64]!r}...: longer than {PATH_MAX} bytes ({size})")
    if longest > NAME_MAX:
        raise TarNameError(
            f"{what} {path[:64]!r}...: a component longer than {NAME_MAX} bytes ({longest})"
        )
    if len(parts) > MAX_DEPTH:
        raise TarNameError(
            f"{what} {path[:64]!r}...: more than {MAX_DEPTH} components ({len(parts)})"
        )


def canonical_name(name: str, what: str = "member") -> str:
    """`name` if it is a canonical relative path (no leading, trailing or double `/`, no
    `.` or `..` part, no NUL), else TarNameError."""
    wrapped = f"/{name}/"
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped or "\0" in name:
        if not name:
            raise TarNameError(f"{what} without a name")
        if name[0] == "/":
            raise TarNameError(f"{what} {name!r}: absolute path")
        if "\0" in name:
            raise TarNameError(f"{what} {name!r}: NUL in the name")
        raise TarNameError(f"{what} {name!r}: not a canonical path (empty, '.' or '..' part)")
    return name


def parse_pax(data: bytes) -> dict[str, str]:
    """The `"%d %s=%s\\n"` records of a pax extended header (strictly: each record's length
    must match, keys are UTF-8, nothing but NUL padding after the last record)."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space]
        if space < 0 or not digits.isdigit():
            raise TarStreamError("invalid pax header record (length)")
        length = int(digits)
        record = data[space + 1 : pos + length]
        if pos + length > len(data) or not record.endswith(b"\n"):
            raise TarStreamError("invalid pax header record (length or newline)")
        key, eq, value = record[:-1].partition(b"=")
        if not eq or not key:
            raise TarStreamError("invalid pax header record (no keyword)")
        try:
            keyword = key.decode("utf-8")
        except UnicodeDecodeError:
            raise TarStreamError("invalid pax header record (keyword not UTF-8)") from None
        out[keyword] = value.decode("utf-8", "surrogateescape")
        pos += length
    if data[pos:].strip(b"\0"):
        raise TarStreamError("invalid pax header record (data after the padding)")
    return out


def _pax_int(pax: dict[str, str], key: str, default: int) -> int:
    value = pax.get(key)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or len(value) > MAX_DIGITS:
        raise TarStreamError(f"invalid pax {key}={value[:40]!r}")
    return int(value)


def _pax_time(pax: dict[str, str], default: float) -> float:
    value = pax.get("mtime")
    if value is None:
        return default
    try:
        mtime = float(value)
    except ValueError:
        raise TarStreamError(f"invalid pax mtime={value[:40]!r}") from None
    if not math.isfinite(mtime) or not value.isascii():
        raise TarStreamError(f"invalid pax mtime={value[:40]!r}")
    return mtime


def _check_mtime(mtime: float, name: str) -> None:
    if not MTIME_RANGE[0] < mtime < MTIME_RANGE[1]:
        raise TarStreamError(f"member {name[:64]!r}: mtime {mtime:g} out of range")


class _Buffer:
    """Bytes of the stream, pulled one source chunk at a time; counts every byte taken
    against the budget before taking it."""

    def __init__(self, next_chunk: Callable[[], bytes], max_bytes: int) -> None:
        self._next_chunk = next_chunk
        self._buf = b""
        self._pos = 0
        self.max_bytes = max_bytes
        self.consumed = 0  # bytes of the stream taken or skipped so far
        self.source_error: BaseException | None = None

    def _spend(self, size: int) -> None:
        if self.consumed + size > self.max_bytes:
            raise TarLimitError(f"archive holds more than {self.max_bytes} bytes")
        self.consumed += size

    def _refill(self) -> None:
        try:
            chunk = self._next_chunk()
        except BaseException as exc:
            self.source_error = exc  # the source's, not the archive's: passed through
            raise
        if not chunk:
            raise TarStreamError("unexpected end of data")
        self._buf, self._pos = chunk, 0

    def take(self, size: int) -> bytes:
        """Exactly `size` bytes."""
        self._spend(size)
        end = self._pos + size
        if end <= len(self._buf):
            out = self._buf[self._pos : end]
            self._pos = end
            return out
        pieces = [self._buf[self._pos :]]
        need = end - len(self._buf)
        while True:
            self._refill()
            if len(self._buf) >= need:
                pieces.append(self._buf[:need])
                self._pos = need
                return b"".join(pieces)
            pieces.append(self._buf)
            need -= len(self._buf)

    def view(self, size: int, pad: int) -> bytes | memoryview:
        """Exactly `size` bytes, without a copy when they lie in the current chunk (a
        file's data: the view keeps its chunk alive only until the file is written);
        then skips `pad` bytes."""
        end = self._pos + size
        if end + pad > len(self._buf):
            out = self.take(size)
            self.skip(pad)
            return out
        self._spend(size + pad)
        out = memoryview(self._buf)[self._pos : end]
        self._pos = end + pad
        return out

    def skip(self, size: int) -> None:
        self._spend(size)
        end = self._pos + size
        while end > len(self._buf):
            end -= len(self._buf)
            self._refill()
        self._pos = end

    def pieces(self, size: int) -> Iterator[memoryview]:
        """`size` bytes as views of successive chunks (never all of them held at once)."""
        self._spend(size)
        while size:
            if self._pos == len(self._buf):
                self._refill()
            n = min(size, len(self._buf) - self._pos)
            yield memoryview(self._buf)[self._pos : self._pos + n]
            self._pos += n
            size -= n


class TarReader:
    """Members of a tar stream in archive order, under limits.

    `next_chunk()` returns the next piece of the decompressed stream (`b""` at its end;
    any exception it raises passes through unchanged). Iterate `members()`; a regular
    member's data is read with `data()` (whole, for small files) or `copy(write)`
    before the next member is asked for (whatever is left is skipped)."""

    def __init__(
        self,
        next_chunk: Callable[[], bytes],
        *,
        max_members: int,
        max_bytes: int,
        max_pax: int = MAX_PAX_BYTES,
        max_names: int = MAX_NAME_CHARS,
    ) -> None:
        self._buffer = _Buffer(next_chunk, max_bytes)
        self.max_members = max_members
        self.max_pax = max_pax
        self.max_names = max_names
        self._names = 0  # characters of names and link targets so far
        self.count = 0  # members read so far
        self._left = 0  # data bytes of the current member not read yet
        self._pad = 0  # padding after them

    @property
    def consumed(self) -> int:
        """Bytes of the stream read so far (what `max_bytes` limits)."""
        return self._buffer.consumed

    def members(self) -> Iterator[TarMember]:
        while True:
            if self._left or self._pad:
                self._buffer.skip(self._left + self._pad)
                self._left = self._pad = 0
            member = self._parse_next()
            if member is None:
                return
            self.count += 1
            if self.count > self.max_members:
                raise TarLimitError(f"archive has more than {self.max_members} members")
            if member.type in REGULAR:
                self._left, self._pad = member.size, -member.size % BLOCK
                room = self._buffer.max_bytes - self._buffer.consumed
                if self._left + self._pad > room:  # refused before any of it is written
                    raise TarLimitError(
                        f"archive holds more than {self._buffer.max_bytes} bytes "
                        f"(member {member.name!r} claims {member.size})"
                    )
            yield member

    def data(self) -> bytes | memoryview:
        """All data of the current regular member (the caller bounds its size)."""
        out = self._buffer.view(self._left, self._pad)
        self._left = self._pad = 0
        return out

    def copy(self, write: Callable[[memoryview], object]) -> None:
        """Hand the current member's data to `write` piece by piece (large files)."""
        left, self._left = self._left, 0
        for piece in self._buffer.pieces(left):
            write(piece)

    def _parse_next(self) -> TarMember | None:
        """`_next_member`, with anything its parsing raises made a TarStreamError: the
        parse is a function of the bytes alone (the same on every node and every try),
        so an error there - a shape no check foresaw - is the archive's, never the
        node's. The source's own errors (I/O, decompression) pass through unchanged."""
        try:
            return self._next_member()
        except TarStreamError:
            raise
        except Exception as exc:
            if exc is self._buffer.source_error:
                raise
            raise TarStreamError(f"unreadable header: {type(exc).__name__}: {exc}") from exc

    def _next_member(self) -> TarMember | None:
        """The next member (with its pax header applied), or None at the end marker."""
        pax: dict[str, str] | None = None
        while True:
            block = self._buffer.take(BLOCK)
            if block == _ZERO_BLOCK:
                if pax is not None:
                    raise TarStreamError("pax header without a member")
                return None
            if not _checksum_ok(block):
                raise TarStreamError("bad checksum in a tar header")
            numbers = _numbers(block)
            kind = block[156:157]
            if kind != _PAX:
                break
            if pax is not None:
                raise UnsupportedTarError("two pax headers for one member")
            size = numbers[1]
            if not 0 <= size <= self.max_pax:
                raise TarLimitError(f"pax extended header of {size} bytes (limit {self.max_pax})")
            pax = parse_pax(self._buffer.take(size))
            self._buffer.skip(-size % BLOCK)
        return self._member(block, kind, numbers, pax)

    def _member(
        self,
        block: bytes,
        kind: bytes,
        numbers: tuple[int, int, int, int, int],
        pax: dict[str, str] | None,
    ) -> TarMember:
        mode, size, mtime_int, devmajor, devminor = numbers
        mtime: float = mtime_int
        name = _text(block[:100])
        if kind not in _KNOWN:
            raise UnsupportedTarError(f"member type {kind!r} in {name!r}")
        linkname = _text(block[157:257])
        if kind == b"\0" and name.endswith("/"):  # a V7 directory, as tarfile reads it
            kind = DIRECTORY
        if block[345] != 0:
            name = _text(block[345:500]) + "/" + name
        if pax is not None:
            for key in pax:
                if key.startswith("GNU."):
                    raise UnsupportedTarError(f"pax keyword {key!r} in {name!r}")
            name = pax.get("path", name)
            linkname = pax.get("linkpath", linkname)
            size = _pax_int(pax, "size", size)
            mtime = _pax_time(pax, mtime)
        if kind == DIRECTORY and name.endswith("/"):
            name = name[:-1]  # tarfile writes directories as `name/`: one slash, no more
        check_length(name, "member")
        canonical_name(name)
        _check_mtime(mtime, name)
        self._names += len(name)
        if kind in (LINK, SYMLINK):
            check_length(linkname, f"member {name!r}: link target")
            if not linkname or "\0" in linkname:
                raise TarNameError(f"member {name!r}: empty or NUL link target")
            if kind == LINK:
                canonical_name(linkname, f"hardlink {name!r} to")
            self._names += len(linkname)
        if self._names > self.max_names:
            raise TarLimitError(f"archive names hold more than {self.max_names} characters")
        if size < 0 or mode < 0:
            raise TarStreamError(f"negative size or mode in {name!r}")
        if kind not in REGULAR:
            size = 0  # tarfile reads no data for other members either
        return TarMember(kind, name, mode, size, mtime, linkname, devmajor, devminor, pax)

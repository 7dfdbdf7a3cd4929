"""Differential fuzzing: the agent's reader + extraction policy vs Python's `tarfile`
with `filter="data"`, on generated and mutated archives.

The property: whenever ours accepts an archive, tarfile's data filter extracts it too,
without any error, into the same tree (names, types, file bytes and modes, symlink
targets). Ours may refuse more (non-canonical names, `.nsls2/`, duplicates, features
it does not read), never less. Ours never fails any other way than a clear refusal
(`RejectedArtifactError`, or an OSError the failure classification calls the
artifact's). A bounded number of cases runs in the suite; `just fuzz` runs many more
(`NSLS2_FUZZ_CASES`, `NSLS2_FUZZ_SEED`).
"""

from __future__ import annotations

import io
import os
import random
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from nsls2_artifacts.agent import extract, failures
from nsls2_artifacts.errors import RejectedArtifactError

CASES = int(os.environ.get("NSLS2_FUZZ_CASES", "150"))
SEED = int(os.environ.get("NSLS2_FUZZ_SEED", "20261201"))

PARTS = ["a", "b", "lib", "bin", "x.py", "é", ".nsls2", ".hidden", "..", ".", "", "n" * 120]
MODES = [0o644, 0o755, 0o600, 0o777, 0o4755, 0o2775, 0o1777, 0o000, 0o111, 0o7777]
# issue 17: names and targets at and over the caps (4095 bytes, 255 per part, 256 parts),
# deep enough for recursive makedirs; times and numbers os.utime / int() choke on
LONG_PARTS = ["p" * 255, "p" * 256, "é" * 127, "é" * 128]
DEPTHS = [255, 256, 257, 1500]
MTIMES = [0, 1_700_000_000, 1_700_000_000.5, 2**40, 2**70, 1e20, -1e20]
PAX_NUMBERS = [("mtime", "1e20"), ("mtime", "-1e20"), ("mtime", "9" * 400), ("size", "1" * 5000)]


def long_name(rng: random.Random) -> str:
    """A name at or past one of the reader's caps (issue 17, item 1)."""
    roll = rng.random()
    if roll < 0.4:
        return "/".join(rng.choice("ab") for _ in range(rng.choice(DEPTHS)))
    if roll < 0.7:
        return "/".join(rng.choice(LONG_PARTS) for _ in range(rng.randint(1, 17)))
    return "lib/" + rng.choice(LONG_PARTS)


def random_name(rng: random.Random, known: list[str], hostile: bool) -> str:
    if known and rng.random() < 0.3:  # below or next to an earlier member
        base = rng.choice(known)
        return base + "/" + rng.choice(PARTS[:6]) if rng.random() < 0.7 else base
    if hostile and rng.random() < 0.08:
        return long_name(rng)
    pool = PARTS if hostile and rng.random() < 0.3 else PARTS[:5]
    parts = [rng.choice(pool) for _ in range(rng.randint(1, 4))]
    name = "/".join(parts)
    roll = rng.random() if hostile else 1.0
    if roll < 0.05:
        name = "/" + name
    elif roll < 0.1:
        name = "./" + name
    elif roll < 0.13:
        name += "/"
    return name


def random_link(rng: random.Random, name: str, known: list[str], hostile: bool) -> str:
    roll = rng.random() if hostile else rng.random() / 2
    if known and roll < 0.5:
        target = rng.choice(known)
        if rng.random() < 0.5:  # relative to the link's directory, as symlinks are read
            depth = name.count("/")
            target = "../" * depth + target
        return target
    if roll < 0.6:
        return "/etc/passwd"
    if roll < 0.7:
        return "../" * rng.randint(1, 4) + "escaped"
    if roll < 0.75:  # many parts (K^2 walks before issue 17), or a 1 MiB target
        return rng.choice([long_name(rng), "a/" * rng.choice([300, 100_000])])
    return "/".join(rng.choice(PARTS) for _ in range(rng.randint(1, 3)))


def generate(rng: random.Random, hostile: bool | None = None) -> bytes:
    """A tar archive of a few random members, written by tarfile itself; half of them
    avoid the plainly hostile shapes, so the accepting side is reached often."""
    if hostile is None:
        hostile = rng.random() < 0.5
    known: list[str] = []
    members: list[tuple[tarfile.TarInfo, bytes]] = []
    for _ in range(rng.randint(1, 8)):
        name = random_name(rng, known, hostile)
        info = tarfile.TarInfo(name)
        info.mode = rng.choice(MODES)
        info.mtime = rng.choice(MTIMES if hostile and rng.random() < 0.1 else MTIMES[:3])
        kind = rng.choices(
            [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE],
            weights=[10, 4, 3, 2, 1 if hostile else 0],
        )[0]
        info.type = kind
        data = b""
        if kind == tarfile.REGTYPE:
            data = rng.randbytes(rng.choice([0, 1, 511, 512, 513, 3000]))
            info.size = len(data)
        elif kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            info.linkname = random_link(rng, name, known, hostile)
        if rng.random() < 0.1:
            info.pax_headers = {"comment": "x" * rng.randint(0, 300)}
        elif hostile and rng.random() < 0.05:
            info.pax_headers = dict([rng.choice(PAX_NUMBERS)])
        members.append((info, data))
        known.append(name.strip("/") or "a")
    raw = io.BytesIO()
    fmt = rng.choice(
        [tarfile.PAX_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT]
    )
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for info, data in members:
            try:
                tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
            except (ValueError, OverflowError):  # ustar/GNU cannot hold it: leave it out
                continue
    return raw.getvalue()


def header_blocks(data: bytes) -> list[int]:
    """Offsets of 512-byte blocks whose checksum is right (the headers)."""
    found = []
    for offset in range(0, len(data) - 511, 512):
        block = data[offset : offset + 512]
        if any(block) and tarfile.calc_chksums(block)[0] == _stored(block):
            found.append(offset)
    return found


def _stored(block: bytes) -> int:
    try:
        return tarfile.nti(block[148:156])
    except tarfile.InvalidHeaderError:
        return -1


def _fix_checksum(data: bytearray, offset: int) -> None:
    block = data[offset : offset + 512]
    block[148:156] = b" " * 8
    data[offset + 148 : offset + 156] = b"%06o\0 " % sum(block)


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        heads = header_blocks(bytes(out))
        roll = rng.random()
        if roll < 0.6 and heads:  # a header field, checksum fixed so the parse goes on
            offset = rng.choice(heads)
            field = rng.choice(
                [(0, 100), (100, 108), (124, 136), (136, 148), (156, 157), (157, 257), (345, 500)]
            )
            pos = offset + rng.randrange(*field)
            out[pos] = rng.choice([0, 0x2F, 0x2E, 0x30, 0x37, 0x20, 0xFF, rng.randrange(256)])
            _fix_checksum(out, offset)
        elif roll < 0.75 and out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif roll < 0.85 and out:
            del out[rng.randrange(len(out)) :]
        elif heads:  # a header twice
            offset = rng.choice(heads)
            out[offset:offset] = out[offset : offset + 512]
    return bytes(out)


def ours(archive: Path, dest: Path) -> bool:
    """True if our extraction accepts the archive; False if it refuses it clearly."""
    try:
        extract.safe_extract(
            archive, "tar", dest, build_id="fuzz", max_members=100, max_bytes=1 << 24
        )
    except RejectedArtifactError:
        return False
    except OSError as exc:  # must be one the classification blames on the archive
        failure = failures.classify(exc, "extract")
        assert failure is not None and failure.kind == failures.ARTIFACT, repr(exc)
        return False
    return True


def theirs(archive: Path, dest: Path) -> bool:
    """True if tarfile's data filter extracts every member without any error."""
    try:
        with tarfile.open(archive, "r:") as tar:
            tar.errorlevel = 2
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, ValueError, KeyError, EOFError):
        return False
    return True


def tree_without_hardlink_modes(root: Path) -> dict[str, tuple[str, object]]:
    """Every entry's kind and bytes or link target, and the mode of each file that is not
    hardlinked (ours and tarfile give a hardlinked inode different headers' modes)."""
    out: dict[str, tuple[str, object]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            key = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[key] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[key] = ("dir", None)
            else:
                # a hardlinked inode has two headers' modes: tarfile applies the link's,
                # we keep the file's (both filtered): only the bytes must agree
                mode = stat.S_IMODE(st.st_mode) if st.st_nlink == 1 else None
                out[key] = ("file", (path.read_bytes(), mode))
    return out


def check_case(archive: bytes, work: Path) -> bool:
    """Run both on one archive; returns whether ours accepted it."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    path = work / "a.tar"
    path.write_bytes(archive)
    (work / "ours").mkdir()
    (work / "theirs").mkdir()
    accepted = ours(path, work / "ours")
    if accepted:
        assert theirs(path, work / "theirs"), "ours accepted what tarfile's data filter refused"
        trees = [tree_without_hardlink_modes(work / side) for side in ("ours", "theirs")]
        assert trees[0] == trees[1]
    return accepted


@pytest.mark.parametrize("kind", ["generated", "mutated"])
def test_never_accepts_what_the_data_filter_refuses(tmp_path: Path, kind: str) -> None:
    rng = random.Random(f"{SEED}-{kind}")
    accepted = 0
    for case in range(CASES):
        # mutated: mutations of clean archives, the parser's edge cases
        mutated = kind == "mutated"
        archive = mutate(rng, generate(rng, hostile=False)) if mutated else generate(rng)
        try:
            accepted += check_case(archive, tmp_path / "case")
        except AssertionError as exc:
            saved = tmp_path / f"failing-{case}.tar"
            saved.write_bytes(archive)
            raise AssertionError(f"case {case} (seed {SEED}, saved {saved}): {exc}") from None
    # the generator must reach the accepting side, or the property says nothing
    enough = CASES // 50 if kind == "mutated" else CASES // 10
    assert accepted >= enough, f"only {accepted} of {CASES} archives accepted"

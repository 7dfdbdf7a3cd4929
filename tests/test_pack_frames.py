"""Per-package frames, the content index and the incremental pack, on real installed envs.

Two builds of the demo env that differ by one package (six 1.16.0 -> 1.17.0) are installed
by rattler from the offline channel at the same scratch path (as publish does), given
their hash-based pycs (install.compile_bytecode) and packed: A in full, B in full and B
incrementally from A. Checked: the index lists every member with the right hash, frames
decode on their own, stock `tar -I zstd` reads the archive, `rewritten` covers everything
conda-unpack changes in a real unpack, everything outside the changed package is
byte-identical between the builds, and the incremental archive extracts to exactly what
the full pack does.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard
from conda_pack.compat import find_py_source
from conda_pack.core import CondaEnv
from support.build import BUILD_CACHE, conda_unpack, env_python, extract

from nsls2_artifacts import install, pack, solve
from nsls2_artifacts.config import load_config
from nsls2_artifacts.contentindex import ContentIndex, file_sha256
from nsls2_artifacts.manifest import load_manifest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Packs:
    full_a: pack.PackResult
    full_b: pack.PackResult
    incremental_b: pack.PackResult
    owners_b: dict[str, str]  # member -> conda package, from build B's conda-meta


def _manifests(root: Path, six: str) -> Path:
    manifests = root / f"manifests-{six}"
    shutil.copytree(REPO / "manifests" / "demo", manifests / "demo")
    with open(manifests / "demo" / "pixi.toml", "a") as handle:
        handle.write(f'six = "=={six}"\n')
    return manifests


def _build(root: Path, channel: Path, six: str, prefix: Path) -> dict[str, str]:
    manifests = _manifests(root, six)
    (root / "site.yaml").write_text(
        f"manifests: {manifests}\nstore: {root / 'store'}\ndeploy_root: {root / 'deploy'}\n"
        f"channel_mirrors: {{conda-forge: {channel}}}\n"
    )
    site = load_config(root / "site.yaml")
    solution = solve.solve(load_manifest(site.manifests, "demo"), site, cache_dir=BUILD_CACHE)
    shutil.rmtree(prefix, ignore_errors=True)
    install.install(solution, prefix, BUILD_CACHE)
    install.compile_bytecode(prefix, BUILD_CACHE, pack.DEFAULT_EPOCH)
    owners = {}
    for meta in (prefix / "conda-meta").glob("*.json"):
        data = json.loads(meta.read_text())
        owners[f"conda-meta/{meta.name}"] = data["name"]
        owners.update(dict.fromkeys(data["files"], data["name"]))
    return owners


@pytest.fixture(scope="module")
def packs(tmp_path_factory: pytest.TempPathFactory, offline_channel: Path) -> Packs:
    root = tmp_path_factory.mktemp("frames")
    prefix = root / "scratch" / "prefix"  # one path for both builds, as publish uses
    _build(root, offline_channel, "1.16.0", prefix)
    full_a = pack.pack(prefix, root / "a.tar.zst")
    owners_b = _build(root, offline_channel, "1.17.0", prefix)
    full_b = pack.pack(prefix, root / "b.tar.zst")
    assert full_a.index is not None
    with open(full_a.path, "rb") as stream:
        previous = pack.PreviousPack(stream, full_a.index)
        incremental_b = pack.pack(prefix, root / "b-incremental.tar.zst", previous=previous)
    return Packs(full_a, full_b, incremental_b, owners_b)


def _members(archive: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with (
        open(archive, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar]  # type: ignore[union-attr]


def _index(result: pack.PackResult) -> ContentIndex:
    assert result.index is not None
    # what the store holds is the serialised form: check it survives the round trip
    assert ContentIndex.from_bytes(result.index.to_bytes()) == result.index
    return result.index


def test_index_lists_every_member_with_its_hash(packs: Packs) -> None:
    index = _index(packs.full_b)
    members = _members(packs.full_b.path)
    assert [m.name for m, _ in members] == [e.path for e in index.entries]
    assert index.archive_sha256 == packs.full_b.sha256
    for (member, data), entry in zip(members, index.entries, strict=True):
        kind = "file" if member.isreg() else "dir" if member.isdir() else "symlink"
        assert (entry.type, entry.mode) == (kind, member.mode), entry.path
        assert member.mtime == pack.DEFAULT_EPOCH, entry.path  # fixed: equal files, equal bytes
        if kind == "file":
            assert (entry.size, entry.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        if kind == "symlink":
            assert entry.target == member.linkname
    # the pycs install compiled ship with their package (conda-pack alone drops them)
    assert "lib/python3.11/site-packages/__pycache__/six.cpython-311.pyc" in index.files()
    # ... and every pyc is unchecked-hash (PEP 552 flags word 0b01): its bytes depend on
    # the source's bytes only, never on an mtime, so equal sources give equal pycs
    pycs = {m.name: data for m, data in members if m.name.endswith(".pyc")}
    assert len(pycs) > 100, len(pycs)
    for name, data in pycs.items():
        assert int.from_bytes(data[4:8], "little") == 0b01, name


def test_source_date_epoch_is_every_member_s_mtime(
    packs: Packs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`$SOURCE_DATE_EPOCH` (reproducible builds) replaces the default mtime: the same
    files as the default pack, every member at that time; a value that is no time in
    seconds is refused before anything is written."""
    prefix = packs.full_b.path.parent / "scratch" / "prefix"  # build B, as the fixture left it
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    again = pack.pack(prefix, tmp_path / "epoch.tar.zst")
    stamped = _members(again.path)
    assert {m.mtime for m, _ in stamped} == {1700000000}
    default = _members(packs.full_b.path)
    assert [(m.name, m.mode, data) for m, data in stamped] == [
        (m.name, m.mode, data) for m, data in default
    ]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(pack.PackError, match="SOURCE_DATE_EPOCH='yesterday'"):
        pack.pack(prefix, tmp_path / "bad.tar.zst")
    assert not (tmp_path / "bad.tar.zst").exists()


def test_frames_decode_on_their_own_one_package_each(packs: Packs) -> None:
    index = _index(packs.full_b)
    data = packs.full_b.path.read_bytes()
    assert sum(f.length for f in index.frames) == len(data)
    packages = [f.package for f in index.frames if f.package]
    assert packages == sorted(set(packages)) and "six" in packages and "python" in packages
    for number, frame in enumerate(index.frames):
        raw = (
            zstandard.ZstdDecompressor()
            .decompressobj()
            .decompress(data[frame.offset : frame.offset + frame.length])
        )
        assert len(raw) == frame.tar_length and hashlib.sha256(raw).hexdigest() == frame.key
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            names = tar.getnames()
        assert names == [e.path for e in index.frame_entries(number)], frame.package
        if frame.package:  # a package frame holds that package's files (and their pycs)
            for name in names:
                source = name
                if "/__pycache__/" in name:
                    folder, _, leaf = name.rpartition("/__pycache__/")
                    source = f"{folder}/{leaf.split('.')[0]}.py"
                assert packs.owners_b.get(source) == frame.package, name


def test_stock_tar_extracts_the_multi_frame_archive(packs: Packs, tmp_path: Path) -> None:
    out = tmp_path / "stock"
    out.mkdir()
    subprocess.run(["tar", "-I", "zstd", "-xf", str(packs.full_b.path), "-C", str(out)], check=True)
    for entry in _index(packs.full_b).entries:
        path = out / entry.path
        if entry.type == "file":
            assert file_sha256(path) == entry.sha256, entry.path
        elif entry.type == "symlink":
            assert path.is_symlink() and str(path.readlink()) == entry.target


def test_rewritten_flags_cover_what_conda_unpack_rewrites(packs: Packs, tmp_path: Path) -> None:
    index = _index(packs.full_b)
    prefix = tmp_path / "deployed"
    extract(packs.full_b.path, prefix)
    before = {e.path: e.sha256 for e in index.entries if e.type == "file"}
    unpacked = conda_unpack(prefix)
    assert unpacked.returncode == 0, unpacked.stderr
    changed = {path for path, digest in before.items() if file_sha256(prefix / path) != digest}
    flagged = {e.path for e in index.entries if e.rewritten}
    assert changed, "conda-unpack rewrote nothing: the test would prove nothing"
    assert changed <= flagged, sorted(changed - flagged)
    # conda-unpack opens every file of its prefix records for writing ("rb+", even when
    # nothing changes): each must be flagged, or a read-only shared inode breaks it
    records = _prefix_records(prefix / "bin" / "conda-unpack")
    assert records, "no prefix records found in conda-unpack"
    assert records <= flagged, sorted(records - flagged)
    # and nothing else is flagged but shebang-rewritten scripts and conda-pack's own
    # files (a flag costs the agent a copy instead of a link)
    generated = {"bin/conda-unpack", "bin/conda_unpack_progress.py", "bin/activate"}
    assert generated <= flagged
    others = flagged - records - generated
    assert all(p.startswith("bin/") for p in others), sorted(others)
    assert len(flagged) < len(before) // 50, len(flagged)
    # a source conda-unpack rewrites gets no unchecked pyc: it would keep the old text
    sysconfig = next(p for p in changed if "_sysconfigdata" in p and p.endswith(".py"))
    assert not any(p.startswith(sysconfig.rsplit("/", 1)[0] + "/__pycache__/_sysconfigdata")
                   for p in before)  # fmt: skip
    check = env_python(prefix, "import six, sysconfig; print(sysconfig.get_config_var('prefix'))")
    assert check.returncode == 0 and check.stdout.strip() == str(prefix), check.stderr


def _prefix_records(script: Path) -> set[str]:
    """The paths in conda-unpack's `_prefix_records = [(path, placeholder, mode), ...]`."""
    text = script.read_text()
    block = text[text.index("_prefix_records = [") : text.index("]", text.index("_prefix_records"))]
    return set(re.findall(r"^\('([^']+)',", block, re.MULTILINE))


def test_one_package_nightly_leaves_every_other_file_identical(packs: Packs) -> None:
    a, b = _index(packs.full_a), _index(packs.full_b)
    files_a = a.files()
    changed = {
        e.path
        for e in b.entries
        if e.type == "file" and e.path in files_a and files_a[e.path].sha256 != e.sha256
    }
    assert changed == {
        "lib/python3.11/site-packages/six.py",
        "lib/python3.11/site-packages/__pycache__/six.cpython-311.pyc",
    }
    keys_a = {(f.package, f.key) for f in a.frames}
    assert {f.package for f in b.frames if (f.package, f.key) not in keys_a} == {"six"}


def test_incremental_pack_reuses_frames_and_extracts_like_a_full_pack(
    packs: Packs, tmp_path: Path
) -> None:
    full, incremental = packs.full_b, packs.incremental_b
    package_frames = [f for f in _index(full).frames if f.package]
    assert incremental.reused_frames == len(package_frames) - 1  # all but six's
    assert _index(incremental).entries == _index(full).entries
    assert [f.key for f in _index(incremental).frames] == [f.key for f in _index(full).frames]
    assert incremental.index is not None and incremental.index.archive_sha256 == incremental.sha256
    assert incremental.size == incremental.path.stat().st_size
    assert incremental.sha256 == file_sha256(incremental.path)
    ours, theirs = tmp_path / "incremental", tmp_path / "full"
    extract(incremental.path, ours)
    extract(full.path, theirs)
    listing = sorted(p.relative_to(ours) for p in ours.rglob("*"))
    assert listing == sorted(p.relative_to(theirs) for p in theirs.rglob("*"))
    for rel in listing:
        mine, other = ours / rel, theirs / rel
        assert mine.lstat().st_mode == other.lstat().st_mode, rel
        if mine.is_file() and not mine.is_symlink():
            assert mine.read_bytes() == other.read_bytes(), rel
    unpacked = conda_unpack(ours)
    assert unpacked.returncode == 0, unpacked.stderr
    check = env_python(ours, "import six, databroker, ipykernel; print(six.__version__)")
    assert check.returncode == 0 and check.stdout.strip() == "1.17.0", check.stderr


class _Stream:
    """The previous archive as a plain stream (no fileno): how a reader that hashes as
    it streams is read, frames passed through Python."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self.read = raw.read


def _repack_b(packs: Packs, root: Path, stream_of: Any) -> pack.PackResult:
    prefix = _prefix_of(packs)
    assert packs.full_a.index is not None
    with open(packs.full_a.path, "rb") as raw:
        previous = pack.PreviousPack(None, packs.full_a.index, opener=lambda: stream_of(raw))
        root.mkdir()
        return pack.pack(prefix, root / "b.tar.zst", previous=previous)


def _prefix_of(packs: Packs) -> Path:
    return packs.full_a.path.parent / "scratch" / "prefix"


def test_frames_copied_in_python_make_the_same_archive_as_the_kernel_copy(
    packs: Packs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three ways to copy the reused frames give byte-identical archives: by offset with
    copy_file_range (the fixture's), by offset where the kernel refuses it (EXDEV, as
    between filesystems on older kernels: read and written in Python), and from a plain
    stream without a file descriptor."""
    kernel = packs.incremental_b
    refused: list[int] = []

    def no_kernel_copy(*args: Any) -> int:
        refused.append(1)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", no_kernel_copy)
    python = _repack_b(packs, tmp_path / "python", lambda raw: raw)
    monkeypatch.undo()
    streamed = _repack_b(packs, tmp_path / "stream", _Stream)
    assert refused, "the kernel copy was not tried"
    for result in (python, streamed):
        assert result.reused_frames == kernel.reused_frames > 0
        assert result.sha256 == kernel.sha256 == file_sha256(result.path)
        assert result.path.read_bytes() == kernel.path.read_bytes()
        assert result.index == kernel.index


@pytest.mark.parametrize("stream_of", [lambda raw: raw, _Stream], ids=["by-offset", "stream"])
def test_a_previous_archive_shorter_than_its_index_is_a_previous_archive_error(
    packs: Packs, tmp_path: Path, stream_of: Any
) -> None:
    """The bytes a reused frame needs are not there: PreviousArchiveError (publish then
    packs in full), never an archive with a hole in it."""
    short = tmp_path / "short.tar.zst"
    short.write_bytes(packs.full_a.path.read_bytes()[: packs.full_a.size // 2])
    assert packs.full_a.index is not None
    with open(short, "rb") as raw:
        previous = pack.PreviousPack(None, packs.full_a.index, opener=lambda: stream_of(raw))
        with pytest.raises(pack.PreviousArchiveError, match="previous archive"):
            pack.pack(_prefix_of(packs), tmp_path / "b.tar.zst", previous=previous)


def test_pycs_from_the_listing_are_the_pycs_next_to_package_sources(packs: Packs) -> None:
    """The packer takes install.py's pycs from the prefix listing; reading the
    `__pycache__` dirs next to package sources finds the same ones (six's among them)."""
    prefix = _prefix_of(packs)
    files = CondaEnv.from_prefix(str(prefix)).files
    listed = {f.target for f in files}
    owners, _ = pack._owners(prefix, pack.MetaCache())
    scanned = pack._compiled_pycs(prefix, listed, owners)
    from_listing = pack._compiled_pycs(prefix, listed, owners, pack.list_prefix(str(prefix)))
    assert "lib/python3.11/site-packages/__pycache__/six.cpython-311.pyc" in scanned
    assert len(scanned) > 1000 and sorted(scanned) == sorted(from_listing)


def test_packages_are_loaded_as_conda_pack_loads_them(packs: Packs) -> None:
    """The packer's own loader (a `File` only for what is packed) lists exactly conda-pack's
    file records, plus the pycs install.py compiled, each in its source's package."""
    prefix = _prefix_of(packs)
    groups, python_id = pack.load_groups(prefix, pack.MetaCache())
    packages = [g for g in groups if isinstance(g, pack.Package)]
    assert len(packages) == len(groups) - 1 and python_id  # the loader's path, not the fallback
    ours = [f for g in groups for f in g.members()]
    pycs = {t for p in packages for t in p.pycs}
    stock = CondaEnv.from_prefix(str(prefix)).files

    def fields(f: Any) -> tuple[Any, ...]:
        return (f.source, f.target, f.is_conda, f.file_mode, f.prefix_placeholder)

    assert sorted(map(fields, (f for f in ours if f.target not in pycs))) == sorted(
        map(fields, stock)
    )
    listed = {f.target for f in stock}
    owners, _ = pack._owners(prefix, pack.MetaCache())
    assert pycs == set(pack._compiled_pycs(prefix, listed, owners, pack.list_prefix(str(prefix))))
    pycaches = [t for t in pack.list_prefix(str(prefix)) if "__pycache__" in t]
    assert len(pycaches) > 1000
    assert [pack._py_source(t) for t in pycaches] == [find_py_source(t) for t in pycaches]
    odd = ["__pycache__/a.cpython-311.pyc", "a/__pycache__/b.cpython-311.opt-1.pyc",
           "a/__pycache__/b.pyc", "a/__pycache__/c/d.x.pyc", "a/__pycache__x/b.c.pyc"]  # fmt: skip
    assert [pack._py_source(t) for t in odd] == [find_py_source(t) for t in odd]
    for package in packages:  # a package's recorded() is its members that have a file_mode
        recorded = [
            f for f in package.members() if f.file_mode or f.target.startswith("conda-meta")
        ]
        assert list(map(fields, package.recorded())) == list(map(fields, recorded))


def test_conda_packs_own_loader_packs_the_same_members(
    packs: Packs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the packer leaves to conda-pack (`CondaEnv.from_prefix` and grouping by the
    conda-meta file lists) gives the same members with the same hashes; nothing of it is
    reused, or reusable."""
    monkeypatch.setattr(pack, "_load_packages", lambda prefix, meta: None)
    result = _repack_b(packs, tmp_path / "stock", lambda raw: raw)
    assert result.reused_frames == 0
    assert _index(result).entries == _index(packs.full_b).entries
    assert not any(f.source for f in _index(result).frames)


def _cache_dir(prefix: Path, package: str) -> Path:
    record = next((prefix / "conda-meta").glob(f"{package}-*.json"))
    return Path(json.loads(record.read_text())["link"]["source"])


def test_reuse_survives_a_re_extract_and_not_a_changed_cache_file(
    packs: Packs, tmp_path: Path
) -> None:
    """A package cache directory extracted again (new inodes, the package's mtimes, as
    rattler extracts) keeps its frame reusable; a cache file written since (its mtime
    moves) makes that package's frame packed again. Either way the archive indexes what
    a full pack does."""
    prefix = _prefix_of(packs)
    cache = _cache_dir(prefix, "ipykernel")
    aside = cache.with_name(cache.name + ".aside")
    os.rename(cache, aside)
    try:
        shutil.copytree(aside, cache, symlinks=True)  # copy2: same bytes and mtimes
        extracted = _repack_b(packs, tmp_path / "re-extracted", lambda raw: raw)
        assert extracted.reused_frames == packs.incremental_b.reused_frames
        assert extracted.index == packs.incremental_b.index
        source = next(p for p in cache.rglob("*.py") if p.is_file())
        st = source.stat()
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        touched = _repack_b(packs, tmp_path / "touched", lambda raw: raw)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        os.rename(aside, cache)
    assert touched.reused_frames == packs.incremental_b.reused_frames - 1
    before = {f.package: f.source for f in _index(packs.incremental_b).frames}
    after = {f.package: f.source for f in _index(touched).frames}
    assert {name for name in after if after[name] != before[name]} == {"ipykernel"}
    assert _index(touched).entries == _index(packs.full_b).entries


def test_a_checked_previous_archive_gives_the_same_archive_hashed_once(
    packs: Packs, tmp_path: Path
) -> None:
    """`checked_archive` (publish's way with a local store file) checks the previous archive
    and keeps its hash state per frame; the new archive's hash goes on from the state after
    the frames both share at the same offsets (before six's) instead of reading them back.
    Same bytes, and a sha256 that is the file's."""
    a = packs.full_a
    assert a.index is not None
    shared = next(f for f in _index(packs.incremental_b).frames if f.package == "six").offset
    assert shared > a.size // 4  # the front both archives share is worth not hashing twice
    with pack.checked_archive(a.path, a.size, a.sha256, a.index) as checked:
        assert set(checked.states) == {f.offset for f in a.index.frames} | {a.size}
        previous = pack.PreviousPack(None, a.index, opener=lambda: checked)
        (tmp_path / "out").mkdir()
        result = pack.pack(_prefix_of(packs), tmp_path / "out" / "b.tar.zst", previous=previous)
    assert result.reused_frames == packs.incremental_b.reused_frames
    assert result.path.read_bytes() == packs.incremental_b.path.read_bytes()
    assert result.sha256 == packs.incremental_b.sha256 == file_sha256(result.path)


@pytest.mark.parametrize("damage", ["flipped", "short", "long"])
def test_a_previous_archive_that_is_not_its_manifests_is_refused_before_use(
    packs: Packs, tmp_path: Path, damage: str
) -> None:
    """One byte changed (same size), cut short or grown: PreviousArchiveError from
    `checked_archive`, before any frame is handed out (publish then packs in full)."""
    a = packs.full_a
    assert a.index is not None
    data = bytearray(a.path.read_bytes())
    if damage == "flipped":
        data[len(data) // 3] ^= 1
    elif damage == "short":
        del data[-1]
    else:
        data += b"\0"
    copy = tmp_path / "a.tar.zst"
    copy.write_bytes(bytes(data))
    with (
        pytest.raises(pack.PreviousArchiveError, match="manifest"),
        pack.checked_archive(copy, a.size, a.sha256, a.index),
    ):
        pytest.fail("the damaged archive was handed out")

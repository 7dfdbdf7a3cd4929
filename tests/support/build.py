"""Helpers for the build-side tests: publish as a real subprocess, unpack an artifact."""

from __future__ import annotations

import os
import queue
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import Any

import zstandard

from support import processes
from support.cli import CLI, run_cli
from support.publish import BUILD_CACHE, cache_env  # noqa: F401 - tests import them here


def publish(config: Path, cache: Path, *args: str, check: bool = True, **env: str) -> Any:
    return run_cli(config, "publish", *args, check=check, env={**cache_env(cache), **env})


def start_publish(config: Path, cache: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    environ = {**os.environ, **cache_env(cache), **env}
    environ.pop("NSLS2_ARTIFACTS_CONFIG", None)
    return subprocess.Popen(
        [*CLI, "publish", "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )


class LineWatcher:
    """Collect a process's stderr lines in a thread so a test can wait for one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._queue.put(line)

    def wait_for(self, text: str, timeout: float = 300) -> None:
        def next_line_has_it() -> bool:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                return False
            self.lines.append(line)
            return text in line

        processes.wait_for(
            next_line_has_it,
            timeout,
            f"{text!r} on stderr",
            interval=0,
            detail=lambda: "".join(self.lines),
        )


def committed_manifests(store: Path) -> list[Path]:
    return sorted(store.glob("*/*/manifest.json"))


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def extract(archive: Path, dest: Path) -> None:
    """Unpack an env archive with tarfile's "data" filter (what the agent does)."""
    dest.mkdir(parents=True)
    with open(archive, "rb") as raw:
        if archive.name.endswith(".zst"):
            with (
                zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as stream,
                tarfile.open(fileobj=stream, mode="r|") as tar,
            ):
                tar.extractall(dest, filter="data")
        else:
            with tarfile.open(fileobj=raw, mode="r:gz") as tar:
                tar.extractall(dest, filter="data")


def conda_unpack(prefix: Path) -> subprocess.CompletedProcess[str]:
    """Run the archive's conda-unpack at its final path with the env's own python."""
    return subprocess.run(
        [str(prefix / "bin" / "python"), str(prefix / "bin" / "conda-unpack")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def env_python(prefix: Path, code: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": f"{prefix / 'bin'}:/usr/bin:/bin", "HOME": str(prefix)}
    return subprocess.run(
        [str(prefix / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
        check=False,
    )


# the awkward things pip users leave behind (tests/test_pack.py, test_extract_parser.py)
LONG_DIR = "lib/python3.11/site-packages/" + "/".join(["deeply-nested-directory"] * 5)
ODD_FILES = {
    LONG_DIR + "/module_with_a_long_name.py": b"x = 1\n",  # > 100 chars: ustar prefix field
    LONG_DIR + "/" + "d" * 120 + "/leaf.txt": b"leaf\n",  # > 255 chars: PAX header
    "share/données/été.txt": b"non-ASCII names\n",
}


def installed_prefix(root: Path, offline_channel: Path) -> Path:
    """The demo env installed by rattler from the offline channel under `root`, plus
    ODD_FILES, an empty directory, a non-ASCII symlink and a file naming the prefix."""
    from nsls2_artifacts import install, solve
    from nsls2_artifacts.config import load_config
    from nsls2_artifacts.manifest import load_manifest

    (root / "site.yaml").write_text(
        f"manifests: {Path(__file__).resolve().parents[2] / 'manifests'}\n"
        f"store: {root / 'store'}\ndeploy_root: {root / 'deploy'}\n"
        f"channel_mirrors: {{conda-forge: {offline_channel}}}\n"
    )
    site = load_config(root / "site.yaml")
    solution = solve.solve(load_manifest(site.manifests, "demo"), site, cache_dir=BUILD_CACHE)
    env = root / "original-prefix"
    install.install(solution, env, BUILD_CACHE)
    for rel, data in ODD_FILES.items():
        (env / rel).parent.mkdir(parents=True, exist_ok=True)
        (env / rel).write_bytes(data)
    (env / "share" / "empty-dir").mkdir(parents=True)
    os.symlink("données/été.txt", env / "share" / "link-to-file")
    (env / "etc").mkdir(exist_ok=True)
    (env / "etc" / "where.conf").write_text(f"prefix={env}\n")  # unmanaged, names the prefix
    return env

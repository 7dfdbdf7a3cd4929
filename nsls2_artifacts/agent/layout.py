"""Where things live under DEPLOY_ROOT (see DESIGN.md "Deploy layout"), plus the
test-only pause points. Every agent module and `status` compute paths here, so the
layout is written down once.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from ..fsutil import read_json
from ..records import ReadyRecord, RecordError, is_build_id, parse_time

READY = ".nsls2/ready.json"
LOCAL_MANIFEST = ".nsls2/manifest.json"
PARTIAL_PREFIX = ".partial-"
TRASH_PREFIX = ".trash-"
LATEST = "latest"
PAUSE_ENV = "NSLS2_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "NSLS2_TEST_PAUSE_FILE"


def envs_dir(deploy_root: Path) -> Path:
    return deploy_root / "envs"


def env_dir(deploy_root: Path, env: str) -> Path:
    return deploy_root / "envs" / env


def build_dir(deploy_root: Path, env: str, build_id: str) -> Path:
    return deploy_root / "envs" / env / build_id


def partial_dir(deploy_root: Path, env: str, build_id: str) -> Path:
    return deploy_root / "envs" / env / f"{PARTIAL_PREFIX}{build_id}"


def latest_link(deploy_root: Path, env: str) -> Path:
    return deploy_root / "envs" / env / LATEST


def quarantine_path(deploy_root: Path, env: str, build_id: str) -> Path:
    return deploy_root / "state" / "quarantine" / env / f"{build_id}.json"


def hold_path(deploy_root: Path, env: str) -> Path:
    return deploy_root / "state" / "holds" / f"{env}.json"


def pass_record_path(deploy_root: Path, node: str) -> Path:
    return deploy_root / "state" / "agent" / f"{node}.json"


def kernels_dir(deploy_root: Path) -> Path:
    return deploy_root / "share" / "jupyter" / "kernels"


def profiles_dir(deploy_root: Path) -> Path:
    return deploy_root / "etc" / "tiled" / "profiles"


def read_ready(deploy_root: Path, env: str, build_id: str) -> ReadyRecord | None:
    """The build's ready record, or None if it is absent or unreadable (= not ready)."""
    try:
        record = ReadyRecord.from_dict(read_json(build_dir(deploy_root, env, build_id) / READY))
    except (OSError, ValueError, RecordError):
        return None
    return record if record.build_id == build_id and record.env == env else None


def deployed_envs(deploy_root: Path) -> list[str]:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        return sorted(
            e.name for e in os.scandir(envs_dir(deploy_root)) if e.is_dir() and e.name[0] != "."
        )
    return []


def build_dirs(deploy_root: Path, env: str) -> list[str]:
    """Build ids that have a directory under envs/ENV (ready or not)."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        return sorted(
            e.name
            for e in os.scandir(env_dir(deploy_root, env))
            if is_build_id(e.name) and e.is_dir(follow_symlinks=False)
        )
    return []


def ready_builds(deploy_root: Path, env: str) -> list[ReadyRecord]:
    """Ready builds of `env` deployed here, oldest first by `created`."""
    found = [r for b in build_dirs(deploy_root, env) if (r := read_ready(deploy_root, env, b))]
    return sorted(found, key=lambda r: (parse_time(r.created), r.build_id))


def test_pause(stage: str) -> None:
    """Test-only: stop here (so a test can SIGKILL us mid-stage) when asked by env var."""
    if os.environ.get(PAUSE_ENV) != stage:
        return
    marker = os.environ.get(PAUSE_FILE_ENV)
    if marker:
        Path(marker).write_text(f"{os.getpid()} {stage}\n")
    time.sleep(3600)

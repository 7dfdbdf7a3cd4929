"""Every path under DEPLOY_ROOT (see docs/design.md "Deploy layout"), the readers of the
build directories, plus the test-only pause points. The agent, `status`, `store prune` and
the Jupyter extension compute deploy-root paths only here, so the layout is written down once.
It sits below all of them (it imports only records, names, errors and fsutil), so the
server extension in a user's Jupyter server needs nothing of the agent.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .errors import PruneError
from .fsutil import read_json
from .names import node_name_problem
from .records import Hold, ReadyRecord, RecordError, is_build_id, parse_time

AGENT_DIR = ".nsls2"  # inside each build: the agent's records, never from the archive
READY = f"{AGENT_DIR}/ready.json"
LOCAL_MANIFEST = f"{AGENT_DIR}/manifest.json"
PARTIAL_PREFIX = ".partial-"
LEGACY_TRASH_GLOB = ".trash-*"  # envs/ENV/.trash-*: the trash before state/trash
LATEST = "latest"
PAUSE_ENV = "NSLS2_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "NSLS2_TEST_PAUSE_FILE"
T = TypeVar("T")


def envs_dir(deploy_root: str | Path) -> Path:
    return Path(deploy_root) / "envs"


def env_dir(deploy_root: str | Path, env: str) -> Path:
    return envs_dir(deploy_root) / env


def build_dir(deploy_root: str | Path, env: str, build_id: str) -> Path:
    return env_dir(deploy_root, env) / build_id


def partial_dir(deploy_root: str | Path, env: str, build_id: str) -> Path:
    return env_dir(deploy_root, env) / f"{PARTIAL_PREFIX}{build_id}"


def latest_link(deploy_root: str | Path, env: str) -> Path:
    return env_dir(deploy_root, env) / LATEST


# -- Jupyter and tiled (read by users' servers) ----------------------------------------------


def jupyter_dir(deploy_root: str | Path) -> Path:
    """What JupyterHub adds to `JUPYTER_PATH`."""
    return Path(deploy_root) / "share" / "jupyter"


def kernels_dir(deploy_root: str | Path) -> Path:
    return jupyter_dir(deploy_root) / "kernels"


def retired_kernels_path(deploy_root: str | Path) -> Path:
    """LTS kernels removed for good, read by the server extension and the lab extension."""
    return jupyter_dir(deploy_root) / "nsls2" / "retired.json"


def kernel_startup_path(deploy_root: str | Path) -> Path:
    """The file every latest kernel runs at start (the restart notice)."""
    return jupyter_dir(deploy_root) / "nsls2" / "kernel_startup.py"


def kernel_ceiling_path(deploy_root: str | Path) -> Path:
    """What every kernel's launcher runs first: memory ceiling and thread counts."""
    return jupyter_dir(deploy_root) / "nsls2" / "kernel_ceiling.py"


def kernel_memory_path(deploy_root: str | Path) -> Path:
    """Run inside kernels with a ceiling: a MemoryError that explains itself."""
    return jupyter_dir(deploy_root) / "nsls2" / "kernel_memory.py"


def profiles_dir(deploy_root: str | Path) -> Path:
    return Path(deploy_root) / "etc" / "tiled" / "profiles"


def beamline_envs_file(deploy_root: str | Path) -> Path:
    """`{beamline: env}` from the site config's `beamlines.NAME.env` (kept out of the tiled
    profiles: tiled owns their schema)."""
    return Path(deploy_root) / "etc" / "nsls2" / "beamline-envs.json"


# -- the agents' shared state ----------------------------------------------------------------


def state_dir(deploy_root: str | Path) -> Path:
    return Path(deploy_root) / "state"


def quarantine_dir(deploy_root: str | Path) -> Path:
    return state_dir(deploy_root) / "quarantine"


def quarantine_path(deploy_root: str | Path, env: str, build_id: str) -> Path:
    return quarantine_dir(deploy_root) / env / f"{build_id}.json"


def retry_dir(deploy_root: str | Path) -> Path:
    return state_dir(deploy_root) / "retry"


def retry_path(deploy_root: str | Path, env: str, build_id: str) -> Path:
    return retry_dir(deploy_root) / env / f"{build_id}.json"


def hold_path(deploy_root: str | Path, env: str) -> Path:
    return state_dir(deploy_root) / "holds" / f"{env}.json"


def pass_records_dir(deploy_root: str | Path) -> Path:
    return state_dir(deploy_root) / "agent"


def pass_record_path(deploy_root: str | Path, node: str) -> Path:
    return pass_records_dir(deploy_root) / f"{node}.json"


def build_lock_path(deploy_root: str | Path, env: str, build_id: str) -> Path:
    return state_dir(deploy_root) / "locks" / env / f"{build_id}.lock"


def apply_lock_path(deploy_root: str | Path) -> Path:
    return state_dir(deploy_root) / "locks" / "apply.lock"


def tombstones_dir(deploy_root: str | Path) -> Path:
    return state_dir(deploy_root) / "tombstones"


def tombstone_path(deploy_root: str | Path, env: str, build_id: str) -> Path:
    return tombstones_dir(deploy_root) / env / f"{build_id}.json"


def deleted_dir(deploy_root: str | Path, env: str) -> Path:
    return state_dir(deploy_root) / "deleted" / env


def deleted_path(deploy_root: str | Path, env: str, build_id: str) -> Path:
    return deleted_dir(deploy_root, env) / f"{build_id}.json"


def trash_dir(deploy_root: str | Path) -> Path:
    return state_dir(deploy_root) / "trash"


def nodes_dir(deploy_root: str | Path) -> Path:
    return state_dir(deploy_root) / "nodes"


def retired_nodes_dir(deploy_root: str | Path) -> Path:
    return nodes_dir(deploy_root) / "retired"


def heartbeat_path(deploy_root: str | Path, node: str) -> Path:
    if problem := node_name_problem(node):
        raise PruneError(f"{problem} (it names a file in {nodes_dir(deploy_root)})")
    return nodes_dir(deploy_root) / f"{node}.json"


def memory_probe_path(deploy_root: str | Path, node: str) -> Path:
    """Which memory ceiling kernels get on NODE (agent/ceiling.py), one record per node."""
    if problem := node_name_problem(node):
        raise PruneError(f"{problem} (it names a file in {state_dir(deploy_root)})")
    return state_dir(deploy_root) / "memory" / f"{node}.json"


def node_check_path(deploy_root: str | Path, node: str, env: str, build_id: str) -> Path:
    """Whether ENV/BUILD_ID imports on NODE (agent/nodecheck.py), one record per node."""
    if problem := node_name_problem(node):
        raise PruneError(f"{problem} (it names a directory in {state_dir(deploy_root)})")
    return state_dir(deploy_root) / "nodecheck" / node / env / f"{build_id}.json"


def clock_probe_path(deploy_root: str | Path, node: str) -> Path:
    """The file whose mtime tells the shared filesystem's time (see `heartbeat.fs_now_ns`)."""
    return state_dir(deploy_root) / f".clock-{node}"


def read_record(path: Path, parse: Callable[[Any], T]) -> T | None:
    """The record in `path` parsed by `parse` (a `from_dict`), None if there is no file.

    Raises `RecordError` naming the file (and the field, when one is wrong) if the file
    cannot be read, is not JSON, or does not hold the record.
    """
    try:
        data = read_json(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise RecordError(str(path), None, f"cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise RecordError(str(path), None, f"not JSON: {exc}") from None
    try:
        return parse(data)
    except RecordError as exc:
        raise exc.at(str(path)) from None


def read_ready(deploy_root: Path, env: str, build_id: str) -> ReadyRecord | None:
    """The build's ready record, or None if it is absent or unreadable (= not ready)."""
    try:
        record = ReadyRecord.from_dict(read_json(build_dir(deploy_root, env, build_id) / READY))
    except (OSError, ValueError, RecordError):
        return None
    return record if record.build_id == build_id and record.env == env else None


def current_latest(deploy_root: Path, env: str) -> str | None:
    """The build id `latest` names (whether or not it exists), or None. The one reader of
    the link: reconcile, retention, `status` and `store prune` all ask here."""
    try:
        target = os.readlink(latest_link(deploy_root, env))
    except OSError:
        return None
    name = os.path.basename(target.rstrip("/"))
    return name if is_build_id(name) else None


def read_hold(deploy_root: Path, env: str) -> Hold | None:
    """ENV's rollback hold, None if there is none (the one reader of holds).

    Raises `RecordError` naming the file and field when the hold cannot be read: each
    caller decides what an unreadable hold means (retention keeps everything in the env).
    """
    return read_record(hold_path(deploy_root, env), Hold.from_dict)


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


def _ids_in(directory: Path) -> dict[str, int]:
    """build id -> mtime (ns) of `directory/BUILD_ID.json` files."""
    found = {}
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(directory):
            build_id = entry.name.removesuffix(".json")
            if entry.name.endswith(".json") and is_build_id(build_id):
                with contextlib.suppress(FileNotFoundError):
                    found[build_id] = entry.stat(follow_symlinks=False).st_mtime_ns
    return found


def tombstones(deploy_root: str | Path, env: str) -> dict[str, int]:
    """Tombstoned build ids of `env` -> tombstone time (file mtime, ns, shared-fs clock)."""
    return _ids_in(tombstones_dir(deploy_root) / env)


def tombstoned_envs(deploy_root: str | Path) -> list[str]:
    """Envs with a tombstone directory (a delete may be left to finish there)."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        return sorted(e.name for e in os.scandir(tombstones_dir(deploy_root)) if e.is_dir())
    return []


def deleted_builds(deploy_root: str | Path, env: str) -> set[str]:
    """Builds retention deleted: the agent must not deploy these again from the store."""
    return set(_ids_in(deleted_dir(deploy_root, env)))


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

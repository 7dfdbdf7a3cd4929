"""Who the hook's builds run as (`hook.build_user`), and the startup checks that keep the
hook's secrets (the token hashes, the session key in its memory) out of their reach.

`create_app` (app.py) calls `check_build_user(site)` and `hook_tokens(site)` before it
serves: a misconfiguration stops the hook with a message naming the file and the fix.
The runner (runner.py) starts every publish and promote with `BuildUser.popen_kwargs`.
A build runs the manifest's solver, installers and package scripts: as the hook's own
user it could read whatever the hook reads; as `build_user` it reads only what that user
may.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import stat
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..agent.log import event
from ..config import SiteConfig, read_tokens_file
from ..errors import ArtifactsError

log = logging.getLogger("nsls2_artifacts.hook")


class HookSetupError(ArtifactsError):
    """The hook must not start like this (a secret builds could read, a user it cannot be)."""


ROOT_WARNING = (
    "the hook runs as root and hook.build_user is not set: builds run as root and can "
    "read the token hashes, the site config and the hook's memory (its session key). "
    "Set hook.build_user to an unprivileged user (docs/hook.md, 'What builds see')"
)


@dataclass(frozen=True)
class BuildUser:
    """The unprivileged account builds run as, and the HOME the hook made for it."""

    name: str
    uid: int
    gid: int
    home: Path

    def become(self) -> None:
        """In the child before exec: this user, its group only (what subprocess's
        `user=`/`group=`/`extra_groups=[]` do; asyncio's subprocess refuses those)."""
        os.setgroups([])
        os.setgid(self.gid)
        os.setuid(self.uid)

    def popen_kwargs(self) -> dict[str, Any]:
        """Arguments for subprocess/asyncio: that user (`become`), in its home."""
        return {"preexec_fn": self.become, "cwd": str(self.home)}

    def environ(self, env: dict[str, str]) -> dict[str, str]:
        """`env` (already without the hook's credentials) for this user: its own HOME, no
        pointers into the hook user's XDG directories."""
        out = {k: v for k, v in env.items() if not k.startswith("XDG_")}
        out.update(HOME=str(self.home), USER=self.name, LOGNAME=self.name)
        # git refuses repositories another user owns; the manifests are the hook's, and
        # publish records their commit (only git run by the build sees this setting)
        out.setdefault("GIT_CONFIG_COUNT", "1")
        if out["GIT_CONFIG_COUNT"] == "1" and "GIT_CONFIG_KEY_0" not in out:
            out.update(GIT_CONFIG_KEY_0="safe.directory", GIT_CONFIG_VALUE_0="*")
        return out


def hook_tokens(site: SiteConfig) -> tuple[tuple[str, ...], dict[str, str]]:
    """Every staff token hash: `hook.tokens_sha256` plus `hook.tokens_file` (checked to be
    readable by the hook's user only: mode 0600)."""
    hashes, names = site.hook.tokens_sha256, dict(site.hook.token_names)
    path = site.hook.tokens_file
    if path is None:
        return hashes, names
    _check_private(path)
    more, more_names = read_tokens_file(path)
    names.update(more_names)
    return tuple(dict.fromkeys(hashes + more)), names


def _check_private(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except OSError as exc:
        problem = f"cannot read the hook's tokens file: {exc.strerror}"
        raise HookSetupError(f"{path}: {problem}") from None
    if not stat.S_ISREG(st.st_mode):
        raise HookSetupError(f"{path}: the hook's tokens file is not a regular file")
    if st.st_mode & 0o077:
        raise HookSetupError(
            f"{path}: the hook's tokens file is open to group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); builds and other users could read the token "
            f"hashes: chmod 600 {path}"
        )
    return st


def check_build_user(site: SiteConfig) -> BuildUser | None:
    """The user builds run as, after checking the hook can switch to it and that it
    cannot read the hook's secrets; None when builds run as the hook's user."""
    name = site.hook.build_user
    where = site.source or "the embedded default config"
    if name is None:
        if os.geteuid() == 0:
            event(log, "builds-run-as-root", logging.WARNING, detail=ROOT_WARNING)
        return None
    require_root(site)
    user = replace(_lookup(name, where), home=build_home(site))
    if site.hook.tokens_sha256:
        raise HookSetupError(
            f"{where}: hook.tokens_sha256 is in the site config, which builds read (they "
            "need its store and manifests paths). Move the entries, unchanged, to a file of "
            "their own (a YAML list, owned by root, chmod 600) and name it in "
            "hook.tokens_file: e.g. /etc/nsls2-artifacts/hook-tokens.yaml"
        )
    if site.hook.tokens_file is not None:
        st = _check_private(site.hook.tokens_file)
        if st.st_uid == user.uid:
            raise HookSetupError(
                f"{site.hook.tokens_file}: the hook's tokens file belongs to the build user "
                f"{user.name}: chown root {site.hook.tokens_file}"
            )
    # the hook's own files (queue, logs) stay out of builds' sight
    site.hook_state_dir.mkdir(parents=True, exist_ok=True)
    site.hook_state_dir.chmod(0o700)
    _make_owned_dir(user.home, user)
    _probe(site, user)
    return user


def require_root(site: SiteConfig) -> None:
    """Refuse `hook.build_user` in a hook that cannot switch users (checked first: such a
    hook cannot read a root-only tokens file either)."""
    name = site.hook.build_user
    if name is None or os.geteuid() == 0:
        return
    uid = os.geteuid()
    me = pwd.getpwuid(uid).pw_name if _has_uid(uid) else str(uid)
    raise HookSetupError(
        f"{site.source or 'the embedded default config'}: hook.build_user is {name!r}, but "
        f"the hook runs as {me} (uid {uid}): only root can start builds as another user. "
        "Run `hook serve` as root (deploy/nsls2-hook.service) or remove hook.build_user"
    )


def _has_uid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _lookup(name: str, where: object) -> BuildUser:
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise HookSetupError(
            f"{where}: hook.build_user: no such user {name!r} (make one: "
            f"useradd --system --no-create-home {name})"
        ) from None
    if entry.pw_uid == 0:
        raise HookSetupError(f"{where}: hook.build_user {name!r} is root: name another user")
    return BuildUser(entry.pw_name, entry.pw_uid, entry.pw_gid, Path("/nonexistent"))


def build_home(site: SiteConfig) -> Path:
    """HOME of builds: next to the hook's state directory (which builds cannot enter)."""
    return site.hook_state_dir.parent / "build-home"


def _make_owned_dir(path: Path, user: BuildUser) -> None:
    """Create `path` (and missing parents) as the build user's own directories."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700)
        os.chown(directory, user.uid, user.gid)


# Run as the build user: what can it read and write? (json in, json out; stdlib only, but
# it imports nsls2_artifacts too, so an unreadable install fails here, not in a build.)
_PROBE = """
import json, os, sys
import nsls2_artifacts
out = {}
for path, what in json.loads(sys.argv[1]):
    if what == "read":
        try:
            open(path, "rb").close()
            out[path + " " + what] = True
        except OSError:
            out[path + " " + what] = False
    else:
        out[path + " " + what] = os.access(path, os.W_OK)
print(json.dumps(out))
"""


def _probe(site: SiteConfig, user: BuildUser) -> None:
    """Ask the kernel, as the build user, what it may touch (ACLs and groups included)."""
    from ..solve import default_cache_dir

    forbidden: list[tuple[Path, str, str]] = []
    if site.hook.tokens_file is not None:
        tokens = site.hook.tokens_file
        forbidden += [
            (tokens, "read", f"chmod 600 {tokens}"),
            (tokens, "write", f"chmod 600 {tokens}"),
            (tokens.parent, "write", f"builds could replace it: chmod go-w {tokens.parent}"),
        ]
    if site.source is not None:
        forbidden.append((site.source, "write", f"chown root {site.source}; chmod 644"))
    needed: list[tuple[Path, str, str]] = []
    if site.source is not None:
        needed.append((site.source, "read", f"builds read it: chmod 644 {site.source}"))
    cache = default_cache_dir(site)
    _make_owned_dir(cache, user)
    needed.append((cache, "write", f"chown -R {user.name} {cache}"))
    if isinstance(site.store, Path) and site.store.exists():
        needed.append((site.store, "write", f"chown -R {user.name} {site.store}"))
    checks = forbidden + needed
    argv = [sys.executable, "-c", _PROBE, json.dumps([[str(p), w] for p, w, _ in checks])]
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            env=user.environ(dict(os.environ)),
            **user.popen_kwargs(),
        )
    except OSError as exc:
        raise HookSetupError(
            f"the build user {user.name} cannot run the hook's python {sys.executable}: "
            f"{exc.strerror}. Install the hook where {user.name} can read and run it "
            "(e.g. /opt/nsls2-artifacts, mode 755)"
        ) from None
    if result.returncode != 0:
        raise HookSetupError(
            f"the build user {user.name} cannot run the hook's python {sys.executable}: "
            f"{result.stderr.strip()[-500:]}"
        )
    seen = json.loads(result.stdout)
    for path, what, fix in forbidden:
        if seen[f"{path} {what}"]:
            raise HookSetupError(
                f"{path}: the build user {user.name} can {what} it; builds could then sign "
                f"themselves staff sessions or tokens: {fix}"
            )
    for path, what, fix in needed:
        if not seen[f"{path} {what}"]:
            raise HookSetupError(f"{path}: the build user {user.name} cannot {what} it: {fix}")

"""A build cannot mint a staff session or read the hook's secrets (issue #17 item 6).

Builds are subprocesses running as the hook's user. The test plays such a build against
a real `hook serve` on 127.0.0.1: a process of the same user without CAP_SYS_PTRACE (the
test runs as root, so it drops that capability the way an unprivileged user lacks it)
reads every file of the site and the hook's state, tries each as the session key, and
tries to read the hook's memory (/proc/PID/mem) and environment (/proc/PID/environ). No
forged cookie may be accepted, the memory must not be readable, and the environment must
not show the webhook secret or other `NSLS2_HOOK_*` credentials.
"""

from __future__ import annotations

import ctypes
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from support.hook import TOKEN, WEBHOOK_SECRET, HookServer, hook_site, write_env

from nsls2_artifacts.hook.auth import Auth, token_hash
from nsls2_artifacts.hook.queue import BuildQueue

pytestmark = pytest.mark.timeout(300)

_PR_CAPBSET_DROP = 24
_CAP_SYS_PTRACE = 19

# What a hostile build script would do: collect every plausible key from readable files,
# and try the hook's memory and environment.
_BUILD = textwrap.dedent(
    """
    import json, os, sys
    root, hook_pid = sys.argv[1], sys.argv[2]
    keys = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                text = open(os.path.join(folder, name), "rb").read(1 << 20).decode().strip()
                key = bytes.fromhex(text)
            except (OSError, ValueError):
                continue
            if len(key) >= 16:
                keys.append(text)
    # the hook's memory, where its session key lives: read the first readable mapping
    mem = False
    try:
        with open(f"/proc/{hook_pid}/maps") as maps, open(f"/proc/{hook_pid}/mem", "rb") as m:
            for line in maps:
                span, perms = line.split()[:2]
                if perms.startswith("r"):
                    m.seek(int(span.split("-")[0], 16))
                    mem = len(m.read(16)) == 16
                    break
    except OSError:
        pass
    try:
        environ = open(f"/proc/{hook_pid}/environ", "rb").read().decode(errors="replace")
    except OSError:
        environ = ""
    print(json.dumps({"keys": keys, "mem": mem, "environ": environ}))
    """
)


def _without_ptrace_capability() -> None:
    """In the child: drop CAP_SYS_PTRACE from the bounding set, so after exec this root
    process is as unprivileged towards other processes' memory as a plain user."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_CAPBSET_DROP, _CAP_SYS_PTRACE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")


def _as_a_build(root: Path, hook_pid: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _BUILD, str(root), str(hook_pid)],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=_without_ptrace_capability,
    ).stdout
    return json.loads(out)


def _forged_cookie(key_hex: str, queue: BuildQueue) -> str:
    forger = Auth((token_hash(TOKEN),), bytes.fromhex(key_hex), None, memory=queue)
    return forger.new_session(token_hash(TOKEN))[1]


def test_a_build_cannot_mint_a_staff_session_or_read_the_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NSLS2_HOOK_OTHER_SECRET", "other-hook-credential-0123")
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", WEBHOOK_SECRET)  # the same secret, renamed
    config = hook_site(tmp_path)
    write_env(tmp_path / "manifests", "demo", {"python": "3.11.*"})
    # A key file an older hook left behind must not keep working (nor stay readable).
    old_key = "ab" * 32
    state = tmp_path / "hook-state"
    state.mkdir()
    (state / "session.key").write_text(old_key)
    scratch = BuildQueue(tmp_path / "scratch.sqlite")
    with HookServer(config) as hook, httpx.Client(base_url=hook.url) as browser:
        with hook.client() as api:
            assert api.post("/api/queue", json={"paused": True}).status_code == 200
        # staff sign in as usual
        nonce = re.search(r'name="csrf" value="([^"]+)"', browser.get("/signin").text)[1]
        assert browser.post("/signin", data={"csrf": nonce, "token": TOKEN}).status_code == 303
        assert "Sign out" in browser.get("/").text
        seen = _as_a_build(tmp_path, hook.proc.pid)
        assert seen["mem"] is False, "a build could read the hook's memory (its session key)"
        assert "PATH=" in seen["environ"]  # readable: the kernel shows it to the same user
        assert WEBHOOK_SECRET not in seen["environ"]
        assert "other-hook-credential-0123" not in seen["environ"]
        assert old_key not in seen["keys"]
        for key in [*seen["keys"], old_key]:
            with httpx.Client(base_url=hook.url) as forger:
                forger.cookies.set("nsls2_hook_session", _forged_cookie(key, scratch))
                page = forger.get("/").text
                assert "Sign out" not in page, f"a session signed with {key[:8]}… was accepted"

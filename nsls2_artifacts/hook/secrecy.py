"""Keep the serving hook's secrets from the builds it starts (they run as its user).

`hook serve` (cli/hook_cmd.py) calls `keep_memory_private` and `scrub_environ` before it
serves. The session key lives only in memory (auth.new_session_key); these two close the
ways a same-user process could still read it or the webhook secret: /proc/PID/mem and
/proc/PID/environ. Both are Linux-only and do nothing elsewhere.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from pathlib import Path

_PR_SET_DUMPABLE = 4
_ENV_START_FIELD, _ENV_END_FIELD = 50, 51  # proc(5): /proc/PID/stat, 1-based


def keep_memory_private() -> bool:
    """Mark this process not dumpable (as ssh-agent does): a process of the same user
    without CAP_SYS_PTRACE can then not read its memory (/proc/PID/mem), where the
    session key is. Exec resets the flag, so builds the hook starts are unaffected.
    False where prctl is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _environ_block() -> tuple[int, int] | None:
    """(start, end) addresses of this process' initial environment strings."""
    try:
        stat = Path("/proc/self/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # fields from the 3rd (state) on
        start, end = int(fields[_ENV_START_FIELD - 3]), int(fields[_ENV_END_FIELD - 3])
    except (OSError, IndexError, ValueError):
        return None
    return (start, end) if 0 < start < end else None


def scrub_environ(names: Iterable[str]) -> list[str]:
    """Overwrite the values of `names` in the environment block the kernel shows as
    /proc/PID/environ (readable by the same user even when not dumpable), with NULs.

    Python's `os.environ` is a copy made at startup, so the hook still reads its
    secrets from there; only the original strings (which nothing uses after startup)
    are blanked. Returns the names scrubbed."""
    span = _environ_block()
    if span is None:
        return []
    start, end = span
    block = ctypes.string_at(start, end - start)
    scrubbed = []
    for name in names:
        key = name.encode() + b"="
        at = 0
        while (found := block.find(key, at)) != -1:
            at = found + len(key)
            if found and block[found - 1] != 0:
                continue  # the key is the tail of another variable's text
            stop = block.find(b"\0", at)
            stop = len(block) if stop == -1 else stop
            ctypes.memset(start + at, 0, stop - at)
            scrubbed.append(name)
    return scrubbed

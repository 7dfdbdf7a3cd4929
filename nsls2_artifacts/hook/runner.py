"""Runs queued builds: one `nsls2-artifacts publish ENV --json` subprocess per build.

The app starts `Runner.run_forever` in its lifespan and calls `wake` after queueing,
`cancel` from the cancel button, and `promote` from the "Promote to LTS" form. On
startup `recover` fails the builds a killed hook left running (and kills their publish
if it survived), so the queue continues. Logs go to `hook_state_dir/logs/ID.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from ..config import SiteConfig
from ..records import PublishLine
from .builduser import BuildUser
from .queue import CANCELLED, FAILED, PUBLISHED, UNCHANGED, BuildQueue, BuildRequest

log = logging.getLogger("nsls2_artifacts.hook")

KILL_GRACE_SECONDS = 10
PROMOTE_TIMEOUT_SECONDS = 300
_PR_SET_PDEATHSIG = 1


def cli_argv(site: SiteConfig, *args: str) -> list[str]:
    """`nsls2-artifacts ARGS --config SITE` run with this interpreter (no PATH lookup)."""
    argv = [sys.executable, "-m", "nsls2_artifacts.cli", *args]
    if site.source is not None:
        argv += ["--config", str(site.source)]
    return argv


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the hook dies, so a killed hook leaves no publish."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


HOOK_CREDENTIAL_PREFIX = "NSLS2_HOOK_"  # the hook's own secrets by convention (docs/hook.md)


def child_env(site: SiteConfig, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a build the hook starts: the hook's own, minus its credentials.

    A publish runs the manifest's solver, installers and package scripts; none of them
    needs the webhook secret, so the variable `hook.webhook_secret_env` names, every
    `NSLS2_HOOK_*` variable, and any other variable holding the same secret are dropped.
    Store credentials (e.g. AWS_*) stay: publish needs them to write the store.
    """
    source = dict(os.environ if environ is None else environ)
    secret = source.get(site.hook.webhook_secret_env) or None
    env = {
        name: value
        for name, value in source.items()
        if name != site.hook.webhook_secret_env
        and not name.startswith(HOOK_CREDENTIAL_PREFIX)
        and not (secret is not None and len(secret) >= 8 and value == secret)
    }
    # Stream progress line by line into the log, without colour codes.
    env.update(PYTHONUNBUFFERED="1", NO_COLOR="1", TERM="dumb", COLUMNS="120")
    return env


def _is_our_publish(pid: int) -> bool:
    """Whether `pid` still runs a publish (pids get reused; never kill a stranger)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"publish" in cmdline and any(b"nsls2_artifacts" in part for part in cmdline)


def _session_members(sid: int) -> list[int]:
    """Pids whose session id is `sid`: a publish and whatever it started (setsid below)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # fields after the ")" of comm: state ppid pgrp session ...
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def _leftovers(pid: int) -> list[int]:
    """What is left of the publish session `pid`, if it is safe to kill.

    The session leader is the publish itself; if a process with that pid exists but is
    not a publish, the pid was reused: kill nothing.
    """
    if Path(f"/proc/{pid}").exists() and not _is_our_publish(pid):
        return []
    return _session_members(pid)


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def failure_reason(log_text: str, returncode: int | None) -> str:
    """A one-paragraph reason from the end of a publish log: its `error:` message."""
    lines = [line.rstrip() for line in log_text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("[hook]")]
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].lower().startswith(("error:", "error ")):
            return "\n".join(lines[index : index + 20])[:2000]
    tail = "\n".join(lines[-5:])[:2000]
    return f"publish exited with status {returncode}" + (f":\n{tail}" if tail else "")


class Runner:
    """Starts queued builds within the limits and records their results."""

    def __init__(
        self,
        site: SiteConfig,
        queue: BuildQueue,
        log_dir: Path,
        *,
        build_user: BuildUser | None = None,
    ) -> None:
        self.site = site
        self.build_user = build_user  # None: builds run as the hook's own user
        self.queue = queue
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._wake = asyncio.Event()
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._cancelled: dict[int, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn_kwargs(self) -> dict:
        """How every publish and promote starts: the hook's environment minus its
        credentials, as `hook.build_user` (its own HOME and cwd) when that is set."""
        env = child_env(self.site)
        if self.build_user is None:
            return {"env": env, "preexec_fn": _die_with_parent}
        user = self.build_user

        def become_build_user() -> None:
            user.become()
            _die_with_parent()  # after the switch: a change of user clears the death signal

        return {**user.popen_kwargs(), "env": user.environ(env), "preexec_fn": become_build_user}

    def log_path(self, request_id: int) -> Path:
        return self.log_dir / f"{request_id}.log"

    def wake(self) -> None:
        self._wake.set()

    # -- history ---------------------------------------------------------------------------

    def forget_history(self, days: float) -> list[int]:
        """Drop requests (and their logs) that finished more than `days` ago; 0 keeps all."""
        if days <= 0:
            return []
        forgotten = self.queue.forget_finished_before(time.time() - days * 86400)
        for request_id in forgotten:
            with contextlib.suppress(FileNotFoundError):
                self.log_path(request_id).unlink()
        if forgotten:
            log.info("forgot %d build requests older than %g days", len(forgotten), days)
        return forgotten

    async def forget_history_daily(self, days: float) -> None:
        while True:
            try:
                await asyncio.to_thread(self.forget_history, days)
            except Exception:  # a busy or broken DB: builds go on, try again tomorrow
                log.exception("could not forget old build requests")
            await asyncio.sleep(86400)

    # -- startup recovery ------------------------------------------------------------------

    def recover(self) -> list[int]:
        """Fail builds a previous hook process left 'running'; kill a surviving publish."""
        failed = []
        for record in self.queue.running():
            survivors = _leftovers(record.pid) if record.pid else []
            survived = bool(survivors)
            for pid in survivors:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            reason = (
                "interrupted: the hook stopped while this build was running"
                + (" (its publish was killed on restart)" if survived else "")
                + "; nothing was committed by it unless the store shows its build id"
            )
            self.queue.fail_running(record.id, reason)
            with contextlib.suppress(OSError), open(self.log_path(record.id), "a") as handle:
                handle.write(f"\n[hook] {reason}\n")
            failed.append(record.id)
        return failed

    # -- the loop --------------------------------------------------------------------------

    async def run_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                # concurrency 0 would hold the queue forever; pausing is the way to do that
                limit = max(1, self.site.hook.concurrency)
                claimed = await asyncio.to_thread(self.queue.claim, limit)
            except Exception:  # noqa: BLE001 - a locked or full disk must not stop the loop
                log.exception("could not claim queued builds; retrying")
                claimed = []
            for record in claimed:
                task = asyncio.create_task(self._run(record))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            # A timer too, so builds queued by another writer of the database still start.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=5)

    async def shutdown(self) -> None:
        """On a clean stop: kill running publishes; `recover` marks them on next start."""
        for proc in list(self._procs.values()):
            _kill_group(proc.pid, signal.SIGTERM)
        for task in list(self._tasks):
            task.cancel()

    async def _run(self, record: BuildRequest) -> None:
        argv = cli_argv(self.site, "publish", record.env, "--json")
        path = self.log_path(record.id)
        started = time.monotonic()
        proc: asyncio.subprocess.Process | None = None
        try:
            with open(path, "ab", buffering=0) as logfile:
                logfile.write(f"[hook] request #{record.id}: {' '.join(argv[3:])}\n".encode())
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=logfile,
                    **self.spawn_kwargs(),
                    start_new_session=True,  # its own process group: cancel kills its children
                )
                self._procs[record.id] = proc
                await asyncio.to_thread(self.queue.set_pid, record.id, proc.pid)
                state, fields = await self._wait(record, proc)
                logfile.write(f"[hook] {self._summary(state, fields, started)}\n".encode())
        except OSError as exc:
            state, fields = FAILED, {"reason": f"could not start publish: {exc}"}
        except Exception as exc:  # noqa: BLE001 - record it; never leave a build 'running'
            log.exception("request #%s: the hook failed while running its build", record.id)
            if proc is not None and proc.returncode is None:
                await self._stop(proc)
            state, fields = FAILED, {"reason": f"hook error while running the build: {exc!r}"}
        finally:
            self._procs.pop(record.id, None)
            self._cancelled.pop(record.id, None)
        if state == FAILED and "reason" not in fields:
            fields["reason"] = failure_reason(
                path.read_text(errors="replace"), fields.pop("rc", None)
            )
        fields.pop("rc", None)
        await asyncio.to_thread(self.queue.finish, record.id, state, **fields)
        self.wake()

    @staticmethod
    def _summary(state: str, fields: dict, started: float) -> str:
        took = f"{time.monotonic() - started:.1f} s"
        if state == PUBLISHED:
            return f"published {fields.get('published')} in {took}"
        if state == UNCHANGED:
            return f"no change: the lock equals the newest build ({took})"
        return f"{state} after {took}" + (f": {fields['reason']}" if fields.get("reason") else "")

    async def _wait(
        self, record: BuildRequest, proc: asyncio.subprocess.Process
    ) -> tuple[str, dict]:
        timeout = self.site.hook.build_timeout_seconds
        try:
            stdout, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout or None)
        except TimeoutError:
            await self._stop(proc)
            return FAILED, {"reason": f"timed out after {timeout:g} s (hook.build_timeout_seconds)"}
        if proc.returncode == 0:
            # Even if a cancel came in: the publish finished first, and its build is real.
            return self._parse_result(stdout)
        if record.id in self._cancelled:
            return CANCELLED, {"reason": self._cancelled[record.id]}
        return FAILED, {"rc": proc.returncode}

    @staticmethod
    def _parse_result(stdout: bytes) -> tuple[str, dict]:
        lines = [line for line in stdout.decode(errors="replace").splitlines() if line.strip()]
        if not lines:
            return FAILED, {"reason": "publish exited 0 but printed no JSON result on stdout"}
        try:
            result = PublishLine.from_dict(json.loads(lines[-1]))
        except ValueError as exc:  # not JSON, or RecordError naming the field
            return FAILED, {"reason": f"publish exited 0 but its result is unreadable: {exc}"}
        fields = {"published": result.build_id, "size": result.size, "seconds": result.seconds}
        return (PUBLISHED if result.status == "published" else UNCHANGED), fields

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the build's process group, then SIGKILL it after a grace period."""
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=KILL_GRACE_SECONDS)
        except TimeoutError:
            _kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()

    # -- actions ---------------------------------------------------------------------------

    async def cancel(self, request_id: int, who: str) -> bool:
        """Cancel a queued or running build request; False if it has already ended."""
        reason = f"cancelled by {who}"
        if await asyncio.to_thread(self.queue.cancel_queued, request_id, reason):
            return True
        proc = self._procs.get(request_id)
        if proc is None:
            return False
        self._cancelled[request_id] = reason
        await self._stop(proc)
        return True

    async def promote(
        self, env: str, build_id: str, label: str, *, allow_failed: bool = False
    ) -> tuple[bool, str]:
        """Run `promote ENV BUILD_ID --lts LABEL [--allow-failed]`; (ok, its output)."""
        argv = cli_argv(self.site, "promote", env, build_id, "--lts", label)
        if allow_failed:
            argv.append("--allow-failed")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            **self.spawn_kwargs(),
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), PROMOTE_TIMEOUT_SECONDS)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return False, f"promote timed out after {PROMOTE_TIMEOUT_SECONDS} s"
        return proc.returncode == 0, output.decode(errors="replace").strip()

"""The hook's pure parts: schedule parsing, package diffs, signed values, the SQLite queue."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from support.hook import hook_site, sign, write_env
from support.processes import kill9, wait_for

from nsls2_artifacts.config import load_config
from nsls2_artifacts.errors import ConfigError
from nsls2_artifacts.hook.auth import Auth, token_hash
from nsls2_artifacts.hook.diff import diff_builds, previous_build
from nsls2_artifacts.hook.envs import list_envs, nightly_opt_in, smoke_lines
from nsls2_artifacts.hook.nightly import enqueue_nightly, parse_schedule, site_schedule
from nsls2_artifacts.hook.queue import BuildQueue
from nsls2_artifacts.hook.runner import Runner, failure_reason
from nsls2_artifacts.records import ArtifactInfo, BuildManifest, LockInfo, PackageRef


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- schedule ----------------------------------------------------------------------------------


def test_time_of_day_fires_next_day_after_it_passed() -> None:
    schedule = parse_schedule("02:00")
    assert schedule.next_after(at("2026-11-25T01:59:30")) == at("2026-11-25T02:00")
    assert schedule.next_after(at("2026-11-25T02:00")) == at("2026-11-26T02:00")


def test_cron_steps_ranges_and_weekdays() -> None:
    every_15 = parse_schedule("*/15 * * * *")
    assert every_15.next_after(at("2026-11-25T10:07")) == at("2026-11-25T10:15")
    weekdays = parse_schedule("30 3 * * 1-5")  # Monday-Friday 03:30
    # 2026-11-28 is a Saturday: the next run is Monday the 30th
    assert weekdays.next_after(at("2026-11-27T04:00")) == at("2026-11-30T03:30")
    sunday = parse_schedule("0 0 * * 7")  # 7 means Sunday, as in cron
    assert sunday.next_after(at("2026-11-25T00:00")) == at("2026-11-29T00:00")
    leap = parse_schedule("0 12 29 2 *")
    assert leap.next_after(at("2026-03-01T00:00")) == at("2028-02-29T12:00")


@pytest.mark.parametrize("text", ["25:00", "2:60", "* * *", "61 * * * *", "*/0 * * * *", "x"])
def test_bad_schedules_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(text)


@pytest.mark.parametrize("nightly", ["26:00", "0 0 31 2 *", "* * *"])
def test_bad_nightly_names_config_key_when_the_config_loads(tmp_path: Path, nightly: str) -> None:
    """Checked once, at load (every command, not only `hook serve`): a time that is none,
    a cron line that never fires (31 February)."""
    with pytest.raises(ConfigError, match="hook.nightly: ") as info:
        load_config(hook_site(tmp_path, hook={"nightly": nightly}))
    assert info.value.field == "hook.nightly"
    site = load_config(hook_site(tmp_path / "good", hook={"nightly": "0 2 * * 1-5"}))
    schedule = site_schedule(site)
    assert schedule is not None and schedule.hours == {2}


def test_nightly_enqueues_opted_in_envs_only(tmp_path: Path) -> None:
    config = hook_site(tmp_path)
    write_env(tmp_path / "manifests", "demo", {"python": "3.11.*"})
    write_env(tmp_path / "manifests", "quiet", {"python": "3.11.*"}, nightly=False)
    (tmp_path / "manifests" / "not-an-env").mkdir()
    site = load_config(config)
    assert list_envs(site) == ["demo", "quiet"]
    assert nightly_opt_in(site, "demo") and not nightly_opt_in(site, "quiet")
    queue = BuildQueue(tmp_path / "q.sqlite")
    ids = enqueue_nightly(site, queue)
    assert [queue.get(i).env for i in ids] == ["demo"]
    assert queue.get(ids[0]).source == "nightly"


# -- diff --------------------------------------------------------------------------------------


def manifest(build_id: str, packages: dict[str, str]) -> BuildManifest:
    return BuildManifest(
        name="demo",
        build_id=build_id,
        created="2026-11-25T02:00:00.000000Z",
        platform="linux-64",
        display_name="demo",
        smoke=(),
        artifact=ArtifactInfo("env.tar.zst", "0" * 64, 1, "tar.zst"),
        lock=LockInfo("pixi.lock", "0" * 64),
        packages=tuple(
            PackageRef(n, v.split("/")[0], v.split("/")[1] if "/" in v else "0", "c")
            for n, v in packages.items()
        ),
    )


def test_diff_added_removed_changed() -> None:
    old = manifest("2026.11.24T020000Z-aaaaaaaa", {"a": "1", "b": "1", "c": "1", "d": "1/0"})
    new = manifest("2026.11.25T020000Z-bbbbbbbb", {"a": "1", "c": "2", "d": "1/1", "e": "5"})
    diff = diff_builds(old, new)
    assert [p.name for p in diff.added] == ["e"]
    assert [p.name for p in diff.removed] == ["b"]
    assert [(c.name, c.old, c.new) for c in diff.changed] == [
        ("c", "1", "2"),
        ("d", "1 (0)", "1 (1)"),  # a rebuild of the same version shows its build string
    ]
    assert diff.old_build == old.build_id and not diff.empty
    assert diff_builds(new, new).empty
    first = diff_builds(None, old)
    assert first.old_build is None and len(first.added) == 4
    assert previous_build([old, new], new.build_id) == old
    assert previous_build([old, new], old.build_id) is None


# -- auth --------------------------------------------------------------------------------------


def test_tokens_sessions_and_webhook_signatures(tmp_path: Path) -> None:
    memory = BuildQueue(tmp_path / "hook.sqlite")
    auth = Auth((token_hash("right"),), b"k" * 32, "secret", memory)
    assert auth.bearer(None) == (401, None)
    assert auth.bearer("Bearer wrong") == (403, None)
    assert auth.bearer("Bearer right") == (200, token_hash("right"))
    _session, cookie = auth.new_session(token_hash("right"))
    session = auth.session(cookie)
    assert session is not None and Auth.csrf_ok(session, session.csrf)
    assert not Auth.csrf_ok(session, "x" + session.csrf) and not Auth.csrf_ok(session, None)
    body, mac = cookie.split(".")
    assert auth.session(body[:-2] + "AA." + mac) is None  # tampered payload
    other_key = Auth((token_hash("right"),), b"x" * 32, "secret", memory)
    assert other_key.session(cookie) is None
    revoked = Auth((token_hash("other"),), b"k" * 32, "secret", memory)
    assert revoked.session(cookie) is None  # token removed from the config
    assert Auth((), b"k" * 32, "secret", memory).webhook_ok(b"{}", sign(b"{}", "secret"))
    assert not Auth((), b"k" * 32, "secret", memory).webhook_ok(b"{} ", sign(b"{}", "secret"))
    assert not Auth((), b"k" * 32, None, memory).webhook_ok(b"{}", sign(b"{}", "secret"))


def test_signed_out_session_is_dead_even_with_its_cookie(tmp_path: Path) -> None:
    """Sign-out ends the session on the server: the cookie, kept by someone, is refused
    (also by a hook restarted on the same state); other sessions of the token live on."""
    auth = Auth((token_hash("right"),), b"k" * 32, "secret", BuildQueue(tmp_path / "q.sqlite"))
    session, cookie = auth.new_session(token_hash("right"))
    _other, other_cookie = auth.new_session(token_hash("right"))
    auth.end_session(session)
    assert auth.session(cookie) is None
    restarted = Auth((token_hash("right"),), b"k" * 32, "s", BuildQueue(tmp_path / "q.sqlite"))
    assert restarted.session(cookie) is None and restarted.session(other_cookie) is not None
    # a cookie signed before sessions had ids cannot be ended: it is not a session any more
    legacy = auth.sign({"sub": token_hash("right"), "csrf": "c", "exp": time.time() + 60})
    assert auth.session(legacy) is None


def test_webhook_delivery_is_accepted_once_per_id_and_per_body(tmp_path: Path) -> None:
    queue = BuildQueue(tmp_path / "q.sqlite")
    auth = Auth((), b"k" * 32, "secret", queue)
    assert auth.first_delivery("id-1", b'{"a": 1}')
    assert not auth.first_delivery("id-1", b'{"a": 2}')  # same id
    assert not auth.first_delivery("id-2", b'{"a": 1}')  # same signed body, new id
    assert auth.first_delivery("id-3", b'{"a": 3}')  # a refused replay recorded nothing
    assert queue.remember_once("x", ["k"], time.time() - 1)  # already expired ...
    assert queue.remember_once("x", ["k"], time.time() + 60)  # ... so it may come again
    assert not queue.remember_once("x", ["k"], time.time() + 60)


def test_build_environment_has_no_hook_credentials(tmp_path: Path) -> None:
    from nsls2_artifacts.hook.runner import child_env

    site = load_config(hook_site(tmp_path))
    environ = {
        "PATH": "/usr/bin",
        site.hook.webhook_secret_env: "s3cret-webhook-key",
        "GITHUB_WEBHOOK_SECRET": "s3cret-webhook-key",  # the same secret under another name
        "NSLS2_HOOK_TOKEN": "staff-token",
        "AWS_SECRET_ACCESS_KEY": "store-credential",  # publish needs the store's
    }
    env = child_env(site, environ)
    assert env["PATH"] == "/usr/bin" and env["AWS_SECRET_ACCESS_KEY"] == "store-credential"
    assert "s3cret-webhook-key" not in env.values() and "NSLS2_HOOK_TOKEN" not in env
    assert env["PYTHONUNBUFFERED"] == "1"


def test_failure_reason_quotes_the_error_message() -> None:
    log = "[hook] build #1\nsolving...\nerror: cannot solve: nothing provides foo\n  needed by x\n"
    assert failure_reason(log, 1) == "error: cannot solve: nothing provides foo\n  needed by x"
    assert failure_reason("boom\n", 2) == "publish exited with status 2:\nboom"


# -- queue -------------------------------------------------------------------------------------


def test_queue_coalesces_concurrent_requests_from_threads(tmp_path: Path) -> None:
    queue = BuildQueue(tmp_path / "q.sqlite")
    results: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def ask() -> None:
        record, joined = BuildQueue(tmp_path / "q.sqlite").request(
            "demo", source="api", requested_by="t"
        )
        with lock:
            results.append((record.id, joined))

    threads = [threading.Thread(target=ask) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({i for i, _ in results}) == 1
    assert sum(not joined for _, joined in results) == 1
    (only,) = queue.active()
    assert only.requests == 50


def test_queue_limits_one_running_per_env_and_total(tmp_path: Path) -> None:
    queue = BuildQueue(tmp_path / "q.sqlite")
    a1, _ = queue.request("a", source="api", requested_by="t")
    b1, _ = queue.request("b", source="api", requested_by="t")
    c1, _ = queue.request("c", source="api", requested_by="t")
    assert [r.id for r in queue.claim(2)] == [a1.id, b1.id]
    a2, joined = queue.request("a", source="api", requested_by="t")
    assert not joined and a2.id != a1.id  # a1 started: a new request queues a new build
    assert queue.claim(2) == []  # total limit reached
    queue.finish(b1.id, "published", published="2026.11.25T020000Z-12345678")
    assert [r.id for r in queue.claim(2)] == [c1.id]  # a2 waits: a1 still runs
    queue.finish(a1.id, "unchanged")
    assert queue.get(a1.id).label == "no change"
    queue.set_paused(True)
    assert queue.claim(5) == []
    queue.set_paused(False)
    assert [r.id for r in queue.claim(5)] == [a2.id]
    assert queue.cancel_queued(a2.id, "x") is False  # running: the runner cancels it
    # history survives reopening the database
    again = BuildQueue(tmp_path / "q.sqlite")
    assert again.get(b1.id).build_id == "2026.11.25T020000Z-12345678"
    assert {r.id for r in again.running()} == {c1.id, a2.id}


def test_recover_kills_a_surviving_publish_session_but_never_a_stranger(tmp_path: Path) -> None:
    """The parent-death signal can be missed (e.g. a publish that blocks SIGTERM); the
    next hook start must then kill what is left of that publish's session, and must not
    kill an unrelated process that got the recorded pid."""
    import signal
    import subprocess
    import sys

    site = load_config(hook_site(tmp_path))
    queue = BuildQueue(tmp_path / "q.sqlite")
    sleeper = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    # argv as the runner starts it, so it looks like a publish of ours
    publish = subprocess.Popen(
        [sys.executable, "-c", sleeper, "nsls2_artifacts.cli", "publish", "demo"],
        start_new_session=True,
    )
    stranger = subprocess.Popen([sys.executable, "-c", sleeper], start_new_session=True)
    # Popen returns once exec has begun; /proc/PID/cmdline is empty until the kernel has
    # finished loading the program (seen under load). A real restart comes much later.
    for proc in (publish, stranger):
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        started = lambda path=cmdline: b"sleep" in path.read_bytes()  # noqa: E731
        wait_for(started, 30, f"pid {proc.pid} to exec", interval=0.01)
    try:
        ours, _ = queue.request("demo", source="api", requested_by="t")
        other, _ = queue.request("other", source="api", requested_by="t")
        queue.claim(2)
        queue.set_pid(ours.id, publish.pid)
        queue.set_pid(other.id, stranger.pid)
        runner = Runner(site, queue, tmp_path / "logs")
        assert sorted(runner.recover()) == sorted([ours.id, other.id])
        assert publish.wait(timeout=10) == -signal.SIGKILL
        assert stranger.poll() is None  # not ours: left alone
        assert "killed on restart" in queue.get(ours.id).reason
        assert queue.get(other.id).state == "failed"
        assert "hook stopped" in (tmp_path / "logs" / f"{ours.id}.log").read_text()
        assert queue.running() == []
    finally:
        for proc in (publish, stranger):
            kill9(proc)


def test_smoke_lines_point_at_the_line_to_edit(tmp_path: Path) -> None:
    site = load_config(hook_site(tmp_path))
    env = tmp_path / "manifests" / "base"
    env.mkdir(parents=True)
    (env / "nsls2.yaml").write_text(
        "display_name: B\nsmoke:\n  - six\n  - nope.sub\nnightly: false\n# nope\n"
    )
    assert smoke_lines(site, "base", "nope") == [
        "manifests/base/nsls2.yaml:2: smoke:",
        "manifests/base/nsls2.yaml:4: - nope.sub",
    ]
    (env / "nsls2.yaml").write_text("smoke: [six, nope]\n")
    assert smoke_lines(site, "base", "nope") == ["manifests/base/nsls2.yaml:1: smoke: [six, nope]"]
    assert smoke_lines(site, "missing", "nope") == []


def test_status_hint_for_a_smoke_failure_is_not_retry() -> None:
    from nsls2_artifacts.status import quarantine_hint

    smoke = quarantine_hint("base", "B", "smoke")
    assert "transient" not in smoke and "retry" not in smoke.split(";")[0]
    assert "manifests/base" in smoke and "smoke:" in smoke
    assert "nsls2-artifacts retry base B" in quarantine_hint("base", "B", "unpack")


def test_every_queue_state_has_a_label_and_a_name() -> None:
    from typing import get_args

    from nsls2_artifacts.hook import queue

    states = set(get_args(queue.QueueState))
    assert set(queue.STATE_LABELS) == states
    assert set(queue.ACTIVE) | set(queue.FINISHED) == states


def test_queue_rows_refuse_unknown_columns_and_states_by_name(tmp_path: Path) -> None:
    """Only this hook writes and reads its database: a column it does not know (a database
    a newer hook migrated) or a state outside QueueState is refused, naming the column and
    the file, instead of a TypeError or a row shown with a made-up state."""
    import sqlite3

    from nsls2_artifacts.errors import RecordError

    path = tmp_path / "hook.sqlite"
    queue = BuildQueue(path)
    record, _ = queue.request("demo", source="api", requested_by="t")
    assert queue.get(record.id) == record and record.state == "queued"
    with sqlite3.connect(path) as db:
        db.execute("UPDATE builds SET state = 'lost' WHERE id = ?", (record.id,))
    with pytest.raises(RecordError) as info:
        BuildQueue(path).get(record.id)
    assert info.value.field == "state" and str(path) in str(info.value)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE builds SET state = 'queued'")
        db.execute("ALTER TABLE builds ADD COLUMN priority INTEGER")
    with pytest.raises(RecordError) as info:
        BuildQueue(path).history()
    assert info.value.field == "priority" and "unknown field" in str(info.value)


def test_the_publish_result_line_is_a_typed_record() -> None:
    """The hook reads publish's last JSON line as a PublishLine (what publish.to_json
    writes): a status it does not know, a missing field or no JSON is a failed build whose
    reason names what is wrong, never a guess."""
    import json

    from nsls2_artifacts.publish import PublishResult

    build = "2026.11.25T020000Z-1a2b3c4d"
    line = json.dumps(PublishResult("demo", build, "published", 10, 1.23456).to_json())
    assert Runner._parse_result(f"log\n{line}\n".encode()) == (
        "published",
        {"published": build, "size": 10, "seconds": 1.235},
    )
    same = json.dumps(PublishResult("demo", build, "unchanged", 10, 1.0).to_json())
    assert Runner._parse_result(same.encode())[0] == "unchanged"
    state, fields = Runner._parse_result(line.replace("published", "skipped").encode())
    assert state == "failed" and "field 'status'" in fields["reason"]
    assert "'published', 'unchanged'" in fields["reason"]
    state, fields = Runner._parse_result(json.dumps({"status": "published"}).encode())
    assert state == "failed" and "field 'env': missing" in fields["reason"]
    assert Runner._parse_result(b"not json\n")[0] == "failed"
    assert "printed no JSON" in Runner._parse_result(b"\n")[1]["reason"]

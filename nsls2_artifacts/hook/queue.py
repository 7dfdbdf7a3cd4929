"""The hook's persistent build queue: one SQLite file in `hook_state_dir/hook.sqlite`.

The web app, the API, the webhook and the nightly schedule call `BuildQueue.request`;
the runner (`hook/runner.py`) calls `claim`, `set_pid` and `finish`. Every state change
is one `BEGIN IMMEDIATE` transaction, so concurrent requests for one env coalesce into
one queued build and the history survives a restart of the hook.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..errors import RecordError
from ..schema import Record

# every state a request can be in (the `state` column); the names below spell them
QueueState = Literal["queued", "running", "published", "unchanged", "failed", "cancelled"]
QUEUED = "queued"
RUNNING = "running"
PUBLISHED = "published"
UNCHANGED = "unchanged"
FAILED = "failed"
CANCELLED = "cancelled"
ACTIVE = (QUEUED, RUNNING)
FINISHED = (PUBLISHED, UNCHANGED, FAILED, CANCELLED)

# What the page says for a state: "unchanged" is a success ("nothing new to publish").
STATE_LABELS = {
    QUEUED: "queued",
    RUNNING: "running",
    PUBLISHED: "published",
    UNCHANGED: "no change",
    FAILED: "failed",
    CANCELLED: "cancelled",
}

# The two partial unique indexes make "one queued and one running build per env" a
# property of the database, not only of the code that writes it.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    env TEXT NOT NULL,
    state TEXT NOT NULL,
    source TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    pid INTEGER,
    build_id TEXT,
    size INTEGER,
    seconds REAL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS one_queued_per_env ON builds(env) WHERE state = 'queued';
CREATE UNIQUE INDEX IF NOT EXISTS one_running_per_env ON builds(env) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS builds_by_env ON builds(env, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (kind, key)
);
"""


def _iso(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class BuildRequest(Record, frozen=True, forbid_unknown_fields=True):
    """One row of the queue/history: a build the hook ran, runs, or will run.

    `id` is the *request* id (the queue's own integer, /builds/ID); `build_id` is the
    store build id the publish made (`2026.11.25T0200Z-1a2b3c4d`), once it made one.
    Rows are decoded by `Record.from_dict` (the state checked against QueueState) and
    refuse a column they do not know: only this hook writes and reads its database, so
    an unknown column means a database of another version, named, not guessed at."""

    RECORD: ClassVar[str] = "hook.sqlite builds row"

    id: int
    env: str
    state: QueueState
    source: str  # web, api, webhook, nightly
    requested_by: str
    requests: int  # how many requests joined this one (a click flood makes one build)
    created: float
    started: float | None
    finished: float | None
    pid: int | None
    build_id: str | None
    size: int | None
    seconds: float | None
    reason: str

    @property
    def label(self) -> str:
        return STATE_LABELS.get(self.state, self.state)

    @property
    def done(self) -> bool:
        return self.state in FINISHED

    @property
    def duration(self) -> float | None:
        """Wall time of the publish subprocess as the hook saw it (None until started)."""
        if self.started is None:
            return None
        end = self.finished if self.finished is not None else time.time()
        return max(0.0, end - self.started)

    @property
    def created_text(self) -> str:
        return _iso(self.created)

    @property
    def started_text(self) -> str:
        return _iso(self.started)

    @property
    def finished_text(self) -> str:
        return _iso(self.finished)

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.id,
            "id": self.id,  # the same request id under its older name (scripts use it)
            "env": self.env,
            "state": self.state,
            "label": self.label,
            "source": self.source,
            "requested_by": self.requested_by,
            "requests": self.requests,
            "created": self.created_text,
            "started": self.started_text or None,
            "finished": self.finished_text or None,
            "duration": self.duration,
            "build_id": self.build_id,
            "size": self.size,
            "pid": self.pid,
            "reason": self.reason,
        }


class BuildQueue:
    """SQLite-backed queue and history; safe to call from many threads at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # Writers of this process queue on a mutex: SQLite's own busy handler sleeps and
        # polls, which under a click flood turns into second-long tail latencies.
        self._write_lock = threading.Lock()
        self._conn().executescript(_SCHEMA)

    # -- plumbing --------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # autocommit mode: transactions are explicit (BEGIN IMMEDIATE) below
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the database's write lock up front."""
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[BuildRequest]:
        try:
            return [BuildRequest.from_dict(dict(row)) for row in self._conn().execute(sql, args)]
        except RecordError as exc:
            raise exc.at(str(self.path)) from None

    # -- requests --------------------------------------------------------------------------

    def request(self, env: str, *, source: str, requested_by: str) -> tuple[BuildRequest, bool]:
        """Queue a build of `env`, or join the one already queued; returns (request, joined)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT id FROM builds WHERE env = ? AND state = 'queued'", (env,)
            ).fetchone()
            if row is not None:
                db.execute("UPDATE builds SET requests = requests + 1 WHERE id = ?", (row["id"],))
                request_id, joined = row["id"], True
            else:
                cursor = db.execute(
                    "INSERT INTO builds (env, state, source, requested_by, created)"
                    " VALUES (?, 'queued', ?, ?, ?)",
                    (env, source, requested_by, time.time()),
                )
                request_id, joined = cursor.lastrowid, False
        return self.get(request_id), joined

    def get(self, request_id: int) -> BuildRequest | None:
        rows = self._rows("SELECT * FROM builds WHERE id = ?", (request_id,))
        return rows[0] if rows else None

    def active(self) -> list[BuildRequest]:
        """Running builds first, then queued ones in the order they will start."""
        return self._rows(
            "SELECT * FROM builds WHERE state IN ('queued', 'running')"
            " ORDER BY state = 'queued', id"
        )

    def history(self, *, env: str | None = None, limit: int = 50) -> list[BuildRequest]:
        if env is None:
            return self._rows("SELECT * FROM builds ORDER BY id DESC LIMIT ?", (limit,))
        return self._rows(
            "SELECT * FROM builds WHERE env = ? ORDER BY id DESC LIMIT ?", (env, limit)
        )

    def last_finished(self, env: str) -> BuildRequest | None:
        rows = self._rows(
            "SELECT * FROM builds WHERE env = ? AND state IN"
            " ('published', 'unchanged', 'failed', 'cancelled') ORDER BY id DESC LIMIT 1",
            (env,),
        )
        return rows[0] if rows else None

    def for_build_id(self, env: str, build_id: str) -> BuildRequest | None:
        rows = self._rows(
            "SELECT * FROM builds WHERE env = ? AND build_id = ? AND state = 'published'"
            " ORDER BY id DESC LIMIT 1",
            (env, build_id),
        )
        return rows[0] if rows else None

    # -- the runner's side -----------------------------------------------------------------

    def claim(self, concurrency: int) -> list[BuildRequest]:
        """Mark as many queued builds running as the limits allow; oldest first.

        At most `concurrency` builds run in total and at most one per env; nothing starts
        while the queue is paused.
        """
        with self._tx() as db:
            if self._meta(db, "paused") == "1":
                return []
            running = db.execute("SELECT COUNT(*) FROM builds WHERE state = 'running'").fetchone()
            free = concurrency - running[0]
            if free <= 0:
                return []
            ids = [
                row["id"]
                for row in db.execute(
                    "SELECT id FROM builds WHERE state = 'queued' AND env NOT IN"
                    " (SELECT env FROM builds WHERE state = 'running') ORDER BY id LIMIT ?",
                    (free,),
                )
            ]
            now = time.time()
            for request_id in ids:
                db.execute(
                    "UPDATE builds SET state = 'running', started = ? WHERE id = ?",
                    (now, request_id),
                )
        return [record for request_id in ids if (record := self.get(request_id))]

    def set_pid(self, request_id: int, pid: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE builds SET pid = ? WHERE id = ?", (pid, request_id))

    def finish(
        self,
        request_id: int,
        state: QueueState,
        *,
        reason: str = "",
        published: str | None = None,
        size: int | None = None,
        seconds: float | None = None,
    ) -> BuildRequest | None:
        """Record how a running build ended (only a running build can finish)."""
        if state not in FINISHED:
            raise ValueError(f"not a finished state: {state!r}")
        with self._tx() as db:
            db.execute(
                "UPDATE builds SET state = ?, finished = ?, reason = ?, build_id = ?, size = ?,"
                " seconds = ? WHERE id = ? AND state = 'running'",
                (state, time.time(), reason, published, size, seconds, request_id),
            )
        return self.get(request_id)

    def forget_finished_before(self, cutoff: float) -> list[int]:
        """Delete finished requests that ended before `cutoff` (epoch seconds), except each
        env's newest finished one (the front page shows its result); returns their ids."""
        marks = ",".join("?" * len(FINISHED))
        with self._tx() as db:
            rows = db.execute(
                f"SELECT id FROM builds WHERE state IN ({marks}) AND finished < ? AND id NOT IN"
                f" (SELECT MAX(id) FROM builds WHERE state IN ({marks}) GROUP BY env)",
                (*FINISHED, cutoff, *FINISHED),
            ).fetchall()
            ids = [row[0] for row in rows]
            db.executemany("DELETE FROM builds WHERE id = ?", [(i,) for i in ids])
        return ids

    def cancel_queued(self, request_id: int, reason: str) -> bool:
        """Cancel a build that has not started; False if it already started or ended."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE builds SET state = 'cancelled', finished = ?, reason = ?"
                " WHERE id = ? AND state = 'queued'",
                (time.time(), reason, request_id),
            )
            return cursor.rowcount == 1

    def running(self) -> list[BuildRequest]:
        return self._rows("SELECT * FROM builds WHERE state = 'running' ORDER BY id")

    def fail_running(self, request_id: int, reason: str) -> None:
        """Startup recovery: a build the previous hook process left running."""
        with self._tx() as db:
            db.execute(
                "UPDATE builds SET state = 'failed', finished = ?, reason = ?"
                " WHERE id = ? AND state = 'running'",
                (time.time(), reason, request_id),
            )

    # -- pause and metrics -----------------------------------------------------------------

    # -- things seen once: webhook deliveries, signed-out sessions ---------------------------

    def remember_once(self, kind: str, keys: list[str], until: float) -> bool:
        """Record every key of `keys` under `kind` until `until` (epoch seconds); False, and
        nothing recorded, when one of them is remembered already. One transaction, so two
        concurrent replays cannot both pass. Expired entries are forgotten here."""
        with self._tx() as db:
            db.execute("DELETE FROM seen WHERE until < ?", (time.time(),))
            for key in keys:
                found = db.execute(
                    "SELECT 1 FROM seen WHERE kind = ? AND key = ?", (kind, key)
                ).fetchone()
                if found:
                    return False
            db.executemany(
                "INSERT INTO seen (kind, key, until) VALUES (?, ?, ?)",
                [(kind, key, until) for key in keys],
            )
        return True

    def remembered(self, kind: str, key: str) -> bool:
        row = (
            self._conn()
            .execute(
                "SELECT 1 FROM seen WHERE kind = ? AND key = ? AND until >= ?",
                (kind, key, time.time()),
            )
            .fetchone()
        )
        return row is not None

    @staticmethod
    def _meta(db: sqlite3.Connection, key: str) -> str | None:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    def get_meta(self, key: str) -> str | None:
        return self._meta(self._conn(), key)

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    @property
    def paused(self) -> bool:
        return self.get_meta("paused") == "1"

    def set_paused(self, paused: bool) -> None:
        self.set_meta("paused", "1" if paused else "0")

    def counts(self) -> dict[tuple[str, str], int]:
        """(env, state) -> number of builds, for /metrics."""
        return {
            (row["env"], row["state"]): row["n"]
            for row in self._conn().execute(
                "SELECT env, state, COUNT(*) AS n FROM builds GROUP BY env, state"
            )
        }

    def joined_requests(self) -> int:
        row = self._conn().execute("SELECT COALESCE(SUM(requests - 1), 0) FROM builds").fetchone()
        return int(row[0])

    def durations(self) -> list[tuple[str, str, float]]:
        """(env, state, seconds) of every finished build that ran, for /metrics."""
        return [
            (row["env"], row["state"], row["finished"] - row["started"])
            for row in self._conn().execute(
                "SELECT env, state, started, finished FROM builds"
                " WHERE finished IS NOT NULL AND started IS NOT NULL"
            )
        ]

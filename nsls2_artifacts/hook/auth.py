"""Who may queue builds: bearer tokens, signed session cookies, CSRF tokens, webhook HMACs.

The app builds one `Auth` from the site config and calls it on every request that
changes something. Only sha256 hashes of tokens are configured (`hook.tokens_sha256`);
every comparison is constant-time. Sessions are HMAC-signed cookies; the signing key is
made at startup and lives only in the hook's memory (never on disk, never inherited by
a build; secrecy.py keeps /proc from showing it), so a build running as the hook's user
cannot mint a session; a restart signs everybody out. Each session carries a random id,
and signing out records that id as ended (in the queue database, until the cookie would
expire), so a copied cookie stops working on the server, not only in the browser.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

SESSION_COOKIE = "nsls2_hook_session"
SIGNIN_COOKIE = "nsls2_hook_signin"
SESSION_SECONDS = 12 * 3600
SIGNIN_SECONDS = 1800
# How long an accepted webhook delivery (its id and its body) is remembered; a copy
# arriving within this window is refused. GitHub gives up redelivering long before.
DELIVERY_WINDOW_SECONDS = 30 * 86400


ENDED_SESSION = "session-ended"  # `Remembered` kind for signed-out session ids


class Remembered(Protocol):
    """The hook's memory of things seen once (implemented by `BuildQueue`)."""

    def remember_once(self, kind: str, keys: list[str], until: float) -> bool: ...
    def remembered(self, kind: str, key: str) -> bool: ...


def token_hash(token: str) -> str:
    """The sha256 hex digest that goes into `hook.tokens_sha256` for `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def new_session_key(state_dir: str | Path) -> bytes:
    """A fresh session signing key, kept in memory only.

    Older hooks kept the key in `STATE_DIR/session.key`, where a build (a subprocess
    running as the same user) could read it and sign itself a staff session; that file
    is deleted here, which also ends the sessions it signed."""
    with contextlib.suppress(FileNotFoundError):
        Path(state_dir, "session.key").unlink()
    return secrets.token_bytes(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    """A signed-in staff member: which token (by hash) and the form CSRF token."""

    token_sha256: str
    csrf: str
    expires: float
    sid: str = ""  # random id; sign-out ends it on the server
    name: str = ""  # from the config (`hook token --name`), if the token has one

    @property
    def who(self) -> str:
        return self.name or anonymous_who(self.token_sha256)


def anonymous_who(token_sha256: str) -> str:
    """Enough of the hash to tell unnamed tokens apart in the history, never the token."""
    return f"token:{token_sha256[:8]}"


class FailureLimiter:
    """Wrong tokens per client address: after `limit` failures within `window` seconds,
    further *wrong* tokens from the address are answered 429 (with Retry-After) until the
    oldest failure is `window` old. A valid token is always accepted: the credential is
    checked first, so a guessing script behind the same proxy or NAT cannot lock staff
    out. Tokens are 32 random bytes, so this is not what keeps them secret; it tells a
    script with a stale or wrong token to stop. `limit` 0 turns it off."""

    MAX_ADDRESSES = 10_000  # forget the quietest ones beyond this (memory stays bounded)

    def __init__(self, limit: int, window: float, clock: Any = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.failures: dict[str, deque[float]] = {}

    def _recent(self, address: str) -> deque[float]:
        times = self.failures.get(address, deque())
        horizon = self.clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        return times

    def retry_after(self, address: str) -> float:
        """Seconds until `address` may try again; 0 when it may now."""
        if self.limit <= 0:
            return 0.0
        times = self._recent(address)
        if len(times) < self.limit:
            return 0.0
        return max(times[-self.limit] + self.window - self.clock(), 0.001)

    def failed(self, address: str) -> None:
        if self.limit <= 0:
            return
        if address not in self.failures and len(self.failures) >= self.MAX_ADDRESSES:
            self._forget_quietest()
        # Only the newest `limit` failures decide when the address may try again.
        times = self._recent(address)
        if times.maxlen != self.limit:
            times = deque(times, maxlen=self.limit)
        times.append(self.clock())
        self.failures[address] = times

    def wrong_token(self, address: str) -> float:
        """Record a wrong token from `address`; the seconds to put in Retry-After (answer
        429) if the address was already over the limit, else 0 (answer 403). Still
        counted while limited, so a script that keeps guessing stays limited."""
        wait = self.retry_after(address)
        self.failed(address)
        return wait

    def _forget_quietest(self) -> None:
        """Drop addresses with no failure left in the window, else the one quiet longest."""
        stale = [a for a in self.failures if not self._recent(a)]
        for address in stale or [min(self.failures, key=lambda a: self.failures[a][-1])]:
            del self.failures[address]


class Auth:
    """Token, session, CSRF and webhook checks for one site config."""

    def __init__(
        self,
        tokens_sha256: tuple[str, ...],
        key: bytes,
        webhook_secret: str | None,
        memory: Remembered,
        names: dict[str, str] | None = None,
    ):
        self.tokens_sha256 = tuple(t.lower() for t in tokens_sha256)
        self.key = key
        self.webhook_secret = webhook_secret
        self.memory = memory
        self.names = {k.lower(): v for k, v in (names or {}).items()}

    def who(self, token_sha256: str) -> str:
        """The name the config gives this token, else a short hash of it."""
        return self.names.get(token_sha256) or anonymous_who(token_sha256)

    # -- tokens ----------------------------------------------------------------------------

    def check_token(self, token: str) -> str | None:
        """The configured hash `token` matches, or None; compares against every hash."""
        digest = token_hash(token)
        match = None
        for configured in self.tokens_sha256:
            if hmac.compare_digest(configured, digest):
                match = configured
        return match

    def bearer(self, header: str | None) -> tuple[int, str | None]:
        """(status, token hash): 200 with the hash, 401 without a token, 403 for a bad one."""
        if not header or not header.lower().startswith("bearer "):
            return 401, None
        match = self.check_token(header[7:].strip())
        return (200, match) if match else (403, None)

    # -- signed values ---------------------------------------------------------------------

    def sign(self, payload: dict) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        mac = hmac.new(self.key, body.encode(), hashlib.sha256).digest()
        return f"{body}.{_b64(mac)}"

    def unsign(self, value: str | None) -> dict | None:
        """The payload of a value `sign` made and that has not expired, else None."""
        if not value or "." not in value:
            return None
        body, _, mac = value.partition(".")
        expected = _b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, mac):
            return None
        try:
            payload = json.loads(_unb64(body))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(payload, dict) or payload.get("exp", 0) < time.time():
            return None
        return payload

    # -- sessions and CSRF -----------------------------------------------------------------

    def new_session(self, token_sha256: str) -> tuple[Session, str]:
        session = Session(
            token_sha256,
            secrets.token_urlsafe(32),
            time.time() + SESSION_SECONDS,
            sid=secrets.token_urlsafe(18),
            name=self.names.get(token_sha256, ""),
        )
        cookie = self.sign(
            {"sub": token_sha256, "csrf": session.csrf, "exp": session.expires, "sid": session.sid}
        )
        return session, cookie

    def end_session(self, session: Session) -> None:
        """Sign-out: the session id is refused from now until the cookie would have expired."""
        self.memory.remember_once(ENDED_SESSION, [session.sid], session.expires + 60)

    def session(self, cookie: str | None) -> Session | None:
        """The session in `cookie`, if it is signed, unexpired and its token still configured."""
        payload = self.unsign(cookie)
        if payload is None:
            return None
        sub, csrf, sid = payload.get("sub"), payload.get("csrf"), payload.get("sid")
        if not isinstance(sub, str) or not isinstance(csrf, str):
            return None
        if not isinstance(sid, str) or not sid or self.memory.remembered(ENDED_SESSION, sid):
            return None  # signed out (or a cookie from before sessions had ids)
        # A token removed from the config ends its sessions at once.
        if not any(hmac.compare_digest(sub, t) for t in self.tokens_sha256):
            return None
        return Session(sub, csrf, float(payload["exp"]), sid=sid, name=self.names.get(sub, ""))

    @staticmethod
    def csrf_ok(session: Session | None, submitted: str | None) -> bool:
        if session is None or not submitted:
            return False
        return hmac.compare_digest(session.csrf.encode(), submitted.encode())

    def new_signin_nonce(self) -> tuple[str, str]:
        """(nonce for the sign-in form, cookie value): a double-submit CSRF check pre-session."""
        nonce = secrets.token_urlsafe(24)
        return nonce, self.sign({"nonce": nonce, "exp": time.time() + SIGNIN_SECONDS})

    def signin_nonce_ok(self, cookie: str | None, submitted: str | None) -> bool:
        payload = self.unsign(cookie)
        if payload is None or not submitted or not isinstance(payload.get("nonce"), str):
            return False
        return hmac.compare_digest(payload["nonce"].encode(), submitted.encode())

    # -- webhook ---------------------------------------------------------------------------

    def first_delivery(self, delivery: str, body: bytes) -> bool:
        """Whether this webhook delivery is new: neither its `X-GitHub-Delivery` id nor its
        signed body was accepted within `DELIVERY_WINDOW_SECONDS`. The signature covers
        only the body, so a replay with a fresh id is caught by the body's digest."""
        digest = hashlib.sha256(body).hexdigest()
        until = time.time() + DELIVERY_WINDOW_SECONDS
        return self.memory.remember_once(
            "webhook-delivery", [f"id:{delivery}", f"body:{digest}"], until
        )

    def webhook_ok(self, body: bytes, header: str | None) -> bool:
        """GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`."""
        if not self.webhook_secret or not header or not header.startswith("sha256="):
            return False
        expected = hmac.new(self.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, header[len("sha256=") :].strip().lower())

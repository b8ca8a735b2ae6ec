"""Per-tab sessions of the web UI, keyed by unguessable ids, dropped after idle time."""
from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["SessionNotFound", "SessionStore", "TooManySessions"]

T = TypeVar("T")


class SessionNotFound(KeyError):
    """Unknown or expired session id."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else "unknown session"


class TooManySessions(RuntimeError):
    """The store holds ``max_sessions`` live sessions already."""


@dataclass
class _Entry(Generic[T]):
    value: T
    last_used: float


class SessionStore(Generic[T]):
    """Thread-safe ``id -> value`` map whose entries expire ``idle_timeout_s`` seconds after
    their last use.

    Expired entries are dropped on every access and by :meth:`expire` (which a server calls
    periodically), so an abandoned tab's volume does not stay in memory.

    Args:
        factory: makes the value of a new session.
        idle_timeout_s: seconds without a request after which a session is dropped.
        max_sessions: most live sessions; :meth:`create` raises :class:`TooManySessions` beyond.
        clock: monotonic time in seconds (injectable for tests).
    """

    def __init__(
        self,
        factory: Callable[[], T],
        *,
        idle_timeout_s: float = 1800.0,
        max_sessions: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not idle_timeout_s > 0:
            raise ValueError(f"idle_timeout_s must be positive, got {idle_timeout_s}")
        if int(max_sessions) < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.factory = factory
        self.idle_timeout_s = float(idle_timeout_s)
        self.max_sessions = int(max_sessions)
        self.clock = clock
        self._entries: dict[str, _Entry[T]] = {}
        self._lock = threading.Lock()

    def create(self) -> tuple[str, T]:
        """A new session: ``(id, value)``; the id is 128 random bits, URL-safe."""
        with self._lock:
            self._expire_locked()
            if len(self._entries) >= self.max_sessions:
                raise TooManySessions(
                    f"{len(self._entries)} sessions are open, the server's limit; close a tab or "
                    f"wait until idle ones expire ({self.idle_timeout_s / 60:g} min)"
                )
        value = self.factory()  # outside the lock: may be slow
        sid = secrets.token_urlsafe(16)
        with self._lock:
            self._entries[sid] = _Entry(value, self.clock())
        return sid, value

    def get(self, sid: str) -> T:
        """The session's value; marks it used. :class:`SessionNotFound` if unknown or expired."""
        with self._lock:
            self._expire_locked()
            entry = self._entries.get(sid)
            if entry is None:
                raise SessionNotFound(
                    f"session unknown or expired after {self.idle_timeout_s / 60:g} min idle; "
                    "reload the page to start a new one"
                )
            entry.last_used = self.clock()
            return entry.value

    def close(self, sid: str) -> bool:
        """Drop a session now; False if it did not exist."""
        with self._lock:
            return self._entries.pop(sid, None) is not None

    def expire(self) -> int:
        """Drop the sessions idle for longer than the timeout; returns how many."""
        with self._lock:
            return self._expire_locked()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _expire_locked(self) -> int:
        deadline = self.clock() - self.idle_timeout_s
        stale = [sid for sid, e in self._entries.items() if e.last_used < deadline]
        for sid in stale:
            del self._entries[sid]
        return len(stale)

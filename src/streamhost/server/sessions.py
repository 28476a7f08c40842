"""Stateful sessions, the container side of SageMaker's sticky routing.

A session keeps the conversation so far; a client sends only its new turn and the server
prepends the history. Sessions expire after a configurable idle time.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

NEW_SESSION_HEADER = "X-Amzn-SageMaker-New-Session-Id"
SESSION_HEADER = "X-Amzn-SageMaker-Session-Id"
CLOSED_SESSION_HEADER = "X-Amzn-SageMaker-Closed-Session-Id"


class SessionError(Exception):
    """An unknown, expired or malformed session id."""


@dataclass
class Session:
    """One conversation: prompt text history and chat messages."""

    id: str
    expires_at: float
    text: str = ""
    messages: list[dict] = field(default_factory=list)

    def expires_header(self) -> str:
        """``<id>; Expires=YYYY-MM-DDTHH:MM:SSZ`` as the container standard writes it."""
        when = datetime.fromtimestamp(self.expires_at, tz=timezone.utc)
        return f"{self.id}; Expires={when.strftime('%Y-%m-%dT%H:%M:%SZ')}"


class SessionStore:
    """In-memory sessions with expiry (one model-server process owns them)."""

    def __init__(self, ttl: float, max_sessions: int = 10_000) -> None:
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self) -> Session:
        """Open a new session."""
        self.expire()
        if len(self._sessions) >= self.max_sessions:
            raise SessionError(f"too many open sessions (limit {self.max_sessions})")
        session = Session(id=str(uuid.uuid4()), expires_at=time.time() + self.ttl)
        self._sessions[session.id] = session
        return session

    def get(self, header: str) -> Session:
        """The live session named by a session-id header (``id`` or ``id; Expires=...``)."""
        session_id = header.split(";", 1)[0].strip()
        session = self._sessions.get(session_id)
        if session is None or session.expires_at < time.time():
            self._sessions.pop(session_id, None)
            raise SessionError(f"session not found: {session_id!r} is unknown or has expired")
        session.expires_at = time.time() + self.ttl
        return session

    def close(self, header: str) -> Session:
        """Close a session; return it."""
        session = self.get(header)
        del self._sessions[session.id]
        return session

    def expire(self) -> None:
        """Forget sessions whose time is up."""
        now = time.time()
        for key in [k for k, s in self._sessions.items() if s.expires_at < now]:
            del self._sessions[key]

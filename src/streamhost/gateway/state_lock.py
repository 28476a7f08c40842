"""One gateway per state: an exclusive lock, held for the gateway's life.

A gateway's state is its database and its state folder (model folders, instance logs).
Two gateways on one state would adopt, replace and delete each other's instances, so the
second one refuses to start, in one line that names the holder.

- The state folder, and the folder of a SQLite file: `fcntl.flock` on `gateway.lock` in
  each. The kernel releases a flock when the process holding it dies, however it dies, so
  a crashed gateway never blocks the next one. The holder (`Holder`: its pid, address,
  and the `streamhost up` that started it, if one did) is written into the file, for the
  refusal to name. The file is never replaced or removed: the lock lives on its inode.
- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) on a connection held
  open for the gateway's life; the server releases it when that connection ends. The
  holder is kept in the `streamhost_state_holder` table.
- Other server databases get no database lock (the folder lock still applies): the
  gateway logs that one gateway per database is the operator's to ensure.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

# SQLAlchemy is imported only for a database that needs it: `streamhost up` checks a SQLite
# state's folder lock before starting the gateway, and the import would delay that start.
__all__ = ["Holder", "StateInUse", "StateLock", "StateLockError", "current_holder", "lock_paths"]

log = logging.getLogger(__name__)

LOCK_FILE = "gateway.lock"
# pg_try_advisory_lock takes a bigint: the first 8 bytes of a hash of a fixed name.
_PG_KEY = int.from_bytes(
    hashlib.sha256(b"streamhost gateway state").digest()[:8], "big", signed=True
)


@functools.cache
def _holders() -> sa.Table:
    import sqlalchemy as sa

    return sa.Table(
        "streamhost_state_holder",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("holder", sa.Text, nullable=False),
    )


class StateLockError(Exception):
    """The lock could not be taken or checked for a reason other than another holder."""


@dataclass(frozen=True)
class Holder:
    """Who holds a state: the gateway process, and the `streamhost up` that started it."""

    pid: int
    url: str
    up_pid: int | None = None
    ui_url: str | None = None

    @classmethod
    def unknown(cls) -> Holder:
        """A holder whose record could not be read."""
        return cls(pid=0, url="")

    def describe(self) -> str:
        """The holder in a few words, e.g. `streamhost gateway (pid 12, http://…:8080)`."""
        if self.pid <= 0:
            return "another streamhost gateway"
        if self.up_pid is None:
            return f"streamhost gateway (pid {self.pid}, {self.url})"
        ui = f", chat UI {self.ui_url}" if self.ui_url else ""
        return f"streamhost up (pid {self.up_pid}: gateway {self.url} pid {self.pid}{ui})"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Holder | None:
        """The holder a lock file or row records, or None if it is unreadable."""
        try:
            fields = json.loads(text)
            return cls(
                pid=int(fields["pid"]),
                url=str(fields["url"]),
                up_pid=None if fields.get("up_pid") is None else int(fields["up_pid"]),
                ui_url=fields.get("ui_url") or None,
            )
        except (ValueError, TypeError, KeyError):
            return None


class StateInUse(Exception):
    """Another gateway holds the state; the message is one line for the user."""

    def __init__(self, where: str, holder: Holder | None) -> None:
        who = (holder or Holder.unknown()).describe()
        super().__init__(
            f"the state in {where} is in use by {who}: stop it, or give this one a "
            "separate state with --state FILE"
        )
        self.where = where
        self.holder = holder


def lock_paths(state_url: str, state_dir: Path) -> list[Path]:
    """The lock files of a state: `gateway.lock` in the state folder and in a SQLite
    file's folder (one file when they are the same folder)."""
    folders = [Path(state_dir).expanduser().resolve()]
    database = _sqlite_file(state_url)
    if database is not None and database.parent not in folders:
        folders.append(database.parent)
    return sorted(folder / LOCK_FILE for folder in folders)


def current_holder(state_url: str, state_dir: Path) -> Holder | None:
    """Who holds the state's folder locks now, None if nobody does (each file is probed
    with a shared lock, released at once); a holder that has not written its record yet
    is `Holder.unknown()`."""
    for path in lock_paths(state_url, state_dir):
        if not path.exists():
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return Holder.from_json(_read(fd)) or Holder.unknown()
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return None


class StateLock:
    """The exclusive lock on one state, held until `release` or the process's end."""

    def __init__(self, files: list[int], connection: Any = None, engine: Any = None) -> None:
        self._files = files
        self._connection = connection
        self._engine = engine

    @classmethod
    def acquire(cls, state_url: str, state_dir: Path, holder: Holder) -> StateLock:
        """Take the state's locks and record `holder`; `StateInUse` if a gateway holds any,
        `StateLockError` if a lock cannot be taken at all."""
        files: list[int] = []
        try:
            for path in lock_paths(state_url, state_dir):
                files.append(_lock_file(path))
            lock = cls(files)
            lock._lock_database(state_url)
        except BaseException:
            for fd in files:
                os.close(fd)
            raise
        lock.record(holder)
        return lock

    def record(self, holder: Holder) -> None:
        """Write `holder` where a refused gateway reads it (after the port is known)."""
        text = holder.to_json()
        for fd in self._files:
            # In place: replacing the file would give the next gateway another inode.
            os.ftruncate(fd, 0)
            os.pwrite(fd, text.encode(), 0)
        if self._connection is not None:
            import sqlalchemy as sa

            with self._connection.begin():
                self._connection.execute(sa.delete(_holders()))
                self._connection.execute(sa.insert(_holders()).values(id=1, holder=text))

    def release(self) -> None:
        """Let the next gateway have the state (idempotent)."""
        files, self._files = self._files, []
        for fd in files:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the flock
        connection, self._connection = self._connection, None
        if connection is not None:
            import sqlalchemy as sa

            with contextlib.suppress(sa.exc.SQLAlchemyError):
                connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_KEY})
                connection.commit()
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                connection.close()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _lock_database(self, state_url: str) -> None:
        if _sqlite_file(state_url) is not None:
            return  # the file's folder lock covers it
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        url = sa.make_url(state_url)
        backend = url.get_backend_name()
        if backend == "sqlite":
            return  # the file's folder lock covers it
        if backend != "postgresql":
            log.warning(
                "no database lock for %s: make sure one gateway only uses this database",
                backend,
            )
            return
        # Its own connection, outside any pool: the lock lasts as long as it does.
        try:
            self._engine = sa.create_engine(url, poolclass=NullPool)
        except ModuleNotFoundError as error:
            raise StateLockError(
                f"the state database needs its driver, {error.name}, which is not installed: "
                "pip install 'psycopg[binary]' in streamhost's environment"
            ) from None
        try:
            connection = self._engine.connect()
            held = connection.execute(
                sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": _PG_KEY}
            ).scalar()
            connection.commit()
        except sa.exc.SQLAlchemyError as error:
            self._engine.dispose()
            raise StateLockError(f"cannot lock the state database: {error.orig or error}") from None
        if not held:
            holder = _database_holder(connection)
            connection.close()
            self._engine.dispose()
            raise StateInUse(url.render_as_string(hide_password=True), holder)
        _holders().create(connection, checkfirst=True)
        connection.commit()
        self._connection = connection


def _lock_file(path: Path) -> int:
    """An open descriptor of `path` holding its exclusive flock; `StateInUse` if another
    process holds it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise StateLockError(f"cannot create the state lock {path}: {error.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = Holder.from_json(_read(fd))
        os.close(fd)
        raise StateInUse(str(path.parent), holder) from None
    except OSError as error:
        os.close(fd)
        raise StateLockError(f"cannot lock {path}: {error.strerror}") from None
    return fd


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        return ""


def _database_holder(connection: Any) -> Holder | None:
    import sqlalchemy as sa

    with contextlib.suppress(sa.exc.SQLAlchemyError):
        text = connection.execute(sa.select(_holders().c.holder)).scalar()
        return Holder.from_json(text) if text else None
    return None


def _sqlite_file(state_url: str) -> Path | None:
    if state_url.startswith("sqlite:///") and "?" not in state_url:  # as `sqlite_url` writes
        database = state_url.removeprefix("sqlite:///")
        return None if database in ("", ":memory:") else Path(database).expanduser().resolve()
    import sqlalchemy as sa

    try:
        url = sa.make_url(state_url)
    except sa.exc.ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).expanduser().resolve()

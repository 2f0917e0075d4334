"""Database engines: SQLite by default, PostgreSQL in production, both async.

Operators write plain URLs (``sqlite:///var/pubwatch.db``, ``postgresql://...``); the async
driver is chosen here so nobody has to know about aiosqlite or asyncpg.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession  # re-exported
from sqlalchemy.pool import NullPool

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def async_url(url: str) -> str:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(f"unsupported database {backend!r}: use sqlite:// or postgresql://")
    return parsed.set(drivername=_ASYNC_DRIVERS[backend]).render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while a worker writes; busy_timeout makes writers queue instead
    # of failing with "database is locked" when several processes share the file.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    # Take over transaction control from the driver (which would run DDL outside any
    # transaction): every transaction then is ours, so a failed migration rolls back whole.
    dbapi_connection.isolation_level = None


# Execution option marking an engine whose transactions only read (see ``read_only``).
READ_ONLY_OPTION = "pubwatch_read_only"


def _sqlite_begin(connection: Any) -> None:
    if connection.get_execution_options().get(READ_ONLY_OPTION):
        # A reader needs no lock: in WAL mode it sees a snapshot and never waits for, nor
        # holds up, a writer.
        connection.exec_driver_sql("BEGIN")
        return
    # IMMEDIATE takes the write lock up front: concurrent writers then wait (busy_timeout)
    # instead of failing mid-transaction with "database is locked" when upgrading a read lock.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> AsyncEngine:
    full = async_url(url)
    parsed = make_url(full)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(full, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(full, pool_size=10, max_overflow=10, pool_pre_ping=True)


def blocking_sqlite_engine(engine: AsyncEngine) -> Engine | None:
    """For a SQLite ``engine``, a plain (blocking) engine on the same file, with the same
    pragmas and ``BEGIN IMMEDIATE``: a transaction run whole in a thread through it costs one
    hop to that thread, where the async driver hops to its thread for every cursor,
    statement and commit (each hop waiting for a busy event loop). None for PostgreSQL, and
    for an in-memory database (a second engine would open a database of its own)."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return None
    blocking = create_engine(
        engine.url.set(drivername="sqlite"), connect_args={"timeout": 30}, poolclass=NullPool
    )
    event.listen(blocking, "connect", _sqlite_pragmas)
    event.listen(blocking, "begin", _sqlite_begin)
    return blocking


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, for transactions that only read.

    On SQLite every other transaction takes the write lock at ``BEGIN``; a page view holding
    it (through its queries and template) made concurrent views and the worker's sends
    queue behind it, and the queue is SQLite's busy handler, polling with sleeps up to
    100 ms: topic-page p99 was over a second at 50 clients. A write attempted here can fail
    with "database is locked", so only code that never writes may use it. PostgreSQL
    ignores the option.
    """
    return engine.execution_options(**{READ_ONLY_OPTION: True})


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


class WriteTurns:
    """Transactions of one process that write often, taken one at a time on SQLite.

    SQLite lets one transaction hold the write lock, and ours take it at ``BEGIN``. Tasks of
    one process that wait for it inside SQLite's busy handler poll with sleeps that grow to
    100 ms, so four send jobs each committing one row per message managed a third of the
    commits per second one job did (and most of the wait was sleep). Queued here on an
    asyncio lock they go in turn, as soon as the lock is free. PostgreSQL locks rows, not
    the database: there a turn is free.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the process's turn for one transaction; never nest turns (no re-entry)."""
        if self._lock is None:
            yield
            return
        async with self._lock:
            yield

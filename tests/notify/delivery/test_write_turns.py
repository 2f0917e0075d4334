"""Write turns: on SQLite the process's per-message transactions go one at a time, queued
in the process instead of polling in SQLite's busy handler; on PostgreSQL they overlap. The
blocking engine the sent records commit through exists for a SQLite file only."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from pubwatch_notify.store.engine import WriteTurns, blocking_sqlite_engine, make_engine


async def _overlaps(database_url: str) -> int:
    """How many of four writers held a turn at once, at most (without turns SQLite would
    still serialise them, but inside its busy handler: all four would be counted)."""
    engine = make_engine(database_url)
    turns = WriteTurns(engine)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE turns_probe (n INTEGER)"))
    inside = 0
    most_inside = 0

    async def writer(n: int) -> None:
        nonlocal inside, most_inside
        async with turns.turn():
            inside += 1
            most_inside = max(most_inside, inside)
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO turns_probe VALUES (:n)"), {"n": n})
                await asyncio.sleep(0.05)  # long enough for every other writer to try to enter
            inside -= 1

    try:
        await asyncio.gather(*(writer(n) for n in range(4)))
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT count(*) FROM turns_probe"))).scalar()
        assert rows == 4
    finally:
        await engine.dispose()
    return most_inside


async def test_sqlite_writers_take_turns(sqlite_url: str) -> None:
    assert await _overlaps(sqlite_url) == 1


async def test_postgres_writers_do_not_wait_for_each_other(postgres_url: str) -> None:
    assert await _overlaps(postgres_url) == 4


def test_a_blocking_engine_only_for_a_sqlite_file(sqlite_url: str) -> None:
    assert blocking_sqlite_engine(make_engine(sqlite_url)) is not None
    # A second engine on an in-memory database would write to a database of its own.
    assert blocking_sqlite_engine(make_engine("sqlite:///:memory:")) is None
    assert blocking_sqlite_engine(make_engine("postgresql://pubwatch@db.invalid/x")) is None

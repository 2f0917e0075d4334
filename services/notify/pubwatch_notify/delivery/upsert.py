"""``INSERT ... ON CONFLICT DO NOTHING`` in the dialect of the session's database."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert_or_ignore(session: AsyncSession, table: Any, conflict_columns: list[str]) -> Any:
    """An insert into ``table`` that skips rows clashing on ``conflict_columns``."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=conflict_columns)
    raise ValueError(f"unsupported database dialect {dialect!r}")

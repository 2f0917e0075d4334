"""Schema migrations: applied whole on start-up or by ``pubwatch notify migrate``.

Each upgrade runs in one transaction (SQLite included, see :mod:`.engine`), so a failed
migration leaves the schema as it was, never half-way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    def read(sync_connection: Any) -> str | None:
        return MigrationContext.configure(sync_connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


async def upgrade_to_head(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """Apply pending migrations. Returns (revision before, revision after)."""
    before = await current_revision(engine)
    config = alembic_config()

    def upgrade(sync_connection: Any) -> None:
        config.attributes["connection"] = sync_connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        await connection.run_sync(upgrade)
    return before, await current_revision(engine)


async def autogenerate(engine: AsyncEngine, message: str) -> None:
    """Developer tool: write a new revision from the difference between models and schema."""
    config = alembic_config()

    def revision(sync_connection: Any) -> None:
        config.attributes["connection"] = sync_connection
        command.revision(config, message=message, autogenerate=True)

    async with engine.begin() as connection:
        await connection.run_sync(revision)

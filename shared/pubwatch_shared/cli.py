"""The ``pubwatch`` command.

Each service registers its own command group under the ``pubwatch.commands`` entry-point
group (``pubwatch ingest ...``, ``pubwatch notify ...``), so this dispatcher never imports a
service by name. ``pubwatch up`` runs the whole system on one machine as child processes,
the same commands docker-compose runs.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import entry_points

import click

from pubwatch_shared.events import ChangeEvent


class ServiceCommands(click.Group):
    """A group that adds the service groups found through entry points, loaded on use."""

    def _service_entry_points(self) -> dict[str, object]:
        return {ep.name: ep for ep in entry_points(group="pubwatch.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._service_entry_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        entry_point = self._service_entry_points().get(cmd_name)
        if entry_point is None:
            return None
        loaded = entry_point.load()  # type: ignore[attr-defined]
        if not isinstance(loaded, click.Command):
            raise click.ClickException(f"entry point {cmd_name!r} is not a click command")
        return loaded


@click.group(cls=ServiceCommands)
def main() -> None:
    """PubWatch: tells people when new medical evidence on a condition is published."""


@main.command()
@click.option("--with-ingest/--without-ingest", default=True, help="Also run the PubMed poller.")
def up(with_ingest: bool) -> None:
    """Run the whole system on this machine: API, notify worker, ingest worker.

    Uses PUBWATCH_REDIS_URL when set, else an embedded Redis under ./var/redis. Ctrl-C
    stops everything, the embedded Redis included.
    """
    from pubwatch_shared.supervisor import run_system

    sys.exit(run_system(with_ingest=with_ingest))


@main.command("event-schema")
def event_schema() -> None:
    """Print the JSON Schema of the change event (what POST /v1/events accepts)."""
    click.echo(json.dumps(ChangeEvent.model_json_schema(), indent=2))


if __name__ == "__main__":
    main()

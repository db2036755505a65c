"""The ``baie`` console script: the inventory commands, ``baie daemon``, and the settings both run with.

The settings are loaded here, once per invocation, and handed to the inventory commands as a
:class:`inventory.cli.CliContext`: inventory never imports the daemon.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from daemon.config import ConfigError, Settings, load_settings
from inventory import cli as inventory_cli
from inventory import cli_alerts, cli_daemon
from inventory import cli_provision
from inventory import cli_power
from inventory.cli import CliContext, fail

app = typer.Typer(name="baie", help="Datacenter inventory and bare-metal provisioning.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
app.add_typer(inventory_cli.app)
app.add_typer(cli_daemon.app)
app.add_typer(cli_provision.app)
app.add_typer(cli_alerts.app)
app.add_typer(cli_power.app)

Config = Annotated[Path | None, typer.Option(
    "--config", envvar="BAIE_CONFIG", dir_okay=False,
    help="The settings file (default: /etc/baie/baie.toml when it exists).")]


def settings_from(config: Path | None, database_url: str | None = None) -> Settings:
    env = {**os.environ, "BAIE_DATABASE_URL": database_url} if database_url else None
    try:
        return load_settings(config, env)
    except ConfigError as exc:
        fail(str(exc), code=2)


@app.callback()
def main(ctx: typer.Context, config: Config = None,
         database_url: Annotated[str | None, typer.Option(
             envvar="BAIE_DATABASE_URL", help="The database, instead of database.url in the settings.")] = None,
         ) -> None:
    """Datacenter inventory and bare-metal provisioning."""
    settings = settings_from(config, database_url)
    ctx.obj = CliContext(database_url=settings.database.url, api_socket=settings.api.socket)


@app.command("daemon")
def run_daemon(ctx: typer.Context, config: Config = None) -> None:
    """Run the daemon: discovery, telemetry, provisioning and the API (as the baie service user)."""
    options = ctx.parent.params
    settings = settings_from(config or options["config"], options["database_url"])
    # Imported here: the daemon pulls in the web stack and every driver, which the other commands never need.
    from daemon.main import run

    raise typer.Exit(run(settings))

"""The ``baie`` commands that go through the daemon, which alone holds the credentials: status, discovery,
power, one-time boot, and pinning a BMC's certificate."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from inventory.cli import Json, details, fail, print_json, show
from inventory.client import daemon_client

app = typer.Typer()
bmc_app = typer.Typer(help="A node's BMC.", no_args_is_help=True)
app.add_typer(bmc_app, name="bmc")


class PowerCommand(StrEnum):
    STATUS = "status"
    ON = "on"
    OFF = "off"
    SOFT_OFF = "soft-off"
    CYCLE = "cycle"


class BootTarget(StrEnum):
    PXE = "pxe"
    DISK = "disk"
    CD = "cd"
    BIOS = "bios"


@app.command()
def status(ctx: typer.Context, as_json: Json = False) -> None:
    """Whether the daemon runs and is healthy (asks its API socket)."""
    with daemon_client(ctx) as daemon:
        health = daemon.request("GET", "/healthz")
    if as_json:
        return print_json(health)
    show(f"The daemon is running (socket {ctx.obj.api_socket})", details(health.items()))


@app.command()
def discover(ctx: typer.Context, site: Annotated[str, typer.Argument(help="The site whose ranges to sweep.")],
             cidr: Annotated[str | None, typer.Option("--range", help="Sweep this CIDR instead of the site's "
                                                      "ranges (all protocols).")] = None,
             as_json: Json = False) -> None:
    """Sweep a site for BMCs (Redfish, IPMI) and enrol what answers."""
    summary = None
    with daemon_client(ctx) as daemon, Progress(TextColumn("sweeping {task.description}"), BarColumn(),
                                                MofNCompleteColumn(), TimeElapsedColumn(),
                                                disable=as_json, transient=True) as progress:
        task = progress.add_task(cidr or site, total=None)
        for item in daemon.stream(f"/api/v1/sites/{site}/discover", params={"range": cidr} if cidr else None):
            if "progress" in item:
                progress.update(task, completed=item["progress"]["done"], total=item["progress"]["total"])
            elif "summary" in item:
                summary = item["summary"]
            else:
                fail(item.get("error", "the sweep failed"))
    if summary is None:
        fail("the daemon ended the sweep without a summary")
    if as_json:
        return print_json(summary)
    protocols = ", ".join(f"{n} {p}" for p, n in sorted(summary["by_protocol"].items())) or "none"
    show(details([("site", summary["site"]), ("addresses swept", summary["addresses"]),
                  ("BMCs found", f"{summary['found']} ({protocols})"), ("enrolled", summary["enrolled"]),
                  ("updated", summary["updated"]), ("refused (credentials, certificate)", summary["refused"]),
                  ("failed", summary["failed"])]))
    for problem in summary["problems"]:
        typer.echo(f"warning: {problem}", err=True)


@app.command()
def power(ctx: typer.Context, node: Annotated[str, typer.Argument(help="Name, serial, UUID or BMC address.")],
          action: Annotated[PowerCommand, typer.Argument(help="What to do.")], as_json: Json = False) -> None:
    """Power state and control: read, act only if different, confirm."""
    with daemon_client(ctx) as daemon:
        if action == PowerCommand.STATUS:
            result = daemon.request("GET", f"/api/v1/nodes/{node}/power")
        else:
            result = daemon.request("POST", f"/api/v1/nodes/{node}/power", json={"action": action.value})
    if as_json:
        return print_json(result)
    if action == PowerCommand.STATUS:
        typer.echo(f"{node}: {result['power_state']}")
    elif result["changed"]:
        typer.echo(f"{result['node']}: power {result['action']}: {result['before']} -> {result['after']} (confirmed)")
    else:
        typer.echo(f"{result['node']}: already {result['after']}, nothing to do")


@app.command()
def boot(ctx: typer.Context, node: Annotated[str, typer.Argument(help="Name, serial, UUID or BMC address.")],
         device: Annotated[BootTarget, typer.Argument(help="Where to boot from.")],
         once: Annotated[bool, typer.Option("--once", help="Only the next boot (required).")] = False,
         mode: Annotated[str | None, typer.Option(help="uefi or legacy (default: as the BMC has it).")] = None,
         ) -> None:
    """Set a one-time boot override (the next boot only)."""
    if not once:
        fail("only one-time overrides are supported: add --once")
    if mode not in (None, "uefi", "legacy"):
        fail(f"--mode: {mode!r} is not uefi or legacy")
    with daemon_client(ctx) as daemon:
        daemon.request("POST", f"/api/v1/nodes/{node}/boot", json={"device": device.value, "mode": mode})
    typer.echo(f"{node}: next boot once from {device.value}" + (f" ({mode})" if mode else ""))


@bmc_app.command("trust")
def trust(ctx: typer.Context, node: Annotated[str, typer.Argument(help="Name, serial, UUID or BMC address.")],
          fingerprint: Annotated[str | None, typer.Option(
              help="The SHA-256 to pin, checked out of band (default: what the BMC presents now).")] = None,
          ) -> None:
    """Pin the certificate of a node's BMC (after a replacement, or to trust it the first time)."""
    with daemon_client(ctx) as daemon:
        result = daemon.request("POST", f"/api/v1/nodes/{node}/bmc/trust", json={"fingerprint": fingerprint})
    previous = result["previous"] or "nothing"
    typer.echo(f"{result['node']}: pinned sha256 {result['fingerprint']} (was {previous})")

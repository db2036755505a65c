"""The ``baie`` provisioning commands: provision, release, and a node's lifecycle (history, state).

Provisioning and release run in the daemon (it holds the BMC credentials and the SSH key); the command
follows the daemon's NDJSON stream with a progress bar. Interrupting the command does not stop the work:
follow it with ``baie node history NODE``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from inventory import lifecycle
from inventory.cli import Json, fail, node_app, open_inventory, print_json, show, table
from inventory.client import daemon_client
from inventory.model import NodeState

app = typer.Typer()

NodeArgument = Annotated[str, typer.Argument(help="Name, serial, UUID, asset tag, BMC address or #id.")]


def follow(ctx: typer.Context, path: str, body: dict[str, Any], what: str, as_json: bool) -> None:
    """Show the daemon's stream: each transition above a progress bar, then the results; exit 1 if any failed."""
    summary: list[dict[str, Any]] = []
    with daemon_client(ctx) as daemon, Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(),
                                                TimeElapsedColumn(), disable=as_json) as progress:
        task = progress.add_task(what, total=None)
        for item in daemon.stream(path, json=body):
            if "nodes" in item:
                progress.update(task, total=len(item["nodes"]))
            elif "target" in item and not as_json:
                progress.console.print(f"{item['node']}: {item['source']} → {item['target']}: {item['reason']}",
                                       markup=False, highlight=False)
            elif "result" in item:
                progress.advance(task)
            elif "summary" in item:
                summary = item["summary"]
    if as_json:
        return print_json(summary)
    failed = [o for o in summary if o["error"]]
    for outcome in failed:
        typer.echo(f"error: {outcome['node']} ({outcome['state']}): {outcome['error']}", err=True)
    typer.echo(f"{len(summary) - len(failed)} of {len(summary)} done")
    if failed or not summary:
        raise typer.Exit(1)


@app.command()
def provision(ctx: typer.Context,
              node: Annotated[str | None, typer.Argument(help="The node (or use --rack and --count).")] = None,
              profile: Annotated[str, typer.Option(help="A profile of the daemon's provisioning.profiles.")] = ...,
              rack: Annotated[str | None, typer.Option(help="Take available nodes of this rack.")] = None,
              count: Annotated[int | None, typer.Option(min=1, help="How many nodes of the rack.")] = None,
              parallel: Annotated[int, typer.Option(min=1, max=256, help="How many at once.")] = 1,
              as_json: Json = False) -> None:
    """Install nodes as KVM hypervisors (PXE) and join them to the pool, checking rack power first."""
    if (node is None) == (rack is None) or (rack is not None and count is None):
        fail("give a NODE, or --rack RACK --count N")
    body = {"profile": profile, "parallel": parallel,
            **({"nodes": [node]} if node else {"rack": rack, "count": count})}
    follow(ctx, "/api/v1/provision", body, "provisioning", as_json)


@app.command()
def release(ctx: typer.Context, node: NodeArgument,
            retire: Annotated[bool, typer.Option(help="Retire the node once its disks are erased.")] = False,
            as_json: Json = False) -> None:
    """Take a node out of the pool: drain it, erase its disks (verified), make it available again."""
    follow(ctx, f"/api/v1/nodes/{node}/release", {"retire": retire}, "releasing", as_json)


@node_app.command("history")
def history(ctx: typer.Context, node: NodeArgument, as_json: Json = False) -> None:
    """A node's lifecycle transitions: when, from, to, who and why."""
    with open_inventory(ctx) as inventory:
        views = lifecycle.history(inventory, node)
    if as_json:
        return print_json(views)
    show(table(None, "Time", "From", "To", "Actor", "Reason",
               rows=[(t.time.strftime("%Y-%m-%d %H:%M:%SZ"), t.source, t.target, t.actor, t.reason) for t in views]))


@node_app.command("state")
def set_state(ctx: typer.Context, node: NodeArgument,
              state: Annotated[NodeState, typer.Argument(help="enrolled, inspecting, available (inspected), "
                                                              "maintenance or retired.")],
              reason: Annotated[str, typer.Option(help="Why; recorded with the transition.")]) -> None:
    """Move a node by hand where the lifecycle allows it (e.g. a failed node to maintenance)."""
    with daemon_client(ctx) as daemon:
        view = daemon.request("POST", f"/api/v1/nodes/{node}/state", json={"state": state.value, "reason": reason})
    typer.echo(f"{node}: {view['source']} → {view['target']}")

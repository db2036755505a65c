"""``baie outlet`` (through the daemon, which holds the PDU credentials) and the measured power, cooling and
raw readings (``baie power-usage``, ``baie cooling``, ``baie telemetry``), read from the telemetry store.

A figure nothing reported recently (``inventory.telemetry.MAX_AGE``) is shown as "not reported", never as 0.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer

from inventory.cli import (
    NOT_REPORTED,
    Json,
    SiteOption,
    fail,
    leak,
    open_inventory,
    parse_since,
    print_json,
    redundancy,
    reported,
    show,
    table,
    watts,
)
from inventory.client import daemon_client
from inventory.errors import NotFound
from inventory.service import Inventory
from inventory.telemetry import ReadingIn, loop_cooling, rack_power, readings

app = typer.Typer()


class OutletCommand(StrEnum):
    STATUS = "status"
    ON = "on"
    OFF = "off"
    CYCLE = "cycle"


# ---------------------------------------------------------------------------------------- outlets
@app.command()
def outlet(ctx: typer.Context, pdu: Annotated[str, typer.Argument(help="The PDU: NAME or SITE/NAME.")],
           index: Annotated[int, typer.Argument(metavar="OUTLET", help="The outlet number.")],
           action: Annotated[OutletCommand, typer.Argument(help="What to do.")], as_json: Json = False) -> None:
    """A PDU outlet's state and meters, or switch it: read, act only if different, confirm."""
    path = f"/api/v1/pdus/{pdu}/outlets/{index}"
    with daemon_client(ctx) as daemon:
        if action == OutletCommand.STATUS:
            result = daemon.request("GET", path)
        else:
            result = daemon.request("POST", path, json={"action": action.value})
    if as_json:
        return print_json(result)
    feeds = f" (feeds {result['node']}{' ' + result['psu'] if result['psu'] else ''})" if result["node"] else ""
    where = f"{result['pdu']} outlet {result['outlet']}"
    if action == OutletCommand.STATUS:
        meters = ", ".join(reported(result[key], unit, digits) for key, unit, digits in
                           (("current_amps", "A", 2), ("power_watts", "W", 0)))
        typer.echo(f"{where}: {result['state'] or NOT_REPORTED}, {meters}{feeds}")
    elif result["changed"]:
        typer.echo(f"{where}: {result['action']}: {result['before']} -> {result['after']} (confirmed){feeds}")
    else:
        typer.echo(f"{where}: already {result['after']}, nothing to do{feeds}")


# ------------------------------------------------------------------------------------ power, cooling
@app.command("power-usage")
def power_usage(ctx: typer.Context, site: SiteOption = None,
                rack: Annotated[str | None, typer.Option(help="Only this rack (NAME or SITE/NAME).")] = None,
                as_json: Json = False) -> None:
    """Measured draw per rack against its budget and feeds, and whether either feed alone carries it."""
    with open_inventory(ctx) as inventory:
        views = rack_power(inventory, rack, site)
    if as_json:
        return print_json(views)
    show(table(None, "Site", "Rack", "Draw", "Source", "Budget", "Headroom", "Feeds (draw / headroom)",
               "A/B redundant",
               rows=[(r.site, r.rack, reported(r.draw_watts, "W"), r.source,
                      watts(r.budget_watts), None if r.budget_watts is None else reported(r.headroom_watts, "W"),
                      "\n".join(f"{f.side} {f.feed}: {reported(f.draw_watts, 'W')} / "
                                f"{reported(f.headroom_watts, 'W')}" for f in r.feeds),
                      redundancy(r)) for r in views]))


@app.command()
def cooling(ctx: typer.Context, site: SiteOption = None, as_json: Json = False) -> None:
    """Each cooling loop: supply and return temperatures, flow, heat removed, pumps, leaks, warnings."""
    with open_inventory(ctx) as inventory:
        views = loop_cooling(inventory, site=site)
    if as_json:
        return print_json(views)
    show(table(None, "Site", "Loop", "CDU", "Supply", "Return", "ΔT", "Flow", "Heat removed", "Pumps", "Leak",
               "Warnings",
               rows=[(c.site, c.loop, c.cooling_unit, reported(c.supply_temperature_c, "°C", 1),
                      reported(c.return_temperature_c, "°C", 1), reported(c.delta_t_c, "K", 1),
                      reported(c.flow_lpm, "L/min", 1), reported(c.heat_removed_kw, "kW", 1),
                      ", ".join(f"{p.name} {'ok' if p.ok else 'FAILED'}" for p in c.pumps) or NOT_REPORTED,
                      leak(c), ", ".join(c.warnings)) for c in views]))


# ------------------------------------------------------------------------------------------ readings
def _labels_of(inventory: Inventory, ref: str) -> tuple[str, dict[str, str]]:
    """What ``ref`` names (a node, else a rack, else a cooling loop) and the labels its readings carry."""
    try:
        node = inventory.node(ref)
        return f"node {node.label}", {"node": node.name or node.serial or ref}
    except NotFound:
        pass
    try:
        rack = inventory.rack(ref)
        return f"rack {rack.site}/{rack.name}", {"site": rack.site, "rack": rack.name}
    except NotFound:
        pass
    site, _, name = ref.rpartition("/")
    loops = [loop for loop in inventory.cooling_loops(site or None) if loop.name == name]
    if len(loops) == 1:
        return f"cooling loop {loops[0].site}/{name}", {"site": loops[0].site, "loop": name}
    if loops:
        fail(f"cooling loop {ref!r} is ambiguous: {', '.join(f'{l.site}/{l.name}' for l in loops)} "
             "(qualify it as SITE/NAME)")
    fail(f"no node, rack or cooling loop matches {ref!r}")


@app.command()
def telemetry(ctx: typer.Context,
              ref: Annotated[str, typer.Argument(metavar="NODE|RACK|LOOP",
                                                 help="A node, a rack or a cooling loop (NAME or SITE/NAME).")],
              since: Annotated[str, typer.Option(help="A duration (30m, 1h, 2d) or an ISO time (UTC by default).")]
              = "1h",
              as_json: Json = False) -> None:
    """The readings stored for a node, a rack or a cooling loop: one row per series (JSON: every reading)."""
    try:
        start = parse_since(since, datetime.now(UTC))
    except ValueError as exc:
        fail(str(exc))
    with open_inventory(ctx) as inventory:
        what, labels = _labels_of(inventory, ref)
        found = readings(inventory, start, **labels)
    if as_json:
        return print_json([r._asdict() for r in found])
    by_series: dict[tuple[str, str], list[ReadingIn]] = defaultdict(list)
    for reading in found:
        shown_labels = ", ".join(f"{k}={v}" for k, v in sorted(reading.labels.items()) if k not in labels)
        by_series[reading.metric, shown_labels].append(reading)
    show(table(f"Readings of {what} since {start:%Y-%m-%d %H:%M:%SZ}", "Metric", "Labels", "Latest", "Min", "Max",
               "Readings", "Last seen",
               rows=[(metric, shown_labels, f"{series[-1].value:g}", f"{min(r.value for r in series):g}",
                      f"{max(r.value for r in series):g}", len(series), f"{series[-1].time:%Y-%m-%d %H:%M:%SZ}")
                     for (metric, shown_labels), series in sorted(by_series.items())]))

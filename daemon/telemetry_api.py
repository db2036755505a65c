"""Telemetry roll-ups for operators: gauges on /metrics computed at scrape time, and the JSON read API.

/metrics (labels ``site``, ``rack``, ``feed``, ``side``, ``loop``, ``cdu``, ``pump``; a figure nothing
reported is left out, never 0):
``baie_rack_power_draw_watts``, ``baie_rack_power_budget_watts``, ``baie_rack_power_headroom_watts``,
``baie_rack_power_redundant`` (1/0), ``baie_rack_power_reporting``; per feed ``baie_feed_power_draw_watts``,
``baie_feed_power_capacity_watts``, ``baie_feed_power_headroom_watts``; per loop
``baie_loop_supply_temperature_celsius``, ``baie_loop_return_temperature_celsius``, ``baie_loop_delta_t_celsius``,
``baie_loop_flow_litres_per_minute``, ``baie_loop_heat_removed_kw``, ``baie_loop_leak`` (1/0),
``baie_loop_pump_ok`` (per pump), ``baie_loop_warnings``; per site ``baie_site_power_draw_watts``,
``baie_site_power_budget_watts``, ``baie_site_heat_removed_kw``, ``baie_site_racks``,
``baie_site_racks_reporting``, ``baie_site_racks_over_budget``, ``baie_site_racks_not_redundant``,
``baie_site_loops``, ``baie_site_loops_in_leak``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from daemon.executor import blocking
from inventory.errors import Invalid
from inventory.service import Inventory
from inventory.telemetry import loop_cooling, rack_power, readings, site_totals
from inventory.views import LoopCoolingView, RackPowerView, SiteTotalsView

MAX_READINGS = 10_000


# ------------------------------------------------------------------------------------------ /metrics
def _families(specs: Iterable[tuple[str, str]], labels: list[str]) -> dict[str, GaugeMetricFamily]:
    return {name: GaugeMetricFamily(f"baie_{name}", help_text, labels=labels) for name, help_text in specs}


def _add(family: GaugeMetricFamily, labels: list[str], value: float | bool | None) -> None:
    if value is not None:
        family.add_metric(labels, float(value))


class RollupCollector:
    """Rack power, feed, loop cooling and site totals from ``inventory.telemetry``, at scrape time
    (``generate_latest`` runs on the thread pool)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def describe(self) -> list:
        return []  # else registering it would run collect(), and so the queries, at once

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            racks = rack_power(self.inventory)
            loops = loop_cooling(self.inventory)
            sites = [site_totals(self.inventory, site) for site in sorted({r.site for r in racks}
                                                                            | {loop.site for loop in loops})]
        except SQLAlchemyError:
            return  # the database watch logs the outage; the scrape still serves the rest
        rack = _families((("rack_power_draw_watts", "Measured draw of a rack"),
                          ("rack_power_budget_watts", "Power budget of a rack"),
                          ("rack_power_headroom_watts", "Budget minus draw"),
                          ("rack_power_redundant", "1 when either feed side alone carries the rack's draw"),
                          ("rack_power_reporting", "Outlets, PSUs or nodes whose readings make up the draw")),
                         ["site", "rack"])
        for r in racks:
            for name, value in (("rack_power_draw_watts", r.draw_watts), ("rack_power_budget_watts", r.budget_watts),
                                ("rack_power_headroom_watts", r.headroom_watts),
                                ("rack_power_redundant", r.redundant), ("rack_power_reporting", r.reporting)):
                _add(rack[name], [r.site, r.rack], value)
        feed = _families((("feed_power_draw_watts", "Measured draw on a power feed of a rack"),
                          ("feed_power_capacity_watts", "Usable capacity of a power feed"),
                          ("feed_power_headroom_watts", "Capacity minus draw")), ["site", "rack", "feed", "side"])
        for r in racks:
            for f in r.feeds:
                for name, value in (("feed_power_draw_watts", f.draw_watts),
                                    ("feed_power_capacity_watts", f.capacity_watts),
                                    ("feed_power_headroom_watts", f.headroom_watts)):
                    _add(feed[name], [r.site, r.rack, f.feed, f.side], value)
        loop = _families((("loop_supply_temperature_celsius", "Coolant supply temperature of a loop"),
                          ("loop_return_temperature_celsius", "Coolant return temperature of a loop"),
                          ("loop_delta_t_celsius", "Return minus supply temperature"),
                          ("loop_flow_litres_per_minute", "Coolant flow of a loop"),
                          ("loop_heat_removed_kw", "Heat removed, from flow and delta-T"),
                          ("loop_leak", "1 when a leak detector of the loop reports a leak"),
                          ("loop_warnings", "Warnings raised on a loop")), ["site", "loop", "cdu"])
        pumps = GaugeMetricFamily("baie_loop_pump_ok", "1 when a pump of the loop is healthy",
                                  labels=["site", "loop", "cdu", "pump"])
        for c in loops:
            keys = [c.site, c.loop, c.cooling_unit]
            for name, value in (("loop_supply_temperature_celsius", c.supply_temperature_c),
                                ("loop_return_temperature_celsius", c.return_temperature_c),
                                ("loop_delta_t_celsius", c.delta_t_c), ("loop_flow_litres_per_minute", c.flow_lpm),
                                ("loop_heat_removed_kw", c.heat_removed_kw), ("loop_leak", c.leak),
                                ("loop_warnings", len(c.warnings))):
                _add(loop[name], keys, value)
            for pump in c.pumps:
                pumps.add_metric([*keys, pump.name], float(pump.ok))
        site = _families((("site_power_draw_watts", "Measured draw of the racks reporting"),
                          ("site_power_budget_watts", "Power budget of the racks with one"),
                          ("site_heat_removed_kw", "Heat removed by the loops reporting"),
                          ("site_racks", "Racks"), ("site_racks_reporting", "Racks reporting their draw"),
                          ("site_racks_over_budget", "Racks drawing more than their budget"),
                          ("site_racks_not_redundant", "Racks whose draw one feed side cannot carry"),
                          ("site_loops", "Cooling loops"), ("site_loops_in_leak", "Cooling loops reporting a leak")),
                         ["site"])
        for t in sites:
            for name, value in (("site_power_draw_watts", t.draw_watts), ("site_power_budget_watts", t.budget_watts),
                                ("site_heat_removed_kw", t.heat_removed_kw), ("site_racks", t.racks),
                                ("site_racks_reporting", t.racks_reporting),
                                ("site_racks_over_budget", len(t.racks_over_budget)),
                                ("site_racks_not_redundant", len(t.racks_not_redundant)),
                                ("site_loops", t.loops), ("site_loops_in_leak", len(t.loops_in_leak))):
                _add(site[name], [t.site], value)
        yield from (*rack.values(), *feed.values(), *loop.values(), pumps, *site.values())


# ---------------------------------------------------------------------------------------------- API
class PowerUsage(BaseModel):
    racks: list[RackPowerView]
    sites: list[SiteTotalsView]


class TelemetryReading(BaseModel):
    time: datetime
    metric: str
    labels: dict[str, str]
    value: float


def _inventory(request: Request) -> Inventory:
    return request.app.state.inventory


Inv = Annotated[Inventory, Depends(_inventory)]
router = APIRouter(prefix="/api/v1")


def _power_usage(inv: Inventory, site: str | None, rack: str | None) -> PowerUsage:
    racks = rack_power(inv, rack, site)
    return PowerUsage(racks=racks, sites=[site_totals(inv, name) for name in sorted({r.site for r in racks})])


@router.get("/power-usage", summary="Measured draw per rack against budget and feeds, and site totals")
async def power_usage(inv: Inv, site: str | None = None, rack: str | None = None) -> PowerUsage:
    return await blocking(_power_usage, inv, site, rack)


@router.get("/cooling", summary="Per cooling loop: temperatures, flow, heat removed, pumps, leaks, warnings")
async def cooling(inv: Inv, site: str | None = None, loop: str | None = None) -> list[LoopCoolingView]:
    return await blocking(loop_cooling, inv, loop, site)


def _readings(inv: Inventory, since: datetime, filters: dict[str, Any]) -> list[TelemetryReading]:
    if "node" in filters:  # any reference to the node; its readings carry its name, else its serial
        node = inv.node(filters["node"])
        filters["node"] = node.name or node.serial or node.uuid or node.bmc_address
    return [TelemetryReading(time=r.time, metric=r.metric, labels=r.labels, value=r.value)
            for r in readings(inv, since, limit=MAX_READINGS, **filters)]


@router.get("/telemetry", summary="Raw readings of one node, rack or cooling loop (at most the newest 10,000)")
async def telemetry(inv: Inv, node: str | None = None, rack: str | None = None, loop: str | None = None,
                    site: str | None = None,
                    since: Annotated[str, Query(description="ISO time or a duration back from now: 15m, 1h, 7d")]
                    = "1h") -> list[TelemetryReading]:
    from daemon.app import parse_since  # daemon.app includes this router: importing it at the top is a cycle

    subjects = {key: value for key, value in (("node", node), ("rack", rack), ("loop", loop)) if value}
    if len(subjects) != 1:
        raise Invalid("telemetry", "give exactly one of node, rack or loop")
    filters = subjects | ({"site": site} if site else {})
    return await blocking(_readings, inv, parse_since(since), filters)

"""Export the inventory: YAML or JSON in the shape ``baie import`` reads, or CSV with one row per node.

YAML and JSON list every site with its locations, discovery ranges, cooling, power, switches, racks, PDUs and the
nodes that have a site and a serial (the serial is the node's key on import); a discovered node is listed
with whatever placement it has. Values that are not set are left out, so that importing the export into an
empty database and exporting again gives the same document. CSV lists every node.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from typing import Any, Literal

import yaml
from sqlmodel import Session, select

from inventory.model import (
    CoolingLoop,
    CoolingUnit,
    DiscoveryRange,
    Location,
    Node,
    Pdu,
    PduOutlet,
    PowerFeed,
    PowerPanel,
    Rack,
    Site,
    Switch,
)
from inventory.service import Inventory

CSV_COLUMNS = ("site", "location", "rack", "position", "u_height", "face", "name", "serial", "uuid", "asset_tag",
               "manufacturer", "model", "state", "bmc_address", "bmc_protocol")
# OWASP CSV injection: a spreadsheet reads a cell starting with one of these as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def export(inventory: Inventory, fmt: Literal["yaml", "json", "csv"]) -> str:
    with inventory.session() as session:
        if fmt == "csv":
            return _csv(session)
        doc = document(session)
    if fmt == "yaml":
        return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=200)
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown export format {fmt!r}: yaml, json or csv")


def document(session: Session) -> dict[str, Any]:
    """The whole inventory as the import document (plain data)."""
    def by_site(model: type) -> dict[int, list[Any]]:
        grouped: dict[int, list[Any]] = defaultdict(list)
        for row in session.exec(select(model).order_by(model.name)):
            grouped[row.site_id].append(row)
        return grouped

    locations = {row.id: row.name for row in session.exec(select(Location))}
    racks = {row.id: row.name for row in session.exec(select(Rack))}
    loops = {row.id: row.name for row in session.exec(select(CoolingLoop))}
    panels = {row.id: row.name for row in session.exec(select(PowerPanel))}
    feeds = {row.id: f"{panels[row.power_panel_id]}/{row.name}" for row in session.exec(select(PowerFeed))}
    serials = {row.id: row.serial for row in session.exec(select(Node))}

    loops_of: dict[int, list[CoolingLoop]] = defaultdict(list)
    for loop in session.exec(select(CoolingLoop).order_by(CoolingLoop.name)):
        loops_of[loop.cooling_unit_id].append(loop)
    feeds_of: dict[int, list[PowerFeed]] = defaultdict(list)
    for feed in session.exec(select(PowerFeed).order_by(PowerFeed.name)):
        feeds_of[feed.power_panel_id].append(feed)
    outlets_of: dict[int, list[PduOutlet]] = defaultdict(list)
    for outlet in session.exec(select(PduOutlet).order_by(PduOutlet.index)):
        outlets_of[outlet.pdu_id].append(outlet)
    ranges: dict[int, list[DiscoveryRange]] = defaultdict(list)
    for rng in session.exec(select(DiscoveryRange).order_by(DiscoveryRange.cidr)):
        ranges[rng.site_id].append(rng)
    nodes: dict[int, list[Node]] = defaultdict(list)
    for node in session.exec(select(Node).where(Node.serial.is_not(None), Node.site_id.is_not(None))):
        nodes[node.site_id].append(node)
    site_locations, units, site_panels, site_racks, pdus = (
        by_site(Location), by_site(CoolingUnit), by_site(PowerPanel), by_site(Rack), by_site(Pdu))
    switches = by_site(Switch)

    def pdu_row(pdu: Pdu) -> dict[str, Any]:
        outlets = [_row(index=o.index, name=o.name,
                        feed=feeds.get(o.power_feed_id) if o.power_feed_id != pdu.power_feed_id else None,
                        node=serials.get(o.node_id), psu=o.psu) for o in outlets_of[pdu.id]]
        return _row(name=pdu.name, rack=racks.get(pdu.rack_id), feed=feeds.get(pdu.power_feed_id),
                    address=pdu.address, protocol=pdu.protocol, port=pdu.port, credential=pdu.credential_ref,
                    insecure_community_waiver=pdu.insecure_community_waiver, outlets=outlets)

    sites = []
    for site in session.exec(select(Site).order_by(Site.name)):
        placed = sorted(nodes[site.id], key=lambda n: (racks.get(n.rack_id) or "", n.position or 0, n.serial))
        sites.append(_row(
            name=site.name, country_code=site.country_code, jurisdiction=site.jurisdiction, role=site.role,
            description=site.description,
            locations=[{"name": loc.name} for loc in site_locations[site.id]],
            discovery=[{"cidr": r.cidr, "protocols": r.protocols.split(",")} for r in ranges[site.id]],
            cooling_units=[
                _row(name=u.name, location=locations.get(u.location_id), address=u.address, protocol=u.protocol,
                     port=u.port, credential=u.credential_ref,
                     loops=[_row(name=loop.name, supply_temperature_max_c=loop.supply_temperature_max_c,
                                 flow_min_lpm=loop.flow_min_lpm) for loop in loops_of[u.id]])
                for u in units[site.id]
            ],
            power_panels=[
                _row(name=p.name, location=locations.get(p.location_id),
                     feeds=[_row(name=f.name, side=f.side, rack=racks.get(f.rack_id), voltage=f.voltage,
                                 amperage=f.amperage, phase=f.phase, max_utilization=f.max_utilization)
                            for f in feeds_of[p.id]])
                for p in site_panels[site.id]
            ],
            switches=[_row(name=sw.name, address=sw.address, protocol=sw.protocol, port=sw.port,
                           credential=sw.credential_ref, insecure_community_waiver=sw.insecure_community_waiver)
                      for sw in switches[site.id]],
            racks=[_row(name=r.name, location=locations[r.location_id], u_height=r.u_height,
                        power_budget_watts=r.power_budget_watts, cooling_loop=loops.get(r.cooling_loop_id),
                        switch=r.switch_name) for r in site_racks[site.id]],
            pdus=[pdu_row(pdu) for pdu in pdus[site.id]],
            nodes=[_row(serial=n.serial, name=n.name, rack=racks.get(n.rack_id), position=n.position,
                        u_height=n.u_height, face=n.face, asset_tag=n.asset_tag, manufacturer=n.manufacturer,
                        model=n.model, expected_power_watts=n.expected_power_watts) for n in placed],
        ))
    return {"sites": sites}


class _Dumper(yaml.SafeDumper):
    """Rows of plain values on one line each, as in a hand-written file; never an alias (the importer refuses them)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def represent_dict(self, data: dict[str, Any]) -> yaml.Node:
        flat = not any(isinstance(v, dict) or isinstance(v, list) and any(isinstance(i, dict) for i in v)
                       for v in data.values())
        return self.represent_mapping("tag:yaml.org,2002:map", data, flow_style=flat)


_Dumper.add_representer(dict, _Dumper.represent_dict)


def _row(**values: Any) -> dict[str, Any]:
    """The values that are set (no None, no empty list), integral floats written as integers."""
    return {key: int(value) if isinstance(value, float) and value.is_integer() else value
            for key, value in values.items() if value is not None and value != []}


def _csv(session: Session) -> str:
    sites = {row.id: row.name for row in session.exec(select(Site))}
    locations = {row.id: row.name for row in session.exec(select(Location))}
    racks = {row.id: row for row in session.exec(select(Rack))}
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL)
    writer.writerow(CSV_COLUMNS)
    rows = []
    for node in session.exec(select(Node)):
        rack = racks.get(node.rack_id)
        rows.append((sites.get(node.site_id), rack and locations[rack.location_id], rack and rack.name,
                     node.position, node.u_height, node.face, node.name, node.serial, node.uuid, node.asset_tag,
                     node.manufacturer, node.model, node.state, node.bmc_address, node.bmc_protocol))
    rows.sort(key=lambda r: (r[0] or "", r[2] or "", r[3] or 0, r[7] or "", r[6] or ""))
    writer.writerows([_cell(value) for value in row] for row in rows)
    return out.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return "" if value is None else value

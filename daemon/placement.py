"""Placement check: is each node cabled to the switch its rack declares?

Every switch of the inventory with an address is read over SNMP (LLDP neighbours and the forwarding table),
with the SNMP credentials the telemetry loop reads (``daemon.telemetry.snmp_target``). A node's NIC MACs
are looked up in the forwarding tables on *edge* ports only: a port where LLDP hears a neighbour that is
not one of our nodes is an uplink to another switch, and every MAC behind it is learnt there second-hand.
A node seen on edge ports of none of the switches its rack declares (``Rack.switch_name``) gets a
``placement.mismatch`` event (node, declared rack and switch, observed switch and port); the event is
recorded once per change, not at every run, and ``placement.confirmed`` follows when the node is seen on
its declared switch again. A node seen nowhere (or only behind uplinks) is not judged.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlmodel import Session, col, func, select

from daemon.config import PlacementSettings
from daemon.credentials import CredentialError, CredentialStore
from daemon.executor import blocking
from daemon.telemetry import DeviceSpec, snmp_target
from drivers.base import DriverError
from drivers.snmp import SnmpClient, build_mib_view, read_fdb, read_lldp_neighbors
from inventory.model import Event, NetworkInterface, Node, Rack, Site, Switch
from inventory.service import Inventory, _node_label

log = structlog.get_logger("baie.placement")

MISMATCH = "placement.mismatch"
CONFIRMED = "placement.confirmed"
SWITCHES_IN_FLIGHT = 32  # switches read at once


@dataclass(frozen=True, order=True)
class Sighting:
    """A MAC learnt on an edge port of a switch."""

    site: str
    switch: str
    port: str
    mac: str


@dataclass(frozen=True)
class KnownNodes:
    """What tells one of our nodes from another switch in an LLDP neighbour."""

    macs: frozenset[str]
    names: frozenset[str]


@dataclass
class PlacementSummary:
    switches: int = 0
    unreachable: list[str] = field(default_factory=list)
    nodes_seen: int = 0
    mismatched: list[str] = field(default_factory=list)  # nodes seen away from their rack's switch
    events: int = 0  # events recorded by this run


def _inventory_switches(inventory: Inventory) -> tuple[list[tuple[Switch, str]], KnownNodes]:
    with inventory.session() as s:
        switches = list(s.exec(select(Switch, Site.name).join(Site, col(Switch.site_id) == Site.id)
                               .where(col(Switch.address).is_not(None)).order_by(Site.name, Switch.name)).all())
        macs = s.exec(select(NetworkInterface.mac).where(col(NetworkInterface.mac).is_not(None))).all()
        names = s.exec(select(Node.name).where(col(Node.name).is_not(None))).all()
    return switches, KnownNodes(frozenset(m.lower() for m in macs), frozenset(names))


class Placement:
    def __init__(self, inventory: Inventory, store: CredentialStore, settings: PlacementSettings) -> None:
        self.inventory = inventory
        self.store = store
        self.settings = settings
        self._failing: set[str] = set()  # switches whose last read failed: logged once, and once on recovery
        self._slots = asyncio.Semaphore(SWITCHES_IN_FLIGHT)

    async def check(self) -> PlacementSummary:
        switches, known = await blocking(_inventory_switches, self.inventory)
        results = await asyncio.gather(*(self._read(switch, site, known) for switch, site in switches))
        sightings = [s for found in results if found is not None for s in found]
        summary = await blocking(record_placement, self.inventory, sightings)
        summary.switches = len(switches)
        summary.unreachable = [f"{site}/{switch.name}" for (switch, site), found in zip(switches, results)
                               if found is None]
        log.info("placement checked", switches=summary.switches, unreachable=len(summary.unreachable),
                 nodes_seen=summary.nodes_seen, mismatched=len(summary.mismatched), events=summary.events)
        return summary

    async def _read(self, switch: Switch, site: str, known: KnownNodes) -> list[Sighting] | None:
        label = f"{site}/{switch.name}"
        spec = DeviceSpec(key=f"switch#{switch.id}", name=f"switch/{label}", device_class="switch",
                          protocol=switch.protocol, address=switch.address, port=switch.port, site=site, labels=(),
                          credential_ref=switch.credential_ref, waiver=switch.insecure_community_waiver)
        try:
            await blocking(build_mib_view)  # once per process, ~5 s of CPU: not on the loop
            async with self._slots, SnmpClient(snmp_target(spec, self.store, self.settings.timeout_seconds)) as client:
                neighbors, fdb = await asyncio.gather(read_lldp_neighbors(client), read_fdb(client))
        except (DriverError, CredentialError) as exc:
            if label not in self._failing:
                log.warning("switch unreadable", switch=label, error=str(exc))
                self._failing.add(label)
            return None
        if label in self._failing:
            log.info("switch readable again", switch=label)
            self._failing.discard(label)
        uplinks = {n.local_port for n in neighbors
                   if n.chassis_id.lower() not in known.macs and n.system_name not in known.names}
        return [Sighting(site, switch.name, entry.port, entry.mac) for entry in fdb
                if entry.port is not None and entry.port not in uplinks]


def _last_events(s: Session) -> dict[str, Event]:
    """The newest placement event of every subject."""
    newest = select(func.max(Event.id)).where(col(Event.kind).in_((MISMATCH, CONFIRMED))).group_by(Event.subject)
    return {e.subject: e for e in s.exec(select(Event).where(col(Event.id).in_(newest)))}


def record_placement(inventory: Inventory, sightings: list[Sighting]) -> PlacementSummary:
    """Compare where nodes are seen with where their racks say; record what changed since the last run."""
    seen_by_mac: dict[str, set[Sighting]] = defaultdict(set)
    for sighting in sightings:
        seen_by_mac[sighting.mac].add(sighting)
    summary = PlacementSummary()
    with inventory.session() as s:
        rows = s.exec(select(Node, NetworkInterface.mac, Rack.name, Rack.switch_name, Site.name)
                      .join(NetworkInterface, col(NetworkInterface.node_id) == Node.id)
                      .join(Rack, col(Node.rack_id) == Rack.id).join(Site, col(Rack.site_id) == Site.id)
                      .where(col(Rack.switch_name).is_not(None), col(NetworkInterface.mac).is_not(None))).all()
        nodes: dict[int, tuple[Node, str, str, str, set[Sighting]]] = {}
        for node, mac, rack, switch, site in rows:
            nodes.setdefault(node.id, (node, rack, switch, site, set()))[4].update(seen_by_mac[mac.lower()])
        last = _last_events(s)
        for node, rack, declared, site, seen in nodes.values():
            if not seen:
                continue
            summary.nodes_seen += 1
            label = _node_label(node)
            subject, previous = f"node/{label}", last.get(f"node/{label}")
            observed = sorted(seen)
            where = {"node": label, "site": site, "rack": rack, "declared_switch": declared}
            on_declared = [o for o in observed if (o.site, o.switch) == (site, declared)]
            if on_declared:
                if previous is not None and previous.kind == MISMATCH:
                    here = on_declared[0]
                    Inventory.add_event(s, CONFIRMED, subject, f"{label} is on {declared} port {here.port} again, "
                                        f"as rack {site}/{rack} declares", "daemon",
                                        where | {"observed_switch": here.switch, "observed_port": here.port})
                    summary.events += 1
                continue
            summary.mismatched.append(label)
            first = observed[0]
            details: dict[str, Any] = where | {
                "observed_switch": first.switch, "observed_port": first.port, "mac": first.mac,
                "observed": [{"switch": o.switch, "port": o.port, "mac": o.mac} for o in observed]}
            if previous is not None and previous.kind == MISMATCH and previous.details == details:
                continue
            Inventory.add_event(s, MISMATCH, subject, f"{label} is seen on {first.switch} port {first.port}, "
                                f"but rack {site}/{rack} declares switch {declared}", "daemon", details)
            log.warning(MISMATCH, node=label, rack=f"{site}/{rack}", declared_switch=declared,
                        observed_switch=first.switch, observed_port=first.port)
            summary.events += 1
    return summary

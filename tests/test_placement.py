"""The placement check against real snmpsim switches: LLDP and the forwarding table versus the racks' switches.

tor-a serves tests/data/snmp/switch.snmprec (nodes on Ethernet1-3, spine-1 heard on Ethernet4); tor-b serves
tests/data/placement/tor-b.snmprec, where Ethernet48 is the uplink to tor-a: the MACs it learns there are
tor-a's nodes seen second-hand, and must not count.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import PlacementSettings
from daemon.placement import CONFIRMED, MISMATCH, Placement
from inventory.model import Location, NetworkInterface, Node, Rack, Site, Switch
from tests.lab.snmp import SnmpSim
from tests.lab.common import write_credential
from tests.lab.snmp import agent_dir
from tests.test_outlets import DATA, USER, V3_CREDENTIAL

TOR_B = Path(__file__).parent / "data" / "placement" / "tor-b.snmprec"


@pytest.fixture(scope="module")
def switches(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("switches")
    with SnmpSim(agent_dir(tmp / "a", DATA / "switch.snmprec"), v3_users=[USER]) as tor_a, \
            SnmpSim(agent_dir(tmp / "b", TOR_B), v3_users=[USER]) as tor_b:
        yield tor_a, tor_b


@pytest.fixture
def placement(inventory, switches, tmp_path) -> Placement:
    """Racks RA (tor-a), RB (tor-b) and RC (no switch declared); tor-c offers v2c only, without a waiver."""
    tor_a, tor_b = switches
    with inventory.session() as s:
        site = Site(name="lab", country_code="FR", jurisdiction="France", role="primary")
        s.add(site)
        s.flush()
        room = Location(site_id=site.id, name="room")
        s.add_all([room, Switch(site_id=site.id, name="tor-a", address=tor_a.host, port=tor_a.port),
                   Switch(site_id=site.id, name="tor-b", address=tor_b.host, port=tor_b.port),
                   Switch(site_id=site.id, name="tor-c", address=tor_a.host, port=tor_a.port,
                          credential_ref="tor-c-v2c")])
        s.flush()
        racks = {name: Rack(site_id=site.id, location_id=room.id, name=name, switch_name=switch)
                 for name, switch in (("RA", "tor-a"), ("RB", "tor-b"), ("RC", None))}
        s.add_all(racks.values())
        s.flush()
        for name, rack, macs in (("r12-node01", "RA", ["52:54:00:a1:b2:01", "52:54:00:a1:b2:11"]),
                                 ("web-02", "RB", ["52:54:00:A1:B2:02"]),  # cabled to tor-a: the mismatch
                                 ("web-33", "RB", ["52:54:00:a1:b2:21"]),
                                 ("web-99", "RA", ["52:54:00:ff:ff:ff"]),  # seen nowhere: not judged
                                 ("web-03", "RC", ["52:54:00:a1:b2:03"])):  # no switch declared: not judged
            node = Node(name=name, serial=f"SN-{name}", site_id=site.id, rack_id=racks[rack].id)
            s.add(node)
            s.flush()
            s.add_all(NetworkInterface(node_id=node.id, name=f"eno{i}", mac=mac) for i, mac in enumerate(macs, 1))
    write_credential(tmp_path / "credentials", "tor-c-v2c", 'community = "agent"\n')
    store = write_credential(tmp_path / "credentials", "snmp-default", V3_CREDENTIAL)
    return Placement(inventory, store, PlacementSettings(timeout_seconds=3.0))


def placement_events(inventory) -> list:
    return [e for e in reversed(inventory.events()) if e.kind in (MISMATCH, CONFIRMED)]


async def test_a_node_away_from_its_racks_switch_is_reported_once_then_confirmed(placement, inventory):
    summary = await placement.check()
    assert (summary.switches, summary.unreachable, summary.nodes_seen, summary.mismatched) == (
        3, ["lab/tor-c"], 3, ["web-02"])
    [mismatch] = placement_events(inventory)
    assert (mismatch.kind, mismatch.subject, mismatch.actor) == (MISMATCH, "node/web-02", "daemon")
    assert mismatch.details == {
        "node": "web-02", "site": "lab", "rack": "RB", "declared_switch": "tor-b", "observed_switch": "tor-a",
        "observed_port": "Ethernet2", "mac": "52:54:00:a1:b2:02",
        "observed": [{"switch": "tor-a", "port": "Ethernet2", "mac": "52:54:00:a1:b2:02"}]}
    assert mismatch.message == "web-02 is seen on tor-a port Ethernet2, but rack lab/RB declares switch tor-b"

    again = await placement.check()
    assert again.mismatched == ["web-02"] and again.events == 0
    assert len(placement_events(inventory)) == 1  # once per change, not every run

    with inventory.session() as s:  # the rack is fixed in the inventory: web-02 is declared in RA
        node = inventory.node_by_ref(s, "web-02")
        node.rack_id = inventory.rack_by_ref(s, "lab/RA").id
    fixed = await placement.check()
    assert (fixed.mismatched, fixed.events) == ([], 1)
    confirmed = placement_events(inventory)[-1]
    assert (confirmed.kind, confirmed.subject) == (CONFIRMED, "node/web-02")
    assert (confirmed.details["declared_switch"], confirmed.details["observed_port"]) == ("tor-a", "Ethernet2")
    assert (await placement.check()).events == 0
    assert len(placement_events(inventory)) == 2

"""The service layer on both backends: placement rules, lookups, uniqueness where reality has it."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from inventory.errors import Ambiguous, Conflict, Invalid, NotFound
from inventory.model import Location, NetworkInterface, Node, Rack, Site


def _rack(inventory, site_name="par1", rack_name="R01", u_height=42) -> None:
    with inventory.session() as s:
        site = s.exec(Site.__table__.select().where(Site.name == site_name)).first()
        if site is None:
            site = Site(name=site_name, country_code="FR", jurisdiction="France", role="primary")
            s.add(site)
            s.flush()
            site_id = site.id
        else:
            site_id = site.id
        loc = Location(site_id=site_id, name=f"hall-{rack_name}")
        s.add(loc)
        s.flush()
        s.add(Rack(site_id=site_id, location_id=loc.id, name=rack_name, u_height=u_height))


def test_placement_fills_elevation_and_refuses_overlap(inventory):
    _rack(inventory)
    with inventory.session() as s:
        node = Node(serial="SN-A", name="a")
        inventory.place_node(s, node, inventory.rack_by_ref(s, "R01"), 10, u_height=2)
    with pytest.raises(Conflict, match="U11 is already occupied by a"):
        with inventory.session() as s:
            inventory.place_node(s, Node(serial="SN-B"), inventory.rack_by_ref(s, "R01"), 11)
    rack = inventory.rack("R01")
    used = {u.u: u.node for u in rack.elevation if u.node}
    assert used == {10: "a", 11: "a"}
    assert rack.u_used == 2
    assert [n.serial for n in inventory.nodes()] == ["SN-A"]  # the refused node was rolled back


def test_moving_a_node_frees_its_old_units(inventory):
    _rack(inventory)
    with inventory.session() as s:
        rack = inventory.rack_by_ref(s, "R01")
        node = Node(serial="SN-A")
        inventory.place_node(s, node, rack, 1, u_height=4)
        inventory.place_node(s, node, rack, 3)  # overlaps only itself
    assert sorted(u.u for u in inventory.rack("R01").elevation if u.node) == [3, 4, 5, 6]


@pytest.mark.parametrize("position,height", [(0, 1), (42, 2), (-3, 1)])
def test_position_outside_the_rack_is_invalid(inventory, position, height):
    _rack(inventory)
    with pytest.raises(Invalid, match="position"):
        with inventory.session() as s:
            inventory.place_node(s, Node(serial="X"), inventory.rack_by_ref(s, "R01"), position, height)


def test_rack_names_resolve_per_site(inventory):
    _rack(inventory, "par1", "R01")
    _rack(inventory, "par2", "R01")
    with pytest.raises(Ambiguous, match="par1/R01, par2/R01"):
        inventory.rack("R01")
    assert inventory.rack("par2/R01").site == "par2"
    with pytest.raises(NotFound, match="rack"):
        inventory.rack("par3/R01")


@pytest.mark.parametrize("column", ["serial", "uuid", "asset_tag"])
def test_node_identity_columns_are_unique(inventory, column):
    with inventory.session() as s:
        s.add(Node(**{column: "dup"}))
    with pytest.raises(IntegrityError):
        with inventory.session() as s:
            s.add(Node(**{column: "dup"}))


def test_mac_is_unique_across_nodes(inventory):
    with inventory.session() as s:
        a, b = Node(serial="A"), Node(serial="B")
        s.add_all([a, b])
        s.flush()
        s.add(NetworkInterface(node_id=a.id, name="eth0", mac="52:54:00:00:00:01"))
    with pytest.raises(IntegrityError):
        with inventory.session() as s:
            b = inventory.node_by_ref(s, "B")
            s.add(NetworkInterface(node_id=b.id, name="eth0", mac="52:54:00:00:00:01"))


def test_events_are_listed_newest_first(inventory):
    inventory.record_event("node.created", "node/A", "first", "test")
    inventory.record_event("node.updated", "node/A", "second", "test")
    events = inventory.events()
    assert [e.message for e in events] == ["second", "first"]
    assert events[0].time.tzinfo is not None
    assert inventory.events(since=events[0].time)[0].message == "second"

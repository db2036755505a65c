"""The service layer: every query and command on the inventory. The CLI, the API and the daemon all come here.

Methods are blocking (the ORM); the daemon calls them through its one thread hop.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from inventory.errors import Ambiguous, Conflict, Invalid, NotFound
from inventory.model import (
    CoolingLoop,
    CoolingUnit,
    Drive,
    Event,
    Face,
    Location,
    MemoryModule,
    NetworkInterface,
    Node,
    NodeState,
    Pdu,
    PduOutlet,
    PowerFeed,
    PowerPanel,
    Processor,
    Rack,
    RackSlot,
    Site,
    utcnow,
)
from inventory.views import (
    ComponentsView,
    CoolingLoopView,
    EventView,
    FeedView,
    NodeDetail,
    NodeView,
    OutletView,
    PduView,
    RackDetail,
    RackView,
    SiteView,
    UnitView,
)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Inventory:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    # ------------------------------------------------------------------------------------ lookups
    @staticmethod
    def site_by_name(session: Session, name: str) -> Site:
        site = session.exec(select(Site).where(Site.name == name)).first()
        if site is None:
            raise NotFound("site", name)
        return site

    @staticmethod
    def rack_by_ref(session: Session, ref: str, site: str | None = None) -> Rack:
        """A rack by ``NAME`` (unique across sites) or ``SITE/NAME``."""
        if "/" in ref:
            site, ref = ref.split("/", 1)
        query = select(Rack, Site.name).join(Site, col(Rack.site_id) == Site.id).where(Rack.name == ref)
        if site:
            query = query.where(Site.name == site)
        rows = session.exec(query).all()
        if not rows:
            raise NotFound("rack", f"{site}/{ref}" if site else ref)
        if len(rows) > 1:
            raise Ambiguous("rack", ref, sorted(f"{s}/{r.name}" for r, s in rows))
        return rows[0][0]

    @staticmethod
    def node_by_ref(session: Session, ref: str) -> Node:
        """A node by name, serial, UUID, asset tag, BMC address or ``#id``."""
        if ref.startswith("#") and ref[1:].isdigit():
            node = session.get(Node, int(ref[1:]))
            if node is None:
                raise NotFound("node", ref)
            return node
        for column in (Node.name, Node.serial, Node.uuid, Node.asset_tag):
            node = session.exec(select(Node).where(column == ref)).first()
            if node is not None:
                return node
        by_bmc = session.exec(select(Node).where(Node.bmc_address == ref)).all()
        if len(by_bmc) == 1:
            return by_bmc[0]
        if len(by_bmc) > 1:
            raise Ambiguous("node", ref, sorted(f"#{n.id}" for n in by_bmc))
        raise NotFound("node", ref)

    # -------------------------------------------------------------------------------------- reads
    def sites(self) -> list[SiteView]:
        with self.session() as s:
            locations: dict[int, list[str]] = defaultdict(list)
            for loc in s.exec(select(Location).order_by(Location.name)):
                locations[loc.site_id].append(loc.name)
            racks = dict(s.exec(select(Rack.site_id, func.count()).group_by(Rack.site_id)).all())
            nodes = dict(s.exec(select(Node.site_id, func.count()).group_by(Node.site_id)).all())
            return [
                SiteView(name=site.name, country_code=site.country_code, jurisdiction=site.jurisdiction,
                         role=site.role, description=site.description, locations=locations[site.id],
                         racks=racks.get(site.id, 0), nodes=nodes.get(site.id, 0))
                for site in s.exec(select(Site).order_by(Site.name))
            ]

    def racks(self, site: str | None = None) -> list[RackView]:
        with self.session() as s:
            query = select(Rack).join(Site, col(Rack.site_id) == Site.id).order_by(Site.name, Rack.name)
            if site:
                query = query.where(Site.id == self.site_by_name(s, site).id)
            return [self._rack_view(s, rack, RackView) for rack in s.exec(query)]

    def rack(self, ref: str) -> RackDetail:
        with self.session() as s:
            rack = self.rack_by_ref(s, ref)
            detail = self._rack_view(s, rack, RackDetail)
            slots = {
                slot.u: node
                for slot, node in s.exec(select(RackSlot, Node).join(Node, col(RackSlot.node_id) == Node.id)
                                         .where(RackSlot.rack_id == rack.id))
            }
            detail.elevation = [
                UnitView(u=u, node=_node_label(slots[u]), serial=slots[u].serial, face=slots[u].face,
                         is_base=slots[u].position == u) if u in slots else UnitView(u=u)
                for u in range(rack.u_height, 0, -1)
            ]
            detail.pdus = [self._pdu_view(s, pdu) for pdu in
                           s.exec(select(Pdu).where(Pdu.rack_id == rack.id).order_by(Pdu.name))]
            return detail

    def nodes(self, site: str | None = None, rack: str | None = None, state: str | None = None) -> list[NodeView]:
        with self.session() as s:
            query = select(Node).order_by(Node.site_id, Node.rack_id, col(Node.position).desc(), Node.id)
            if site:
                query = query.where(Node.site_id == self.site_by_name(s, site).id)
            if rack:
                query = query.where(Node.rack_id == self.rack_by_ref(s, rack, site).id)
            if state:
                if state not in NodeState.__members__.values():
                    raise Invalid("state", f"{state!r} is not one of {', '.join(NodeState)}")
                query = query.where(Node.state == state)
            names = _Names(s)
            return [NodeView(**_node_fields(node, names)) for node in s.exec(query)]

    def node(self, ref: str) -> NodeDetail:
        with self.session() as s:
            node = self.node_by_ref(s, ref)
            comps = ComponentsView(
                processors=_rows(s, Processor, node.id, Processor.socket),
                memory=_rows(s, MemoryModule, node.id, MemoryModule.slot),
                drives=_rows(s, Drive, node.id, Drive.name),
                nics=_rows(s, NetworkInterface, node.id, NetworkInterface.name),
            )
            return NodeDetail(
                **_node_fields(node, _Names(s)), bmc_port=node.bmc_port,
                bmc_tls_fingerprint=node.bmc_tls_fingerprint, credential_ref=node.credential_ref,
                bios_version=node.bios_version, bmc_firmware=node.bmc_firmware,
                expected_power_watts=node.expected_power_watts, processor_count=len(comps.processors),
                memory_total_mib=sum(m["size_mib"] or 0 for m in comps.memory), components=comps,
                created_at=as_utc(node.created_at), updated_at=as_utc(node.updated_at),
            )

    def pdus(self, site: str | None = None) -> list[PduView]:
        with self.session() as s:
            query = select(Pdu).order_by(Pdu.site_id, Pdu.name)
            if site:
                query = query.where(Pdu.site_id == self.site_by_name(s, site).id)
            return [self._pdu_view(s, pdu) for pdu in s.exec(query)]

    def cooling_loops(self, site: str | None = None) -> list[CoolingLoopView]:
        with self.session() as s:
            query = select(CoolingLoop).order_by(CoolingLoop.site_id, CoolingLoop.name)
            if site:
                query = query.where(CoolingLoop.site_id == self.site_by_name(s, site).id)
            names = _Names(s)
            views = []
            for loop in s.exec(query):
                cdu = s.get(CoolingUnit, loop.cooling_unit_id)
                racks = s.exec(select(Rack.name).where(Rack.cooling_loop_id == loop.id).order_by(Rack.name)).all()
                views.append(CoolingLoopView(site=names.site(loop.site_id), name=loop.name,
                                             cooling_unit=cdu.name if cdu else "?", racks=list(racks)))
            return views

    def events(self, since: datetime | None = None, subject: str | None = None,
               limit: int = 1000) -> list[EventView]:
        with self.session() as s:
            query = select(Event).order_by(col(Event.time).desc(), col(Event.id).desc()).limit(limit)
            if since:
                query = query.where(Event.time >= since)
            if subject:
                query = query.where(Event.subject == subject)
            return [EventView(id=e.id, time=as_utc(e.time), kind=e.kind, subject=e.subject, actor=e.actor,
                              message=e.message, details=e.details) for e in s.exec(query)]

    # ----------------------------------------------------------------------------------- commands
    @staticmethod
    def add_event(session: Session, kind: str, subject: str, message: str, actor: str,
                  details: dict[str, Any] | None = None) -> Event:
        """Record an event in the caller's transaction, so it lands or fails with the change it describes."""
        event = Event(kind=kind, subject=subject, actor=actor, message=message, details=details or {})
        session.add(event)
        return event

    def record_event(self, kind: str, subject: str, message: str, actor: str,
                     details: dict[str, Any] | None = None) -> None:
        with self.session() as s:
            self.add_event(s, kind, subject, message, actor, details)

    @staticmethod
    def place_node(session: Session, node: Node, rack: Rack | None, position: int | None,
                   u_height: int | None = None, face: str | None = None) -> None:
        """Put ``node`` at ``position`` (its lowest U) in ``rack``, or take it out when rack is None."""
        if u_height is not None:
            if u_height < 1:
                raise Invalid("u_height", f"must be at least 1, got {u_height}")
            node.u_height = u_height
        if face is not None:
            if face not in Face.__members__.values():
                raise Invalid("face", f"{face!r} is not one of front, rear")
            node.face = face
        if rack is None:
            Inventory._free_slots(session, node)
            node.rack_id = node.position = None
            return
        if position is None:
            raise Invalid("position", f"a node in rack {rack.name} needs a position")
        top = position + node.u_height - 1
        if position < 1 or top > rack.u_height:
            raise Invalid("position", f"U{position}-U{top} does not fit rack {rack.name} (1-{rack.u_height})")
        if node.id is None:
            session.add(node)
            session.flush()
        taken = session.exec(
            select(RackSlot, Node).join(Node, col(RackSlot.node_id) == Node.id)
            .where(RackSlot.rack_id == rack.id, col(RackSlot.u).between(position, top),
                   RackSlot.node_id != node.id)
        ).first()
        if taken is not None:
            slot, other = taken
            raise Conflict(f"rack {rack.name} U{slot.u} is already occupied by {_node_label(other)}")
        Inventory._free_slots(session, node)
        node.site_id, node.rack_id, node.position = rack.site_id, rack.id, position
        session.add(node)
        session.flush()
        for u in range(position, top + 1):
            session.add(RackSlot(rack_id=rack.id, u=u, node_id=node.id))
        node.updated_at = utcnow()

    @staticmethod
    def _free_slots(session: Session, node: Node) -> None:
        if node.id is None:
            return
        for slot in session.exec(select(RackSlot).where(RackSlot.node_id == node.id)):
            session.delete(slot)
        session.flush()

    # ------------------------------------------------------------------------------------ helpers
    def _rack_view(self, s: Session, rack: Rack, cls: type[RackView]) -> Any:
        names = _Names(s)
        feeds = [
            FeedView(panel=names.panel(feed.power_panel_id), name=feed.name, side=feed.side,
                     voltage=feed.voltage, amperage=feed.amperage, phase=feed.phase,
                     max_utilization=feed.max_utilization, capacity_watts=round(feed.capacity_watts, 1))
            for feed in s.exec(select(PowerFeed).where(PowerFeed.rack_id == rack.id)
                               .order_by(PowerFeed.side, PowerFeed.name))
        ]
        u_used = s.exec(select(func.count()).select_from(RackSlot).where(RackSlot.rack_id == rack.id)).one()
        nodes = s.exec(select(func.count()).select_from(Node).where(Node.rack_id == rack.id)).one()
        loop = s.get(CoolingLoop, rack.cooling_loop_id) if rack.cooling_loop_id else None
        return cls(site=names.site(rack.site_id), location=names.location(rack.location_id), name=rack.name,
                   u_height=rack.u_height, power_budget_watts=rack.power_budget_watts,
                   cooling_loop=loop.name if loop else None, switch_name=rack.switch_name, feeds=feeds,
                   u_used=u_used, nodes=nodes)

    @staticmethod
    def _pdu_view(s: Session, pdu: Pdu) -> PduView:
        names = _Names(s)
        outlets = [
            OutletView(index=o.index, name=o.name, feed=names.feed(o.power_feed_id),
                       node=names.node(o.node_id), psu=o.psu)
            for o in s.exec(select(PduOutlet).where(PduOutlet.pdu_id == pdu.id).order_by(PduOutlet.index))
        ]
        return PduView(site=names.site(pdu.site_id), name=pdu.name, rack=names.rack(pdu.rack_id),
                       feed=names.feed(pdu.power_feed_id), address=pdu.address, protocol=pdu.protocol,
                       port=pdu.port, outlets=outlets)


class _Names:
    """Id → display name, memoised for the length of one read."""

    def __init__(self, session: Session) -> None:
        self._s = session
        self._cache: dict[tuple[type, int], str] = {}

    def _get(self, model: type, id_: int | None, render) -> str | None:
        if id_ is None:
            return None
        key = (model, id_)
        if key not in self._cache:
            row = self._s.get(model, id_)
            self._cache[key] = render(row) if row else f"#{id_}"
        return self._cache[key]

    def site(self, id_: int | None) -> str | None:
        return self._get(Site, id_, lambda r: r.name)

    def location(self, id_: int | None) -> str | None:
        return self._get(Location, id_, lambda r: r.name)

    def rack(self, id_: int | None) -> str | None:
        return self._get(Rack, id_, lambda r: r.name)

    def panel(self, id_: int | None) -> str | None:
        return self._get(PowerPanel, id_, lambda r: r.name)

    def feed(self, id_: int | None) -> str | None:
        return self._get(PowerFeed, id_, lambda r: f"{self.panel(r.power_panel_id)}/{r.name}")

    def node(self, id_: int | None) -> str | None:
        return self._get(Node, id_, _node_label)


def _node_label(node: Node) -> str:
    return node.name or node.serial or node.uuid or node.bmc_address or f"#{node.id}"


def _node_fields(node: Node, names: _Names) -> dict[str, Any]:
    return dict(name=node.name, serial=node.serial, uuid=node.uuid, site=names.site(node.site_id),
                rack=names.rack(node.rack_id), position=node.position, u_height=node.u_height, face=node.face,
                manufacturer=node.manufacturer, model=node.model, asset_tag=node.asset_tag, state=node.state,
                power_state=node.power_state, bmc_address=node.bmc_address, bmc_protocol=node.bmc_protocol,
                bmc_state=node.bmc_state)


def _rows(s: Session, model: type, node_id: int | None, order) -> list[dict[str, Any]]:
    return [row.model_dump(exclude={"id", "node_id"}) for row in
            s.exec(select(model).where(model.node_id == node_id).order_by(order))]

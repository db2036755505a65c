"""Enrolment: turn what a BMC told us into a Node, without ever duplicating one.

A node is matched by serial, then UUID, then by the BMC address it was last seen at in the site (a record
left by an earlier refused login). Re-discovery updates it; a moved BMC address updates it; a changed
component or firmware is recorded as a ``hardware.drift`` event. A node declared by an import (state
``planned``) is matched by serial and becomes ``discovered``.

The daemon maps driver results into :class:`Observed`; this module never sees a protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, select

from inventory.errors import Conflict
from inventory.model import (
    BmcState,
    Drive,
    MemoryModule,
    NetworkInterface,
    Node,
    NodeState,
    Processor,
    utcnow,
)
from inventory.service import Inventory

# How each component kind is keyed when comparing what was stored with what was observed.
COMPONENT_KEYS: dict[type, str] = {
    Processor: "socket",
    MemoryModule: "slot",
    Drive: "name",
    NetworkInterface: "name",
}
FIRMWARE_FIELDS = ("bios_version", "bmc_firmware")
IDENTITY_FIELDS = ("manufacturer", "model")


@dataclass
class Observed:
    """One server as read from its BMC, in the model's terms."""

    bmc_address: str
    bmc_port: int
    bmc_protocol: str
    serial: str | None = None
    uuid: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    bios_version: str | None = None
    bmc_firmware: str | None = None
    power_state: str | None = None
    tls_fingerprint: str | None = None
    credential_ref: str | None = None
    processors: list[Processor] = field(default_factory=list)
    memory: list[MemoryModule] = field(default_factory=list)
    drives: list[Drive] = field(default_factory=list)
    nics: list[NetworkInterface] = field(default_factory=list)


@dataclass
class EnrolResult:
    node: str  # the node's label
    created: bool
    drift: list[str]


def _label(node: Node) -> str:
    return node.name or node.serial or node.uuid or node.bmc_address or f"#{node.id}"


def _find(session: Session, site_id: int, observed: Observed) -> Node | None:
    if observed.serial:
        node = session.exec(select(Node).where(Node.serial == observed.serial)).first()
        if node:
            return node
    if observed.uuid:
        node = session.exec(select(Node).where(Node.uuid == observed.uuid)).first()
        if node:
            return node
    # A record from an earlier refused login at this address carries no identity yet.
    return session.exec(select(Node).where(Node.site_id == site_id, Node.bmc_address == observed.bmc_address,
                                           Node.serial.is_(None), Node.uuid.is_(None))).first()


def _free_bmc_address(session: Session, node: Node, site_id: int, address: str, actor: str) -> None:
    """Another node still recorded at this BMC address has moved away: clear its address, say so."""
    stale = session.exec(select(Node).where(Node.site_id == site_id, Node.bmc_address == address,
                                            Node.id != node.id)).all()
    for other in stale:
        if other.serial is None and other.uuid is None:
            session.delete(other)  # a placeholder from a refused login, now identified
            continue
        Inventory.add_event(session, "node.bmc_moved", f"node/{_label(other)}",
                            f"BMC address {address} now answers as {_label(node)}", actor,
                            {"address": address})
        other.bmc_address = None
        other.bmc_state = BmcState.UNREACHABLE
    session.flush()


def _component_rows(session: Session, model: type, node_id: int) -> dict[str, Any]:
    key = COMPONENT_KEYS[model]
    return {getattr(row, key): row for row in session.exec(select(model).where(model.node_id == node_id))}


def _sync_components(session: Session, node: Node, model: type, observed: list[Any]) -> list[str]:
    """Make the stored components equal what was observed; return a line per difference."""
    key = COMPONENT_KEYS[model]
    kind = model.__name__
    stored = _component_rows(session, model, node.id)
    seen = {getattr(row, key): row for row in observed}
    changes = []
    for name, row in stored.items():
        if name not in seen:
            changes.append(f"{kind} {name} removed")
            session.delete(row)
    session.flush()
    for name, new in seen.items():
        values = new.model_dump(exclude={"id", "node_id"})
        old = stored.get(name)
        if old is None:
            if model is NetworkInterface and new.mac:
                owner = session.exec(select(NetworkInterface).where(NetworkInterface.mac == new.mac)).first()
                if owner is not None:
                    other = session.get(Node, owner.node_id)
                    raise Conflict(f"MAC {new.mac} of {_label(node)} {name} is already recorded on "
                                   f"{_label(other) if other else f'node #{owner.node_id}'}")
            session.add(model(node_id=node.id, **values))
            changes.append(f"{kind} {name} added")
            continue
        before = old.model_dump(exclude={"id", "node_id"})
        diff = {k: (before[k], v) for k, v in values.items() if before[k] != v}
        if diff:
            for k, v in values.items():
                setattr(old, k, v)
            changes.append(f"{kind} {name} changed: " +
                           ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items())))
    return changes


def _one_per_mac(nics: list[NetworkInterface]) -> list[NetworkInterface]:
    """A VLAN or other logical interface reports its parent's MAC: keep the first interface per MAC."""
    seen: set[str] = set()
    kept = []
    for nic in sorted(nics, key=lambda n: n.name):
        if nic.mac and nic.mac in seen:
            continue
        if nic.mac:
            seen.add(nic.mac)
        kept.append(nic)
    return kept


def enrol(inventory: Inventory, site: str, observed: Observed, actor: str) -> EnrolResult:
    """Create or update the node ``observed`` describes, in one transaction with its events."""
    with inventory.session() as s:
        site_row = inventory.site_by_name(s, site)
        node = _find(s, site_row.id, observed)
        created = node is None
        first_sighting = created or node.state == NodeState.PLANNED  # a declared node seen for the first time
        if node is None:
            node = Node(site_id=site_row.id, state=NodeState.DISCOVERED)
            s.add(node)
        elif node.state == NodeState.PLANNED:
            node.state = NodeState.DISCOVERED
        if (node.bmc_tls_fingerprint and observed.tls_fingerprint
                and node.bmc_tls_fingerprint != observed.tls_fingerprint):
            raise Conflict(f"the BMC at {observed.bmc_address} reports {_label(node)}, whose BMC is pinned to "
                           f"another certificate (sha256 {node.bmc_tls_fingerprint}); if its BMC was "
                           f"replaced, run `baie bmc trust {_label(node)}`")
        s.flush()
        if node.site_id is None:
            node.site_id = site_row.id
        moved = not created and node.bmc_address not in (None, observed.bmc_address)
        old_address = node.bmc_address
        _free_bmc_address(s, node, site_row.id, observed.bmc_address, actor)
        drift: list[str] = []
        if not first_sighting:
            for name in FIRMWARE_FIELDS + IDENTITY_FIELDS:
                old, new = getattr(node, name), getattr(observed, name)
                if old is not None and new is not None and old != new:
                    drift.append(f"{name} changed: {old!r} -> {new!r}")
        for name in ("serial", "uuid", "credential_ref", *FIRMWARE_FIELDS, *IDENTITY_FIELDS):
            value = getattr(observed, name)
            if value is not None:
                setattr(node, name, value)
        node.bmc_address, node.bmc_port = observed.bmc_address, observed.bmc_port
        node.bmc_protocol, node.power_state = observed.bmc_protocol, observed.power_state
        node.bmc_state = BmcState.OK
        if observed.tls_fingerprint and not node.bmc_tls_fingerprint:
            node.bmc_tls_fingerprint = observed.tls_fingerprint
        node.updated_at = utcnow()
        s.flush()
        components = []
        for model, rows in ((Processor, observed.processors), (MemoryModule, observed.memory),
                            (Drive, observed.drives), (NetworkInterface, _one_per_mac(observed.nics))):
            components += _sync_components(s, node, model, rows)
        subject = f"node/{_label(node)}"
        if first_sighting:
            declared = "" if created else " (matched its declared placement)"
            Inventory.add_event(s, "node.enrolled", subject,
                                f"enrolled from {observed.bmc_protocol} BMC {observed.bmc_address}{declared}",
                                actor, {"serial": node.serial, "uuid": node.uuid})
        else:
            drift += components
            if moved:
                Inventory.add_event(s, "node.bmc_moved", subject,
                                    f"BMC moved from {old_address} to {observed.bmc_address}", actor,
                                    {"from": old_address, "to": observed.bmc_address})
            if drift:
                Inventory.add_event(s, "hardware.drift", subject, "; ".join(drift), actor, {"changes": drift})
        return EnrolResult(node=_label(node), created=created, drift=drift)


def record_bmc_problem(inventory: Inventory, site: str, address: str, port: int, protocol: str,
                       state: BmcState, message: str, actor: str, *, fingerprint: str | None = None) -> str:
    """A BMC answered but refused us (credentials, certificate): keep it on record with its state and an event.

    Returns the node label. Only a change of state makes an event, so a BMC that keeps refusing is logged once.
    """
    with inventory.session() as s:
        site_row = inventory.site_by_name(s, site)
        node = s.exec(select(Node).where(Node.site_id == site_row.id, Node.bmc_address == address)).first()
        if node is None:
            node = Node(site_id=site_row.id, bmc_address=address, bmc_port=port, bmc_protocol=protocol,
                        state=NodeState.DISCOVERED)
            s.add(node)
            s.flush()
        changed = node.bmc_state != state
        node.bmc_state = state
        node.updated_at = utcnow()
        if changed:
            details: dict[str, Any] = {"address": address, "protocol": protocol}
            if fingerprint:
                details["seen_fingerprint"] = fingerprint
            Inventory.add_event(s, f"bmc.{state}", f"node/{_label(node)}", message, actor, details)
        return _label(node)


def set_bmc_state(inventory: Inventory, node_ref: str, state: BmcState, message: str, actor: str) -> bool:
    """Record a BMC's reachability; an event only when it changes (logged once, and once on recovery)."""
    with inventory.session() as s:
        node = inventory.node_by_ref(s, node_ref)
        if node.bmc_state == state:
            return False
        previous, node.bmc_state = node.bmc_state, state
        Inventory.add_event(s, f"bmc.{state}", f"node/{_label(node)}", message, actor,
                            {"previous": previous})
        return True


def trust_certificate(inventory: Inventory, node_ref: str, fingerprint: str, actor: str) -> str | None:
    """Re-pin a node's BMC certificate (``baie bmc trust NODE``); returns the fingerprint it replaced."""
    with inventory.session() as s:
        node = inventory.node_by_ref(s, node_ref)
        previous, node.bmc_tls_fingerprint = node.bmc_tls_fingerprint, fingerprint
        if node.bmc_state == BmcState.TLS_MISMATCH:
            node.bmc_state = BmcState.UNKNOWN
        Inventory.add_event(s, "bmc.trusted", f"node/{_label(node)}",
                            f"certificate pinned: sha256 {fingerprint}", actor,
                            {"previous": previous, "fingerprint": fingerprint})
        return previous

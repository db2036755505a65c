"""The node lifecycle: the transition table, transitions recorded with reason, actor and time, the daemons'
node locks and their recovery, timeouts, and the one-time provisioning tokens the boot service checks.

Every transition is a conditional UPDATE (``WHERE state = <source>`` and the lock is the caller's or
nobody's), so two daemons sharing a database can never both move a node. A daemon locks a node it works
on with ``UPDATE … WHERE lock_owner IS NULL``; a lock whose owner is no longer alive is stale, and the
node is sent from its transient state to that state's ``*_failed`` with the reason.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, or_, update
from sqlmodel import Session, col, select

from inventory.errors import Conflict, InventoryError, NotFound
from inventory.model import DaemonInstance, NetworkInterface, Node, NodeState, NodeTransition, Provisioning, utcnow
from inventory.service import Inventory, as_utc

S = NodeState
OPERATOR, DAEMON = "operator", "daemon"  # who may make a transition: anyone through the API, or only a flow

# (source, target, by). Retrying a failed provisioning runs it again from booting (`baie provision`);
# retrying a failed release runs the failed step again (`baie release`).
TRANSITIONS: tuple[tuple[NodeState, NodeState, str], ...] = (
    (S.PLANNED, S.DISCOVERED, DAEMON),  # enrolment matched a declared node
    (S.DISCOVERED, S.ENROLLED, OPERATOR),
    (S.ENROLLED, S.INSPECTING, OPERATOR),
    (S.INSPECTING, S.AVAILABLE, OPERATOR),
    (S.INSPECTING, S.INSPECTING_FAILED, DAEMON),
    (S.INSPECTING_FAILED, S.INSPECTING, OPERATOR),
    (S.AVAILABLE, S.BOOTING, DAEMON),
    (S.BOOTING, S.INSTALLING, DAEMON),
    (S.BOOTING, S.BOOTING_FAILED, DAEMON),
    (S.BOOTING_FAILED, S.BOOTING, DAEMON),
    (S.INSTALLING, S.VERIFYING, DAEMON),
    (S.INSTALLING, S.INSTALLING_FAILED, DAEMON),
    (S.INSTALLING_FAILED, S.BOOTING, DAEMON),
    (S.VERIFYING, S.DEPLOYED, DAEMON),
    (S.VERIFYING, S.VERIFYING_FAILED, DAEMON),
    (S.VERIFYING_FAILED, S.BOOTING, DAEMON),
    (S.DEPLOYED, S.IN_POOL, DAEMON),
    (S.DEPLOYED, S.JOIN_FAILED, DAEMON),
    (S.JOIN_FAILED, S.BOOTING, DAEMON),
    (S.IN_POOL, S.DRAINING, DAEMON),
    (S.DRAINING, S.CLEANING, DAEMON),
    (S.DRAINING, S.DRAINING_FAILED, DAEMON),
    (S.DRAINING_FAILED, S.DRAINING, DAEMON),
    (S.CLEANING, S.AVAILABLE, DAEMON),
    (S.CLEANING, S.RETIRED, DAEMON),  # disks are erased before a node is retired too
    (S.CLEANING, S.CLEANING_FAILED, DAEMON),
    (S.CLEANING_FAILED, S.CLEANING, DAEMON),
    (S.MAINTENANCE, S.CLEANING, DAEMON),  # `baie release`: back to available only through an erase
    (S.MAINTENANCE, S.INSPECTING, OPERATOR),
    *((source, S.MAINTENANCE, OPERATOR) for source in (
        S.DISCOVERED, S.ENROLLED, S.AVAILABLE, S.INSPECTING_FAILED, S.BOOTING_FAILED, S.INSTALLING_FAILED,
        S.VERIFYING_FAILED, S.JOIN_FAILED, S.DRAINING_FAILED, S.CLEANING_FAILED)),
    *((source, S.RETIRED, OPERATOR) for source in (S.DISCOVERED, S.ENROLLED, S.AVAILABLE, S.MAINTENANCE)),
)
ALLOWED: dict[tuple[NodeState, NodeState], str] = {(source, target): by for source, target, by in TRANSITIONS}

# The waiting states, each with the state its timeout (or a failure) leads to.
FAILED: dict[NodeState, NodeState] = {
    S.INSPECTING: S.INSPECTING_FAILED,
    S.BOOTING: S.BOOTING_FAILED,
    S.INSTALLING: S.INSTALLING_FAILED,
    S.VERIFYING: S.VERIFYING_FAILED,
    S.DEPLOYED: S.JOIN_FAILED,
    S.DRAINING: S.DRAINING_FAILED,
    S.CLEANING: S.CLEANING_FAILED,
}
# States only a daemon holding the node's lock is in: with no live owner, the work has stopped.
DAEMON_STATES = frozenset(FAILED) - {S.INSPECTING}


class TokenRejected(InventoryError):
    """A provisioning token that is wrong for the MAC, spent or expired (HTTP 403)."""


class TransitionView(BaseModel):
    time: datetime
    source: str
    target: str
    reason: str
    actor: str


@dataclass(frozen=True)
class BootContext:
    """What the boot service needs to answer one node's installer."""

    node: str  # label
    hostname: str
    profile: str
    mac: str
    provisioning_id: int


def _label(node: Node) -> str:
    return node.name or node.serial or node.uuid or node.bmc_address or f"#{node.id}"


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_mac(mac: str) -> str:
    return mac.strip().lower().replace("-", ":")


# ------------------------------------------------------------------------------------- transitions
def check_transition(label: str, source: NodeState, target: NodeState) -> str:
    """Who may make ``source → target`` (OPERATOR or DAEMON); Conflict, naming the way out, if no one may."""
    by = ALLOWED.get((source, target))
    if by is None:
        ways = ", ".join(t for s, t, _ in TRANSITIONS if s == source) or "none: it is final"
        raise Conflict(f"{label} is {source}: it cannot go to {target} (from {source}: {ways})")
    return by


def _apply(s: Session, node: Node, target: NodeState, reason: str, actor: str, owner: str | None,
           fields: Mapping[str, Any] | None = None, *, any_lock: bool = False) -> TransitionView:
    source = NodeState(node.state)
    now = utcnow()
    query = update(Node).where(col(Node.id) == node.id, col(Node.state) == source)
    if not any_lock:
        query = query.where(or_(col(Node.lock_owner).is_(None), col(Node.lock_owner) == owner))
    result = s.exec(query.values(state=target, state_since=now, updated_at=now, **(fields or {})))
    if result.rowcount != 1:
        s.refresh(node)
        raise Conflict(f"{_label(node)} changed meanwhile: it is {node.state}"
                       + (f", locked by {node.lock_owner}" if node.lock_owner else ""))
    s.add(NodeTransition(node_id=node.id, time=now, source=source, target=target, reason=reason, actor=actor))
    return TransitionView(time=now, source=source, target=target, reason=reason, actor=actor)


def transition(inventory: Inventory, ref: str, target: NodeState, reason: str, actor: str, *,
               owner: str | None = None, operator: bool = False,
               fields: Mapping[str, Any] | None = None) -> TransitionView:
    """Move a node along the table; ``owner`` is the daemon holding its lock (None: nobody may hold it).
    ``operator``: refuse the transitions only a provisioning flow makes. ``fields``: node columns set with it."""
    with inventory.session() as s:
        node = Inventory.node_by_ref(s, ref)
        by = check_transition(_label(node), NodeState(node.state), target)
        if operator and by != OPERATOR:
            raise Conflict(f"{_label(node)}: {node.state} → {target} is made by the daemon "
                           f"(`baie provision` or `baie release`), not by hand")
        if node.lock_owner and node.lock_owner != owner:
            raise Conflict(f"{_label(node)} is being worked on by {node.lock_owner}")
        return _apply(s, node, target, reason, actor, owner, fields)


def fail(inventory: Inventory, ref: str, reason: str, actor: str, *, owner: str | None = None) -> TransitionView:
    """From a waiting state to its failed state."""
    with inventory.session() as s:
        node = Inventory.node_by_ref(s, ref)
        state = NodeState(node.state)
        if state not in FAILED:
            raise Conflict(f"{_label(node)} is {state}, not a state that can fail")
        return _apply(s, node, FAILED[state], reason, actor, owner)


def history(inventory: Inventory, ref: str) -> list[TransitionView]:
    with inventory.session() as s:
        node = Inventory.node_by_ref(s, ref)
        rows = s.exec(select(NodeTransition).where(NodeTransition.node_id == node.id)
                      .order_by(col(NodeTransition.time), col(NodeTransition.id)))
        return [TransitionView(time=as_utc(t.time), source=t.source, target=t.target, reason=t.reason,
                               actor=t.actor) for t in rows]


def expire(inventory: Inventory, timeouts: Mapping[NodeState, float], actor: str,
           now: datetime | None = None) -> list[str]:
    """Nodes that waited longer than their state's timeout go to its failed state; their labels."""
    now = now or utcnow()
    expired = []
    with inventory.session() as s:
        for state, seconds in timeouts.items():
            query = select(Node).where(Node.state == state, col(Node.state_since) < now - timedelta(seconds=seconds))
            for node in s.exec(query).all():
                _apply(s, node, FAILED[state], f"timed out: {state} for more than {seconds:g} s", actor, None,
                       any_lock=True)
                expired.append(_label(node))
    return expired


# -------------------------------------------------------------------------------------------- locks
def acquire(inventory: Inventory, ref: str, owner: str) -> str:
    """Lock the node for ``owner`` (``UPDATE … WHERE lock_owner IS NULL``); its label. Conflict if it is held."""
    with inventory.session() as s:
        node = Inventory.node_by_ref(s, ref)
        result = s.exec(update(Node).where(col(Node.id) == node.id, col(Node.lock_owner).is_(None))
                        .values(lock_owner=owner, locked_at=utcnow()))
        if result.rowcount != 1:
            s.refresh(node)
            raise Conflict(f"{_label(node)} is being worked on by {node.lock_owner}")
        return _label(node)


def unlock(inventory: Inventory, ref: str, owner: str) -> None:
    with inventory.session() as s:
        node = Inventory.node_by_ref(s, ref)
        s.exec(update(Node).where(col(Node.id) == node.id, col(Node.lock_owner) == owner)
               .values(lock_owner=None, locked_at=None))


def daemon_name(inventory: Inventory, hostname: str) -> str:
    """This host's daemon: hostname/ID, the ID made once and kept in the database (one daemon per host)."""
    with inventory.session() as s:
        known = s.exec(select(DaemonInstance).where(DaemonInstance.hostname == hostname)
                       .order_by(DaemonInstance.started_at)).first()
        if known is None:
            known = DaemonInstance(name=f"{hostname}/{secrets.token_hex(6)}", hostname=hostname)
            s.add(known)
        return known.name


def heartbeat(inventory: Inventory, name: str, hostname: str) -> None:
    with inventory.session() as s:
        daemon = s.get(DaemonInstance, name)
        if daemon is None:
            s.add(DaemonInstance(name=name, hostname=hostname))
        else:
            daemon.seen_at = utcnow()
            s.add(daemon)


def live_daemons(inventory: Inventory, within: timedelta) -> set[str]:
    with inventory.session() as s:
        return set(s.exec(select(DaemonInstance.name).where(DaemonInstance.seen_at >= utcnow() - within)).all())


def recover(inventory: Inventory, alive: Iterable[str], actor: str, *, restarted: str | None = None) -> list[str]:
    """Clear the locks of daemons not in ``alive``; a daemon starting passes its own name as ``restarted``
    (and leaves it out of ``alive``). A node they, or nobody, left in a transient state goes to its failed
    state with the reason. The labels of the nodes recovered."""
    alive = set(alive)
    recovered = []
    with inventory.session() as s:
        stale = s.exec(select(Node).where(or_(
            col(Node.lock_owner).is_not(None) & col(Node.lock_owner).not_in(alive),
            col(Node.lock_owner).is_(None) & col(Node.state).in_(DAEMON_STATES)))).all()
        for node in stale:
            owner, state = node.lock_owner, NodeState(node.state)
            if state in DAEMON_STATES:
                who = "its daemon restarted" if owner == restarted else \
                    f"daemon {owner} is gone" if owner else "no daemon was working on it"
                _apply(s, node, FAILED[state], f"interrupted while {state}: {who}", actor, owner)
            s.exec(update(Node).where(col(Node.id) == node.id, col(Node.lock_owner) == owner)
                   .values(lock_owner=None, locked_at=None))
            recovered.append(_label(node))
    return recovered


# ------------------------------------------------------------------------------- provisioning tokens
def begin_provisioning(inventory: Inventory, ref: str, profile: str, reason: str, actor: str,
                       owner: str) -> tuple[int, TransitionView]:
    """Move a locked node to booting and open a provisioning attempt: its id, and the transition."""
    with inventory.session() as s:
        node = Inventory.node_by_ref(s, ref)
        check_transition(_label(node), NodeState(node.state), S.BOOTING)
        view = _apply(s, node, S.BOOTING, reason, actor, owner, {"pool": None})
        attempt = Provisioning(node_id=node.id, profile=profile)
        s.add(attempt)
        s.flush()
        return attempt.id, view


def attempt(inventory: Inventory, provisioning_id: int) -> Provisioning:
    with inventory.session() as s:
        row = s.get(Provisioning, provisioning_id)
        if row is None:
            raise NotFound("provisioning", f"#{provisioning_id}")
        return row


def last_attempt(inventory: Inventory, ref: str) -> Provisioning | None:
    """The node's latest provisioning that reported back (its address and SSH host key)."""
    with inventory.session() as s:
        node = Inventory.node_by_ref(s, ref)
        return s.exec(select(Provisioning).where(Provisioning.node_id == node.id,
                                                 col(Provisioning.callback_at).is_not(None))
                      .order_by(col(Provisioning.id).desc())).first()


def node_macs(inventory: Inventory, ref: str) -> list[str]:
    with inventory.session() as s:
        node = Inventory.node_by_ref(s, ref)
        macs = s.exec(select(NetworkInterface.mac).where(NetworkInterface.node_id == node.id,
                                                         col(NetworkInterface.mac).is_not(None))
                      .order_by(NetworkInterface.name)).all()
        return [normalise_mac(mac) for mac in macs]


def _node_by_mac(s: Session, mac: str) -> Node:
    node = s.exec(select(Node).join(NetworkInterface, col(NetworkInterface.node_id) == Node.id)
                  .where(func.lower(NetworkInterface.mac) == normalise_mac(mac))).first()
    if node is None:
        raise NotFound("MAC", mac)
    return node


def _hostname(node: Node) -> str:
    name = "".join(c if c.isalnum() else "-" for c in _label(node).lower()).strip("-")
    return name[:63] or f"node-{node.id}"


def issue_token(inventory: Inventory, mac: str, ttl_seconds: float) -> tuple[str, BootContext] | None:
    """For the iPXE script: a new one-time token bound to ``mac`` when its node is booting for a provisioning
    (None when it is not: the script then boots from disk). Only the token's SHA-256 is stored."""
    with inventory.session() as s:
        node = _node_by_mac(s, mac)
        if node.state != S.BOOTING:
            return None
        row = s.exec(select(Provisioning).where(Provisioning.node_id == node.id)
                     .order_by(col(Provisioning.id).desc())).first()
        if row is None:
            return None
        token = secrets.token_urlsafe(32)
        now = utcnow()
        row.mac, row.token_sha256 = normalise_mac(mac), token_sha256(token)
        row.token_expires_at, row.script_served_at = now + timedelta(seconds=ttl_seconds), now
        s.add(row)
        return token, BootContext(_label(node), _hostname(node), row.profile, row.mac, row.id)


def _check_token(s: Session, mac: str, token: str) -> tuple[Node, Provisioning]:
    node = _node_by_mac(s, mac)  # unknown MAC: NotFound (404) before anything is said about the token
    row = s.exec(select(Provisioning).where(Provisioning.token_sha256 == token_sha256(token))).first()
    if row is None or row.node_id != node.id or row.mac != normalise_mac(mac):
        raise TokenRejected(f"the token is not valid for {normalise_mac(mac)}")
    if row.callback_at is not None:
        raise TokenRejected("the token has been used")
    if row.token_expires_at is None or as_utc(row.token_expires_at) < utcnow():
        raise TokenRejected("the token has expired")
    if node.state not in (S.BOOTING, S.INSTALLING):
        raise TokenRejected(f"{_label(node)} is {node.state}: its provisioning is over")
    return node, row


def check_token(inventory: Inventory, mac: str, token: str) -> BootContext:
    """For the installer's configuration: the token must be unspent, unexpired and bound to ``mac``."""
    with inventory.session() as s:
        node, row = _check_token(s, mac, token)
        return BootContext(_label(node), _hostname(node), row.profile, row.mac, row.id)


def record_callback(inventory: Inventory, mac: str, token: str, ssh_host_key: str, address: str) -> str:
    """The installed host calls back: spend the token, keep its SSH host key and address; the node's label."""
    with inventory.session() as s:
        node, row = _check_token(s, mac, token)
        spent = s.exec(update(Provisioning).where(col(Provisioning.id) == row.id,
                                                  col(Provisioning.callback_at).is_(None))
                       .values(callback_at=utcnow(), ssh_host_key=ssh_host_key, host_address=address))
        if spent.rowcount != 1:
            raise TokenRejected("the token has been used")
        return _label(node)

"""The inventory: tables (sqlmodel) and the vocabulary their string columns take.

Names follow NetBox where it has one: Site › Location › Rack › Node (device), PowerPanel › PowerFeed,
``position`` is the lowest U a node occupies, ``face`` front|rear. Cooling: CoolingUnit › CoolingLoop › Rack.

Enumerated columns are stored as short strings (portable across SQLite and PostgreSQL, no native enum
types to migrate); the service layer validates them against the enums below.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


# Named constraints, so that later migrations can alter them on SQLite (batch mode) and PostgreSQL alike.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def _time(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), **kw)


class SiteRole(enum.StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"
    BACKUP = "backup"


class FeedSide(enum.StrEnum):
    A = "A"
    B = "B"


class FeedPhase(enum.StrEnum):
    SINGLE = "single"
    THREE = "three"


class Face(enum.StrEnum):
    FRONT = "front"
    REAR = "rear"


class BmcProtocol(enum.StrEnum):
    REDFISH = "redfish"
    IPMI = "ipmi"


class DeviceProtocol(enum.StrEnum):
    SNMP = "snmp"
    REDFISH = "redfish"


class BmcState(enum.StrEnum):
    """What the daemon last saw of a node's BMC."""

    UNKNOWN = "unknown"
    OK = "ok"
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth_failed"
    TLS_MISMATCH = "tls_mismatch"


class NodeState(enum.StrEnum):
    """Lifecycle of a node. ``planned`` is a declared placement not yet seen on the network."""

    PLANNED = "planned"
    DISCOVERED = "discovered"
    ENROLLED = "enrolled"
    AVAILABLE = "available"
    MAINTENANCE = "maintenance"
    RETIRED = "retired"
    # Provisioning lifecycle (inventory.lifecycle holds the transitions): each waiting state has its *_failed.
    INSPECTING = "inspecting"
    INSPECTING_FAILED = "inspecting_failed"
    BOOTING = "booting"
    BOOTING_FAILED = "booting_failed"
    INSTALLING = "installing"
    INSTALLING_FAILED = "installing_failed"
    VERIFYING = "verifying"
    VERIFYING_FAILED = "verifying_failed"
    DEPLOYED = "deployed"  # installed and verified; the pool join runs here
    JOIN_FAILED = "join_failed"
    IN_POOL = "in_pool"
    DRAINING = "draining"
    DRAINING_FAILED = "draining_failed"
    CLEANING = "cleaning"  # secure erase
    CLEANING_FAILED = "cleaning_failed"


# ------------------------------------------------------------------------------------------- places
class Site(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=64)
    country_code: str = Field(max_length=2)  # ISO 3166-1 alpha-2
    jurisdiction: str = Field(max_length=128)
    role: str = Field(max_length=16)  # SiteRole
    description: str | None = None


class Location(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    name: str = Field(max_length=64)


class CoolingUnit(SQLModel, table=True):
    """A coolant distribution unit (CDU)."""

    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    location_id: int | None = Field(default=None, foreign_key="location.id")
    name: str = Field(max_length=64)
    address: str | None = None
    protocol: str = Field(default=DeviceProtocol.REDFISH, max_length=16)
    port: int | None = None
    credential_ref: str | None = None


class CoolingLoop(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    cooling_unit_id: int = Field(foreign_key="coolingunit.id", index=True)
    name: str = Field(max_length=64)
    supply_temperature_max_c: float | None = None
    flow_min_lpm: float | None = None


class Rack(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    location_id: int = Field(foreign_key="location.id", index=True)
    name: str = Field(max_length=64)
    u_height: int = 42
    power_budget_watts: float | None = None
    cooling_loop_id: int | None = Field(default=None, foreign_key="coolingloop.id", index=True)
    switch_name: str | None = None  # the top-of-rack switch its nodes are cabled to


# -------------------------------------------------------------------------------------------- power
class PowerPanel(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    location_id: int | None = Field(default=None, foreign_key="location.id")
    name: str = Field(max_length=64)


class PowerFeed(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("power_panel_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    power_panel_id: int = Field(foreign_key="powerpanel.id", index=True)
    rack_id: int | None = Field(default=None, foreign_key="rack.id", index=True)
    name: str = Field(max_length=64)
    side: str = Field(max_length=1)  # FeedSide
    voltage: float = 230.0
    amperage: float = 16.0
    phase: str = Field(default=FeedPhase.SINGLE, max_length=8)
    max_utilization: float = 80.0  # percent of the breaker rating the feed may carry

    @property
    def capacity_watts(self) -> float:
        """Usable power: V × A (×√3 on three phase) × max_utilization."""
        factor = 3 ** 0.5 if self.phase == FeedPhase.THREE else 1.0
        return self.voltage * self.amperage * factor * self.max_utilization / 100.0


class Pdu(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    rack_id: int | None = Field(default=None, foreign_key="rack.id", index=True)
    power_feed_id: int | None = Field(default=None, foreign_key="powerfeed.id")
    name: str = Field(max_length=64)
    address: str | None = None
    protocol: str = Field(default=DeviceProtocol.SNMP, max_length=16)
    port: int | None = None
    credential_ref: str | None = None
    insecure_community_waiver: bool = False  # SNMPv2c allowed only when this is set explicitly


class PduOutlet(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("pdu_id", "index"),)
    id: int | None = Field(default=None, primary_key=True)
    pdu_id: int = Field(foreign_key="pdu.id", index=True)
    index: int
    name: str | None = None
    power_feed_id: int | None = Field(default=None, foreign_key="powerfeed.id")
    node_id: int | None = Field(default=None, foreign_key="node.id", index=True)
    psu: str | None = None  # which PSU of the node, e.g. "PSU1"


# --------------------------------------------------------------------------------------------- nodes
class Node(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("site_id", "bmc_address"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str | None = Field(default=None, unique=True, max_length=64)
    site_id: int | None = Field(default=None, foreign_key="site.id", index=True)
    rack_id: int | None = Field(default=None, foreign_key="rack.id", index=True)
    position: int | None = None
    u_height: int = 1
    face: str = Field(default=Face.FRONT, max_length=8)
    serial: str | None = Field(default=None, unique=True, max_length=64)
    uuid: str | None = Field(default=None, unique=True, max_length=64)
    asset_tag: str | None = Field(default=None, unique=True, max_length=64)
    manufacturer: str | None = None
    model: str | None = None
    bmc_address: str | None = None
    bmc_port: int | None = None
    bmc_protocol: str | None = Field(default=None, max_length=16)
    bmc_state: str = Field(default=BmcState.UNKNOWN, max_length=16)
    bmc_tls_fingerprint: str | None = None  # SHA-256 of the pinned certificate
    credential_ref: str | None = None
    state: str = Field(default=NodeState.DISCOVERED, max_length=32, index=True)
    power_state: str | None = Field(default=None, max_length=16)
    bios_version: str | None = None
    bmc_firmware: str | None = None
    expected_power_watts: float | None = None
    created_at: datetime = _time()
    updated_at: datetime = _time()
    # --- provisioning (inventory.lifecycle) ---
    state_since: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))  # for timeouts
    lock_owner: str | None = Field(default=None, max_length=128, index=True)  # the daemon working on it
    locked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    pool: str | None = Field(default=None, max_length=64)  # the hypervisor pool it has joined


class RackSlot(SQLModel, table=True):
    """One occupied U. The unique (rack, u) key makes overlapping placements impossible in the database."""

    __table_args__ = (UniqueConstraint("rack_id", "u"),)
    id: int | None = Field(default=None, primary_key=True)
    rack_id: int = Field(foreign_key="rack.id", index=True)
    u: int
    node_id: int = Field(foreign_key="node.id", index=True)


class Processor(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    node_id: int = Field(foreign_key="node.id", index=True)
    socket: str
    model: str | None = None
    manufacturer: str | None = None
    cores: int | None = None
    threads: int | None = None


class MemoryModule(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    node_id: int = Field(foreign_key="node.id", index=True)
    slot: str
    size_mib: int | None = None
    part_number: str | None = None
    serial: str | None = None
    manufacturer: str | None = None
    speed_mhz: int | None = None


class Drive(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    node_id: int = Field(foreign_key="node.id", index=True)
    name: str
    model: str | None = None
    serial: str | None = None
    capacity_bytes: int | None = Field(default=None, sa_type=BigInteger)
    media_type: str | None = None


class NetworkInterface(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    node_id: int = Field(foreign_key="node.id", index=True)
    name: str
    mac: str | None = Field(default=None, unique=True, max_length=17)
    speed_mbps: int | None = None


# ---------------------------------------------------------------------------------------- discovery
class DiscoveryRange(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("site_id", "cidr"),)
    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    cidr: str = Field(max_length=64)
    protocols: str = "redfish,ipmi"  # comma-separated BmcProtocol values


# -------------------------------------------------------------------------------------- time series
class Series(SQLModel, table=True):
    """One time series: a metric and a label set. ``key`` is the labels in canonical form
    (inventory.telemetry.series), so that a series is found by an index lookup on SQLite and PostgreSQL alike."""

    __table_args__ = (UniqueConstraint("metric", "key"),)
    id: int | None = Field(default=None, primary_key=True)
    metric: str = Field(max_length=96)
    key: str
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Reading(SQLModel, table=True):
    """One value of one series: the table that grows (a 10,000-node site writes ~13,000 rows a second at a
    15 s interval), so a row is three small values and two indexes."""

    __table_args__ = (Index("ix_reading_series_id_time", "series_id", "time"),)
    id: int | None = Field(default=None, primary_key=True)
    series_id: int = Field(foreign_key="series.id")
    time: datetime = _time(index=True)
    value: float


class ReadingRollup(SQLModel, table=True):
    """Readings of one series over one 5-minute bucket, kept long after the raw readings are pruned."""

    __table_args__ = (UniqueConstraint("metric", "series", "bucket"),)
    id: int | None = Field(default=None, primary_key=True)
    metric: str = Field(max_length=96)
    series: str
    bucket: datetime = Field(sa_type=DateTime(timezone=True), index=True)  # start of the bucket
    count: int
    min_value: float
    avg_value: float
    max_value: float


class Event(SQLModel, table=True):
    """Something that changed, who or what did it, and when."""

    id: int | None = Field(default=None, primary_key=True)
    time: datetime = _time(index=True)
    kind: str = Field(max_length=64, index=True)  # e.g. "node.created", "hardware.drift", "power.action"
    subject: str = Field(max_length=128)  # e.g. "node/SN123", "rack/par1/R01"
    actor: str = Field(max_length=64)  # "import:alice", "daemon", "cli:bob"
    message: str
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


# ------------------------------------------------------------------------------------- provisioning
class NodeTransition(SQLModel, table=True):
    """One lifecycle transition of a node: from, to, why, who and when (``baie node history``)."""

    id: int | None = Field(default=None, primary_key=True)
    node_id: int = Field(foreign_key="node.id", index=True)
    time: datetime = _time()
    source: str = Field(max_length=32)
    target: str = Field(max_length=32)
    reason: str
    actor: str = Field(max_length=128)


class Provisioning(SQLModel, table=True):
    """One provisioning attempt: its one-time token (only a SHA-256 of it) and what the installed host reported."""

    id: int | None = Field(default=None, primary_key=True)
    node_id: int = Field(foreign_key="node.id", index=True)
    profile: str = Field(max_length=64)
    mac: str | None = Field(default=None, max_length=17)  # the NIC that PXE-booted; the token is bound to it
    started_at: datetime = _time()
    token_sha256: str | None = Field(default=None, max_length=64, unique=True)
    token_expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    script_served_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    callback_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))  # the token is spent
    host_address: str | None = Field(default=None, max_length=64)
    ssh_host_key: str | None = None  # "ssh-ed25519 AAAA…" as reported by the installed host


class DaemonInstance(SQLModel, table=True):
    """A daemon (hostname + persistent id) and when it was last alive: locks of dead daemons are stale."""

    name: str = Field(primary_key=True, max_length=128)
    hostname: str = Field(max_length=64)
    started_at: datetime = _time()
    seen_at: datetime = _time()


# ---------------------------------------------------------------- alerting (inventory.alerts owns these)
class Alert(SQLModel, table=True):
    """One alert, identified by the fingerprint of its labels (which carry the rule): it fires, resolves, and
    fires again in the same row. ``notified_state`` is what the webhook targets were last told."""

    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(max_length=32, unique=True)
    rule: str = Field(max_length=64, index=True)
    severity: str = Field(max_length=16)  # inventory.alerts.Severity
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    summary: str
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = Field(max_length=16, index=True)  # inventory.alerts.AlertState
    active_since: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))  # condition true since
    started_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))  # firing since
    resolved_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    flips: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # ISO times, flap window
    flapping: bool = False
    notified_state: str | None = Field(default=None, max_length=16)
    notified_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    acked_by: str | None = Field(default=None, max_length=64)
    acked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class Silence(SQLModel, table=True):
    """Notifications of alerts whose labels match all ``matchers`` are held back from starts_at to ends_at."""

    id: int | None = Field(default=None, primary_key=True)
    matchers: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    starts_at: datetime = _time()
    ends_at: datetime = Field(sa_type=DateTime(timezone=True), index=True)
    created_by: str = Field(max_length=64)
    comment: str
    expired_by: str | None = Field(default=None, max_length=64)


class Notification(SQLModel, table=True):
    """One signed webhook message to one target: a batch of outbox entries, frozen when formed.
    ``webhook_id`` is the Standard Webhooks id, the same on every attempt."""

    id: int | None = Field(default=None, primary_key=True)
    webhook_id: str = Field(max_length=64, unique=True)
    target: str = Field(max_length=64, index=True)
    group_key: str
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _time()
    state: str = Field(max_length=16, index=True)  # inventory.alerts.Delivery
    attempts: int = 0
    next_attempt_at: datetime = _time()
    last_attempt_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class OutboxEntry(SQLModel, table=True):
    """An alert's change of state to tell one target, written in the transaction that made the change."""

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(foreign_key="alert.id", index=True)
    target: str = Field(max_length=64)
    group_key: str
    status: str = Field(max_length=16)  # firing | resolved
    snapshot: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _time()
    due_at: datetime = Field(sa_type=DateTime(timezone=True), index=True)
    notification_id: int | None = Field(default=None, foreign_key="notification.id", index=True)


class WebhookTarget(SQLModel, table=True):
    """A configured webhook target as the daemon last saw it; disabled when its URL answered 410 Gone."""

    name: str = Field(max_length=64, primary_key=True)
    url: str
    disabled_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    disabled_reason: str | None = None


# ---------------------------------------------------------------------------- switches (daemon.placement)
class Switch(SQLModel, table=True):
    """A switch whose LLDP neighbours and forwarding table (over SNMP) show where nodes are cabled; racks name
    theirs in ``Rack.switch_name``."""

    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    name: str = Field(max_length=64)
    address: str | None = None
    port: int | None = None
    protocol: str = Field(default=DeviceProtocol.SNMP, max_length=16)
    credential_ref: str | None = None
    insecure_community_waiver: bool = False  # SNMPv2c allowed only when this is set explicitly

"""The telemetry loop: every node BMC, PDU and CDU of the inventory on its own timer, readings written in
batches, BMC reachability recorded, roll-ups and retention on the scheduler.

Each device has a task that polls it at once, then at a slot of its own in every interval (plus up to
``jitter`` x its interval): slots are spread over the interval by the device's key, so a site's thousands
of BMCs come due evenly rather than together. A poll has a deadline; a device that does not answer delays
only itself, and its next poll never starts while the previous one runs. The device list is reloaded
every ``refresh_seconds``.

What is polled:
- nodes with a BMC address, not planned or retired, whose BMC state is ``ok`` or ``unreachable`` (auth
  failures and certificate mismatches wait for the operator): Redfish through the poll worker processes
  (``daemon.poll_workers``; TLS pinned to ``bmc_tls_fingerprint``), IPMI through
  ``IpmiDriver.read_sensors`` on the IPMI thread pool; credentials as for every BMC action
  (``daemon.bmc.credential_names``);
- PDUs and CDUs with an address: Redfish ones through the workers, with the same credential names as BMCs,
  verified against ``bmc.ca_bundle`` or else the system CAs; SNMP PDUs through the workers too
  (``SnmpPdu.read_telemetry``).

SNMP credentials are a TOML credential file named by the PDU's ``credential_ref``, else ``snmp-<site>``,
else ``snmp-default``::

    username = "baie"
    auth_key = "..."             # SHA-256 by default; auth_protocol = "SHA384" | "SHA512"
    priv_key = "..."             # AES-128 by default; priv_protocol = "AES192" | "AES256"

or, for a PDU whose ``insecure_community_waiver`` is set in the inventory only, ``community = "..."``.

Labels (the conventions of ``inventory.telemetry``): a node's readings carry ``site``, ``rack`` and
``node`` (its name, else its serial); a PDU's ``site``, ``rack`` and ``pdu`` (its inventory name), outlets
``outlet`` = the outlet's index (a Redfish outlet id such as ``A1`` becomes the index of the inventory outlet
of that name where there is one); a CDU's ``site`` and ``cdu``. A Redfish service exposing several PDUs or
CDUs keeps each one's id as ``unit``. CDU coolant connectors: the primary side carries
``circuit=facility`` and no loop; the secondary side ``circuit=it`` and, when the CDU serves exactly one
loop in the inventory, ``loop=<that loop>`` (with several loops, which connector feeds which is unknown).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import random
import time
import tomllib
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select

from daemon import bmc
from daemon.bmc import ERROR_STATES, BmcAccess
from daemon.config import TelemetrySettings
from daemon.credentials import CredentialError, CredentialStore
from daemon.executor import blocking, ipmi_blocking
from daemon.heap import freeze_heap
from daemon.poll_workers import PollWorkers
from drivers.base import AuthFailed, DriverError, Secret, SensorReading, Timeout
from drivers.ipmi import IpmiDriver
from drivers.redfish_telemetry import BmcTarget, DeviceKind
from drivers.snmp import AuthProtocol, PrivProtocol, SnmpTarget, SnmpV3User
from inventory.enrolment import set_bmc_state
from inventory.errors import InventoryError
from inventory.model import (
    BmcProtocol,
    BmcState,
    CoolingLoop,
    CoolingUnit,
    DeviceProtocol,
    Node,
    NodeState,
    Pdu,
    PduOutlet,
    Rack,
    Site,
    utcnow,
)
from inventory.service import Inventory
from inventory.telemetry import FACILITY, ReadingIn, prune, rollup, store_readings

log = structlog.get_logger("baie.telemetry")

POLLED_BMC_STATES = (BmcState.OK, BmcState.UNREACHABLE)
UNPOLLED_NODE_STATES = (NodeState.PLANNED, NodeState.RETIRED)
SNMP_PORT = 161
STOP_SECONDS = 2.0  # logging out of Redfish sessions at shutdown gets this long
CIRCUITS = {"primary": FACILITY, "secondary": "it"}  # the Redfish poller's CDU loop label → our circuit
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class DeviceClass(enum.StrEnum):
    BMC = "bmc"
    PDU = "pdu"
    CDU = "cdu"


@dataclass(frozen=True)
class DeviceSpec:
    """One device as the inventory describes it. A refresh restarts a device whose spec changed."""

    key: str  # "node#12": stable across renames
    name: str  # "node/web-1", "pdu/P1", "cdu/cdu1": the ``device`` label of the poll metrics
    device_class: str  # DeviceClass: which interval applies
    protocol: str
    address: str
    port: int | None
    site: str
    labels: tuple[tuple[str, str], ...]  # added to every reading
    credential_ref: str | None = None
    fingerprint: str | None = None  # a node's pinned BMC certificate
    waiver: bool = False  # SNMPv2c allowed (the PDU's insecure_community_waiver)
    loop: str | None = None  # the one loop a CDU serves
    outlets: tuple[tuple[str, int], ...] = ()  # a Redfish PDU's outlet names → indexes
    node_ref: str | None = None  # "#id" of a node, for its BMC state
    bmc_state: str | None = field(default=None, compare=False)  # as loaded; the loop keeps it current


def load_devices(inventory: Inventory, only_sites: Collection[str] = ()) -> list[DeviceSpec]:
    """Everything the loop polls, in ``only_sites`` where given (blocking: the ORM)."""
    with inventory.session() as s:
        sites = dict(s.exec(select(Site.id, Site.name)).all())
        if unknown := sorted(set(only_sites) - set(sites.values())):
            log.warning("telemetry.unknown_sites", sites=unknown, hint="telemetry.sites names no such site")
        racks = dict(s.exec(select(Rack.id, Rack.name)).all())
        nodes = s.exec(select(Node).where(col(Node.bmc_address).is_not(None), col(Node.bmc_protocol).is_not(None),
                                          col(Node.site_id).is_not(None),
                                          col(Node.bmc_state).in_(POLLED_BMC_STATES),
                                          col(Node.state).not_in(UNPOLLED_NODE_STATES))).all()
        pdus = s.exec(select(Pdu).where(col(Pdu.address).is_not(None))).all()
        outlet_names = s.exec(select(PduOutlet.pdu_id, PduOutlet.name, PduOutlet.index)
                              .where(col(PduOutlet.name).is_not(None))).all()
        cdus = s.exec(select(CoolingUnit).where(col(CoolingUnit.address).is_not(None))).all()
        loops = s.exec(select(CoolingLoop.cooling_unit_id, CoolingLoop.name)).all()

    def place(site_id: int, rack_id: int | None, **labels: str) -> tuple[tuple[str, str], ...]:
        rack = {"rack": racks[rack_id]} if rack_id else {}
        return tuple({"site": sites[site_id], **rack, **labels}.items())

    specs = []
    for node in nodes:
        label = node.name or node.serial or node.uuid or node.bmc_address
        specs.append(DeviceSpec(
            key=f"node#{node.id}", name=f"node/{label}", device_class=DeviceClass.BMC, protocol=node.bmc_protocol,
            address=node.bmc_address, port=node.bmc_port, site=sites[node.site_id],
            labels=place(node.site_id, node.rack_id, node=label), credential_ref=node.credential_ref,
            fingerprint=node.bmc_tls_fingerprint, node_ref=f"#{node.id}", bmc_state=node.bmc_state))
    names_by_pdu: dict[int, list[tuple[str, int]]] = {}
    for pdu_id, name, index in outlet_names:
        names_by_pdu.setdefault(pdu_id, []).append((name, index))
    for pdu in pdus:
        specs.append(DeviceSpec(
            key=f"pdu#{pdu.id}", name=f"pdu/{pdu.name}", device_class=DeviceClass.PDU, protocol=pdu.protocol,
            address=pdu.address, port=pdu.port, site=sites[pdu.site_id],
            labels=place(pdu.site_id, pdu.rack_id, pdu=pdu.name), credential_ref=pdu.credential_ref,
            waiver=pdu.insecure_community_waiver, outlets=tuple(sorted(names_by_pdu.get(pdu.id, ())))))
    loops_by_cdu: dict[int, list[str]] = {}
    for cdu_id, name in loops:
        loops_by_cdu.setdefault(cdu_id, []).append(name)
    for cdu in cdus:
        served = loops_by_cdu.get(cdu.id, [])
        specs.append(DeviceSpec(
            key=f"cdu#{cdu.id}", name=f"cdu/{cdu.name}", device_class=DeviceClass.CDU, protocol=cdu.protocol,
            address=cdu.address, port=cdu.port, site=sites[cdu.site_id],
            labels=place(cdu.site_id, None, cdu=cdu.name), credential_ref=cdu.credential_ref,
            loop=served[0] if len(served) == 1 else None))
    return [spec for spec in specs if spec.site in only_sites] if only_sites else specs


# ------------------------------------------------------------------------------------------ labels
def _units(readings: list[SensorReading], label: str) -> set[str | None]:
    return {r.labels.get(label) for r in readings}


def relabel(spec: DeviceSpec, readings: list[SensorReading], now: datetime) -> list[ReadingIn]:
    """A driver's readings in our label conventions (see the module docstring), as rows stamped ``now``."""
    extra = dict(spec.labels)
    if spec.device_class == DeviceClass.BMC:  # a server's readings keep the driver's labels (and most devices are)
        return [ReadingIn(reading.metric, {**reading.labels, **extra}, reading.value, now) for reading in readings]
    unit_label = {DeviceClass.PDU: "pdu", DeviceClass.CDU: "cdu"}[spec.device_class]
    several = len(_units(readings, unit_label)) > 1
    outlets = dict(spec.outlets)
    out = []
    for reading in readings:
        labels = dict(reading.labels)
        if (unit := labels.pop(unit_label, None)) and several:
            labels["unit"] = unit
        if spec.device_class == DeviceClass.PDU and "outlet" in labels:
            labels["outlet"] = str(outlets.get(labels["outlet"], labels["outlet"]))
        if spec.device_class == DeviceClass.CDU and (side := labels.pop("loop", None)):
            labels["circuit"] = CIRCUITS[side]
            if side == "secondary" and spec.loop:
                labels["loop"] = spec.loop
        out.append(ReadingIn(reading.metric, {**labels, **extra}, reading.value, now))
    return out


# ------------------------------------------------------------------------------------------ readers
class Reader(Protocol):
    async def read(self) -> list[SensorReading]: ...

    async def close(self) -> None: ...


@dataclass
class WorkerReader:
    """A Redfish device or an SNMP PDU, polled by the poll workers."""

    poller: PollWorkers
    target: BmcTarget | SnmpTarget
    kind: DeviceKind

    def __post_init__(self) -> None:
        self.poller.hold(self.target)

    async def read(self) -> list[SensorReading]:
        return await self.poller.poll(self.target, self.kind)

    async def close(self) -> None:
        self.poller.release(self.target)  # the last device to poll an address: the worker forgets it (logs out)


class IpmiReader:
    """pyghmi blocks, so a read runs on the thread pool and cannot be cancelled at the deadline: a poll that
    finds the last read still running waits for that one instead of starting another."""

    def __init__(self, driver: IpmiDriver) -> None:
        self.driver = driver
        self._running: asyncio.Future[list[SensorReading]] | None = None

    async def read(self) -> list[SensorReading]:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(ipmi_blocking(self.driver.read_sensors))
        return await asyncio.shield(self._running)

    async def close(self) -> None:
        await ipmi_blocking(self.driver.close)


def snmp_target(spec: DeviceSpec, store: CredentialStore, timeout: float) -> SnmpTarget:
    """The PDU's SNMP target with its credentials (the TOML file of the module docstring)."""
    names = [n for n in (spec.credential_ref, f"snmp-{spec.site}", "snmp-default") if n]
    name = next((n for n in names if store.has(n)), None)
    if name is None:
        raise CredentialError(f"{spec.name}: no SNMP credentials: provide one of {', '.join(names)}")
    try:
        entries = tomllib.loads(store.get(name).reveal())
    except tomllib.TOMLDecodeError:
        raise CredentialError(f"{store.directory / name}: not valid TOML") from None
    known = {"username", "auth_key", "priv_key", "auth_protocol", "priv_protocol", "community"}
    if unknown := sorted(set(entries) - known):
        raise CredentialError(f"{store.directory / name}: unknown keys {', '.join(unknown)}")
    target = SnmpTarget(spec.address, spec.port or SNMP_PORT, timeout=timeout)
    if "username" in entries:
        try:
            user = SnmpV3User(entries["username"], Secret(entries["auth_key"]), Secret(entries["priv_key"]),
                              AuthProtocol(entries.get("auth_protocol", AuthProtocol.SHA256)),
                              PrivProtocol(entries.get("priv_protocol", PrivProtocol.AES128)))
        except (KeyError, ValueError):
            raise CredentialError(f"{store.directory / name}: needs username, auth_key and priv_key, and "
                                  f"protocols among {', '.join(AuthProtocol)} / {', '.join(PrivProtocol)}") from None
        return SnmpTarget(target.host, target.port, v3=user, timeout=timeout)
    if "community" in entries and spec.waiver:
        return SnmpTarget(target.host, target.port, community=Secret(entries["community"]), timeout=timeout,
                          insecure_community_waiver=f"{spec.name}: insecure_community_waiver in the inventory")
    raise CredentialError(f"{store.directory / name}: no SNMPv3 user"
                          + ("" if "community" not in entries else f" ({spec.name} has no v2c waiver)"))


# --------------------------------------------------------------------------------------------- metrics
class PollMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.polls = Counter("baie_telemetry_polls", "Polls of a device", ["site", "device"], registry=registry)
        self.failures = Counter("baie_telemetry_poll_failures", "Failed polls of a device", ["site", "device"],
                                registry=registry)
        self.up = Gauge("baie_telemetry_device_up", "1 when the last poll of a device succeeded",
                        ["site", "device"], registry=registry)
        # By class, not by device: a histogram per device is a dozen series each across a whole fleet.
        self.duration = Histogram("baie_telemetry_poll_duration_seconds", "Time a poll took",
                                  ["site", "class"], buckets=DURATION_BUCKETS, registry=registry)
        self.queued = Gauge("baie_telemetry_queued_readings", "Readings waiting to be written", registry=registry)
        self.written = Counter("baie_telemetry_readings_written", "Readings written to the database",
                               registry=registry)
        self.batches = Counter("baie_telemetry_batches_written", "Batches of readings written", registry=registry)
        self.dropped = Counter("baie_telemetry_readings_dropped", "Readings lost to a failed database write",
                               registry=registry)

    def forget(self, spec: DeviceSpec) -> None:
        for metric in (self.polls, self.failures, self.up):
            with contextlib.suppress(KeyError):
                metric.remove(spec.site, spec.name)


# ----------------------------------------------------------------------------------------- the loop
class TelemetryLoop:
    def __init__(self, settings: TelemetrySettings, inventory: Inventory, access: BmcAccess,
                 store: CredentialStore, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.inventory = inventory
        self.access = access
        self.store = store
        self.metrics = PollMetrics(registry)
        # Devices whose last poll failed wait for slots of their own: BMCs that hang until the deadline then
        # take turns among themselves, never the healthy devices' (with one bound, a tarpit holding the last
        # slot kept a healthy BMC waiting for its whole deadline). A poll sends one request at a time, so a
        # worker's bound on requests is never the tighter one.
        suspect_slots = max(1, settings.max_in_flight // 4)
        self.poller = PollWorkers(settings.poll_workers, max_in_flight=settings.max_in_flight + suspect_slots)
        self.intervals = {DeviceClass.BMC: settings.bmc_interval_seconds,
                          DeviceClass.PDU: settings.pdu_interval_seconds,
                          DeviceClass.CDU: settings.cdu_interval_seconds}
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._snmp_slots = asyncio.Semaphore(settings.snmp_in_flight)
        self._suspect_slots = asyncio.Semaphore(suspect_slots)
        self._queue: asyncio.Queue[list[ReadingIn] | None] = asyncio.Queue()
        self._devices: dict[str, _Device] = {}
        self._writer: asyncio.Task | None = None
        self._refresher: asyncio.Task | None = None
        self._store_ok = True
        self._unsettled = 0  # new devices not polled yet

    @property
    def devices(self) -> dict[str, DeviceSpec]:
        return {key: device.spec for key, device in self._devices.items()}

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write(), name="telemetry-writer")
        self._refresher = asyncio.create_task(self._refresh_periodically(), name="telemetry-refresh")

    async def stop(self) -> None:
        """Stop polling, then write every reading taken so far."""
        if self._refresher:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        await self._remove(list(self._devices))
        if self._writer:
            self._queue.put_nowait(None)
            await self._writer
        await self.poller.close(STOP_SECONDS)

    async def rollup(self) -> int:
        # A reading may be stored this long after it was taken: its bucket must not be rolled up before.
        trail = max(self.intervals.values()) + self.settings.poll_timeout_seconds + self.settings.flush_seconds
        added = await blocking(rollup, self.inventory, utcnow() - timedelta(seconds=trail))
        log.debug("telemetry rolled up", rows=added)
        return added

    async def prune(self) -> tuple[int, int]:
        raw, rolled = await blocking(prune, self.inventory, utcnow(), self.settings.raw_days,
                                     self.settings.rollup_days)
        log.info("telemetry pruned", raw_readings=raw, rollups=rolled)
        return raw, rolled

    async def refresh(self) -> None:
        """Start polling new devices, stop polling removed ones, restart those whose spec changed."""
        specs = {spec.key: spec for spec in await blocking(load_devices, self.inventory, self.settings.sites)}
        await self._remove([key for key, device in self._devices.items() if specs.get(key) != device.spec])
        for key, spec in specs.items():
            if key not in self._devices:
                self._unsettled += 1
                self._devices[key] = _Device(self, spec)

    def settled(self) -> None:
        """A new device has been polled once: its connection, session and plan exist. Once every new device
        has, freeze the heap."""
        self._unsettled -= 1
        if self._unsettled == 0:
            freeze_heap()

    async def _refresh_periodically(self) -> None:
        while True:
            try:
                await self.refresh()
            except SQLAlchemyError:
                pass  # the database watch logs the outage; the devices already known go on being polled
            await asyncio.sleep(self.settings.refresh_seconds)

    async def _remove(self, keys: list[str]) -> None:
        devices = [self._devices.pop(key) for key in keys]
        self._unsettled -= sum(not device.polled for device in devices)
        await asyncio.gather(*(device.stop() for device in devices))

    async def reader(self, spec: DeviceSpec) -> Reader:
        timeout = self.settings.request_timeout_seconds
        if spec.protocol == DeviceProtocol.SNMP:
            return WorkerReader(self.poller, snmp_target(spec, self.store, timeout), DeviceKind.RACK_PDU)
        bmc_settings = self.access.settings
        default_port = bmc_settings.ipmi_port if spec.protocol == BmcProtocol.IPMI else bmc_settings.redfish_port
        where = bmc.BmcTarget(site=spec.site, address=spec.address, port=spec.port or default_port,
                              protocol=spec.protocol, credential_ref=spec.credential_ref,
                              pinned_sha256=spec.fingerprint)
        if spec.protocol == BmcProtocol.IPMI:
            return IpmiReader(IpmiDriver(where.address, where.port, self.access.credentials_for(where),
                                         timeout=timeout))
        scheme, pin, ca_bundle = bmc_settings.redfish_scheme, None, None
        if scheme == "https":
            if spec.device_class == DeviceClass.BMC:
                policy = self.access.tls_policy(where)  # a node's BMC: its pin, else the CA bundle, else refused
                pin, ca_bundle = policy.pinned_sha256, policy.ca_bundle
            else:
                ca_bundle = bmc_settings.ca_bundle  # PDUs and CDUs: the CA bundle, else the system CAs
        target = BmcTarget(spec.address, self.access.credentials_for(where), port=where.port, scheme=scheme,
                           ca_bundle=ca_bundle, fingerprint=pin, timeout=timeout)
        kind = {DeviceClass.BMC: DeviceKind.SERVER, DeviceClass.PDU: DeviceKind.RACK_PDU,
                DeviceClass.CDU: DeviceKind.CDU}[spec.device_class]
        return WorkerReader(self.poller, target, kind)

    def queue(self, readings: list[ReadingIn]) -> None:
        self._queue.put_nowait(readings)
        self.metrics.queued.inc(len(readings))

    async def _write(self) -> None:
        """Write readings every ``batch_size`` of them, or ``flush_seconds`` after the oldest arrived; at
        stop (a None in the queue), write what is left.

        Each wake-up takes everything queued: one turn of the event loop can finish hundreds of polls, and
        taking one poll's readings per turn let the queue grow without bound (measured in bench/: 800,000
        readings waiting after a minute of 10,000 BMCs)."""
        loop = asyncio.get_running_loop()
        batch: list[ReadingIn] = []
        flush_at = 0.0
        stopping = False
        while not stopping:
            try:
                first = await asyncio.wait_for(self._queue.get(), max(0.0, flush_at - loop.time()) if batch else None)
            except TimeoutError:
                first = []
            for item in [first, *self._drain()]:
                if item is None:
                    stopping = True
                    continue
                if not batch:
                    flush_at = loop.time() + self.settings.flush_seconds
                batch += item
            if batch and (stopping or len(batch) >= self.settings.batch_size or loop.time() >= flush_at):
                await self._store(batch)
                batch = []

    def _drain(self) -> list[list[ReadingIn] | None]:
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    async def _store(self, batch: list[ReadingIn]) -> None:
        if not batch:
            return
        self.metrics.queued.dec(len(batch))
        try:
            await blocking(store_readings, self.inventory, batch)
        except SQLAlchemyError as exc:
            self.metrics.dropped.inc(len(batch))
            if self._store_ok:
                log.error("telemetry readings not written", error=str(exc).splitlines()[0], readings=len(batch))
            self._store_ok = False
            return
        self.metrics.written.inc(len(batch))
        self.metrics.batches.inc()
        if not self._store_ok:
            log.info("telemetry readings written again")
        self._store_ok = True


def next_slot(key: str, interval: float, now: float) -> float:
    """The first time from ``now`` at the device's offset in the interval, which its key spreads uniformly
    over the interval (and keeps across refreshes). Every device due at the same moment had the daemon work
    off the whole fleet as one burst each interval: 10,000 BMCs every 10 s waited 12 s in the queue (p50)."""
    offset = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest()) / 2**64 * interval
    return now + (offset - now) % interval


class _DeviceSeries:
    """A device's poll metrics, looked up once: ``labels()`` takes a lock and builds a key, three times a poll
    (failures stay a lookup: rare, and a device that never failed has no failure series)."""

    def __init__(self, metrics: PollMetrics, spec: DeviceSpec) -> None:
        self.polls = metrics.polls.labels(spec.site, spec.name)
        self.up = metrics.up.labels(spec.site, spec.name)
        self.duration = metrics.duration.labels(spec.site, spec.device_class)


class _Device:
    """One device's timer: poll, then sleep until the next due time; failures logged once, recoveries once."""

    def __init__(self, loop: TelemetryLoop, spec: DeviceSpec) -> None:
        self.loop = loop
        self.spec = spec
        self.interval = loop.intervals[spec.device_class]
        self.log = log.bind(device=spec.name, bmc=f"{spec.address}:{spec.port}" if spec.port else spec.address,
                            **dict(spec.labels))
        self.reader: Reader | None = None
        self.failures = 0
        self.bmc_state = spec.bmc_state
        self.polled = False
        self.series: _DeviceSeries | None = None
        self.task = asyncio.create_task(self._run(), name=f"telemetry {spec.name}")

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self._close_reader()
        self.loop.metrics.forget(self.spec)

    async def _run(self) -> None:
        clock = asyncio.get_running_loop()
        await self.poll()  # at once: a device new to the loop (every device when the daemon starts)
        self.polled = True
        self.loop.settled()
        due = next_slot(self.spec.key, self.interval, clock.time())
        while True:
            jitter = random.uniform(0, self.loop.settings.jitter * self.interval)
            await asyncio.sleep(max(0.0, due - clock.time()) + jitter)
            await self.poll()
            due = max(due + self.interval, clock.time())  # runs missed during a long poll collapse into one

    async def poll(self) -> None:
        settings, metrics = self.loop.settings, self.loop.metrics
        async with self._slots():
            started = time.monotonic()
            try:
                async with asyncio.timeout(settings.poll_timeout_seconds):
                    if self.reader is None:
                        self.reader = await self.loop.reader(self.spec)
                    readings = await self.reader.read()
            except TimeoutError:
                error: Exception | None = Timeout(self.spec.name, f"poll not done within "
                                                                  f"{settings.poll_timeout_seconds:g}s")
            except Exception as exc:  # driver errors are typed; anything else is logged with its traceback
                error = exc
            else:
                error = None
        if self.series is None:  # at the first poll: a device not polled yet has no series, not up=0
            self.series = _DeviceSeries(metrics, self.spec)
        self.series.polls.inc()
        self.series.duration.observe(time.monotonic() - started)
        self.series.up.set(error is None)
        if error is None:
            self.loop.queue(relabel(self.spec, readings, utcnow()))
            await self._succeeded()
        else:
            metrics.failures.labels(self.spec.site, self.spec.name).inc()
            await self._failed(error)

    def _slots(self) -> asyncio.Semaphore:
        if self.failures:
            return self.loop._suspect_slots  # waiting out a deadline costs no CPU, whatever the protocol
        return self.loop._snmp_slots if self.spec.protocol == DeviceProtocol.SNMP else self.loop._slots

    async def _succeeded(self) -> None:
        if self.failures:
            self.log.info("telemetry device recovered", failed_polls=self.failures)
        self.failures = 0
        await self._set_bmc_state(BmcState.OK, "answering telemetry polls again")

    async def _failed(self, error: Exception) -> None:
        self.failures += 1
        if self.failures == 1:
            self.log.warning("telemetry device failing", error=str(error), kind=type(error).__name__,
                             exc_info=None if isinstance(error, DriverError | CredentialError) else error)
        if isinstance(error, AuthFailed | CredentialError):
            await self._close_reader()  # the credentials may be rotated: read them again next time
        if self.failures >= self.loop.settings.failures_before_unreachable:
            state = next((s for kind, s in ERROR_STATES if isinstance(error, kind)), None)
            if state is not None:
                await self._set_bmc_state(state, f"{self.failures} telemetry polls failed: {error}")

    async def _set_bmc_state(self, state: BmcState, message: str) -> None:
        if self.spec.node_ref is None or self.bmc_state == state:
            return
        try:
            await blocking(set_bmc_state, self.loop.inventory, self.spec.node_ref, state, message, "daemon")
        except (SQLAlchemyError, InventoryError):
            return  # the database is down (the database watch logs it) or the node went: a later poll retries
        self.bmc_state = state

    async def _close_reader(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            await reader.close()

"""PDU outlets: their state and meters, and switching them: read → act only if different → confirm within a
deadline (drivers try once; we verify). An outlet that acknowledges a switch but keeps its state is a failed
action. Every action is an Event naming who asked and which node and PSU the outlet feeds.

A PDU is named ``NAME`` (unique across sites) or ``SITE/NAME``. SNMP PDUs use the SNMP credentials the
telemetry loop reads (``daemon.telemetry.snmp_target``). Redfish PDUs use the BMC credential names and
``bmc`` settings (scheme, port, ``ca_bundle``, else the CAs requests trusts); their outlets are numbered as
the inventory numbers them (an inventory outlet named as the Redfish outlet's Id), else in the order the
service lists them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Protocol

import requests

import structlog
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from sqlmodel import col, select

from daemon.actions import Actor
from daemon.bmc import TRANSIENT, BmcAccess, BmcTarget, NotTrusted
from daemon.credentials import CredentialError, CredentialStore
from daemon.executor import blocking
from daemon.telemetry import DeviceClass, DeviceSpec, snmp_target
from drivers.base import ActionNotConfirmed, DriverError, OutletAction, OutletReading, OutletState, Unsupported
from drivers.redfish import RedfishDriver, TlsPolicy
from drivers.snmp import SnmpPdu, SnmpTarget, build_mib_view
from inventory.errors import Ambiguous, Invalid, NotFound
from inventory.model import DeviceProtocol, Node, Pdu, PduOutlet, Site
from inventory.service import Inventory, _node_label

log = structlog.get_logger("baie.outlets")

# The states an action takes the outlet through, in order. Cycling an outlet that is not on switches it on.
STEPS: dict[OutletAction, tuple[OutletState, ...]] = {
    OutletAction.ON: (OutletState.ON,),
    OutletAction.OFF: (OutletState.OFF,),
    OutletAction.CYCLE: (OutletState.OFF, OutletState.ON),
}
COMMAND = {OutletState.ON: OutletAction.ON, OutletState.OFF: OutletAction.OFF}
CONFIRM_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class PduRecord:
    site: str
    pdu: Pdu
    feeds: dict[int, tuple[str | None, str | None]]  # outlet index → (node label, PSU) from the inventory
    indexes: dict[str, int]  # outlet name → index, where the inventory names the outlet

    @property
    def label(self) -> str:
        return f"{self.site}/{self.pdu.name}"


@dataclass
class OutletStatus:
    pdu: str
    outlet: int
    name: str | None
    state: str | None  # None: the PDU does not report it
    current_amps: float | None
    power_watts: float | None
    energy_kwh: float | None
    node: str | None
    psu: str | None


@dataclass
class OutletResult:
    pdu: str
    outlet: int
    action: str
    before: str | None
    after: str | None
    changed: bool
    node: str | None
    psu: str | None


def pdu_record(inventory: Inventory, ref: str) -> PduRecord:
    """A PDU by ``NAME`` or ``SITE/NAME``, with what each of its outlets feeds."""
    site, name = ref.split("/", 1) if "/" in ref else (None, ref)
    with inventory.session() as s:
        query = select(Pdu, Site.name).join(Site, col(Pdu.site_id) == Site.id).where(Pdu.name == name)
        if site:
            query = query.where(Site.name == site)
        rows = s.exec(query).all()
        if not rows:
            raise NotFound("PDU", ref)
        if len(rows) > 1:
            raise Ambiguous("PDU", ref, sorted(f"{site_name}/{pdu.name}" for pdu, site_name in rows))
        pdu, site_name = rows[0]
        outlets = s.exec(select(PduOutlet.index, PduOutlet.name, PduOutlet.psu, Node)
                         .outerjoin(Node, col(PduOutlet.node_id) == Node.id).where(PduOutlet.pdu_id == pdu.id)).all()
        return PduRecord(site_name, pdu, {index: (node and _node_label(node), psu) for index, _, psu, node in outlets},
                         {name: index for index, name, _, _ in outlets if name})


class OutletDriver(Protocol):
    async def read_outlets(self) -> list[OutletReading]: ...

    async def request_outlet(self, index: int, action: OutletAction) -> None: ...


class RedfishOutlets:
    """A Redfish PDU's outlets by number (see the module docstring); the blocking driver on the thread pool."""

    def __init__(self, driver: RedfishDriver, indexes: dict[str, int]) -> None:
        self.driver = driver
        self.indexes = indexes
        self._names: dict[int, str] = {}

    async def read_outlets(self) -> list[OutletReading]:
        readings = await blocking(self.driver.read_outlets)
        taken = set(self.indexes.values())
        numbered = [dataclasses.replace(r, index=self.indexes[r.name]) if r.name in self.indexes else r
                    for r in readings if r.name in self.indexes or r.index not in taken]
        self._names = {r.index: r.name for r in numbered}
        return numbered

    async def request_outlet(self, index: int, action: OutletAction) -> None:
        if index not in self._names:
            await self.read_outlets()
        await blocking(self.driver.request_outlet, self._names[index], OutletState(action))


class OutletService:
    def __init__(self, inventory: Inventory, access: BmcAccess, store: CredentialStore, *, timeout: float,
                 confirm_seconds: float) -> None:
        self.inventory = inventory
        self.access = access
        self.store = store
        self.timeout = timeout
        self.confirm_seconds = confirm_seconds

    @asynccontextmanager
    async def _open(self, ref: str) -> AsyncIterator[tuple[PduRecord, OutletDriver]]:
        record = await blocking(pdu_record, self.inventory, ref)
        if not record.pdu.address:
            raise Invalid("pdu", f"{record.label} has no address on record")
        async with AsyncExitStack() as stack:
            if record.pdu.protocol == DeviceProtocol.SNMP:
                await blocking(build_mib_view)  # once per process, ~5 s of CPU: not on the loop
                driver: OutletDriver = stack.enter_context(contextlib.closing(SnmpPdu(self._snmp_target(record))))
            elif record.pdu.protocol == DeviceProtocol.REDFISH:
                redfish = self._redfish_driver(record)
                stack.push_async_callback(blocking, redfish.close)
                driver = RedfishOutlets(redfish, record.indexes)
            else:
                raise Unsupported(record.label, f"outlets of a {record.pdu.protocol} PDU cannot be switched")
            yield record, driver

    def _snmp_target(self, record: PduRecord) -> SnmpTarget:
        pdu = record.pdu
        spec = DeviceSpec(key=f"pdu#{pdu.id}", name=f"pdu/{record.label}", device_class=DeviceClass.PDU,
                          protocol=pdu.protocol, address=pdu.address, port=pdu.port, site=record.site, labels=(),
                          credential_ref=pdu.credential_ref, waiver=pdu.insecure_community_waiver)
        try:
            return snmp_target(spec, self.store, self.timeout)
        except CredentialError as exc:
            raise NotTrusted("", str(exc)) from None

    def _redfish_driver(self, record: PduRecord) -> RedfishDriver:
        settings, pdu = self.access.settings, record.pdu
        target = BmcTarget(site=record.site, address=pdu.address, port=pdu.port or settings.redfish_port,
                           protocol=pdu.protocol, credential_ref=pdu.credential_ref)
        if settings.redfish_scheme == "http":
            tls = TlsPolicy(insecure_http=True)
        else:
            tls = TlsPolicy(ca_bundle=settings.ca_bundle or Path(requests.certs.where()))
        return RedfishDriver(target.address, target.port, self.access.credentials_for(target), tls,
                             scheme=settings.redfish_scheme, timeout=self.timeout)

    async def outlets(self, ref: str) -> list[OutletStatus]:
        async with self._open(ref) as (record, pdu):
            return [self._status(record, reading) for reading in await pdu.read_outlets()]

    async def outlet(self, ref: str, index: int) -> OutletStatus:
        async with self._open(ref) as (record, pdu):
            return self._status(record, await self._reading(record, pdu, index))

    async def act(self, ref: str, index: int, action: OutletAction, actor: str) -> OutletResult:
        async with self._open(ref) as (record, pdu):
            node, psu = record.feeds.get(index, (None, None))
            result = OutletResult(record.label, index, str(action), None, None, False, node, psu)
            try:
                before = result.before = result.after = (await self._reading(record, pdu, index)).state
                steps = STEPS[action] if before == OutletState.ON else STEPS[action][-1:]
                if action != OutletAction.CYCLE and before == steps[-1]:
                    await self._event("outlet.action", record, f"outlet {index} {action} requested: already "
                                      f"{before}{_feeding(node, psu)}", actor, result)
                    return result
                for wanted in steps:
                    await pdu.request_outlet(index, COMMAND[wanted])
                    await self._confirm(record, pdu, index, wanted)
            except DriverError as exc:
                await self._event("outlet.failed", record, f"outlet {index} {action} failed: {exc}", actor,
                                  result, error=type(exc).__name__)
                raise
        result.after, result.changed = steps[-1], True
        await self._event("outlet.action", record, f"outlet {index} {action}: {before} -> {result.after}"
                          + _feeding(node, psu), actor, result)
        log.info("outlet.action", pdu=record.label, outlet=index, action=str(action), actor=actor)
        return result

    async def _reading(self, record: PduRecord, pdu: OutletDriver, index: int) -> OutletReading:
        reading = next((o for o in await pdu.read_outlets() if o.index == index), None)
        if reading is None:
            raise NotFound("outlet", f"{record.label}/{index}")
        return reading

    async def _confirm(self, record: PduRecord, pdu: OutletDriver, index: int, wanted: OutletState) -> None:
        deadline = time.monotonic() + self.confirm_seconds
        state = None
        while True:
            try:
                state = (await self._reading(record, pdu, index)).state
            except TRANSIENT:
                state = None  # a PDU busy switching may miss a read
            if state == wanted:
                return
            if time.monotonic() >= deadline:
                raise ActionNotConfirmed(record.label, f"outlet {index} acknowledged switching {wanted} but is "
                                         f"still {state or 'unknown'} after {self.confirm_seconds:g}s")
            await asyncio.sleep(CONFIRM_POLL_SECONDS)

    async def _event(self, kind: str, record: PduRecord, message: str, actor: str, result: OutletResult,
                     **extra: str) -> None:
        await blocking(self.inventory.record_event, kind, f"pdu/{record.label}", message, actor,
                       dataclasses.asdict(result) | extra)

    @staticmethod
    def _status(record: PduRecord, reading: OutletReading) -> OutletStatus:
        node, psu = record.feeds.get(reading.index, (None, None))
        return OutletStatus(record.label, reading.index, reading.name, reading.state and str(reading.state),
                            reading.current_amps, reading.power_watts, reading.energy_kwh, node, psu)


def _feeding(node: str | None, psu: str | None) -> str:
    return f" (feeds {node}{f' {psu}' if psu else ''})" if node else ""


# ------------------------------------------------------------------------------------------------ API
router = APIRouter(prefix="/api/v1")


def _outlets(request: Request) -> OutletService:
    return request.app.state.outlets


Outlets = Annotated[OutletService, Depends(_outlets)]


class OutletRequest(BaseModel):
    action: OutletAction


@router.get("/pdus/{pdu:path}/outlets", summary="A PDU's outlets (NAME or SITE/NAME) as the PDU reports them")
async def outlet_list(pdu: str, service: Outlets) -> list[OutletStatus]:
    return await service.outlets(pdu)


@router.get("/pdus/{pdu:path}/outlets/{index}")
async def outlet_status(pdu: str, index: int, service: Outlets) -> OutletStatus:
    return await service.outlet(pdu, index)


@router.post("/pdus/{pdu:path}/outlets/{index}", summary="Switch an outlet on, off or cycle it; confirmed")
async def outlet_action(pdu: str, index: int, body: OutletRequest, service: Outlets, actor: Actor) -> OutletResult:
    return await service.act(pdu, index, body.action, actor)

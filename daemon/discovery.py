"""Discovery: sweep a site's ranges for BMCs, then enrol what answers.

A sweep probes every address concurrently (bounded, each probe with a deadline): Redfish by an
unauthenticated GET of the service root, IPMI by an RMCP presence ping. Enrolment reads each found BMC's
inventory with the daemon's credentials and creates or updates its Node; a BMC that refuses the
credentials or presents an unexpected certificate is kept on record with that state and an event.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import select

from daemon.bmc import BmcAccess, BmcTarget, NotTrusted
from daemon.config import DiscoverySettings
from daemon.executor import blocking
from drivers.base import AuthFailed, DriverError, ProbeResult, SystemInventory, TlsMismatch
from drivers.ipmi import probe_ipmi
from drivers.redfish import probe_redfish
from inventory import model
from inventory.enrolment import Observed, enrol, record_bmc_problem
from inventory.errors import Invalid, InventoryError
from inventory.model import BmcProtocol, BmcState
from inventory.service import Inventory

log = structlog.get_logger("baie.discovery")
MAX_SWEEP_ADDRESSES = 65536  # a /16; larger ranges are almost certainly a typo

Progress = Callable[[int, int], None]


@dataclass
class DiscoverySummary:
    site: str
    addresses: int = 0
    found: int = 0
    enrolled: int = 0
    updated: int = 0
    refused: int = 0
    failed: int = 0
    by_protocol: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def addresses(cidrs: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise Invalid("range", f"{cidr!r} is not a CIDR: {exc}") from None
        if network.num_addresses > MAX_SWEEP_ADDRESSES:
            raise Invalid("range", f"{cidr} has {network.num_addresses} addresses; sweep at most a /16")
        hosts = [network.network_address] if network.num_addresses == 1 else network.hosts()
        seen.update((str(a), None) for a in hosts)
    return list(seen)


def site_ranges(inventory: Inventory, site: str) -> list[tuple[str, list[str]]]:
    """The site's discovery ranges as (cidr, protocols)."""
    with inventory.session() as s:
        site_row = inventory.site_by_name(s, site)
        rows = s.exec(select(model.DiscoveryRange).where(model.DiscoveryRange.site_id == site_row.id)).all()
        return [(r.cidr, [p.strip() for p in r.protocols.split(",") if p.strip()]) for r in rows]


def observed_from(inv: SystemInventory, probe: ProbeResult, pinned: str | None) -> Observed:
    """Map a driver's SystemInventory into the model's terms."""
    return Observed(
        bmc_address=probe.address, bmc_port=probe.port, bmc_protocol=probe.protocol, serial=inv.serial,
        uuid=inv.uuid, manufacturer=inv.manufacturer, model=inv.model, bios_version=inv.bios_version,
        bmc_firmware=inv.bmc_firmware, power_state=str(inv.power_state) if inv.power_state else None,
        tls_fingerprint=pinned,
        processors=[model.Processor(node_id=0, socket=p.socket, model=p.model, manufacturer=p.manufacturer,
                                    cores=p.cores, threads=p.threads) for p in inv.processors],
        memory=[model.MemoryModule(node_id=0, slot=m.slot, size_mib=m.size_mib, part_number=m.part_number,
                                   serial=m.serial, manufacturer=m.manufacturer, speed_mhz=m.speed_mhz)
                for m in inv.memory],
        drives=[model.Drive(node_id=0, name=d.name, model=d.model, serial=d.serial,
                            capacity_bytes=d.capacity_bytes, media_type=d.media_type) for d in inv.drives],
        nics=[model.NetworkInterface(node_id=0, name=n.name, mac=n.mac, speed_mbps=n.speed_mbps)
              for n in inv.nics],
    )


class Discovery:
    def __init__(self, inventory: Inventory, access: BmcAccess, settings: DiscoverySettings) -> None:
        self.inventory = inventory
        self.access = access
        self.settings = settings
        self.bmc = access.settings

    async def probe(self, address: str, protocols: list[str]) -> list[ProbeResult]:
        """Every protocol at once: an address where nothing answers costs one timeout, not one per protocol.
        A Redfish BMC usually speaks IPMI too: one node, found by Redfish."""
        timeout = self.settings.probe_timeout_seconds
        probes = {}
        if BmcProtocol.REDFISH in protocols:
            probes[BmcProtocol.REDFISH] = probe_redfish(address, self.bmc.redfish_port, timeout=timeout,
                                                        scheme=self.bmc.redfish_scheme)
        if BmcProtocol.IPMI in protocols:
            probes[BmcProtocol.IPMI] = probe_ipmi(address, self.bmc.ipmi_port, timeout=timeout)
        hits = dict(zip(probes, await asyncio.gather(*probes.values())))
        hit = hits.get(BmcProtocol.REDFISH) or hits.get(BmcProtocol.IPMI)
        return [hit] if hit else []

    async def sweep(self, targets: list[tuple[str, list[str]]], progress: Progress | None = None) -> list[ProbeResult]:
        gate = asyncio.Semaphore(self.settings.concurrency)
        done = 0

        async def one(address: str, protocols: list[str]) -> list[ProbeResult]:
            nonlocal done
            async with gate:
                hits = await self.probe(address, protocols)
            done += 1
            if progress:
                progress(done, len(targets))
            return hits

        results = await asyncio.gather(*(one(a, p) for a, p in targets))
        return [hit for hits in results for hit in hits]

    async def discover(self, site: str, cidr: str | None = None, actor: str = "daemon",
                       progress: Progress | None = None) -> DiscoverySummary:
        ranges = await blocking(site_ranges, self.inventory, site)  # also checks that the site exists
        if cidr:
            ranges = [(cidr, [p.value for p in BmcProtocol])]
        targets: dict[str, list[str]] = {}
        for network, protocols in ranges:
            for address in addresses([network]):
                targets.setdefault(address, [])
                targets[address] += [p for p in protocols if p not in targets[address]]
        summary = DiscoverySummary(site=site, addresses=len(targets))
        hits = await self.sweep(list(targets.items()), progress)
        summary.found = len(hits)
        summary.by_protocol = dict(Counter(h.protocol for h in hits))
        gate = asyncio.Semaphore(self.settings.enrol_concurrency)

        async def enrol_one(hit: ProbeResult) -> None:
            async with gate:
                await self.enrol_probe(site, hit, actor, summary)

        await asyncio.gather(*(enrol_one(h) for h in hits))
        log.info("discovery.done", site=site, addresses=summary.addresses, found=summary.found,
                 enrolled=summary.enrolled, updated=summary.updated, refused=summary.refused,
                 failed=summary.failed)
        return summary

    async def discover_all(self) -> None:
        """The scheduled sweep: every site that has discovery ranges, one after the other."""
        for site in await blocking(self.inventory.sites):
            if await blocking(site_ranges, self.inventory, site.name):
                try:
                    await self.discover(site.name)
                except InventoryError as exc:  # e.g. a range edited into something invalid
                    log.error("discovery.site_failed", site=site.name, reason=str(exc))

    async def _pin_for(self, site: str, hit: ProbeResult) -> str | None:
        """The fingerprint to trust at this address: the one on record, else (TOFU, if enabled) the one seen."""
        if hit.protocol != BmcProtocol.REDFISH or self.bmc.redfish_scheme == "http":
            return None
        recorded = await blocking(self._recorded_pin, site, hit.address)
        if recorded:
            return recorded
        if self.bmc.ca_bundle is None and self.bmc.trust_on_first_use:
            return hit.certificate_sha256
        return None

    def _recorded_pin(self, site: str, address: str) -> str | None:
        with self.inventory.session() as s:
            site_row = self.inventory.site_by_name(s, site)
            node = s.exec(select(model.Node).where(model.Node.site_id == site_row.id,
                                                   model.Node.bmc_address == address)).first()
            return node.bmc_tls_fingerprint if node else None

    async def enrol_probe(self, site: str, hit: ProbeResult, actor: str, summary: DiscoverySummary) -> None:
        pinned = await self._pin_for(site, hit)
        target = BmcTarget(site=site, address=hit.address, port=hit.port, protocol=hit.protocol,
                           pinned_sha256=pinned)
        bound = log.bind(site=site, bmc=target.label, protocol=hit.protocol)
        try:
            inv = await self.access.call(target, lambda d: d.read_inventory())
            result = await blocking(enrol, self.inventory, site, observed_from(inv, hit, pinned), actor)
        except AuthFailed as exc:
            summary.refused += 1
            await blocking(record_bmc_problem, self.inventory, site, hit.address, hit.port, hit.protocol,
                            BmcState.AUTH_FAILED, f"credentials refused: {exc.message}", actor)
            bound.warning("discovery.auth_failed")
            return
        except TlsMismatch as exc:
            summary.refused += 1
            await blocking(record_bmc_problem, self.inventory, site, hit.address, hit.port, hit.protocol,
                            BmcState.TLS_MISMATCH, str(exc), actor, fingerprint=exc.seen_fingerprint)
            bound.warning("discovery.tls_mismatch", seen=exc.seen_fingerprint)
            return
        except (DriverError, InventoryError, SQLAlchemyError) as exc:
            summary.failed += 1
            summary.problems.append(f"{target.label}: {exc}")
            bound.warning("discovery.enrol_failed", error=type(exc).__name__, reason=str(exc))
            return
        if result.created:
            summary.enrolled += 1
        else:
            summary.updated += 1
        bound.info("discovery.enrolled", node=result.node, created=result.created, drift=len(result.drift))


__all__ = ["Discovery", "DiscoverySummary", "NotTrusted", "addresses"]

"""Talking to a node's BMC: which driver, which credentials, which trust; and power/boot actions that are
read, acted on only if different, and confirmed within a deadline (drivers try once; we verify).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from daemon.config import BmcSettings
from daemon.credentials import CredentialStore
from daemon.executor import blocking, ipmi_blocking
from drivers.base import (
    ActionNotConfirmed,
    AuthFailed,
    BmcUnreachable,
    BootDevice,
    BootMode,
    Credentials,
    DriverError,
    PowerAction,
    PowerState,
    Timeout,
    TlsMismatch,
)
from drivers.ipmi import IpmiDriver
from drivers.redfish import RedfishDriver, TlsPolicy
from inventory.enrolment import set_bmc_state
from inventory.model import BmcProtocol, BmcState
from inventory.service import Inventory

log = structlog.get_logger("baie.bmc")
T = TypeVar("T")

# The state a power action leaves the node in; None: cycle ends where it started (on).
POWER_TARGET: dict[PowerAction, PowerState] = {
    PowerAction.ON: PowerState.ON,
    PowerAction.OFF: PowerState.OFF,
    PowerAction.SOFT_OFF: PowerState.OFF,
    PowerAction.CYCLE: PowerState.ON,
}
# Driver errors that say something about the BMC's own state, recorded on the node.
ERROR_STATES: tuple[tuple[type[DriverError], BmcState], ...] = (
    (TlsMismatch, BmcState.TLS_MISMATCH),
    (AuthFailed, BmcState.AUTH_FAILED),
    (BmcUnreachable, BmcState.UNREACHABLE),
    (Timeout, BmcState.UNREACHABLE),
)
TRANSIENT = (BmcUnreachable, Timeout)
REQUEST_ATTEMPTS = 3


class NotTrusted(DriverError):
    """An HTTPS BMC with neither a pinned certificate nor a CA bundle to verify it: we do not connect."""


@dataclass(frozen=True)
class BmcTarget:
    """Where and how to reach one BMC; built from a node or a discovery probe."""

    site: str | None
    address: str
    port: int
    protocol: str
    credential_ref: str | None = None
    pinned_sha256: str | None = None

    @property
    def label(self) -> str:
        return f"{self.address}:{self.port}"


def credential_names(site: str | None, override: str | None) -> list[str]:
    """Per-BMC override, then the site's default, then the global default."""
    names = [override] if override else []
    if site:
        names.append(f"bmc-{site}")
    names.append("bmc-default")
    return names


class BmcAccess:
    """Builds drivers for BMC targets and runs their blocking calls on a bounded pool of threads."""

    def __init__(self, settings: BmcSettings, credentials: CredentialStore) -> None:
        self.settings = settings
        self._credentials = credentials

    def credentials_for(self, target: BmcTarget) -> Credentials:
        for name in credential_names(target.site, target.credential_ref):
            if self._credentials.has(name):
                return self._credentials.credentials(name)
        raise NotTrusted(target.label, "no credentials: provide one of "
                         + ", ".join(credential_names(target.site, target.credential_ref)))

    def tls_policy(self, target: BmcTarget) -> TlsPolicy:
        if self.settings.redfish_scheme == "http":
            return TlsPolicy(insecure_http=True)
        if target.pinned_sha256:
            return TlsPolicy(pinned_sha256=target.pinned_sha256)
        if self.settings.ca_bundle:
            return TlsPolicy(ca_bundle=self.settings.ca_bundle)
        raise NotTrusted(target.label, "certificate not trusted: no pinned fingerprint and no CA bundle "
                         "(run `baie bmc trust NODE`, or set bmc.ca_bundle)")

    def driver(self, target: BmcTarget) -> RedfishDriver | IpmiDriver:
        credentials = self.credentials_for(target)
        if target.protocol == BmcProtocol.REDFISH:
            return RedfishDriver(target.address, target.port, credentials, self.tls_policy(target),
                                 scheme=self.settings.redfish_scheme, timeout=self.settings.timeout_seconds)
        if target.protocol == BmcProtocol.IPMI:
            return IpmiDriver(target.address, target.port, credentials, timeout=self.settings.timeout_seconds)
        raise NotTrusted(target.label, f"unknown BMC protocol {target.protocol!r}")

    @asynccontextmanager
    async def open(self, target: BmcTarget) -> AsyncIterator[BmcSession]:
        """One driver (one BMC session) for a sequence of calls; always closed (logged out) at the end."""
        bmc = BmcSession(self.driver(target))
        try:
            yield bmc
        finally:
            await bmc.run(lambda driver: driver.close())

    async def call(self, target: BmcTarget, fn: Callable[[Any], T]) -> T:
        async with self.open(target) as bmc:
            return await bmc.run(fn)


class BmcSession:
    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def run(self, fn: Callable[[Any], T]) -> T:
        """``fn(driver)`` on the bounded thread pool (an IPMI driver's on the IPMI pool)."""
        hop = ipmi_blocking if isinstance(self.driver, IpmiDriver) else blocking
        return await hop(fn, self.driver)


def node_target(node: Any) -> BmcTarget:
    """A BmcTarget from a NodeDetail view."""
    if not node.bmc_address or not node.bmc_protocol:
        raise NotTrusted(node.label, "the node has no BMC address on record")
    return BmcTarget(site=node.site, address=node.bmc_address, port=node.bmc_port or 0,
                     protocol=node.bmc_protocol, credential_ref=node.credential_ref,
                     pinned_sha256=node.bmc_tls_fingerprint)


@dataclass
class PowerResult:
    node: str
    action: str
    before: str
    after: str
    changed: bool


class PowerService:
    """Power and boot actions on nodes: read → act if different → confirm; each is an Event with who asked."""

    def __init__(self, inventory: Inventory, access: BmcAccess) -> None:
        self.inventory = inventory
        self.access = access

    async def _node(self, ref: str):
        return await blocking(self.inventory.node, ref)

    async def _event(self, kind: str, node: Any, message: str, actor: str, details: dict) -> None:
        await blocking(self.inventory.record_event, kind, f"node/{node.label}", message, actor, details)

    async def _note_bmc_error(self, node: Any, exc: DriverError) -> None:
        for error_type, state in ERROR_STATES:
            if isinstance(exc, error_type):
                await blocking(set_bmc_state, self.inventory, node.label, state, str(exc), "daemon")
                return

    async def status(self, ref: str) -> PowerState:
        node = await self._node(ref)
        return await self.access.call(node_target(node), lambda d: d.get_power_state())

    async def power(self, ref: str, action: PowerAction, actor: str) -> PowerResult:
        node = await self._node(ref)
        wanted = POWER_TARGET[action]
        try:
            async with self.access.open(node_target(node)) as bmc:
                before = await bmc.run(lambda d: d.get_power_state())
                if action != PowerAction.CYCLE and before == wanted:
                    result = PowerResult(node.label, str(action), str(before), str(before), changed=False)
                    await self._event("power.action", node, f"power {action} requested: already {before}",
                                      actor, vars(result))
                    return result
                if action == PowerAction.CYCLE and before != PowerState.ON:
                    action = PowerAction.ON  # cycling a node that is off means switching it on
                await self._request(bmc, lambda d: d.request_power(action))
                after = await self._confirm(bmc, wanted, f"power {action}")
        except DriverError as exc:
            await self._note_bmc_error(node, exc)
            await self._event("power.failed", node, f"power {action} failed: {exc}", actor,
                              {"action": str(action), "error": type(exc).__name__})
            raise
        result = PowerResult(node.label, str(action), str(before), str(after), changed=True)
        await self._event("power.action", node, f"power {action}: {before} -> {after}", actor, vars(result))
        log.info("power.action", node=node.label, action=str(action), before=str(before), after=str(after),
                 actor=actor)
        return result

    async def boot_once(self, ref: str, device: BootDevice, mode: BootMode | None, actor: str) -> None:
        node = await self._node(ref)
        try:
            async with self.access.open(node_target(node)) as bmc:
                await self._request(bmc, lambda d: d.set_boot_once(device, mode))
        except DriverError as exc:
            await self._note_bmc_error(node, exc)
            await self._event("boot.failed", node, f"one-time boot to {device} failed: {exc}", actor,
                              {"device": str(device), "error": type(exc).__name__})
            raise
        await self._event("boot.override", node, f"next boot once from {device}"
                          + (f" ({mode})" if mode else ""), actor,
                          {"device": str(device), "mode": str(mode) if mode else None, "once": True})

    @staticmethod
    async def _request(bmc: BmcSession, fn: Callable[[Any], Any]) -> None:
        """Send an action, retrying only transport failures (the BMC may not have seen it)."""
        for attempt in range(1, REQUEST_ATTEMPTS + 1):
            try:
                await bmc.run(fn)
                return
            except TRANSIENT:
                if attempt == REQUEST_ATTEMPTS:
                    raise
                await asyncio.sleep(0.5 * 2 ** attempt)  # backoff before a retry

    async def _confirm(self, bmc: BmcSession, wanted: PowerState, what: str) -> PowerState:
        deadline = time.monotonic() + self.access.settings.power_confirm_seconds
        state = None
        while time.monotonic() < deadline:
            try:
                state = await bmc.run(lambda d: d.get_power_state())
            except TRANSIENT:
                state = None  # a BMC busy applying a reset may not answer for a moment
            if state == wanted:
                return state
            await asyncio.sleep(1.0)  # poll interval while the BMC applies the action
        raise ActionNotConfirmed(bmc.driver.target, f"{what} acknowledged but the node is still {state or 'unknown'} "
                                 f"after {self.access.settings.power_confirm_seconds:.0f}s")

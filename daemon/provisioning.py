"""Provisioning: PXE-install a node as a KVM hypervisor and join it to the pool; release it (drain, erase).

    provision   available → booting: rack power headroom checked (refused before power-on), one-time PXE
                boot, power cycle → installing: the node fetched its iPXE script → verifying: the installer
                called back with the host's SSH key → SSH with exactly that key: /dev/kvm, libvirtd,
                CPU flags, disks, NICs → deployed → pool join → in_pool
    release     in_pool → draining (drain command) → cleaning (erase each disk, verify) → available

The daemon locks each node it works on (inventory.lifecycle); a step that fails or outlasts its timeout
sends the node to that state's *_failed with the reason. Parallelism is bounded (provisioning.parallel,
and the request's own bound); one node's failure never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from daemon.actions import Actor
from daemon.bmc import PowerService
from daemon.config import ProfileSettings, ProvisioningSettings
from daemon.credentials import CredentialStore
from daemon.executor import blocking
from drivers.base import BootDevice, DriverError, PowerAction
from drivers.base import Timeout as DriverTimeout
from drivers.ssh import HostUnreachable, SshHost, connect
from inventory import lifecycle
from inventory.errors import Conflict, Invalid
from inventory.lifecycle import TransitionView
from inventory.model import NodeState
from inventory.service import Inventory
from inventory.telemetry import rack_power
from inventory.views import NodeDetail

S = NodeState
log = structlog.get_logger("baie.provisioning")

HEARTBEAT_SECONDS = 10.0  # the sweep: heartbeat, stale locks of dead daemons, timeouts
LIVE_WITHIN = timedelta(seconds=3 * HEARTBEAT_SECONDS)
POLL_SECONDS = 1.0  # while waiting for the node's iPXE request and the installer's callback
SSH_RETRY_SECONDS = 5.0  # while the installed host reboots
VIRSH = "virsh --connect qemu:///system"
CHECKS = {  # what the verification runs on the host; parsed by the functions below
    "kvm": "stat --format=%F /dev/kvm",
    "libvirtd": "systemctl is-active libvirtd",
    "cpu": "grep -m1 '^flags' /proc/cpuinfo",
    "disks": "lsblk --json --bytes --nodeps --output NAME,SIZE,TYPE,SERIAL",
    "nics": "ip -json link show",
}
VIRTUALISATION_FLAGS = {"vmx", "svm"}  # Intel VT-x, AMD-V


class StepFailed(Exception):
    """A step of the flow failed; the message is the reason recorded with the *_failed transition."""


# ------------------------------------------------------------------------------ reading the host
def problems_kvm(out: str) -> list[str]:
    return [] if out.strip() == "character special file" else ["/dev/kvm is missing (virtualisation off in the BIOS?)"]


def problems_libvirtd(out: str) -> list[str]:
    return [] if out.strip() == "active" else [f"libvirtd is {out.strip() or 'not running'}"]


def problems_cpu(out: str) -> list[str]:
    flags = set(out.partition(":")[2].split())
    return [] if flags & VIRTUALISATION_FLAGS else ["the CPU reports neither vmx nor svm"]


def host_disks(out: str) -> list[dict[str, Any]]:
    try:
        devices = json.loads(out)["blockdevices"]
    except (ValueError, KeyError, TypeError):
        raise StepFailed("lsblk: unreadable output") from None
    return [d for d in devices if d.get("type") == "disk"]


def host_macs(out: str) -> set[str]:
    try:
        return {link["address"].lower() for link in json.loads(out) if link.get("link_type") == "ether"}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StepFailed("ip link: unreadable output") from None


def hardware_problems(node: NodeDetail, profile: ProfileSettings, disks_out: str, nics_out: str) -> list[str]:
    """The disks and NICs the inventory (and the profile) expect, against what the host sees."""
    disks = host_disks(disks_out)
    serials = {(d.get("serial") or "").strip() for d in disks}
    wanted = max(profile.disks, len(node.components.drives))
    problems = [f"{len(disks)} disks, expected {wanted}"] if len(disks) < wanted else []
    problems += [f"drive {d['serial']} is not seen by the host" for d in node.components.drives
                 if d["serial"] and d["serial"] not in serials]
    macs = host_macs(nics_out)
    problems += [f"NIC {n['name']} {n['mac']} is not seen by the host" for n in node.components.nics
                 if n["mac"] and lifecycle.normalise_mac(n["mac"]) not in macs]
    return problems


# --------------------------------------------------------------------------------- power headroom
async def check_headroom(inventory: Inventory, node: NodeDetail, reserved: float) -> None:
    """Refuse (Conflict) unless the rack's measured draw, what we powered on that is not measured yet
    (``reserved``) and the node's expected draw fit the rack's budget and each feed side on its own."""
    if not node.rack:
        raise Conflict(f"{node.label} is in no rack: its power headroom cannot be checked")
    if not node.expected_power_watts:
        raise Conflict(f"{node.label} has no expected power draw on record: its rack's headroom cannot be checked")
    rack = f"{node.site}/{node.rack}"
    [view] = await blocking(rack_power, inventory, rack)
    if view.draw_watts is None:
        raise Conflict(f"rack {rack} has no fresh power reading: its headroom cannot be checked")
    total = view.draw_watts + reserved + node.expected_power_watts
    sum_up = (f"measured {view.draw_watts:,.0f} W" + (f" + {reserved:,.0f} W being powered on" if reserved else "")
              + f" + {node.label} {node.expected_power_watts:,.0f} W = {total:,.0f} W")
    if view.budget_watts is not None and total > view.budget_watts:
        raise Conflict(f"no power headroom in rack {rack}: {sum_up}, over its budget of {view.budget_watts:,.0f} W")
    sides: dict[str, float] = defaultdict(float)
    for feed in view.feeds:
        sides[feed.side] += feed.capacity_watts
    for side, capacity in sorted(sides.items()):
        if total > capacity:
            raise Conflict(f"no power headroom in rack {rack}: {sum_up}, over feed side {side}'s "
                           f"{capacity:,.0f} W (the rack must run on either side alone)")


# ------------------------------------------------------------------------------------------- flow
@dataclass
class Outcome:
    node: str
    state: str
    error: str | None = None


Report = Callable[[dict[str, Any]], None]


class Provisioner:
    def __init__(self, inventory: Inventory, power: PowerService, settings: ProvisioningSettings,
                 credentials: CredentialStore, identity: str) -> None:
        self.inventory = inventory
        self.power = power
        self.settings = settings
        self.credentials = credentials
        self.identity = identity
        self.actor = f"daemon:{identity}"
        self._slots = asyncio.Semaphore(settings.parallel)
        self._rack_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._reserved: defaultdict[str, float] = defaultdict(float)
        self._tasks: set[asyncio.Task] = set()
        self.timeouts = {S(state): seconds for state, seconds in settings.timeouts.model_dump().items()}

    # -------------------------------------------------------------------------- housekeeping
    async def start(self) -> None:
        """At start-up, before any work: announce ourselves, and fail what we (or dead daemons) left."""
        await blocking(lifecycle.heartbeat, self.inventory, self.identity, socket.gethostname())
        alive = await blocking(lifecycle.live_daemons, self.inventory, LIVE_WITHIN)
        for label in await blocking(lifecycle.recover, self.inventory, alive - {self.identity}, self.actor,
                                    restarted=self.identity):
            log.warning("stale lock recovered", node=label)

    async def sweep(self) -> None:
        await blocking(lifecycle.heartbeat, self.inventory, self.identity, socket.gethostname())
        alive = await blocking(lifecycle.live_daemons, self.inventory, LIVE_WITHIN)
        for label in await blocking(lifecycle.recover, self.inventory, alive | {self.identity}, self.actor):
            log.warning("stale lock of a dead daemon recovered", node=label)
        for label in await blocking(lifecycle.expire, self.inventory, self.timeouts, self.actor):
            log.warning("node timed out", node=label)

    def spawn(self, work: Awaitable[Any]) -> asyncio.Task:
        """Run work that must not stop when the client that asked for it goes away."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---------------------------------------------------------------------------- plumbing
    async def _to(self, label: str, target: NodeState, reason: str, actor: str, report: Report,
                  **fields: Any) -> TransitionView:
        view = await blocking(lifecycle.transition, self.inventory, label, target, reason, actor,
                              owner=self.identity, fields=fields)
        report({"node": label, **view.model_dump(mode="json")})
        log.info("node.transition", node=label, source=view.source, target=view.target, reason=reason)
        return view

    async def _fail(self, label: str, reason: str, actor: str, report: Report) -> str:
        """Send the node to its current state's failed state; the state it ends in."""
        try:
            view = await blocking(lifecycle.fail, self.inventory, label, reason, actor, owner=self.identity)
        except Conflict:  # already moved on (a timeout sweep, another failure): nothing more to record
            return (await blocking(self.inventory.node, label)).state
        report({"node": label, **view.model_dump(mode="json")})
        log.warning("node.failed", node=label, state=view.target, reason=reason)
        return view.target

    async def _locked(self, ref: str, actor: str, report: Report,
                      work: Callable[[str], Awaitable[str]]) -> Outcome:
        """Lock the node, run ``work(label)`` (the final state), turn its failure into a *_failed state."""
        async with self._slots:
            try:
                label = await blocking(lifecycle.acquire, self.inventory, ref, self.identity)
            except Conflict as exc:
                return Outcome(ref, (await blocking(self.inventory.node, ref)).state, str(exc))
            try:
                return Outcome(label, await work(label))
            except Conflict as exc:  # refused before anything changed, or the node changed under us
                return Outcome(label, (await blocking(self.inventory.node, label)).state, str(exc))
            except (StepFailed, DriverError) as exc:
                return Outcome(label, await self._fail(label, str(exc), actor, report), str(exc))
            except asyncio.CancelledError:
                await self._fail(label, "the daemon stopped", self.actor, report)
                raise
            except Exception as exc:
                log.exception("provisioning failed", node=label)
                reason = f"internal error: {type(exc).__name__}: {exc}"
                return Outcome(label, await self._fail(label, reason, actor, report), reason)
            finally:
                await blocking(lifecycle.unlock, self.inventory, label, self.identity)

    async def _wait_for(self, attempt_id: int, field: str, seconds: float, what: str):
        deadline = time.monotonic() + seconds
        while (row := await blocking(lifecycle.attempt, self.inventory, attempt_id)) and getattr(row, field) is None:
            if time.monotonic() > deadline:
                raise StepFailed(f"timed out: {what} within {seconds:g} s")
            await asyncio.sleep(POLL_SECONDS)
        return row

    async def _ssh(self, address: str, host_key: str, seconds: float) -> SshHost:
        """SSH to the host with exactly its reported key, retrying while it is unreachable (rebooting)."""
        key = await blocking(self.credentials.get, self.settings.ssh_key_credential)
        deadline = time.monotonic() + seconds
        while True:
            try:
                return await connect(address, self.settings.ssh_port, self.settings.ssh_user, key, host_key,
                                     timeout=self.settings.ssh_timeout_seconds)
            except (HostUnreachable, DriverTimeout) as exc:
                if time.monotonic() + SSH_RETRY_SECONDS > deadline:
                    raise StepFailed(f"no SSH session within {seconds:g} s: {exc}") from None
                await asyncio.sleep(SSH_RETRY_SECONDS)

    def _write_hosts_entry(self, label: str, macs: list[str]) -> None:
        """dnsmasq's dhcp-hostsdir: the node's MACs are known (PXE is answered), tagged baie. Entries stay:
        dnsmasq forgets removed ones only on SIGHUP, and the iPXE script says "boot from disk" anyway."""
        directory = self.settings.hosts_directory
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o755)  # dnsmasq reads it (bound into its own namespace, see baie-dnsmasq.service)
        name = "".join(c if c.isalnum() else "-" for c in label)
        temporary = directory / f".{name}.tmp"
        temporary.write_text("".join(f"{mac},set:baie\n" for mac in macs))
        os.chmod(temporary, 0o644)
        temporary.replace(directory / name)

    # ------------------------------------------------------------------------------ provision
    async def provision(self, ref: str, profile: str, actor: str, report: Report) -> Outcome:
        outcome = await self._locked(ref, actor, report, lambda label: self._provision(label, profile, actor, report))
        report({"node": outcome.node, "result": outcome.state, "error": outcome.error})
        return outcome

    async def _provision(self, label: str, profile_name: str, actor: str, report: Report) -> str:
        profile = self.settings.profiles[profile_name]
        node = await blocking(self.inventory.node, label)
        macs = await blocking(lifecycle.node_macs, self.inventory, label)
        if not macs:
            raise Conflict(f"{label} has no NIC with a MAC on record: it cannot PXE-boot")
        rack = f"{node.site}/{node.rack}"
        async with self._rack_locks[rack]:
            await check_headroom(self.inventory, node, self._reserved[rack])
            attempt_id, view = await blocking(lifecycle.begin_provisioning, self.inventory, label, profile_name,
                                              f"provision with profile {profile_name}", actor, self.identity)
            self._reserved[rack] += node.expected_power_watts
        report({"node": label, **view.model_dump(mode="json")})
        try:
            await blocking(self._write_hosts_entry, label, macs)
            await self.power.boot_once(label, BootDevice.PXE, None, actor)
            await self.power.power(label, PowerAction.CYCLE, actor)
            await self._wait_for(attempt_id, "script_served_at", self.timeouts[S.BOOTING], "no iPXE request")
            await self._to(label, S.INSTALLING, "the node fetched its iPXE script", actor, report)
            row = await self._wait_for(attempt_id, "callback_at", self.timeouts[S.INSTALLING],
                                       "the installer did not call back")
        finally:
            self._reserved[rack] -= node.expected_power_watts
        await self._to(label, S.VERIFYING, f"the installer called back from {row.host_address}", actor, report)
        async with await self._ssh(row.host_address, row.ssh_host_key, self.timeouts[S.VERIFYING]) as host:
            problems = await self._verify(host, node, profile)
            if problems:
                raise StepFailed("verification failed: " + "; ".join(problems))
            await self._to(label, S.DEPLOYED, "KVM hypervisor verified over SSH", actor, report)
            await host.run(f"{VIRSH} version")
            if profile.join_command:
                await host.run(profile.join_command, timeout=self.timeouts[S.DEPLOYED])
        await self._to(label, S.IN_POOL, f"joined pool {profile.pool}", actor, report, pool=profile.pool)
        return S.IN_POOL

    async def _verify(self, host: SshHost, node: NodeDetail, profile: ProfileSettings) -> list[str]:
        out = {name: (await host.run(command, check=False)).stdout for name, command in CHECKS.items()}
        return (problems_kvm(out["kvm"]) + problems_libvirtd(out["libvirtd"]) + problems_cpu(out["cpu"])
                + hardware_problems(node, profile, out["disks"], out["nics"]))

    async def provision_many(self, refs: list[str], profile: str, parallel: int, actor: str,
                             report: Report) -> list[Outcome]:
        bound = asyncio.Semaphore(parallel)

        async def one(ref: str) -> Outcome:
            async with bound:
                return await self.provision(ref, profile, actor, report)

        return list(await asyncio.gather(*(one(ref) for ref in refs)))

    # -------------------------------------------------------------------------------- release
    async def release(self, ref: str, retire: bool, actor: str, report: Report) -> Outcome:
        outcome = await self._locked(ref, actor, report, lambda label: self._release(label, retire, actor, report))
        report({"node": outcome.node, "result": outcome.state, "error": outcome.error})
        return outcome

    async def _release(self, label: str, retire: bool, actor: str, report: Report) -> str:
        state = S((await blocking(self.inventory.node, label)).state)
        drain = (state, S.DRAINING) in lifecycle.ALLOWED
        installed = await blocking(lifecycle.last_attempt, self.inventory, label)
        if drain:
            await self._to(label, S.DRAINING, "release" + (" to retire" if retire else ""), actor, report)
        else:
            await self._to(label, S.CLEANING, "release: erase" + (" to retire" if retire else ""), actor, report)
        if installed is None:
            raise StepFailed("no installed host on record to drain and erase")
        seconds = self.timeouts[S.DRAINING if drain else S.CLEANING]
        async with await self._ssh(installed.host_address, installed.ssh_host_key, seconds) as host:
            if drain:
                await self._drain(host)
                await self._to(label, S.CLEANING, "drained", actor, report, pool=None)
            erased = await self._erase(host)
        with contextlib.suppress(DriverError):  # the disks are erased; PowerService records a failure
            await self.power.power(label, PowerAction.OFF, actor)
        target = S.RETIRED if retire else S.AVAILABLE
        await self._to(label, target, f"erased and verified {', '.join(erased)}", actor, report, pool=None)
        return target

    async def _drain(self, host: SshHost) -> None:
        timeout = self.timeouts[S.DRAINING]
        if self.settings.drain_command:
            await host.run(self.settings.drain_command, timeout=timeout)
            return
        running = (await host.run(f"{VIRSH} list --name", timeout=timeout)).stdout.split()
        if running:
            raise StepFailed(f"domains still running: {', '.join(running)}")

    async def _erase(self, host: SshHost) -> list[str]:
        disks = [d["name"] for d in host_disks((await host.run(CHECKS["disks"])).stdout)]
        if not disks:
            raise StepFailed("the host shows no disk to erase")
        timeout = self.timeouts[S.CLEANING]
        for disk in disks:
            await host.run(self.settings.erase_command.format(disk=disk), timeout=timeout)
            verified = await host.run(self.settings.erase_verify_command.format(disk=disk), check=False,
                                      timeout=timeout)
            if verified.exit_status != 0:
                raise StepFailed(f"erase of {disk} not verified: `{self.settings.erase_verify_command.format(disk=disk)}`"
                                 f" exited {verified.exit_status}")
        return disks


# -------------------------------------------------------------------------------------------- API
router = APIRouter(prefix="/api/v1")


def _provisioner(request: Request) -> Provisioner:
    return request.app.state.provisioner


Flows = Annotated[Provisioner, Depends(_provisioner)]


class ProvisionRequest(BaseModel):
    profile: str
    nodes: list[str] = Field(default_factory=list, description="these nodes; or rack and count")
    rack: str | None = None
    count: int | None = Field(None, ge=1, description="this many available nodes of the rack")
    parallel: int = Field(1, ge=1, le=256)


class ReleaseRequest(BaseModel):
    retire: bool = Field(False, description="retire the node once its disks are erased")


class StateRequest(BaseModel):
    state: NodeState
    reason: str = Field(min_length=1, max_length=500)


def _stream(flows: Provisioner, nodes: list[str], run: Callable[[Report], Awaitable[list[Outcome]]]) -> StreamingResponse:
    """NDJSON: {"nodes": [...]}, then each transition and each node's result, then {"summary": ...}.
    The work goes on when the client goes away."""
    queue: asyncio.Queue[dict] = asyncio.Queue()

    async def work() -> None:
        outcomes = await run(queue.put_nowait)
        queue.put_nowait({"summary": [asdict(o) for o in outcomes]})

    flows.spawn(work())

    async def lines():
        yield json.dumps({"nodes": nodes}) + "\n"
        while "summary" not in (item := await queue.get()):
            yield json.dumps(item) + "\n"
        yield json.dumps(item) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/provision", summary="Install nodes as KVM hypervisors and join them to the pool; streams NDJSON")
async def provision(body: ProvisionRequest, flows: Flows, actor: Actor) -> StreamingResponse:
    inventory = flows.inventory
    if body.profile not in flows.settings.profiles:
        raise Invalid("profile", f"no profile {body.profile!r} (profiles: {', '.join(flows.settings.profiles) or 'none'})")
    if bool(body.nodes) == bool(body.rack):
        raise Invalid("nodes", "give either nodes, or a rack and a count")
    if body.rack:
        available = await blocking(inventory.nodes, None, body.rack, S.AVAILABLE)
        wanted = body.count or 1
        if len(available) < wanted:
            raise Conflict(f"rack {body.rack} has {len(available)} available nodes, not {wanted}")
        nodes = [n.label for n in available[:wanted]]
    else:
        nodes = []
        for ref in body.nodes:
            node = await blocking(inventory.node, ref)
            lifecycle.check_transition(node.label, S(node.state), S.BOOTING)
            nodes.append(node.label)
    return _stream(flows, nodes, lambda report: flows.provision_many(nodes, body.profile, body.parallel, actor,
                                                                      report))


@router.post("/nodes/{ref}/release", summary="Drain, securely erase and free a node (or retire it); streams NDJSON")
async def release(ref: str, body: ReleaseRequest, flows: Flows, actor: Actor) -> StreamingResponse:
    node = await blocking(flows.inventory.node, ref)
    state = S(node.state)
    lifecycle.check_transition(node.label, state, S.DRAINING if (state, S.DRAINING) in lifecycle.ALLOWED
                               else S.CLEANING)

    async def run(report: Report) -> list[Outcome]:
        return [await flows.release(node.label, body.retire, actor, report)]

    return _stream(flows, [node.label], run)


@router.get("/nodes/{ref}/history", summary="A node's lifecycle transitions, oldest first")
async def node_history(ref: str, flows: Flows) -> list[TransitionView]:
    return await blocking(lifecycle.history, flows.inventory, ref)


@router.post("/nodes/{ref}/state", summary="An operator's transition: enrol, inspect, maintenance, retire")
async def set_state(ref: str, body: StateRequest, flows: Flows, actor: Actor) -> TransitionView:
    return await blocking(lifecycle.transition, flows.inventory, ref, body.state, body.reason, actor, operator=True)

"""The API for what needs the daemon's credentials: discovery sweeps, power, one-time boot, BMC trust.

Who asked is taken from the ``X-Baie-Actor`` header the CLI sends (``cli:USER``); it is recorded with
every action's event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from daemon.bmc import PowerService, node_target
from daemon.discovery import Discovery, addresses, site_ranges
from daemon.executor import blocking
from drivers.base import (
    ActionNotConfirmed,
    BmcUnreachable,
    BootDevice,
    BootMode,
    DriverError,
    PowerAction,
    Timeout,
    Unsupported,
)
from drivers.redfish import fetch_certificate_sha256
from inventory.enrolment import trust_certificate
from inventory.errors import Invalid
from inventory.model import BmcProtocol
from inventory.service import Inventory

# Driver errors as HTTP statuses; the body names the error kind so the CLI can say what happened.
DRIVER_ERROR_STATUS: tuple[tuple[type[DriverError], int], ...] = (
    (ActionNotConfirmed, 504),
    (Timeout, 504),
    (BmcUnreachable, 504),
    (Unsupported, 501),
    (DriverError, 502),
)

router = APIRouter(prefix="/api/v1")


def driver_error_response(exc: DriverError) -> JSONResponse:
    status = next(code for kind, code in DRIVER_ERROR_STATUS if isinstance(exc, kind))
    return JSONResponse({"error": str(exc), "kind": type(exc).__name__}, status_code=status)


def _actor(x_baie_actor: Annotated[str | None, Header()] = None) -> str:
    return (x_baie_actor or "api")[:64]


def _power(request: Request) -> PowerService:
    return request.app.state.power


def _discovery(request: Request) -> Discovery:
    return request.app.state.discovery


Actor = Annotated[str, Depends(_actor)]
Power = Annotated[PowerService, Depends(_power)]
Sweeper = Annotated[Discovery, Depends(_discovery)]


class PowerRequest(BaseModel):
    action: PowerAction


class BootRequest(BaseModel):
    device: BootDevice = BootDevice.PXE
    mode: BootMode | None = None
    once: Literal[True] = Field(True, description="only one-time overrides: the next boot, then back to disk")


class TrustRequest(BaseModel):
    fingerprint: str | None = Field(None, description="SHA-256 to pin (verified out of band); "
                                                      "default: the certificate the BMC presents now")


@router.get("/nodes/{ref}/power")
async def power_status(ref: str, power: Power) -> dict:
    return {"node": ref, "power_state": str(await power.status(ref))}


@router.post("/nodes/{ref}/power")
async def power_action(ref: str, body: PowerRequest, power: Power, actor: Actor) -> dict:
    return dataclasses.asdict(await power.power(ref, body.action, actor))


@router.post("/nodes/{ref}/boot")
async def boot(ref: str, body: BootRequest, power: Power, actor: Actor) -> dict:
    await power.boot_once(ref, body.device, body.mode, actor)
    return {"node": ref, "device": str(body.device), "mode": str(body.mode) if body.mode else None, "once": True}


@router.post("/nodes/{ref}/bmc/trust")
async def trust(ref: str, body: TrustRequest, power: Power, actor: Actor) -> dict:
    inventory: Inventory = power.inventory
    node = await blocking(inventory.node, ref)
    target = node_target(node)
    if target.protocol != BmcProtocol.REDFISH:
        raise Invalid("node", f"{node.label} has an {target.protocol} BMC: there is no certificate to pin")
    fingerprint = body.fingerprint or await blocking(fetch_certificate_sha256, target.address, target.port,
                                                     power.access.settings.timeout_seconds)
    fingerprint = fingerprint.replace(":", "").lower()
    if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
        raise Invalid("fingerprint", "expected a SHA-256: 64 hex digits")
    previous = await blocking(trust_certificate, inventory, ref, fingerprint, actor)
    return {"node": node.label, "fingerprint": fingerprint, "previous": previous}


@router.post("/sites/{site}/discover", summary="Sweep a site's ranges (or one range) and enrol what answers; "
             "streams NDJSON progress lines, then the summary")
async def discover(site: str, discovery: Sweeper, actor: Actor, range: str | None = None) -> StreamingResponse:
    # Check the site and the range before the stream starts, so that errors get a proper status.
    ranges = await blocking(site_ranges, discovery.inventory, site)
    if range:
        addresses([range])
    elif not ranges:
        raise Invalid("range", f"site {site} has no discovery ranges: import some, or pass --range")
    queue: asyncio.Queue[dict] = asyncio.Queue()

    async def sweep() -> None:
        try:
            summary = await discovery.discover(site, range, actor,
                                               progress=lambda done, total: queue.put_nowait(
                                                   {"progress": {"done": done, "total": total}}))
            queue.put_nowait({"summary": dataclasses.asdict(summary)})
        except Exception as exc:  # the stream has started: report the failure in it
            queue.put_nowait({"error": str(exc), "kind": type(exc).__name__})

    async def lines():
        task = asyncio.create_task(sweep())
        try:
            while True:
                item = await queue.get()
                yield json.dumps(item) + "\n"
                if "progress" not in item:
                    return
        finally:
            if not task.done():
                task.cancel()

    return StreamingResponse(lines(), media_type="application/x-ndjson")

"""The HTTP app: /healthz, /metrics and the read API under /api/v1. Served by daemon.main inside its loop.

Handlers are async and reach the service layer through the one thread hop (``blocking``). Errors of the
service layer become JSON ``{"error": "..."}`` with the status of ``ERROR_STATUS``.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.metadata
import re
from collections import Counter as Tally
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Info, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from daemon import actions, outlets, webhooks
from daemon import provisioning
from daemon.executor import blocking
from daemon.telemetry_api import RollupCollector
from daemon.telemetry_api import router as telemetry_router
from drivers.base import DriverError, Secret
from inventory.errors import Ambiguous, Conflict, Invalid, InventoryError, NotFound
from inventory.service import Inventory
from inventory.views import CoolingLoopView, EventView, NodeDetail, NodeView, PduView, RackDetail, RackView, SiteView

VERSION = importlib.metadata.version("baie")
ERROR_STATUS: dict[type[InventoryError], int] = {NotFound: 404, Ambiguous: 409, Conflict: 409, Invalid: 422}
DATABASE_CHECK_SECONDS = 5.0
DURATION = re.compile(r"^(\d+)([smhdw])$")
DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


# ------------------------------------------------------------------------------------------- health
def _database_ok(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False


async def database_up(engine: Engine) -> bool:
    """Whether the database answers ``SELECT 1`` within a deadline."""
    try:
        return await asyncio.wait_for(blocking(_database_ok, engine), DATABASE_CHECK_SECONDS)
    except TimeoutError:
        return False


# ------------------------------------------------------------------------------------------ metrics
class _NodeCollector:
    """``baie_nodes{site,state}``, counted at scrape time (``generate_latest`` runs on the thread pool)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def collect(self):
        family = GaugeMetricFamily("baie_nodes", "Nodes in the inventory by site and lifecycle state",
                                   labels=["site", "state"])
        try:
            nodes = self.inventory.nodes()
        except SQLAlchemyError:
            return  # the database watch logs the outage; the scrape still serves the rest
        for (site, state), count in sorted(Tally((n.site or "", n.state) for n in nodes).items()):
            family.add_metric([site, state], count)
        yield family


class Metrics:
    """The daemon's own registry (not the process-global one); later loops register their metrics here."""

    def __init__(self, inventory: Inventory) -> None:
        self.registry = CollectorRegistry()
        Info("baie_build", "Version of the running daemon", registry=self.registry).info({"version": VERSION})
        Gauge("baie_up", "1 while the daemon is running", registry=self.registry).set(1)
        self.requests = Counter("baie_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.registry.register(_NodeCollector(inventory))
        self.registry.register(RollupCollector(inventory))


# ------------------------------------------------------------------------------------ auth (TCP only)
class BearerAuth:
    """ASGI wrapper for the TCP listener: every request but /healthz carries ``Authorization: Bearer TOKEN``.
    The unix socket is guarded by its file mode instead and is served without this wrapper."""

    def __init__(self, app, token: Secret) -> None:
        self.app = app
        self._expected = f"Bearer {token.reveal()}".encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] != "/healthz":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                response = JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------------------ the API
def parse_since(value: str) -> datetime:
    """An ISO time (UTC when no offset is given) or a duration back from now: ``90s``, ``15m``, ``1h``, ``7d``."""
    if match := DURATION.match(value):
        return datetime.now(UTC) - timedelta(**{DURATION_UNITS[match[2]]: int(match[1])})
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid("since", f"{value!r} is neither an ISO time nor a duration like 1h") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _inventory(request: Request) -> Inventory:
    return request.app.state.inventory


Inv = Annotated[Inventory, Depends(_inventory)]
api = APIRouter(prefix="/api/v1")


@api.get("/sites")
async def sites(inv: Inv) -> list[SiteView]:
    return await blocking(inv.sites)


@api.get("/racks")
async def racks(inv: Inv, site: str | None = None) -> list[RackView]:
    return await blocking(inv.racks, site)


@api.get("/racks/{ref:path}", summary="A rack (NAME or SITE/NAME) with its elevation and PDUs")
async def rack(inv: Inv, ref: str) -> RackDetail:
    return await blocking(inv.rack, ref)


@api.get("/nodes")
async def nodes(inv: Inv, site: str | None = None, rack: str | None = None,
                state: str | None = None) -> list[NodeView]:
    return await blocking(inv.nodes, site, rack, state)


@api.get("/nodes/{ref}", summary="A node by name, serial, UUID, asset tag, BMC address or #id")
async def node(inv: Inv, ref: str) -> NodeDetail:
    return await blocking(inv.node, ref)


@api.get("/pdus")
async def pdus(inv: Inv, site: str | None = None) -> list[PduView]:
    return await blocking(inv.pdus, site)


@api.get("/cooling-loops")
async def cooling_loops(inv: Inv, site: str | None = None) -> list[CoolingLoopView]:
    return await blocking(inv.cooling_loops, site)


@api.get("/events")
async def events(inv: Inv, since: str | None = None, subject: str | None = None) -> list[EventView]:
    return await blocking(inv.events, parse_since(since) if since else None, subject)


def create_app(inventory: Inventory, metrics: Metrics) -> FastAPI:
    app = FastAPI(title="baie", version=VERSION)
    app.state.inventory = inventory
    app.include_router(api)
    app.include_router(actions.router)
    app.include_router(outlets.router)
    app.include_router(telemetry_router)
    app.include_router(provisioning.router)
    app.include_router(webhooks.router)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ok = await database_up(inventory.engine)
        return JSONResponse({"status": "ok" if ok else "degraded", "version": VERSION,
                             "database": "ok" if ok else "unreachable"}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(await blocking(generate_latest, metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.requests.labels(request.method, getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    @app.exception_handler(InventoryError)
    async def inventory_error(_request: Request, exc: InventoryError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=ERROR_STATUS.get(type(exc), 400))

    @app.exception_handler(DriverError)
    async def driver_error(_request: Request, exc: DriverError) -> JSONResponse:
        return actions.driver_error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def request_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": problems}, status_code=422)

    return app

"""The daemon process: one asyncio loop running the scheduler and the HTTP API, sd_notify, clean signals.

``run(settings)`` is what ``baie daemon --config FILE`` calls; ``python -m daemon --config FILE`` does too.
Exit codes: 0 after SIGTERM/SIGINT, 1 when it cannot start (database, sockets), 2 for configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import structlog
import uvicorn
import uvloop
from alembic.script import ScriptDirectory
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from daemon.alerting import Alerting
from daemon.app import VERSION, BearerAuth, Metrics, create_app, database_up
from daemon.bmc import BmcAccess, PowerService
from daemon.boot import create_boot_app
from daemon.config import ConfigError, Settings, load_settings
from daemon.credentials import CredentialError, CredentialStore
from daemon.discovery import Discovery
from daemon.executor import blocking, install_executor
from daemon.logging import configure_logging
from daemon.notify import Notifier
from daemon.outlets import OutletService
from daemon.placement import Placement
from daemon.provisioning import HEARTBEAT_SECONDS, Provisioner
from daemon.telemetry import TelemetryLoop
from daemon.webhooks import DELIVERY_SECONDS, Deliverer
from drivers.base import Secret
from inventory.db import JobLock, alembic_config, current_revision, make_engine
from inventory.lifecycle import daemon_name
from inventory.service import Inventory

# Every job is coalesced (missed runs collapse into one) and never started while its last run is going.
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
HOUSEKEEPING_SECONDS = 30
STOP_GRACE_SECONDS = 3  # in-flight requests get this long at shutdown; the whole stop stays under 10 s
SOCKET_MODE = 0o660  # the daemon's group (operators) may use the API socket

log = structlog.get_logger("baie.daemon")


class StartupError(Exception):
    """The daemon cannot start; the message is one line an operator can act on."""


# -------------------------------------------------------------------------------------- start-up checks
def safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def check_schema(url: str) -> None:
    """Refuse a database whose schema is not this version's head: migrating is the operator's call."""
    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_current_head()
    try:
        current = current_revision(url)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StartupError(f"database {safe_url(url)}: cannot connect: {reason}") from None
    if current == head:
        return
    if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
        raise StartupError(f"database {safe_url(url)}: schema {current} is newer than this baie ({head})")
    raise StartupError(f"database {safe_url(url)}: schema is at {current or 'nothing'}, not {head}: "
                       "run `baie db upgrade`")


def credential_store(settings: Settings) -> CredentialStore:
    directory = settings.credentials.directory
    return CredentialStore(directory, systemd=os.environ.get("CREDENTIALS_DIRECTORY") == str(directory))


def api_token(settings: Settings, store: CredentialStore) -> Secret | None:
    """The TCP listener's bearer token; there is no TCP listener without one."""
    if not settings.api.listen:
        return None
    name = settings.api.token_credential
    try:
        return store.get(name)
    except CredentialError as exc:
        raise ConfigError(f"api.listen needs the bearer token credential {name!r}: {exc}") from None


def listen_address(listen: str, key: str = "api.listen") -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: {listen!r} is not HOST:PORT")
    return host, int(port)


def bind_unix(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink()  # left behind by a daemon that did not stop cleanly
            else:
                raise StartupError(f"{path}: another daemon is serving on this socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise StartupError(f"{path}: cannot listen: {exc.strerror}") from None
    os.chmod(path, SOCKET_MODE)
    sock.listen()
    return sock


def bind_tcp(listen: str, key: str = "api.listen") -> socket.socket:
    host, port = listen_address(listen, key)
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise StartupError(f"{key} {listen}: cannot listen: {exc.strerror}") from None


# ------------------------------------------------------------------------------------------------- jobs
class DatabaseWatch:
    """Logs the database going away once, and once more when it is back: not at every check."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.up = True

    async def check(self) -> None:
        up = await database_up(self.engine)
        if up and not self.up:
            log.info("database reachable again")
        elif not up and self.up:
            log.error("database unreachable")
        self.up = up


@dataclass
class Services:
    """The daemon's long-lived workers, built once at start and handed to the jobs and the API."""

    access: BmcAccess
    power: PowerService
    discovery: Discovery
    placement: Placement
    alerting: Alerting
    deliverer: Deliverer
    outlets: OutletService
    telemetry: TelemetryLoop
    provisioner: Provisioner


async def build_services(settings: Settings, inventory: Inventory, store: CredentialStore,
                         metrics: Metrics) -> Services:
    access = BmcAccess(settings.bmc, store)
    power = PowerService(inventory, access)
    name = await blocking(daemon_name, inventory, socket.gethostname())
    return Services(
        access=access, power=power,
        discovery=Discovery(inventory, access, settings.discovery),
        placement=Placement(inventory, store, settings.placement),
        alerting=Alerting(inventory, settings, power),
        deliverer=Deliverer(inventory, settings, store),
        outlets=OutletService(inventory, access, store, timeout=settings.bmc.timeout_seconds,
                              confirm_seconds=settings.bmc.power_confirm_seconds),
        telemetry=TelemetryLoop(settings.telemetry, inventory, access, store, metrics.registry),
        provisioner=Provisioner(inventory, power, settings.provisioning, store, name),
    )


def schedule_jobs(scheduler: AsyncIOScheduler, settings: Settings, inventory: Inventory,
                  services: Services) -> None:
    """The daemon's periodic work, one line per job (JOB_DEFAULTS apply). A coroutine function runs on the
    loop; a plain function runs on the bounded thread pool."""
    scheduler.add_job(DatabaseWatch(inventory.engine).check, "interval", seconds=HOUSEKEEPING_SECONDS,
                      id="database-watch")
    def shared(job_id: str, job: Callable[[], Awaitable[object]], seconds: float) -> None:
        """A job that daemons sharing the database take turns at (see once_per_database)."""
        scheduler.add_job(once_per_database(inventory, job_id, job), "interval", seconds=seconds, id=job_id)

    shared("discovery", services.discovery.discover_all, settings.discovery.interval_seconds)
    shared("placement", services.placement.check, settings.placement.interval_seconds)
    shared("alerts", services.alerting.evaluate, settings.alerts.interval.total_seconds())
    shared("webhooks", services.deliverer.deliver, DELIVERY_SECONDS)
    scheduler.add_job(services.provisioner.sweep, "interval", seconds=HEARTBEAT_SECONDS, id="provisioning-sweep")
    if settings.telemetry.enabled:
        shared("telemetry-rollup", services.telemetry.rollup, settings.telemetry.rollup_interval_seconds)
        shared("telemetry-prune", services.telemetry.prune, settings.telemetry.prune_interval_seconds)


def once_per_database(inventory: Inventory, name: str, job: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    """``job``, skipped for this tick while another daemon of the same database runs it: with several hosts
    on one PostgreSQL database, an alert is evaluated and delivered once, a roll-up written once."""
    async def run() -> None:
        lock = JobLock(inventory.engine, name)
        try:
            if not await blocking(lock.acquire):
                log.debug("job.skipped", job=name, reason="another daemon of this database is running it")
                return
        except SQLAlchemyError:
            return  # the database watch logs the outage
        try:
            await job()
        finally:
            await blocking(lock.release)

    return run


# ---------------------------------------------------------------------------------------------- serving
class _Server(uvicorn.Server):
    """uvicorn inside our loop: the daemon owns the signals and says when to stop."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    def capture_signals(self):
        return contextlib.nullcontext()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


async def serve(settings: Settings, inventory: Inventory, store: CredentialStore,
                listeners: list[tuple[socket.socket, Secret | None]], boot: socket.socket | None = None) -> int:
    loop = asyncio.get_running_loop()
    install_executor(loop, settings.daemon.workers, settings.daemon.ipmi_workers)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier(os.environ)
    notifier.send("STATUS=starting")

    metrics = Metrics(inventory)
    services = await build_services(settings, inventory, store, metrics)
    # Provisioning: fail what this daemon (or a dead one) left mid-way before taking new work.
    await services.provisioner.start()
    scheduler = AsyncIOScheduler(timezone=UTC, job_defaults=JOB_DEFAULTS)
    schedule_jobs(scheduler, settings, inventory, services)
    if settings.telemetry.enabled:
        services.telemetry.start()
    scheduler.start()

    app = create_app(inventory, metrics)
    app.state.discovery = services.discovery
    app.state.power = services.power
    app.state.webhooks = services.deliverer
    app.state.outlets = services.outlets
    app.state.provisioner = services.provisioner
    servers = [
        _Server(uvicorn.Config(BearerAuth(app, token) if token else app, lifespan="off", log_config=None,
                               access_log=False, server_header=False,
                               timeout_graceful_shutdown=STOP_GRACE_SECONDS))
        for _sock, token in listeners
    ]
    if boot is not None:  # the boot service on the provisioning network: its own app, no bearer token
        servers.append(_Server(uvicorn.Config(create_boot_app(inventory, settings.provisioning, store),
                                              lifespan="off", log_config=None, access_log=False,
                                              server_header=False, timeout_graceful_shutdown=STOP_GRACE_SECONDS)))
        listeners = [*listeners, (boot, None)]
    tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, (sock, _) in zip(servers, listeners)]
    stopping = asyncio.create_task(stop.wait())
    watchdog = None
    try:
        ready = asyncio.ensure_future(asyncio.gather(*(server.ready.wait() for server in servers)))
        await asyncio.wait([ready, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            notifier.send("READY=1", f"STATUS=serving the API on {settings.api.socket}")
            log.info("daemon ready", socket=str(settings.api.socket), listen=settings.api.listen)
            if notifier.watchdog_interval:
                watchdog = asyncio.create_task(notifier.watchdog())
            await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        else:
            ready.cancel()
    finally:
        notifier.send("STOPPING=1", "STATUS=stopping")
        log.info("daemon stopping")
        if watchdog:
            watchdog.cancel()
        scheduler.shutdown(wait=False)
        for server in servers:
            server.should_exit = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await services.telemetry.stop()  # writes the readings already taken
        await services.provisioner.stop()
        await loop.shutdown_default_executor()
        notifier.close()
    for result in results:
        if isinstance(result, Exception):
            log.error("API server failed", exc_info=result)
    if not stopping.done():
        log.error("API server stopped on its own")
        return 1
    return 0


def run(settings: Settings) -> int:
    """Run the daemon until SIGTERM or SIGINT; the exit code for the process."""
    configure_logging(settings.log.level)
    listeners: list[tuple[socket.socket, Secret | None]] = []
    boot = None
    try:
        store = credential_store(settings)
        token = api_token(settings, store)
        check_schema(settings.database.url)
        listeners.append((bind_unix(settings.api.socket), None))
        if settings.api.listen:
            listeners.append((bind_tcp(settings.api.listen), token))
        if settings.provisioning.listen:
            boot = bind_tcp(settings.provisioning.listen, "provisioning.listen")
    except (ConfigError, StartupError) as exc:
        for sock, _token in listeners:
            sock.close()
        print(f"baie: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1

    log.info("daemon starting", version=VERSION, database=safe_url(settings.database.url))
    engine = make_engine(settings.database.url)
    try:
        # uvloop: measured in bench/ with 10,000 kept-alive TLS connections to BMCs, a quarter of asyncio's
        # memory (3.2 GB -> 0.7 GB: asyncio's TLS layer holds a 256 KiB buffer per connection) and ~13 % less
        # CPU per poll.
        code = uvloop.run(serve(settings, Inventory(engine), store, listeners, boot))
    finally:
        engine.dispose()
        for sock, _token in listeners:
            sock.close()
        if boot is not None:
            boot.close()
        settings.api.socket.unlink(missing_ok=True)
    log.info("daemon stopped", exit_code=code)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daemon", description="Run the baie daemon.")
    parser.add_argument("--config", type=Path, help="settings file (default: /etc/baie/baie.toml if present)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"baie: {exc}", file=sys.stderr)
        return 2
    return run(settings)

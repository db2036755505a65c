"""Redfish telemetry over aiohttp: the periodic hot path (server power/thermal/coolant, rack PDUs, CDUs).

sushy (``drivers.redfish``) does enrolment, inventory and actions; this module only reads, and reads
many BMCs often. One ``ClientSession`` serves the whole daemon: one kept-alive connection and one
session token per BMC, a global bound on requests in flight, a deadline on every request. The first poll
of a BMC walks its collections and remembers which resources carry readings (a *plan*); later polls GET
only those. Any error drops the plan, so the next poll walks again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import enum
import functools
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from drivers.base import (
    AuthFailed,
    BmcUnreachable,
    Credentials,
    DriverError,
    Health,
    MalformedReply,
    Metric,
    SensorReading,
    Timeout,
    TlsMismatch,
)

ROOT = "/redfish/v1"
SESSIONS = "/redfish/v1/SessionService/Sessions"  # fixed by the Redfish specification

_HEALTH = {"OK": Health.OK, "Warning": Health.WARNING, "Critical": Health.CRITICAL}
_OUTLET_ON = {"On": 1.0, "Off": 0.0}  # PoweringOn/PoweringOff/Paused: no reading
_FAN_UNITS = {"RPM": Metric.FAN_SPEED_RPM, "Percent": Metric.FAN_SPEED_PERCENT}
_NUMBER = (int, float)
MAX_CACHED_URLS = 64  # per BMC: the resources a plan reads, and then some


class DeviceKind(enum.StrEnum):
    SERVER = "server"
    RACK_PDU = "rack_pdu"
    CDU = "cdu"


@dataclass(frozen=True)
class BmcTarget:
    """Where a BMC is and how to trust it. ``labels`` (e.g. node, rack) are added to every reading.

    TLS: ``fingerprint`` pins the SHA-256 of the certificate (hex, colons allowed); ``ca_bundle``
    verifies against that CA file; neither verifies against the system CAs. ``scheme="http"`` is for
    the lab. ``timeout`` is the deadline of each request, in seconds.
    """

    address: str
    credentials: Credentials
    port: int | None = None
    scheme: str = "https"
    ca_bundle: Path | None = None
    fingerprint: str | None = None
    timeout: float = 10.0
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scheme not in ("http", "https"):
            raise ValueError(f"scheme must be http or https, not {self.scheme!r}")
        if self.fingerprint is not None and self.ca_bundle is not None:
            raise ValueError("give a CA bundle or a pinned fingerprint, not both")
        if self.scheme == "http" and (self.fingerprint or self.ca_bundle):
            raise ValueError("a CA bundle or fingerprint needs scheme https")
        if self.fingerprint is not None and len(self._pin()) != 32:
            raise ValueError("fingerprint must be a SHA-256 digest (64 hex digits)")

    # Cached: both are read on every request, and building a URL costs more than the request's parsing.
    @functools.cached_property
    def name(self) -> str:
        return f"{self.address}:{self.url.port}"

    @functools.cached_property
    def url(self) -> URL:
        return URL.build(scheme=self.scheme, host=self.address, port=self.port)

    @functools.cached_property
    def deadline(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.timeout)

    def url_for(self, uri: str) -> URL:
        """The URL of a link on this BMC. Only the path of a link is used: an absolute link must not carry our
        credentials elsewhere."""
        url = self._urls.get(uri)
        if url is None:
            url = self.url.with_path(URL(uri).path)
            if len(self._urls) < MAX_CACHED_URLS:
                self._urls[uri] = url
        return url

    @functools.cached_property
    def _urls(self) -> dict[str, URL]:
        return {}

    def _pin(self) -> bytes:
        assert self.fingerprint is not None
        return bytes.fromhex(self.fingerprint.replace(":", ""))


# ------------------------------------------------------------------------------------ parsing helpers
class _Doc:
    """A JSON object from one reply, with typed accessors that name the BMC and field when wrong."""

    __slots__ = ("bmc", "uri", "data", "where")

    # ``where``: the JSON pointer of ``data`` in the reply, as parts (joined only for an error: a poll reads
    # a few hundred properties, and the parsers were a fifth of the poller's CPU)
    def __init__(self, bmc: str, uri: str, data: dict[str, Any], where: tuple[str | int, ...] = ()) -> None:
        self.bmc, self.uri, self.data, self.where = bmc, uri, data, where

    def malformed(self, path: tuple[str | int, ...], what: str) -> MalformedReply:
        pointer = "/".join(["", *map(str, (*self.where, *path))])
        return MalformedReply(self.bmc, what, field=f"{self.uri}#{pointer}")

    def get(self, *path: str) -> object:
        if len(path) == 1:
            return self.data.get(path[0])
        node: object = self.data
        for depth, key in enumerate(path):
            if node is None:
                return None
            if not isinstance(node, dict):
                raise self.malformed(path[:depth], "expected an object")
            node = node.get(key)
        return node

    # number() and text() read one key without the call to get(): they are most of the parsers' calls
    def number(self, *path: str) -> float | None:
        value = self.data.get(path[0]) if len(path) == 1 else self.get(*path)
        if value is None:
            return None
        if type(value) is bool or not isinstance(value, _NUMBER):
            raise self.malformed(path, "expected a number")
        return float(value)

    def text(self, *path: str) -> str | None:
        value = self.data.get(path[0]) if len(path) == 1 else self.get(*path)
        if value is not None and not isinstance(value, str):
            raise self.malformed(path, "expected a string")
        return value

    def sub(self, *path: str) -> _Doc | None:
        value = self.get(*path)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.malformed(path, "expected an object")
        return _Doc(self.bmc, self.uri, value, (*self.where, *path))

    def each(self, *path: str) -> list[_Doc]:
        """The objects of an array property (empty if not reported)."""
        value = self.get(*path)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.malformed(path, "expected an array")
        base = (*self.where, *path)
        docs = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.malformed((*path, i), "expected an object")
            docs.append(_Doc(self.bmc, self.uri, item, (*base, i)))
        return docs

    def link(self, *path: str) -> str | None:
        return self.text(*path, "@odata.id")

    def members(self) -> list[str]:
        links = []
        for member in self.each("Members"):
            if (link := member.link()) is None:
                raise member.malformed(("@odata.id",), "collection member without a link")
            links.append(link)
        return links

    def health(self) -> Health | None:
        status = self.data.get("Status")  # nearly every object has one: read it without the generic walk
        value = status.get("Health") if type(status) is dict else self.text("Status", "Health")
        if value is not None and not isinstance(value, str):
            raise self.malformed(("Status", "Health"), "expected a string")
        if value is None:
            return None
        if value not in _HEALTH:
            raise self.malformed(("Status", "Health"), f"unknown health {value!r}")
        return _HEALTH[value]

    def absent(self) -> bool:
        return self.text("Status", "State") == "Absent"


def _segment(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _one(metric: Metric, value: float | None, labels: Mapping[str, str],
         health: Health | None = None) -> list[SensorReading]:
    return [] if value is None else [SensorReading(metric, value, dict(labels), health)]


def _ok(metric: Metric, doc: _Doc, labels: Mapping[str, str]) -> list[SensorReading]:
    """1 when the device says OK, 0 for Warning or Critical, nothing when it does not say."""
    health = doc.health()
    return [] if health is None else [SensorReading(metric, float(health is Health.OK), dict(labels), health)]


# --------------------------------------------------------------------------------------------- parsers
Parser = Callable[["_Bmc", _Doc, dict[str, str]], Awaitable[list[SensorReading]]]


@dataclass(frozen=True)
class _Leaf:
    """A resource that carries readings, and how to read it."""

    uri: str
    parse: Parser
    labels: dict[str, str]


def _excerpts(*fields: tuple[str, Metric, dict[str, str]], ok: Metric | None = None) -> Parser:
    """A parser for resources whose readings are excerpt objects (``{"Reading": ..., "DataSourceUri": ...}``)."""

    async def parse(bmc: _Bmc, doc: _Doc, labels: dict[str, str]) -> list[SensorReading]:
        health = doc.health()
        out = _ok(ok, doc, labels) if ok else []
        for prop, metric, extra in fields:
            out += _one(metric, await bmc.reading(doc, prop), {**labels, **extra}, health)
        return out

    return parse


_psu = _excerpts(ok=Metric.PSU_OK)
_psu_metrics = _excerpts(("InputPowerWatts", Metric.PSU_INPUT_POWER_WATTS, {}))
_chassis_environment = _excerpts(("PowerWatts", Metric.NODE_POWER_WATTS, {}),
                                 ("HumidityPercent", Metric.HUMIDITY_PERCENT, {}))
_pump = _excerpts(("PumpSpeedPercent", Metric.PUMP_SPEED_PERCENT, {}), ok=Metric.PUMP_OK)
_filter = _excerpts(ok=Metric.FILTER_OK)
_reservoir = _excerpts(("FluidLevelPercent", Metric.RESERVOIR_LEVEL_PERCENT, {}))
_coolant_connector = _excerpts(
    ("SupplyTemperatureCelsius", Metric.COOLANT_SUPPLY_TEMPERATURE_CELSIUS, {}),
    ("ReturnTemperatureCelsius", Metric.COOLANT_RETURN_TEMPERATURE_CELSIUS, {}),
    ("FlowLitersPerMinute", Metric.COOLANT_FLOW_LPM, {}),
    ("SupplyPressurekPa", Metric.COOLANT_PRESSURE_KPA, {"side": "supply"}),
    ("ReturnPressurekPa", Metric.COOLANT_PRESSURE_KPA, {"side": "return"}),
    ("HeatRemovedkW", Metric.COOLANT_HEAT_REMOVED_KW, {}),
)
_cdu_environment = _excerpts(("TemperatureCelsius", Metric.TEMPERATURE_CELSIUS, {"sensor": "environment"}),
                             ("HumidityPercent", Metric.HUMIDITY_PERCENT, {}))
_pdu_metrics = _excerpts(("PowerWatts", Metric.PDU_POWER_WATTS, {}),
                         ("EnergykWh", Metric.PDU_ENERGY_KWH, {}),
                         ("TemperatureCelsius", Metric.TEMPERATURE_CELSIUS, {"sensor": "environment"}),
                         ("HumidityPercent", Metric.HUMIDITY_PERCENT, {}))


async def _fan(bmc: _Bmc, doc: _Doc, labels: dict[str, str]) -> list[SensorReading]:
    health = doc.health()
    return [*_one(Metric.FAN_SPEED_PERCENT, await bmc.reading(doc, "SpeedPercent"), labels, health),
            *_one(Metric.FAN_SPEED_RPM, doc.number("SpeedPercent", "SpeedRPM"), labels, health)]


async def _thermal_metrics(bmc: _Bmc, doc: _Doc, labels: dict[str, str]) -> list[SensorReading]:
    out = _one(Metric.INLET_TEMPERATURE_CELSIUS,
               await bmc.reading(doc, "TemperatureSummaryCelsius", "Intake"), labels)
    for i, excerpt in enumerate(doc.each("TemperatureReadingsCelsius")):
        source = excerpt.text("DataSourceUri")
        name = _segment(source) if source else excerpt.text("DeviceName") or str(i)
        out += _one(Metric.TEMPERATURE_CELSIUS, await bmc.reading(excerpt), {**labels, "sensor": name})
    return out


async def _legacy_power(bmc: _Bmc, doc: _Doc, labels: dict[str, str]) -> list[SensorReading]:
    controls = doc.each("PowerControl")
    # PowerControl[0] is the whole chassis; further entries, where present, are sub-domains (CPU, memory).
    out = _one(Metric.NODE_POWER_WATTS, controls[0].number("PowerConsumedWatts"), labels) if controls else []
    for i, psu in enumerate(doc.each("PowerSupplies")):
        if psu.absent():
            continue
        psu_labels = {**labels, "psu": psu.text("MemberId") or str(i)}
        out += _one(Metric.PSU_INPUT_POWER_WATTS, psu.number("PowerInputWatts"), psu_labels, psu.health())
        out += _ok(Metric.PSU_OK, psu, psu_labels)
    return out


async def _legacy_thermal(bmc: _Bmc, doc: _Doc, labels: dict[str, str]) -> list[SensorReading]:
    out = []
    for i, temp in enumerate(doc.each("Temperatures")):
        value, health = temp.number("ReadingCelsius"), temp.health()
        out += _one(Metric.TEMPERATURE_CELSIUS, value,
                    {**labels, "sensor": temp.text("Name") or temp.text("MemberId") or str(i)}, health)
        if temp.text("PhysicalContext") == "Intake":
            out += _one(Metric.INLET_TEMPERATURE_CELSIUS, value, labels, health)
    for i, fan in enumerate(doc.each("Fans")):
        metric = _FAN_UNITS.get(fan.text("ReadingUnits") or "")
        if metric is not None:
            out += _one(metric, fan.number("Reading"),
                        {**labels, "fan": fan.text("Name") or fan.text("MemberId") or str(i)}, fan.health())
    return out


async def _leak_groups(bmc: _Bmc, doc: _Doc, labels: dict[str, str]) -> list[SensorReading]:
    out = []
    for group in doc.each("LeakDetectorGroups"):
        for i, excerpt in enumerate(group.each("Detectors")):
            source = excerpt.text("DataSourceUri")
            name = _segment(source) if source else excerpt.text("DeviceName") or str(i)
            detector = await bmc.excerpt(excerpt, prop="DetectorState")
            if detector is not None:
                out += _leak(detector, {**labels, "detector": name})
    return out


async def _leak_detector(bmc: _Bmc, doc: _Doc, labels: dict[str, str]) -> list[SensorReading]:
    return _leak(doc, labels)


def _leak(doc: _Doc, labels: dict[str, str]) -> list[SensorReading]:
    state = doc.text("DetectorState")
    if state is None:
        return []
    if state not in _HEALTH:
        raise doc.malformed(("DetectorState",), f"unknown detector state {state!r}")
    return [SensorReading(Metric.LEAK_DETECTED, float(state != "OK"), labels, _HEALTH[state])]


@dataclass(frozen=True)
class _CircuitMetrics:
    power: Metric
    current: Metric
    voltage: Metric
    energy: Metric
    on: Metric | None = None


def _circuit(metrics: _CircuitMetrics) -> Parser:
    """Mains, branches and outlets share the Circuit/Outlet shape: a total excerpt, else one per phase."""

    async def parse(bmc: _Bmc, doc: _Doc, labels: dict[str, str]) -> list[SensorReading]:
        health = doc.health()
        out = []
        for total, per_phase, metric in (("PowerWatts", "PolyPhasePowerWatts", metrics.power),
                                         ("CurrentAmps", "PolyPhaseCurrentAmps", metrics.current),
                                         ("Voltage", "PolyPhaseVoltage", metrics.voltage)):
            if doc.get(total) is not None:
                out += _one(metric, await bmc.reading(doc, total), labels, health)
            elif (phases := doc.sub(per_phase)) is not None:
                for line in phases.data:
                    out += _one(metric, await bmc.reading(phases, line), {**labels, "phase": line}, health)
        out += _one(metrics.energy, await bmc.reading(doc, "EnergykWh"), labels, health)
        if metrics.on is not None:
            out += _one(metrics.on, _OUTLET_ON.get(doc.text("PowerState") or ""), labels, health)
        return out

    return parse


_mains = _circuit(_CircuitMetrics(Metric.PDU_INPUT_POWER_WATTS, Metric.PDU_INPUT_CURRENT_AMPS,
                                  Metric.PDU_INPUT_VOLTAGE_VOLTS, Metric.PDU_ENERGY_KWH))
_branch = _circuit(_CircuitMetrics(Metric.BRANCH_POWER_WATTS, Metric.BRANCH_CURRENT_AMPS,
                                   Metric.BRANCH_VOLTAGE_VOLTS, Metric.BRANCH_ENERGY_KWH))
_outlet = _circuit(_CircuitMetrics(Metric.OUTLET_POWER_WATTS, Metric.OUTLET_CURRENT_AMPS,
                                   Metric.OUTLET_VOLTAGE_VOLTS, Metric.OUTLET_ENERGY_KWH, Metric.OUTLET_ON))


# ------------------------------------------------------------------------------------------- discovery
async def _discover_server(bmc: _Bmc) -> list[_Leaf]:
    leaves: list[_Leaf] = []
    for uri in await bmc.members((await bmc.get(ROOT)).link("Chassis")):
        chassis = await bmc.get(uri)
        labels = {"chassis": _segment(uri)}
        # The newer PowerSubsystem/ThermalSubsystem win; the deprecated Power/Thermal are the fallback.
        if subsystem := chassis.link("PowerSubsystem"):
            for psu_uri in await bmc.members((await bmc.get(subsystem)).link("PowerSupplies")):
                psu = await bmc.get(psu_uri)
                if psu.absent():
                    continue
                psu_labels = {**labels, "psu": _segment(psu_uri)}
                leaves.append(_Leaf(psu_uri, _psu, psu_labels))
                if metrics := psu.link("Metrics"):
                    leaves.append(_Leaf(metrics, _psu_metrics, psu_labels))
            if environment := chassis.link("EnvironmentMetrics"):
                leaves.append(_Leaf(environment, _chassis_environment, labels))
        elif power := chassis.link("Power"):
            leaves.append(_Leaf(power, _legacy_power, labels))
        if subsystem := chassis.link("ThermalSubsystem"):
            thermal = await bmc.get(subsystem)
            if metrics := thermal.link("ThermalMetrics"):
                leaves.append(_Leaf(metrics, _thermal_metrics, labels))
            leaves += await bmc.leaves(thermal.link("Fans"), _fan, labels, "fan")
            leaves += await bmc.leaves(thermal.link("Pumps"), _pump, labels, "pump")
            leaves += await bmc.leaves(thermal.link("CoolantConnectors"), _coolant_connector, labels, "connector")
        elif legacy := chassis.link("Thermal"):
            leaves.append(_Leaf(legacy, _legacy_thermal, labels))
    return leaves


async def _discover_rack_pdus(bmc: _Bmc) -> list[_Leaf]:
    equipment = await bmc.get_link((await bmc.get(ROOT)).link("PowerEquipment"))
    leaves: list[_Leaf] = []
    for uri in await bmc.members(equipment.link("RackPDUs") if equipment else None):
        pdu = await bmc.get(uri)
        labels = {"pdu": _segment(uri)}
        leaves += await bmc.leaves(pdu.link("Mains"), _mains, labels, "input")
        leaves += await bmc.leaves(pdu.link("Branches"), _branch, labels, "branch")
        leaves += await bmc.leaves(pdu.link("Outlets"), _outlet, labels, "outlet")
        if metrics := pdu.link("Metrics"):
            leaves.append(_Leaf(metrics, _pdu_metrics, labels))
    return leaves


async def _discover_cdus(bmc: _Bmc) -> list[_Leaf]:
    equipment = await bmc.get_link((await bmc.get(ROOT)).link("ThermalEquipment"))
    leaves: list[_Leaf] = []
    for uri in await bmc.members(equipment.link("CDUs") if equipment else None):
        cdu = await bmc.get(uri)
        labels = {"cdu": _segment(uri)}
        leaves += await bmc.leaves(cdu.link("Pumps"), _pump, labels, "pump")
        leaves += await bmc.leaves(cdu.link("Filters"), _filter, labels, "filter")
        leaves += await bmc.leaves(cdu.link("Reservoirs"), _reservoir, labels, "reservoir")
        for loop in ("Primary", "Secondary"):
            leaves += await bmc.leaves(cdu.link(f"{loop}CoolantConnectors"), _coolant_connector,
                                       {**labels, "loop": loop.lower()}, "connector")
        if environment := cdu.link("EnvironmentMetrics"):
            leaves.append(_Leaf(environment, _cdu_environment, labels))
        if detection_uri := cdu.link("LeakDetection"):
            detection = await bmc.get(detection_uri)
            # The groups carry every detector's state as an excerpt: one GET instead of one per detector.
            if detection.get("LeakDetectorGroups") is not None:
                leaves.append(_Leaf(detection_uri, _leak_groups, labels))
            else:
                leaves += await bmc.leaves(detection.link("LeakDetectors"), _leak_detector, labels, "detector")
    return leaves


_DISCOVER: dict[DeviceKind, Callable[[_Bmc], Awaitable[list[_Leaf]]]] = {
    DeviceKind.SERVER: _discover_server,
    DeviceKind.RACK_PDU: _discover_rack_pdus,
    DeviceKind.CDU: _discover_cdus,
}


# ----------------------------------------------------------------------------------------- the poller
@dataclass
class _Plan:
    leaves: list[_Leaf]
    made_at: float


class _Bmc:
    """Per-BMC state: how we authenticate, the session to log out of, and the plan per device kind."""

    def __init__(self, poller: RedfishPoller, target: BmcTarget) -> None:
        self.poller = poller
        self.target = target
        self.auth: dict[str, str] | None = None  # None: not logged in yet
        self.session_url: URL | None = None
        self.login_lock = asyncio.Lock()
        self.plans: dict[DeviceKind, _Plan] = {}

    @property
    def name(self) -> str:
        return self.target.name

    async def get(self, uri: str) -> _Doc:
        status, _, body = await self._authenticated("GET", uri)
        _raise_for_status(self.name, status, uri)
        try:
            data = json.loads(body)
        except ValueError:
            raise MalformedReply(self.name, "reply is not JSON", field=uri) from None
        if not isinstance(data, dict):
            raise MalformedReply(self.name, "reply is not a JSON object", field=uri)
        return _Doc(self.name, uri, data)

    async def get_link(self, uri: str | None) -> _Doc | None:
        return None if uri is None else await self.get(uri)

    async def members(self, collection: str | None) -> list[str]:
        return [] if collection is None else (await self.get(collection)).members()

    async def leaves(self, collection: str | None, parse: Parser, labels: dict[str, str],
                     label: str) -> list[_Leaf]:
        return [_Leaf(uri, parse, {**labels, label: _segment(uri)}) for uri in await self.members(collection)]

    async def excerpt(self, doc: _Doc, *path: str, prop: str = "Reading") -> _Doc | None:
        """The excerpt object at ``path``; the linked Sensor resource instead only if it lacks ``prop``."""
        excerpt = doc.sub(*path)
        if excerpt is None or prop in excerpt.data:
            return excerpt
        source = excerpt.text("DataSourceUri")
        return excerpt if source is None else await self.get(source)

    async def reading(self, doc: _Doc, *path: str) -> float | None:
        excerpt = await self.excerpt(doc, *path)
        return None if excerpt is None else excerpt.number("Reading")

    async def _authenticated(self, method: str, uri: str) -> tuple[int, Mapping[str, str], bytes]:
        auth = await self._login_once()
        reply = await self.poller._send(self.target, method, uri, headers=auth)
        if reply[0] == 401 and "X-Auth-Token" in auth:
            # The session expired or was revoked: log in again (unless a concurrent request already did).
            if self.auth is auth:
                self.auth = None
            reply = await self.poller._send(self.target, method, uri, headers=await self._login_once())
        return reply

    async def _login_once(self) -> dict[str, str]:
        async with self.login_lock:
            if self.auth is None:
                await self._login()
            assert self.auth is not None
            return self.auth

    async def _login(self) -> None:
        creds = self.target.credentials
        status, headers, body = await self.poller._send(
            self.target, "POST", SESSIONS, json={"UserName": creds.username, "Password": creds.password.reveal()})
        token = headers.get("X-Auth-Token")
        if status in (401, 403):
            raise AuthFailed(self.name, f"login refused (HTTP {status})")
        if status < 300 and token:
            self.auth = {"X-Auth-Token": token}
            location = headers.get("Location") or _odata_id(body)
            self.session_url = self.target.url.with_path(URL(location).path) if location else None
        elif status < 300 or status in (404, 405, 501):
            # No session service (sushy-static answers POST with 204 and issues nothing): basic auth.
            pair = f"{creds.username}:{creds.password.reveal()}".encode()
            self.auth = {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
            self.session_url = None
        else:
            raise MalformedReply(self.name, f"login answered HTTP {status}", field=SESSIONS)

    async def logout(self) -> None:
        if self.session_url is None or self.auth is None:
            return
        url, auth = self.session_url, self.auth
        self.session_url = self.auth = None
        await self.poller._send(self.target, "DELETE", url.path, headers=auth)


def _odata_id(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    value = data.get("@odata.id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _raise_for_status(bmc: str, status: int, uri: str) -> None:
    if status in (401, 403):
        raise AuthFailed(bmc, f"request refused (HTTP {status})", field=uri)
    if not 200 <= status < 300:
        raise MalformedReply(bmc, f"HTTP {status}", field=uri)


class RedfishPoller:
    """Reads telemetry from many Redfish services over one shared aiohttp session.

    Use one per daemon; ``await close()`` (or ``async with``) logs out of every session and closes the
    connections. Scheduling is the caller's: each BMC on its own timer, calling ``poll``.
    """

    def __init__(self, *, max_in_flight: int = 256, keepalive_timeout: float = 120.0,
                 rediscover_after: float = 3600.0) -> None:
        self._max_in_flight = max_in_flight
        self._keepalive_timeout = keepalive_timeout
        self._rediscover_after = rediscover_after
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._session: aiohttp.ClientSession | None = None
        self._bmcs: dict[tuple[str, str, int | None], _Bmc] = {}
        self._ca_contexts: dict[Path, ssl.SSLContext] = {}
        # aiohttp keys its connection pool on the ``ssl`` argument, and a Fingerprint compares by identity:
        # a new one per request would mean a new connection (and TLS handshake) per request, while the
        # idle ones pile up until their keep-alive ends. One object per pin keeps the connection reused.
        self._fingerprints: dict[bytes, aiohttp.Fingerprint] = {}

    async def __aenter__(self) -> RedfishPoller:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def poll(self, target: BmcTarget, kind: DeviceKind) -> list[SensorReading]:
        bmc = self._bmc(target)
        try:
            plan = bmc.plans.get(kind)
            if plan is None or time.monotonic() - plan.made_at > self._rediscover_after:
                plan = bmc.plans[kind] = _Plan(await _DISCOVER[kind](bmc), time.monotonic())
            readings: list[SensorReading] = []
            for leaf in plan.leaves:
                readings += await leaf.parse(bmc, await bmc.get(leaf.uri), {**target.labels, **leaf.labels})
        except DriverError:
            bmc.plans.pop(kind, None)  # the device may have changed: walk its collections again next time
            raise
        return readings

    async def poll_server(self, target: BmcTarget) -> list[SensorReading]:
        return await self.poll(target, DeviceKind.SERVER)

    async def poll_rack_pdu(self, target: BmcTarget) -> list[SensorReading]:
        return await self.poll(target, DeviceKind.RACK_PDU)

    async def poll_cdu(self, target: BmcTarget) -> list[SensorReading]:
        return await self.poll(target, DeviceKind.CDU)

    async def forget(self, target: BmcTarget) -> None:
        """Log out of ``target``'s session (best effort) and drop its plans: it is no longer polled."""
        bmc = self._bmcs.pop((target.scheme, target.address, target.port), None)
        if bmc is not None:
            with contextlib.suppress(DriverError):
                await bmc.logout()

    async def close(self) -> None:
        """Log out of every session (best effort: a BMC that is down keeps its session until it expires)."""
        if self._session is None:
            return
        try:
            await asyncio.gather(*(bmc.logout() for bmc in self._bmcs.values()), return_exceptions=True)
        finally:  # cut short by the caller's deadline, too: the connections are closed all the same
            session, self._session = self._session, None
            self._bmcs.clear()
            await session.close()

    def _bmc(self, target: BmcTarget) -> _Bmc:
        key = (target.scheme, target.address, target.port)
        bmc = self._bmcs.get(key)
        if bmc is None:
            bmc = self._bmcs[key] = _Bmc(self, target)
        bmc.target = target  # the daemon may have changed its credentials, deadline or labels
        return bmc

    def _ssl(self, target: BmcTarget) -> ssl.SSLContext | aiohttp.Fingerprint | bool:
        if target.fingerprint is not None:
            pin = target._pin()
            if pin not in self._fingerprints:
                self._fingerprints[pin] = aiohttp.Fingerprint(pin)
            return self._fingerprints[pin]
        if target.ca_bundle is not None:
            # Building a context loads the bundle: do it once per file, not per request.
            if target.ca_bundle not in self._ca_contexts:
                self._ca_contexts[target.ca_bundle] = ssl.create_default_context(cafile=target.ca_bundle)
            return self._ca_contexts[target.ca_bundle]
        return True  # the system CAs, verified

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_in_flight, limit_per_host=1,
                                             keepalive_timeout=self._keepalive_timeout)
            # No cookie jar: sessions are tokens, and a jar costs a filter per request and an update per reply.
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def _send(self, target: BmcTarget, method: str, uri: str, *, headers: Mapping[str, str] | None = None,
                    json: object = None) -> tuple[int, Mapping[str, str], bytes]:
        """One request under the global bound and the target's deadline; transport errors in our terms."""
        url = target.url_for(uri)
        async with self._in_flight:
            try:
                async with self._client().request(
                        method, url, headers=headers, json=json, ssl=self._ssl(target), allow_redirects=False,
                        timeout=target.deadline) as response:
                    return response.status, response.headers, await response.read()
            except aiohttp.ServerFingerprintMismatch as exc:
                raise TlsMismatch(target.name, "certificate does not match the pinned fingerprint",
                                  seen_fingerprint=exc.got.hex(), expected_fingerprint=exc.expected.hex()) from exc
            except aiohttp.ClientSSLError as exc:
                raise TlsMismatch(target.name, f"certificate does not verify: {exc.os_error}") from exc
            except TimeoutError as exc:
                raise Timeout(target.name, f"no answer within {target.timeout:g} s", field=uri) from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise BmcUnreachable(target.name, f"{type(exc).__name__}: {exc}", field=uri) from exc

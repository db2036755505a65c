"""The simulated fleet: Redfish BMCs over HTTP(S), SNMPv3 PDUs (snmpsim), IPMI BMCs (ipmi_sim), and
blackholed addresses for discovery sweeps. Loopback only (127.0.0.0/8).

Redfish: one server process serves a slice of the fleet, one listening socket per BMC address
(``127.NET.x.y:PORT``), with a hand-written HTTP/1.1 server on asyncio (an aiohttp server costs several
times more CPU per request, and the fleet shares the 2 cores with the poller under test). Each BMC has a
service root, SessionService (login/logout, tokens checked), Systems/1 with PowerState, Chassis/1 with the
legacy Power and Thermal resources (readings vary per reply), and answers after a random latency. Roles:

* ``healthy``: as above;
* ``tarpit``: the kernel accepts the connection, nothing ever answers (not even the TLS handshake);
* ``failing``: service root and login work, every other GET answers 500/503 with an HTML page or an HTML
  "error page" with status 200;
* ``blackhole``: a dead address for discovery: a TCP listener that is never accepted from and a UDP socket
  on the IPMI port that is never read, so probes time out as they do against an unused address (on loopback
  a closed port would refuse at once, which no real network does).

Run a slice: ``python -m bench.fleet redfish SPEC.json`` (prints ``ready N`` when listening, stops on
SIGTERM, on EOF of stdin, or after ``max_seconds``). ``RedfishFleet`` starts and stops such processes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USERNAME, PASSWORD = "admin", "password"
REDFISH_PORT = 8443
PER_PROCESS = 2500  # Redfish BMCs per server process (fds: one listener + one connection each)


def raise_fd_limit(want: int = 262_144) -> int:
    """Raise RLIMIT_NOFILE as far as allowed (root may go past the hard limit); the soft limit reached."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (want, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(target, soft), max(target, hard)))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def address(net: int, i: int) -> str:
    """BMC ``i`` of fleet ``net``: 127.NET.x.y, 250 per /24 (y = 1..250)."""
    if not 0 <= i < 250 * 256:
        raise ValueError("at most 64,000 BMCs per fleet")
    return f"127.{net}.{i // 250}.{i % 250 + 1}"


def role(i: int, tarpit_share: float = 0.0, failing_share: float = 0.0) -> str:
    """Deterministic and spread out: the same index has the same role in the server and in the poller."""
    u = ((i * 2654435761) % 2**32) / 2**32
    if u < tarpit_share:
        return "tarpit"
    if u < tarpit_share + failing_share:
        return "failing"
    return "healthy"


# ------------------------------------------------------------------------------------- Redfish bodies
def _dump(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _link(path: str) -> dict[str, str]:
    return {"@odata.id": path}


def _root(bmc_uuid: str) -> bytes:
    return _dump({
        "@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot", "Id": "RootService",
        "Name": "Root Service", "RedfishVersion": "1.6.0", "UUID": bmc_uuid,
        "Systems": _link("/redfish/v1/Systems"), "Chassis": _link("/redfish/v1/Chassis"),
        "Managers": _link("/redfish/v1/Managers"), "SessionService": _link("/redfish/v1/SessionService"),
        "Links": {"Sessions": _link("/redfish/v1/SessionService/Sessions")},
    })


def _collection(path: str, kind: str, members: list[str]) -> bytes:
    return _dump({"@odata.id": path, "@odata.type": f"#{kind}Collection.{kind}Collection", "Name": f"{kind}s",
                  "Members@odata.count": len(members), "Members": [_link(m) for m in members]})


def _system(i: int, bmc_uuid: str) -> bytes:
    return _dump({
        "@odata.id": "/redfish/v1/Systems/1", "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
        "Id": "1", "Name": "System", "SystemType": "Physical", "Manufacturer": "Baie Sim", "Model": "SimServer 1U",
        "SerialNumber": f"SIM{i:07d}", "UUID": bmc_uuid, "PowerState": "On", "BiosVersion": "1.2.3",
        "Status": {"State": "Enabled", "Health": "OK"},
        "Boot": {"BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideTarget": "None",
                 "BootSourceOverrideMode": "UEFI",
                 "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Hdd", "Cd", "BiosSetup"]},
        "Links": {"Chassis": [_link("/redfish/v1/Chassis/1")], "ManagedBy": [_link("/redfish/v1/Managers/1")]},
        "Actions": {"#ComputerSystem.Reset": {
            "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "GracefulShutdown", "ForceRestart"]}},
    })


_CHASSIS = _dump({
    "@odata.id": "/redfish/v1/Chassis/1", "@odata.type": "#Chassis.v1_10_0.Chassis", "Id": "1", "Name": "Chassis",
    "ChassisType": "RackMount", "PowerState": "On", "Status": {"State": "Enabled", "Health": "OK"},
    "Power": _link("/redfish/v1/Chassis/1/Power"), "Thermal": _link("/redfish/v1/Chassis/1/Thermal"),
    "Links": {"ComputerSystems": [_link("/redfish/v1/Systems/1")], "ManagedBy": [_link("/redfish/v1/Managers/1")]},
})
_MANAGER = _dump({"@odata.id": "/redfish/v1/Managers/1", "@odata.type": "#Manager.v1_5_0.Manager", "Id": "1",
                  "Name": "BMC", "ManagerType": "BMC", "FirmwareVersion": "2.61",
                  "Status": {"State": "Enabled", "Health": "OK"}})
_SESSION_SERVICE = _dump({"@odata.id": "/redfish/v1/SessionService", "@odata.type":
                          "#SessionService.v1_1_6.SessionService", "Id": "SessionService", "Name": "Sessions",
                          "ServiceEnabled": True, "SessionTimeout": 1800,
                          "Sessions": _link("/redfish/v1/SessionService/Sessions")})
_OK = {"State": "Enabled", "Health": "OK"}


def _power(rng: random.Random) -> bytes:
    psus = [{"@odata.id": f"/redfish/v1/Chassis/1/Power#/PowerSupplies/{n}", "MemberId": str(n),
             "Name": f"PSU{n + 1}", "Model": "PWS-1K", "SerialNumber": f"PSU{n}X", "PowerSupplyType": "AC",
             "LineInputVoltageType": "ACMidLine", "LineInputVoltage": 230, "PowerCapacityWatts": 800,
             "PowerInputWatts": rng.randint(150, 260), "LastPowerOutputWatts": rng.randint(140, 240),
             "Status": _OK} for n in range(2)]
    consumed = sum(p["PowerInputWatts"] for p in psus)
    return _dump({
        "@odata.id": "/redfish/v1/Chassis/1/Power", "@odata.type": "#Power.v1_5_0.Power", "Id": "Power",
        "Name": "Power",
        "PowerControl": [{"@odata.id": "/redfish/v1/Chassis/1/Power#/PowerControl/0", "MemberId": "0",
                          "Name": "System Power Control", "PowerConsumedWatts": consumed,
                          "PowerCapacityWatts": 1600,
                          "PowerMetrics": {"IntervalInMin": 1, "MinConsumedWatts": consumed - 20,
                                           "MaxConsumedWatts": consumed + 35, "AverageConsumedWatts": consumed - 4},
                          "Status": _OK}],
        "Voltages": [{"@odata.id": f"/redfish/v1/Chassis/1/Power#/Voltages/{n}", "MemberId": str(n), "Name": name,
                      "ReadingVolts": volts, "PhysicalContext": "SystemBoard", "Status": _OK}
                     for n, (name, volts) in enumerate((("12V", 12.1), ("5V", 5.02), ("3.3V", 3.31)))],
        "PowerSupplies": psus,
    })


def _thermal(rng: random.Random) -> bytes:
    sensors = [("Inlet Temp", "Intake", 18, 27), ("Exhaust Temp", "Exhaust", 30, 45), ("CPU1 Temp", "CPU", 40, 75),
               ("CPU2 Temp", "CPU", 40, 75), ("DIMM Temp", "Memory", 30, 50), ("PCH Temp", "SystemBoard", 40, 60),
               ("NVMe Temp", "StorageDevice", 30, 55), ("PSU Temp", "PowerSupply", 30, 50)]
    return _dump({
        "@odata.id": "/redfish/v1/Chassis/1/Thermal", "@odata.type": "#Thermal.v1_4_0.Thermal", "Id": "Thermal",
        "Name": "Thermal",
        "Temperatures": [{"@odata.id": f"/redfish/v1/Chassis/1/Thermal#/Temperatures/{n}", "MemberId": str(n),
                          "Name": name, "SensorNumber": n + 1, "PhysicalContext": context,
                          "ReadingCelsius": rng.randint(lo, hi), "UpperThresholdCritical": hi + 20,
                          "UpperThresholdFatal": hi + 30, "Status": _OK}
                         for n, (name, context, lo, hi) in enumerate(sensors)],
        "Fans": [{"@odata.id": f"/redfish/v1/Chassis/1/Thermal#/Fans/{n}", "MemberId": str(n), "Name": f"FAN{n + 1}",
                  "PhysicalContext": "SystemBoard", "Reading": rng.randint(4000, 9000), "ReadingUnits": "RPM",
                  "LowerThresholdCritical": 1000, "Status": _OK} for n in range(6)],
    })


_HTML_ERROR = (b"<html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1>"
               b"<p>The server encountered an internal error.</p><hr><address>lighttpd/1.4.35</address></body></html>")
_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
            404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error", 503: "Service Unavailable"}
_VARIANTS = 32


def _response(status: int, body: bytes = b"", ctype: str = "application/json", extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"OData-Version: 4.0\r\nCache-Control: no-cache\r\n{extra}\r\n")
    return head.encode() + body


# ------------------------------------------------------------------------------------- Redfish server
class _Bmc:
    __slots__ = ("index", "role", "root", "system", "tokens", "sessions", "failures")

    def __init__(self, index: int, role_: str, run_id: str) -> None:
        self.index, self.role = index, role_
        bmc_uuid = str(uuid.UUID(int=(int(run_id, 16) << 64) | index))
        self.root = _root(bmc_uuid)
        self.system = _system(index, bmc_uuid)
        self.tokens: dict[str, str] = {}  # session id -> token
        self.sessions = 0
        self.failures = 0


class _Fleet:
    def __init__(self, latency: tuple[float, float], keepalive: float) -> None:
        self.latency = latency
        self.keepalive = keepalive
        rng = random.Random(7)
        self.power = [_power(rng) for _ in range(_VARIANTS)]
        self.thermal = [_thermal(rng) for _ in range(_VARIANTS)]
        self.basic = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        self.connections: set[_Http] = set()
        self.requests = 0
        self.rng = random.Random()

    def answer(self, bmc: _Bmc, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        self.requests += 1
        path = path.split("?", 1)[0]
        if len(path) > 1:
            path = path.rstrip("/")
        if method == "GET" and path in ("/redfish/v1", "/redfish"):
            return _response(200, bmc.root)
        if path == "/redfish/v1/SessionService/Sessions" and method == "POST":
            try:
                login = json.loads(body)
            except ValueError:
                return _response(400, b'{"error":{"code":"Base.1.0.MalformedJSON"}}')
            if login.get("UserName") != USERNAME or login.get("Password") != PASSWORD:
                return _response(401, b'{"error":{"code":"Base.1.0.NoValidSession"}}')
            bmc.sessions += 1
            sid = str(bmc.sessions)
            token = os.urandom(16).hex()
            bmc.tokens[sid] = token
            if len(bmc.tokens) > 64:  # a BMC keeps a bounded number of sessions: the oldest goes
                bmc.tokens.pop(next(iter(bmc.tokens)))
            location = f"/redfish/v1/SessionService/Sessions/{sid}"
            return _response(201, _dump({"@odata.id": location, "Id": sid, "UserName": USERNAME}),
                             extra=f"X-Auth-Token: {token}\r\nLocation: {location}\r\n")
        token = headers.get("x-auth-token")
        if not ((token and token in bmc.tokens.values()) or headers.get("authorization") == self.basic):
            return _response(401, b'{"error":{"code":"Base.1.0.NoValidSession"}}')
        if method == "DELETE" and path.startswith("/redfish/v1/SessionService/Sessions/"):
            sid = path.rsplit("/", 1)[1]
            return _response(204) if bmc.tokens.pop(sid, None) else _response(404)
        if method != "GET":
            return _response(405, b'{"error":{"code":"Base.1.0.ActionNotSupported"}}')
        if bmc.role == "failing":
            bmc.failures += 1
            kind = bmc.failures % 3
            if kind == 0:
                return _response(500, _HTML_ERROR, "text/html")
            if kind == 1:
                return _response(200, _HTML_ERROR, "text/html")
            return _response(503, _HTML_ERROR, "text/html")
        found = self.resource(bmc, path)
        return _response(200, found) if found else _response(404, b'{"error":{"code":"Base.1.0.ResourceMissingAtURI"}}')

    def resource(self, bmc: _Bmc, path: str) -> bytes | None:
        if path == "/redfish/v1/Chassis/1/Power":
            return self.power[self.rng.randrange(_VARIANTS)]
        if path == "/redfish/v1/Chassis/1/Thermal":
            return self.thermal[self.rng.randrange(_VARIANTS)]
        return {
            "/redfish/v1/Systems/1": bmc.system,
            "/redfish/v1/Chassis/1": _CHASSIS,
            "/redfish/v1/Managers/1": _MANAGER,
            "/redfish/v1/SessionService": _SESSION_SERVICE,
            "/redfish/v1/Systems": _SYSTEMS,
            "/redfish/v1/Chassis": _CHASSIS_COLLECTION,
            "/redfish/v1/Managers": _MANAGERS,
            "/redfish/v1/SessionService/Sessions": _SESSIONS,
        }.get(path)


_SYSTEMS = _collection("/redfish/v1/Systems", "ComputerSystem", ["/redfish/v1/Systems/1"])
_CHASSIS_COLLECTION = _collection("/redfish/v1/Chassis", "Chassis", ["/redfish/v1/Chassis/1"])
_MANAGERS = _collection("/redfish/v1/Managers", "Manager", ["/redfish/v1/Managers/1"])
_SESSIONS = _collection("/redfish/v1/SessionService/Sessions", "Session", [])


class _Http(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, one request answered at a time, each after the fleet's latency."""

    def __init__(self, fleet: _Fleet, bmc: _Bmc) -> None:
        self.fleet, self.bmc = fleet, bmc
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.pending: collections.deque[tuple[str, str, dict[str, str], bytes]] = collections.deque()
        self.busy = False
        self.last = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.fleet.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fleet.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.last = time.monotonic()
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    self.transport.close()
                return
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            try:
                method, target, _ = lines[0].split(" ", 2)
            except ValueError:
                self.transport.close()
                return
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            self.pending.append((method, target, headers, body))
            if not self.busy:
                self._schedule()

    def _schedule(self) -> None:
        self.busy = True
        lo, hi = self.fleet.latency
        asyncio.get_running_loop().call_later(self.fleet.rng.uniform(lo, hi), self._answer)

    def _answer(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        method, target, headers, body = self.pending.popleft()
        close = headers.get("connection", "").lower() == "close"
        reply = self.fleet.answer(self.bmc, method, target, headers, body)
        if close:
            reply = reply.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
        self.transport.write(reply)
        self.last = time.monotonic()
        if close:
            self.transport.close()
        elif self.pending:
            self._schedule()
        else:
            self.busy = False


class _Tarpit(asyncio.Protocol):
    """Accepts and never answers (holds the connection until the client gives up)."""

    def __init__(self, fleet: _Fleet) -> None:
        self.fleet = fleet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        pass


def _listen(host: str, port: int, kind: int = socket.SOCK_STREAM, backlog: int = 512) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    if kind == socket.SOCK_STREAM:
        sock.listen(backlog)
    sock.setblocking(False)
    return sock


async def _serve(spec: dict) -> None:
    loop = asyncio.get_running_loop()
    fleet = _Fleet(tuple(x / 1000 for x in spec["latency_ms"]), spec["keepalive"])
    context = None
    if spec.get("cert"):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(spec["cert"], spec["key"])
    servers, holes = [], []
    counts = collections.Counter()
    for index, host, role_ in spec["bmcs"]:
        counts[role_] += 1
        if role_ == "blackhole":
            holes.append(_listen(host, spec["port"], backlog=0))
            if spec.get("udp_port"):
                holes.append(_listen(host, spec["udp_port"], socket.SOCK_DGRAM))
            continue
        sock = _listen(host, spec["port"])
        if role_ == "tarpit":
            servers.append(await loop.create_server(lambda: _Tarpit(fleet), sock=sock))
        else:
            bmc = _Bmc(index, role_, spec["run_id"])
            tls = {"ssl": context, "ssl_handshake_timeout": 30} if context else {}
            servers.append(await loop.create_server(lambda bmc=bmc: _Http(fleet, bmc), sock=sock, **tls))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 4096) else None)
    print(f"ready {json.dumps(dict(counts))}", flush=True)
    deadline = time.monotonic() + spec.get("max_seconds", 3600)
    while not stop.is_set() and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5)
        idle_before = time.monotonic() - fleet.keepalive
        for conn in [c for c in fleet.connections if c.last < idle_before and not c.busy]:
            if conn.transport:
                conn.transport.close()
    for server in servers:
        server.close()
    for sock in holes:
        sock.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"stats {json.dumps({'requests': fleet.requests, 'cpu': usage.ru_utime + usage.ru_stime})}", flush=True)


# --------------------------------------------------------------------------------------- launchers
class _Child:
    """A fleet process: started with a spec, ready when it prints ``ready``; stopped by PID."""

    def __init__(self, argv: list[str], log: Path, ready_timeout: float = 120) -> None:
        self.log_path = log
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     cwd=REPO, start_new_session=True)
        self.ready_line = ""
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if line.startswith("ready"):
                self.ready_line = line.strip()
                return
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"fleet process {argv[:4]} did not start; see {log}")

    def stop(self, timeout: float = 15) -> str:
        out = ""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                out = self.proc.communicate(timeout=timeout)[0].decode()
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return out


class _Processes:
    """What every fleet shares: its processes (each with ``proc`` and ``stop()``), their PIDs, stopping them."""

    children: list

    def pids(self) -> list[int]:
        return [child.proc.pid for child in self.children]

    def __exit__(self, *exc: object) -> None:
        for child in self.children:
            child.stop()
        self.children.clear()


@dataclass
class RedfishFleet(_Processes):
    """Redfish BMCs ``address(net, i)`` for i in range(count), served by ceil(count / PER_PROCESS) processes.

    ``hosts`` replaces the generated addresses (discovery: live and blackholed addresses of a range).
    """

    count: int
    workdir: Path
    net: int = 1
    port: int = REDFISH_PORT
    cert: Path | None = None
    key: Path | None = None
    latency_ms: tuple[float, float] = (20.0, 100.0)
    tarpit_share: float = 0.0
    failing_share: float = 0.0
    keepalive: float = 300.0
    max_seconds: float = 3600.0
    hosts: list[tuple[int, str, str]] | None = None
    udp_port: int | None = None
    per_process: int = PER_PROCESS
    children: list[_Child] = field(default_factory=list)

    def bmcs(self) -> list[tuple[int, str, str]]:
        if self.hosts is not None:
            return self.hosts
        return [(i, address(self.net, i), role(i, self.tarpit_share, self.failing_share)) for i in range(self.count)]

    def __enter__(self) -> RedfishFleet:
        bmcs = self.bmcs()
        run_id = os.urandom(8).hex()
        try:
            for n, start in enumerate(range(0, len(bmcs), self.per_process)):
                spec = {"bmcs": bmcs[start:start + self.per_process], "port": self.port,
                        "cert": str(self.cert) if self.cert else None, "key": str(self.key) if self.key else None,
                        "latency_ms": list(self.latency_ms), "keepalive": self.keepalive, "run_id": run_id,
                        "max_seconds": self.max_seconds, "udp_port": self.udp_port}
                path = self.workdir / f"fleet-{self.net}-{n}.json"
                path.write_text(json.dumps(spec))
                self.children.append(_Child([sys.executable, "-m", "bench.fleet", "redfish", str(path)],
                                            self.workdir / f"fleet-{self.net}-{n}.log"))
        except BaseException:
            self.__exit__()
            raise
        return self



# ------------------------------------------------------------------------------------------- SNMP fleet
SNMP_PORT = 1161
APC = "1.3.6.1.4.1.318.1.1.26"


def pdu_address(i: int) -> str:
    return f"127.4.{i // 250}.{i % 250 + 1}"


def write_pdu_snmprec(path: Path, i: int, outlets: int = 24) -> None:
    """An APC rPDU2 with ``outlets`` metered, switched outlets (the profile drivers.profiles.snmp_pdu reads)."""
    rng = random.Random(i)
    rows = [("1.3.6.1.2.1.1.1.0", "4", f"APC Web/SNMP Management Card (MB:v4.1.0 PF:v6.9.6) bench pdu {i}"),
            ("1.3.6.1.2.1.1.2.0", "6", "1.3.6.1.4.1.318.1.3.4.6"),
            ("1.3.6.1.2.1.1.3.0", "67", str(123456789 + i)),
            ("1.3.6.1.2.1.1.5.0", "4", f"pdu-{i:04d}"),
            (f"{APC}.4.3.1.5.1", "2", str(rng.randint(100, 400))),
            (f"{APC}.4.3.1.9.1", "2", str(rng.randint(10000, 90000)))]
    for phase in (1, 2, 3):
        rows += [(f"{APC}.6.3.1.5.{phase}", "2", str(rng.randint(20, 120))),
                 (f"{APC}.6.3.1.6.{phase}", "2", "230"),
                 (f"{APC}.6.3.1.7.{phase}", "2", str(rng.randint(50, 250)))]
    for column, make in ((f"{APC}.9.2.3.1.3", lambda n: ("4", f"pdu{i:04d}-out{n:02d}")),
                         (f"{APC}.9.2.3.1.5", lambda n: ("2", "2" if n % 11 else "1")),
                         (f"{APC}.9.4.3.1.6", lambda n: ("2", str(rng.randint(0, 40)))),
                         (f"{APC}.9.4.3.1.7", lambda n: ("2", str(rng.randint(0, 900)))),
                         (f"{APC}.9.4.3.1.11", lambda n: ("2", str(rng.randint(1000, 99999))))):
        for n in range(1, outlets + 1):
            tag, value = make(n)
            rows.append((f"{column}.{n}", tag, value))

    def key(row: tuple[str, str, str]) -> list[int]:
        return [int(p) for p in row[0].split(".")]

    path.write_text("".join(f"{oid}|{tag}|{value}\n" for oid, tag, value in sorted(rows, key=key)))


@dataclass
class SnmpFleet(_Processes):
    """``count`` PDUs over ``processes`` snmpsim processes. PDU i answers at pdu_address(i):SNMP_PORT, v3
    context ``context(i)`` (every endpoint of a process serves that process's data files)."""

    count: int
    workdir: Path
    processes: int = 4
    # Distinct data files per process: snmpsim keeps at most 31 open and reopens (re-indexes) the others on
    # demand, so 250 files per process spend their time reopening. PDU i answers context pdu-(i % this).
    personalities: int = 24
    user: str = "baie"
    auth_key: str = "bench-auth-key-1"
    priv_key: str = "bench-priv-key-1"
    outlets: int = 24
    children: list = field(default_factory=list)

    def context(self, i: int) -> str:
        return f"pdu-{i % self.personalities:04d}"

    def slices(self) -> list[range]:
        per = -(-self.count // self.processes)
        return [range(s, min(s + per, self.count)) for s in range(0, self.count, per)]

    def __enter__(self) -> SnmpFleet:
        import snmpsim

        from tests.lab.common import Process

        variation = [REPO.parent / "shared" / "peers" / "snmpsim" / "variation",
                     Path(snmpsim.__file__).parent / "variation"]
        try:
            for n, pdus in enumerate(self.slices()):
                base = self.workdir / f"snmp-{n}"
                data = base / "data"
                (base / "cache").mkdir(parents=True, exist_ok=True)
                data.mkdir(parents=True, exist_ok=True)
                for k in range(min(self.personalities, len(pdus))):
                    write_pdu_snmprec(data / f"pdu-{k:04d}.snmprec", n * 1000 + k, self.outlets)
                args = base / "args"
                args.touch(mode=0o600)
                args.write_text("\n".join(
                    [f"--v3-user={self.user}", f"--v3-auth-key={self.auth_key}", "--v3-auth-proto=SHA256",
                     f"--v3-priv-key={self.priv_key}", "--v3-priv-proto=AES128"]
                    + [f"--agent-udpv4-endpoint={pdu_address(i)}:{SNMP_PORT}" for i in pdus]) + "\n")
                argv = [sys.executable, "-m", "snmpsim.commands.responder", f"--cache-dir={base / 'cache'}",
                        "--log-level=error", *[f"--variation-modules-dir={d}" for d in variation],
                        f"--v3-engine-id=80001f8804626169{n:08x}", f"--data-dir={data}",
                        f"--args-from-file={args}"]
                self.children.append(Process(argv, log=base / "snmpsim.log", env={"SNMPSIM_ALLOW_ROOT": "true"}))
        except BaseException:
            self.__exit__()
            raise
        return self



# ------------------------------------------------------------------------------------------- IPMI fleet
IPMI_PORT = 9623
IPMI_PEER = REPO.parent / "shared" / "peers" / "ipmi_sim"


def ipmi_address(group: int, i: int) -> str:
    return f"127.3.{group}.{i + 1}"


@dataclass
class IpmiFleet(_Processes):
    """``count`` IPMI BMCs, 100 per ipmi_sim process (the peer's make_fleet.py), BMC i of group g on
    127.3.g.(i+1):IPMI_PORT, user admin/password."""

    count: int
    workdir: Path
    per_process: int = 100
    children: list = field(default_factory=list)

    def addresses(self) -> list[str]:
        return [ipmi_address(n // self.per_process, n % self.per_process) for n in range(self.count)]

    def __enter__(self) -> IpmiFleet:
        from tests.lab.common import Process

        if not shutil.which("ipmi_sim"):
            raise FileNotFoundError("ipmi_sim is not installed (apt-get install openipmi)")
        try:
            for group, start in enumerate(range(0, self.count, self.per_process)):
                n = min(self.per_process, self.count - start)
                run = self.workdir / f"ipmi-{group}"
                subprocess.run([sys.executable, IPMI_PEER / "make_fleet.py", run, str(n),
                                "--base-ip", f"127.3.{group}.", "--port", str(IPMI_PORT),
                                "--name", f"bench-{group}"], check=True, capture_output=True)
                self.children.append(Process(["ipmi_sim", "-c", "lan.conf", "-f", "bmc.emu", "-p", "-n"],
                                             log=run / "ipmi_sim.log", cwd=run))
        except BaseException:
            self.__exit__()
            raise
        return self



# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet")
    parser.add_argument("kind", choices=["redfish"])
    parser.add_argument("spec", type=Path)
    args = parser.parse_args()
    raise_fd_limit()
    # uvloop (the daemon's loop): its TLS costs the simulator about half the CPU of asyncio's, and the fleet
    # shares the machine's two cores with the daemon under test.
    import uvloop
    uvloop.run(_serve(json.loads(args.spec.read_text())))


if __name__ == "__main__":
    main()

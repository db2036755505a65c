"""The aiohttp telemetry path against real peers: sushy-static serving the recorded DMTF trees (values are
checked against the tree files themselves), small aiohttp servers that misbehave, and a small Redfish
service of our own that issues session tokens and counts what the poller does to it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from drivers.base import (
    AuthFailed,
    BmcUnreachable,
    Credentials,
    MalformedReply,
    Metric,
    Secret,
    SensorReading,
    Timeout,
    TlsMismatch,
)
from drivers.redfish_telemetry import BmcTarget, RedfishPoller
from tests.lab.common import MOCKUPS, Process, free_port, tcp_open, tool, wait_until
from tests.lab.redfish import make_certificate

pytestmark = pytest.mark.skipif(not MOCKUPS.is_dir(), reason=f"Redfish mockups not found at {MOCKUPS}")

PASSWORD = "s3cret-never-shown"
CREDS = Credentials("telemetry", Secret(PASSWORD))
TREES = ("public-pdu", "public-cooling-unit", "public-liquid-cooled-server", "public-rackmount1")
LEGACY = "legacy-rackmount1"  # public-rackmount1 with its PowerSubsystem/ThermalSubsystem links removed


# ---------------------------------------------------------------------------------------------- helpers
def doc(tree: str, uri: str) -> dict:
    """A resource read straight from the mockup files."""
    return json.loads((MOCKUPS / tree / uri.removeprefix("/redfish/v1").strip("/") / "index.json").read_text())


def members(tree: str, uri: str) -> dict[str, dict]:
    """The members of a collection in the mockup files, by the last segment of their URI."""
    return {m["@odata.id"].rsplit("/", 1)[-1]: doc(tree, m["@odata.id"]) for m in doc(tree, uri)["Members"]}


def values(readings: list[SensorReading], metric: Metric, *labels: str) -> dict:
    """``{label value (or tuple of values): reading}`` for one metric."""
    found = {}
    for r in readings:
        if r.metric == metric:
            key = tuple(r.labels.get(label) for label in labels)
            assert key not in found, f"two {metric} readings for {key}"
            found[key[0] if len(key) == 1 else key] = r.value
    return found


def target(port: int, **kwargs) -> BmcTarget:
    return BmcTarget("127.0.0.1", CREDS, port=port, scheme=kwargs.pop("scheme", "http"), **kwargs)


# ---------------------------------------------------------------------------------------------- peers
@dataclass
class Trees:
    ports: dict[str, int]  # tree name (or LEGACY, or "tls": public-pdu over HTTPS) -> sushy-static port
    tls_cert: Path
    tls_sha256: str


@pytest.fixture(scope="module")
def sushy(tmp_path_factory) -> Iterator[Trees]:
    """sushy-static for each tree, the legacy-only copy, and public-pdu over HTTPS."""
    scratch = tmp_path_factory.mktemp("sushy")
    legacy = scratch / LEGACY
    shutil.copytree(MOCKUPS / "public-rackmount1", legacy)
    chassis_file = legacy / "Chassis/1U/index.json"
    chassis = json.loads(chassis_file.read_text())
    del chassis["PowerSubsystem"], chassis["ThermalSubsystem"]
    chassis_file.write_text(json.dumps(chassis))
    cert, key, sha256 = make_certificate(scratch)

    trees = {name: (MOCKUPS / name, []) for name in TREES}
    trees[LEGACY] = (legacy, [])
    trees["tls"] = (MOCKUPS / "public-pdu", ["-c", str(cert), "-k", str(key)])
    ports = {name: free_port() for name in trees}
    processes = [Process([tool("sushy-static"), "-i", "127.0.0.1", "-p", str(ports[name]), "-m", str(root), *tls],
                         log=scratch / f"{name}.log") for name, (root, tls) in trees.items()]
    try:
        for name, port in ports.items():
            wait_until(lambda: tcp_open("127.0.0.1", port), deadline=20, what=f"sushy-static {name}")
        yield Trees(ports, cert, sha256)
    finally:
        for process in processes:
            process.stop()


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def answering(status: int, body: str, content_type: str) -> web.Application:
    """A server that answers every request the same way."""
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type=content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.fixture
async def bad_bmcs() -> AsyncIterator[dict[str, int]]:
    """Misbehaving peers by name -> port, and a tarpit that accepts connections and never answers."""
    runners, ports = [], {}
    for name, app in {
        "html": answering(200, "<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
        "truncated": answering(200, '{"@odata.id": "/redfish/v1", "Chassis": {"@odata.id": "/redf',
                               "application/json"),
        "unauthorized": answering(401, '{"error": "no"}', "application/json"),
    }.items():
        runner, ports[name] = await serve(app)
        runners.append(runner)

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    tarpit = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    ports["tarpit"] = tarpit.sockets[0].getsockname()[1]
    yield ports
    tarpit.close()
    for runner in runners:
        await runner.cleanup()


class FakeRedfish:
    """A small Redfish service with token sessions: one rack PDU with two outlets, the second of which
    gives its power only as a link to a Sensor resource. Counts logins, logouts, GETs and connections."""

    SESSIONS = "/redfish/v1/SessionService/Sessions"

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}  # token -> session id
        self.logins = 0
        self.logouts: list[str] = []
        self.gets = 0
        self.port = 0
        self.server: web.Server | None = None
        self.peers: set[tuple[str, int]] = set()
        pdu = "/redfish/v1/PowerEquipment/RackPDUs/1"
        self.tree: dict[str, dict] = {
            "/redfish/v1": {"PowerEquipment": {"@odata.id": "/redfish/v1/PowerEquipment"}},
            "/redfish/v1/PowerEquipment": {"RackPDUs": {"@odata.id": "/redfish/v1/PowerEquipment/RackPDUs"}},
            "/redfish/v1/PowerEquipment/RackPDUs": {"Members": [{"@odata.id": pdu}]},
            pdu: {"Outlets": {"@odata.id": f"{pdu}/Outlets"}},
            f"{pdu}/Outlets": {"Members": [{"@odata.id": f"{pdu}/Outlets/1"}, {"@odata.id": f"{pdu}/Outlets/2"}]},
            f"{pdu}/Outlets/1": {"PowerState": "On", "PowerWatts": {"Reading": 100.5}},
            f"{pdu}/Outlets/2": {"PowerState": "Off",
                                 "PowerWatts": {"DataSourceUri": "/redfish/v1/Chassis/PDU/Sensors/Power2"}},
            "/redfish/v1/Chassis/PDU/Sensors/Power2": {"Reading": 42.25},
        }
        self.app = web.Application()
        self.app.router.add_post(self.SESSIONS, self.login)
        self.app.router.add_delete(self.SESSIONS + "/{id}", self.logout)
        self.app.router.add_get("/{tail:.*}", self.get)

    def _track(self, request: web.Request) -> bool:
        """Note the connection; true if the request carries a live token."""
        self.peers.add(request.transport.get_extra_info("peername"))
        return request.headers.get("X-Auth-Token") in self.tokens

    async def login(self, request: web.Request) -> web.Response:
        self._track(request)
        body = await request.json()
        if (body.get("UserName"), body.get("Password")) != (CREDS.username, PASSWORD):
            return web.json_response({"error": "bad credentials"}, status=401)
        self.logins += 1
        session = str(self.logins)
        token = f"token-{session}"
        self.tokens[token] = session
        return web.json_response({"@odata.id": f"{self.SESSIONS}/{session}"}, status=201,
                                 headers={"X-Auth-Token": token, "Location": f"{self.SESSIONS}/{session}"})

    async def logout(self, request: web.Request) -> web.Response:
        if not self._track(request):
            return web.json_response({}, status=401)
        session = self.tokens.pop(request.headers["X-Auth-Token"])
        assert session == request.match_info["id"]
        self.logouts.append(session)
        return web.Response(status=204)

    async def get(self, request: web.Request) -> web.Response:
        if not self._track(request):
            return web.json_response({"error": "no session"}, status=401)
        self.gets += 1
        path = request.path.rstrip("/")
        return web.json_response(self.tree[path]) if path in self.tree else web.json_response({}, status=404)


@pytest.fixture
async def fake() -> AsyncIterator[FakeRedfish]:
    service = FakeRedfish()
    runner, service.port = await serve(service.app)
    service.server = runner.server
    yield service
    await runner.cleanup()


@pytest.fixture
async def poller() -> AsyncIterator[RedfishPoller]:
    async with RedfishPoller() as p:
        yield p


# ------------------------------------------------------------------------------------ recorded trees
async def test_rack_pdu_readings_match_the_tree(poller, sushy):
    tree, pdu = "public-pdu", "/redfish/v1/PowerEquipment/RackPDUs/1"
    readings = await poller.poll_rack_pdu(target(sushy.ports[tree]))

    outlets = members(tree, f"{pdu}/Outlets")
    for metric, prop in ((Metric.OUTLET_POWER_WATTS, "PowerWatts"), (Metric.OUTLET_CURRENT_AMPS, "CurrentAmps"),
                         (Metric.OUTLET_VOLTAGE_VOLTS, "Voltage"), (Metric.OUTLET_ENERGY_KWH, "EnergykWh")):
        expected = {name: o[prop]["Reading"] for name, o in outlets.items() if prop in o}
        assert values(readings, metric, "outlet") == expected
    watts = [o["PowerWatts"]["Reading"] for o in outlets.values() if "PowerWatts" in o]
    assert sum(values(readings, Metric.OUTLET_POWER_WATTS, "outlet").values()) == pytest.approx(sum(watts))
    assert values(readings, Metric.OUTLET_ON, "outlet") == {
        name: float(o["PowerState"] == "On") for name, o in outlets.items() if "PowerState" in o}
    # A5 is un-monitored and un-managed: no readings at all, rather than zeros.
    assert not [r for r in readings if r.labels.get("outlet") == "A5"]

    (mains,) = members(tree, f"{pdu}/Mains").values()
    assert values(readings, Metric.PDU_INPUT_POWER_WATTS, "phase") == {
        line: e["Reading"] for line, e in mains["PolyPhasePowerWatts"].items()}
    assert values(readings, Metric.PDU_INPUT_CURRENT_AMPS, "phase") == {
        line: e["Reading"] for line, e in mains["PolyPhaseCurrentAmps"].items()}
    branches = members(tree, f"{pdu}/Branches")
    assert values(readings, Metric.BRANCH_POWER_WATTS, "branch") == {
        name: b["PowerWatts"]["Reading"] for name, b in branches.items()}
    assert values(readings, Metric.BRANCH_ENERGY_KWH, "branch") == {
        name: b["EnergykWh"]["Reading"] for name, b in branches.items()}
    metrics = doc(tree, f"{pdu}/Metrics")
    assert values(readings, Metric.PDU_POWER_WATTS, "pdu") == {"1": metrics["PowerWatts"]["Reading"]}
    assert values(readings, Metric.PDU_ENERGY_KWH, "pdu") == {"1": metrics["EnergykWh"]["Reading"]}
    assert all(r.labels["pdu"] == "1" for r in readings)


async def test_cdu_readings_match_the_tree(poller, sushy):
    tree, cdu_uri = "public-cooling-unit", "/redfish/v1/ThermalEquipment/CDUs/1"
    readings = await poller.poll_cdu(target(sushy.ports[tree]))

    pumps = members(tree, f"{cdu_uri}/Pumps")
    assert values(readings, Metric.PUMP_SPEED_PERCENT, "pump") == {
        name: p["PumpSpeedPercent"]["Reading"] for name, p in pumps.items()}
    assert values(readings, Metric.PUMP_OK, "pump") == {
        name: float(p["Status"]["Health"] == "OK") for name, p in pumps.items()}
    assert 0.0 in values(readings, Metric.PUMP_OK, "pump").values()  # the tree records pump 2 as failed

    detectors = [d for g in doc(tree, f"{cdu_uri}/LeakDetection")["LeakDetectorGroups"] for d in g["Detectors"]]
    assert values(readings, Metric.LEAK_DETECTED, "detector") == {
        d["DataSourceUri"].rsplit("/", 1)[-1]: float(d["DetectorState"] != "OK") for d in detectors}

    for loop in ("Primary", "Secondary"):
        for name, c in members(tree, f"{cdu_uri}/{loop}CoolantConnectors").items():
            key = (loop.lower(), name)
            for metric, prop in ((Metric.COOLANT_SUPPLY_TEMPERATURE_CELSIUS, "SupplyTemperatureCelsius"),
                                 (Metric.COOLANT_RETURN_TEMPERATURE_CELSIUS, "ReturnTemperatureCelsius"),
                                 (Metric.COOLANT_FLOW_LPM, "FlowLitersPerMinute"),
                                 (Metric.COOLANT_HEAT_REMOVED_KW, "HeatRemovedkW")):
                assert values(readings, metric, "loop", "connector")[key] == c[prop]["Reading"]
            assert values(readings, Metric.COOLANT_PRESSURE_KPA, "loop", "connector", "side")[(*key, "supply")] \
                == c["SupplyPressurekPa"]["Reading"]

    assert values(readings, Metric.FILTER_OK, "filter") == {
        name: float(f["Status"]["Health"] == "OK") for name, f in members(tree, f"{cdu_uri}/Filters").items()}
    environment = doc(tree, f"{cdu_uri}/EnvironmentMetrics")
    assert values(readings, Metric.HUMIDITY_PERCENT, "cdu") == {"1": environment["HumidityPercent"]["Reading"]}
    # The CDU does not link its Reservoirs collection (and the reservoir reports no level): not reported.
    assert "Reservoirs" not in doc(tree, cdu_uri)
    assert not values(readings, Metric.RESERVOIR_LEVEL_PERCENT, "reservoir")


def expected_server(tree: str) -> dict[tuple[Metric, str], dict]:
    """What a chassis with PowerSubsystem/ThermalSubsystem reports, read from the files."""
    chassis = "/redfish/v1/Chassis/1U"
    psus = {name: p for name, p in members(tree, f"{chassis}/PowerSubsystem/PowerSupplies").items()
            if p["Status"]["State"] != "Absent"}
    fans = members(tree, f"{chassis}/ThermalSubsystem/Fans")
    environment = doc(tree, f"{chassis}/EnvironmentMetrics")
    temperatures = doc(tree, f"{chassis}/ThermalSubsystem/ThermalMetrics")["TemperatureSummaryCelsius"]
    return {
        (Metric.PSU_INPUT_POWER_WATTS, "psu"): {
            name: doc(tree, p["Metrics"]["@odata.id"])["InputPowerWatts"]["Reading"] for name, p in psus.items()},
        (Metric.PSU_OK, "psu"): {name: float(p["Status"]["Health"] == "OK") for name, p in psus.items()},
        (Metric.NODE_POWER_WATTS, "chassis"): {"1U": environment["PowerWatts"]["Reading"]},
        (Metric.INLET_TEMPERATURE_CELSIUS, "chassis"): {"1U": temperatures["Intake"]["Reading"]},
        (Metric.FAN_SPEED_PERCENT, "fan"): {name: f["SpeedPercent"]["Reading"] for name, f in fans.items()},
        (Metric.FAN_SPEED_RPM, "fan"): {name: f["SpeedPercent"]["SpeedRPM"] for name, f in fans.items()},
    }


async def test_liquid_cooled_server_readings_match_the_tree(poller, sushy):
    tree, thermal = "public-liquid-cooled-server", "/redfish/v1/Chassis/1U/ThermalSubsystem"
    readings = await poller.poll_server(target(sushy.ports[tree]))

    for (metric, label), expected in expected_server(tree).items():
        assert values(readings, metric, label) == expected, metric
    connectors = members(tree, f"{thermal}/CoolantConnectors")
    assert values(readings, Metric.COOLANT_SUPPLY_TEMPERATURE_CELSIUS, "connector") == {
        name: c["SupplyTemperatureCelsius"]["Reading"] for name, c in connectors.items()}
    assert values(readings, Metric.COOLANT_RETURN_TEMPERATURE_CELSIUS, "connector") == {
        name: c["ReturnTemperatureCelsius"]["Reading"] for name, c in connectors.items()}
    assert values(readings, Metric.PUMP_SPEED_PERCENT, "pump") == {
        name: p["PumpSpeedPercent"]["Reading"] for name, p in members(tree, f"{thermal}/Pumps").items()}
    # Bay2 is Absent: no readings for it.
    assert not [r for r in readings if r.labels.get("psu") == "Bay2"]


async def test_rackmount_server_readings_match_the_tree(poller, sushy):
    readings = await poller.poll_server(target(sushy.ports["public-rackmount1"]))

    for (metric, label), expected in expected_server("public-rackmount1").items():
        assert values(readings, metric, label) == expected, metric


async def test_legacy_power_and_thermal_match_the_tree(poller, sushy):
    tree = "public-rackmount1"  # served with only its deprecated Power and Thermal linked
    readings = await poller.poll_server(target(sushy.ports[LEGACY]))

    power, thermal = doc(tree, "/redfish/v1/Chassis/1U/Power"), doc(tree, "/redfish/v1/Chassis/1U/Thermal")
    assert values(readings, Metric.NODE_POWER_WATTS, "chassis") == {
        "1U": power["PowerControl"][0]["PowerConsumedWatts"]}
    assert values(readings, Metric.PSU_OK, "psu") == {
        p["MemberId"]: float(p["Status"]["Health"] == "OK") for p in power["PowerSupplies"]}
    # The PSUs report LastPowerOutputWatts only, so there is no input power to give.
    assert not any("PowerInputWatts" in p for p in power["PowerSupplies"])
    assert not values(readings, Metric.PSU_INPUT_POWER_WATTS, "psu")
    assert values(readings, Metric.TEMPERATURE_CELSIUS, "sensor") == {
        t["Name"]: t["ReadingCelsius"] for t in thermal["Temperatures"] if "ReadingCelsius" in t}
    assert values(readings, Metric.INLET_TEMPERATURE_CELSIUS, "chassis") == {
        "1U": next(t["ReadingCelsius"] for t in thermal["Temperatures"] if t["PhysicalContext"] == "Intake")}
    assert values(readings, Metric.FAN_SPEED_RPM, "fan") == {
        f["Name"]: f["Reading"] for f in thermal["Fans"] if f["ReadingUnits"] == "RPM"}


async def test_target_labels_are_added_to_every_reading(poller, sushy):
    readings = await poller.poll_cdu(target(sushy.ports["public-cooling-unit"], labels={"rack": "R4"}))

    assert readings and all(r.labels["rack"] == "R4" for r in readings)


# ------------------------------------------------------------------------------------------------- TLS
async def test_tls_verifies_against_a_ca_bundle_or_a_pinned_fingerprint(poller, sushy):
    port, sha256 = sushy.ports["tls"], sushy.tls_sha256

    by_ca = await poller.poll_rack_pdu(target(port, scheme="https", ca_bundle=sushy.tls_cert))
    pinned = await poller.poll_rack_pdu(target(port, scheme="https", fingerprint=sha256))
    assert by_ca == pinned and values(by_ca, Metric.PDU_POWER_WATTS, "pdu")

    wrong = "00" * 32
    with pytest.raises(TlsMismatch) as mismatch:
        await poller.poll_rack_pdu(target(port, scheme="https", fingerprint=wrong))
    assert (mismatch.value.seen_fingerprint, mismatch.value.expected_fingerprint) == (sha256, wrong)
    with pytest.raises(TlsMismatch):  # neither CA nor pin: the system CAs, which do not know this certificate
        await poller.poll_rack_pdu(target(port, scheme="https"))


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("peer, error", [("html", MalformedReply), ("truncated", MalformedReply),
                                         ("unauthorized", AuthFailed)])
async def test_bad_replies_raise_typed_errors(poller, bad_bmcs, peer, error):
    bmc = target(bad_bmcs[peer], timeout=5)

    with pytest.raises(error) as raised:
        await poller.poll_server(bmc)
    assert raised.value.target == bmc.name
    assert PASSWORD not in str(raised.value) and PASSWORD not in repr(raised.value.__cause__)


async def test_malformed_value_names_the_field(poller, fake):
    fake.tree["/redfish/v1/PowerEquipment/RackPDUs/1/Outlets/1"]["PowerWatts"]["Reading"] = "lots"

    with pytest.raises(MalformedReply) as raised:
        await poller.poll_rack_pdu(target(fake.port))
    assert raised.value.field == "/redfish/v1/PowerEquipment/RackPDUs/1/Outlets/1#/PowerWatts/Reading"


@pytest.mark.parametrize("status, pointer, what", [
    ("OK", "/Status", "expected an object"),
    ({"Health": 1}, "/Status/Health", "expected a string"),
    ({"Health": "Fine"}, "/Status/Health", "unknown health 'Fine'"),
])
async def test_malformed_health_names_the_field(poller, fake, status, pointer, what):
    fake.tree["/redfish/v1/PowerEquipment/RackPDUs/1/Outlets/1"]["Status"] = status

    with pytest.raises(MalformedReply) as raised:
        await poller.poll_rack_pdu(target(fake.port))
    assert raised.value.field == f"/redfish/v1/PowerEquipment/RackPDUs/1/Outlets/1#{pointer}"
    assert what in str(raised.value)


async def test_refused_connection_is_unreachable(poller):
    with pytest.raises(BmcUnreachable):
        await poller.poll_cdu(target(free_port()))


async def test_tarpit_times_out_and_delays_only_itself(poller, sushy, bad_bmcs):
    deadline = 2.0
    started = time.monotonic()
    stuck = asyncio.create_task(poller.poll_server(target(bad_bmcs["tarpit"], timeout=deadline)))

    healthy = await poller.poll_cdu(target(sushy.ports["public-cooling-unit"]))
    assert healthy and not stuck.done()
    with pytest.raises(Timeout):
        await stuck
    assert time.monotonic() - started < deadline + 1.0


# ------------------------------------------------------------------------------------------- sessions
async def test_one_login_and_one_connection_per_bmc_relogin_on_401_logout_on_close(fake):
    poller = RedfishPoller()
    bmc = target(fake.port)

    first = await poller.poll_rack_pdu(bmc)
    discovery_gets = fake.gets
    for _ in range(3):
        assert await poller.poll_rack_pdu(bmc) == first
    assert values(first, Metric.OUTLET_POWER_WATTS, "outlet") == {"1": 100.5, "2": 42.25}  # 2 via its Sensor
    assert values(first, Metric.OUTLET_ON, "outlet") == {"1": 1.0, "2": 0.0}
    assert fake.logins == 1
    # Steady state: the two outlets and outlet 2's Sensor, nothing of the discovery walk.
    assert (fake.gets - discovery_gets) == 3 * 3
    assert len(fake.peers) == 1 and len(fake.server.connections) == 1

    fake.tokens.clear()  # the BMC forgets every session (reboot, expiry)
    assert await poller.poll_rack_pdu(bmc) == first
    assert fake.logins == 2
    assert len(fake.peers) == 1

    await poller.close()
    assert fake.logouts == ["2"] and not fake.tokens


async def test_wrong_password_is_auth_failed_without_the_secret(poller, fake):
    bmc = BmcTarget("127.0.0.1", Credentials("telemetry", Secret("wrong-" + PASSWORD)), port=fake.port,
                    scheme="http")

    with pytest.raises(AuthFailed) as raised:
        await poller.poll_rack_pdu(bmc)
    assert PASSWORD not in str(raised.value) and fake.logins == 0

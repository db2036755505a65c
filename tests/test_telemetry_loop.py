"""The telemetry loop against real peers: two SNMPv3 PDUs (snmpsim), a Redfish CDU and a Redfish server
(sushy-static), and a tarpit that accepts connections and never answers. Expected values are computed from
the .snmprec files and the Redfish trees themselves; every wait is on a condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import structlog.testing
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import col, delete, select
from structlog.testing import capture_logs

from daemon.app import Metrics, create_app
from daemon.bmc import BmcAccess
from daemon.config import BmcSettings, TelemetrySettings
from daemon.credentials import CredentialStore
from daemon.telemetry import TelemetryLoop, load_devices, next_slot
from drivers.base import Secret
from drivers.snmp import SnmpPdu, SnmpTarget, SnmpV3User
from inventory.model import (
    BmcState,
    CoolingLoop,
    CoolingUnit,
    Event,
    Location,
    Node,
    Pdu,
    PduOutlet,
    PowerFeed,
    PowerPanel,
    Rack,
    Reading,
    Series,
    Site,
)
from inventory.telemetry import WATER_CP_KJ_PER_KG_K, WATER_DENSITY_KG_PER_L, loop_cooling, rack_power, site_totals
from tests.lab.common import MOCKUPS, eventually
from tests.lab.redfish import SushyStatic
from tests.lab.snmp import SimUser, SnmpSim

pytestmark = pytest.mark.skipif(not MOCKUPS.is_dir(), reason=f"Redfish mockups not found at {MOCKUPS}")

DATA = Path(__file__).parent / "data" / "snmp"
USER = SimUser("baie", "auth-key-5d1c8e", "priv-key-93ab27")
APC_POWER = "1.3.6.1.4.1.318.1.1.26.9.4.3.1.7."  # rPDU2OutletMeteredStatusPower, watts
CDU = "/redfish/v1/ThermalEquipment/CDUs/1"
DEADLINE = 20.0


# ---------------------------------------------------------------------------------------------- peers
def snmprec_powers(path: Path) -> dict[int, float]:
    """Outlet index → watts, as the APC data file serves them."""
    powers = {}
    for line in path.read_text().splitlines():
        oid, _tag, value = line.split("|", 2)
        if oid.startswith(APC_POWER):
            powers[int(oid.removeprefix(APC_POWER))] = float(value)
    return powers


def write_pdu_data(directory: Path, scale: int) -> Path:
    """apc.snmprec as the agent's empty v3 context (``self.snmprec``), its outlet powers times ``scale``."""
    directory.mkdir()
    lines = []
    for line in (DATA / "apc.snmprec").read_text().splitlines():
        oid, tag, value = line.split("|", 2)
        lines.append(f"{oid}|{tag}|{int(value) * scale}" if oid.startswith(APC_POWER) else line)
    path = directory / "self.snmprec"
    path.write_text("\n".join(lines) + "\n")
    shutil.copy(path, directory / "pdu.snmprec")  # the lab's readiness check asks a named community
    return path


def tree(name: str, uri: str) -> dict:
    return json.loads((MOCKUPS / name / uri.removeprefix("/redfish/v1").strip("/") / "index.json").read_text())


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    base = tmp_path_factory.mktemp("peers")
    data_a, data_b = write_pdu_data(base / "pdu-a", 1), write_pdu_data(base / "pdu-b", 2)
    with (SnmpSim(data_a.parent, v3_users=[USER], engine_id="8000000001626169650011") as pdu_a,
          SnmpSim(data_b.parent, v3_users=[USER], engine_id="8000000001626169650012") as pdu_b,
          SushyStatic("public-cooling-unit") as cdu, SushyStatic("public-rackmount1") as server):
        for sim in (pdu_a, pdu_b):  # snmpsim answers its first v3 request only after seconds
            asyncio.run(SnmpPdu(SnmpTarget("127.0.0.1", sim.port, v3=SnmpV3User(
                USER.name, Secret(USER.auth_key), Secret(USER.priv_key)), timeout=30)).identify())
        yield {"pdu-a": (pdu_a, data_a), "pdu-b": (pdu_b, data_b), "cdu": cdu, "server": server}


class Tarpit:
    """A TCP server that accepts every connection and never answers."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Tarpit:
        async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._held.append(writer)

        self._server = await asyncio.start_server(hold, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._held:
            writer.close()
        self._server.close()
        await self._server.wait_closed()


# ------------------------------------------------------------------------------------------ inventory
@pytest.fixture
def store(tmp_path) -> CredentialStore:
    directory = tmp_path / "credentials"
    directory.mkdir(mode=0o700)
    for name, content in (("bmc-default", "telemetry:any-password\n"),
                          ("snmp-lab", f'username = "{USER.name}"\nauth_key = "{USER.auth_key}"\n'
                                       f'priv_key = "{USER.priv_key}"\n')):
        (directory / name).write_text(content)
        (directory / name).chmod(0o600)
    return CredentialStore(directory)


def _add(session, row):
    session.add(row)
    session.flush()
    return row


@pytest.fixture
def site(inventory, peers) -> dict[str, int]:
    """Site lab: rack R1 (budget 10 kW) on feeds A and B and loop1 of cdu1; PDUs pdu-a (feed A) and pdu-b
    (feed B), every outlet recorded; node srv1 in R1 with its Redfish BMC enrolled."""
    with inventory.session() as s:
        lab = _add(s, Site(name="lab", country_code="FR", jurisdiction="France", role="primary"))
        hall = _add(s, Location(site_id=lab.id, name="hall"))
        cdu = _add(s, CoolingUnit(site_id=lab.id, name="cdu1", address="127.0.0.1", port=peers["cdu"].port,
                                  protocol="redfish"))
        loop = _add(s, CoolingLoop(site_id=lab.id, cooling_unit_id=cdu.id, name="loop1"))
        rack = _add(s, Rack(site_id=lab.id, location_id=hall.id, name="R1", power_budget_watts=10_000,
                            cooling_loop_id=loop.id))
        panel = _add(s, PowerPanel(site_id=lab.id, name="P1"))
        ids = {}
        for side in ("A", "B"):
            feed = _add(s, PowerFeed(power_panel_id=panel.id, rack_id=rack.id, name=f"F{side}", side=side))
            sim, data = peers[f"pdu-{side.lower()}"]
            pdu = _add(s, Pdu(site_id=lab.id, rack_id=rack.id, power_feed_id=feed.id, name=f"pdu-{side.lower()}",
                              address="127.0.0.1", port=sim.port, protocol="snmp"))
            for index in snmprec_powers(data):
                s.add(PduOutlet(pdu_id=pdu.id, index=index))
            ids[pdu.name] = pdu.id
        s.add(Node(name="srv1", serial="SRV1", site_id=lab.id, rack_id=rack.id, bmc_address="127.0.0.1",
                   bmc_port=peers["server"].port, bmc_protocol="redfish", bmc_state=BmcState.OK))
    return ids


def settings(**overrides) -> TelemetrySettings:
    return TelemetrySettings(**{"jitter": 0, "request_timeout_seconds": 3, "poll_timeout_seconds": 10,
                                "flush_seconds": 0.1, "refresh_seconds": 3600, **overrides})


@dataclass
class Run:
    loop: TelemetryLoop
    metrics: Metrics  # the daemon's registry, which the loop's metrics are on

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def polls(self, device: str) -> float:
        return self.sample("baie_telemetry_polls_total", site="lab", device=device)

    def failures(self, device: str) -> float:
        return self.sample("baie_telemetry_poll_failures_total", site="lab", device=device)

    def polled(self) -> set[str]:
        return {spec.name for spec in self.loop.devices.values()}


@pytest.fixture
async def running(inventory, store) -> AsyncIterator[Callable[..., Run]]:
    """Start a loop (with the daemon's metrics) with settings overrides; always stopped at the end."""
    runs: list[Run] = []

    def start(**overrides) -> Run:
        metrics = Metrics(inventory)
        loop = TelemetryLoop(settings(**overrides), inventory, BmcAccess(BmcSettings(redfish_scheme="http"), store),
                             store, metrics.registry)
        loop.start()
        runs.append(Run(loop, metrics))
        return runs[-1]

    yield start
    for run in runs:
        await run.loop.stop()


async def wait_for(check: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    await eventually(check, deadline=deadline, what=what)


def rows(inventory, **labels: str) -> int:
    with inventory.session() as s:
        found = s.exec(select(Series.labels).join(Reading, col(Reading.series_id) == col(Series.id))).all()
    return sum(all(found_labels.get(k) == v for k, v in labels.items()) for found_labels in found)


# -------------------------------------------------------------------------------------------- tests
def test_slots_spread_devices_over_the_interval():
    """After its first poll a device comes due at a slot of its own, the same offset in every interval, and a
    thousand devices' slots fill the interval evenly (due at the same moment, they queued as one burst)."""
    interval, now = 10.0, 12_345.6
    slots = {f"node#{n}": next_slot(f"node#{n}", interval, now) for n in range(1000)}
    assert all(now <= slot < now + interval for slot in slots.values())
    assert all(next_slot(key, interval, now + 7 * interval + 0.5) == pytest.approx(slot + 7 * interval)
               for key, slot in slots.items() if slot >= now + 0.5)
    tenths = Counter(int((slot - now) / interval * 10) for slot in slots.values())
    assert sorted(tenths) == list(range(10)) and all(70 <= count <= 130 for count in tenths.values())


async def test_one_cycle_rolls_up_to_the_values_served(inventory, site, peers, running):
    run = running(bmc_interval_seconds=3600, pdu_interval_seconds=3600, cdu_interval_seconds=3600)
    devices = ("pdu/pdu-a", "pdu/pdu-b", "cdu/cdu1", "node/srv1")
    await wait_for(lambda: all(run.polls(d) == 1 for d in devices), "one poll of every device")
    assert not any(run.failures(d) for d in devices)
    await run.loop.stop()  # writes what was read

    # power: the outlets of both PDUs (the server's PSUs are the fallback only)
    side_a = sum(snmprec_powers(peers["pdu-a"][1]).values())
    side_b = sum(snmprec_powers(peers["pdu-b"][1]).values())
    [rack] = rack_power(inventory, "R1")
    assert (rack.source, rack.draw_watts, rack.reporting) == ("outlets", side_a + side_b, 16)
    assert {f.side: f.draw_watts for f in rack.feeds} == {"A": side_a, "B": side_b}
    assert rack.headroom_watts == 10_000 - side_a - side_b
    assert rack.redundant is (side_a + side_b <= min(f.capacity_watts for f in rack.feeds))

    # cooling: the secondary (IT) side is loop1; the primary (facility) side is not mistaken for it
    secondary = tree("public-cooling-unit", f"{CDU}/SecondaryCoolantConnectors/1")
    supply, back = secondary["SupplyTemperatureCelsius"]["Reading"], secondary["ReturnTemperatureCelsius"]["Reading"]
    flow = secondary["FlowLitersPerMinute"]["Reading"]
    assert tree("public-cooling-unit", f"{CDU}/PrimaryCoolantConnectors/1")["ReturnTemperatureCelsius"]["Reading"] != back
    heat = flow / 60 * WATER_DENSITY_KG_PER_L * WATER_CP_KJ_PER_KG_K * (back - supply)
    pumps = {p: tree("public-cooling-unit", f"{CDU}/Pumps/{p}")["Status"]["Health"] == "OK" for p in ("1", "2")}
    [cooling] = loop_cooling(inventory, "loop1")
    assert (cooling.supply_temperature_c, cooling.return_temperature_c, cooling.flow_lpm) == (supply, back, flow)
    assert cooling.heat_removed_kw == pytest.approx(heat)
    assert {p.name: p.ok for p in cooling.pumps} == pumps
    assert cooling.leak is False
    totals = site_totals(inventory, "lab")
    assert (totals.draw_watts, totals.heat_removed_kw) == (side_a + side_b, pytest.approx(heat))

    # the same figures on /metrics, and the server's own readings through the API
    app = create_app(inventory, run.metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://baie") as client:
        text = (await client.get("/metrics")).text
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        assert samples[("baie_rack_power_draw_watts", (("rack", "R1"), ("site", "lab")))] == side_a + side_b
        for side, watts in (("A", side_a), ("B", side_b)):
            key = (("feed", f"P1/F{side}"), ("rack", "R1"), ("side", side), ("site", "lab"))
            assert samples[("baie_feed_power_draw_watts", key)] == watts
        loop1 = (("cdu", "cdu1"), ("loop", "loop1"), ("site", "lab"))
        assert samples[("baie_loop_delta_t_celsius", loop1)] == back - supply
        assert samples[("baie_loop_heat_removed_kw", loop1)] == pytest.approx(heat)
        assert samples[("baie_loop_pump_ok", (*loop1[:2], ("pump", "2"), ("site", "lab")))] == float(pumps["2"])
        assert samples[("baie_site_power_draw_watts", (("site", "lab"),))] == side_a + side_b
        assert samples[("baie_telemetry_readings_written_total", ())] == rows(inventory)

        reply = await client.get("/api/v1/power-usage", params={"site": "lab"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["sites"][0]["draw_watts"] == side_a + side_b
        reply = await client.get("/api/v1/cooling", params={"site": "lab"})
        assert reply.json()[0]["delta_t_c"] == back - supply
        reply = await client.get("/api/v1/telemetry", params={"node": "SRV1", "since": "1h"})
        watts = tree("public-rackmount1", "/redfish/v1/Chassis/1U/EnvironmentMetrics")["PowerWatts"]["Reading"]
        assert [(r["value"], r["labels"]["rack"]) for r in reply.json()
                if r["metric"] == "baie_node_power_watts"] == [(watts, "R1")]
        reply = await client.get("/api/v1/telemetry", params={"rack": "R1", "node": "srv1"})
        assert reply.status_code == 422


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # seconds of waiting: one backend is enough
async def test_a_tarpit_delays_only_itself_and_is_logged_once(inventory, site, running):
    async with Tarpit("127.0.0.2") as tarpit:
        with inventory.session() as s:
            lab = s.exec(select(Site)).one()
            s.add(Node(name="stuck", site_id=lab.id, bmc_address="127.0.0.2", bmc_port=tarpit.port,
                       bmc_protocol="redfish", bmc_state=BmcState.OK))
        with capture_logs() as logs:
            run = running(bmc_interval_seconds=0.1, cdu_interval_seconds=0.1, pdu_interval_seconds=3600,
                          request_timeout_seconds=6, poll_timeout_seconds=6, failures_before_unreachable=2)
            await wait_for(lambda: run.failures("node/stuck") >= 1, "the tarpit's first poll given up")
            # while that one poll waited, the BMC and the CDU beside it were polled again and again
            assert run.polls("node/srv1") >= 5 and run.polls("cdu/cdu1") >= 5
            await wait_for(lambda: run.failures("node/stuck") >= 2, "a second failed poll of the tarpit")
            await wait_for(lambda: inventory.node("stuck").bmc_state == BmcState.UNREACHABLE,
                           "the tarpit marked unreachable")
            assert run.failures("node/srv1") == run.failures("cdu/cdu1") == 0
    failing = [e for e in logs if e["event"] == "telemetry device failing"]
    assert [(e["device"], e["kind"], e["node"], e["site"]) for e in failing] == [("node/stuck", "Timeout", "stuck", "lab")]
    assert {e.get("bmc") for e in failing} == {f"127.0.0.2:{tarpit.port}"}
    with inventory.session() as s:
        marked = s.exec(select(Event).where(Event.kind == "bmc.unreachable")).all()
    assert [e.subject for e in marked] == ["node/stuck"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # seconds of waiting: one backend is enough
async def test_a_failing_device_waits_for_slots_of_its_own(inventory, site, running):
    """One slot for polls in flight. The tarpit's first poll takes it (nothing is known yet); once that poll
    has failed, the tarpit waits for the failing devices' slot, and the healthy BMC is polled all through the
    tarpit's next wait, instead of queueing behind it for the whole deadline."""
    async with Tarpit("127.0.0.2") as tarpit:
        with inventory.session() as s:
            lab = s.exec(select(Site)).one()
            s.add(Node(name="stuck", site_id=lab.id, bmc_address="127.0.0.2", bmc_port=tarpit.port,
                       bmc_protocol="redfish", bmc_state=BmcState.OK))
        run = running(max_in_flight=1, bmc_interval_seconds=0.1, cdu_interval_seconds=3600,
                      pdu_interval_seconds=3600, request_timeout_seconds=3, poll_timeout_seconds=3)
        await wait_for(lambda: run.failures("node/stuck") == 1, "the tarpit's first poll given up")
        before = run.polls("node/srv1")
        await wait_for(lambda: run.failures("node/stuck") == 2, "the tarpit's second poll given up")
        assert run.polls("node/srv1") - before >= 10  # polled every ~0.1 s of those 3 s; 1 or 2 if it queued
        assert run.failures("node/srv1") == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # seconds of waiting: one backend is enough
async def test_snmp_polls_have_slots_of_their_own(inventory, site, running):
    """One SNMP slot. A PDU that never answers holds it for its first poll's deadline: the other PDUs wait for
    it, while the Redfish server beside them is polled all along; once failed, it waits apart."""
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound and never read: nothing ever answers
    dead.bind(("127.0.0.2", 0))
    try:
        with inventory.session() as s:
            lab = s.exec(select(Site)).one()
            s.add(Pdu(site_id=lab.id, name="pdu-dead", address="127.0.0.2", port=dead.getsockname()[1],
                      protocol="snmp"))
        run = running(snmp_in_flight=1, pdu_interval_seconds=0.1, bmc_interval_seconds=0.1,
                      cdu_interval_seconds=3600, request_timeout_seconds=3, poll_timeout_seconds=3)
        await wait_for(lambda: run.failures("pdu/pdu-dead") == 1, "the dead PDU's first poll given up")
        # every 0.1 s for those 3 s with a slot each: ~30 polls; here one before the dead PDU took the slot
        assert run.polls("pdu/pdu-a") <= 3 and run.polls("pdu/pdu-b") <= 3
        assert run.polls("node/srv1") >= 5
        await wait_for(lambda: run.polls("pdu/pdu-a") >= 10, "pdu-a polled while the dead PDU waits apart")
        assert run.failures("pdu/pdu-a") == run.failures("pdu/pdu-b") == 0
    finally:
        dead.close()


async def test_readings_are_written_in_batches_and_stop_writes_the_rest(inventory, site, running):
    run = running(cdu_interval_seconds=0.1, bmc_interval_seconds=0.1, pdu_interval_seconds=3600,
                  batch_size=100_000, flush_seconds=600)
    await wait_for(lambda: run.polls("cdu/cdu1") >= 3 and run.polls("pdu/pdu-a") == 1, "3 polls of cdu1")
    queued = run.sample("baie_telemetry_queued_readings")
    assert queued > 0 and rows(inventory) == 0  # neither a full batch nor the flush interval yet
    await run.loop.stop()
    written = run.sample("baie_telemetry_readings_written_total")
    assert written >= queued and rows(inventory) == written
    assert (run.sample("baie_telemetry_batches_written_total"), run.sample("baie_telemetry_queued_readings")) == (1, 0)

    run = running(cdu_interval_seconds=0.1, bmc_interval_seconds=0.1, pdu_interval_seconds=3600,
                  batch_size=50, flush_seconds=600)
    await wait_for(lambda: run.sample("baie_telemetry_batches_written_total") >= 3, "3 full batches")
    assert run.sample("baie_telemetry_readings_written_total") >= 3 * 50


async def test_device_list_refresh_starts_new_and_stops_removed_devices(inventory, site, running):
    with inventory.session() as s:
        s.exec(delete(PduOutlet).where(PduOutlet.pdu_id == site["pdu-b"]))
        pdu_b = s.get(Pdu, site["pdu-b"])
        saved = pdu_b.model_dump(exclude={"id"})
        s.delete(pdu_b)
    run = running(pdu_interval_seconds=0.1, bmc_interval_seconds=3600, cdu_interval_seconds=3600,
                  refresh_seconds=0.2)
    await wait_for(lambda: run.polls("pdu/pdu-a") >= 2, "pdu-a polled")
    assert "pdu/pdu-b" not in run.polled()

    with inventory.session() as s:
        s.add(Pdu(**saved))
    await wait_for(lambda: run.polls("pdu/pdu-b") >= 2, "the new pdu-b polled")

    with inventory.session() as s:
        s.exec(delete(PduOutlet).where(PduOutlet.pdu_id == site["pdu-a"]))
        s.delete(s.get(Pdu, site["pdu-a"]))
    await wait_for(lambda: "pdu/pdu-a" not in run.polled(), "pdu-a dropped")
    await wait_for(lambda: run.sample("baie_telemetry_queued_readings") == 0, "the queue written")
    before, polled = rows(inventory, pdu="pdu-a"), run.polls("pdu/pdu-b")
    await wait_for(lambda: run.polls("pdu/pdu-b") >= polled + 2, "2 more polls of pdu-b")
    await wait_for(lambda: run.sample("baie_telemetry_queued_readings") == 0, "the queue written")
    assert rows(inventory, pdu="pdu-a") == before > 0
    assert run.polls("pdu/pdu-a") == 0  # its series are gone from /metrics


def test_a_host_polls_only_the_sites_it_is_given(inventory, site):
    with inventory.session() as s:
        embassy = _add(s, Site(name="emb1", country_code="LU", jurisdiction="Luxembourg", role="backup"))
        s.add(Pdu(site_id=embassy.id, name="pdu-emb", address="127.0.0.1", port=161, protocol="snmp"))
    everything = {spec.name for spec in load_devices(inventory)}
    assert everything == {"pdu/pdu-a", "pdu/pdu-b", "pdu/pdu-emb", "cdu/cdu1", "node/srv1"}
    assert [spec.name for spec in load_devices(inventory, ["emb1"])] == ["pdu/pdu-emb"]
    assert {spec.name for spec in load_devices(inventory, ["lab", "emb1"])} == everything
    with structlog.testing.capture_logs() as logs:
        assert load_devices(inventory, ["emb2"]) == []  # a typo polls nothing, and says so
    assert {"event": "telemetry.unknown_sites", "sites": ["emb2"]}.items() <= logs[0].items()

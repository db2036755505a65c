"""``baie outlet`` through a real daemon process against a real snmpsim PDU; ``baie power-usage``, ``cooling``,
``telemetry`` and the live figures of ``rack show`` from readings stored with inventory.telemetry, on both
backends."""

from __future__ import annotations

import getpass
import json
import shutil
import sys
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from inventory.db import make_engine
from inventory.model import CoolingLoop, CoolingUnit, Location, Node, Pdu, PduOutlet, PowerFeed, PowerPanel, Rack, Site
from inventory.service import Inventory
from inventory.telemetry import (
    COOLANT_FLOW,
    LEAK_DETECTED,
    OUTLET_POWER,
    PSU_INPUT_POWER,
    PUMP_OK,
    RETURN_TEMPERATURE,
    SUPPLY_TEMPERATURE,
    ReadingIn,
    store_readings,
)
from tests.lab.common import REPO, Process, wait_until, write_config, write_credential
from tests.lab.snmp import SnmpSim, agent_dir
from tests.test_outlets import DATA, USER, V3_CREDENTIAL

ENV = {"COLUMNS": "220", "BAIE_DATABASE_URL": None, "BAIE_CONFIG": None}


def one_line_error(result) -> str:
    assert result.exit_code == 1 and result.stdout == "", result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ------------------------------------------------------------------------------ outlets (the daemon)
@pytest.fixture(scope="module")
def daemon(tmp_path_factory, sqlite_template):
    tmp = tmp_path_factory.mktemp("cli-power")
    db = tmp / "baie.db"
    shutil.copy(sqlite_template, db)
    with SnmpSim(agent_dir(tmp / "apc", DATA / "apc.snmprec"), v3_users=[USER]) as sim:
        engine = make_engine(f"sqlite:///{db}")
        with Inventory(engine).session() as s:
            site = Site(name="lab", country_code="FR", jurisdiction="France", role="primary")
            node = Node(name="web-05", serial="SN-WEB-05")
            s.add_all([site, node])
            s.flush()
            pdu = Pdu(site_id=site.id, name="pdu-apc", address=sim.host, port=sim.port, credential_ref="pdu-v3")
            s.add(pdu)
            s.flush()
            s.add(PduOutlet(pdu_id=pdu.id, index=5, node_id=node.id, psu="PSU2"))
        engine.dispose()
        creds = tmp / "credentials"
        write_credential(creds, "pdu-v3", V3_CREDENTIAL)
        config = write_config(tmp / "baie.toml", {
            "database": {"url": f"sqlite:///{db}"}, "api": {"socket": tmp / "api.sock"},
            "credentials": {"directory": creds}, "bmc": {"power_confirm_seconds": 2}, "telemetry": {"enabled": False}})
        process = Process([sys.executable, "-m", "daemon", "--config", str(config)], log=tmp / "daemon.log", cwd=REPO)
        try:
            wait_until(lambda: process.alive() and (tmp / "api.sock").is_socket(), deadline=30,
                       what="the daemon's socket")
            yield {"config": config, "db": db}
        finally:
            process.stop()


def baie_daemon(daemon, *args: str):
    return CliRunner().invoke(app, ["--config", str(daemon["config"]), *args], prog_name="baie", env=ENV)


def test_outlet_on_off_cycle_through_the_daemon(daemon):
    assert baie_daemon(daemon, "outlet", "pdu-apc", "5", "on").exit_code == 0  # whatever the simulator had
    status = baie_daemon(daemon, "outlet", "lab/pdu-apc", "5", "status")
    assert status.stdout == "lab/pdu-apc outlet 5: on, 0.70 A, 148 W (feeds web-05 PSU2)\n"
    off = baie_daemon(daemon, "outlet", "pdu-apc", "5", "off")
    assert off.stdout == "lab/pdu-apc outlet 5: off: on -> off (confirmed) (feeds web-05 PSU2)\n"
    again = baie_daemon(daemon, "outlet", "pdu-apc", "5", "off")
    assert again.stdout == "lab/pdu-apc outlet 5: already off, nothing to do (feeds web-05 PSU2)\n"
    cycled = baie_daemon(daemon, "outlet", "pdu-apc", "5", "cycle", "--json")
    assert cycled.exit_code == 0, cycled.output
    assert json.loads(cycled.stdout) | {"before": None} == {
        "pdu": "lab/pdu-apc", "outlet": 5, "action": "cycle", "before": None, "after": "on", "changed": True,
        "node": "web-05", "psu": "PSU2"}
    assert "(confirmed)" in baie_daemon(daemon, "outlet", "pdu-apc", "5", "cycle").stdout

    engine = make_engine(f"sqlite:///{daemon['db']}")
    events = [e for e in Inventory(engine).events(subject="pdu/lab/pdu-apc") if e.kind == "outlet.action"]
    engine.dispose()
    assert len(events) == 5 and {e.actor for e in events} == {f"cli:{getpass.getuser()}"}


def test_outlet_failures_are_one_line(daemon):
    failed = one_line_error(baie_daemon(daemon, "outlet", "pdu-apc", "8", "off"))
    assert failed == "error: lab/pdu-apc: outlet 8 acknowledged switching off but is still on after 2s"
    assert one_line_error(baie_daemon(daemon, "outlet", "nope", "1", "on")) == "error: no PDU matches 'nope'"
    assert one_line_error(baie_daemon(daemon, "outlet", "pdu-apc", "42", "status")) == \
        "error: no outlet matches 'lab/pdu-apc/42'"


# ---------------------------------------------------------------------- measured figures (the store)
@pytest.fixture
def baie(inventory, database_url, tmp_path):
    config = tmp_path / "baie.toml"
    config.write_text(f'[api]\nsocket = "{tmp_path / "api.sock"}"\n')

    def run(*args: str):
        return CliRunner().invoke(app, ["--config", str(config), "--database-url", database_url, *args],
                                  prog_name="baie", env=ENV)
    return run


@pytest.fixture
def measured(inventory):
    """par1: rack R01 (budget 5000 W, loop1) fed by A (230 V 16 A: 2944 W) and B (230 V 10 A: 1840 W) through
    pdu-a and pdu-b, whose outlets 1 and 2 feed n1 and n2; rack R02 reports nothing. Fresh readings: 1300 W
    over the outlets, loop1 24 -> 30 °C at 100 L/min, pumps fine, no leak."""
    with inventory.session() as s:
        site = Site(name="par1", country_code="FR", jurisdiction="France", role="primary")
        s.add(site)
        s.flush()
        room, cdu = Location(site_id=site.id, name="room"), CoolingUnit(site_id=site.id, name="cdu1")
        s.add_all([room, cdu])
        s.flush()
        loop = CoolingLoop(site_id=site.id, cooling_unit_id=cdu.id, name="loop1", supply_temperature_max_c=35)
        panel = PowerPanel(site_id=site.id, name="pp")
        s.add_all([loop, panel])
        s.flush()
        rack = Rack(site_id=site.id, location_id=room.id, name="R01", power_budget_watts=5000,
                    cooling_loop_id=loop.id)
        s.add_all([rack, Rack(site_id=site.id, location_id=room.id, name="R02", power_budget_watts=3000)])
        s.flush()
        feeds = [PowerFeed(power_panel_id=panel.id, rack_id=rack.id, name=name, side=name, amperage=amps)
                 for name, amps in (("A", 16), ("B", 10))]
        s.add_all(feeds)
        s.flush()
        pdus = [Pdu(site_id=site.id, rack_id=rack.id, power_feed_id=feed.id, name=f"pdu-{feed.name.lower()}")
                for feed in feeds]
        nodes = [Node(name=f"n{i}", serial=f"SN{i}", site_id=site.id, rack_id=rack.id) for i in (1, 2)]
        s.add_all(pdus + nodes)
        s.flush()
        s.add_all(PduOutlet(pdu_id=pdu.id, index=i, node_id=node.id, psu=f"PSU{p}")
                  for p, pdu in enumerate(pdus, 1) for i, node in enumerate(nodes, 1))
    now = datetime.now(UTC)
    fresh, earlier = now - timedelta(minutes=1), now - timedelta(minutes=30)
    rack_labels = {"site": "par1", "rack": "R01"}
    loop_labels = {"site": "par1", "cdu": "cdu1", "loop": "loop1"}
    store_readings(inventory, [
        *(ReadingIn(OUTLET_POWER, rack_labels | {"pdu": pdu, "outlet": outlet}, watts, fresh)
          for pdu, outlet, watts in (("pdu-a", "1", 400), ("pdu-a", "2", 300), ("pdu-b", "1", 350),
                                     ("pdu-b", "2", 250))),
        ReadingIn(PSU_INPUT_POWER, rack_labels | {"node": "n1", "psu": "PSU1"}, 180, earlier),
        ReadingIn(PSU_INPUT_POWER, rack_labels | {"node": "n1", "psu": "PSU1"}, 210, fresh),
        ReadingIn(PSU_INPUT_POWER, rack_labels | {"node": "n1", "psu": "PSU2"}, 190, fresh),
        ReadingIn(PSU_INPUT_POWER, rack_labels | {"node": "n1", "psu": "PSU1"}, 999, now - timedelta(hours=3)),
        ReadingIn(SUPPLY_TEMPERATURE, loop_labels, 24.0, fresh),
        ReadingIn(RETURN_TEMPERATURE, loop_labels, 30.0, fresh),
        ReadingIn(COOLANT_FLOW, loop_labels, 100.0, fresh),
        ReadingIn(PUMP_OK, loop_labels | {"pump": "P1"}, 1, fresh),
        ReadingIn(LEAK_DETECTED, loop_labels | {"detector": "D1"}, 0, fresh),
    ])
    return inventory


def rows(out: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]


def test_power_usage_table_and_json(baie, measured):
    table = baie("power-usage", "--site", "par1")
    assert table.exit_code == 0, table.output
    r01, r02 = (row for row in rows(table.stdout) if row[1] in ("R01", "R02"))
    assert r01[:6] == ["par1", "R01", "1,300 W", "outlets", "5,000 W", "3,700 W"]
    assert r01[6] == "A pp/A: 700 W / 2,244 W" and r01[7] == "yes"
    assert r02[:6] == ["par1", "R02", "not reported", "none", "3,000 W", "not reported"]
    assert r02[7] == "not reported"

    [view] = json.loads(baie("power-usage", "--rack", "par1/R01", "--json").stdout)
    assert (view["draw_watts"], view["reporting"], view["headroom_watts"], view["redundant"]) == (1300, 4, 3700, True)
    assert [(f["feed"], f["draw_watts"], f["headroom_watts"]) for f in view["feeds"]] == [
        ("pp/A", 700, pytest.approx(2244)), ("pp/B", 600, pytest.approx(1240))]


def test_cooling_table_and_json(baie, measured):
    [loop] = [row for row in rows(baie("cooling").stdout) if row[1] == "loop1"]
    assert loop[:10] == ["par1", "loop1", "cdu1", "24.0 °C", "30.0 °C", "6.0 K", "100.0 L/min", "41.7 kW", "P1 ok",
                         "none"]
    [view] = json.loads(baie("cooling", "--site", "par1", "--json").stdout)
    assert (view["supply_temperature_c"], view["flow_lpm"], view["leak"]) == (24.0, 100.0, False)
    assert view["heat_removed_kw"] == pytest.approx(100 / 60 * 0.997 * 4.18 * 6)


def test_telemetry_of_a_node_a_rack_and_a_loop(baie, measured):
    node = baie("telemetry", "n1", "--since", "1h")
    assert node.exit_code == 0, node.output
    psu1 = next(row for row in rows(node.stdout) if row[1] == "psu=PSU1, rack=R01, site=par1")
    assert psu1[0] == PSU_INPUT_POWER and psu1[2:6] == ["210", "180", "210", "2"]  # the 3 h old one is out

    readings = json.loads(baie("telemetry", "par1/R01", "--json").stdout)
    assert len(readings) == 7 and {r["metric"] for r in readings} == {OUTLET_POWER, PSU_INPUT_POWER}
    assert sum(r["value"] for r in readings if r["metric"] == OUTLET_POWER) == 1300

    loop = json.loads(baie("telemetry", "loop1", "--since", "10m", "--json").stdout)
    assert {r["metric"]: r["value"] for r in loop}[SUPPLY_TEMPERATURE] == 24.0 and len(loop) == 5
    assert one_line_error(baie("telemetry", "nowhere")) == "error: no node, rack or cooling loop matches 'nowhere'"
    assert "--since" in one_line_error(baie("telemetry", "n1", "--since", "yesterday"))


def test_rack_show_has_the_live_figures_or_says_not_reported(baie, measured):
    live = baie("rack", "show", "R01")
    assert live.exit_code == 0, live.output
    text = " ".join(live.stdout.split())
    for figure in ("Measured draw 1,300 W", "Source outlets (4 reporting)", "Headroom 3,700 W", "A/B redundant yes",
                   "Loop supply 24.0 °C", "Loop return 30.0 °C", "Loop flow 100.0 L/min", "Leak none"):
        assert figure in text, figure
    assert ["B", "pp/B", "600 W", "1,240 W"] in rows(live.stdout)

    quiet = " ".join(baie("rack", "show", "R02").stdout.split())
    assert "Measured draw not reported" in quiet and "Headroom not reported" in quiet
    assert "A/B redundant not reported" in quiet
    detail = json.loads(baie("rack", "show", "R01", "--json").stdout)
    assert detail["power"]["draw_watts"] == 1300 and detail["cooling"]["return_temperature_c"] == 30.0

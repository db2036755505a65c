"""Alert rules and lifecycle on both backends: pending → firing → resolved, grouping, repeats, flapping,
silences, acknowledgements, the leak alert and its policy, and the CLI. Time is a test clock handed to the
evaluation and the delivery; notifications go to a real receiver on loopback that verifies each signature.
"""

from __future__ import annotations

import getpass
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from typer.testing import CliRunner

from daemon.alerting import Alerting
from daemon.bmc import BmcAccess, PowerService
from daemon.cli import app
from daemon.config import ConfigError, Settings, load_settings
from daemon.credentials import CredentialStore
from daemon.webhooks import Deliverer
from drivers.base import PowerAction, PowerState
from inventory import alerts as service
from inventory.enrolment import set_bmc_state
from inventory.model import (
    BmcState,
    CoolingLoop,
    CoolingUnit,
    Event,
    Location,
    Node,
    NodeState,
    OutboxEntry,
    PowerFeed,
    PowerPanel,
    Rack,
    Site,
)
from inventory.telemetry import (
    COOLANT_FLOW,
    LEAK_DETECTED,
    PSU_INPUT_POWER,
    PUMP_OK,
    SUPPLY_TEMPERATURE,
    ReadingIn,
    store_readings,
)
from tests.lab.receiver import Receiver
from tests.lab.redfish import SushyEmulator

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
KEY = b"0123456789abcdef0123456789abcdef"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def populate(inventory) -> None:
    """par1: loop-a (CDU cdu-1) cools R01 (n1, n2) and R02 (n3); R03 (n4) is air-cooled, on 2 x 16 A feeds."""
    with inventory.session() as s:
        site = Site(name="par1", country_code="FR", jurisdiction="France", role="primary")
        s.add(site)
        s.flush()
        hall, cdu = Location(site_id=site.id, name="hall-1"), CoolingUnit(site_id=site.id, name="cdu-1")
        panel = PowerPanel(site_id=site.id, name="PP1")
        s.add_all([hall, cdu, panel])
        s.flush()
        loop = CoolingLoop(site_id=site.id, cooling_unit_id=cdu.id, name="loop-a", supply_temperature_max_c=30,
                           flow_min_lpm=100)
        s.add(loop)
        s.flush()
        racks = [Rack(site_id=site.id, location_id=hall.id, name=name, cooling_loop_id=loop_id,
                      power_budget_watts=3000) for name, loop_id in (("R01", loop.id), ("R02", loop.id), ("R03", None))]
        s.add_all(racks)
        s.flush()
        s.add_all([PowerFeed(power_panel_id=panel.id, rack_id=racks[2].id, name=f"F{side}", side=side)
                   for side in "AB"])
        for name, rack, position in (("n1", 0, 1), ("n2", 0, 2), ("n3", 1, 1), ("n4", 2, 1)):
            inventory.place_node(s, Node(name=name, serial=f"SN-{name}", state=NodeState.AVAILABLE,
                                         bmc_address=f"10.0.0.{position}{rack}", bmc_state=BmcState.OK),
                                 racks[rack], position)


def make_settings(tmp_path: Path, receiver: Receiver | None = None, *, webhooks: list[dict] | None = None,
                  bmc: dict | None = None, **alerts) -> Settings:
    credentials = tmp_path / "credentials"
    credentials.mkdir(exist_ok=True)
    secret = credentials / "hook"
    secret.write_text(KEY.decode())
    secret.chmod(0o600)
    if webhooks is None:
        webhooks = [{"name": "oncall", "url": receiver.url("/a"), "secret_credential": "hook"}] if receiver else []
    return Settings.model_validate({"credentials": {"directory": str(credentials)}, "alerts": alerts,
                                    "webhooks": webhooks, "bmc": bmc or {}})


def machinery(inventory, settings: Settings, clock: Clock) -> tuple[Alerting, Deliverer]:
    store = CredentialStore(settings.credentials.directory)
    power = PowerService(inventory, BmcAccess(settings.bmc, store))
    return Alerting(inventory, settings, power, clock), Deliverer(inventory, settings, store, clock)


async def tick(alerting: Alerting, deliverer: Deliverer) -> None:
    await alerting.evaluate()
    await deliverer.deliver()


def alerted(receiver: Receiver) -> list[list[tuple[str, str]]]:
    """Per notification received: (node, state) of each alert."""
    return [sorted((a["labels"].get("node"), a["state"]) for a in r.body["data"]["alerts"]) for r in receiver.received]


# ------------------------------------------------------------------------------------------- lifecycle
async def test_unreachable_bmc_pends_for_its_polls_then_fires_and_resolves(inventory, tmp_path):
    populate(inventory)
    clock = Clock(T0)
    async with Receiver({"/a": KEY}) as receiver:
        alerting, deliverer = machinery(inventory, make_settings(
            tmp_path, receiver, builtin={"bmc_unreachable": {"threshold": 3, "severity": "critical"}}), clock)
        set_bmc_state(inventory, "n1", BmcState.UNREACHABLE, "no answer", "telemetry")
        states = []
        for _ in range(3):
            await tick(alerting, deliverer)
            states.append([a.state for a in service.alerts(inventory, clock.now)])
            clock.advance(seconds=30)
        assert states == [["pending"], ["pending"], ["firing"]]
        assert receiver.received == []  # the group waits 30 s for related alerts
        await tick(alerting, deliverer)
        set_bmc_state(inventory, "n1", BmcState.OK, "answers", "telemetry")
        clock.advance(minutes=5)
        await tick(alerting, deliverer)
        assert len(receiver.received) == 1  # a change waits group_wait for related ones
        clock.advance(seconds=30)
        await tick(alerting, deliverer)
    assert alerted(receiver) == [[("n1", "firing")], [("n1", "resolved")]]
    first = receiver.received[0].body["data"]["alerts"][0]
    assert first["severity"] == "critical" and first["summary"] == "BMC 10.0.0.10 of node n1 does not answer"
    assert first["labels"] == {"rule": "bmc_unreachable", "site": "par1", "rack": "R01", "node": "n1"}
    assert service.alerts(inventory, clock.now) == []
    assert [a.state for a in service.alerts(inventory, clock.now, include_resolved=True)] == ["resolved"]


async def test_a_bmc_flapping_every_minute_for_an_hour_pages_at_most_twice(inventory, tmp_path):
    populate(inventory)
    clock = Clock(T0)
    async with Receiver({"/a": KEY}) as receiver:
        alerting, deliverer = machinery(inventory, make_settings(tmp_path, receiver), clock)
        for second in range(0, 3600, 30):
            clock.now = T0 + timedelta(seconds=second)
            state = BmcState.UNREACHABLE if second // 60 % 2 == 0 else BmcState.OK
            set_bmc_state(inventory, "n1", state, "poll", "telemetry")
            await tick(alerting, deliverer)
    assert 1 <= len(receiver.received) <= 2, alerted(receiver)
    assert receiver.bad == 0
    [alert] = service.alerts(inventory, clock.now, include_resolved=True)
    assert alert.flapping and alert.state == "firing"  # held firing while it flaps


async def test_related_alerts_are_batched_and_later_ones_wait_for_the_group_interval(inventory, tmp_path):
    populate(inventory)
    clock = Clock(T0)
    async with Receiver({"/a": KEY}) as receiver:
        alerting, deliverer = machinery(inventory, make_settings(tmp_path, receiver), clock)
        set_bmc_state(inventory, "n1", BmcState.UNREACHABLE, "no answer", "telemetry")
        await tick(alerting, deliverer)
        clock.advance(seconds=10)
        set_bmc_state(inventory, "n2", BmcState.UNREACHABLE, "no answer", "telemetry")
        await tick(alerting, deliverer)
        clock.advance(seconds=20)
        await tick(alerting, deliverer)
        assert alerted(receiver) == [[("n1", "firing"), ("n2", "firing")]]
        clock.advance(seconds=10)
        set_bmc_state(inventory, "n3", BmcState.UNREACHABLE, "no answer", "telemetry")
        await tick(alerting, deliverer)
        clock.advance(minutes=4)
        await tick(alerting, deliverer)
        assert len(receiver.received) == 1  # the group was notified less than group_interval ago
        clock.advance(minutes=1)
        await tick(alerting, deliverer)
    assert alerted(receiver)[1:] == [[("n3", "firing")]]
    assert receiver.received[0].body["data"]["group"] == {"rule": "bmc_unreachable", "site": "par1"}


async def test_repeats_until_acknowledged_and_resolution_is_still_told(inventory, tmp_path):
    populate(inventory)
    clock = Clock(T0)
    async with Receiver({"/a": KEY}) as receiver:
        alerting, deliverer = machinery(inventory, make_settings(tmp_path, receiver, repeat_interval="1h"), clock)
        set_bmc_state(inventory, "n1", BmcState.UNREACHABLE, "no answer", "telemetry")
        for minutes in (0, 1, 61, 62):
            clock.now = T0 + timedelta(minutes=minutes)
            await tick(alerting, deliverer)
        assert alerted(receiver) == [[("n1", "firing")]] * 2
        [alert] = service.alerts(inventory, clock.now)
        service.ack(inventory, alert.id, "cli:alice", clock.now)
        for minutes in (130, 200):
            clock.now = T0 + timedelta(minutes=minutes)
            await tick(alerting, deliverer)
        assert len(receiver.received) == 2
        set_bmc_state(inventory, "n1", BmcState.OK, "answers", "telemetry")
        await tick(alerting, deliverer)
        clock.advance(minutes=1)
        await tick(alerting, deliverer)
    assert alerted(receiver)[2:] == [[("n1", "resolved")]]
    with inventory.session() as s:
        assert [e.actor for e in s.exec(select(Event).where(Event.kind == "alert.acked"))] == ["cli:alice"]


async def test_silences_hold_notifications_back_until_they_expire(inventory, tmp_path):
    populate(inventory)
    clock = Clock(T0)
    async with Receiver({"/a": KEY}) as receiver:
        alerting, deliverer = machinery(inventory, make_settings(tmp_path, receiver), clock)
        silence = service.add_silence(inventory, {"node": "n1"}, timedelta(hours=2), "BMC firmware update",
                                      "cli:alice", clock.now)
        for node in ("n1", "n2"):
            set_bmc_state(inventory, node, BmcState.UNREACHABLE, "no answer", "telemetry")
        await tick(alerting, deliverer)
        clock.advance(seconds=30)
        await tick(alerting, deliverer)
        assert alerted(receiver) == [[("n2", "firing")]]
        assert {a.labels["node"]: a.silenced for a in service.alerts(inventory, clock.now)} == {"n1": True,
                                                                                              "n2": False}
        expired = service.expire_silence(inventory, silence.id, "cli:bob", clock.now)
        assert (expired.expired_by, expired.active) == ("cli:bob", False)
        await tick(alerting, deliverer)
        clock.advance(minutes=5)  # the group was notified at the last tick: its interval first
        await tick(alerting, deliverer)
    assert alerted(receiver)[1:] == [[("n1", "firing")]]


async def test_user_rule_waits_for_its_duration_and_names_what_it_saw(inventory, tmp_path):
    populate(inventory)
    clock = Clock(T0)
    rule = {"name": "gpu_hot", "metric": "baie_temperature_celsius", "match": {"sensor": "GPU0"}, "op": ">",
            "threshold": 80, "for": "1m", "severity": "critical", "labels": {"team": "hpc"},
            "summary": "{node} GPU0 at {value:.0f} °C ({unknown})"}
    alerting, _ = machinery(inventory, make_settings(tmp_path, rules=[rule]), clock)
    for minute in (0, 1):
        clock.now = T0 + timedelta(minutes=minute)
        store_readings(inventory, [
            ReadingIn("baie_temperature_celsius", {"node": "n1", "sensor": "GPU0"}, 85.2, clock.now),
            ReadingIn("baie_temperature_celsius", {"node": "n2", "sensor": "GPU0"}, 70.0, clock.now),
            ReadingIn("baie_temperature_celsius", {"node": "n1", "sensor": "CPU0"}, 95.0, clock.now)])
        await alerting.evaluate()
        [alert] = service.alerts(inventory, clock.now)
        assert alert.state == ("pending" if minute == 0 else "firing")
    assert alert.labels == {"rule": "gpu_hot", "node": "n1", "sensor": "GPU0", "team": "hpc"}
    assert (alert.severity, alert.summary) == ("critical", "n1 GPU0 at 85 °C ({unknown})")


def test_built_in_rules_read_bmc_state_readings_power_cooling_and_events(inventory, tmp_path):
    populate(inventory)
    now = datetime.now(UTC)  # the events are stamped with the real time
    set_bmc_state(inventory, "n2", BmcState.AUTH_FAILED, "401", "telemetry")
    set_bmc_state(inventory, "n3", BmcState.TLS_MISMATCH, "certificate changed", "telemetry")
    loop = {"site": "par1", "cdu": "cdu-1", "loop": "loop-a"}
    store_readings(inventory, [
        ReadingIn("baie_psu_ok", {"node": "n1", "psu": "PSU2"}, 0, now),
        ReadingIn("baie_psu_ok", {"node": "n1", "psu": "PSU1"}, 1, now),
        ReadingIn("baie_inlet_temperature_celsius", {"node": "n4"}, 41.5, now),
        ReadingIn("baie_inlet_temperature_celsius", {"node": "n3"}, 24.0, now),
        ReadingIn(PSU_INPUT_POWER, {"node": "n4", "psu": "PSU1"}, 4000, now),  # over budget, and over one side
        ReadingIn(SUPPLY_TEMPERATURE, loop, 35, now),
        ReadingIn(COOLANT_FLOW, loop, 50, now),
        ReadingIn(PUMP_OK, {**loop, "pump": "P1"}, 0, now),
        ReadingIn(LEAK_DETECTED, {**loop, "detector": "tray-1"}, 0, now)])
    inventory.record_event("hardware.drift", "node/n1", "Drive sda changed: serial 'A' -> 'B'", "discovery")
    inventory.record_event("placement.mismatch", "node/n4", "seen on tor-r01 port 7, declared in R03", "placement")
    alerting, _ = machinery(inventory, make_settings(tmp_path), Clock(now))
    found = {(c.rule, c.labels.get("node") or c.labels.get("rack") or c.labels.get("loop")
              or c.labels.get("subject")): c for c in alerting.conditions(now + timedelta(seconds=1))}
    assert set(found) == {
        ("bmc_auth_failed", "n2"), ("bmc_certificate_changed", "n3"), ("psu_failed", "n1"),
        ("inlet_temperature_high", "n4"), ("rack_over_budget", "R03"), ("rack_redundancy_lost", "R03"),
        ("cdu_supply_temperature_high", "loop-a"), ("cdu_flow_low", "loop-a"), ("cdu_pump_failed", "loop-a"),
        ("hardware_drift", "node/n1"), ("placement_mismatch", "node/n4")}
    assert found[("bmc_certificate_changed", "n3")].severity == "critical"
    assert found[("psu_failed", "n1")].summary == "PSU PSU2 of node n1 failed"
    assert found[("cdu_flow_low", "loop-a")].summary == \
        "Loop loop-a (CDU cdu-1, par1) flows 50.0 l/min, below 100 l/min"
    assert found[("placement_mismatch", "node/n4")].summary == "node/n4: seen on tor-r01 port 7, declared in R03"
    # an event keeps its alert firing for the rule's threshold (seconds), then it resolves
    later = {c.rule for c in alerting.conditions(now + timedelta(hours=2))}
    assert not later & {"hardware_drift", "placement_mismatch"}


# ------------------------------------------------------------------------------------- coolant leak
async def test_a_leak_pages_once_naming_the_loop_racks_and_nodes_and_cordons_them(inventory, tmp_path):
    populate(inventory)
    clock = Clock(T0)
    store_readings(inventory, [ReadingIn(LEAK_DETECTED, {"cdu": "cdu-1", "loop": "loop-a", "detector": "tray-1"}, 1,
                                         T0)])
    async with Receiver({"/a": KEY}) as receiver:
        alerting, deliverer = machinery(inventory, make_settings(tmp_path, receiver,
                                                                 leak_policy={"par1/loop-a": "cordon"}), clock)
        for _ in range(4):
            await tick(alerting, deliverer)
            clock.advance(seconds=30)
    [notification] = receiver.received
    [alert] = notification.body["data"]["alerts"]
    assert (alert["rule"], alert["severity"], alert["state"]) == ("coolant_leak", "critical", "firing")
    assert alert["labels"] == {"rule": "coolant_leak", "site": "par1", "cdu": "cdu-1", "loop": "loop-a"}
    assert (alert["details"]["racks"], alert["details"]["nodes"]) == (["R01", "R02"], ["n1", "n2", "n3"])
    assert alert["summary"] == ("Coolant leak at CDU cdu-1, loop loop-a (par1): detectors tray-1; "
                                "serves racks R01, R02; nodes n1, n2, n3")
    states = {n.name: n.state for n in inventory.nodes()}
    assert states == {"n1": "maintenance", "n2": "maintenance", "n3": "maintenance", "n4": "available"}
    with inventory.session() as s:
        cordoned = s.exec(select(Event).where(Event.kind == "node.cordoned")).all()
    assert sorted(e.subject for e in cordoned) == ["node/n1", "node/n2", "node/n3"]
    assert {e.actor for e in cordoned} == {"alerts:coolant_leak"}


async def test_a_leak_with_the_power_off_policy_powers_off_the_served_nodes_through_their_bmcs(inventory, tmp_path):
    """n1's BMC is a real one (sushy-emulator --fake, switched on first); n2 and n3 have no BMC on record: their
    power-off fails with an event each, and does not hold n1's back."""
    populate(inventory)
    password = "pw-" + secrets.token_hex(8)
    with SushyEmulator("127.81.0.1", username="admin", password=password, tls=True) as bmc:
        with inventory.session() as s:
            nodes = {n.name: n for n in s.exec(select(Node)).all()}
            nodes["n1"].sqlmodel_update({"bmc_address": bmc.address, "bmc_port": bmc.port, "bmc_protocol": "redfish",
                                         "bmc_tls_fingerprint": bmc.certificate_sha256})
            for name in ("n2", "n3"):
                nodes[name].bmc_address = None
            s.add_all(nodes.values())
        settings = make_settings(tmp_path, leak_policy={"loop-a": "power-off"},
                                 bmc={"redfish_port": bmc.port, "power_confirm_seconds": 30})
        (settings.credentials.directory / "bmc-par1").write_text(f"admin:{password}\n")
        (settings.credentials.directory / "bmc-par1").chmod(0o600)
        alerting, _ = machinery(inventory, settings, Clock(T0))
        assert (await alerting.power.power("n1", PowerAction.ON, "test")).after == "on"
        store_readings(inventory, [ReadingIn(LEAK_DETECTED, {"cdu": "cdu-1", "loop": "loop-a", "detector": "tray-1"},
                                             1, T0)])
        [fired] = await alerting.evaluate()
        assert fired.rule == "coolant_leak"
        assert await alerting.power.status("n1") == PowerState.OFF
    with inventory.session() as s:
        events = s.exec(select(Event).where(col(Event.actor) == "alerts:coolant_leak")).all()
    by_node = {e.subject: e for e in events}
    assert set(by_node) == {"node/n1", "node/n2", "node/n3"}
    assert (by_node["node/n1"].kind, by_node["node/n1"].details["after"]) == ("power.action", "off")
    assert {by_node[f"node/{n}"].kind for n in ("n2", "n3")} == {"power.failed"}
    assert "no BMC address" in by_node["node/n2"].message
    assert password not in "".join(e.message for e in events)
    assert {n.name: n.state for n in inventory.nodes()}["n1"] == "available"  # powered off, not cordoned


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_lists_acknowledges_and_silences(inventory, database_url, tmp_path):
    populate(inventory)
    now = datetime.now(UTC)
    policy = service.Policy()
    service.apply(inventory, [service.Condition("warning", {"rule": "bmc_unreachable", "site": "par1", "node": "n1"},
                                                "BMC of n1 does not answer")], now, {"oncall": "http://x"}, policy)
    config = tmp_path / "baie.toml"
    config.write_text(f'[api]\nsocket = "{tmp_path / "api.sock"}"\n')
    runner = CliRunner()

    def baie(*args: str):
        result = runner.invoke(app, ["--config", str(config), "--database-url", database_url, *args],
                               prog_name="baie", env={"COLUMNS": "200", "BAIE_DATABASE_URL": None,
                                                      "BAIE_CONFIG": None})
        assert result.exit_code == 0, result.stderr or result.stdout
        return result.stdout

    [alert] = json.loads(baie("alerts", "--json"))
    assert (alert["rule"], alert["state"], alert["labels"]["node"]) == ("bmc_unreachable", "firing", "n1")
    assert "BMC of n1 does not answer" in baie("alerts")
    user = f"cli:{getpass.getuser()}"
    acked = baie("alerts", "ack", str(alert["id"])).strip()
    assert acked == f"alert {alert['id']} (bmc_unreachable) acknowledged by {user}"
    assert f"acked by {user}" in baie("alerts")
    assert baie("silence", "add", "--match", "node=n1", "--match", "rule=bmc_unreachable", "--for", "2h",
                "--comment", "firmware update").startswith("silence 1 by ")
    [silence] = json.loads(baie("silence", "list", "--json"))
    assert silence["matchers"] == {"node": "n1", "rule": "bmc_unreachable"} and silence["created_by"] == user
    assert timedelta(hours=2) - timedelta(minutes=1) < datetime.fromisoformat(silence["ends_at"]) - now \
        <= timedelta(hours=2, minutes=1)
    assert "silenced" in baie("alerts")
    baie("silence", "expire", "1")
    assert json.loads(baie("silence", "list", "--json")) == []
    assert json.loads(baie("silence", "list", "--all", "--json"))[0]["expired_by"] == user
    service.seal(inventory, now + timedelta(minutes=1), {"oncall": "http://x"}, policy)
    status = json.loads(baie("webhooks", "status", "--json"))
    assert [(t["name"], t["enabled"], t["pending"]) for t in status["targets"]] == [("oncall", True, 1)]
    assert "oncall" in baie("webhooks", "status")

    result = runner.invoke(app, ["--config", str(config), "--database-url", database_url, "silence", "add",
                                 "--match", "node", "--for", "2h", "--comment", "x"], prog_name="baie")
    assert result.exit_code == 1 and result.stderr.strip() == "error: --match: 'node' is not LABEL=VALUE"


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("text, problem", [
    ('[alerts.builtin.bmc_unreachabel]\nthreshold = 2\n', "no built-in rule bmc_unreachabel"),
    ('[[alerts.rules]]\nname = "hot"\nmetric = "m"\nthreshold = 1\nsummary = "{value:d}"\n', "summary '{value:d}'"),
    ('[[alerts.rules]]\nname = "hot"\nmetric = "m"\nthreshold = 1\nfor = "soon"\n', "'soon' is not a duration"),
    ('[alerts]\nleak_policy = { "loop-a" = "flood" }\n', "alerts.leak_policy.loop-a"),
    ('[[webhooks]]\nname = "a"\nurl = "http://x"\nsecret_credential = "s"\ncolour = "red"\n',
     "unknown key 'webhooks.0.colour'"),
])
def test_alert_settings_are_checked(tmp_path, text, problem):
    path = tmp_path / "baie.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem.replace("{", r"\{").replace("}", r"\}")):
        load_settings(path, env={})


def test_outbox_entries_are_written_with_the_change(inventory):
    """The alert's change and its outbox entries commit together: none without the other."""
    populate(inventory)
    condition = service.Condition("warning", {"rule": "r", "node": "n1"}, "s")
    with pytest.raises(IntegrityError):  # an outbox entry that cannot be written (no target name)
        service.apply(inventory, [condition], T0, {None: "http://x"}, service.Policy())
    assert service.alerts(inventory, T0, include_resolved=True) == []
    service.apply(inventory, [condition], T0, {"a": "http://x", "b": "http://y"}, service.Policy())
    with inventory.session() as s:
        assert sorted(e.target for e in s.exec(select(OutboxEntry))) == ["a", "b"]

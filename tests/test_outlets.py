"""PDU outlets through the daemon's HTTP API (in-process app, httpx ASGI transport) against real snmpsim PDUs,
and a Redfish PDU (sushy-static serving public-pdu) through the outlet service.

Each PDU is its own snmpsim agent answering SNMPv3 with the empty context, as a real PDU does; the APC data
file's outlet 8 acknowledges a switch and never changes, so its action must fail.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from daemon.app import Metrics, create_app
from daemon.bmc import BmcAccess, NotTrusted
from daemon.config import BmcSettings
from daemon.outlets import OutletService
from inventory.model import Node, Pdu, PduOutlet, Site
from drivers.base import ActionNotConfirmed, OutletAction, Unsupported
from tests.lab.common import MOCKUPS, write_credential
from tests.lab.redfish import SushyStatic
from tests.lab.snmp import SimUser, SnmpSim, agent_dir

DATA = Path(__file__).parent / "data" / "snmp"
USER = SimUser("baie", "auth-key-5d1e7a", "priv-key-9c04b2")
CONFIRM_SECONDS = 2.0


V3_CREDENTIAL = f'username = "{USER.name}"\nauth_key = "{USER.auth_key}"\npriv_key = "{USER.priv_key}"\n'


@pytest.fixture(scope="module")
def apc(tmp_path_factory):
    with SnmpSim(agent_dir(tmp_path_factory.mktemp("apc") / "data", DATA / "apc.snmprec"), v3_users=[USER]) as sim:
        yield sim


@pytest.fixture(scope="module")
def raritan(tmp_path_factory):
    with SnmpSim(agent_dir(tmp_path_factory.mktemp("raritan") / "data", DATA / "raritan.snmprec"),
                 v3_users=[USER]) as sim:
        yield sim


def add_pdus(inventory, apc: SnmpSim, raritan: SnmpSim) -> None:
    """Site lab: pdu-apc (outlet 3 feeds web-03 PSU1) and pdu-raritan; site lab2: another pdu-apc."""
    with inventory.session() as s:
        lab, lab2 = (Site(name=name, country_code="FR", jurisdiction="France", role="primary")
                     for name in ("lab", "lab2"))
        node = Node(name="web-03", serial="SN-WEB-03")
        s.add_all([lab, lab2, node])
        s.flush()
        pdu = Pdu(site_id=lab.id, name="pdu-apc", address=apc.host, port=apc.port)
        s.add_all([pdu, Pdu(site_id=lab.id, name="pdu-raritan", address=raritan.host, port=raritan.port),
                   Pdu(site_id=lab2.id, name="pdu-apc", address=apc.host, port=apc.port)])
        s.flush()
        s.add(PduOutlet(pdu_id=pdu.id, index=3, name="web-03-psu1", node_id=node.id, psu="PSU1"))


@pytest.fixture
async def api(inventory, apc, raritan, tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    add_pdus(inventory, apc, raritan)
    app = create_app(inventory, Metrics(inventory))
    store = write_credential(tmp_path / "credentials", "snmp-default", V3_CREDENTIAL)
    app.state.outlets = OutletService(inventory, BmcAccess(BmcSettings(), store), store, timeout=3.0,
                                      confirm_seconds=CONFIRM_SECONDS)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://baie", timeout=30,
                                 headers={"X-Baie-Actor": "cli:alice"}) as client:
        yield client


async def act(api: httpx.AsyncClient, path: str, action: str) -> dict:
    reply = await api.post(path, json={"action": action})
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_on_off_cycle_are_confirmed_and_recorded(api, inventory):
    path = "/api/v1/pdus/lab/pdu-apc/outlets/3"
    await act(api, path, "on")  # the simulator keeps its state across tests: start from on
    assert (await act(api, path, "on"))["changed"] is False  # read first, act only if different
    off = await act(api, path, "off")
    assert off == {"pdu": "lab/pdu-apc", "outlet": 3, "action": "off", "before": "on", "after": "off",
                   "changed": True, "node": "web-03", "psu": "PSU1"}
    status = (await api.get(path)).json()
    assert (status["state"], status["name"], status["node"], status["psu"]) == ("off", "r12-node03", "web-03", "PSU1")
    assert status["power_watts"] == 322.0  # the simulator does not drop the meters when switched off
    woken = await act(api, path, "cycle")  # cycling an outlet that is off switches it on
    assert (woken["before"], woken["after"], woken["changed"]) == ("off", "on", True)
    cycled = await act(api, path, "cycle")  # off, confirmed, then on, confirmed
    assert (cycled["before"], cycled["after"], cycled["changed"]) == ("on", "on", True)

    events = [e for e in inventory.events(subject="pdu/lab/pdu-apc") if e.kind == "outlet.action"]
    assert len(events) == 5 and {e.actor for e in events} == {"cli:alice"}
    newest = events[0]
    assert newest.message == "outlet 3 cycle: on -> on (feeds web-03 PSU1)"
    assert (newest.details["node"], newest.details["psu"], newest.details["outlet"]) == ("web-03", "PSU1", 3)


async def test_an_outlet_that_acknowledges_but_does_not_switch_fails(api, inventory):
    reply = await api.post("/api/v1/pdus/lab/pdu-apc/outlets/8", json={"action": "off"})
    assert reply.status_code == 504
    assert reply.json() == {"kind": "ActionNotConfirmed", "error": "lab/pdu-apc: outlet 8 acknowledged switching "
                                                                   f"off but is still on after {CONFIRM_SECONDS:g}s"}
    failed = next(e for e in inventory.events() if e.kind == "outlet.failed")
    assert failed.actor == "cli:alice" and failed.details["error"] == "ActionNotConfirmed"
    assert failed.subject == "pdu/lab/pdu-apc" and "still on" in failed.message


async def test_another_vendor_and_the_whole_pdu(api):
    outlets = (await api.get("/api/v1/pdus/pdu-raritan/outlets")).json()
    assert [o["outlet"] for o in outlets] == list(range(1, 9))
    first = outlets[0]
    assert (first["pdu"], first["name"], first["state"], first["current_amps"], first["power_watts"], first["node"]) \
        == ("lab/pdu-raritan", "r12-node01", "on", 1.234, 281.0, None)
    await act(api, "/api/v1/pdus/pdu-raritan/outlets/2", "on")
    assert (await act(api, "/api/v1/pdus/pdu-raritan/outlets/2", "off"))["after"] == "off"
    assert (await act(api, "/api/v1/pdus/pdu-raritan/outlets/2", "on"))["after"] == "on"


@pytest.mark.parametrize("method, path, status, error", [
    ("GET", "/api/v1/pdus/nope/outlets", 404, "no PDU matches 'nope'"),
    ("POST", "/api/v1/pdus/lab/nope/outlets/1", 404, "no PDU matches 'lab/nope'"),
    ("POST", "/api/v1/pdus/lab/pdu-apc/outlets/42", 404, "no outlet matches 'lab/pdu-apc/42'"),
    ("GET", "/api/v1/pdus/pdu-apc/outlets/1", 409, "PDU 'pdu-apc' is ambiguous: lab/pdu-apc, lab2/pdu-apc "
                                                   "(qualify it as SITE/NAME)"),
])
async def test_unknown_or_ambiguous_names(api, method, path, status, error):
    reply = await api.request(method, path, json={"action": "off"} if method == "POST" else None)
    assert (reply.status_code, reply.json()) == (status, {"error": error})


async def test_v2c_only_with_the_pdus_waiver(inventory, apc, raritan, tmp_path):
    add_pdus(inventory, apc, raritan)
    store = write_credential(tmp_path / "credentials", "pdu-legacy", 'community = "agent"\n')
    service = OutletService(inventory, BmcAccess(BmcSettings(), store), store, timeout=3.0,
                            confirm_seconds=CONFIRM_SECONDS)
    query = select(Pdu).join(Site).where(Site.name == "lab", Pdu.name == "pdu-apc")
    with inventory.session() as s:
        s.exec(query).one().credential_ref = "pdu-legacy"
    with pytest.raises(NotTrusted) as refused:
        await service.outlets("lab/pdu-apc")
    assert str(refused.value) == \
        f"{tmp_path}/credentials/pdu-legacy: no SNMPv3 user (pdu/lab/pdu-apc has no v2c waiver)"
    with inventory.session() as s:
        s.exec(query).one().insecure_community_waiver = True
    assert len(await service.outlets("lab/pdu-apc")) == 8


# ---------------------------------------------------------------------------------------------- Redfish
@pytest.fixture(scope="module")
def redfish_pdu():
    with SushyStatic("public-pdu", tls=True) as peer:
        yield peer


@pytest.mark.skipif(not MOCKUPS.is_dir(), reason=f"Redfish mockups not found at {MOCKUPS}")
async def test_a_redfish_pdu_s_outlets_are_read_numbered_and_switched_with_confirmation(inventory, redfish_pdu,
                                                                                       tmp_path):
    """public-pdu: the inventory numbers outlet B1 (21, feeding db-01 PSU2); the others keep their place in the
    service's list. sushy-static acknowledges every action and changes nothing, so switching must fail."""
    with inventory.session() as s:
        site, node = Site(name="lab", country_code="FR", jurisdiction="France", role="primary"), Node(name="db-01")
        s.add_all([site, node])
        s.flush()
        pdu = Pdu(site_id=site.id, name="pdu-rf", protocol="redfish", address=redfish_pdu.address,
                  port=redfish_pdu.port)
        s.add(pdu)
        s.flush()
        s.add(PduOutlet(pdu_id=pdu.id, index=21, name="B1", node_id=node.id, psu="PSU2"))
    password = "pw-" + secrets.token_hex(8)
    store = write_credential(tmp_path / "credentials", "bmc-default", f"admin:{password}\n")
    service = OutletService(inventory, BmcAccess(BmcSettings(ca_bundle=redfish_pdu.ca_file), store), store,
                            timeout=5.0, confirm_seconds=CONFIRM_SECONDS)

    tree = MOCKUPS / "public-pdu" / "PowerEquipment" / "RackPDUs" / "1" / "Outlets"
    served = [json.loads((tree / member["@odata.id"].rsplit("/", 1)[1] / "index.json").read_text())
              for member in json.loads((tree / "index.json").read_text())["Members"]]
    outlets = {o.name: o for o in await service.outlets("pdu-rf")}
    assert list(outlets) == [o["Id"] for o in served]
    for place, outlet in enumerate(served, start=1):
        seen = outlets[outlet["Id"]]
        assert seen.outlet == (21 if outlet["Id"] == "B1" else place)
        assert (seen.state, seen.current_amps, seen.power_watts, seen.energy_kwh) == (
            outlet.get("PowerState", "").lower() or None, outlet.get("CurrentAmps", {}).get("Reading"),
            outlet.get("PowerWatts", {}).get("Reading"), outlet.get("EnergykWh", {}).get("Reading"))
    assert (outlets["B1"].node, outlets["B1"].psu) == ("db-01", "PSU2")

    already = await service.act("pdu-rf", 21, OutletAction.ON, "cli:alice")
    assert (already.before, already.changed) == ("on", False)
    with pytest.raises(ActionNotConfirmed, match="outlet 21 acknowledged switching off but is still on"):
        await service.act("pdu-rf", 21, OutletAction.OFF, "cli:alice")
    no_action = next(o for o in served if "#Outlet.PowerControl" not in o.get("Actions", {}))
    with pytest.raises(Unsupported, match=f"outlet {no_action['Id']} offers no Outlet.PowerControl"):
        await service.act("pdu-rf", outlets[no_action["Id"]].outlet, OutletAction.OFF, "cli:alice")
    events = [e for e in inventory.events() if e.subject == "pdu/lab/pdu-rf"]
    assert [e.kind for e in events].count("outlet.failed") == 2
    assert "feeds db-01 PSU2" in next(e.message for e in events if e.kind == "outlet.action")
    assert password not in " ".join(e.message for e in events)

"""Power and one-time boot through the daemon's HTTP API, against sushy-emulator --fake as the BMC.

The API app runs in-process behind httpx's ASGI transport; the BMC is a real peer that applies resets
1-11 s after the request, so every action is confirmed by reading back within a deadline.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
import requests

from daemon.app import Metrics, create_app
from daemon.bmc import BmcAccess, PowerService
from daemon.config import BmcSettings, DiscoverySettings
from daemon.credentials import CredentialStore
from daemon.discovery import Discovery
from inventory.model import Site
from tests.lab.common import MOCKUPS
from tests.lab.redfish import SushyEmulator, SushyStatic

PASSWORD = "pw-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def bmc():
    with SushyEmulator("127.78.0.1", username="admin", password=PASSWORD, tls=True) as peer:
        yield peer


def _credentials(tmp_path, password: str):
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700, exist_ok=True)
    path = creds / "bmc-default"
    path.write_text(f"admin:{password}\n")
    path.chmod(0o600)
    return CredentialStore(creds)


async def _client(inventory, settings: BmcSettings, store: CredentialStore) -> tuple[httpx.AsyncClient, Discovery]:
    access = BmcAccess(settings, store)
    app = create_app(inventory, Metrics(inventory))
    discovery = Discovery(inventory, access, DiscoverySettings(probe_timeout_seconds=2))
    app.state.discovery = discovery
    app.state.power = PowerService(inventory, access)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://baie", timeout=60,
                               headers={"X-Baie-Actor": "cli:alice"})
    return client, discovery


@pytest.fixture
async def api(bmc, inventory, tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    with inventory.session() as s:
        s.add(Site(name="lab", country_code="FR", jurisdiction="France", role="primary"))
    client, _ = await _client(inventory, BmcSettings(redfish_port=bmc.port, power_confirm_seconds=30),
                              _credentials(tmp_path, PASSWORD))
    async with client:
        lines = [line async for line in _stream(client, f"/api/v1/sites/lab/discover?range={bmc.address}/32")]
        assert lines[-1]["summary"]["enrolled"] == 1, lines
        yield client


async def _stream(client: httpx.AsyncClient, url: str):
    async with client.stream("POST", url) as reply:
        assert reply.status_code == 200, await reply.aread()
        async for line in reply.aiter_lines():
            yield json.loads(line)


async def test_power_actions_are_confirmed_and_recorded(api, bmc, inventory):
    node = bmc.SYSTEM_UUID
    assert inventory.node(node).bmc_tls_fingerprint == bmc.certificate_sha256
    reply = await api.post(f"/api/v1/nodes/{node}/power", json={"action": "on"})
    assert reply.status_code == 200, reply.text
    assert reply.json() | {"node": None} == {"node": None, "action": "on", "before": "off", "after": "on",
                                             "changed": True}
    again = await api.post(f"/api/v1/nodes/{node}/power", json={"action": "on"})
    assert again.json()["changed"] is False  # read first, act only if different
    cycled = await api.post(f"/api/v1/nodes/{node}/power", json={"action": "cycle"})
    assert cycled.json()["after"] == "on"
    off = await api.post(f"/api/v1/nodes/{node}/power", json={"action": "off"})
    assert (off.json()["before"], off.json()["after"]) == ("on", "off")
    assert (await api.get(f"/api/v1/nodes/{node}/power")).json()["power_state"] == "off"
    events = [e for e in inventory.events() if e.kind == "power.action"]
    assert len(events) == 4 and {e.actor for e in events} == {"cli:alice"}


async def test_one_time_pxe_boot(api, bmc, inventory):
    reply = await api.post(f"/api/v1/nodes/{bmc.SYSTEM_UUID}/boot", json={"device": "pxe", "mode": "uefi"})
    assert reply.status_code == 200, reply.text
    system = requests.get(f"{bmc.url}/redfish/v1/Systems/{bmc.SYSTEM_UUID}", auth=("admin", PASSWORD),
                          verify=str(bmc.ca_file), timeout=10).json()
    assert system["Boot"]["BootSourceOverrideTarget"] == "Pxe"
    assert system["Boot"]["BootSourceOverrideMode"] == "UEFI"
    event = next(e for e in inventory.events() if e.kind == "boot.override")
    assert event.actor == "cli:alice" and event.details["once"] is True
    refused = await api.post(f"/api/v1/nodes/{bmc.SYSTEM_UUID}/boot", json={"device": "pxe", "once": False})
    assert refused.status_code == 422


async def test_wrong_password_is_a_clear_error_without_the_secret(api, bmc, inventory, tmp_path):
    wrong = "wrong-" + secrets.token_hex(8)
    (tmp_path / "credentials" / "bmc-default").write_text(f"admin:{wrong}\n")  # re-read on every call
    reply = await api.post(f"/api/v1/nodes/{bmc.SYSTEM_UUID}/power", json={"action": "on"})
    assert reply.status_code == 502 and reply.json()["kind"] == "AuthFailed"
    assert wrong not in reply.text and PASSWORD not in reply.text
    failed = next(e for e in inventory.events() if e.kind == "power.failed")
    assert failed.actor == "cli:alice" and wrong not in failed.message
    assert inventory.node(bmc.SYSTEM_UUID).bmc_state == "auth_failed"  # recorded, with an event, once
    assert [e.kind for e in inventory.events()].count("bmc.auth_failed") == 1


@pytest.mark.skipif(not MOCKUPS.is_dir(), reason=f"Redfish mockups not found at {MOCKUPS}")
async def test_a_bmc_that_acknowledges_but_does_not_act_fails_the_action(inventory, tmp_path):
    """sushy-static answers a reset with 204 and changes nothing: the action must fail, not pass."""
    with inventory.session() as s:
        s.add(Site(name="lab", country_code="FR", jurisdiction="France", role="primary"))
    with SushyStatic("public-rackmount1", "127.78.0.2", tls=True) as static:
        settings = BmcSettings(redfish_port=static.port, power_confirm_seconds=2)
        client, discovery = await _client(inventory, settings, _credentials(tmp_path, "any"))
        async with client:
            summary = await discovery.discover("lab", cidr=f"{static.address}/32")
            assert summary.enrolled == 1
            reply = await client.post("/api/v1/nodes/437XR1138R2/power", json={"action": "off"})
    assert reply.status_code == 504
    assert reply.json()["kind"] == "ActionNotConfirmed"
    assert "acknowledged but the node is still on" in reply.json()["error"]


async def test_unknown_node_and_bad_action(api):
    assert (await api.post("/api/v1/nodes/nope/power", json={"action": "on"})).status_code == 404
    assert (await api.post("/api/v1/nodes/nope/power", json={"action": "explode"})).status_code == 422

"""Provisioning end to end on loopback: sushy-emulator --fake as the BMC, the daemon's boot endpoints fetched
by the test acting as iPXE and as the installer, and an asyncssh server standing in for the installed host.

The API and the boot service run in-process behind httpx's ASGI transport (test_lifecycle runs the daemon
as a real process and SIGKILLs it mid-provisioning).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from pathlib import Path

import asyncssh
import httpx
import pytest
import yaml
from sqlmodel import select

from daemon.app import Metrics, create_app
from daemon.bmc import BmcAccess, PowerService
from daemon.boot import create_boot_app
from daemon.config import BmcSettings, ImageSettings, ProfileSettings, ProvisioningSettings, ProvisioningTimeouts
from daemon.credentials import CredentialStore
from daemon.provisioning import CHECKS, Provisioner
from inventory import lifecycle
from inventory.model import (
    Location,
    NetworkInterface,
    Node,
    NodeState,
    PowerFeed,
    PowerPanel,
    Provisioning,
    Rack,
    Site,
    utcnow,
)
from inventory.service import Inventory
from inventory.telemetry import NODE_POWER, ReadingIn, store_readings
from tests.lab.common import eventually, free_port, write_config
from tests.lab.installed_host import DISKS, InstalledHost
from tests.lab.redfish import SushyEmulator

S = NodeState
PASSWORD = "pw-" + secrets.token_hex(8)
BOOT_URL = "http://boot.test"
TIMEOUTS = ProvisioningTimeouts(booting=60, installing=60, verifying=15, deployed=30, draining=30, cleaning=30)


@pytest.fixture(scope="module")
def bmc():
    with SushyEmulator("127.79.0.1", username="admin", password=PASSWORD, tls=True) as peer:
        yield peer


@pytest.fixture
def client_key():
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture
def credentials(tmp_path, client_key):
    directory = tmp_path / "credentials"
    directory.mkdir(mode=0o700)
    for name, content in (("bmc-default", f"admin:{PASSWORD}\n"),
                          ("ssh-provisioning", client_key.export_private_key().decode())):
        (directory / name).write_text(content)
        (directory / name).chmod(0o600)
    return directory


def _settings(tmp_path, ssh_port: int, **overrides) -> ProvisioningSettings:
    (tmp_path / "vmlinuz").write_bytes(b"linux kernel")
    (tmp_path / "initrd.gz").write_bytes(b"initrd")
    images = {
        "debian12": ImageSettings(family="debian", kernel=str(tmp_path / "vmlinuz"), initrd=str(tmp_path / "initrd.gz"),
                                  repository="http://deb.debian.org/debian"),
        "noble": ImageSettings(family="ubuntu", kernel="http://mirror.test/noble/vmlinuz",
                               initrd="http://mirror.test/noble/initrd", repository="http://archive.ubuntu.com/ubuntu",
                               kernel_args="url=http://mirror.test/noble/live-server.iso"),
        "rocky9": ImageSettings(family="rocky", kernel="http://mirror.test/rocky/vmlinuz",
                                initrd="http://mirror.test/rocky/initrd.img",
                                repository="http://dl.rockylinux.org/pub/rocky/9/BaseOS/x86_64/os"),
    }
    profiles = {"kvm": ProfileSettings(image="debian12", pool="pool-a", disks=2),
                "kvm-ubuntu": ProfileSettings(image="noble"), "kvm-rocky": ProfileSettings(image="rocky9")}
    return ProvisioningSettings(base_url=BOOT_URL, hosts_directory=tmp_path / "hosts", images=images,
                                profiles=profiles, ssh_port=ssh_port, timeouts=TIMEOUTS, **overrides)


def daemon_config(directory: Path, database_url: str, credentials: Path, *, socket: Path, bmc_port: int, listen: str,
                  bmc: dict | None = None, provisioning: dict | None = None, timeouts: dict | None = None,
                  profile: dict | None = None) -> str:
    """A config file for a real daemon process that provisions: the debian12 image of ``_settings`` and
    profile kvm; the dicts add keys to [bmc], [provisioning], [provisioning.timeouts] and the profile."""
    image = _settings(directory, 22).images["debian12"]
    return str(write_config(directory / "baie.toml", {
        "database": {"url": database_url}, "api": {"socket": socket}, "credentials": {"directory": credentials},
        "bmc": {"redfish_port": bmc_port, **(bmc or {})},
        "provisioning": {"listen": listen, "hosts_directory": directory / "hosts", **(provisioning or {})},
        "provisioning.timeouts": timeouts or {},
        "provisioning.images.debian12": {"family": "debian", "kernel": image.kernel, "initrd": image.initrd,
                                         "repository": image.repository},
        "provisioning.profiles.kvm": {"image": "debian12", **(profile or {})},
    }))


def populate(inventory: Inventory, bmc: SushyEmulator, *, budget: float = 3000.0, amperage: float = 16.0,
             extra: tuple[str, ...] = ()) -> None:
    """Site lab, rack R1 (budget, feeds A and B), node hv-1 on the emulated BMC drawing 200 W, available;
    ``extra`` nodes on BMCs that do not answer."""
    with inventory.session() as s:
        site = Site(name="lab", country_code="FR", jurisdiction="France", role="primary")
        s.add(site)
        s.flush()
        location = Location(site_id=site.id, name="hall")
        panel = PowerPanel(site_id=site.id, name="P1")
        s.add_all([location, panel])
        s.flush()
        rack = Rack(site_id=site.id, location_id=location.id, name="R1", power_budget_watts=budget)
        s.add(rack)
        s.flush()
        s.add_all([PowerFeed(power_panel_id=panel.id, rack_id=rack.id, name=f"R1-{side}", side=side,
                             amperage=amperage) for side in "AB"])
        for position, (name, address, port, mac) in enumerate(
                [("hv-1", bmc.address, bmc.port, bmc.NIC_MAC)]
                + [(n, f"127.79.9.{i + 1}", free_port(), f"52:54:00:00:09:{i + 1:02x}") for i, n in enumerate(extra)],
                start=10):
            node = Node(name=name, site_id=site.id, bmc_address=address, bmc_port=port, bmc_protocol="redfish",
                        bmc_tls_fingerprint=bmc.certificate_sha256, state=S.AVAILABLE, expected_power_watts=400)
            inventory.place_node(s, node, rack, position)
            s.add(NetworkInterface(node_id=node.id, name="eno1", mac=mac))
    store_readings(inventory, [ReadingIn(NODE_POWER, {"site": "lab", "node": "hv-1"}, 200.0, utcnow())])


@pytest.fixture
async def lab(bmc, inventory, tmp_path, credentials, client_key):
    """(api, boot, host): the daemon's API and boot service in-process, and the host-to-be."""
    populate(inventory, bmc, extra=("hv-2",))
    store = CredentialStore(credentials)
    async with InstalledHost(client_key.export_public_key().decode().strip(), bmc.NIC_MAC) as host:
        settings = _settings(tmp_path, host.port)
        power = PowerService(inventory, BmcAccess(BmcSettings(redfish_port=bmc.port, power_confirm_seconds=30), store))
        app = create_app(inventory, Metrics(inventory))
        app.state.power = power
        app.state.provisioner = provisioner = Provisioner(inventory, power, settings, store, "test-host/abc")
        await provisioner.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://baie", timeout=180,
                                     headers={"X-Baie-Actor": "cli:alice"}) as api, \
                httpx.AsyncClient(transport=httpx.ASGITransport(app=create_boot_app(inventory, settings, store)),
                                  base_url=BOOT_URL, timeout=30) as boot:
            yield api, boot, host
        await provisioner.stop()


def ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line]


async def act_as_node(boot: httpx.AsyncClient, inventory: Inventory, node: str, mac: str, host_key: str) -> dict:
    """What the node does once powered on: iPXE fetches its script, kernel and initrd; the installer fetches
    its preseed and, installed, calls back with the host key. Returns the URLs it used."""
    async def powered_on() -> bool:
        return any(e.kind == "power.action" for e in inventory.events(subject=f"node/{node}"))

    await eventually(powered_on, deadline=60, what=f"{node} powered on", interval=0.5)
    script = await boot.get("/boot/ipxe", params={"mac": mac})
    assert script.status_code == 200 and script.text.startswith("#!ipxe\n"), script.text
    kernel = re.search(r"^kernel --name vmlinuz (\S+) initrd=initrd .*url=(\S+)", script.text, re.M)
    initrd = re.search(r"^initrd --name initrd (\S+)$", script.text, re.M)
    assert kernel and initrd, script.text
    assert (await boot.get(kernel[1])).content == b"linux kernel"
    assert (await boot.get(initrd[1])).content == b"initrd"
    preseed = await boot.get(kernel[2])
    assert preseed.status_code == 200, preseed.text
    callback = re.search(r"--data-binary @/etc/ssh/ssh_host_ed25519_key.pub (\S+/callback)$", preseed.text, re.M)
    assert callback, preseed.text
    called = await boot.post(callback[1], content=host_key + " root@hv-1\n")
    assert called.status_code == 200, called.text
    return {"config": kernel[2], "callback": callback[1]}


async def test_bulk_provisioning_reaches_the_pool_and_release_erases(lab, bmc, inventory, tmp_path):
    api, boot, host = lab
    request = asyncio.create_task(api.post("/api/v1/provision", json={"profile": "kvm", "rack": "lab/R1", "count": 2,
                                                                       "parallel": 2}))
    urls = await act_as_node(boot, inventory, "hv-1", bmc.NIC_MAC, host.public_key)
    reply = await request
    assert reply.status_code == 200, reply.text
    lines = ndjson(reply.text)
    assert lines[0] == {"nodes": ["hv-2", "hv-1"]}
    outcomes = {o["node"]: o for o in lines[-1]["summary"]}
    # hv-1 joined the pool; hv-2, whose BMC does not answer, failed alone
    assert outcomes["hv-1"] == {"node": "hv-1", "state": "in_pool", "error": None}
    assert outcomes["hv-2"]["state"] == "booting_failed" and "127.79.9.1" in outcomes["hv-2"]["error"]
    history = (await api.get("/api/v1/nodes/hv-1/history")).json()
    assert [(t["source"], t["target"]) for t in history] == [
        ("available", "booting"), ("booting", "installing"), ("installing", "verifying"),
        ("verifying", "deployed"), ("deployed", "in_pool")]
    assert history[0]["actor"] == "cli:alice" and history[2]["reason"] == "the installer called back from 127.0.0.1"
    node = _node(inventory, "hv-1")
    assert (node.pool, node.lock_owner) == ("pool-a", None)
    assert _node(inventory, "hv-2").lock_owner is None
    assert set(CHECKS.values()) | {"virsh --connect qemu:///system version"} <= set(host.commands)
    assert (tmp_path / "hosts" / "hv-1").read_text() == f"{bmc.NIC_MAC},set:baie\n"
    # the token was spent by the callback: a replay is refused, and so is the configuration
    assert (await boot.post(urls["callback"], content=host.public_key)).status_code == 403
    assert (await boot.get(urls["config"])).status_code == 403
    assert (await boot.get("/boot/ipxe", params={"mac": bmc.NIC_MAC})).text.endswith("exit\n")  # boot from disk

    host.commands.clear()
    released = await api.post("/api/v1/nodes/hv-1/release", json={})
    summary = ndjson(released.text)[-1]["summary"]
    assert summary == [{"node": "hv-1", "state": "available", "error": None}]
    erase = [c for c in host.commands if c.startswith(("blkdiscard", "cmp"))]
    assert erase == [f"{verb} /dev/{name}{tail}" for name, _, _ in DISKS for verb, tail in
                     (("blkdiscard --force", ""), ("cmp --bytes=16777216", " /dev/zero"))]
    assert [(t["source"], t["target"]) for t in (await api.get("/api/v1/nodes/hv-1/history")).json()][-3:] == [
        ("in_pool", "draining"), ("draining", "cleaning"), ("cleaning", "available")]
    assert _node(inventory, "hv-1").pool is None


async def test_a_failed_erase_leaves_the_node_unallocatable(lab, bmc, inventory):
    api, _boot, host = lab
    _set_in_pool(inventory, "hv-1", host.public_key)
    host.answers[f"cmp --bytes=16777216 /dev/{DISKS[1][0]} /dev/zero"] = (1, "")
    released = ndjson((await api.post("/api/v1/nodes/hv-1/release", json={})).text)[-1]["summary"]
    assert released[0]["state"] == "cleaning_failed" and f"erase of {DISKS[1][0]} not verified" in released[0]["error"]
    refused = await api.post("/api/v1/provision", json={"profile": "kvm", "nodes": ["hv-1"]})
    assert refused.status_code == 409 and "cleaning_failed: it cannot go to booting" in refused.json()["error"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # time: the bulk test runs on both
async def test_a_host_key_other_than_the_reported_one_fails_verification(lab, bmc, inventory):
    api, boot, host = lab
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    request = asyncio.create_task(api.post("/api/v1/provision", json={"profile": "kvm", "nodes": ["hv-1"]}))
    await act_as_node(boot, inventory, "hv-1", bmc.NIC_MAC, impostor)  # the host serves another key
    summary = ndjson((await request).text)[-1]["summary"]
    assert summary[0]["state"] == "verifying_failed"
    assert "host key differs from the one the host reported" in summary[0]["error"]
    assert not any(c.startswith("virsh") for c in host.commands) and host.commands == []
    assert _node(inventory, "hv-1").lock_owner is None


@pytest.mark.parametrize(("budget", "amperage", "message"), [
    (500.0, 16.0, "no power headroom in rack lab/R1: measured 200 W + hv-1 400 W = 600 W, over its budget of 500 W"),
    (3000.0, 2.0, "measured 200 W + hv-1 400 W = 600 W, over feed side A's 368 W (the rack must run on either "
                  "side alone)"),
])
async def test_no_power_headroom_is_refused_before_power_on(bmc, inventory, tmp_path, credentials, budget, amperage,
                                                            message):
    populate(inventory, bmc, budget=budget, amperage=amperage)
    store = CredentialStore(credentials)
    power = PowerService(inventory, BmcAccess(BmcSettings(redfish_port=bmc.port), store))
    provisioner = Provisioner(inventory, power, _settings(tmp_path, 22), store, "test-host/abc")
    outcome = await provisioner.provision("hv-1", "kvm", "cli:alice", lambda item: None)
    assert outcome.state == "available" and message in outcome.error
    assert inventory.events(subject="node/hv-1") == []  # no boot override, no power action
    assert lifecycle.history(inventory, "hv-1") == [] and _node(inventory, "hv-1").lock_owner is None
    with inventory.session() as s:
        assert s.exec(select(Provisioning)).all() == []


async def test_unknown_mac_is_404_and_installer_files_per_family(lab, bmc, inventory):
    api, boot, _host = lab
    unknown = "02:00:00:00:00:01"
    assert (await boot.get("/boot/ipxe", params={"mac": unknown})).status_code == 404
    assert (await boot.get(f"/boot/{unknown}/{'t' * 43}/preseed.cfg")).status_code == 404
    assert (await boot.post(f"/boot/{unknown}/{'t' * 43}/callback", content="ssh-ed25519 AAAA")).status_code == 404
    assert (await boot.get(f"/boot/{bmc.NIC_MAC}/{'t' * 43}/preseed.cfg")).status_code == 403
    chain = await boot.get("/boot/ipxe")
    assert chain.text == f"#!ipxe\nchain {BOOT_URL}/boot/ipxe?mac=${{netX/mac}}\n"

    for profile, files in (("kvm-ubuntu", ("user-data", "meta-data")), ("kvm-rocky", ("ks.cfg",))):
        _set(inventory, "hv-1", state=S.AVAILABLE)
        lifecycle.acquire(inventory, "hv-1", "t")
        lifecycle.begin_provisioning(inventory, "hv-1", profile, "test", "test", "t")
        lifecycle.unlock(inventory, "hv-1", "t")
        script = (await boot.get("/boot/ipxe", params={"mac": bmc.NIC_MAC})).text
        folder = re.search(r"(?:ds=nocloud-net;s=|inst\.ks=)(\S+/)", script)[1]
        rendered = {name: (await boot.get(folder + name)).text for name in files}
        if profile == "kvm-ubuntu":
            assert "url=http://mirror.test/noble/live-server.iso" in script
            user_data = yaml.safe_load(rendered["user-data"])["autoinstall"]
            assert user_data["user-data"]["ssh_deletekeys"] is False
            assert user_data["late-commands"][-1].endswith(folder + "callback")
            assert yaml.safe_load(rendered["meta-data"])["local-hostname"] == "hv-1"
        else:
            assert "inst.repo=http://dl.rockylinux.org/pub/rocky/9/BaseOS/x86_64/os" in script
            assert f"curl -fsS --retry 10 --data-binary @/etc/ssh/ssh_host_ed25519_key.pub {folder}callback" \
                   in rendered["ks.cfg"] and 'sshkey --username=root "ssh-ed25519 ' in rendered["ks.cfg"]
        assert (await boot.get(folder + "preseed.cfg")).status_code == 404
        _set(inventory, "hv-1", state=S.BOOTING_FAILED)


def _node(inventory: Inventory, name: str) -> Node:
    with inventory.session() as s:
        return s.exec(select(Node).where(Node.name == name)).one()


def _set(inventory: Inventory, name: str, **fields) -> None:
    with inventory.session() as s:
        node = s.exec(select(Node).where(Node.name == name)).one()
        for key, value in fields.items():
            setattr(node, key, value)
        s.add(node)


def _set_in_pool(inventory: Inventory, name: str, host_key: str) -> None:
    """A node installed earlier: in the pool, with the host key and address its installer reported."""
    node = _node(inventory, name)
    _set(inventory, name, state=S.IN_POOL, pool="pool-a")
    with inventory.session() as s:
        s.add(Provisioning(node_id=node.id, profile="kvm", mac="x", callback_at=utcnow(),
                           host_address="127.0.0.1", ssh_host_key=host_key))

"""Discovery and enrolment against real peers: sushy-static over HTTPS and ipmi_sim, on loopback addresses
of one /29, swept by the daemon's discovery with trust on first use."""

from __future__ import annotations

import socket

import pytest

from daemon.bmc import BmcAccess
from daemon.config import BmcSettings, DiscoverySettings
from daemon.credentials import CredentialStore
from daemon.discovery import Discovery, addresses
from inventory.errors import Invalid
from inventory.model import DiscoveryRange, Site
from tests.lab.common import MOCKUPS, free_port
from tests.lab.ipmi import BmcSpec, IpmiSim
from tests.lab.redfish import SushyStatic

pytestmark = pytest.mark.skipif(not MOCKUPS.is_dir(), reason=f"Redfish mockups not found at {MOCKUPS}")

NET = "127.77.0"
RACKMOUNT_SERIAL = "437XR1138R2"  # public-rackmount1/Systems/437XR1138R2
DL325_SERIAL = "MXQ019020B"  # DL325/Systems/1


@pytest.fixture(scope="module")
def lab():
    redfish_port = free_port(f"{NET}.1")
    ipmi_port = free_port(f"{NET}.3", socket.SOCK_DGRAM)
    with SushyStatic("public-rackmount1", f"{NET}.1", redfish_port, tls=True) as rackmount, \
            SushyStatic("DL325", f"{NET}.2", redfish_port, tls=True) as dl325, \
            IpmiSim(BmcSpec(product_serial="PSN-LAB-3", board_serial="BSN-LAB-3", address=f"{NET}.3",
                            port=ipmi_port),
                    BmcSpec(product_serial="PSN-LAB-4", board_serial="BSN-LAB-4", address=f"{NET}.4",
                            port=ipmi_port, password="another-password")) as ipmi:
        yield {"rackmount": rackmount, "dl325": dl325, "ipmi": ipmi, "redfish_port": redfish_port,
               "ipmi_port": ipmi_port}


@pytest.fixture
def discovery(lab, inventory, tmp_path):
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "bmc-default").write_text("admin:password\n")
    (creds / "bmc-default").chmod(0o600)
    with inventory.session() as s:
        site = Site(name="lab", country_code="FR", jurisdiction="France", role="primary")
        s.add(site)
        s.flush()
        s.add(DiscoveryRange(site_id=site.id, cidr=f"{NET}.0/29", protocols="redfish,ipmi"))
    bmc = BmcSettings(redfish_port=lab["redfish_port"], ipmi_port=lab["ipmi_port"], timeout_seconds=5)
    access = BmcAccess(bmc, CredentialStore(creds))
    return Discovery(inventory, access, DiscoverySettings(probe_timeout_seconds=1.0, concurrency=16))


async def test_sweep_enrols_what_answers_and_pins_certificates(lab, discovery, inventory):
    seen = []
    summary = await discovery.discover("lab", progress=lambda done, total: seen.append((done, total)))
    assert summary.addresses == 6  # the hosts of a /29
    assert seen[-1] == (6, 6)
    assert summary.by_protocol == {"redfish": 2, "ipmi": 2}
    assert (summary.enrolled, summary.refused, summary.failed) == (3, 1, 0), summary.problems
    nodes = {n.bmc_address: n for n in inventory.nodes(site="lab")}
    assert nodes[f"{NET}.1"].serial == RACKMOUNT_SERIAL
    assert nodes[f"{NET}.2"].serial == DL325_SERIAL
    assert nodes[f"{NET}.3"].serial == "PSN-LAB-3" and nodes[f"{NET}.3"].bmc_protocol == "ipmi"
    assert nodes[f"{NET}.4"].serial is None and nodes[f"{NET}.4"].bmc_state == "auth_failed"
    detail = inventory.node(RACKMOUNT_SERIAL)
    assert detail.bmc_tls_fingerprint == lab["rackmount"].fingerprint  # trust on first use, stored
    assert detail.bmc_state == "ok"
    kinds = sorted(e.kind for e in inventory.events())
    assert kinds == ["bmc.auth_failed", "node.enrolled", "node.enrolled", "node.enrolled"]

    again = await discovery.discover("lab")
    assert (again.enrolled, again.updated) == (0, 3)
    assert len(inventory.nodes(site="lab")) == 4  # re-discovery never duplicates
    assert [e.kind for e in inventory.events()].count("bmc.auth_failed") == 1  # refused once, logged once


async def test_a_replaced_certificate_fails_closed(lab, discovery, inventory):
    await discovery.discover("lab", cidr=f"{NET}.2/32")
    pinned = inventory.node(DL325_SERIAL).bmc_tls_fingerprint
    assert pinned == lab["dl325"].fingerprint
    lab["dl325"].__exit__()
    with SushyStatic("DL325", f"{NET}.2", lab["redfish_port"], tls=True) as replaced:
        summary = await discovery.discover("lab", cidr=f"{NET}.2/32")
        assert replaced.fingerprint != pinned
    lab["dl325"].__enter__()
    assert summary.refused == 1
    node = inventory.node(DL325_SERIAL)
    assert node.bmc_state == "tls_mismatch" and node.bmc_tls_fingerprint == pinned  # not silently re-pinned
    event = next(e for e in inventory.events() if e.kind == "bmc.tls_mismatch")
    assert event.details["seen_fingerprint"] == replaced.fingerprint


def test_ranges_are_checked():
    assert addresses(["192.0.2.0/30"]) == ["192.0.2.1", "192.0.2.2"]
    assert addresses(["192.0.2.7/32"]) == ["192.0.2.7"]
    with pytest.raises(Invalid, match="not a CIDR"):
        addresses(["192.0.2.0/33"])
    with pytest.raises(Invalid, match="at most a /16"):
        addresses(["10.0.0.0/8"])

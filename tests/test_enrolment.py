"""Enrolment on both backends: re-discovery never duplicates, drift and moves are recorded as events."""

from __future__ import annotations

import pytest

from inventory.enrolment import Observed, enrol, record_bmc_problem, set_bmc_state, trust_certificate
from inventory.errors import Conflict
from inventory.model import BmcState, MemoryModule, NetworkInterface, Node, NodeState, Processor, Site


@pytest.fixture
def site(inventory) -> str:
    with inventory.session() as s:
        s.add(Site(name="par1", country_code="FR", jurisdiction="France", role="primary"))
    return "par1"


def observed(address="127.0.0.5", serial="SN-1", dimm_mib=32768, bios="1.0", mac="52:54:00:aa:00:01"):
    return Observed(
        bmc_address=address, bmc_port=443, bmc_protocol="redfish", serial=serial, uuid=f"uuid-{serial}",
        manufacturer="Contoso", model="R1", bios_version=bios, bmc_firmware="5.0", power_state="on",
        processors=[Processor(node_id=0, socket="CPU1", model="Xeon", cores=16, threads=32)],
        memory=[MemoryModule(node_id=0, slot="DIMM1", size_mib=dimm_mib),
                MemoryModule(node_id=0, slot="DIMM2", size_mib=32768)],
        nics=[NetworkInterface(node_id=0, name="eth0", mac=mac)],
    )


def test_rediscovery_does_not_duplicate(inventory, site):
    first = enrol(inventory, site, observed(), "test")
    second = enrol(inventory, site, observed(), "test")
    assert first.created and not second.created and second.drift == []
    nodes = inventory.nodes()
    assert len(nodes) == 1
    detail = inventory.node("SN-1")
    assert detail.memory_total_mib == 65536 and detail.processor_count == 1
    assert [e.kind for e in inventory.events()] == ["node.enrolled"]


def test_changed_dimm_and_firmware_are_drift_events(inventory, site):
    enrol(inventory, site, observed(), "test")
    result = enrol(inventory, site, observed(dimm_mib=16384, bios="1.1"), "daemon")
    assert "MemoryModule DIMM1 changed: size_mib 32768 -> 16384" in result.drift
    assert "bios_version changed: '1.0' -> '1.1'" in result.drift
    drift = [e for e in inventory.events() if e.kind == "hardware.drift"]
    assert len(drift) == 1 and drift[0].actor == "daemon" and "DIMM1" in drift[0].message
    assert inventory.node("SN-1").memory_total_mib == 16384 + 32768


def test_moved_bmc_address_updates_the_node(inventory, site):
    enrol(inventory, site, observed(address="127.0.0.5"), "test")
    enrol(inventory, site, observed(address="127.0.0.9"), "test")
    assert [n.bmc_address for n in inventory.nodes()] == ["127.0.0.9"]
    assert any(e.kind == "node.bmc_moved" and "127.0.0.5" in e.message for e in inventory.events())


def test_declared_node_is_matched_by_serial(inventory, site):
    with inventory.session() as s:
        s.add(Node(serial="SN-1", name="par1-r01-u10", state=NodeState.PLANNED))
    result = enrol(inventory, site, observed(), "test")
    assert not result.created and result.drift == []  # first sighting: its components are not drift
    node = inventory.node("par1-r01-u10")
    assert node.state == NodeState.DISCOVERED and node.bmc_address == "127.0.0.5"
    assert [e.kind for e in inventory.events()] == ["node.enrolled"]
    assert "declared placement" in inventory.events()[0].message


def test_refused_bmc_is_kept_then_merged_when_credentials_work(inventory, site):
    label = record_bmc_problem(inventory, site, "127.0.0.7", 443, "redfish", BmcState.AUTH_FAILED,
                               "credentials refused", "daemon")
    record_bmc_problem(inventory, site, "127.0.0.7", 443, "redfish", BmcState.AUTH_FAILED,
                       "credentials refused", "daemon")
    assert label == "127.0.0.7"
    assert [(n.bmc_address, n.bmc_state) for n in inventory.nodes()] == [("127.0.0.7", "auth_failed")]
    assert [e.kind for e in inventory.events()] == ["bmc.auth_failed"]  # once, not per attempt
    enrol(inventory, site, observed(address="127.0.0.7"), "daemon")
    nodes = inventory.nodes()
    assert [(n.serial, n.bmc_state) for n in nodes] == [("SN-1", "ok")]


def test_mac_seen_on_another_node_is_a_conflict(inventory, site):
    enrol(inventory, site, observed(serial="SN-1"), "test")
    with pytest.raises(Conflict, match="52:54:00:aa:00:01"):
        enrol(inventory, site, observed(serial="SN-2", address="127.0.0.6"), "test")
    assert [n.serial for n in inventory.nodes()] == ["SN-1"]


def test_bmc_state_changes_are_events_once(inventory, site):
    enrol(inventory, site, observed(), "test")
    assert set_bmc_state(inventory, "SN-1", BmcState.UNREACHABLE, "no answer", "daemon")
    assert not set_bmc_state(inventory, "SN-1", BmcState.UNREACHABLE, "no answer", "daemon")
    assert set_bmc_state(inventory, "SN-1", BmcState.OK, "answers again", "daemon")
    kinds = [e.kind for e in inventory.events()]
    assert kinds.count("bmc.unreachable") == 1 and kinds.count("bmc.ok") == 1


def test_trust_repins_the_certificate(inventory, site):
    obs = observed()
    obs.tls_fingerprint = "aa" * 32
    enrol(inventory, site, obs, "test")
    record_bmc_problem(inventory, site, "127.0.0.5", 443, "redfish", BmcState.TLS_MISMATCH, "mismatch", "daemon")
    assert trust_certificate(inventory, "SN-1", "bb" * 32, "cli:alice") == "aa" * 32
    node = inventory.node("SN-1")
    assert node.bmc_tls_fingerprint == "bb" * 32 and node.bmc_state == "unknown"


def test_logical_interfaces_sharing_a_mac_are_one_nic(inventory, site):
    obs = observed()
    obs.nics.append(NetworkInterface(node_id=0, name="eth0.100", mac="52:54:00:aa:00:01"))
    enrol(inventory, site, obs, "test")
    assert [n["name"] for n in inventory.node("SN-1").components.nics] == ["eth0"]


def test_same_identity_behind_another_certificate_is_refused(inventory, site):
    first = observed(address="127.0.0.5")
    first.tls_fingerprint = "aa" * 32
    enrol(inventory, site, first, "test")
    impostor = observed(address="127.0.0.9")
    impostor.tls_fingerprint = "cc" * 32
    with pytest.raises(Conflict, match="pinned to another certificate"):
        enrol(inventory, site, impostor, "test")
    node = inventory.node("SN-1")
    assert node.bmc_address == "127.0.0.5" and node.bmc_tls_fingerprint == "aa" * 32

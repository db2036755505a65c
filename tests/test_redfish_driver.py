"""drivers.redfish against real peers: sushy-static serving recorded trees, sushy-emulator --fake over TLS,
and small loopback HTTP servers that misbehave on purpose."""

from __future__ import annotations

import http.server
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from drivers.base import (
    AuthFailed, BmcUnreachable, BootDevice, BootMode, BootControl, Credentials, InventoryReader,
    MalformedReply, PowerAction, PowerControl, PowerState, Secret, Timeout, TlsMismatch,
)
from drivers.profiles.redfish_quirks import chassis_without_chassis_type, lowercase_links_ilo5
from drivers.redfish import RedfishDriver, TlsPolicy, fetch_certificate_sha256, probe_redfish
from tests.lab.common import MOCKUPS, free_port, wait_until
from tests.lab.redfish import SushyEmulator, SushyStatic, make_certificate

FIXTURES = Path(__file__).parent / "fixtures" / "redfish"
needs_mockups = pytest.mark.skipif(not MOCKUPS.is_dir(), reason=f"Redfish mockups not found at {MOCKUPS}")
LAB_HTTP = TlsPolicy(insecure_http=True)
POWER_DEADLINE = 20.0  # the fake applies a reset 1-11 s after the request


def lab_credentials() -> Credentials:
    return Credentials("admin", Secret(secrets.token_urlsafe(16)))


def mockup_json(tree: str, path: str) -> dict:
    return json.loads((MOCKUPS / tree / path / "index.json").read_text())


# ---------------------------------------------------------------------------------- recorded trees
@dataclass(frozen=True)
class Expected:
    serial: str
    cpus: int  # installed CPUs: absent sockets and FPGAs are not counted
    memory_mib: int
    macs: frozenset[str]
    chassis_type: str | None


# Written down from reading each tree's files (Systems/*/{Processors,Memory,EthernetInterfaces}).
EXPECTED = {
    "public-rackmount1": Expected(  # CPU2 is Absent, FPGA1 is not a CPU; DIMM4 is Absent
        "437XR1138R2", 1, 3 * 32768, frozenset({"12:44:6a:3b:04:11", "aa:bb:cc:dd:ee:00", "aa:bb:cc:dd:ee:fe"}),
        "RackMount"),
    "public-liquid-cooled-server": Expected(
        "437XR1138R2", 1, 3 * 32768, frozenset({"12:44:6a:3b:04:11", "aa:bb:cc:dd:ee:00", "aa:bb:cc:dd:ee:fe"}),
        "RackMount"),
    "DL325": Expected(  # 4 of 16 DIMM slots populated
        "MXQ019020B", 1, 4 * 16384,
        frozenset({"94:40:c9:5c:86:bc", "94:40:c9:5c:86:bd", "14:02:ec:d9:3a:a0", "14:02:ec:d9:3a:a1"}),
        "RackMount"),
    "Intel": Expected(  # no EthernetInterfaces members; its Chassis link answers a recorded error body
        "QSBP74100021", 2, 6 * 8192, frozenset(), None),
}


@needs_mockups
def test_every_tree_with_a_system_has_expectations() -> None:
    with_systems = {p.name for p in MOCKUPS.iterdir() if (p / "Systems" / "index.json").is_file()}
    assert with_systems == set(EXPECTED)


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def static_tree(request) -> Iterator[SushyStatic]:
    if not MOCKUPS.is_dir():
        pytest.skip(f"Redfish mockups not found at {MOCKUPS}")
    with SushyStatic(request.param) as peer:
        yield peer


def test_read_inventory_from_recorded_tree(static_tree: SushyStatic) -> None:
    tree = static_tree.tree.name
    expected = EXPECTED[tree]
    system_path = mockup_json(tree, "Systems")["Members"][0]["@odata.id"].removeprefix("/redfish/v1/")
    recorded = mockup_json(tree, system_path)

    with RedfishDriver(static_tree.address, static_tree.port, lab_credentials(), LAB_HTTP, scheme="http") as driver:
        assert all(isinstance(driver, p) for p in (PowerControl, BootControl, InventoryReader))
        inventory = driver.read_inventory()

    assert inventory.serial == expected.serial == recorded["SerialNumber"]
    assert inventory.uuid == recorded["UUID"]
    assert inventory.bios_version == recorded["BiosVersion"]
    assert len(inventory.processors) == expected.cpus
    assert all(p.cores and p.threads for p in inventory.processors)
    assert inventory.memory_total_mib == expected.memory_mib == recorded["MemorySummary"]["TotalSystemMemoryGiB"] * 1024
    assert {nic.mac for nic in inventory.nics} == expected.macs
    assert inventory.chassis_type == expected.chassis_type
    assert inventory.power_state is PowerState.ON
    assert inventory.bmc_firmware  # every tree's Manager reports FirmwareVersion


@needs_mockups
def test_simple_storage_drives_skip_empty_bays() -> None:
    devices = mockup_json("public-rackmount1", "Systems/437XR1138R2/SimpleStorage/1")["Devices"]
    present = [d for d in devices if d["Status"]["State"] != "Absent"]
    with SushyStatic("public-rackmount1") as peer, \
            RedfishDriver(peer.address, peer.port, lab_credentials(), LAB_HTTP, scheme="http") as driver:
        drives = driver.read_inventory().drives
    assert [(d.name, d.model, d.capacity_bytes) for d in drives] == [
        (d["Name"], d["Model"], d["CapacityBytes"]) for d in present]


# ---------------------------------------------------------------------------------------- quirks
def test_lowercase_links_ilo5() -> None:
    system = json.loads((FIXTURES / "dl325_system_excerpt.json").read_text())
    assert lowercase_links_ilo5(system["Bios"]["@odata.id"]) == "/redfish/v1/Systems/1/bios"
    for link in (system["Links"]["Chassis"][0]["@odata.id"], system["Memory"]["@odata.id"]):
        assert lowercase_links_ilo5(link) == link  # canonical links pass unchanged


@needs_mockups
def test_lowercase_link_resolves_once_fixed() -> None:
    link = json.loads((FIXTURES / "dl325_system_excerpt.json").read_text())["Bios"]["@odata.id"]
    with SushyStatic("DL325") as peer:
        assert requests.get(peer.url + link, timeout=5).status_code == 404
        assert requests.get(peer.url + lowercase_links_ilo5(link), timeout=5).status_code == 200


def test_chassis_without_chassis_type() -> None:
    recorded = json.loads((FIXTURES / "intel_chassis_rackmount.json").read_text())
    assert "ChassisType" not in recorded
    assert chassis_without_chassis_type([recorded]) is None
    enclosure = {"@odata.id": "/redfish/v1/Chassis/1U", "ChassisType": "RackMount", "SerialNumber": "X1"}
    assert chassis_without_chassis_type([recorded, enclosure]) is enclosure


# ------------------------------------------------------------------------------------ emulator
@pytest.fixture(scope="module")
def emulator_password() -> str:
    return secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def emulator(emulator_password: str) -> Iterator[SushyEmulator]:
    with SushyEmulator(username="admin", password=emulator_password, tls=True) as peer:
        yield peer


@pytest.fixture
def driver(emulator: SushyEmulator, emulator_password: str) -> Iterator[RedfishDriver]:
    credentials = Credentials("admin", Secret(emulator_password))
    with RedfishDriver(emulator.address, emulator.port, credentials, TlsPolicy(ca_bundle=emulator.ca_file)) as d:
        yield d


def wait_for_power(driver: RedfishDriver, state: PowerState) -> None:
    wait_until(lambda: driver.get_power_state() is state, deadline=POWER_DEADLINE, what=f"power {state}",
               interval=0.25)


def test_power_on_off_cycle(driver: RedfishDriver) -> None:
    driver.request_power(PowerAction.ON)
    wait_for_power(driver, PowerState.ON)
    driver.request_power(PowerAction.OFF)
    wait_for_power(driver, PowerState.OFF)
    driver.request_power(PowerAction.ON)
    wait_for_power(driver, PowerState.ON)
    driver.request_power(PowerAction.CYCLE)  # ForceRestart here: the fake offers no PowerCycle
    wait_for_power(driver, PowerState.OFF)
    wait_for_power(driver, PowerState.ON)


def test_boot_once_from_pxe(driver: RedfishDriver, emulator: SushyEmulator, emulator_password: str) -> None:
    driver.set_boot_once(BootDevice.PXE, BootMode.UEFI)
    system = requests.get(f"{emulator.url}/redfish/v1/Systems/{emulator.SYSTEM_UUID}", timeout=5,
                          auth=("admin", emulator_password), verify=str(emulator.ca_file)).json()
    # The fake reports BootSourceOverrideEnabled as Continuous even after a Once request.
    assert system["Boot"]["BootSourceOverrideTarget"] == "Pxe"
    assert system["Boot"]["BootSourceOverrideMode"] == "UEFI"


def test_inventory_from_emulator(driver: RedfishDriver, emulator: SushyEmulator) -> None:
    inventory = driver.read_inventory()
    assert inventory.uuid == emulator.SYSTEM_UUID
    assert [nic.mac for nic in inventory.nics] == [emulator.NIC_MAC]


def test_wrong_password_is_auth_failed_and_never_shown(emulator: SushyEmulator, emulator_password: str,
                                                        caplog: pytest.LogCaptureFixture,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    wrong = "wrong-" + secrets.token_urlsafe(12)
    caplog.set_level(logging.DEBUG)
    driver = RedfishDriver(emulator.address, emulator.port, Credentials("admin", Secret(wrong)),
                           TlsPolicy(ca_bundle=emulator.ca_file))
    with pytest.raises(AuthFailed) as caught:
        driver.read_inventory()
    driver.close()
    shown = " ".join([str(caught.value), repr(caught.value), repr(driver), caplog.text, *capsys.readouterr()])
    assert wrong not in shown
    assert emulator_password not in shown


def test_pinned_certificate_then_new_certificate_is_tls_mismatch(emulator_password: str) -> None:
    with SushyEmulator(username="admin", password=emulator_password, tls=True) as peer:
        pin = fetch_certificate_sha256(peer.address, peer.port, timeout=5)
        assert pin == peer.certificate_sha256
        credentials = Credentials("admin", Secret(emulator_password))
        with RedfishDriver(peer.address, peer.port, credentials, TlsPolicy(pinned_sha256=pin)) as driver:
            assert driver.get_power_state() is PowerState.OFF
            peer.restart(new_certificate=True)
            with pytest.raises(TlsMismatch) as caught:
                driver.get_power_state()
    assert caught.value.expected_fingerprint == pin
    assert caught.value.seen_fingerprint == peer.certificate_sha256 != pin


def test_certificate_not_from_the_ca_bundle_is_tls_mismatch(emulator: SushyEmulator, emulator_password: str,
                                                            tmp_path: Path) -> None:
    other_ca, _, _ = make_certificate(tmp_path)
    credentials = Credentials("admin", Secret(emulator_password))
    with RedfishDriver(emulator.address, emulator.port, credentials, TlsPolicy(ca_bundle=other_ca)) as driver, \
            pytest.raises(TlsMismatch) as caught:
        driver.get_power_state()
    assert caught.value.seen_fingerprint == emulator.certificate_sha256


def test_http_needs_insecure_http_policy() -> None:
    with pytest.raises(ValueError):
        RedfishDriver("127.0.0.1", 1, lab_credentials(), TlsPolicy(pinned_sha256="ab" * 32), scheme="http")
    with pytest.raises(ValueError):
        RedfishDriver("127.0.0.1", 1, lab_credentials(), LAB_HTTP, scheme="https")


# ----------------------------------------------------------------------------------- bad replies
ROOT = {"@odata.id": "/redfish/v1/", "Id": "RootService", "RedfishVersion": "1.6.0",
        "Systems": {"@odata.id": "/redfish/v1/Systems"}}
GOOD_TREE: dict[str, object] = {
    "/redfish/v1": ROOT,
    "/redfish/v1/Systems": {"Members": [{"@odata.id": "/redfish/v1/Systems/1"}]},
    "/redfish/v1/Systems/1": {"Id": "1", "SerialNumber": "S1", "PowerState": "On",
                              "Memory": {"@odata.id": "/redfish/v1/Systems/1/Memory"}},
    "/redfish/v1/Systems/1/Memory": {"Members": [{"@odata.id": f"/redfish/v1/Systems/1/Memory/{n}"}
                                                 for n in ("html", "wrongtype", "good")]},
    "/redfish/v1/Systems/1/Memory/html": "<html><body>Internal error</body></html>",
    "/redfish/v1/Systems/1/Memory/wrongtype": {"Id": "wrongtype", "CapacityMiB": "sixteen gigs"},
    "/redfish/v1/Systems/1/Memory/good": {"Id": "good", "CapacityMiB": 16384},
}
HTML_PAGE = "<html><body><h1>503 Service Unavailable</h1></body></html>"


def tree_server(tree: dict[str, object]) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        body = tree.get(handler.path.rstrip("/"))
        if body is None:
            handler.send_error(404)
            return
        text = body if isinstance(body, str) else json.dumps(body)
        send(handler, 200, "text/html" if isinstance(body, str) else "application/json", text)
    return answer


def send(handler: http.server.BaseHTTPRequestHandler, status: int, content_type: str, body: str) -> None:
    data = body.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


BEHAVIOURS: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]] = {
    "html": lambda h: send(h, 200, "text/html", HTML_PAGE),
    "truncated": lambda h: send(h, 200, "application/json", json.dumps(ROOT)[:40]),
    "error500": lambda h: send(h, 500, "text/html", HTML_PAGE),
    "wrong_type": tree_server({**GOOD_TREE, "/redfish/v1/Systems/1": {"Id": "1", "SerialNumber": 12345}}),
    "one_bad_member": tree_server(GOOD_TREE),
}


@pytest.fixture(scope="module")
def bad_bmc() -> Iterator[Callable[[str], int]]:
    """Start loopback HTTP servers on demand, one per behaviour; yields a function giving its port."""
    servers: dict[str, http.server.ThreadingHTTPServer] = {}

    def port_for(behaviour: str) -> int:
        if behaviour not in servers:
            class Handler(http.server.BaseHTTPRequestHandler):
                def do_GET(self) -> None:
                    BEHAVIOURS[behaviour](self)

                do_POST = do_GET

                def log_message(self, *args: object) -> None:
                    pass

            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers[behaviour] = server
        return servers[behaviour].server_address[1]

    yield port_for
    for server in servers.values():
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def tarpit() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        held: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    held.append(listener.accept()[0])
                except TimeoutError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        yield listener.getsockname()[1]
        stop.set()
        thread.join()
        for conn in held:
            conn.close()


def lab_driver(port: int, timeout: float = 2.0) -> RedfishDriver:
    return RedfishDriver("127.0.0.1", port, lab_credentials(), LAB_HTTP, scheme="http", timeout=timeout)


@pytest.mark.parametrize(("behaviour", "error"), [
    ("html", MalformedReply),
    ("truncated", MalformedReply),
    ("error500", BmcUnreachable),
])
def test_bad_reply_in_our_terms(bad_bmc: Callable[[str], int], behaviour: str, error: type[Exception]) -> None:
    started = time.monotonic()
    with lab_driver(bad_bmc(behaviour)) as driver, pytest.raises(error) as caught:
        driver.read_inventory()
    assert time.monotonic() - started < 5
    assert caught.value.target == f"127.0.0.1:{bad_bmc(behaviour)}"


def test_wrong_type_names_field_and_bmc(bad_bmc: Callable[[str], int]) -> None:
    with lab_driver(bad_bmc("wrong_type")) as driver, pytest.raises(MalformedReply) as caught:
        driver.read_inventory()
    assert caught.value.field == "SerialNumber"
    assert f"127.0.0.1:{bad_bmc('wrong_type')}" in str(caught.value)


def test_one_bad_member_does_not_hide_the_rest(bad_bmc: Callable[[str], int]) -> None:
    with lab_driver(bad_bmc("one_bad_member")) as driver:
        inventory = driver.read_inventory()
    assert inventory.serial == "S1"
    assert [(m.slot, m.size_mib) for m in inventory.memory] == [("good", 16384)]


def test_tarpit_is_timeout(tarpit: int) -> None:
    started = time.monotonic()
    with lab_driver(tarpit, timeout=1.0) as driver, pytest.raises(Timeout):
        driver.get_power_state()
    assert time.monotonic() - started < 4


def test_closed_port_is_unreachable() -> None:
    started = time.monotonic()
    with lab_driver(free_port()) as driver, pytest.raises(BmcUnreachable):
        driver.get_power_state()
    assert time.monotonic() - started < 3


# ------------------------------------------------------------------------------------------ probe
@needs_mockups
async def test_probe_finds_sushy_static_and_not_a_closed_port() -> None:
    root = mockup_json("DL325", "")
    with SushyStatic("DL325") as peer:
        found = await probe_redfish(peer.address, peer.port, timeout=5, scheme="http")
    assert found is not None
    assert (found.protocol, found.port, found.detail, found.uuid) == ("redfish", peer.port, root["RedfishVersion"],
                                                                      root["UUID"])
    assert await probe_redfish("127.0.0.1", free_port(), timeout=2, scheme="http") is None


async def test_probe_records_the_certificate_fingerprint(emulator: SushyEmulator) -> None:
    found = await probe_redfish(emulator.address, emulator.port, timeout=5)
    assert found is not None and found.certificate_sha256 == emulator.certificate_sha256


async def test_probe_is_none_for_something_not_redfish(bad_bmc: Callable[[str], int]) -> None:
    assert await probe_redfish("127.0.0.1", bad_bmc("html"), timeout=2, scheme="http") is None

"""IpmiDriver and probe_ipmi against a real ipmi_sim (OpenIPMI) serving three BMCs from one process.

State changes are confirmed twice: through the driver and through the chassis script's state files, which
pyghmi never sees. Waits are conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from pyghmi.exceptions import IpmiException
from pyghmi.ipmi.command import Command
from pyghmi.ipmi.private import session as pyghmi_session

from drivers.base import (
    AuthFailed,
    BmcUnreachable,
    BootControl,
    BootDevice,
    BootMode,
    Credentials,
    Health,
    InsecureRefused,
    InventoryReader,
    Metric,
    PowerAction,
    PowerControl,
    PowerState,
    Secret,
    SensorReader,
)
from drivers import ipmi as ipmi_driver
from drivers.ipmi import IpmiDriver, check_negotiated_session, parse_fru, probe_ipmi, read_fru_chunked
from tests.lab.common import wait_until
from tests.lab.ipmi import (
    FRU_MANUFACTURER,
    FRU_MODEL,
    SENSOR_INLET,
    BmcSpec,
    IpmiSim,
    SimBmc,
)

pytestmark = pytest.mark.skipif(shutil.which("ipmi_sim") is None, reason="ipmi_sim (Debian openipmi) not installed")

CONFIRM = 5.0  # ipmi_sim applies power changes at once, a power cycle within about 1 s

ADMIN = BmcSpec("PSN-1001", "BSN-1001", chassis_serial="CSN-1001", password="Adm-" + secrets.token_hex(6))
OPS = BmcSpec("PSN-2002", "BSN-2002", username="operator7", password="Op-" + secrets.token_hex(6),
              inlet_celsius=21, cpu_celsius=50, fan_rpm=5200)
LEGACY = BmcSpec("PSN-3003", "BSN-3003", ipmi15_only=True)


def credentials(bmc: SimBmc) -> Credentials:
    return Credentials(bmc.spec.username, Secret(bmc.spec.password))


@pytest.fixture(scope="module")
def sim():
    with IpmiSim(ADMIN, OPS, LEGACY) as sim:
        yield sim


@pytest.fixture(scope="module")
def bmc(sim) -> SimBmc:
    return sim.bmcs[0]


@pytest.fixture(scope="module")
def driver(bmc):
    with IpmiDriver(bmc.address, bmc.port, credentials(bmc)) as driver:
        yield driver


def readings(driver: IpmiDriver) -> dict[tuple[Metric, str], tuple[float, Health | None]]:
    return {(r.metric, *r.labels.values()): (r.value, r.health) for r in driver.read_sensors()}


def test_implements_the_protocols(driver):
    for protocol in (PowerControl, BootControl, InventoryReader, SensorReader):
        assert isinstance(driver, protocol)


def test_power_actions_change_state(driver, bmc):
    def confirm(state: PowerState, power_file: str) -> None:
        wait_until(lambda: driver.get_power_state() is state and bmc.state("power") == power_file,
                   deadline=CONFIRM, what=f"power {state}")

    driver.request_power(PowerAction.ON)
    confirm(PowerState.ON, "1")

    before = len(bmc.calls())
    driver.request_power(PowerAction.CYCLE)  # ipmi_sim: off now, on again by its own 1 s timer
    wait_until(lambda: bmc.calls()[before:].count("set power 0") == 1
               and bmc.calls()[before:].count("set power 1") == 1, deadline=CONFIRM, what="power cycle")
    confirm(PowerState.ON, "1")

    driver.request_power(PowerAction.OFF)
    confirm(PowerState.OFF, "0")

    driver.request_power(PowerAction.CYCLE)  # from off, our CYCLE ends on (IPMI's would leave it off)
    confirm(PowerState.ON, "1")

    driver.request_power(PowerAction.SOFT_OFF)
    wait_until(lambda: "set shutdown 1" in bmc.calls(), deadline=CONFIRM, what="soft shutdown")
    confirm(PowerState.OFF, "0")


@pytest.mark.parametrize(("device", "mode", "backend_name"), [
    (BootDevice.DISK, None, "default"),  # ipmi_sim's own names: "default" is the hard disk
    (BootDevice.CD, BootMode.LEGACY, "cdrom"),
    (BootDevice.BIOS, None, "bios"),
    (BootDevice.PXE, BootMode.UEFI, "pxe"),
])
def test_boot_once_reaches_the_chassis(driver, bmc, device, mode, backend_name):
    """Confirmed on the chassis script's ``boot`` file: ipmi_sim drops the boot flags' valid bit, so a
    read-back through Get System Boot Options (pyghmi's get_bootdev) always says ``default``."""
    driver.set_boot_once(device, mode)
    assert bmc.state("boot") == backend_name
    assert bmc.calls()[-1] == f"set boot {backend_name}"


def test_inventory_from_fru_and_guid(driver, bmc):
    inventory = driver.read_inventory()
    assert inventory.serial == "PSN-1001"  # the product serial, not the board's
    assert inventory.chassis_serial == "CSN-1001"
    assert (inventory.manufacturer, inventory.model) == (FRU_MANUFACTURER, FRU_MODEL)
    assert inventory.uuid == bmc.uuid
    assert inventory.bmc_firmware == "9.08"  # mc_add ... fw 9 8
    assert inventory.power_state in (PowerState.ON, PowerState.OFF)


def test_fru_chunking_workaround(sim):
    """The recorded reply that needs it: ipmi_sim 2.0.33 answers Read FRU Data for more than 34 bytes with
    0xC8, and pyghmi's own reader gives up on it."""
    ops = sim.bmcs[1]
    stock = Command(bmc=ops.address, port=ops.port, userid=ops.spec.username.encode(),
                    password=ops.spec.password.encode())
    try:
        with pytest.raises(IpmiException) as failure:
            dict(stock.get_inventory())
        assert failure.value.ipmicode == 0xC8
    finally:
        stock.ipmi_session.logout()

    image = bytes(range(256))
    asked: list[int] = []

    def capped_read(offset: int, count: int) -> bytes:
        asked.append(count)
        if count > 34:
            raise IpmiException("Request data field length limit exceeded", 0xC8)
        return image[offset:offset + count]

    assert read_fru_chunked(capped_read, len(image)) == image
    assert max(asked) <= 34


def test_fru_parser_decodes_6bit_and_bcd_fields():
    fields = bytes([0x83, 0xE1, 0xD8, 0x96,    # manufacturer "ACME", packed 6-bit ASCII
                    0xC0,                      # product name empty
                    0x43, 0x12, 0xB3, 0x4A,    # serial "12-34 " in BCD plus
                    0xC1])                     # end of fields
    board = bytearray([1, 3, 0, 0, 0, 0]) + fields  # version, 3 x 8 bytes, English, no date
    board += bytes(23 - len(board))
    board.append(-sum(board) & 0xFF)
    header = bytearray([1, 0, 0, 1, 0, 0, 0])
    header.append(-sum(header) & 0xFF)
    areas = parse_fru("fixture", bytes(header + board))
    assert areas == {"chassis": {}, "board": {"manufacturer": "ACME", "product": None, "serial": "12-34"},
                     "product": {}}


def test_sensors_match_the_sdrs_and_follow_the_console(sim, bmc, driver):
    assert readings(driver) == {
        (Metric.INLET_TEMPERATURE_CELSIUS, "Inlet Temp"): (25.0, Health.OK),
        (Metric.TEMPERATURE_CELSIUS, "CPU Temp"): (45.0, Health.OK),
        (Metric.FAN_SPEED_RPM, "FAN1"): (4800.0, Health.OK),
    }  # and no baie_node_power_watts: ipmi_sim has no DCMI (0xC1), which is "not reported"
    sim.set_sensor(bmc, SENSOR_INLET, 70)  # above the upper non-recoverable threshold of 60
    try:
        wait_until(lambda: readings(driver)[(Metric.INLET_TEMPERATURE_CELSIUS, "Inlet Temp")]
                   == (70.0, Health.CRITICAL), deadline=CONFIRM, what="inlet at 70 °C")
    finally:
        sim.set_sensor(bmc, SENSOR_INLET, 25)


def test_each_bmc_is_its_own(sim, driver):
    ops = sim.bmcs[1]
    with IpmiDriver(ops.address, ops.port, credentials(ops)) as other:
        inventory = other.read_inventory()
        assert (inventory.serial, inventory.uuid) == ("PSN-2002", ops.uuid)
        assert readings(other)[(Metric.FAN_SPEED_RPM, "FAN1")] == (5200.0, Health.OK)
        assert readings(other)[(Metric.INLET_TEMPERATURE_CELSIUS, "Inlet Temp")] == (21.0, Health.OK)
        state = driver.get_power_state()
        other.request_power(PowerAction.OFF if state is PowerState.ON else PowerAction.ON)
        wait_until(lambda: other.get_power_state() is not state, deadline=CONFIRM, what="other BMC power")
        assert driver.get_power_state() is state


def test_wrong_password_is_refused_and_never_shown(bmc, driver, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    driver.get_power_state()  # a good session for this BMC and user is in pyghmi's cache
    wrong = "Wrong-" + secrets.token_hex(8)
    bad = IpmiDriver(bmc.address, bmc.port, Credentials(bmc.spec.username, Secret(wrong)))
    with pytest.raises(AuthFailed) as refused:
        bad.get_power_state()
    with pytest.raises(AuthFailed):
        IpmiDriver(bmc.address, bmc.port, Credentials("nobody", Secret(wrong))).get_power_state()
    captured = capsys.readouterr()
    for text in (str(refused.value), repr(refused.value), repr(bad), caplog.text, captured.out, captured.err):
        assert wrong not in text
        assert bmc.spec.password not in text
    assert driver.get_power_state() in (PowerState.ON, PowerState.OFF)  # the good session is untouched


def test_close_logs_out_and_a_later_call_logs_in_again(sim):
    ops = sim.bmcs[1]
    driver = IpmiDriver(ops.address, ops.port, credentials(ops))
    driver.get_power_state()
    session = driver._command.ipmi_session
    driver.close()
    assert not session.logged and session.broken
    assert driver.get_power_state() in (PowerState.ON, PowerState.OFF)
    assert driver._command.ipmi_session is not session
    driver.close()


def test_ipmi15_only_bmc_is_refused(sim):
    legacy = sim.bmcs[2]
    with pytest.raises(InsecureRefused, match="IPMI 1.5"):
        IpmiDriver(legacy.address, legacy.port, credentials(legacy)).get_power_state()
    assert legacy.calls() == []  # nothing reached the chassis


def test_anonymous_login_is_refused(bmc):
    with pytest.raises(InsecureRefused, match="anonymous"):
        IpmiDriver(bmc.address, bmc.port, Credentials("", Secret("")))


def test_negotiated_session_check(driver):
    """A BMC offering only cipher suite 0 cannot be made with ipmi_sim (its suite table is hard-coded and
    LAN parameter 24 is not enforced), and pyghmi cannot be made to negotiate suite 0 (it only ever proposes
    suites 17 and 3). So the check runs on the state of a real session from the simulator, as negotiated,
    and with the fields set to what pyghmi records for a suite-0 or an IPMI 1.5 session."""
    driver.get_power_state()
    real = driver._command.ipmi_session
    assert check_negotiated_session(real, "sim") == 3
    as_negotiated = vars(real)
    for forced in ({"integrityalgo": 0, "confalgo": 0},        # suite 0: no integrity, no confidentiality
                   {"confalgo": 0},                            # suite 2: HMAC but no AES
                   {"ipmiversion": 1.5, "authtype": 2},        # IPMI 1.5 MD5
                   {"ipmiversion": 1.5, "authtype": 0}):       # IPMI 1.5 without authentication
        with pytest.raises(InsecureRefused):
            check_negotiated_session(SimpleNamespace(**{**as_negotiated, **forced}), "sim")


async def test_probe_finds_the_sim_and_tells_versions(sim):
    found = await probe_ipmi(sim.bmcs[0].address, sim.bmcs[0].port, timeout=2)
    legacy = await probe_ipmi(sim.bmcs[2].address, sim.bmcs[2].port, timeout=2)
    assert (found.protocol, found.port, found.detail) == ("ipmi", sim.bmcs[0].port, "2.0")
    assert legacy.detail == "1.5"


async def test_probe_returns_none_on_a_silent_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, so no ICMP refusal either
        silent.bind(("127.0.0.1", 0))
        started = time.monotonic()
        assert await probe_ipmi("127.0.0.1", silent.getsockname()[1], timeout=0.5) is None
        assert time.monotonic() - started < 2.0


def test_silent_bmc_is_unreachable():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        driver = IpmiDriver("127.0.0.1", silent.getsockname()[1], Credentials("admin", Secret("x")), timeout=0.5)
        with pytest.raises(BmcUnreachable):
            driver.get_power_state()


async def test_driver_runs_in_a_worker_thread(sim):
    """As the daemon calls it: one to_thread hop; the login's capability check runs on the worker's own loop."""
    ops = sim.bmcs[1]
    with IpmiDriver(ops.address, ops.port, credentials(ops)) as driver:
        inventory = await asyncio.to_thread(driver.read_inventory)
    assert inventory.serial == "PSN-2002"


def test_pyghmi_session_tables_have_one_lock_so_threads_cannot_take_them_in_two_orders():
    """pyghmi takes WAITING_SESSIONS then KEEPALIVE_SESSIONS in one path and the reverse in another; drivers.ipmi
    makes them one lock: a thread holding either keeps every other thread out of both."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with pyghmi_session.WAITING_SESSIONS:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(30)
        assert not pyghmi_session.KEEPALIVE_SESSIONS.acquire(timeout=0.2)
    finally:
        release.set()
        thread.join(30)
    assert pyghmi_session.KEEPALIVE_SESSIONS.acquire(timeout=30)
    pyghmi_session.KEEPALIVE_SESSIONS.release()


def test_pyghmi_io_thread_reads_do_not_depend_on_the_sockets_blocking_mode():
    """pyghmi's IO thread made its shared socket non-blocking, then read it, while worker threads sending on the
    socket made it blocking: a read between the two blocked the IO thread, and every worker waited for ever
    (bench/, 2,000 BMCs). Reads must not wait whatever the mode, and leave the senders' mode alone."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(True)  # as a sending worker leaves it
        assert pyghmi_session._io_recvfrom(sock, 3000) is None  # nothing to read: back at once
        assert sock.getblocking()
        sock.sendto(b"ping", sock.getsockname())
        data, sender = pyghmi_session._io_recvfrom(sock, 3000)
        assert (data, sender) == (b"ping", sock.getsockname())


def test_a_session_idle_too_long_is_replaced_by_a_fresh_login(sim, monkeypatch):
    """BMCs drop idle sessions (ipmi_sim after 30 s), and on a dropped session pyghmi spends ~20 s: retries, a
    relogin, then its RAKP4 handler waits out the deadline of the command it serves (bench/ hung on that at 2,000
    BMCs). Here the BMC forgets the session at once (Close Session behind pyghmi's back) and every session counts
    as idle too long: the next call logs in afresh instead of using the dropped one."""
    ops = sim.bmcs[1]
    with IpmiDriver(ops.address, ops.port, credentials(ops), timeout=5) as driver:
        driver.get_power_state()
        stale = driver._command.ipmi_session
        assert stale not in pyghmi_session.Session.keepalive_sessions  # no keepalives from other threads' logins
        stale.raw_command(netfn=0x06, command=0x3C, retry=False,  # Close Session; pyghmi still thinks it is open
                          data=tuple(stale.sessionid.to_bytes(4, "little")))
        monkeypatch.setattr(ipmi_driver, "_SESSION_IDLE_MAX", 0.0)
        assert driver.get_power_state() in ("on", "off")
        assert driver._command.ipmi_session is not stale and stale.broken

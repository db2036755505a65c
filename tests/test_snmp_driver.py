"""drivers.snmp against a real snmpsim serving tests/data/snmp (one agent per data file, as v3 context)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

import drivers.snmp
from drivers.base import (
    AuthFailed, InsecureRefused, Metric, OutletAction, OutletControl, OutletReading, OutletState, Secret,
    Timeout, Unsupported)
from drivers.profiles.snmp_pdu import APC_RPDU2, EATON_EPDU, GENERIC, RARITAN_PDU2, SENTRY4
from drivers.snmp import (
    FdbEntry, LldpNeighbor, SnmpClient, SnmpPdu, SnmpTarget, SnmpV3User, match_profile, read_fdb,
    read_lldp_neighbors)
from tests.lab.common import free_port
from tests.lab.snmp import SimUser, SnmpSim

DATA = Path(__file__).parent / "data" / "snmp"
USER = SimUser("baie", "auth-key-7f3a9c", "priv-key-2b8e41")


@pytest.fixture(scope="module")
def sim():
    with SnmpSim(DATA, v3_users=[USER]) as running:
        yield running


def v3_target(sim: SnmpSim, context: str, *, user: str = USER.name, auth: str = USER.auth_key,
              priv: str = USER.priv_key, timeout: float = 3.0) -> SnmpTarget:
    return SnmpTarget("127.0.0.1", sim.port, v3=SnmpV3User(user, Secret(auth), Secret(priv)),
                      context=context, timeout=timeout)


@pytest.fixture
async def open_pdus():
    pdus: list[SnmpPdu] = []
    yield pdus
    for pdu in pdus:
        pdu.close()


@pytest.fixture
def pdu(sim, open_pdus):
    def make(context: str, **kwargs) -> SnmpPdu:
        driver = SnmpPdu(v3_target(sim, context, **kwargs))
        open_pdus.append(driver)
        return driver
    return make


async def wait_for_state(pdu: SnmpPdu, index: int, state: OutletState, *, deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while True:
        outlet = next(o for o in await pdu.read_outlets() if o.index == index)
        if outlet.state == state:
            return
        if time.monotonic() > end:
            raise AssertionError(f"outlet {index} is {outlet.state}, not {state}, after {deadline}s")
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------------------------- vendor profiles
# (context, expected profile, sysName, outlet readings we wrote into the .snmprec, scaled)
VENDORS = {
    "apc": (APC_RPDU2, "apc-r12-a", {
        1: OutletReading(1, "r12-node01", OutletState.ON, 1.2, 251.0, 812.3),
        6: OutletReading(6, "r12-node06", OutletState.OFF, 0.0, 0.0, 120.0),  # a real zero stays 0
        7: OutletReading(7, "r12-node07", OutletState.ON, 2.1, 466.0, 1502.0),
    }),
    "raritan": (RARITAN_PDU2, "px3-r12-b", {
        1: OutletReading(1, "r12-node01", OutletState.ON, 1.234, 281.0, 812.345),
        4: OutletReading(4, "r12-node04", OutletState.OFF, 0.0, 0.0, 120.0),
        5: OutletReading(5, "r12-node05", OutletState.ON, 0.731, 160.0, None),  # energy OID left out
    }),
    "sentry4": (SENTRY4, "sentry-r12-c", {
        1: OutletReading(1, "r12-node01", OutletState.ON, 1.52, 310.0, 923.4),
        3: OutletReading(3, "r12-node03", OutletState.OFF, 0.0, 0.0, 100.0),
        4: OutletReading(4, "r12-node04", OutletState.ON, 1.43, 290.0, None),  # device says -1
    }),
    "eaton": (EATON_EPDU, "epdu-r12-d", {
        5: OutletReading(5, "r12-node05", OutletState.ON, 0.702, 155.0, 333.0),
        7: OutletReading(7, "r12-node07", OutletState.OFF, 0.0, 0.0, 90.0),
        8: OutletReading(8, "r12-node08", OutletState.ON, 1.444, 318.0, 912.0),
    }),
}

INPUTS = {
    "apc": {(Metric.PDU_INPUT_CURRENT_AMPS, "phase1"): 9.8, (Metric.PDU_INPUT_VOLTAGE_VOLTS, "phase1"): 231.0,
            (Metric.PDU_INPUT_POWER_WATTS, "phase1"): 2280.0, (Metric.PDU_INPUT_POWER_WATTS, "total"): 2280.0,
            (Metric.PDU_ENERGY_KWH, "total"): 6840.6},
    "raritan": {(Metric.PDU_INPUT_CURRENT_AMPS, "inlet1"): 8.914, (Metric.PDU_INPUT_VOLTAGE_VOLTS, "inlet1"): 229.0,
                (Metric.PDU_INPUT_POWER_WATTS, "inlet1"): 1995.0, (Metric.PDU_ENERGY_KWH, "inlet1"): 6085.058},
    "sentry4": {(Metric.PDU_INPUT_POWER_WATTS, "cord1"): 1794.0, (Metric.PDU_ENERGY_KWH, "cord1"): 9876.5,
                (Metric.PDU_INPUT_VOLTAGE_VOLTS, "phase1"): 208.4, (Metric.PDU_INPUT_CURRENT_AMPS, "phase1"): 8.79},
    "eaton": {(Metric.PDU_INPUT_VOLTAGE_VOLTS, "input1"): 230.5, (Metric.PDU_INPUT_CURRENT_AMPS, "input1"): 7.34,
              (Metric.PDU_INPUT_POWER_WATTS, "input1"): 1756.0, (Metric.PDU_ENERGY_KWH, "input1"): 4321.0},
    "generic": {(Metric.PDU_INPUT_VOLTAGE_VOLTS, "Inlet L1 voltage"): 230.1,
                (Metric.PDU_INPUT_CURRENT_AMPS, "Inlet L1 current"): 4.2,
                (Metric.PDU_INPUT_POWER_WATTS, "Inlet L1 power"): 966.0},  # temperature and unavailable dropped
}


@pytest.mark.parametrize("context", VENDORS)
async def test_identify_picks_vendor_profile(pdu, context):
    profile, sys_name, _ = VENDORS[context]
    driver = pdu(context)
    identity = await driver.identify()
    assert identity.profile is profile and driver.profile is profile
    assert identity.name == sys_name


async def test_identify_falls_back_to_entity_sensor_profile(pdu):
    identity = await pdu("generic").identify()
    assert identity.profile is GENERIC
    assert identity.sys_object_id == "1.3.6.1.4.1.8072.3.2.10"


def test_longest_prefix_wins_on_whole_components():
    assert match_profile("1.3.6.1.4.1.318.1.3.4.6") is APC_RPDU2
    assert match_profile("1.3.6.1.4.1.13742.6.1.2") is RARITAN_PDU2
    assert match_profile("1.3.6.1.4.1.17180.4") is GENERIC  # 17180 is not 1718


@pytest.mark.parametrize("context", VENDORS)
async def test_read_outlets_scaled_from_data_file(pdu, context):
    _, _, expected = VENDORS[context]
    driver = pdu(context)
    assert isinstance(driver, OutletControl)
    outlets = {o.index: o for o in await driver.read_outlets()}
    assert sorted(outlets) == list(range(1, 9))
    for index, want in expected.items():
        got = outlets[index]
        assert (got.index, got.name, got.state) == (want.index, want.name, want.state)
        for field in ("current_amps", "power_watts", "energy_kwh"):
            assert getattr(got, field) == pytest.approx(getattr(want, field)), (index, field)


@pytest.mark.parametrize("context", INPUTS)
async def test_read_inputs(pdu, context):
    driver = pdu(context)
    for _ in range(2):  # the second read expects the rows the first found
        readings = await driver.read_inputs()
        got = {(r.metric, r.labels["input"]): r.value for r in readings}
        assert got == pytest.approx(INPUTS[context])


async def test_generic_profile_has_no_outlets_to_read_or_switch(pdu):
    driver = pdu("generic")
    with pytest.raises(Unsupported):
        await driver.read_outlets()
    with pytest.raises(Unsupported):
        await driver.request_outlet(1, OutletAction.OFF)


# ------------------------------------------------------------------------------------------- switching
@pytest.mark.parametrize("context, index", [("apc", 3), ("raritan", 2), ("sentry4", 2), ("eaton", 2)])
async def test_switch_outlet_confirmed_by_read_back(pdu, context, index):
    driver = pdu(context)
    await driver.request_outlet(index, OutletAction.OFF)
    await wait_for_state(driver, index, OutletState.OFF)
    await driver.request_outlet(index, OutletAction.ON)
    await wait_for_state(driver, index, OutletState.ON)


async def test_outlet_that_acks_but_does_not_switch(pdu):
    driver = pdu("apc")
    await driver.request_outlet(8, OutletAction.OFF)  # accepted without error ...
    outlet = next(o for o in await driver.read_outlets() if o.index == 8)
    assert outlet.state == OutletState.ON  # ... yet still on: the daemon's confirm step must catch this


async def test_unknown_outlet_is_unsupported(pdu):
    with pytest.raises(Unsupported):
        await pdu("apc").request_outlet(42, OutletAction.OFF)


# -------------------------------------------------------------------------------------- security, errors
@pytest.mark.parametrize("override", [{"auth": "wrong-auth-key-1"}, {"priv": "wrong-priv-key-1"},
                                      {"user": "mallory"}], ids=["auth-key", "priv-key", "user"])
async def test_bad_credentials_are_auth_failed(pdu, override):
    with pytest.raises(AuthFailed):
        await pdu("apc", **override).read_outlets()


async def test_nothing_listening_is_timeout(open_pdus):
    target = SnmpTarget("127.0.0.1", free_port(kind=socket.SOCK_DGRAM), context="apc", timeout=0.5,
                        v3=SnmpV3User(USER.name, Secret(USER.auth_key), Secret(USER.priv_key)))
    driver = SnmpPdu(target, APC_RPDU2)
    open_pdus.append(driver)
    started = time.monotonic()
    with pytest.raises(Timeout):
        await driver.read_outlets()
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("repetitions, rows_hint", [(1, None), (3, None), (25, None), (25, 1), (25, 8), (25, 100)])
async def test_columns_walked_together_read_as_walked_alone(sim, repetitions, rows_hint):
    """Several columns in one GETBULK walk (ending at different rows, one absent) read the same rows as one
    walk per column, however few repetitions each request asks for, and whatever number of rows it expects."""
    columns = [APC_RPDU2.name.oid, APC_RPDU2.power.oid, APC_RPDU2.inputs[0].column.oid, "1.3.6.1.4.1.318.9.9.9",
               APC_RPDU2.state.oid]
    target = v3_target(sim, "apc")
    async with SnmpClient(SnmpTarget(target.host, target.port, v3=target.v3, context="apc",
                                     max_repetitions=repetitions)) as client:
        together = await client.walk_many(columns, rows_hint=rows_hint)
        alone = {column: await client.walk(column) for column in columns}
    assert together == alone
    assert len(together[APC_RPDU2.name.oid]) == 8 and together["1.3.6.1.4.1.318.9.9.9"] == {}


async def test_a_capped_reply_is_followed_by_a_request_for_the_rows_left(sim, monkeypatch):
    """pysnmp's responder caps a reply at 64 varbinds: seven 8-row columns and a 1-row column, expected to
    have 8 rows, come in two replies (8 rows of each, then the end of each 8-row column), and the second asks
    each column for the one successor left rather than 9 more (past the end they are other objects)."""
    apc = "1.3.6.1.4.1.318.1.1.26"
    columns = [f"{apc}.9.2.3.1.3", f"{apc}.9.2.3.1.5", f"{apc}.9.2.4.1.5", f"{apc}.9.4.3.1.3", f"{apc}.9.4.3.1.6",
               f"{apc}.9.4.3.1.7", f"{apc}.9.4.3.1.11", f"{apc}.6.3.1.5"]
    repetitions = []
    real = drivers.snmp.bulk_cmd

    async def observed(*args, **kwargs):
        repetitions.append(args[5])  # engine, auth, transport, context, non-repeaters, max-repetitions
        return await real(*args, **kwargs)

    monkeypatch.setattr(drivers.snmp, "bulk_cmd", observed)
    async with SnmpClient(v3_target(sim, "apc")) as client:
        walked = await client.walk_many(columns, rows_hint=8)
    assert repetitions == [9, 1]
    assert [len(walked[column]) for column in columns] == [8] * 7 + [1]


async def test_missing_oid_is_none_not_zero(sim):
    async with SnmpClient(v3_target(sim, "raritan")) as client:
        values = await client.get("1.3.6.1.4.1.13742.6.5.4.3.1.4.1.5.8", "1.3.6.1.4.1.13742.6.5.4.3.1.4.1.4.8")
    assert values == {"1.3.6.1.4.1.13742.6.5.4.3.1.4.1.5.8": None, "1.3.6.1.4.1.13742.6.5.4.3.1.4.1.4.8": 120000}


def test_v2c_without_waiver_is_refused(sim):
    target = SnmpTarget("127.0.0.1", sim.port, community=Secret("apc"))
    with pytest.raises(InsecureRefused):
        SnmpPdu(target)


async def test_v2c_with_waiver_works(sim, open_pdus):
    target = SnmpTarget("127.0.0.1", sim.port, community=Secret("apc"),
                        insecure_community_waiver="lab PDU, isolated OOB VLAN (TICKET-1)")
    driver = SnmpPdu(target)
    open_pdus.append(driver)
    assert (await driver.identify()).profile is APC_RPDU2
    assert len(await driver.read_outlets()) == 8


def test_secrets_stay_out_of_repr(sim):
    assert USER.auth_key not in repr(v3_target(sim, "apc"))


# ---------------------------------------------------------------------------------- switch placement
async def test_lldp_neighbors(sim):
    async with SnmpClient(v3_target(sim, "switch")) as client:
        neighbors = await read_lldp_neighbors(client)
    assert neighbors == [
        LldpNeighbor("Ethernet1", "52:54:00:a1:b2:01", "52:54:00:a1:b2:01", "eno1", "r12-node01"),
        LldpNeighbor("Ethernet2", "52:54:00:a1:b2:02", "eno1", "eno1", "r12-node02"),
        LldpNeighbor("Ethernet4", "spine-1", "Ethernet49/1", "uplink to leaf-r12", "spine-1"),
    ]


@pytest.mark.parametrize("context, vlans", [("switch", (None, None)), ("switch-q", (120, 130))])
async def test_fdb_maps_macs_to_port_names(sim, context, vlans):
    async with SnmpClient(v3_target(sim, context)) as client:
        entries = await read_fdb(client)
    by_mac = {e.mac: e for e in entries}
    assert by_mac["52:54:00:a1:b2:01"] == FdbEntry("52:54:00:a1:b2:01", "Ethernet1", vlans[0])
    assert by_mac["52:54:00:a1:b2:11"] == FdbEntry("52:54:00:a1:b2:11", "Ethernet1", vlans[0])
    assert by_mac["52:54:00:a1:b2:02"] == FdbEntry("52:54:00:a1:b2:02", "Ethernet2", vlans[0])
    assert by_mac["52:54:00:a1:b2:03"] == FdbEntry("52:54:00:a1:b2:03", "Ethernet3", vlans[1])
    assert "00:1c:73:00:00:99" not in by_mac  # the switch's own MAC (status self) is not a station

"""Rack PDU vendors as data: which table columns hold an outlet's name, state and meters, how to scale
them, which values mean on/off, and which SET switches an outlet. ``drivers.snmp`` reads these tables;
nothing here talks to a device.

Every OID below is taken from the vendor's published MIB (checked against the MIB text, not guessed):
APC PowerNet-MIB (rPDU2 branch), Raritan PDU2-MIB (2022-09-21), Server Technology Sentry4-MIB,
Eaton EATON-EPDU-MIB (2023-03-31) and the IETF ENTITY-SENSOR-MIB (RFC 3433) / ENTITY-MIB.

Rows: a column OID plus a row index gives a value. The row index of the ``name`` column defines the
outlets; the other outlet columns are read at the same row index (plus ``suffix`` where a vendor keys its
measurements by sensor type, as Raritan does). The outlet number we report is the last component of the
row index. Scaling is ``raw / 10**decimals`` (negative ``decimals`` multiply).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from drivers.base import Metric, OutletAction, OutletState


@dataclass(frozen=True)
class Column:
    oid: str                       # table column, without the row index
    decimals: int = 0              # value = raw / 10**decimals
    suffix: str = ""               # index components after the row index (Raritan: sensor type)
    digits_oid: str | None = None  # column holding extra decimals per row (Raritan *DecimalDigits)


@dataclass(frozen=True)
class Command:
    oid: str    # column to SET at the outlet's row index
    value: int  # Integer32 value to write


@dataclass(frozen=True)
class InputColumn:
    metric: Metric
    column: Column
    label: str  # "{n}" becomes the last component of the row index, e.g. "phase{n}"


@dataclass(frozen=True)
class EntitySensors:
    """ENTITY-SENSOR-MIB: each row says its own type, scale and precision."""

    type_oid: str = "1.3.6.1.2.1.99.1.1.1.1"       # entPhySensorType
    scale_oid: str = "1.3.6.1.2.1.99.1.1.1.2"      # entPhySensorScale
    precision_oid: str = "1.3.6.1.2.1.99.1.1.1.3"  # entPhySensorPrecision
    value_oid: str = "1.3.6.1.2.1.99.1.1.1.4"      # entPhySensorValue
    status_oid: str = "1.3.6.1.2.1.99.1.1.1.5"     # entPhySensorOperStatus, ok(1)
    name_oid: str = "1.3.6.1.2.1.47.1.1.1.1.7"     # entPhysicalName
    metrics: Mapping[int, Metric] = field(default_factory=lambda: MappingProxyType({
        3: Metric.PDU_INPUT_VOLTAGE_VOLTS,   # voltsAC
        5: Metric.PDU_INPUT_CURRENT_AMPS,    # amperes
        6: Metric.PDU_INPUT_POWER_WATTS,     # watts
    }))


@dataclass(frozen=True)
class PduProfile:
    vendor: str
    name: Column | None = None  # None: the device has no outlet table we know
    state: Column | None = None
    current: Column | None = None  # amps after scaling
    power: Column | None = None    # watts after scaling
    energy: Column | None = None   # kWh after scaling
    states: Mapping[int, OutletState] = field(default_factory=dict)
    commands: Mapping[OutletAction, Command] = field(default_factory=dict)
    inputs: tuple[InputColumn, ...] = ()
    entity_sensors: EntitySensors | None = None


def _frozen(mapping: dict) -> Mapping:
    return MappingProxyType(mapping)


# APC PowerNet-MIB, rPDU2 (masterSwitchrPDU2). Outlet current in tenths of amps, energy in tenths of kWh,
# device/phase power in hundredths of kW; -1 means "not supported by this model".
_APC = "1.3.6.1.4.1.318.1.1.26"
APC_RPDU2 = PduProfile(
    vendor="apc",
    name=Column(f"{_APC}.9.2.3.1.3"),                  # rPDU2OutletSwitchedStatusName
    state=Column(f"{_APC}.9.2.3.1.5"),                 # rPDU2OutletSwitchedStatusState
    current=Column(f"{_APC}.9.4.3.1.6", decimals=1),   # rPDU2OutletMeteredStatusCurrent
    power=Column(f"{_APC}.9.4.3.1.7"),                 # rPDU2OutletMeteredStatusPower
    energy=Column(f"{_APC}.9.4.3.1.11", decimals=1),   # rPDU2OutletMeteredStatusEnergy
    states=_frozen({1: OutletState.OFF, 2: OutletState.ON}),
    commands=_frozen({                                 # rPDU2OutletSwitchedControlCommand
        OutletAction.ON: Command(f"{_APC}.9.2.4.1.5", 1),      # immediateOn
        OutletAction.OFF: Command(f"{_APC}.9.2.4.1.5", 2),     # immediateOff
        OutletAction.CYCLE: Command(f"{_APC}.9.2.4.1.5", 3),   # immediateReboot
    }),
    inputs=(
        InputColumn(Metric.PDU_INPUT_CURRENT_AMPS, Column(f"{_APC}.6.3.1.5", decimals=1), "phase{n}"),
        InputColumn(Metric.PDU_INPUT_VOLTAGE_VOLTS, Column(f"{_APC}.6.3.1.6"), "phase{n}"),
        InputColumn(Metric.PDU_INPUT_POWER_WATTS, Column(f"{_APC}.6.3.1.7", decimals=-1), "phase{n}"),
        InputColumn(Metric.PDU_INPUT_POWER_WATTS, Column(f"{_APC}.4.3.1.5", decimals=-1), "total"),
        InputColumn(Metric.PDU_ENERGY_KWH, Column(f"{_APC}.4.3.1.9", decimals=1), "total"),
    ),
)

# Raritan PDU2-MIB. Index (pduId, outletId[, sensorType]); measurements are unsigned integers to be
# scaled by the matching *SensorDecimalDigits. Sensor types: rmsCurrent(1), rmsVoltage(4),
# activePower(5), activeEnergy(8, in Wh).
_RARITAN = "1.3.6.1.4.1.13742.6"
_RARITAN_OUTLET_VALUE = f"{_RARITAN}.5.4.3.1.4"    # measurementsOutletSensorValue
_RARITAN_OUTLET_DIGITS = f"{_RARITAN}.3.5.4.1.7"   # outletSensorDecimalDigits
_RARITAN_INLET_VALUE = f"{_RARITAN}.5.2.3.1.4"     # measurementsInletSensorValue
_RARITAN_INLET_DIGITS = f"{_RARITAN}.3.3.4.1.7"    # inletSensorDecimalDigits
RARITAN_PDU2 = PduProfile(
    vendor="raritan",
    name=Column(f"{_RARITAN}.3.5.3.1.3"),              # outletName
    state=Column(f"{_RARITAN}.4.1.2.1.3"),             # outletSwitchingState
    current=Column(_RARITAN_OUTLET_VALUE, suffix="1", digits_oid=_RARITAN_OUTLET_DIGITS),
    power=Column(_RARITAN_OUTLET_VALUE, suffix="5", digits_oid=_RARITAN_OUTLET_DIGITS),
    energy=Column(_RARITAN_OUTLET_VALUE, decimals=3, suffix="8", digits_oid=_RARITAN_OUTLET_DIGITS),
    states=_frozen({7: OutletState.ON, 8: OutletState.OFF}),
    commands=_frozen({                                 # switchingOperation
        OutletAction.ON: Command(f"{_RARITAN}.4.1.2.1.2", 1),
        OutletAction.OFF: Command(f"{_RARITAN}.4.1.2.1.2", 0),
        OutletAction.CYCLE: Command(f"{_RARITAN}.4.1.2.1.2", 2),
    }),
    inputs=(
        InputColumn(Metric.PDU_INPUT_CURRENT_AMPS,
                    Column(_RARITAN_INLET_VALUE, suffix="1", digits_oid=_RARITAN_INLET_DIGITS), "inlet{n}"),
        InputColumn(Metric.PDU_INPUT_VOLTAGE_VOLTS,
                    Column(_RARITAN_INLET_VALUE, suffix="4", digits_oid=_RARITAN_INLET_DIGITS), "inlet{n}"),
        InputColumn(Metric.PDU_INPUT_POWER_WATTS,
                    Column(_RARITAN_INLET_VALUE, suffix="5", digits_oid=_RARITAN_INLET_DIGITS), "inlet{n}"),
        InputColumn(Metric.PDU_ENERGY_KWH,
                    Column(_RARITAN_INLET_VALUE, decimals=3, suffix="8", digits_oid=_RARITAN_INLET_DIGITS),
                    "inlet{n}"),
    ),
)

# Server Technology Sentry4-MIB. Index (unit, inputCord, outlet). Outlet current in hundredths of amps,
# outlet energy in Wh, cord energy in tenths of kWh, phase voltage in tenths of volts; -1 = not available.
_SENTRY4 = "1.3.6.1.4.1.1718.4.1"
SENTRY4 = PduProfile(
    vendor="servertech",
    name=Column(f"{_SENTRY4}.8.2.1.3"),                # st4OutletName
    state=Column(f"{_SENTRY4}.8.3.1.1"),               # st4OutletState
    current=Column(f"{_SENTRY4}.8.3.1.3", decimals=2), # st4OutletCurrent
    power=Column(f"{_SENTRY4}.8.3.1.7"),               # st4OutletActivePower
    energy=Column(f"{_SENTRY4}.8.3.1.14", decimals=3), # st4OutletEnergy
    states=_frozen({1: OutletState.ON, 2: OutletState.OFF}),
    commands=_frozen({                                 # st4OutletControlAction
        OutletAction.ON: Command(f"{_SENTRY4}.8.5.1.2", 1),
        OutletAction.OFF: Command(f"{_SENTRY4}.8.5.1.2", 2),
        OutletAction.CYCLE: Command(f"{_SENTRY4}.8.5.1.2", 3),
    }),
    inputs=(
        InputColumn(Metric.PDU_INPUT_POWER_WATTS, Column(f"{_SENTRY4}.3.3.1.3"), "cord{n}"),
        InputColumn(Metric.PDU_ENERGY_KWH, Column(f"{_SENTRY4}.3.3.1.10", decimals=1), "cord{n}"),
        InputColumn(Metric.PDU_INPUT_VOLTAGE_VOLTS, Column(f"{_SENTRY4}.5.3.1.3", decimals=1), "phase{n}"),
        InputColumn(Metric.PDU_INPUT_CURRENT_AMPS, Column(f"{_SENTRY4}.5.3.1.6", decimals=2), "phase{n}"),
    ),
)

# Eaton EATON-EPDU-MIB. Index (strappingIndex, outletIndex). Currents in mA, voltages in mV, energy in Wh;
# negative watts = not available. Each action has its own command column; writing 0 acts immediately.
_EATON = "1.3.6.1.4.1.534.6.6.7"
EATON_EPDU = PduProfile(
    vendor="eaton",
    name=Column(f"{_EATON}.6.1.1.3"),                  # outletName
    state=Column(f"{_EATON}.6.6.1.2"),                 # outletControlStatus
    current=Column(f"{_EATON}.6.4.1.3", decimals=3),   # outletCurrent
    power=Column(f"{_EATON}.6.5.1.3"),                 # outletWatts
    energy=Column(f"{_EATON}.6.5.1.4", decimals=3),    # outletWh
    states=_frozen({0: OutletState.OFF, 1: OutletState.ON}),
    commands=_frozen({
        OutletAction.ON: Command(f"{_EATON}.6.6.1.4", 0),     # outletControlOnCmd
        OutletAction.OFF: Command(f"{_EATON}.6.6.1.3", 0),    # outletControlOffCmd
        OutletAction.CYCLE: Command(f"{_EATON}.6.6.1.5", 0),  # outletControlRebootCmd
    }),
    inputs=(
        InputColumn(Metric.PDU_INPUT_VOLTAGE_VOLTS, Column(f"{_EATON}.3.2.1.3", decimals=3), "input{n}"),
        InputColumn(Metric.PDU_INPUT_CURRENT_AMPS, Column(f"{_EATON}.3.3.1.4", decimals=3), "input{n}"),
        InputColumn(Metric.PDU_INPUT_POWER_WATTS, Column(f"{_EATON}.3.5.1.4"), "input{n}"),  # inputTotalWatts
        InputColumn(Metric.PDU_ENERGY_KWH, Column(f"{_EATON}.3.5.1.5", decimals=3), "input{n}"),  # inputTotalWh
    ),
)

# Anything else that speaks ENTITY-SENSOR-MIB: sensors only, no outlets, no switching.
GENERIC = PduProfile(vendor="generic", entity_sensors=EntitySensors())

# sysObjectID prefix -> profile; the longest matching prefix wins, GENERIC when none matches.
PROFILES: Mapping[str, PduProfile] = MappingProxyType({
    "1.3.6.1.4.1.318.1.3.4.6": APC_RPDU2,    # PowerNet-MIB masterSwitchrPDU2
    "1.3.6.1.4.1.13742.6": RARITAN_PDU2,     # PDU2-MIB pdu2
    "1.3.6.1.4.1.1718.4": SENTRY4,           # Sentry4-MIB sentry4
    "1.3.6.1.4.1.534.6.6.7": EATON_EPDU,     # EATON-EPDU-MIB eatonEpdu
})

"""What every driver speaks: small Protocols per concern, result dataclasses, and errors in our terms.

Drivers turn a protocol reply into these types where it arrives ("parse at the edge"); past a driver
nothing handles raw JSON or varbinds. A value a device did not report is ``None``, never 0.

Blocking drivers (sushy, pyghmi) implement the synchronous Protocols; the daemon calls them through one
``asyncio.to_thread`` hop on a bounded executor. Natively async drivers (pysnmp) implement the async ones.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


# --------------------------------------------------------------------------------------------- secrets
class Secret:
    """A credential value that never shows itself in repr, str, logs or exception text."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes) -> None:
        self._value = value.decode() if isinstance(value, bytes) else value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # refuse to be pickled into somewhere we do not control
        raise TypeError("Secret cannot be pickled")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: Secret

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=********)"


# ---------------------------------------------------------------------------------------------- errors
class DriverError(Exception):
    """Base of every error a driver raises. ``target`` names the device (address or name)."""

    def __init__(self, target: str, message: str, *, field: str | None = None) -> None:
        self.target = target
        self.message = message
        self.field = field
        where = f"{target}: " if target else ""
        what = f" (field {field})" if field else ""
        super().__init__(f"{where}{message}{what}")

    def __reduce__(self):  # pickled across the Redfish poll workers' pipe, whatever a subclass's __init__ takes
        return _rebuilt_error, (type(self), self.args, self.__dict__)


def _rebuilt_error(cls: type[DriverError], args: tuple, state: dict) -> DriverError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class BmcUnreachable(DriverError):
    """Nothing answered, or the connection was refused or reset."""


class AuthFailed(DriverError):
    """The device answered but refused the credentials."""


class TlsMismatch(DriverError):
    """The certificate presented does not verify against the CA bundle or the pinned fingerprint."""

    def __init__(self, target: str, message: str, *, seen_fingerprint: str | None = None,
                 expected_fingerprint: str | None = None) -> None:
        super().__init__(target, message)
        self.seen_fingerprint = seen_fingerprint
        self.expected_fingerprint = expected_fingerprint


class Timeout(DriverError):
    """The device did not answer within the deadline."""


class MalformedReply(DriverError):
    """The device answered with something we cannot parse (HTML error page, truncated JSON, wrong type)."""


class Unsupported(DriverError):
    """The device does not offer this operation or resource."""


class InsecureRefused(DriverError):
    """The device only offers a protocol mode we refuse (IPMI cipher suite 0, IPMI 1.5, SNMP without auth)."""


class ActionNotConfirmed(DriverError):
    """The device acknowledged an action but its state did not change within the deadline."""


# ------------------------------------------------------------------------------------------------ enums
class PowerState(enum.StrEnum):
    ON = "on"
    OFF = "off"
    POWERING_ON = "powering_on"
    POWERING_OFF = "powering_off"


class PowerAction(enum.StrEnum):
    ON = "on"
    OFF = "off"           # immediate, hard
    SOFT_OFF = "soft-off"  # graceful (ACPI)
    CYCLE = "cycle"       # off then on


class BootDevice(enum.StrEnum):
    PXE = "pxe"
    DISK = "disk"
    CD = "cd"
    BIOS = "bios"


class BootMode(enum.StrEnum):
    UEFI = "uefi"
    LEGACY = "legacy"


class OutletState(enum.StrEnum):
    ON = "on"
    OFF = "off"


class OutletAction(enum.StrEnum):
    ON = "on"
    OFF = "off"
    CYCLE = "cycle"


class Health(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"


# -------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Processor:
    socket: str
    model: str | None
    manufacturer: str | None
    cores: int | None
    threads: int | None


@dataclass(frozen=True)
class MemoryModule:
    slot: str
    size_mib: int | None
    part_number: str | None
    serial: str | None
    manufacturer: str | None
    speed_mhz: int | None


@dataclass(frozen=True)
class Drive:
    name: str
    model: str | None
    serial: str | None
    capacity_bytes: int | None
    media_type: str | None


@dataclass(frozen=True)
class NetworkInterface:
    name: str
    mac: str | None  # lower-case colon form, e.g. "52:54:00:12:34:56"
    speed_mbps: int | None


@dataclass(frozen=True)
class SystemInventory:
    """One server as its BMC describes it."""

    serial: str | None
    uuid: str | None
    manufacturer: str | None
    model: str | None
    bios_version: str | None = None
    bmc_firmware: str | None = None
    chassis_type: str | None = None
    chassis_serial: str | None = None
    power_state: PowerState | None = None
    processors: tuple[Processor, ...] = ()
    memory: tuple[MemoryModule, ...] = ()
    drives: tuple[Drive, ...] = ()
    nics: tuple[NetworkInterface, ...] = ()

    @property
    def memory_total_mib(self) -> int:
        return sum(m.size_mib or 0 for m in self.memory)


@dataclass(frozen=True, slots=True)  # slots: a third cheaper to make, and a poll makes dozens
class SensorReading:
    """One measured value. ``metric`` is a Prometheus-style name, e.g. ``baie_inlet_temperature_celsius``."""

    metric: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)
    health: Health | None = None


@dataclass(frozen=True)
class OutletReading:
    index: int
    name: str | None
    state: OutletState | None
    current_amps: float | None
    power_watts: float | None
    energy_kwh: float | None


@dataclass(frozen=True)
class ProbeResult:
    """What a discovery probe found at one address."""

    address: str
    protocol: str  # "redfish" | "ipmi"
    port: int
    detail: str | None = None  # e.g. Redfish version, or IPMI "2.0"
    uuid: str | None = None  # the service's UUID, where it reports one (Redfish service root)
    certificate_sha256: str | None = None  # TLS certificate seen (unverified), for pinning on enrolment


# ------------------------------------------------------------------------------------------ protocols
@runtime_checkable
class PowerControl(Protocol):
    def get_power_state(self) -> PowerState: ...

    def request_power(self, action: PowerAction) -> None:
        """Ask once; the daemon reads back and confirms within a deadline."""


@runtime_checkable
class BootControl(Protocol):
    def set_boot_once(self, device: BootDevice, mode: BootMode | None = None) -> None: ...


@runtime_checkable
class InventoryReader(Protocol):
    def read_inventory(self) -> SystemInventory: ...


@runtime_checkable
class SensorReader(Protocol):
    def read_sensors(self) -> list[SensorReading]: ...


@runtime_checkable
class OutletControl(Protocol):
    async def read_outlets(self) -> list[OutletReading]: ...

    async def request_outlet(self, index: int, action: OutletAction) -> None:
        """Ask once; the daemon reads back and confirms within a deadline."""


# ------------------------------------------------------------------------------------- metric names
class Metric(enum.StrEnum):
    """Names of the readings drivers produce (Prometheus style). Labels say which sensor/outlet/pump."""

    NODE_POWER_WATTS = "baie_node_power_watts"                    # PowerControl consumed watts
    PSU_INPUT_POWER_WATTS = "baie_psu_input_power_watts"          # labels: psu
    TEMPERATURE_CELSIUS = "baie_temperature_celsius"              # labels: sensor
    INLET_TEMPERATURE_CELSIUS = "baie_inlet_temperature_celsius"
    FAN_SPEED_RPM = "baie_fan_speed_rpm"                          # labels: fan
    FAN_SPEED_PERCENT = "baie_fan_speed_percent"                  # labels: fan
    OUTLET_POWER_WATTS = "baie_outlet_power_watts"                # labels: outlet
    OUTLET_CURRENT_AMPS = "baie_outlet_current_amps"              # labels: outlet
    OUTLET_VOLTAGE_VOLTS = "baie_outlet_voltage_volts"            # labels: outlet
    OUTLET_ENERGY_KWH = "baie_outlet_energy_kwh"                  # labels: outlet
    OUTLET_ON = "baie_outlet_on"                                  # 1 on, 0 off; labels: outlet
    PDU_INPUT_POWER_WATTS = "baie_pdu_input_power_watts"          # labels: input (mains/phase)
    PDU_INPUT_CURRENT_AMPS = "baie_pdu_input_current_amps"        # labels: input
    PDU_INPUT_VOLTAGE_VOLTS = "baie_pdu_input_voltage_volts"      # labels: input
    PDU_ENERGY_KWH = "baie_pdu_energy_kwh"
    PDU_POWER_WATTS = "baie_pdu_power_watts"                      # whole-PDU total, as the PDU reports it
    BRANCH_POWER_WATTS = "baie_branch_power_watts"                # labels: branch (a breaker's circuit)
    BRANCH_CURRENT_AMPS = "baie_branch_current_amps"              # labels: branch
    BRANCH_VOLTAGE_VOLTS = "baie_branch_voltage_volts"            # labels: branch
    BRANCH_ENERGY_KWH = "baie_branch_energy_kwh"                  # labels: branch
    COOLANT_SUPPLY_TEMPERATURE_CELSIUS = "baie_coolant_supply_temperature_celsius"  # labels: connector
    COOLANT_RETURN_TEMPERATURE_CELSIUS = "baie_coolant_return_temperature_celsius"  # labels: connector
    COOLANT_FLOW_LPM = "baie_coolant_flow_litres_per_minute"      # labels: connector
    COOLANT_PRESSURE_KPA = "baie_coolant_pressure_kpa"            # labels: connector
    COOLANT_HEAT_REMOVED_KW = "baie_coolant_heat_removed_kw"      # as reported by the device, if it does
    PUMP_SPEED_PERCENT = "baie_pump_speed_percent"                # labels: pump
    PUMP_OK = "baie_pump_ok"                                      # 1 healthy, 0 failed; labels: pump
    FILTER_OK = "baie_filter_ok"                                  # labels: filter
    RESERVOIR_LEVEL_PERCENT = "baie_reservoir_level_percent"      # labels: reservoir
    LEAK_DETECTED = "baie_leak_detected"                          # 1 leak, 0 dry; labels: detector
    HUMIDITY_PERCENT = "baie_humidity_percent"
    PSU_OK = "baie_psu_ok"                                        # 1 healthy, 0 failed; labels: psu

"""SNMP driver (pysnmp 7, asyncio): rack PDUs (outlets, inputs, switching) and switch placement (LLDP, FDB).

SNMPv3 authPriv (SHA-256 or better, AES) is the only mode we use unless a device's config carries an
explicit ``insecure_community_waiver``; then v2c is allowed. Every call has a deadline and every device a
bound on calls in flight. Varbinds are parsed here: a value the device does not have (noSuchObject,
noSuchInstance, endOfMibView, or a vendor's documented "-1") is ``None``, never 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass

from pyasn1.type import univ
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData, ContextData, Integer32, ObjectIdentity, ObjectType, SnmpEngine, UdpTransportTarget,
    UsmUserData, bulk_cmd, bulk_walk_cmd, get_cmd, set_cmd, usmAesCfb128Protocol, usmAesCfb192Protocol,
    usmAesCfb256Protocol, usmHMAC192SHA256AuthProtocol, usmHMAC256SHA384AuthProtocol,
    usmHMAC384SHA512AuthProtocol)
from pysnmp.proto import errind
from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject
from pysnmp.smi import builder, view

from drivers.base import (
    AuthFailed, BmcUnreachable, DriverError, InsecureRefused, MalformedReply, Metric, OutletAction, OutletReading,
    OutletState, Secret, SensorReading, Timeout, Unsupported)
from drivers.profiles.snmp_pdu import GENERIC, PROFILES, Column, PduProfile

# ----------------------------------------------------------------------------------------------- tables
class AuthProtocol(enum.StrEnum):
    SHA256 = "SHA256"
    SHA384 = "SHA384"
    SHA512 = "SHA512"


class PrivProtocol(enum.StrEnum):
    AES128 = "AES128"
    AES192 = "AES192"
    AES256 = "AES256"


_AUTH = {
    AuthProtocol.SHA256: usmHMAC192SHA256AuthProtocol,
    AuthProtocol.SHA384: usmHMAC256SHA384AuthProtocol,
    AuthProtocol.SHA512: usmHMAC384SHA512AuthProtocol,
}
_PRIV = {
    PrivProtocol.AES128: usmAesCfb128Protocol,
    PrivProtocol.AES192: usmAesCfb192Protocol,
    PrivProtocol.AES256: usmAesCfb256Protocol,
}

# errorIndication (returned, not raised, by pysnmp) -> our error. Matched by class, never by text.
_INDICATIONS = (
    ((errind.WrongDigest, errind.DecryptionError, errind.UnknownUserName, errind.UnknownSecurityName,
      errind.UnsupportedSecurityLevel, errind.AuthenticationFailure), AuthFailed),
    ((errind.RequestTimedOut,), Timeout),
    ((errind.DeserializationError, errind.DataMismatch, errind.OidNotIncreasing), MalformedReply),
)

# errorStatus (RFC 3416) -> our error; anything else is a plain DriverError naming the status.
_STATUSES: dict[int, type[DriverError]] = {
    6: AuthFailed,     # noAccess
    16: AuthFailed,    # authorizationError
    7: Unsupported,    # wrongType
    8: Unsupported,    # wrongLength
    9: Unsupported,    # wrongEncoding
    10: Unsupported,   # wrongValue
    11: Unsupported,   # noCreation
    12: Unsupported,   # inconsistentValue
    17: Unsupported,   # notWritable
}

_ABSENT = (NoSuchObject, NoSuchInstance, EndOfMibView)

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"

# LLDP-MIB (IEEE 802.1AB-2005): lldpRemEntry, index (lldpRemTimeMark, lldpRemLocalPortNum, lldpRemIndex)
LLDP_REM_CHASSIS_ID_SUBTYPE = "1.0.8802.1.1.2.1.4.1.1.4"
LLDP_REM_CHASSIS_ID = "1.0.8802.1.1.2.1.4.1.1.5"
LLDP_REM_PORT_ID_SUBTYPE = "1.0.8802.1.1.2.1.4.1.1.6"
LLDP_REM_PORT_ID = "1.0.8802.1.1.2.1.4.1.1.7"
LLDP_REM_PORT_DESC = "1.0.8802.1.1.2.1.4.1.1.8"
LLDP_REM_SYS_NAME = "1.0.8802.1.1.2.1.4.1.1.9"
LLDP_LOC_PORT_ID = "1.0.8802.1.1.2.1.3.7.1.3"  # lldpLocPortEntry, index lldpLocPortNum
LLDP_CHASSIS_MAC = 4  # LldpChassisIdSubtype macAddress(4)
LLDP_PORT_MAC = 3     # LldpPortIdSubtype macAddress(3)

# BRIDGE-MIB (RFC 4188), Q-BRIDGE-MIB (RFC 4363), IF-MIB (RFC 2863)
DOT1D_TP_FDB_PORT = "1.3.6.1.2.1.17.4.3.1.2"     # index: MAC (6 components)
DOT1D_TP_FDB_STATUS = "1.3.6.1.2.1.17.4.3.1.3"
DOT1Q_TP_FDB_PORT = "1.3.6.1.2.1.17.7.1.2.2.1.2"  # index: dot1qFdbId, MAC
DOT1Q_TP_FDB_STATUS = "1.3.6.1.2.1.17.7.1.2.2.1.3"
DOT1D_BASE_PORT_IF_INDEX = "1.3.6.1.2.1.17.1.4.1.2"
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"
FDB_IGNORED_STATUSES = {2, 4}  # invalid(2), self(4): not a station behind the port

ENTITY_SENSOR_OK = 1  # EntitySensorStatus ok(1)
OUTLET_METRICS = ((Metric.OUTLET_POWER_WATTS, "power_watts"), (Metric.OUTLET_CURRENT_AMPS, "current_amps"),
                  (Metric.OUTLET_ENERGY_KWH, "energy_kwh"))
OUTLET_ON = {OutletState.ON: 1.0, OutletState.OFF: 0.0}

Value = int | bytes | str  # a varbind after parsing: integers, octet strings, OIDs (dotted)


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SnmpV3User:
    username: str
    auth_key: Secret
    priv_key: Secret
    auth_protocol: AuthProtocol = AuthProtocol.SHA256
    priv_protocol: PrivProtocol = PrivProtocol.AES128


@dataclass(frozen=True)
class SnmpTarget:
    """One SNMP agent. ``context`` selects a v3 context; ``timeout`` is the deadline of each call."""

    host: str
    port: int = 161
    v3: SnmpV3User | None = None
    community: Secret | None = None
    insecure_community_waiver: str | None = None  # why v2c is accepted for this device (who, ticket)
    context: str = ""
    timeout: float = 5.0
    retries: int = 1
    max_concurrency: int = 4
    max_repetitions: int = 25

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DeviceIdentity:
    sys_object_id: str
    description: str | None
    name: str | None
    profile: PduProfile


@dataclass(frozen=True)
class LldpNeighbor:
    """A device the switch hears on one of its ports."""

    local_port: str           # the switch's port (lldpLocPortId, else the LLDP port number)
    chassis_id: str           # lower-case colon MAC when the neighbour sends a MAC
    port_id: str
    port_description: str | None
    system_name: str | None


@dataclass(frozen=True)
class FdbEntry:
    """A MAC address the switch has learnt behind one of its ports."""

    mac: str
    port: str | None   # ifName of the port, None when the switch does not say
    vlan: int | None   # Q-BRIDGE dot1qFdbId (the VLAN on most switches); None from BRIDGE-MIB


# ------------------------------------------------------------------------------------------------ client
def _auth_data(target: SnmpTarget) -> UsmUserData | CommunityData:
    if target.v3 is not None:
        user = target.v3
        return UsmUserData(user.username, authKey=user.auth_key.reveal(), privKey=user.priv_key.reveal(),
                           authProtocol=_AUTH[AuthProtocol(user.auth_protocol)],
                           privProtocol=_PRIV[PrivProtocol(user.priv_protocol)])
    if target.community is not None and target.insecure_community_waiver:
        return CommunityData(target.community.reveal(), mpModel=1)
    raise InsecureRefused(target.name, "SNMPv3 authPriv required: v2c needs an insecure_community_waiver")


def _parse(value: object) -> Value | None:
    if isinstance(value, univ.Null):  # noSuchObject, noSuchInstance and endOfMibView are Nulls too
        return None
    if isinstance(value, univ.Integer):  # Integer32, Gauge32, Counter32/64, TimeTicks, Unsigned32
        return int(value)
    if isinstance(value, univ.OctetString):
        return bytes(value)
    if isinstance(value, univ.ObjectIdentifier):
        return str(value)
    return None


@functools.cache
def mib_view() -> view.MibViewController:
    """The one MIB view of every engine we create: pysnmp gives each engine its own, and with pysmi installed
    each one builds a MIB parser (~2 s CPU) on first use. We only send numeric OIDs."""
    return view.MibViewController(builder.MibBuilder())


@functools.lru_cache(maxsize=4096)
def _asked(oid: str) -> ObjectType:
    """A variable to request, resolved against the MIB view once: pysnmp resolves every variable it sends
    (a walk of the view's OID tree) unless it was resolved before, which cost a PDU poll ~10 % of its CPU.
    Shared across requests and never changed."""
    return ObjectType(ObjectIdentity(oid)).resolve_with_mib(mib_view())


def build_mib_view() -> None:
    """Build pysnmp's MIB view and compiler now (~5 s of CPU, once per process), on a thread: pysnmp builds
    them at the first request otherwise, on the event loop, stalling everything else on it."""
    _asked(SYS_OBJECT_ID)


def new_engine() -> SnmpEngine:
    """An SnmpEngine on the shared MIB view (~0.3 s of CPU: not on the event loop). One engine can serve
    many devices that use the same credentials."""
    engine = SnmpEngine()
    engine.cache["mibViewController"] = mib_view()
    return engine


class SnmpClient:
    """SNMP session to one device: credentials, per-call deadline, a bound on calls in flight.

    Pass ``engine`` to share one SnmpEngine across devices; otherwise the client owns one.
    """

    def __init__(self, target: SnmpTarget, *, engine: SnmpEngine | None = None) -> None:
        self.target = target
        self._auth = _auth_data(target)
        self._context = ContextData(contextName=target.context.encode())
        self._own_engine = engine is None
        self._engine = engine or new_engine()
        self._transport: UdpTransportTarget | None = None
        self._slots = asyncio.Semaphore(target.max_concurrency)

    def close(self) -> None:
        if self._own_engine:
            self._engine.close_dispatcher()

    async def __aenter__(self) -> SnmpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def get(self, *oids: str) -> dict[str, Value | None]:
        """Values by OID; None where the device has no such object."""
        async with self._call():
            indication, status, index, varbinds = await get_cmd(
                self._engine, self._auth, await self._udp(), self._context,
                *[_asked(oid) for oid in oids], lookupMib=False)
            self._check(indication, status, index, oids)
            return {str(name): _parse(value) for name, value in varbinds}

    async def walk(self, column: str) -> dict[str, Value]:
        """GETBULK walk of one table column: row index ("1.3") -> value. An empty column is {}."""
        rows: dict[str, Value] = {}
        prefix = column + "."
        async with self._call():
            async for indication, status, index, varbinds in bulk_walk_cmd(
                    self._engine, self._auth, await self._udp(), self._context, 0,
                    self.target.max_repetitions, _asked(column),
                    lexicographicMode=False, lookupMib=False):
                # pysnmp keeps retrying a timed-out walk forever: stop at the first error
                self._check(indication, status, index, (column,))
                for name, value in varbinds:
                    oid, parsed = str(name), _parse(value)
                    if oid.startswith(prefix) and parsed is not None:
                        rows[oid[len(prefix):]] = parsed
        return rows

    async def walk_many(self, columns: Iterable[str], rows_hint: int | None = None) -> dict[str, dict[str, Value]]:
        """GETBULK walk of several table columns together: each request asks for the next rows of every
        column not finished yet, so a table of five columns costs one request rather than five.
        ``rows_hint``: how many rows the columns are expected to have (the walk goes on past it if they have
        more). Column -> row index -> value (an empty column is {})."""
        unique = list(dict.fromkeys(columns))
        rows: dict[str, dict[str, Value]] = {column: {} for column in unique}
        cursor = {column: column for column in unique}  # the last OID read of each unfinished column
        read = dict.fromkeys(unique, 0)  # successors read of each column
        async with self._call():
            while cursor:
                pending = list(cursor)
                repetitions = self._repetitions(rows_hint, min(read[column] for column in pending))
                indication, status, index, varbinds = await bulk_cmd(
                    self._engine, self._auth, await self._udp(), self._context, 0, repetitions,
                    *[_asked(cursor[column]) for column in pending], lookupMib=False)
                self._check(indication, status, index, pending)
                # the reply is rows of one successor per pending column, in request order
                before = dict(cursor)
                for position, (name, value) in enumerate(varbinds):
                    column = pending[position % len(pending)]
                    if column not in cursor:
                        continue  # finished earlier in this reply
                    oid, prefix = str(name), column + "."
                    if isinstance(value, EndOfMibView) or not oid.startswith(prefix):
                        del cursor[column]  # past the end of the column
                        continue
                    cursor[column] = oid
                    read[column] += 1
                    if (parsed := _parse(value)) is not None:
                        rows[column][oid[len(prefix):]] = parsed
                answered = pending[:len(varbinds)]  # an agent may truncate a reply that grows too big
                if not answered:
                    raise MalformedReply(self.target.name, "empty GETBULK reply", field=pending[0])
                for column in answered:
                    if cursor.get(column) == before[column]:
                        del cursor[column]  # the reply brought nothing new for it: finished
        return rows

    def _repetitions(self, rows_hint: int | None, read: int) -> int:
        """Successors to ask of each column. A reply brings that many of every column, and past a column's
        end they belong to other objects and are decoded for nothing: with a hint, ask for the rows still
        expected plus one to see the end (an APC input table of 3 rows at 25 repetitions: 114 of 125 for
        nothing). Agents cap a reply's varbinds (pysnmp's responder at 64, net-snmp at 100 by default), so
        a 24-outlet table of 5 columns comes in several replies: the last asks for what is left, not 25
        more of each column."""
        if rows_hint is None or read > rows_hint:
            return self.target.max_repetitions  # no hint, or the table has grown past it
        return min(rows_hint + 1 - read, self.target.max_repetitions)

    async def set_int(self, oid: str, value: int) -> None:
        async with self._call():
            indication, status, index, varbinds = await set_cmd(
                self._engine, self._auth, await self._udp(), self._context,
                ObjectType(ObjectIdentity(oid), Integer32(value)), lookupMib=False)
            self._check(indication, status, index, (oid,))
            # some agents answer a SET on an object they lack with status 0 and a noSuchInstance varbind
            if any(isinstance(v, _ABSENT) for _, v in varbinds):
                raise Unsupported(self.target.name, "device has no such writable object", field=oid)

    async def _udp(self) -> UdpTransportTarget:
        if self._transport is None:
            per_try = self.target.timeout / (self.target.retries + 1)
            try:
                self._transport = await UdpTransportTarget.create(
                    (self.target.host, self.target.port), timeout=per_try, retries=self.target.retries)
            except Exception as exc:  # pysnmp raises its own PySnmpError for an unresolvable name
                raise BmcUnreachable(self.target.name, f"cannot resolve address: {type(exc).__name__}") from exc
        return self._transport

    @contextlib.asynccontextmanager
    async def _call(self):
        """Wait for a free slot on the device, then run under the target's deadline."""
        async with self._slots:
            try:
                async with asyncio.timeout(self.target.timeout):
                    yield
            except TimeoutError as exc:
                raise Timeout(self.target.name, f"no answer within {self.target.timeout}s") from exc

    def _check(self, indication: object, status: object, index: object, oids: Iterable[str]) -> None:
        if indication:
            for kinds, error in _INDICATIONS:
                if isinstance(indication, kinds):
                    raise error(self.target.name, f"SNMP {type(indication).__name__}")
            raise BmcUnreachable(self.target.name, f"SNMP {type(indication).__name__}")
        if status and int(status):
            oids = list(oids)
            position = int(index or 0) - 1
            where = oids[position] if 0 <= position < len(oids) else None
            error = _STATUSES.get(int(status), DriverError)
            raise error(self.target.name, f"SNMP error status {status.prettyPrint()}", field=where)


# --------------------------------------------------------------------------------------------------- PDU
def match_profile(sys_object_id: str) -> PduProfile:
    """The profile whose sysObjectID prefix is the longest match (whole OID components), else GENERIC."""
    best, best_len = GENERIC, -1
    for prefix, profile in PROFILES.items():
        if (sys_object_id == prefix or sys_object_id.startswith(prefix + ".")) and len(prefix) > best_len:
            best, best_len = profile, len(prefix)
    return best


def _text(raw: Value | None) -> str | None:
    if raw is None:
        return None
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    return text.strip() or None


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _last(row: str) -> int:
    return int(row.rsplit(".", 1)[-1])


def _scaled(target: str, column: Column, walks: dict[str, dict[str, Value]], row: str) -> float | None:
    key = f"{row}.{column.suffix}" if column.suffix else row
    raw = walks[column.oid].get(key)
    if raw is None:
        return None
    if not isinstance(raw, int):
        raise MalformedReply(target, "expected an integer", field=f"{column.oid}.{key}")
    if raw < 0:  # APC, Eaton and Sentry4 MIBs all document -1 (negative) as "not available"
        return None
    decimals = column.decimals
    if column.digits_oid:
        digits = walks[column.digits_oid].get(key)
        if not isinstance(digits, int):
            return None
        decimals += digits
    return raw / 10**decimals if decimals >= 0 else float(raw * 10**-decimals)


def _columns(*columns: Column | None) -> list[str]:
    oids = []
    for column in columns:
        if column is not None:
            oids.append(column.oid)
            if column.digits_oid:
                oids.append(column.digits_oid)
    return oids


class SnmpPdu:
    """A rack PDU over SNMP: implements ``OutletControl`` plus input readings and identification.

    Without a ``profile`` the first call identifies the device by its sysObjectID.
    """

    def __init__(self, target: SnmpTarget, profile: PduProfile | None = None, *,
                 engine: SnmpEngine | None = None) -> None:
        self.client = SnmpClient(target, engine=engine)
        self.profile = profile
        self._rows: dict[str, int] = {}  # per table read: the most rows a column had last time

    @property
    def name(self) -> str:
        return self.client.target.name

    def close(self) -> None:
        self.client.close()

    async def identify(self) -> DeviceIdentity:
        """Read the system group; pick the vendor profile unless one was given."""
        values = await self.client.get(SYS_OBJECT_ID, SYS_DESCR, SYS_NAME)
        sys_object_id = values.get(SYS_OBJECT_ID)
        if not isinstance(sys_object_id, str):
            raise MalformedReply(self.name, "no sysObjectID", field="sysObjectID")
        if self.profile is None:
            self.profile = match_profile(sys_object_id)
        return DeviceIdentity(sys_object_id, _text(values.get(SYS_DESCR)), _text(values.get(SYS_NAME)),
                              self.profile)

    async def read_outlets(self) -> list[OutletReading]:
        profile = await self._profile()
        if profile.name is None:
            raise Unsupported(self.name, f"no outlet table in the {profile.vendor} profile")
        walks = await self._walk("outlets", _columns(
            profile.name, profile.state, profile.current, profile.power, profile.energy))
        outlets, seen = [], set()
        for row, raw_name in walks[profile.name.oid].items():
            index = _last(row)
            if index in seen:  # several units daisy-chained behind one agent: numbers would collide
                raise MalformedReply(self.name, f"outlet number {index} appears twice", field=profile.name.oid)
            seen.add(index)
            state = walks[profile.state.oid].get(row) if profile.state else None
            outlets.append(OutletReading(
                index=index,
                name=_text(raw_name),
                state=profile.states.get(state) if isinstance(state, int) else None,
                current_amps=self._metered(profile.current, walks, row),
                power_watts=self._metered(profile.power, walks, row),
                energy_kwh=self._metered(profile.energy, walks, row),
            ))
        return outlets

    async def request_outlet(self, index: int, action: OutletAction) -> None:
        """Ask once; the daemon reads back and confirms within a deadline."""
        profile = await self._profile()
        command = profile.commands.get(action)
        if command is None or profile.name is None:
            raise Unsupported(self.name, f"outlet {action} is not offered by the {profile.vendor} profile")
        rows = await self.client.walk(profile.name.oid)
        row = next((r for r in rows if _last(r) == index), None)
        if row is None:
            raise Unsupported(self.name, f"no outlet {index}", field=profile.name.oid)
        await self.client.set_int(f"{command.oid}.{row}", command.value)

    async def read_inputs(self) -> list[SensorReading]:
        """Inlet, cord and phase totals as PDU_INPUT_* / PDU_ENERGY_KWH readings labelled ``input``."""
        profile = await self._profile()
        oids = _columns(*(spec.column for spec in profile.inputs))
        if profile.entity_sensors:
            sensors = profile.entity_sensors
            oids += [sensors.type_oid, sensors.scale_oid, sensors.precision_oid, sensors.value_oid,
                     sensors.status_oid, sensors.name_oid]
        walks = await self._walk("inputs", oids)
        readings = []
        for spec in profile.inputs:
            suffix = f".{spec.column.suffix}" if spec.column.suffix else ""
            for key in walks[spec.column.oid]:
                if not key.endswith(suffix):
                    continue
                row = key[:len(key) - len(suffix)]
                value = _scaled(self.name, spec.column, walks, row)
                if value is not None:
                    readings.append(SensorReading(spec.metric, value, {"input": spec.label.format(n=_last(row))}))
        if profile.entity_sensors:
            readings += _entity_readings(profile, walks)
        return readings

    async def read_telemetry(self) -> list[SensorReading]:
        """The outlet table as readings labelled ``outlet`` (the index), then the inputs (``read_inputs``)."""
        readings = []
        for outlet in await self.read_outlets():
            labels = {"outlet": str(outlet.index)}
            for metric, attribute in OUTLET_METRICS:
                if (value := getattr(outlet, attribute)) is not None:
                    readings.append(SensorReading(metric, value, labels))
            if outlet.state in OUTLET_ON:
                readings.append(SensorReading(Metric.OUTLET_ON, OUTLET_ON[outlet.state], labels))
        return readings + await self.read_inputs()

    async def _walk(self, table: str, columns: list[str]) -> dict[str, dict[str, Value]]:
        """walk_many, expecting as many rows as the table had last time."""
        walks = await self.client.walk_many(columns, rows_hint=self._rows.get(table))
        if most := max((len(rows) for rows in walks.values()), default=0):
            self._rows[table] = most
        return walks

    def _metered(self, column: Column | None, walks: dict[str, dict[str, Value]], row: str) -> float | None:
        return _scaled(self.name, column, walks, row) if column else None

    async def _profile(self) -> PduProfile:
        if self.profile is None:
            await self.identify()
        return self.profile


def _entity_readings(profile: PduProfile, walks: dict[str, dict[str, Value]]) -> list[SensorReading]:
    """ENTITY-SENSOR-MIB rows of a type we know, operating ok: value * 10^(3*(scale-9)) / 10^precision."""
    sensors = profile.entity_sensors
    readings = []
    for row, kind in walks[sensors.type_oid].items():
        metric = sensors.metrics.get(kind)
        value, scale = walks[sensors.value_oid].get(row), walks[sensors.scale_oid].get(row)
        precision = walks[sensors.precision_oid].get(row, 0)
        if (metric is None or walks[sensors.status_oid].get(row) != ENTITY_SENSOR_OK
                or not all(isinstance(v, int) for v in (value, scale, precision))):
            continue
        exponent = 3 * (scale - 9) - precision  # EntitySensorDataScale units(9) = 10^0
        number = value / 10**-exponent if exponent < 0 else float(value * 10**exponent)
        label = _text(walks[sensors.name_oid].get(row)) or row
        readings.append(SensorReading(metric, number, {"input": label}))
    return readings


# ------------------------------------------------------------------------------------ switch placement
def _port_id(subtype: Value | None, raw: Value | None, mac_subtype: int) -> str:
    if isinstance(raw, bytes) and subtype == mac_subtype and len(raw) == 6:
        return _mac(raw)
    if isinstance(raw, bytes) and not all(32 <= b < 127 for b in raw):
        return _mac(raw)  # binary id of another subtype (e.g. networkAddress): show it as hex octets
    return _text(raw) or ""


async def read_lldp_neighbors(client: SnmpClient) -> list[LldpNeighbor]:
    """The LLDP remote table: who the switch hears on which of its ports."""
    walks = await client.walk_many([
        LLDP_REM_CHASSIS_ID_SUBTYPE, LLDP_REM_CHASSIS_ID, LLDP_REM_PORT_ID_SUBTYPE, LLDP_REM_PORT_ID,
        LLDP_REM_PORT_DESC, LLDP_REM_SYS_NAME, LLDP_LOC_PORT_ID])
    neighbors = []
    for row, chassis in walks[LLDP_REM_CHASSIS_ID].items():
        local_num = row.split(".")[1]  # index: lldpRemTimeMark.lldpRemLocalPortNum.lldpRemIndex
        neighbors.append(LldpNeighbor(
            local_port=_text(walks[LLDP_LOC_PORT_ID].get(local_num)) or local_num,
            chassis_id=_port_id(walks[LLDP_REM_CHASSIS_ID_SUBTYPE].get(row), chassis, LLDP_CHASSIS_MAC),
            port_id=_port_id(walks[LLDP_REM_PORT_ID_SUBTYPE].get(row), walks[LLDP_REM_PORT_ID].get(row),
                             LLDP_PORT_MAC),
            port_description=_text(walks[LLDP_REM_PORT_DESC].get(row)),
            system_name=_text(walks[LLDP_REM_SYS_NAME].get(row)),
        ))
    return neighbors


async def read_fdb(client: SnmpClient) -> list[FdbEntry]:
    """MACs learnt per switch port: Q-BRIDGE-MIB where the switch fills it, else BRIDGE-MIB."""
    walks = await client.walk_many([DOT1Q_TP_FDB_PORT, DOT1Q_TP_FDB_STATUS, DOT1D_BASE_PORT_IF_INDEX, IF_NAME])
    ports, statuses, vlan_indexed = walks[DOT1Q_TP_FDB_PORT], walks[DOT1Q_TP_FDB_STATUS], True
    if not ports:
        dot1d = await client.walk_many([DOT1D_TP_FDB_PORT, DOT1D_TP_FDB_STATUS])
        ports, statuses, vlan_indexed = dot1d[DOT1D_TP_FDB_PORT], dot1d[DOT1D_TP_FDB_STATUS], False
    entries = []
    for row, bridge_port in ports.items():
        if statuses.get(row) in FDB_IGNORED_STATUSES:
            continue
        parts = [int(p) for p in row.split(".")]
        vlan, octets = (parts[0], parts[1:]) if vlan_indexed else (None, parts)
        if len(octets) != 6:
            raise MalformedReply(client.target.name, "FDB index is not a MAC address", field=row)
        if_index = walks[DOT1D_BASE_PORT_IF_INDEX].get(str(bridge_port))
        entries.append(FdbEntry(
            mac=_mac(bytes(octets)),
            port=_text(walks[IF_NAME].get(str(if_index))) if if_index is not None else None,
            vlan=vlan,
        ))
    return entries

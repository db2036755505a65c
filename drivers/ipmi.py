"""IPMI-over-LAN driver on pyghmi: power, boot device, FRU inventory, SDR sensors, DCMI power.

pyghmi is blocking; the daemon calls an ``IpmiDriver`` on its IPMI thread pool (``ipmi_blocking``). pyghmi keeps
the RMCP+ session (login, integrity, encryption, retries); the commands themselves are sent with
``xraw_command`` so that every failure arrives with its IPMI completion code, which we map through the
tables below instead of reading pyghmi's messages.

Security policy: only RMCP+ (IPMI 2.0) with HMAC integrity and AES confidentiality (cipher suite 3 or
17). Before login we ask the BMC what it offers (Get Channel Authentication Capabilities, no session) and
refuse an IPMI 1.5-only channel; after login we check what pyghmi actually negotiated, because pyghmi falls
back silently and exposes no public API for it.

``timeout`` bounds our own exchanges (the pre-login capability check). Commands inside a session are bound
by pyghmi's retry schedule (a few seconds to about 20 s when a BMC vanishes mid-session); pyghmi offers no
per-call deadline, so the daemon bounds the whole thread hop as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyghmi.constants as pyghmi_const
import pyghmi.exceptions as pyghmi_exc
import structlog
from pyghmi.ipmi.command import Command
from pyghmi.ipmi.private import session as pyghmi_session
from pyghmi.ipmi.sdr import SensorReading as PyghmiReading

from drivers.base import (
    AuthFailed,
    BmcUnreachable,
    BootDevice,
    BootMode,
    Credentials,
    DriverError,
    Health,
    InsecureRefused,
    MalformedReply,
    Metric,
    PowerAction,
    PowerState,
    ProbeResult,
    SensorReading,
    SystemInventory,
    Timeout,
    Unsupported,
)

log = structlog.get_logger(__name__)

# pyghmi guards its session tables with two module locks and takes them in both orders: awaitresponse
# holds WAITING_SESSIONS while a timed-out session resends (send_payload takes KEEPALIVE_SESSIONS), and
# send_payload holds KEEPALIVE_SESSIONS while _xmit_packet takes WAITING_SESSIONS. With several threads
# driving sessions they deadlock (seen in bench/: all 16 workers stuck, 2,000 BMCs). One re-entrant lock
# for both cannot be taken in two orders; pyghmi looks the names up at each use.
pyghmi_session.WAITING_SESSIONS = pyghmi_session.KEEPALIVE_SESSIONS


def _receive_without_waiting(sock: socket.socket, size: int) -> tuple[bytes, Any] | None:
    """pyghmi's IO thread reads its shared sockets with ``setblocking(0)`` then ``recvfrom``, while a worker
    thread sending on the same socket calls ``setblocking(1)`` first: between the two, the IO thread's read
    blocks until a packet comes to that socket, and meanwhile no other socket is read and no waiter is woken
    at its deadline: every worker waits for ever (bench/, cycle 2 over 2,000 BMCs: the IO thread in
    ``_io_recvfrom``, the workers in ``_io_wait`` past their deadlines). MSG_DONTWAIT does not depend on the
    socket's mode, and the mode is left alone."""
    try:
        return sock.recvfrom(size, socket.MSG_DONTWAIT)
    except OSError:  # nothing waiting (BlockingIOError), or an ICMP error queued on the socket
        return None


pyghmi_session._io_recvfrom = _receive_without_waiting

# BMCs drop a session that has been idle for a while (ipmi_sim: 30 s; many real BMCs: 60 s). pyghmi keeps
# sessions alive only from Session.wait_for_rsp, which runs while some thread is logging in, and then from that
# thread. A command on a session the BMC has dropped costs about 20 s: pyghmi retries for ~9 s, logs in again,
# and its RAKP4 handler then waits in _cmdwait until the deadline of the very command it is serving
# (session.py:1675 -> 1075 -> 822 -> 776). Every worker stalled so makes the other sessions older: bench/ hung in
# its second cycle over 2,000 BMCs that way. So a session idle this long is replaced by a fresh login
# (a few ms), and pyghmi's keepalive, sent by whichever thread is logging in, is turned off for ours.
_SESSION_IDLE_MAX = 20.0

# ------------------------------------------------------------------------------------------ tables
NETFN_CHASSIS, NETFN_APP, NETFN_STORAGE, NETFN_DCMI = 0x00, 0x06, 0x0A, 0x2C

# Chassis Control (IPMI 2.0 section 28.3) data byte per action.
_CHASSIS_CONTROL = {
    PowerAction.OFF: 0x00,       # power down, immediate
    PowerAction.ON: 0x01,        # power up
    PowerAction.CYCLE: 0x02,     # power cycle: off, at least 1 s, on
    PowerAction.SOFT_OFF: 0x05,  # soft shutdown via ACPI
}

# Set System Boot Options parameter 5 (boot flags): device selector in data byte 2.
_BOOT_DEVICES = {
    BootDevice.PXE: 0x04,
    BootDevice.DISK: 0x08,
    BootDevice.CD: 0x14,
    BootDevice.BIOS: 0x18,
}
_BOOT_FLAGS_VALID = 0x80  # persistent bit (0x40) left clear: next boot only
_BOOT_MODE_FLAGS = {None: 0x00, BootMode.LEGACY: 0x00, BootMode.UEFI: 0x20}

# Completion codes (IPMI 2.0 table 5-2) in our terms; any other non-zero code is a MalformedReply.
_COMPLETION_CODES: dict[int, type[DriverError]] = {
    0xC1: Unsupported,  # invalid command
    0xC3: Timeout,      # timeout while processing the command
    0xCB: Unsupported,  # requested sensor, data or record not present
    0xCC: Unsupported,  # invalid data field (e.g. a boot device the BMC does not know)
    0xD4: AuthFailed,   # insufficient privilege level
    0xD5: Unsupported,  # not supported in present state
    0xD6: Unsupported,  # sub-function disabled or unavailable
    0xFFFF: Timeout,    # not IPMI: pyghmi's code for "no reply after all retries"
}

# pyghmi reports login failures as text only (IpmiException.ipmicode is 0); _login_error is the one place
# that reads them. Anything else is treated as the BMC not letting us in at all.
_LOGIN_FAILURES: dict[str, type[DriverError]] = {
    "Incorrect password provided": AuthFailed,  # RAKP 2 HMAC does not match: wrong password
    "Unauthorized name in RAKP2": AuthFailed,   # RMCP+ status 0x0D: unknown user
    "timeout": Timeout,
}

# What pyghmi negotiated, read from its session internals (pyghmi/ipmi/private/session.py).
_AUTHTYPE_RMCP_PLUS = 6  # 2 = MD5 and 0 = none are IPMI 1.5
_SUITE_BY_PYGHMI_INTEGRITY = {1: 3, 256: 17}  # pyghmi's marker: HMAC-SHA1-96 -> 3, HMAC-SHA256-128 -> 17

# SDR sensor (type, unit) -> metric and the label that names the sensor. Other sensors are not reported.
_SENSOR_METRICS: dict[tuple[str, str], tuple[Metric, str]] = {
    ("Temperature", "°C"): (Metric.TEMPERATURE_CELSIUS, "sensor"),
    ("Fan", "RPM"): (Metric.FAN_SPEED_RPM, "fan"),
    ("Fan", "%"): (Metric.FAN_SPEED_PERCENT, "fan"),
}
# Inlet sensors are recognised by name: vendors disagree on the entity id (Dell: system board).
_INLET_NAME_HINTS = ("inlet", "ambient")
# pyghmi health bits, worst first.
_HEALTH = (
    (pyghmi_const.Health.Failed | pyghmi_const.Health.Critical, Health.CRITICAL),
    (pyghmi_const.Health.Warning, Health.WARNING),
)

# FRU areas (Platform Management FRU Information Storage Definition 1.0): header bytes before the first
# field, and the fields in order. Language code 0 or 25 means English (8-bit Latin-1 text).
_FRU_CHASSIS = ("chassis", 3, ("part_number", "serial"))
_FRU_BOARD = ("board", 6, ("manufacturer", "product", "serial", "part_number"))
_FRU_PRODUCT = ("product", 3, ("manufacturer", "name", "part_number", "version", "serial", "asset_tag"))
_FRU_END = 0xC1
_FRU_ENGLISH = (0, 25)

# ipmi_sim 2.0.33 answers at most 34 data bytes per Read FRU Data; larger requests get 0xC8.
_FRU_CHUNK = 32
_FRU_MIN_CHUNK = 8
_FRU_TOO_LARGE = (0xC8, 0xC9, 0xCA)  # request too long / parameter out of range / cannot return that many

_PROBE_RETRANSMIT = 0.5


# ------------------------------------------------------------------------------------------- driver
class IpmiDriver:
    """One BMC over IPMI LAN (RMCP+). Implements PowerControl, BootControl, InventoryReader, SensorReader.

    Blocking: call it from a worker thread, never on the event loop (login runs the capability check on a
    loop of its own). It logs in on first use and again after its session broke or was closed.
    """

    def __init__(self, address: str, port: int, credentials: Credentials, *, timeout: float = 10.0) -> None:
        self.address = address
        self.port = port
        self.timeout = timeout
        self._target = f"{address}:{port}"
        if not credentials.username:
            raise InsecureRefused(self._target, "anonymous IPMI login (empty user name) refused")
        self._credentials = credentials
        self._command: Command | None = None
        self._used = 0.0  # time.monotonic() of the end of the last call on self._command
        self._lock = threading.Lock()
        self._log = log.bind(bmc=self._target)

    def __repr__(self) -> str:
        return f"IpmiDriver({self.address!r}, {self.port}, user={self._credentials.username!r})"

    def __enter__(self) -> IpmiDriver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Log out. pyghmi shares sessions per (BMC, user, password): another driver using the same one logs
        in again on its next call."""
        with self._lock:
            command, self._command = self._command, None
            if command is not None:
                _logout(command)

    # ---------------------------------------------------------------------------------- PowerControl
    def get_power_state(self) -> PowerState:
        with self._session("read power state") as command:
            return self._power_state(command)

    def request_power(self, action: PowerAction) -> None:
        with self._session(f"power {action}") as command:
            control = _CHASSIS_CONTROL[action]
            # A power cycle leaves a node that is off, off (IPMI 28.3; ipmi_sim alike); our CYCLE ends on.
            if action is PowerAction.CYCLE and self._power_state(command) is PowerState.OFF:
                control = _CHASSIS_CONTROL[PowerAction.ON]
            _raw(command, NETFN_CHASSIS, 0x02, (control,))

    # ----------------------------------------------------------------------------------- BootControl
    def set_boot_once(self, device: BootDevice, mode: BootMode | None = None) -> None:
        flags = _BOOT_FLAGS_VALID | _BOOT_MODE_FLAGS[mode]
        with self._session(f"set boot device {device}") as command:
            _raw(command, NETFN_CHASSIS, 0x08, (5, flags, _BOOT_DEVICES[device], 0, 0, 0))

    # ------------------------------------------------------------------------------- InventoryReader
    def read_inventory(self) -> SystemInventory:
        with self._session("read inventory") as command:
            fru = parse_fru(self._target, self._read_fru(command))
            chassis, board, product = fru["chassis"], fru["board"], fru["product"]
            return SystemInventory(
                serial=product.get("serial") or board.get("serial"),
                uuid=self._system_uuid(command),
                manufacturer=product.get("manufacturer") or board.get("manufacturer"),
                model=product.get("name") or board.get("product"),
                bmc_firmware=self._firmware_version(command),
                chassis_serial=chassis.get("serial"),
                power_state=self._power_state(command),
            )

    # ---------------------------------------------------------------------------------- SensorReader
    def read_sensors(self) -> list[SensorReading]:
        with self._session("read sensors") as command:
            try:
                readings = [r for r in map(_sensor_reading, command.get_sensor_data()) if r is not None]
            except (IndexError, KeyError, ValueError, struct.error) as exc:
                raise MalformedReply(self._target, f"SDR or sensor reading not decodable ({exc!r})") from exc
            watts = self._dcmi_power_watts(command)
            if watts is not None:
                readings.append(SensorReading(Metric.NODE_POWER_WATTS, watts))
            return readings

    # ------------------------------------------------------------------------------------- internals
    @contextlib.contextmanager
    def _session(self, what: str) -> Iterator[Command]:
        """The logged-in command object, with pyghmi's errors turned into ours on the way out."""
        with self._lock:
            try:
                command = self._login()
                try:
                    yield command
                finally:
                    self._used = time.monotonic()
                    _no_foreign_keepalive(command)  # a relogin inside pyghmi registers it again
            except pyghmi_exc.IpmiException as exc:
                raise _command_error(self._target, what, exc) from exc
            except OSError as exc:
                raise BmcUnreachable(self._target, f"{what}: {exc.strerror or exc!r}") from exc

    def _login(self) -> Command:
        if self._command is not None:
            if not self._command.ipmi_session.broken:
                if time.monotonic() - self._used < _SESSION_IDLE_MAX:
                    return self._command
                # Log out (no wait: pyghmi sends Close Session without retry) so that pyghmi forgets the session;
                # otherwise Command() below would hand back the same stale one from its session cache.
                _logout(self._command)
            self._command = None
        probe = asyncio.run(probe_ipmi(self.address, self.port, timeout=self.timeout))
        if probe is None:
            raise BmcUnreachable(self._target, f"no IPMI answer within {self.timeout:g}s")
        if probe.detail != "2.0":
            self._log.warning("ipmi login refused", reason="IPMI 1.5 only")
            raise InsecureRefused(self._target, "BMC offers IPMI 1.5 only; RMCP+ (IPMI 2.0) required")
        try:
            # Bytes, not str: with str credentials pyghmi's session cache never forgets a login in progress
            # and a second Command() for the same BMC hangs.
            command = Command(bmc=self.address, port=self.port,
                              userid=self._credentials.username.encode(),
                              password=self._credentials.password.reveal().encode())
        except pyghmi_exc.IpmiException as exc:
            raise _login_error(self._target, exc) from exc
        try:
            suite = check_negotiated_session(command.ipmi_session, self._target)
        except InsecureRefused as exc:
            self._log.warning("ipmi login refused", reason=exc.message)
            _logout(command)
            raise
        self._log.debug("ipmi session established", cipher_suite=suite)
        self._command = command
        return command

    def _power_state(self, command: Command) -> PowerState:
        data = _raw(command, NETFN_CHASSIS, 0x01)  # Get Chassis Status
        if not data:
            raise MalformedReply(self._target, "empty Get Chassis Status reply", field="current power state")
        return PowerState.ON if data[0] & 0x01 else PowerState.OFF

    def _read_fru(self, command: Command) -> bytes:
        """FRU device 0, or b"" when the BMC has none."""
        try:
            info = _raw(command, NETFN_STORAGE, 0x10, (0,))  # Get FRU Inventory Area Info
        except pyghmi_exc.IpmiException as exc:
            if _COMPLETION_CODES.get(exc.ipmicode) is Unsupported:
                return b""
            raise
        if len(info) < 3:
            raise MalformedReply(self._target, "short Get FRU Inventory Area Info reply", field="FRU size")
        if info[2] & 0x01:
            raise Unsupported(self._target, "word-addressed FRU devices are not supported")

        def read(offset: int, count: int) -> bytes:
            data = _raw(command, NETFN_STORAGE, 0x11, (0, offset & 0xFF, offset >> 8, count))
            if not data or len(data) < 1 + data[0]:
                raise MalformedReply(self._target, "short Read FRU Data reply", field="FRU data")
            return data[1:1 + data[0]]

        return read_fru_chunked(read, int.from_bytes(info[0:2], "little"))

    def _system_uuid(self, command: Command) -> str | None:
        try:
            data = _raw(command, NETFN_APP, 0x37)  # Get System GUID
        except pyghmi_exc.IpmiException as exc:
            if _COMPLETION_CODES.get(exc.ipmicode) is Unsupported:
                return None
            raise
        if len(data) != 16:
            raise MalformedReply(self._target, f"system GUID of {len(data)} bytes", field="GUID")
        return str(uuid.UUID(bytes_le=data))  # the first three fields are little-endian on the wire (SMBIOS)

    def _firmware_version(self, command: Command) -> str | None:
        data = _raw(command, NETFN_APP, 0x01)  # Get Device ID
        if len(data) < 4:
            raise MalformedReply(self._target, "short Get Device ID reply", field="firmware revision")
        return f"{data[2] & 0x7F}.{data[3]:02x}"  # major binary, minor BCD, as ipmitool prints it

    def _dcmi_power_watts(self, command: Command) -> float | None:
        """DCMI Get Power Reading; None where the BMC has no DCMI or no active measurement."""
        try:
            data = _raw(command, NETFN_DCMI, 0x02, (0xDC, 0x01, 0x00, 0x00))
        except pyghmi_exc.IpmiException as exc:
            if _COMPLETION_CODES.get(exc.ipmicode) is Unsupported:
                return None
            raise
        if len(data) < 18 or data[0] != 0xDC:
            raise MalformedReply(self._target, "short or foreign DCMI power reading", field="current power")
        if not data[17] & 0x40:  # power measurement not active
            return None
        return float(int.from_bytes(data[1:3], "little"))


def _raw(command: Command, netfn: int, cmd: int, data: tuple[int, ...] = ()) -> bytes:
    return bytes(command.xraw_command(netfn=netfn, command=cmd, data=data)["data"])


def _no_foreign_keepalive(command: Command) -> None:
    """Take the session out of pyghmi's keepalive table. pyghmi sends those keepalives from whichever thread
    runs its event loop (a login), on sessions other threads own; one whose reply that thread does not read
    leaves the session "in command" for up to ~20 s, and our next call on it waits that out in _cmdwait.
    We never leave a session idle long enough to need one (_SESSION_IDLE_MAX)."""
    with pyghmi_session.KEEPALIVE_SESSIONS:
        pyghmi_session.Session.keepalive_sessions.pop(command.ipmi_session, None)


def _logout(command: Command) -> None:
    with contextlib.suppress(pyghmi_exc.IpmiException, OSError):  # best effort: the BMC may be gone
        command.ipmi_session.logout()


def _command_error(target: str, what: str, exc: pyghmi_exc.IpmiException) -> DriverError:
    if not exc.ipmicode:  # pyghmi raises code-less only when the session stopped answering
        return Timeout(target, f"{what}: no reply from the BMC")
    kind = _COMPLETION_CODES.get(exc.ipmicode, MalformedReply)
    return kind(target, f"{what}: completion code 0x{exc.ipmicode:02X} ({exc})")


def _login_error(target: str, exc: pyghmi_exc.IpmiException) -> DriverError:
    kind = _LOGIN_FAILURES.get(str(exc), BmcUnreachable)
    if kind is AuthFailed:
        return AuthFailed(target, "login refused: wrong user name or password")
    return kind(target, f"login failed: {exc}")


def check_negotiated_session(session: Any, target: str) -> int:
    """The cipher suite of an established pyghmi session; InsecureRefused unless it is RMCP+ with HMAC
    integrity and AES confidentiality (suite 3 or 17)."""
    if session.ipmiversion != 2.0 or session.authtype != _AUTHTYPE_RMCP_PLUS:
        raise InsecureRefused(target, f"IPMI {session.ipmiversion} session with authentication type "
                                      f"{session.authtype} refused; RMCP+ required")
    suite = _SUITE_BY_PYGHMI_INTEGRITY.get(session.integrityalgo)
    if suite is None or session.confalgo != "aes":
        raise InsecureRefused(target, "RMCP+ session without HMAC integrity and AES confidentiality "
                                      "(cipher suite 0-2 or similar) refused")
    return suite


def _sensor_reading(reading: PyghmiReading) -> SensorReading | None:
    """One pyghmi SensorReading in our terms; None for sensors we have no metric for or without a value."""
    mapping = _SENSOR_METRICS.get((reading.type, (reading.units or "").strip()))
    if mapping is None or reading.value is None or reading.unavailable:
        return None
    metric, label = mapping
    if metric is Metric.TEMPERATURE_CELSIUS and any(h in reading.name.lower() for h in _INLET_NAME_HINTS):
        metric = Metric.INLET_TEMPERATURE_CELSIUS
    health = next((ours for bits, ours in _HEALTH if reading.health & bits), Health.OK)
    return SensorReading(metric, float(reading.value), {label: reading.name}, health)


# ---------------------------------------------------------------------------------------------- FRU
def read_fru_chunked(read: Callable[[int, int], bytes], size: int) -> bytes:
    """Workaround for BMCs that cap Read FRU Data (ipmi_sim 2.0.33: 34 bytes, then cc 0xC8).

    pyghmi's own FRU reader asks for up to 224 bytes and backs off on 0xC9/0xCA only, so ``get_inventory``
    fails on such a BMC before it yields anything. This reads in chunks of at most 32 bytes and halves the
    chunk on 0xC8/0xC9/0xCA, as ipmitool does. ``read(offset, count)`` returns the bytes the BMC sent.
    """
    image = bytearray()
    chunk = _FRU_CHUNK
    while len(image) < size:
        try:
            data = read(len(image), min(chunk, size - len(image)))
        except pyghmi_exc.IpmiException as exc:
            if exc.ipmicode not in _FRU_TOO_LARGE or chunk <= _FRU_MIN_CHUNK:
                raise
            chunk //= 2
            continue
        if not data:
            break
        image += data
    return bytes(image)


def parse_fru(target: str, image: bytes) -> dict[str, dict[str, str | None]]:
    """The chassis, board and product areas of a FRU image (each {} where absent)."""
    areas: dict[str, dict[str, str | None]] = {"chassis": {}, "board": {}, "product": {}}
    if not image:
        return areas
    header = image[:8]
    if len(header) < 8 or header[0] & 0x0F != 1 or sum(header) & 0xFF:
        raise MalformedReply(target, "FRU common header invalid (version or checksum)", field="FRU header")
    for (name, fixed, fields), offset in zip((_FRU_CHASSIS, _FRU_BOARD, _FRU_PRODUCT), header[2:5]):
        if offset:
            areas[name] = _fru_area(target, image, name, 8 * offset, fixed, fields)
    return areas


def _fru_area(target: str, image: bytes, name: str, start: int, fixed: int,
              fields: tuple[str, ...]) -> dict[str, str | None]:
    area = image[start:start + 8 * image[start + 1]] if start + 1 < len(image) else b""
    if not area or len(area) != 8 * area[1] or sum(area) & 0xFF:
        raise MalformedReply(target, f"FRU {name} area truncated or checksum wrong", field=f"FRU {name} area")
    english = name == "chassis" or area[2] in _FRU_ENGLISH
    values: dict[str, str | None] = {}
    pos = fixed
    for field_name in fields:
        if pos >= len(area) or area[pos] == _FRU_END:
            break
        kind, length = area[pos] >> 6, area[pos] & 0x3F
        raw = area[pos + 1:pos + 1 + length]
        if len(raw) != length:
            raise MalformedReply(target, f"FRU {name} field overruns its area", field=f"FRU {name} {field_name}")
        values[field_name] = _fru_text(kind, raw, english)
        pos += 1 + length
    return values


def _fru_text(kind: int, raw: bytes, english: bool) -> str | None:
    """Decode one FRU type/length field; None when empty."""
    if kind == 3:  # 8-bit Latin-1 in English, else UCS-2
        text = raw.decode("latin-1" if english else "utf-16-le", errors="replace")
    elif kind == 2:  # packed 6-bit ASCII, least significant bits first
        bits = int.from_bytes(raw, "little")
        text = "".join(chr(0x20 + (bits >> (6 * i) & 0x3F)) for i in range(len(raw) * 8 // 6))
    elif kind == 1:  # BCD plus
        text = "".join("0123456789 -.???"[nibble] for b in raw for nibble in (b >> 4, b & 0x0F))
    else:  # binary
        text = raw.hex()
    return text.strip(" \x00") or None


# -------------------------------------------------------------------------------------------- probe
def _checksum(data: bytes) -> int:
    return -sum(data) & 0xFF


def _sessionless_request(netfn: int, cmd: int, data: tuple[int, ...], seq: int) -> bytes:
    """An IPMI 1.5 LAN message outside any session (authentication type none), for the BMC at 0x20."""
    header = bytes((0x20, netfn << 2))
    body = bytes((0x81, seq << 2, cmd, *data))  # remote console software id 0x81
    message = header + bytes((_checksum(header),)) + body + bytes((_checksum(body),))
    rmcp = bytes((0x06, 0x00, 0xFF, 0x07))  # RMCP 1.0, no ACK, class IPMI
    return rmcp + bytes(9) + bytes((len(message),)) + message  # auth type, sequence, session id all 0


def _sessionless_reply(packet: bytes, netfn: int, cmd: int, seq: int) -> tuple[int, bytes] | None:
    """(completion code, data) if ``packet`` answers that request, else None."""
    if len(packet) < 14 or packet[0] != 0x06 or packet[3] & 0x1F != 0x07 or packet[4] != 0:
        return None
    message = packet[14:14 + packet[13]]
    if (len(message) < 8 or len(message) != packet[13] or sum(message[:3]) & 0xFF or sum(message[3:]) & 0xFF
            or message[1] >> 2 != netfn + 1 or message[5] != cmd or message[4] >> 2 != seq):
        return None
    return message[6], message[7:-1]


class _Replies(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)


async def _ask(transport: asyncio.DatagramTransport, replies: _Replies, netfn: int, cmd: int,
               data: tuple[int, ...], seq: int) -> tuple[int, bytes]:
    request = _sessionless_request(netfn, cmd, data, seq)
    transport.sendto(request)
    while True:
        try:
            item = await asyncio.wait_for(replies.queue.get(), _PROBE_RETRANSMIT)
        except TimeoutError:
            transport.sendto(request)
            continue
        if isinstance(item, Exception):
            raise item
        if (answer := _sessionless_reply(item, netfn, cmd, seq)) is not None:
            return answer


async def probe_ipmi(address: str, port: int = 623, *, timeout: float) -> ProbeResult | None:
    """Ask for the channel's authentication capabilities (no session); detail "2.0" if it offers RMCP+,
    "1.5" otherwise. None when nothing IPMI answers within ``timeout``."""
    loop = asyncio.get_running_loop()
    try:
        transport, replies = await loop.create_datagram_endpoint(_Replies, remote_addr=(address, port))
    except OSError:
        return None
    try:
        async with asyncio.timeout(timeout):
            # Get Channel Authentication Capabilities for this channel at admin level, first asking for
            # the IPMI 2.0 extended data; some IPMI 1.5 BMCs reject that bit with 0xCC.
            for seq, channel in enumerate((0x8E, 0x0E), start=1):
                code, data = await _ask(transport, replies, NETFN_APP, 0x38, (channel, 0x04), seq)
                if code != 0xCC:
                    break
    except (TimeoutError, OSError):
        return None
    finally:
        transport.close()
    if code != 0 or len(data) < 4:
        return None
    ipmi20 = bool(data[1] & 0x80 and data[3] & 0x02)
    return ProbeResult(address=address, protocol="ipmi", port=port, detail="2.0" if ipmi20 else "1.5")

"""Redfish driver on sushy: power, one-time boot and inventory of the server behind one BMC.

Blocking (the daemon calls it through one ``asyncio.to_thread`` hop); one call at a time per driver.
sushy keeps one session per BMC (SessionService where the tree has one, HTTP basic auth where not);
``close()`` logs it out. Power and boot actions go through sushy's System resource. Inventory is read as
JSON through sushy's connector, one member at a time, and parsed here: sushy's resource classes fail whole
collections on the trees real BMCs serve. Every raw reply stays inside this module.

TLS is never silently off: a ``TlsPolicy`` verifies the BMC against a CA bundle or a pinned SHA-256
fingerprint of its leaf certificate; plain HTTP is for the lab only.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import requests
import structlog
import sushy
from requests.adapters import HTTPAdapter
from sushy import exceptions as sushy_exc

from drivers.base import (
    AuthFailed, BmcUnreachable, BootDevice, BootMode, Credentials, Drive, DriverError, MalformedReply,
    MemoryModule, NetworkInterface, OutletReading, OutletState, PowerAction, PowerState, ProbeResult, Processor,
    SystemInventory, Timeout, TlsMismatch, Unsupported,
)
from drivers.profiles.redfish_quirks import LINK_FIXUPS, chassis_without_chassis_type

log = structlog.get_logger(__name__)

# ------------------------------------------------------------------------------------------- tables
POWER_STATES: dict[str, PowerState] = {
    "On": PowerState.ON,
    "Off": PowerState.OFF,
    "PoweringOn": PowerState.POWERING_ON,
    "PoweringOff": PowerState.POWERING_OFF,
    "Paused": PowerState.ON,  # powered, execution suspended
}

RESET_TYPES: dict[PowerAction, tuple[sushy.ResetType, ...]] = {  # the first the BMC allows is used
    PowerAction.ON: (sushy.ResetType.ON,),
    PowerAction.OFF: (sushy.ResetType.FORCE_OFF,),
    PowerAction.SOFT_OFF: (sushy.ResetType.GRACEFUL_SHUTDOWN,),
    PowerAction.CYCLE: (sushy.ResetType.POWER_CYCLE, sushy.ResetType.FORCE_RESTART),
}

OUTLET_POWER_STATES: dict[OutletState, str] = {OutletState.ON: "On", OutletState.OFF: "Off"}

BOOT_SOURCES: dict[BootDevice, sushy.BootSource] = {
    BootDevice.PXE: sushy.BootSource.PXE,
    BootDevice.DISK: sushy.BootSource.HDD,
    BootDevice.CD: sushy.BootSource.CD,
    BootDevice.BIOS: sushy.BootSource.BIOS_SETUP,
}

BOOT_MODES: dict[BootMode, sushy.BootSourceOverrideMode] = {
    BootMode.UEFI: sushy.BootSourceOverrideMode.UEFI,
    BootMode.LEGACY: sushy.BootSourceOverrideMode.LEGACY,
}

# requests' transport failures in our terms; first match wins (SSLError and ConnectTimeout are also
# ConnectionErrors). SSL errors are TlsMismatch, handled apart because they carry fingerprints.
TRANSPORT_ERRORS: tuple[tuple[type[Exception], type[DriverError], str], ...] = (
    (requests.exceptions.ConnectTimeout, BmcUnreachable, "no answer to the connection within {timeout}s"),
    (requests.exceptions.ReadTimeout, Timeout, "no reply within {timeout}s"),
    (requests.exceptions.ChunkedEncodingError, MalformedReply, "reply cut short"),
    (requests.exceptions.ConnectionError, BmcUnreachable, "connection refused or reset"),
)

ABSENT = "Absent"  # Status.State of an empty socket, slot or bay
_MAC = re.compile(r"^[0-9a-f]{12}$")


# ---------------------------------------------------------------------------------------------- TLS
@dataclass(frozen=True)
class TlsPolicy:
    """How to trust a BMC: exactly one of a CA bundle, a pinned certificate fingerprint, or plain HTTP (lab).

    ``pinned_sha256`` is the SHA-256 of the leaf certificate (DER), hex, colons optional; with a pin the
    chain and host name are not checked, the fingerprint is (what ``fetch_certificate_sha256`` enrols).
    """

    ca_bundle: Path | None = None
    pinned_sha256: str | None = None
    insecure_http: bool = False

    def __post_init__(self) -> None:
        if sum((self.ca_bundle is not None, self.pinned_sha256 is not None, self.insecure_http)) != 1:
            raise ValueError("TlsPolicy needs exactly one of ca_bundle, pinned_sha256, insecure_http")
        if self.pinned_sha256 is not None:
            pin = self.pinned_sha256.replace(":", "").lower()
            if not re.fullmatch(r"[0-9a-f]{64}", pin):
                raise ValueError("pinned_sha256 must be 64 hex digits (SHA-256)")
            object.__setattr__(self, "pinned_sha256", pin)


class _PinnedAdapter(HTTPAdapter):
    """Accepts the server by its leaf certificate's SHA-256 alone (urllib3's ``assert_fingerprint``).

    urllib3 checks the fingerprint right after the handshake, before the request (and any credentials) is sent.
    """

    def __init__(self, sha256: str) -> None:
        self._sha256 = sha256
        super().__init__()

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, False, cert)
        pool_kwargs["assert_fingerprint"] = self._sha256
        return host_params, pool_kwargs

    def cert_verify(self, conn, url, verify, cert):
        super().cert_verify(conn, url, False, cert)  # the fingerprint replaces chain and name checks


class _Connector(sushy.connector.Connector):
    """sushy's connector with our TLS policy, trying each request once (the daemon retries)."""

    def __init__(self, url: str, tls: TlsPolicy, timeout: float) -> None:
        # server_side_retries=1 means one attempt on transport errors; sushy still re-sends, at once, a GET
        # answered with a 5xx.
        super().__init__(url, verify=str(tls.ca_bundle) if tls.ca_bundle else True, server_side_retries=1,
                         server_side_retries_delay=0, default_request_timeout=timeout, connect_timeout=timeout)
        if tls.pinned_sha256:
            self._session.mount("https://", _PinnedAdapter(tls.pinned_sha256))


class _NoPublicFetch:
    """sushy fetches message registries from URLs the BMC names; we never let a BMC send us elsewhere."""

    def get(self, *args: object, **kwargs: object) -> None:
        raise sushy_exc.ConnectionError(url="(outside the BMC)", error="fetching outside the BMC is disabled")


def fetch_certificate_sha256(address: str, port: int, timeout: float) -> str:
    """SHA-256 (hex) of the certificate the service at ``address:port`` presents, for trust on first use.

    Deliberately unverified: this is how a certificate becomes trusted. The caller stores the result and
    pins it (``TlsPolicy(pinned_sha256=...)``); nothing is sent over this connection.
    """
    target = f"{address}:{port}"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=address) as tls:
                der = tls.getpeercert(binary_form=True)
    except TimeoutError as exc:
        raise Timeout(target, f"no TLS handshake within {timeout}s") from exc
    except ssl.SSLError as exc:
        raise TlsMismatch(target, "TLS handshake failed") from exc
    except OSError as exc:
        raise BmcUnreachable(target, "connection refused or reset") from exc
    return hashlib.sha256(der).hexdigest()


# ------------------------------------------------------------------------------------------- parsing
class _Reply:
    """One JSON reply read field by field: absent or empty is None; a wrong type names field and BMC."""

    def __init__(self, data: object, path: str, target: str) -> None:
        if not isinstance(data, dict):
            raise MalformedReply(target, f"{path} is not a JSON object")
        self.data, self.path, self.target = data, path, target

    def _value(self, keys: tuple[str, ...], kind: type | tuple[type, ...]) -> Any:
        value: Any = self.data
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None or value == "":
            return None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise MalformedReply(self.target, f"{self.path}: expected {getattr(kind, '__name__', 'a number')}",
                                 field="/".join(keys))
        return value

    def text(self, *keys: str) -> str | None:
        value = self._value(keys, str)
        return (value.strip() or None) if value is not None else None

    def integer(self, *keys: str) -> int | None:
        value = self._value(keys, (int, float))
        return int(value) if value is not None else None

    def number(self, *keys: str) -> float | None:
        value = self._value(keys, (int, float))
        return float(value) if value is not None else None

    def items(self, *keys: str) -> list[Any]:
        return self._value(keys, list) or []

    def link(self, *keys: str) -> str | None:
        return self.text(*keys, "@odata.id")

    def links(self, *keys: str) -> list[str]:
        """The ``@odata.id`` of each entry in a list of references (Members, Links/Chassis, Drives)."""
        found: list[str] = []
        for entry in self.items(*keys):
            link = entry.get("@odata.id") if isinstance(entry, dict) else None
            if not isinstance(link, str):
                raise MalformedReply(self.target, f"{self.path}: entry without @odata.id", field="/".join(keys))
            found.append(link)
        return found

    def absent(self) -> bool:
        return self.text("Status", "State") == ABSENT

    def power_state(self) -> PowerState | None:
        value = self.text("PowerState")
        if value is not None and value not in POWER_STATES:
            raise MalformedReply(self.target, f"{self.path}: unknown PowerState {value!r}", field="PowerState")
        return POWER_STATES.get(value) if value else None

    def mac(self) -> str | None:
        value = self.text("MACAddress") or self.text("PermanentMACAddress")
        if value is None:
            return None
        digits = re.sub(r"[:\-.]", "", value).lower()
        if not _MAC.match(digits):
            raise MalformedReply(self.target, f"{self.path}: not a MAC address", field="MACAddress")
        return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def _fix_link(link: str) -> str:
    for fixup in LINK_FIXUPS:
        link = fixup(link)
    return link


def _processor(r: _Reply) -> Processor | None:
    if r.absent() or r.text("ProcessorType") not in (None, "CPU"):  # FPGAs, GPUs are not sockets
        return None
    return Processor(socket=r.text("Socket") or r.text("Id") or r.path, model=r.text("Model"),
                     manufacturer=r.text("Manufacturer"), cores=r.integer("TotalCores"),
                     threads=r.integer("TotalThreads"))


def _memory(r: _Reply) -> MemoryModule | None:
    if r.absent():
        return None
    return MemoryModule(slot=r.text("DeviceLocator") or r.text("Id") or r.path, size_mib=r.integer("CapacityMiB"),
                        part_number=r.text("PartNumber"), serial=r.text("SerialNumber"),
                        manufacturer=r.text("Manufacturer"), speed_mhz=r.integer("OperatingSpeedMhz"))


def _nic(r: _Reply) -> NetworkInterface:
    return NetworkInterface(name=r.text("Id") or r.text("Name") or r.path, mac=r.mac(),
                            speed_mbps=r.integer("SpeedMbps"))


def _drive(r: _Reply) -> Drive | None:
    if r.absent():
        return None
    return Drive(name=r.text("Name") or r.text("Id") or r.path, model=r.text("Model"), serial=r.text("SerialNumber"),
                 capacity_bytes=r.integer("CapacityBytes"), media_type=r.text("MediaType"))


# -------------------------------------------------------------------------------------------- driver
class RedfishDriver:
    """PowerControl, BootControl and InventoryReader for the first System a Redfish BMC lists; for the Redfish
    service of a PDU, its Rack PDUs' outlets (read and switch)."""

    def __init__(self, address: str, port: int, credentials: Credentials, tls: TlsPolicy, *,
                 scheme: str = "https", timeout: float = 10.0) -> None:
        if scheme not in ("https", "http"):
            raise ValueError(f"scheme must be https or http, not {scheme!r}")
        if (scheme == "http") != tls.insecure_http:
            raise ValueError("plain http needs TlsPolicy(insecure_http=True), and only plain http may have it")
        self.address, self.port, self.timeout = address, port, timeout
        self.target = f"{address}:{port}"
        host = f"[{address}]" if ":" in address else address
        self._url = f"{scheme}://{host}:{port}"
        self._credentials = credentials
        self._tls = tls
        self._log = log.bind(bmc=self.target)
        self._auth: sushy.auth.SessionOrBasicAuth | None = None
        self._conn: _Connector | None = None
        self._root: sushy.Sushy | None = None
        self._system_path: str | None = None

    def __repr__(self) -> str:
        return f"RedfishDriver({self._url}, username={self._credentials.username!r})"

    def __enter__(self) -> RedfishDriver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Log the session out (where there is one) and drop the connection; a later call starts afresh."""
        auth, conn = self._auth, self._conn
        self._auth = self._conn = self._root = self._system_path = None
        if conn is None:
            return
        try:
            with self._errors("logout"):
                auth.close()
        except DriverError as exc:
            self._log.warning("redfish.logout_failed", error=type(exc).__name__)
        finally:
            conn.close()

    # ---------------------------------------------------------------------------------------- power
    def get_power_state(self) -> PowerState:
        state = self._get(self._system()).power_state()
        if state is None:
            raise MalformedReply(self.target, "the System reports no PowerState", field="PowerState")
        return state

    def request_power(self, action: PowerAction) -> None:
        """Ask once; the daemon reads back and confirms within a deadline."""
        system = self._sushy_system()
        with self._errors(f"power {action}"):
            allowed = system.get_allowed_reset_system_values()
            reset = next((r for r in RESET_TYPES[action] if r in allowed), None)
            if reset is None:
                raise Unsupported(self.target, f"no reset type for power {action} among those the BMC allows")
            system.reset_system(reset)
        self._log.info("redfish.power_requested", action=str(action), reset_type=reset.value)

    # ----------------------------------------------------------------------------------------- boot
    def set_boot_once(self, device: BootDevice, mode: BootMode | None = None) -> None:
        system = self._sushy_system()
        with self._errors(f"boot once from {device}"):
            system.set_system_boot_options(BOOT_SOURCES[device], enabled=sushy.BootSourceOverrideEnabled.ONCE,
                                           mode=BOOT_MODES[mode] if mode else None)
        self._log.info("redfish.boot_once_set", device=str(device), mode=str(mode) if mode else None)

    # ------------------------------------------------------------------------------------ inventory
    def read_inventory(self) -> SystemInventory:
        system = self._get(self._system())
        manager = next(self._each(system.links("Links", "ManagedBy")), None)
        enclosure = chassis_without_chassis_type([r.data for r in self._each(system.links("Links", "Chassis"))])
        chassis = _Reply(enclosure, "Links/Chassis", self.target) if enclosure is not None else None
        return SystemInventory(
            serial=system.text("SerialNumber"),
            uuid=system.text("UUID"),
            manufacturer=system.text("Manufacturer"),
            model=system.text("Model"),
            bios_version=system.text("BiosVersion"),
            bmc_firmware=manager.text("FirmwareVersion") if manager else None,
            chassis_type=chassis.text("ChassisType") if chassis else None,
            chassis_serial=chassis.text("SerialNumber") if chassis else None,
            power_state=system.power_state(),
            processors=tuple(self._each(self._members(system, "Processors"), _processor)),
            memory=tuple(self._each(self._members(system, "Memory"), _memory)),
            drives=self._drives(system),
            nics=tuple(self._each(self._members(system, "EthernetInterfaces"), _nic)),
        )

    def _members(self, parent: _Reply, key: str) -> list[str]:
        """Member links of the collection ``parent`` links to under ``key``; none where it is not reported."""
        link = parent.link(key)
        return next(self._each([link], lambda collection: collection.links("Members")), []) if link else []

    def _each(self, links: list[str], parse: Callable[[_Reply], Any] = lambda reply: reply) -> Iterator[Any]:
        """Read and parse members one at a time; a missing or malformed one is logged and skipped, not fatal."""
        for link in dict.fromkeys(links):  # some BMCs list a member more than once
            try:
                member = self._member(link)
                parsed = parse(member) if member is not None else None
            except MalformedReply as exc:
                self._log.warning("redfish.member_malformed", path=link, field=exc.field, error=exc.message)
                continue
            if parsed is not None:
                yield parsed

    def _drives(self, system: _Reply) -> tuple[Drive, ...]:
        drives: list[Drive] = []
        for controller in self._each(self._members(system, "Storage")):
            drives.extend(self._each(controller.links("Drives"), _drive))
        for controller in self._each(self._members(system, "SimpleStorage")):  # devices inline, no links
            devices = [_Reply(d, f"{controller.path}/Devices", self.target) for d in controller.items("Devices")]
            drives.extend(filter(None, map(_drive, devices)))
        return tuple(drives)

    # ---------------------------------------------------------------------------------- PDU outlets
    def read_outlets(self) -> list[OutletReading]:
        """The outlets of the Rack PDUs the service lists, numbered from 1 in the order listed. The name is the
        outlet's Id, ``PDU/Id`` where the service lists several Rack PDUs."""
        return [reading for reading, _ in self._outlets()]

    def request_outlet(self, name: str, state: OutletState) -> None:
        """Ask once (Outlet.PowerControl); the daemon reads back and confirms within a deadline."""
        outlet = next((reply for reading, reply in self._outlets() if reading.name == name), None)
        if outlet is None:
            raise Unsupported(self.target, f"no outlet {name}")
        action = outlet.text("Actions", "#Outlet.PowerControl", "target")
        if action is None:
            raise Unsupported(self.target, f"outlet {name} offers no Outlet.PowerControl")
        with self._errors(f"switch outlet {name} {state}"):
            self._conn.post(_fix_link(action), data={"PowerState": OUTLET_POWER_STATES[state]})
        self._log.info("redfish.outlet_requested", outlet=name, state=str(state))

    def _outlets(self) -> list[tuple[OutletReading, _Reply]]:
        root = _Reply(self._service().json, "/redfish/v1", self.target)
        equipment = root.link("PowerEquipment")
        pdus = self._members(self._get(equipment), "RackPDUs") if equipment else []
        if not pdus:
            raise Unsupported(self.target, "the service lists no Rack PDU (PowerEquipment/RackPDUs)")
        found = []
        for pdu in self._each(pdus):
            prefix = f"{pdu.text('Id')}/" if len(pdus) > 1 else ""
            for outlet in self._each(self._members(pdu, "Outlets")):
                state = outlet.text("PowerState")
                found.append((OutletReading(
                    index=len(found) + 1, name=prefix + (outlet.text("Id") or outlet.path.rsplit("/", 1)[-1]),
                    state=next((s for s, text in OUTLET_POWER_STATES.items() if text == state), None),
                    current_amps=outlet.number("CurrentAmps", "Reading"),
                    power_watts=outlet.number("PowerWatts", "Reading"),
                    energy_kwh=outlet.number("EnergykWh", "Reading")), outlet))
        return found

    # ----------------------------------------------------------------------------------------- plumbing
    def _service(self) -> sushy.Sushy:
        if self._root is None:
            auth = sushy.auth.SessionOrBasicAuth(username=self._credentials.username,
                                                 password=self._credentials.password.reveal())
            conn = _Connector(self._url, self._tls, self.timeout)
            try:
                with self._errors("connect"):
                    self._root = sushy.Sushy(self._url, auth=auth, connector=conn, public_connector=_NoPublicFetch())
            except DriverError:
                conn.close()
                raise
            self._auth, self._conn = auth, conn
        return self._root

    def _system(self) -> str:
        """Path of the first System the BMC lists."""
        if self._system_path is None:
            root = _Reply(self._service().json, "/redfish/v1", self.target)
            systems_link = root.link("Systems")
            members = self._get(systems_link).links("Members") if systems_link else []
            if not members:
                raise Unsupported(self.target, "the BMC lists no System")
            self._system_path = _fix_link(members[0])
        return self._system_path

    def _sushy_system(self) -> sushy.resources.system.system.System:
        path = self._system()
        with self._errors("read System"):
            return self._service().get_system(path)

    def _get(self, path: str) -> _Reply:
        """GET one resource that must be there."""
        reply = self._member(path, required=True)
        if reply is None:
            raise Unsupported(self.target, f"{path} is not there")
        return reply

    def _member(self, path: str, *, required: bool = False) -> _Reply | None:
        """GET one resource; None where it is not there (404, or an error body served with HTTP 200) or,
        unless ``required``, where the BMC fails to serve it (5xx)."""
        path = _fix_link(path)
        self._service()
        with self._errors(f"GET {path}"):
            try:
                data = self._conn.get(path).json()
            except sushy_exc.ResourceNotFoundError:
                data = None
            except sushy_exc.ServerSideError as exc:
                if required:
                    raise
                self._log.warning("redfish.member_failed", path=path, status=exc.status_code)
                return None
        if data is None or (isinstance(data, dict) and isinstance(data.get("error"), dict)):
            self._log.debug("redfish.not_reported", path=path)
            return None
        return _Reply(data, path, self.target)

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Re-raise sushy's and requests' exceptions in our terms (by type; their text is never parsed)."""
        try:
            yield
        except DriverError:
            raise
        except sushy_exc.AccessError as exc:
            raise AuthFailed(self.target, f"{what}: credentials refused (HTTP {exc.status_code})") from exc
        except sushy_exc.ConnectionError as exc:
            raise self._transport_error(what, exc.__context__) from exc
        except sushy_exc.ServerSideError as exc:
            raise BmcUnreachable(self.target, f"{what}: the service failed (HTTP {exc.status_code})") from exc
        except (sushy_exc.InvalidParameterValueError, sushy_exc.MissingActionError) as exc:
            raise Unsupported(self.target, f"{what}: not offered by this BMC") from exc
        except sushy_exc.HTTPError as exc:
            raise MalformedReply(self.target, f"{what}: unexpected HTTP {exc.status_code}") from exc
        except (sushy_exc.SushyError, requests.exceptions.JSONDecodeError) as exc:
            raise MalformedReply(self.target, f"{what}: not a Redfish reply ({type(exc).__name__})") from exc

    def _transport_error(self, what: str, cause: BaseException | None) -> DriverError:
        if isinstance(cause, requests.exceptions.SSLError):
            return self._tls_error(what)
        for kind, error, message in TRANSPORT_ERRORS:
            if isinstance(cause, kind):
                return error(self.target, f"{what}: " + message.format(timeout=self.timeout))
        return BmcUnreachable(self.target, f"{what}: {type(cause).__name__}")

    def _tls_error(self, what: str) -> TlsMismatch:
        try:
            seen = fetch_certificate_sha256(self.address, self.port, self.timeout)
        except DriverError:
            seen = None
        expected = self._tls.pinned_sha256
        trust = "the pinned fingerprint" if expected else f"the CA bundle {self._tls.ca_bundle}"
        return TlsMismatch(self.target, f"{what}: the certificate does not match {trust}",
                           seen_fingerprint=seen, expected_fingerprint=expected)


# --------------------------------------------------------------------------------------------- probe
async def probe_redfish(address: str, port: int, *, timeout: float, scheme: str = "https") -> ProbeResult | None:
    """Is there a Redfish service at ``address:port``? None if nothing Redfish answers.

    Discovery meets the BMC before its certificate is trusted, so this probe does NOT verify TLS. That is
    safe only because it sends no credentials and reads only the public, unauthenticated service root
    (``GET /redfish/v1/``); it records the certificate's SHA-256 so the operator can pin it on enrolment.
    ``scheme="http"`` is for the lab.
    """
    url = f"{scheme}://{address}:{port}/redfish/v1/"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(url, ssl=False, allow_redirects=False) as reply:  # unverified: see above
                ssl_object = reply.connection.transport.get_extra_info("ssl_object") if reply.connection else None
                der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
                if reply.status != 200:
                    return None
                root = await reply.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    if not isinstance(root, dict) or not isinstance(root.get("RedfishVersion"), str):
        return None
    uuid = root.get("UUID")
    return ProbeResult(address=address, protocol="redfish", port=port, detail=root["RedfishVersion"],
                       uuid=uuid if isinstance(uuid, str) else None,
                       certificate_sha256=hashlib.sha256(der).hexdigest() if der else None)

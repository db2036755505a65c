"""IPMI LAN BMCs for the tests and `make demo`: one ipmi_sim (OpenIPMI) process serving one or several BMCs.

Each BMC is its own management controller (IPMB 0x20, 0x22, ...) with its own LAN channel on a free UDP
port on loopback, its own FRU image (serials), sensor values, user and chassis state directory. RMCP+
BMCs offer cipher suites up to 3 (ipmi_sim has no 17); ``ipmi15_only`` BMCs have no GUID, which makes
ipmi_sim offer IPMI 1.5 only. The peer's helpers (chassis_control.sh, make_fru.py, sdr2emu.py,
sensors.sdrs) are used in place from ../shared/peers/ipmi_sim; its README explains the config below.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.common import PEERS, Peer, Process, free_port, wait_until

PEER = PEERS / "ipmi_sim"
READY_DEADLINE = 10.0
FRU_SIZE = 256  # make_fru.py pads to this; ipmi_sim must be told the real file size
# make_fru.py writes these into the board and product areas of every image.
FRU_MANUFACTURER = "Baie Sim Inc"
FRU_MODEL = "SimServer 1U"
# Sensor numbers and scaling of the peer's sensors.sdrs.
SENSOR_INLET, SENSOR_CPU, SENSOR_FAN = 1, 2, 3
FAN_RPM_PER_COUNT = 100

_RMCP_PING = bytes((6, 0, 0xFF, 6, 0, 0, 0x11, 0xBE, 0x80, 0, 0, 0))  # ASF presence ping, IANA 4542
_ASF_PONG = 0x40


@dataclass(frozen=True)
class BmcSpec:
    product_serial: str
    board_serial: str
    chassis_serial: str = "CSN-0001"
    username: str = "admin"
    password: str = field(default="password", repr=False)
    inlet_celsius: int = 25
    cpu_celsius: int = 45
    fan_rpm: int = 4800
    ipmi15_only: bool = False
    address: str | None = None  # default: the simulator's host
    port: int | None = None  # default: a free UDP port


@dataclass(frozen=True)
class SimBmc:
    spec: BmcSpec
    mc: int          # IPMB address of its management controller, as the console names it
    address: str
    port: int
    state_dir: Path  # chassis_control.sh's files: power, boot, resets, calls.log
    guid: str | None  # 32 hex digits as configured (wire order); None for an IPMI 1.5-only BMC

    @property
    def serial(self) -> str:
        return self.spec.product_serial

    @property
    def uuid(self) -> str | None:
        """The GUID as a UUID string (SMBIOS byte order, lower case), as drivers report it."""
        return str(uuid.UUID(bytes_le=bytes.fromhex(self.guid))) if self.guid else None

    def state(self, name: str) -> str | None:
        """Content of one chassis state file (``power`` "1"/"0", ``boot``), None if never written."""
        path = self.state_dir / name
        return path.read_text().strip() if path.exists() else None

    def calls(self) -> list[str]:
        """Every call ipmi_sim made to the chassis script, e.g. "set boot pxe"."""
        path = self.state_dir / "calls.log"
        return path.read_text().splitlines() if path.exists() else []


class IpmiSim(Peer):
    """One ipmi_sim process serving a BMC per ``BmcSpec``; a context manager that stops it on exit."""

    def __init__(self, *specs: BmcSpec, host: str = "127.0.0.1") -> None:
        if not specs or len(specs) > 100:
            raise ValueError("1 to 100 BMCs per ipmi_sim process")
        self.host = host
        self.specs = specs
        self.bmcs: list[SimBmc] = []
        self.console_port = 0

    def __enter__(self) -> IpmiSim:
        self._dir = Path(tempfile.mkdtemp(prefix="ipmi-sim-"))
        self.console_port = free_port(self.host)
        run_id = secrets.token_hex(4)  # GUIDs unique per run, so a stray simulator cannot pass for ours
        self.bmcs = [
            SimBmc(spec=spec, mc=0x20 + 2 * i, address=spec.address or self.host,
                   port=spec.port or free_port(spec.address or self.host, socket.SOCK_DGRAM),
                   state_dir=self._dir / f"state-{0x20 + 2 * i:02x}",
                   guid=None if spec.ipmi15_only else f"ba1e5a70{run_id}{i:016x}")
            for i, spec in enumerate(self.specs)
        ]
        try:
            self._write_config()
            self._process = Process(["ipmi_sim", "-c", "lan.conf", "-f", "bmc.emu", "-p", "-n"],
                                    log=self._dir / "ipmi_sim.log", cwd=self._dir)
            for bmc in self.bmcs:
                wait_until(lambda: self._process.alive() and _pong(bmc.address, bmc.port),
                           deadline=READY_DEADLINE, what=f"ipmi_sim BMC 0x{bmc.mc:02x} on {bmc.address}:{bmc.port}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def console(self, command: str) -> str:
        """Run one emulator command (ipmi_sim_cmd(5)) on the simulator's console; its output."""
        with socket.create_connection((self.host, self.console_port), timeout=5) as conn:
            _read_until_prompt(conn)
            conn.sendall(command.encode() + b"\n")
            output = _read_until_prompt(conn)
        if "**" in output:
            raise RuntimeError(f"ipmi_sim console: {command!r} -> {output.strip()}")
        return output

    def set_sensor(self, bmc: SimBmc, sensor: int, raw: int) -> None:
        """Set a sensor's raw reading (degrees for the temperatures, RPM / 100 for the fan), with events."""
        self.console(f"sensor_set_value 0x{bmc.mc:02x} 0 {sensor} {raw} 1")

    def _write_config(self) -> None:
        conf = ['name "baie-lab"', ""]
        emu = ["mc_setbmc 0x20", ""]
        for bmc in self.bmcs:
            spec, mc = bmc.spec, f"0x{bmc.mc:02x}"
            bmc.state_dir.mkdir()
            fru = f"fru-{bmc.mc:02x}.bin"
            subprocess.run([sys.executable, PEER / "make_fru.py", fru, "--size", str(FRU_SIZE),
                            "--board-serial", spec.board_serial, "--product-serial", spec.product_serial,
                            "--chassis-serial", spec.chassis_serial],
                           cwd=self._dir, check=True, capture_output=True)
            # Every MC answers on its own channel as if it were the BMC, so the SDRs keep owner 0x20.
            sdrs = subprocess.run([sys.executable, PEER / "sdr2emu.py", PEER / "sensors.sdrs", mc],
                                  check=True, capture_output=True, text=True).stdout
            conf += [
                f"set_working_mc {mc}",
                "  startlan 1",
                f"    addr {bmc.address} {bmc.port}",
                "    priv_limit admin",
                *(f"    allowed_auths_{level} md5" for level in ("callback", "user", "operator", "admin")),
                *([f"    guid {bmc.guid}"] if bmc.guid else []),  # without a GUID: IPMI 1.5 only
                "  endlan",
                f'  chassis_control "{PEER / "chassis_control.sh"} {bmc.state_dir}"',
                f'  user 2 true "{spec.username}" "{spec.password}" admin 10',
                "",
            ]
            emu += [
                f"mc_add {mc} 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02",
                f"sel_enable {mc} 1000 0x0a",
                f'mc_add_fru_data {mc} 0 {FRU_SIZE} file 0 "{fru}"',
                sdrs,
                f"sensor_add {mc} 0 0 35 0x6f event-only",  # watchdog, must be sensor 0
                f"sensor_add {mc} 0 {SENSOR_INLET} 0x01 0x01",
                f"sensor_set_value {mc} 0 {SENSOR_INLET} {spec.inlet_celsius} 0",
                f"sensor_set_threshold {mc} 0 {SENSOR_INLET} settable 111000 60 50 45 00 00 00",
                f"sensor_add {mc} 0 {SENSOR_CPU} 0x01 0x01",
                f"sensor_set_value {mc} 0 {SENSOR_CPU} {spec.cpu_celsius} 0",
                f"sensor_set_threshold {mc} 0 {SENSOR_CPU} settable 111000 100 95 85 00 00 00",
                f"sensor_add {mc} 0 {SENSOR_FAN} 0x04 0x01",
                f"sensor_set_value {mc} 0 {SENSOR_FAN} {spec.fan_rpm // FAN_RPM_PER_COUNT} 0",
                # scanning is off by default on MCs other than 0x20: no readings without this
                *(f"sensor_set_event_support {mc} 0 {n} enable scanning per-state "
                  "000111111000000 000111111000000 000111111000000 000111111000000"
                  for n in (SENSOR_INLET, SENSOR_CPU, SENSOR_FAN)),
                f"mc_enable {mc}",  # last: a bad line before it silently leaves the MC disabled
                "",
            ]
        conf.append(f"console {self.host} {self.console_port}")
        (self._dir / "lan.conf").write_text("\n".join(conf) + "\n")
        (self._dir / "bmc.emu").write_text("\n".join(emu) + "\n")


def _pong(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(_RMCP_PING, (address, port))
        data, _ = sock.recvfrom(512)
        return len(data) > 8 and data[8] == _ASF_PONG


def _read_until_prompt(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"> "):
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError(f"ipmi_sim console closed after {data!r}")
        data += chunk
    return data.decode(errors="replace")

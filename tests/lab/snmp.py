"""snmpsim as a lab peer: every ``NAME.snmprec`` in a data directory becomes an agent answering to v2c
community ``NAME`` and to SNMPv3 context ``NAME``, with SHA-256/AES-128 users.

    with SnmpSim(DATA, v3_users=[SimUser("baie", "auth-key-1", "priv-key-1")]) as sim:
        ...  # 127.0.0.1:sim.port

Outlets switch through our ``switchlink`` variation module (../shared/peers/snmpsim/variation).
snmpsim prints the v3 keys in its log, so the log stays in a private temporary directory.
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import snmpsim
from pyasn1.codec.ber import decoder, encoder
from pysnmp.proto import api

from tests.lab.common import PEERS, Process, free_port, wait_until

VARIATION_DIRS = (PEERS / "snmpsim" / "variation", Path(snmpsim.__file__).parent / "variation")
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"


@dataclass(frozen=True)
class SimUser:
    name: str
    auth_key: str  # SHA-256
    priv_key: str  # AES-128


class SnmpSim:
    def __init__(self, data_dir: Path, *, v3_users: Iterable[SimUser] = (), host: str = "127.0.0.1",
                 port: int | None = None, engine_id: str = "8000000001626169650001") -> None:
        self.data_dir = Path(data_dir)
        self.v3_users = list(v3_users)
        self.host = host
        self.port = port or free_port(host, socket.SOCK_DGRAM)
        self.engine_id = engine_id
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._process: Process | None = None

    def __enter__(self) -> SnmpSim:
        self._tmp = tempfile.TemporaryDirectory(prefix="baie-snmpsim-")
        tmp = Path(self._tmp.name)
        (tmp / "cache").mkdir()
        argv = [sys.executable, "-m", "snmpsim.commands.responder",
                f"--cache-dir={tmp / 'cache'}", "--log-level=error",
                *[f"--variation-modules-dir={d}" for d in VARIATION_DIRS],
                # an engine section starts at --v3-engine-id; its data dir, users and endpoint follow it
                f"--v3-engine-id={self.engine_id}", f"--data-dir={self.data_dir}"]
        users = tmp / "users.args"  # keys in a private file rather than on the command line (ps)
        users.touch(mode=0o600)
        users.write_text(" ".join(
            f"--v3-user={u.name} --v3-auth-key={u.auth_key} --v3-auth-proto=SHA256"
            f" --v3-priv-key={u.priv_key} --v3-priv-proto=AES128" for u in self.v3_users))
        argv += [f"--agent-udpv4-endpoint={self.host}:{self.port}", f"--args-from-file={users}"]
        self._process = Process(argv, log=tmp / "snmpsim.log", env={"SNMPSIM_ALLOW_ROOT": "true"})
        try:
            wait_until(self._answers, deadline=30, what=f"snmpsim on {self.host}:{self.port}")
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process:
            self._process.stop()
            self._process = None
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def _answers(self) -> bool:
        """One v2c GET of sysObjectID to the first data file; any response means the agent is serving."""
        if not self._process.alive():
            raise RuntimeError(f"snmpsim exited with {self._process.proc.returncode}")
        community = sorted(self.data_dir.glob("*.snmprec"))[0].stem
        v2c = api.PROTOCOL_MODULES[api.SNMP_VERSION_2C]
        pdu = v2c.GetRequestPDU()
        v2c.apiPDU.set_defaults(pdu)
        v2c.apiPDU.set_varbinds(pdu, [(SYS_OBJECT_ID, v2c.Null(""))])
        message = v2c.Message()
        v2c.apiMessage.set_defaults(message)
        v2c.apiMessage.set_community(message, community)
        v2c.apiMessage.set_pdu(message, pdu)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            sock.sendto(encoder.encode(message), (self.host, self.port))
            reply, _ = sock.recvfrom(65535)
        decoder.decode(reply, asn1Spec=v2c.Message())
        return True


def agent_dir(directory: Path, source: Path) -> Path:
    """A data directory where ``source`` answers SNMPv3 with the empty context (``self.snmprec``, a copy) and
    v2c with the community ``agent`` (another copy, named to sort first: SnmpSim's readiness check uses it)."""
    directory.mkdir()
    shutil.copy(source, directory / "agent.snmprec")
    shutil.copy(source, directory / "self.snmprec")
    return directory

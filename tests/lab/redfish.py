"""Redfish peers for the tests and `make demo`: sushy-static serving a recorded tree, and sushy-emulator --fake.

Both listen on loopback only. Use them as context managers; each stops its process (and removes its
scratch directory) on exit.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
import tempfile
import urllib.request
from pathlib import Path

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.lab.common import MOCKUPS, Peer, Process, free_port, tool, wait_until

READY_DEADLINE = 20.0


def make_certificate(directory: Path, *hosts: str, stem: str = "bmc") -> tuple[Path, Path, str]:
    """A fresh self-signed certificate (EC P-256) for ``hosts`` (IP SANs; 127.0.0.1 when none), that also
    serves as its own CA bundle: (``STEM.crt``, ``STEM.key``, SHA-256 of the DER, hex)."""
    hosts = hosts or ("127.0.0.1",)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(h)) for h in hosts]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _answers(url: str, ca_file: Path | None) -> bool:
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    with urllib.request.urlopen(f"{url}/redfish/v1/", timeout=2, context=context) as reply:
        return reply.status == 200


class SushyStatic(Peer):
    """``sushy-static`` serving the recorded tree ``mockup_name`` from the shared mockups (read-only).

    Plain HTTP by default; with ``tls=True`` HTTPS with a fresh self-signed certificate whose SHA-256 is
    ``fingerprint``. It accepts any credentials.
    """

    def __init__(self, mockup_name: str, host: str = "127.0.0.1", port: int | None = None, *,
                 tls: bool = False) -> None:
        self.tree = MOCKUPS / mockup_name
        if not (self.tree / "index.json").is_file():
            raise FileNotFoundError(f"no Redfish mockup at {self.tree}")
        self.address = host
        self.port = port or free_port(host)
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self.fingerprint: str | None = None
        self.ca_file: Path | None = None

    def __enter__(self) -> SushyStatic:
        self._dir = Path(tempfile.mkdtemp(prefix="sushy-static-"))
        argv = [tool("sushy-static"), "-i", self.address, "-p", str(self.port), "-m", str(self.tree)]
        if self.tls:
            self.ca_file, key, self.fingerprint = make_certificate(self._dir, self.address)
            argv += ["-c", str(self.ca_file), "-k", str(key)]
        self._process = Process(argv, log=self._dir / "sushy-static.log")
        try:
            wait_until(lambda: self._process.alive() and _answers(self.url, self.ca_file), deadline=READY_DEADLINE,
                       what=f"sushy-static {self.tree.name} on {self.url}")
        except TimeoutError:
            self.__exit__()
            raise
        return self


class SushyEmulator(Peer):
    """``sushy-emulator --fake``: one fake server whose power and boot override change, behind HTTP basic auth.

    Like real hardware it applies a reset 1-11 s after the request (confirm with a deadline of 15 s or more),
    and it reports BootSourceOverrideEnabled as Continuous even after a Once request.
    With ``tls`` it serves HTTPS with a self-signed certificate for ``host``: ``ca_file`` verifies it and
    ``certificate_sha256`` is its fingerprint; ``restart(new_certificate=True)`` swaps in a new one.
    """

    SYSTEM_UUID = "27946b59-9e44-4fa7-8e91-f3527a1ef094"
    NIC_MAC = "00:5c:52:31:3a:9c"

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *, username: str, password: str,
                 tls: bool = True) -> None:
        self.address = host
        self.port = port or free_port(host)
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self.username = username
        self._password = password
        self.tls = tls
        self.ca_file: Path | None = None
        self.certificate_sha256: str | None = None
        self._key_file: Path | None = None

    def __repr__(self) -> str:
        return f"SushyEmulator({self.url}, username={self.username!r})"

    def __enter__(self) -> SushyEmulator:
        self._dir = Path(tempfile.mkdtemp(prefix="sushy-emulator-"))
        hashed = bcrypt.hashpw(self._password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (self._dir / "htpasswd").write_text(f"{self.username}:{hashed}\n")
        if self.tls:
            self._new_certificate()
        try:
            self._start()
        except TimeoutError:
            self.__exit__()
            raise
        return self

    def restart(self, *, new_certificate: bool = False) -> None:
        """Stop and start again on the same port (state is kept), optionally with a new certificate."""
        assert self._process and self._dir, "restart() needs a running emulator"
        self._process.stop()
        if new_certificate:
            self._new_certificate()
        self._start()

    def _new_certificate(self) -> None:
        assert self._dir
        self.ca_file, key_file, self.certificate_sha256 = make_certificate(self._dir, self.address)
        self._key_file = key_file

    def _write_config(self) -> Path:
        assert self._dir
        settings = {
            "SUSHY_EMULATOR_LISTEN_IP": self.address,
            "SUSHY_EMULATOR_LISTEN_PORT": self.port,
            "SUSHY_EMULATOR_AUTH_FILE": str(self._dir / "htpasswd"),
            "SUSHY_EMULATOR_STATE_DIR": str(self._dir / "state"),
            "SUSHY_EMULATOR_FAKE_SYSTEMS": [{
                "uuid": self.SYSTEM_UUID, "name": "fake", "power_state": "Off",
                "external_notifier": False,  # never send the state anywhere
                "nics": [{"mac": self.NIC_MAC, "ip": "127.0.0.2"}],
            }],
        }
        if self.tls:
            settings |= {"SUSHY_EMULATOR_SSL_CERT": str(self.ca_file), "SUSHY_EMULATOR_SSL_KEY": str(self._key_file)}
        config = self._dir / "emulator.conf"
        config.write_text("".join(f"{key} = {value!r}\n" for key, value in settings.items()))
        return config

    def _start(self) -> None:
        assert self._dir
        config = self._write_config()
        self._process = Process([tool("sushy-emulator"), "--config", str(config), "--fake"],
                                log=self._dir / "sushy-emulator.log")
        wait_until(lambda: self._process.alive() and _answers(self.url, self.ca_file), deadline=READY_DEADLINE,
                   what=f"sushy-emulator on {self.url}")

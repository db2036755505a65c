"""Checks on the systemd packaging in systemd/: the service unit, sysusers and tmpfiles snippets.

Everything runs offline (no systemd as PID 1 needed): `systemd-analyze security --offline`,
`systemd-analyze verify`, `systemd-sysusers --root` and `systemd-tmpfiles --root` against a
temporary root. Tests that need a systemd tool skip, saying which, where it is missing.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
SERVICE = SYSTEMD_DIR / "baie.service"
SYSUSERS = SYSTEMD_DIR / "baie.sysusers"
TMPFILES = SYSTEMD_DIR / "baie.tmpfiles"

MAX_EXPOSURE = 2.5
MISSING_BINARY = "/opt/baie/venv/bin/baie"
CREDENTIALS = {"bmc-default", "api-token", "webhook-secret", "snmp-default"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package 'systemd'; `make test` installs it)")
    return path


def _run(*args: str | Path, timeout: float = 60, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw
    )


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections → key → every value in order (systemd keys may repeat; an empty value resets)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: assignment outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {raw!r}"
        values = current.setdefault(key.strip(), [])
        value = value.strip()
        if value == "" and key.strip() not in ("CapabilityBoundingSet", "AmbientCapabilities"):
            values.clear()
        else:
            values.append(value)
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(SERVICE)["Service"]


def _one(service: dict[str, list[str]], key: str) -> str | None:
    values = service.get(key)
    return values[-1] if values else None


# ---------------------------------------------------------------- the unit's contents


def test_service_is_notify_with_watchdog(service):
    assert _one(service, "Type") == "notify"
    assert _one(service, "NotifyAccess") == "main"
    assert _one(service, "WatchdogSec") == "30s"
    assert _one(service, "Restart") == "on-failure"
    # SIGTERM stops the daemon within 10 s; the unit must wait longer than that.
    stop = _one(service, "TimeoutStopSec")
    assert stop is not None and stop.endswith("s") and int(stop[:-1]) > 10


def test_service_allows_a_connection_per_bmc(service):
    # the soft default (1024) would stop a site's polls past its first thousand BMCs
    assert int(service["LimitNOFILE"][-1]) >= 65536


def test_service_execstart(service):
    assert service["ExecStart"] == [f"{MISSING_BINARY} daemon --config /etc/baie/baie.toml"]


def test_service_identity_and_directories(service):
    assert _one(service, "User") == "baie"
    assert _one(service, "Group") == "baie"
    assert _one(service, "DynamicUser") == "no"
    assert _one(service, "StateDirectory") == "baie"
    assert _one(service, "RuntimeDirectory") == "baie"
    assert _one(service, "RuntimeDirectoryMode") == "0750"
    assert _one(service, "ConfigurationDirectory") == "baie"
    assert _one(service, "UMask") == "0027"


def test_service_loads_credentials_from_etc(service):
    entries = dict(v.split(":", 1) for v in service.get("LoadCredential", []))
    assert set(entries) == CREDENTIALS
    for name, source in entries.items():
        assert source == f"/etc/baie/credentials/{name}"


def test_service_has_no_privileges_and_keeps_network_reach(service):
    assert service["CapabilityBoundingSet"] == [""]
    assert service["AmbientCapabilities"] == [""]
    assert set(" ".join(service["RestrictAddressFamilies"]).split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
    }
    # BMC, switch and host networks differ per site: no IP allow-list, no private network here.
    assert "IPAddressDeny" not in service and "IPAddressAllow" not in service
    assert _one(service, "PrivateNetwork") in (None, "no")


# ---------------------------------------------------------------- systemd-analyze


def test_security_exposure_is_low():
    analyze = _tool("systemd-analyze")
    threshold = int(MAX_EXPOSURE * 10)  # --threshold is on the 0..100 scale, the report on 0..10
    proc = _run(
        analyze, "security", "--offline=yes", f"--threshold={threshold}", "--no-pager", SERVICE
    )
    out = proc.stdout + proc.stderr
    match = re.search(r"Overall exposure level for baie\.service:\s*([0-9]+(?:\.[0-9]+)?)", out)
    assert match, f"no overall exposure level in systemd-analyze output:\n{out}"
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{out}"
    assert proc.returncode == 0, f"systemd-analyze security exited {proc.returncode}:\n{out}"


def _verify(analyze: str, unit: Path) -> subprocess.CompletedProcess[str]:
    return _run(analyze, "verify", "--man=no", "--generators=no", unit, cwd=unit.parent)


def test_verify_reports_nothing_but_the_absent_binary():
    """The unit as shipped: the only acceptable complaint is that the venv is not installed here."""
    analyze = _tool("systemd-analyze")
    proc = _verify(analyze, SERVICE)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    if Path(MISSING_BINARY).exists():
        assert proc.returncode == 0 and not lines, "\n".join(lines)
        return
    unexplained = [ln for ln in lines if MISSING_BINARY not in ln]
    assert not unexplained, "systemd-analyze verify:\n" + "\n".join(lines)


def test_verify_is_clean_with_an_existing_executable(tmp_path):
    """The same unit with ExecStart pointed at an executable that exists must verify silently."""
    analyze = _tool("systemd-analyze")
    text = SERVICE.read_text()
    assert text.count(f"ExecStart={MISSING_BINARY} ") == 1
    stand_in = tmp_path / "bin" / "baie"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "baie.service"
    unit.write_text(text.replace(f"ExecStart={MISSING_BINARY} ", f"ExecStart={stand_in} "))
    proc = _verify(analyze, unit)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and not out, f"systemd-analyze verify exited {proc.returncode}:\n{out}"


# ---------------------------------------------------------------- sysusers / tmpfiles


def _sysusers_lines() -> list[list[str]]:
    return [
        shlex.split(ln)
        for ln in SYSUSERS.read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]


def _tmpfiles_lines() -> list[list[str]]:
    return [
        ln.split()
        for ln in TMPFILES.read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]


def test_sysusers_structure(service):
    lines = _sysusers_lines()
    users = [ln for ln in lines if ln[0] == "u"]
    assert len(users) == 1, lines
    kind, name, uid, _gecos, home, *shell = users[0]
    assert (name, uid, home) == ("baie", "-", "/var/lib/baie")
    assert home == f"/var/lib/{_one(service, 'StateDirectory')}"
    assert all(ln[0] in {"u", "g", "m", "r"} for ln in lines), lines


def test_tmpfiles_structure(service):
    entries = {ln[1]: ln for ln in _tmpfiles_lines()}
    assert entries["/etc/baie"][:5] == ["d", "/etc/baie", "0750", "root", "baie"]
    assert entries["/etc/baie/credentials"][:5] == ["d", "/etc/baie/credentials", "0700", "root", "root"]
    # Every LoadCredential= source lives in the directory the snippet locks down.
    for value in service["LoadCredential"]:
        assert Path(value.split(":", 1)[1]).parent == Path("/etc/baie/credentials")
    # State and runtime directories belong to StateDirectory=/RuntimeDirectory=, not tmpfiles.
    assert not any(p.startswith(("/var/lib/baie", "/run/baie")) for p in entries)


@pytest.fixture
def fake_root(tmp_path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr/lib/sysusers.d").mkdir(parents=True)
    (root / "usr/lib/tmpfiles.d").mkdir(parents=True)
    shutil.copy(SYSUSERS, root / "usr/lib/sysusers.d/baie.conf")
    shutil.copy(TMPFILES, root / "usr/lib/tmpfiles.d/baie.conf")
    return root


def test_sysusers_creates_user_in_a_temp_root(fake_root):
    sysusers = _tool("systemd-sysusers")
    proc = _run(sysusers, f"--root={fake_root}", "baie.conf")
    assert proc.returncode == 0, proc.stderr
    passwd = {ln.split(":")[0]: ln.split(":") for ln in (fake_root / "etc/passwd").read_text().splitlines()}
    groups = {ln.split(":")[0]: ln.split(":") for ln in (fake_root / "etc/group").read_text().splitlines()}
    assert "baie" in passwd and "baie" in groups
    user = passwd["baie"]
    assert user[3] == groups["baie"][2], "primary group of baie is group baie"
    assert user[5] == "/var/lib/baie"
    assert user[6].endswith("nologin")
    assert 0 < int(user[2]) < 1000, "a system user"


def test_tmpfiles_creates_directories_in_a_temp_root(fake_root):
    sysusers = _tool("systemd-sysusers")
    tmpfiles = _tool("systemd-tmpfiles")
    if os.geteuid() != 0:
        pytest.skip("systemd-tmpfiles must chown to root:baie, which needs root; structure checked above")
    assert _run(sysusers, f"--root={fake_root}", "baie.conf").returncode == 0
    gid = int(
        next(
            ln.split(":")[2]
            for ln in (fake_root / "etc/group").read_text().splitlines()
            if ln.startswith("baie:")
        )
    )
    proc = _run(tmpfiles, f"--root={fake_root}", "--create", "baie.conf")
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    etc, creds = (fake_root / "etc/baie").stat(), (fake_root / "etc/baie/credentials").stat()
    assert (etc.st_mode & 0o7777, etc.st_uid, etc.st_gid) == (0o750, 0, gid)
    assert (creds.st_mode & 0o7777, creds.st_uid, creds.st_gid) == (0o700, 0, 0)
    # An existing config file gets its mode and group fixed.
    config = fake_root / "etc/baie/baie.toml"
    config.write_text("")
    config.chmod(0o644)
    assert _run(tmpfiles, f"--root={fake_root}", "--create", "baie.conf").returncode == 0
    st = config.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 0, gid)


# ---------------------------------------------------------------- MemoryDenyWriteExecute=

# The unit sets MemoryDenyWriteExecute=yes. systemd 252 implements it as a seccomp filter:
# mmap(PROT_WRITE|PROT_EXEC), mprotect/pkey_mprotect(PROT_EXEC) and shmat(SHM_EXEC) fail with
# EPERM. The probe installs the same filter in a child Python and then exercises the
# daemon's native dependencies, so a new dependency that needs W+X memory fails here.
_MDWE_PROBE = textwrap.dedent(
    r"""
    import ctypes, struct, sys
    ARCH = {"x86_64": (0xC000003E, 9, 10, 329, 30), "aarch64": (0xC00000B7, 222, 226, 288, 196)}
    audit_arch, nr_mmap, nr_mprotect, nr_pkey_mprotect, nr_shmat = ARCH[sys.argv[1]]
    PROT_WRITE, PROT_EXEC, SHM_EXEC = 2, 4, 0o100000
    LD_ABS, JEQ, JSET, AND, RET = 0x20, 0x15, 0x45, 0x54, 0x06
    ALLOW, DENY = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ERRNO | EPERM
    ARG2 = 16 + 8 * 2
    prog = [
        (LD_ABS, 0, 0, 4), (JEQ, 1, 0, audit_arch), (RET, 0, 0, ALLOW),
        (LD_ABS, 0, 0, 0),
        (JEQ, 0, 5, nr_mmap), (LD_ABS, 0, 0, ARG2), (AND, 0, 0, PROT_WRITE | PROT_EXEC),
        (JEQ, 0, 1, PROT_WRITE | PROT_EXEC), (RET, 0, 0, DENY), (RET, 0, 0, ALLOW),
        (JEQ, 1, 0, nr_mprotect), (JEQ, 0, 3, nr_pkey_mprotect), (LD_ABS, 0, 0, ARG2),
        (JSET, 0, 1, PROT_EXEC), (RET, 0, 0, DENY),
        (LD_ABS, 0, 0, 0), (JEQ, 0, 3, nr_shmat), (LD_ABS, 0, 0, ARG2),
        (JSET, 0, 1, SHM_EXEC), (RET, 0, 0, DENY), (RET, 0, 0, ALLOW),
    ]
    buf = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in prog))
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fprog = Fprog(len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(38, 1, None, 0, 0) or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0):
        print("SKIP seccomp unavailable, errno", ctypes.get_errno()); sys.exit(0)

    import mmap
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("filter not effective: a W+X mapping was allowed")
    except OSError:
        pass

    # ctypes callbacks (libffi closures)
    CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    arr = (ctypes.c_int * 3)(3, 1, 2)
    deref = lambda p: ctypes.cast(p, ctypes.POINTER(ctypes.c_int))[0]
    libc.qsort(arr, 3, 4, CB(lambda a, b: deref(a) - deref(b)))
    assert list(arr) == [1, 2, 3]

    import sqlite3, tempfile, os
    d = tempfile.mkdtemp()
    con = sqlite3.connect(os.path.join(d, "baie.db"))
    con.execute("pragma journal_mode=wal"); con.execute("create table t(x)"); con.commit()

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1()); key.sign(b"x", ec.ECDSA(hashes.SHA256()))
    import ssl; ssl.create_default_context()
    import _cffi_backend, pydantic_core, yaml, markupsafe, multidict, yarl  # noqa: F401
    pydantic_core.SchemaValidator({"type": "int"}).validate_python("1")
    import psycopg, asyncssh, pyghmi.ipmi.command, sushy, aiohttp, uvicorn, fastapi  # noqa: F401
    asyncssh.generate_private_key("ssh-ed25519")
    import pysnmp.hlapi.v3arch.asyncio  # noqa: F401
    print("OK")
    """
)


def test_memory_deny_write_execute_is_safe_for_the_stack(service, tmp_path):
    assert _one(service, "MemoryDenyWriteExecute") == "yes"
    arch = platform.machine()
    if sys.platform != "linux" or arch not in ("x86_64", "aarch64"):
        pytest.skip(f"seccomp probe written for Linux x86_64/aarch64, not {sys.platform}/{arch}")
    probe = tmp_path / "mdwe_probe.py"
    probe.write_text(_MDWE_PROBE)
    proc = _run(sys.executable, probe, arch, timeout=120)
    out = proc.stdout + proc.stderr
    if proc.stdout.startswith("SKIP"):
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), out

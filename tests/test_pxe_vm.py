"""A real PXE boot: a qemu VM gets its address and boot file from dnsmasq, run from the shipped
systemd/dnsmasq-baie.conf, and fetches its iPXE script from the daemon's boot service.

Everything runs in a network namespace the test creates (a bridge with 10.254.0.1/24 and one tap per VM;
no link out of it): the daemon (a real process on SQLite; its API is a unix socket, reachable from here),
sushy-emulator --fake as the node's BMC, dnsmasq in plain DHCP mode (nothing else hands out addresses in
there), and qemu booting the iPXE ROM of Debian's ipxe-qemu with no disk. `baie provision` writes the
node's host entry, which dnsmasq reads, and powers the node on through the emulated BMC; starting the VM
is the real power-on. The node goes booting → installing when the VM fetches its script; a second VM
whose MAC is not in the inventory gets no offer at all.

Needs root (namespaces, taps); skipped otherwise. `make system-packages` installs qemu-system-x86,
ipxe-qemu, ipxe and dnsmasq-base. The VM runs under TCG: KVM may be there and still fail a guest (nested
virtualisation), and TCG takes ~20 s from power-on to the script fetch.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from sqlmodel import select

from inventory import lifecycle
from inventory.db import make_engine
from inventory.model import Provisioning
from inventory.service import Inventory
from tests.lab.common import REPO, Process, tcp_open, wait_until
from tests.lab.redfish import SushyEmulator
from tests.test_daemon import NotifyListener
from tests.test_provisioning import PASSWORD, client_key, credentials, daemon_config, populate  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a network namespace and taps")

SHIPPED_CONF = REPO / "systemd" / "dnsmasq-baie.conf"
NETWORK = "10.254.0"  # inside the test's own namespace: nothing else sees it
ADDRESS = f"{NETWORK}.1"
BOOT_PORT = 8081
STRANGER_MAC = "52:54:00:66:66:01"  # in no inventory
QEMU = "qemu-system-x86_64"
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")  # Debian ipxe-qemu: what qemu loads for virtio-net-pci
VM_DEADLINE = 120.0  # from power-on to the script fetch: ~20 s under TCG on an idle machine
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


def in_namespace(namespace: str, fn: Callable[[], T]) -> T:
    """``fn()`` in a thread that has entered ``namespace`` (setns is per thread): its sockets, and the
    processes it starts, live in there."""
    outcome: dict[str, object] = {}

    def enter_and_run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {namespace}")
            finally:
                os.close(fd)
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 (raised again in the caller's thread)
            outcome["error"] = exc

    thread = threading.Thread(target=enter_and_run, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


class Namespace:
    """A network namespace with loopback up and a bridge holding ADDRESS/24; deleted on exit, whatever is
    left in it (stop its processes first)."""

    def __init__(self) -> None:
        self.name = f"baie-pxe-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> Namespace:
        run("ip", "netns", "add", self.name)
        try:
            self.ip("link", "set", "lo", "up")
            self.ip("link", "add", "br0", "type", "bridge")
            self.ip("addr", "add", f"{ADDRESS}/24", "dev", "br0")
            self.ip("link", "set", "br0", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        run("ip", "netns", "delete", self.name)

    def ip(self, *args: str) -> None:
        run("ip", "-n", self.name, *args)

    def tap(self, name: str) -> str:
        self.ip("tuntap", "add", "dev", name, "mode", "tap")
        self.ip("link", "set", name, "master", "br0")
        self.ip("link", "set", name, "up")
        return name

    def exec(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]


def render_dnsmasq_conf(hosts: Path, leases: Path) -> str:
    """The shipped file, switched to plain DHCP and pointed at the bridge, the boot service and the daemon's
    host entries. Each edit must apply exactly once: a change of the file's shape fails here, loudly."""
    text = SHIPPED_CONF.read_text()
    for old, new in [
        ("interface=PROV_IF\n", "interface=br0\n"),
        ("\ndhcp-range=10.20.0.0,proxy\n", "\n#dhcp-range=10.20.0.0,proxy\n"),  # the mode switch
        ("\n#dhcp-range=10.20.0.100,", "\ndhcp-range=10.20.0.100,"),
        ("dhcp-hostsdir=/run/baie-dnsmasq/hosts\n", f"dhcp-hostsdir={hosts}\n"),
        ("dhcp-leasefile=/run/baie-dnsmasq/dnsmasq.leases\n", f"dhcp-leasefile={leases}\n"),
    ]:
        assert text.count(old) == 1, f"{SHIPPED_CONF.name}: expected {old!r} once"
        text = text.replace(old, new)
    assert ":8081/" in text
    return text.replace("10.20.0.1:8081", f"{ADDRESS}:{BOOT_PORT}").replace("10.20.0.", f"{NETWORK}.")


def boot_vm(namespace: Namespace, tap: str, mac: str, directory: Path) -> tuple[Process, Path]:
    """Power on: a diskless VM that network-boots its NIC's iPXE ROM; the serial console goes to a file."""
    serial = directory / f"vm-{mac.replace(':', '')}.serial"
    vm = Process(namespace.exec(QEMU, "-accel", "tcg", "-m", "256", "-nographic", "-nodefaults", "-monitor", "none",
                                "-serial", f"file:{serial}", "-boot", "n",
                                "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
                                "-device", f"virtio-net-pci,netdev=n0,mac={mac}"),
                 log=directory / f"vm-{mac.replace(':', '')}.log")
    return vm, serial


def text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.timeout(VM_DEADLINE + 120)
def test_a_vm_pxe_boots_through_dnsmasq_and_fetches_its_ipxe_script(tmp_path, sqlite_template, credentials):
    dnsmasq = shutil.which("dnsmasq", path=os.environ.get("PATH", "") + ":/usr/sbin")
    for binary, path in ((QEMU, shutil.which(QEMU)), ("dnsmasq", dnsmasq), ("ipxe-qemu", IPXE_ROM.is_file())):
        assert path, f"{binary} is missing: `make system-packages` installs it"
    hosts = tmp_path / "hosts"
    hosts.mkdir()
    database = tmp_path / "baie.db"
    shutil.copy(sqlite_template, database)
    database_url = f"sqlite:///{database}"
    dnsmasq_log = tmp_path / "dnsmasq.log"

    with ExitStack() as stack:
        run_dir = Path(tempfile.mkdtemp(prefix="baie-pxe-"))  # short unix socket paths
        stack.callback(shutil.rmtree, run_dir, ignore_errors=True)
        ns = stack.enter_context(Namespace())
        # the BMC, on the namespace's loopback, where the daemon reaches it
        bmc = in_namespace(ns.name, lambda: SushyEmulator("127.0.0.1", username="admin", password=PASSWORD,
                                                          tls=True).__enter__())
        stack.push(bmc.__exit__)
        engine = make_engine(database_url)
        populate(Inventory(engine), bmc)  # hv-1, its NIC the BMC's MAC, in a rack with power headroom
        engine.dispose()

        conf = tmp_path / "dnsmasq-baie.conf"
        conf.write_text(render_dnsmasq_conf(hosts, tmp_path / "dnsmasq.leases"))
        run(*ns.exec(dnsmasq, "--test", f"--conf-file={conf}"))  # as baie-dnsmasq.service's ExecStartPre
        # --user=root: the test's directories are not readable by dnsmasq's own user
        dns = Process(ns.exec(dnsmasq, "--keep-in-foreground", f"--conf-file={conf}", "--pid-file=",
                              f"--log-facility={dnsmasq_log}", "--user=root"), log=tmp_path / "dnsmasq.out")
        stack.callback(dns.stop)
        wait_until(lambda: "sockets bound exclusively to interface br0" in text(dnsmasq_log), deadline=30,
                   what="dnsmasq on br0")

        config = daemon_config(tmp_path, database_url, credentials, socket=run_dir / "api.sock", bmc_port=bmc.port,
                               listen=f"{ADDRESS}:{BOOT_PORT}", timeouts={"booting": VM_DEADLINE + 60})
        notify = NotifyListener(str(run_dir / "notify"))  # a path: abstract sockets stay in their namespace
        stack.callback(notify.close)
        daemon = Process(ns.exec(sys.executable, "-m", "daemon", "--config", str(config)), log=tmp_path / "daemon.log",
                         cwd=REPO, env={"NOTIFY_SOCKET": notify.address, "PYTHONUNBUFFERED": "1"})
        stack.callback(daemon.stop)
        notify.wait_for("READY=1", deadline=60, sender=daemon)
        assert in_namespace(ns.name, lambda: tcp_open(ADDRESS, BOOT_PORT)), "the boot service is not on the bridge"

        api = httpx.Client(transport=httpx.HTTPTransport(uds=str(run_dir / "api.sock")), base_url="http://baie",
                           timeout=30, headers={"X-Baie-Actor": "cli:pxe-test"})
        stack.callback(api.close)

        def provision() -> None:
            try:
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(run_dir / "api.sock")),
                                  base_url="http://baie", timeout=VM_DEADLINE + 120) as client:
                    client.post("/api/v1/provision", json={"profile": "kvm", "nodes": ["hv-1"]})
            except httpx.HTTPError:
                pass  # the daemon is stopped under this request; the test reads the node's history

        threading.Thread(target=provision, daemon=True).start()

        def history() -> list[tuple[str, str, str]]:
            return [(t["source"], t["target"], t["reason"]) for t in api.get("/api/v1/nodes/hv-1/history").json()]

        # the daemon wrote the node's host entry and dnsmasq read it: now the node may be powered on
        wait_until(lambda: any(t[:2] == ("available", "booting") for t in history()), deadline=30,
                   what="hv-1 booting")
        assert (hosts / "hv-1").read_text() == f"{bmc.NIC_MAC},set:baie\n"
        wait_until(lambda: f"read {hosts / 'hv-1'}" in text(dnsmasq_log), deadline=30,
                   what="dnsmasq reading hv-1's host entry")

        vm, serial = boot_vm(ns, ns.tap("tap0"), bmc.NIC_MAC, tmp_path)
        stack.callback(vm.stop)
        stranger, stranger_serial = boot_vm(ns, ns.tap("tap1"), STRANGER_MAC, tmp_path)
        stack.callback(stranger.stop)

        def fetched() -> bool:
            return ("booting", "installing", "the node fetched its iPXE script") in history()

        try:
            wait_until(lambda: not vm.alive() or fetched(), deadline=VM_DEADLINE,
                       what="hv-1's VM fetching its iPXE script", interval=0.5)
            assert vm.alive(), f"the VM exited:\n{vm.output()}"
        except (TimeoutError, AssertionError) as exc:
            raise AssertionError(f"{exc}\n"
                                 f"no script fetch:\n--- serial\n{text(serial)[-3000:]}\n--- dnsmasq\n"
                                 f"{text(dnsmasq_log)[-3000:]}\n--- daemon\n{daemon.output()[-3000:]}") from None
        # what the VM's console shows: iPXE got the boot file from dnsmasq, asked again with its MAC and ran
        # the node's script, which fetches the kernel from the boot service
        wait_until(lambda: f"{ADDRESS}:{BOOT_PORT}/boot/images/debian12/kernel" in text(serial), deadline=30,
                   what="the node's script running on the VM")
        console = text(serial)
        assert f"Filename: http://{ADDRESS}:{BOOT_PORT}/boot/ipxe" in console, console
        # the chain script, then the node's (iPXE prints the URL without its query, ?mac=...)
        assert console.count(f"http://{ADDRESS}:{BOOT_PORT}/boot/ipxe... ok") == 2, console
        leases = text(dnsmasq_log)
        assert re.search(rf"DHCPACK\(br0\) {re.escape(NETWORK)}\.\d+ {bmc.NIC_MAC}", leases), leases

        # the stranger, booting alongside, was ignored: no offer, no boot file
        wait_until(lambda: f"DHCPDISCOVER(br0) {STRANGER_MAC} ignored" in text(dnsmasq_log), deadline=30,
                   what="dnsmasq ignoring the stranger's DISCOVER")
        stranger.stop()
        log = text(dnsmasq_log)
        assert not re.search(rf"(DHCPOFFER|DHCPACK|PXE)\(br0\) \S+ {STRANGER_MAC}", log), log
        assert "Filename:" not in text(stranger_serial)

        vm.stop()
        daemon.proc.terminate()
        assert daemon.proc.wait(30) == 0, daemon.output()
        engine = make_engine(database_url)
        inventory = Inventory(engine)
        last = lifecycle.history(inventory, "hv-1")[-1]
        with inventory.session() as s:
            [attempt] = s.exec(select(Provisioning)).all()
        engine.dispose()
        assert attempt.mac == bmc.NIC_MAC and attempt.script_served_at is not None  # served for the VM's MAC
        assert (last.source, last.target, last.reason) == ("installing", "installing_failed", "the daemon stopped")

"""An installed KVM hypervisor as SSH sees it: an asyncssh server with its own host key that answers the
commands baie runs (verification, pool join, drain, erase) with the output a real Debian host gives."""

from __future__ import annotations

import json

import asyncssh

CPU_FLAGS = ("flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi "
             "mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc arch_perfmon pebs bts "
             "rep_good nopl xtopology nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx smx est "
             "tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid dca sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c "
             "rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb cat_l3 cdp_l3 invpcid_single intel_ppin ssbd mba "
             "ibrs ibpb stibp tpr_shadow vnmi flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 avx2 smep bmi2 "
             "erms invpcid rdt_a avx512f avx512dq rdseed adx smap clflushopt clwb intel_pt avx512cd avx512bw "
             "avx512vl xsaveopt xsavec xgetbv1 xsaves dtherm ida arat pln pts pku ospke md_clear flush_l1d "
             "arch_capabilities\n")
DISKS = [("nvme0n1", 1920383410176, "S4YNNE0R600123"), ("nvme1n1", 1920383410176, "S4YNNE0R600456")]
VIRSH_VERSION = ("Compiled against library: libvirt 9.0.0\nUsing library: libvirt 9.0.0\n"
                 "Using API: QEMU 9.0.0\nRunning hypervisor: QEMU 7.2.0\n")


def _lsblk() -> str:
    devices = [{"name": name, "size": size, "type": "disk", "serial": serial} for name, size, serial in DISKS]
    devices.append({"name": "sr0", "size": 1073741312, "type": "rom", "serial": "VB2-01700376"})
    return json.dumps({"blockdevices": devices}, indent=3) + "\n"


def _ip_link(mac: str) -> str:
    return json.dumps([
        {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"], "mtu": 65536, "qdisc": "noqueue",
         "operstate": "UNKNOWN", "linkmode": "DEFAULT", "group": "default", "txqlen": 1000,
         "link_type": "loopback", "address": "00:00:00:00:00:00", "broadcast": "00:00:00:00:00:00"},
        {"ifindex": 2, "ifname": "eno1", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "mtu": 1500,
         "qdisc": "mq", "master": "br0", "operstate": "UP", "linkmode": "DEFAULT", "group": "default",
         "txqlen": 1000, "link_type": "ether", "address": mac, "broadcast": "ff:ff:ff:ff:ff:ff"},
        {"ifindex": 3, "ifname": "virbr0", "flags": ["NO-CARRIER", "BROADCAST", "MULTICAST", "UP"], "mtu": 1500,
         "qdisc": "noqueue", "operstate": "DOWN", "linkmode": "DEFAULT", "group": "default", "txqlen": 1000,
         "link_type": "ether", "address": "52:54:00:8e:1f:0a", "broadcast": "ff:ff:ff:ff:ff:ff"},
    ]) + "\n"


class InstalledHost:
    """``async with InstalledHost(client_public_key, mac) as host``: listening on 127.0.0.1:host.port with a
    fresh ed25519 host key (``host.public_key``). ``commands`` lists what was run; ``answers`` may be changed."""

    def __init__(self, client_public_key: str, mac: str) -> None:
        self.key = asyncssh.generate_private_key("ssh-ed25519")
        self.public_key = self.key.export_public_key().decode().strip()
        self._authorized = asyncssh.import_authorized_keys(client_public_key + "\n")
        self.commands: list[str] = []
        self.answers: dict[str, tuple[int, str]] = {
            "stat --format=%F /dev/kvm": (0, "character special file\n"),
            "systemctl is-active libvirtd": (0, "active\n"),
            "grep -m1 '^flags' /proc/cpuinfo": (0, CPU_FLAGS),
            "lsblk --json --bytes --nodeps --output NAME,SIZE,TYPE,SERIAL": (0, _lsblk()),
            "ip -json link show": (0, _ip_link(mac)),
            "virsh --connect qemu:///system version": (0, VIRSH_VERSION),
            "virsh --connect qemu:///system list --name": (0, "\n"),
            **{f"blkdiscard --force /dev/{name}": (0, "") for name, _, _ in DISKS},
            **{f"cmp --bytes=16777216 /dev/{name} /dev/zero": (0, "") for name, _, _ in DISKS},
        }
        self.port = 0
        self._server: asyncssh.SSHAcceptor | None = None

    async def _answer(self, process: asyncssh.SSHServerProcess) -> None:
        command = process.command or ""
        self.commands.append(command)
        status, out = self.answers.get(command, (127, None))
        if out is None:
            process.stderr.write(f"bash: line 1: {command.split()[0]}: command not found\n")
        else:
            process.stdout.write(out)
        process.exit(status)

    async def __aenter__(self) -> InstalledHost:
        self._server = await asyncssh.create_server(
            asyncssh.SSHServer, "127.0.0.1", 0, server_host_keys=[self.key],
            authorized_client_keys=self._authorized, process_factory=self._answer)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()

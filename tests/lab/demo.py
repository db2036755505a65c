"""`make demo`: start the simulated lab and the daemon on SQLite, discover the lab, show what was found.

Everything listens on loopback: the lab's BMCs on 127.0.10.8/29, a Redfish CDU on 127.0.10.20 and two
SNMPv3 PDUs on 127.0.10.21-22. Each Redfish peer has its own self-signed certificate; the lab's CA bundle
is all of them, as a site CA would be. State goes to demo-state/ in the repository (git ignores it), made
afresh on every run. With a terminal, the lab and the daemon keep running until Enter is pressed, so that
the CLI can be tried against them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from contextlib import ExitStack
from pathlib import Path

from tests.lab.common import MOCKUPS, REPO, VENV_BIN, Process, free_port, wait_until, write_credential
from tests.lab.ipmi import BmcSpec, IpmiSim
from tests.lab.redfish import SushyStatic
from tests.lab.snmp import SimUser, SnmpSim, agent_dir

STATE = REPO / "demo-state"
LAB_NET = "127.0.10"
# public-liquid-cooled-server reports the same serial and UUID as public-rackmount1: one of them is enough.
REDFISH_TREES = ["public-rackmount1", "DL325", "Intel"]
DECLARED_SERIAL = "437XR1138R2"  # public-rackmount1's server, declared in rack LAB-R1 before it is discovered
SNMP_DATA = REPO / "tests" / "data" / "snmp"
SNMP_USER = SimUser("baie", "demo-auth-key-1", "demo-priv-key-1")


def lab_yaml(redfish_port: int, snmp_port: int) -> str:
    return textwrap.dedent(f"""\
        # The simulated lab: BMCs on {LAB_NET}.8/29, one water-cooled rack with A/B feeds.
        sites:
          - name: lab
            country_code: FR
            jurisdiction: France
            role: primary
            description: simulated lab on loopback
            locations: [{{name: lab-room}}]
            discovery:
              - {{cidr: {LAB_NET}.8/29, protocols: [redfish, ipmi]}}
            cooling_units:
              - name: lab-cdu
                location: lab-room
                address: {LAB_NET}.20
                port: {redfish_port}
                protocol: redfish
                loops:
                  - {{name: lab-loop, supply_temperature_max_c: 32, flow_min_lpm: 40}}
            power_panels:
              - name: lab-pp
                location: lab-room
                feeds:
                  - {{name: A1, side: A, rack: LAB-R1, voltage: 230, amperage: 32, phase: single, max_utilization: 80}}
                  - {{name: B1, side: B, rack: LAB-R1, voltage: 230, amperage: 32, phase: single, max_utilization: 80}}
            racks:
              - {{name: LAB-R1, location: lab-room, u_height: 42, power_budget_watts: 5500, cooling_loop: lab-loop}}
            pdus:
              - name: lab-pdu-a
                rack: LAB-R1
                feed: lab-pp/A1
                address: {LAB_NET}.21
                port: {snmp_port}
                protocol: snmp
                outlets:
                  - {{index: 1, name: u20-psu1, node: {DECLARED_SERIAL}, psu: PSU1}}
              - name: lab-pdu-b
                rack: LAB-R1
                feed: lab-pp/B1
                address: {LAB_NET}.22
                port: {snmp_port}
                protocol: snmp
                outlets:
                  - {{index: 1, name: u20-psu2, node: {DECLARED_SERIAL}, psu: PSU2}}
            nodes:
              - {{serial: {DECLARED_SERIAL}, name: lab-r1-u20, rack: LAB-R1, position: 20, u_height: 1}}
        """)


def write_config(redfish_port: int, ipmi_port: int, ca_bundle: Path) -> Path:
    credentials = STATE / "credentials"
    write_credential(credentials, "bmc-default", "admin:password\n")
    write_credential(credentials, "snmp-default", f'username = "{SNMP_USER.name}"\n'
                     f'auth_key = "{SNMP_USER.auth_key}"\npriv_key = "{SNMP_USER.priv_key}"\n')
    config = STATE / "baie.toml"
    config.write_text(textwrap.dedent(f"""\
        [database]
        url = "sqlite:///{STATE / 'baie.db'}"
        [api]
        socket = "{STATE / 'run' / 'api.sock'}"
        [credentials]
        directory = "{credentials}"
        [bmc]
        redfish_port = {redfish_port}
        ipmi_port = {ipmi_port}
        timeout_seconds = 10
        ca_bundle = "{ca_bundle}"
        [discovery]
        probe_timeout_seconds = 1.0
        [telemetry]
        sites = ["lab"]  # example.yaml's sites are on 10.x networks that are not here: nothing may go there
        bmc_interval_seconds = 10
        pdu_interval_seconds = 5
        cdu_interval_seconds = 5
        refresh_seconds = 5
        flush_seconds = 1
        """))
    return config


def baie(*args: str, config: Path, check: bool = True) -> None:
    print(f"\n$ baie {' '.join(args)}", flush=True)
    # Tables are as wide as the terminal; piped to a file or a pager they would be cut to 80 columns.
    env = os.environ if sys.stdout.isatty() else {**os.environ, "COLUMNS": "160"}
    result = subprocess.run([str(VENV_BIN / "baie"), "--config", str(config), *args], cwd=REPO, env=env)
    if check and result.returncode != 0:
        raise SystemExit(f"demo: `baie {' '.join(args)}` failed with exit code {result.returncode}")


def power_reported(config: Path) -> bool:
    result = subprocess.run([str(VENV_BIN / "baie"), "--config", str(config), "power-usage", "--site", "lab",
                             "--json"], cwd=REPO, capture_output=True, text=True)
    return result.returncode == 0 and '"draw_watts": null' not in result.stdout and "draw_watts" in result.stdout


def main() -> int:
    if not MOCKUPS.is_dir():
        print(f"demo: the Redfish mockups are expected at {MOCKUPS}", file=sys.stderr)
        return 1
    shutil.rmtree(STATE, ignore_errors=True)
    STATE.mkdir()
    redfish_port = free_port(f"{LAB_NET}.9")
    ipmi_port = free_port(f"{LAB_NET}.12", socket.SOCK_DGRAM)
    snmp_port = free_port(f"{LAB_NET}.21", socket.SOCK_DGRAM)
    (STATE / "lab.yaml").write_text(lab_yaml(redfish_port, snmp_port))
    with ExitStack() as lab:
        print("Starting the lab: Redfish BMCs and a CDU (sushy-static, HTTPS), an IPMI BMC (ipmi_sim), "
              "two SNMPv3 PDUs (snmpsim) ...", flush=True)
        peers = [lab.enter_context(SushyStatic(tree, f"{LAB_NET}.{9 + i}", redfish_port, tls=True))
                 for i, tree in enumerate(REDFISH_TREES)]
        peers.append(lab.enter_context(SushyStatic("public-cooling-unit", f"{LAB_NET}.20", redfish_port, tls=True)))
        lab.enter_context(IpmiSim(BmcSpec(product_serial="LAB-IPMI-0001", board_serial="LAB-BOARD-0001",
                                          address=f"{LAB_NET}.12", port=ipmi_port)))
        for i, side in enumerate("ab"):
            data = agent_dir(STATE / f"pdu-{side}", SNMP_DATA / "apc.snmprec")
            lab.enter_context(SnmpSim(data, v3_users=[SNMP_USER], host=f"{LAB_NET}.{21 + i}", port=snmp_port))
        ca_bundle = STATE / "lab-ca.pem"
        ca_bundle.write_text("".join(peer.ca_file.read_text() for peer in peers))
        config = write_config(redfish_port, ipmi_port, ca_bundle)
        baie("db", "upgrade", config=config)
        baie("import", str(REPO / "tests" / "data" / "example.yaml"), config=config)
        baie("import", str(STATE / "lab.yaml"), config=config)
        daemon = Process([str(VENV_BIN / "baie"), "daemon", "--config", str(config)], log=STATE / "daemon.log",
                         cwd=REPO)
        lab.callback(daemon.stop)
        socket_path = STATE / "run" / "api.sock"
        wait_until(lambda: daemon.alive() and socket_path.is_socket(), deadline=30, what="the daemon")
        baie("status", config=config)
        baie("discover", "lab", config=config)
        baie("sites", config=config)
        baie("nodes", "--site", "lab", config=config)
        baie("node", "show", DECLARED_SERIAL, config=config)
        baie("power", DECLARED_SERIAL, "status", config=config)
        print("\nWaiting for the first telemetry cycle ...", flush=True)
        wait_until(lambda: power_reported(config), deadline=60, what="the lab's power readings", interval=1.0)
        baie("power-usage", "--site", "lab", config=config)
        baie("cooling", "--site", "lab", config=config)
        baie("rack", "show", "lab/LAB-R1", config=config)
        baie("events", "--since", "1h", "--subject", "node/lab-r1-u20", config=config)
        print(f"\nThe daemon's log is {STATE / 'daemon.log'}.")
        if sys.stdin.isatty():
            print(f"The lab and the daemon are running. In another shell:\n"
                  f"  export BAIE_CONFIG={config}\n  {VENV_BIN / 'baie'} nodes\n"
                  "Press Enter to stop them.")
            input()
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())

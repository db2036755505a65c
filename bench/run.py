"""`make bench`: the fleet benchmark, every section in one run on this machine, side by side.

    python -m bench.run            # the full run (~15 min on 2 cores)
    python -m bench.run --quick    # a scaled-down smoke run (~3 min)
    python -m bench.run --only redfish,snmp

Writes bench/results/results.json (everything measured) and results.md (targets, measured, pass/fail,
ratio vs the baseline). Every simulator listens on 127.0.0.0/8; every loop is bounded and stops by itself.
The machine is shared: the load average before and after each section is recorded beside its numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.fleet import (
    IPMI_PORT, REDFISH_PORT, SNMP_PORT, IpmiFleet, RedfishFleet, SnmpFleet, address,
    pdu_address, raise_fd_limit)
from bench.poller import fill_nodes, proc_cpu, quiet_logs
from tests.lab.redfish import make_certificate

RESULTS = Path(__file__).resolve().parent / "results"
ARTEFACTS = "artefacts"  # beside the sections' work directories: files copied beside the results at the end
REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


@dataclass(frozen=True)
class Scale:
    redfish_ns: tuple[int, ...]
    interval: float          # per-BMC timer interval: under the 15 s target, so a loop that cannot keep up shows it
    cycles: int              # the steady window, in intervals
    baseline_bmcs: int       # BMCs the baseline cycles over (its cache holds them all)
    baseline_seconds: float
    tarpit_n: int
    sweep_prefix: int        # /20
    pdus: int
    snmp_processes: int
    snmp_in_flight: int      # PDUs polled at once (each with up to 4 walks in flight)
    ipmi_bmcs: int
    ipmi_deadline: float     # seconds for both cycles; then the worker's stacks are dumped and it is killed
    nodes: int
    readings: int


FULL = Scale(redfish_ns=(1000, 5000, 10000), interval=10.0, cycles=3, baseline_bmcs=250, baseline_seconds=60,
             tarpit_n=2000, sweep_prefix=20, pdus=1000, snmp_processes=4, snmp_in_flight=32, ipmi_bmcs=2000,
             ipmi_deadline=300, nodes=10000,
             readings=100_000)
QUICK = Scale(redfish_ns=(300,), interval=5.0, cycles=2, baseline_bmcs=40, baseline_seconds=10, tarpit_n=300,
              sweep_prefix=24, pdus=60, snmp_processes=2, snmp_in_flight=16, ipmi_bmcs=100, ipmi_deadline=120,
              nodes=1000, readings=10_000)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_worker(module: str, config: dict, workdir: Path, name: str, timeout: float) -> dict:
    """``python -m MODULE CONFIG OUT`` in its own process (its CPU, RSS, fds and threads are its own)."""
    cfg, out = workdir / f"{name}.json", workdir / f"{name}.out.json"
    cfg.write_text(json.dumps(config))
    proc = subprocess.run([PY, "-m", module, str(cfg), str(out)], cwd=REPO, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {name} exited with {proc.returncode}")
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------ sections
def section_redfish(scale: Scale, work: Path) -> dict:
    largest = max(scale.redfish_ns)
    # one certificate for the fleet; the baseline verifies it as a CA bundle, so its BMCs' addresses are SANs
    cert, key, fingerprint = make_certificate(work, *(address(1, i) for i in range(scale.baseline_bmcs)),
                                              stem="fleet")
    out: dict = {"fleet": {"latency_ms": [20, 100], "scheme": "https", "tls": "EC P-256, pinned (ours) / "
                           "CA bundle (baseline)", "server_keepalive_s": 300},
                 "scheduler": "daemon.telemetry.TelemetryLoop", "runs": {}}
    with RedfishFleet(largest, work, net=1, cert=cert, key=key) as fleet:
        log(f"redfish fleet up: {largest} BMCs in {len(fleet.children)} processes")
        for n in scale.redfish_ns:
            log(f"redfish: our telemetry loop over {n} BMCs, every {scale.interval:g} s")
            config = {"net": 1, "count": n, "port": REDFISH_PORT, "fingerprint": fingerprint, "workdir": str(work),
                      "interval": scale.interval, "cycles": scale.cycles}
            if n == largest:
                config["profile"] = str(work / "profile-loop.txt")
            load0 = loadavg()
            out["runs"][str(n)] = run_worker("bench.poller", config, work, f"poller-{n}", timeout=1800)
            out["runs"][str(n)]["loadavg"] = [load0, loadavg()]
        # At every interval above, the loop does what the BMCs' timers ask; its ceiling needs more asked of it.
        log(f"redfish: the ceiling: {largest} BMCs, every {scale.interval / 2:g} s")
        config = {"net": 1, "count": largest, "port": REDFISH_PORT, "fingerprint": fingerprint,
                  "workdir": str(work), "interval": scale.interval / 2, "cycles": 2 * scale.cycles}
        load0 = loadavg()
        out["ceiling"] = run_worker("bench.poller", config, work, "poller-ceiling", timeout=1800)
        out["ceiling"]["loadavg"] = [load0, loadavg()]
        log(f"redfish: baseline (sushy, 8 threads) over {scale.baseline_bmcs} BMCs")
        load0 = loadavg()
        out["baseline"] = run_worker("bench.baseline", {
            "net": 1, "port": REDFISH_PORT, "ca_bundle": str(cert), "warm_count": scale.baseline_bmcs,
            "duration": scale.baseline_seconds}, work, "baseline", timeout=1800)
        out["baseline"]["loadavg"] = [load0, loadavg()]
    if (work / "profile-loop.txt").exists():
        (work / "profile-loop.txt").rename(work.parent / ARTEFACTS / "profile-redfish-loop.txt")
    return out


def section_tarpit(scale: Scale, work: Path) -> dict:
    """5 % tarpits vs 0 %: the same N and interval, the daemon's defaults, against two fleets."""
    n = scale.tarpit_n
    cert, key, fingerprint = make_certificate(work, address(5, 0), stem="fleet")
    out: dict = {"count": n, "tarpit_share": 0.05, "request_timeout_s": 10.0, "interval_s": scale.interval,
                 "runs": {}}
    for share in (0.0, 0.05):
        name = f"{share:.0%}"
        with RedfishFleet(n, work, net=5, cert=cert, key=key, tarpit_share=share) as fleet:
            log(f"tarpit: {n} BMCs, {name} tarpits, {len(fleet.children)} fleet processes")
            config = {"net": 5, "count": n, "port": REDFISH_PORT, "fingerprint": fingerprint, "timeout": 10.0,
                      "tarpit_share": share, "workdir": str(work), "interval": scale.interval, "cycles": 3}
            load0 = loadavg()
            run = run_worker("bench.poller", config, work, f"poller-tarpit-{name}", timeout=1800)
            run["loadavg"] = [load0, loadavg()]
            out["runs"][name] = run
    return out


def section_discovery(scale: Scale, work: Path) -> dict:
    import ipaddress

    from daemon.bmc import BmcAccess
    from daemon.config import BmcSettings, DiscoverySettings
    from daemon.credentials import CredentialStore
    from daemon.discovery import Discovery, addresses
    from inventory.db import make_engine
    from inventory.service import Inventory

    cidr = f"127.2.0.0/{scale.sweep_prefix}"
    hosts = addresses([cidr])
    live = {h for k, h in enumerate(hosts) if k % 20 == 0}  # 5 %
    spec = [(k, h, "healthy" if h in live else "blackhole") for k, h in enumerate(hosts)]
    cert, key, _ = make_certificate(work, hosts[0], stem="fleet")
    bmc_settings = BmcSettings(redfish_port=REDFISH_PORT, ipmi_port=IPMI_PORT, redfish_scheme="https")
    out: dict = {"range": cidr, "addresses": len(hosts), "live": len(live), "protocols": ["redfish", "ipmi"],
                 "probe_timeout_s": DiscoverySettings().probe_timeout_seconds,
                 "dead_addresses": "blackholed (TCP accepted by no one, UDP read by no one): probes time out",
                 "sweeps": {}}
    with RedfishFleet(len(hosts), work, net=2, cert=cert, key=key, hosts=spec, udp_port=IPMI_PORT):
        # the default concurrency, and twice it: a sweep of mostly dead addresses is bound by probe timeouts
        for concurrency in (DiscoverySettings().concurrency, 2 * DiscoverySettings().concurrency):
            discovery = Discovery(Inventory(make_engine(f"sqlite:///{work / f'discovery-{concurrency}.db'}")),
                                  BmcAccess(bmc_settings, CredentialStore(work)),
                                  DiscoverySettings(concurrency=concurrency))
            log(f"discovery: sweep of {cidr} ({len(hosts)} addresses, {len(live)} live), redfish+ipmi, "
                f"{concurrency} probes in flight")
            t0, load0 = time.monotonic(), loadavg()
            found = asyncio.run(discovery.sweep([(h, ["redfish", "ipmi"]) for h in hosts]))
            out["sweeps"][str(concurrency)] = {"seconds": round(time.monotonic() - t0, 2), "found": len(found),
                                               "loadavg": [load0, loadavg()]}
            log(f"  {out['sweeps'][str(concurrency)]}")
    assert ipaddress.ip_network(cidr).is_loopback
    return out


def section_snmp(scale: Scale, work: Path) -> dict:
    """SNMPv3 PDUs polled the daemon's way: by its poll worker (one, the default), at most ``snmp_in_flight`` at
    once; the client's CPU is the worker's."""
    from daemon.poll_workers import PollWorkers
    from drivers.base import DriverError, Secret
    from drivers.redfish_telemetry import DeviceKind
    from drivers.snmp import SnmpTarget, SnmpV3User

    out: dict = {"pdus": scale.pdus, "outlets": 24, "processes": scale.snmp_processes, "v3": "SHA-256/AES-128",
                 "data_files_per_process": 24, "poll_workers": 1,
                 "per_poll": "SnmpPdu.read_telemetry: the outlet table's 5 columns walked together, then the "
                             "inputs' 5"}
    with SnmpFleet(scale.pdus, work, processes=scale.snmp_processes) as fleet:
        user = SnmpV3User(fleet.user, Secret(fleet.auth_key), Secret(fleet.priv_key))
        targets = [SnmpTarget(pdu_address(i), SNMP_PORT, v3=user, context=fleet.context(i), timeout=10.0, retries=1)
                   for i in range(scale.pdus)]

        async def main() -> dict:
            workers = PollWorkers(1, max_in_flight=16)
            try:
                ready_by = time.monotonic() + 120
                for k in range(0, len(targets), max(1, len(targets) // scale.snmp_processes)):
                    while True:  # each simulator indexes its data files before it answers
                        try:
                            await workers.poll(targets[k], DeviceKind.RACK_PDU)
                            break
                        except DriverError:
                            if time.monotonic() > ready_by:
                                raise
                # Not the telemetry loop's 256: with ~1,000 walks queued at the simulators every walk overruns
                # its deadline (measured: 933 of 1,000 PDUs timed out at 256 in flight).
                gate = asyncio.Semaphore(scale.snmp_in_flight)
                result: dict = {"pdus_in_flight": scale.snmp_in_flight}

                async def one(target: SnmpTarget) -> int:
                    async with gate:
                        return len(await workers.poll(target, DeviceKind.RACK_PDU))

                [pid] = workers.pids()
                for cycle in range(2):
                    if cycle == 1 and result["cycle1"]["seconds"] > 90:
                        break  # bounded: a second slow cycle would say nothing new
                    w0, c0, load0 = time.monotonic(), _proc_cpu(pid), loadavg()
                    got = await asyncio.gather(*(one(t) for t in targets), return_exceptions=True)
                    errors = [type(g).__name__ for g in got if isinstance(g, BaseException)]
                    result[f"cycle{cycle + 1}"] = {
                        "seconds": round(time.monotonic() - w0, 2), "cpu_s": round(_proc_cpu(pid) - c0, 2),
                        "ok": len(got) - len(errors), "errors": {e: errors.count(e) for e in set(errors)},
                        "readings": sum(g for g in got if isinstance(g, int)), "loadavg": [load0, loadavg()]}
                    log(f"  snmp cycle {cycle + 1}: {result[f'cycle{cycle + 1}']}")
                return result
            finally:
                await workers.close(5.0)

        log(f"snmp: {scale.pdus} PDUs over {scale.snmp_processes} snmpsim processes, polled by a poll worker")
        out.update(asyncio.run(main()))
        out["simulator_cpu_s"] = [_proc_cpu(pid) for pid in fleet.pids()]
    return out


def _proc_cpu(pid: int) -> float | None:
    try:
        return round(proc_cpu(f"/proc/{pid}/stat"), 2)
    except OSError:
        return None


def section_ipmi(scale: Scale, work: Path) -> dict:
    """bench.ipmi in its own process, with a deadline: a hung cycle is recorded with the threads' stacks."""
    out: dict = {"bmcs": scale.ipmi_bmcs, "per_process": 100}
    with IpmiFleet(scale.ipmi_bmcs, work) as fleet:
        log(f"ipmi: {scale.ipmi_bmcs} BMCs in {len(fleet.children)} ipmi_sim processes")
        cfg, result = work / "ipmi.json", work / "ipmi.out.json"
        cfg.write_text(json.dumps({"addresses": fleet.addresses(), "port": IPMI_PORT}))
        proc = subprocess.Popen([PY, "-m", "bench.ipmi", str(cfg), str(result)], cwd=REPO)
        try:
            proc.wait(timeout=scale.ipmi_deadline)
        except subprocess.TimeoutExpired:
            spy = Path(PY).with_name("py-spy")
            dump = subprocess.run([str(spy), "dump", "--pid", str(proc.pid)], capture_output=True, text=True,
                                  timeout=60) if spy.exists() else None
            out["hung"] = f"not done within {scale.ipmi_deadline:g} s: killed"
            if dump is not None:
                (work.parent / ARTEFACTS / "ipmi-hang-stacks.txt").write_text(dump.stdout)
                out["stacks"] = "ipmi-hang-stacks.txt"
                out["threads_in_pyghmi"] = dump.stdout.count("Session.raw_command")
            proc.kill()
            proc.wait()
        if result.exists():
            out.update(json.loads(result.read_text()))
    return out


def section_inventory(scale: Scale, work: Path) -> dict:
    out: dict = {"nodes": scale.nodes, "readings": scale.readings}
    sqlite_url = f"sqlite:///{work / 'inventory.db'}"
    log(f"inventory: {scale.nodes} nodes into SQLite, then `baie nodes --json`")
    fill_nodes(sqlite_url, scale.nodes)
    baie = Path(PY).with_name("baie")
    timings = []
    for _ in range(3):
        t0 = time.monotonic()
        proc = subprocess.run([str(baie), "--database-url", sqlite_url, "nodes", "--json"], cwd=work,
                              capture_output=True, timeout=600)
        timings.append(time.monotonic() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"baie nodes --json failed: {proc.stderr.decode()[-500:]}")
    out["nodes_json"] = {"seconds": round(min(timings), 2), "runs": [round(t, 2) for t in timings],
                         "bytes": len(proc.stdout), "nodes_listed": len(json.loads(proc.stdout))}
    log(f"  baie nodes --json: {out['nodes_json']}")
    out["ingest_sqlite"] = _ingest(sqlite_url, scale.readings)
    log(f"  ingest SQLite: {out['ingest_sqlite']}")
    pg = _postgres_database()
    if pg is None:
        out["ingest_postgresql"] = {"skipped": "PostgreSQL does not answer on 127.0.0.1:5432"}
    else:
        url, drop = pg
        try:
            from inventory.db import upgrade
            upgrade(url)
            out["ingest_postgresql"] = _ingest(url, scale.readings)
        finally:
            drop()
        log(f"  ingest PostgreSQL: {out['ingest_postgresql']}")
    return out


def _ingest(url: str, total: int, batch: int = 5000, rounds: int = 5) -> dict:
    """``total`` readings as ``rounds`` polls of the same series, 15 s apart: the first round also creates
    the series; the others are the steady state."""
    from inventory.db import make_engine
    from inventory.service import Inventory
    from inventory.telemetry import ReadingIn, store_readings

    engine = make_engine(url)
    inventory = Inventory(engine)
    now = datetime.now(UTC)
    metrics = ("baie_node_power_watts", "baie_temperature_celsius", "baie_fan_speed_rpm", "baie_psu_input_power_watts")
    per_round = total // rounds
    timings = []
    for r in range(rounds):
        readings = [ReadingIn(metrics[k % 4], {"site": "bench", "rack": f"R{k // 800:04d}",
                                               "node": f"node-{k // 20:05d}", "sensor": f"s{k % 20}"},
                              float((k + r) % 500), now + timedelta(seconds=15 * r)) for k in range(per_round)]
        t0 = time.monotonic()
        stored = sum(store_readings(inventory, readings[s:s + batch]) for s in range(0, per_round, batch))
        timings.append((stored, time.monotonic() - t0))
    engine.dispose()
    steady = timings[1:]
    return {"readings": sum(n for n, _ in timings), "series": per_round, "batch": batch,
            "first_round_readings_per_s": round(timings[0][0] / timings[0][1]),
            "readings_per_s": round(sum(n for n, _ in steady) / sum(t for _, t in steady))}


def _postgres_database():
    try:
        import psycopg
        admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3)
    except Exception:
        return None
    name = f"baie_bench_{os.urandom(4).hex()}"
    admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", drop


SECTIONS = {"redfish": section_redfish, "tarpit": section_tarpit, "discovery": section_discovery,
            "snmp": section_snmp, "ipmi": section_ipmi, "inventory": section_inventory}


# -------------------------------------------------------------------------------------------- report
def _phase(run: dict | None, name: str) -> dict:
    for phase in (run or {}).get("phases", []):
        if phase["phase"] == name:
            return phase
    return {}


def targets(results: dict) -> list[dict]:
    rows: list[dict] = []
    s = results["sections"]

    def row(name: str, target: str, measured: str, ok: bool | None, ratio: str = "", note: str = "") -> None:
        rows.append({"measure": name, "target": target, "measured": measured,
                     "pass": None if ok is None else bool(ok), "ratio_vs_baseline": ratio, "note": note})

    rf = s.get("redfish", {})
    base = _phase(rf.get("baseline"), "warm")
    base_rate = base.get("polls_per_s")
    runs = sorted(rf.get("runs", {}).items(), key=lambda kv: int(kv[0]))
    for n, run in runs:
        steady = run["steady"]
        big = n == runs[-1][0]
        limit = 15 if big else 60
        row(f"Redfish N={int(n):,}: full cycle (due every {run['interval_s']:g} s)",
            f"every BMC polled within {limit} s",
            f"{steady['period_p99_s']} s between two polls of a BMC (p99; p50 {steady['period_p50_s']} s, max "
            f"{steady['period_max_s']} s); {steady['polls_per_s']} polls/s sustained, a round over all "
            f"{int(n):,} every {steady['round_s']} s; {steady['failed']} failed",
            steady["period_p99_s"] is not None and max(steady["period_p99_s"], steady["round_s"]) <= limit
            and not steady["failed"],
            f"{steady['polls_per_s'] / base_rate:.1f}x" if base_rate else "",
            f"first cycle (TLS + login + discovery) {run['first']['wall_s']} s; steady from "
            f"{steady['starts_after_s']} s")
        row(f"Redfish N={int(n):,}: daemon CPU per poll", "<= 1 ms",
            f"{steady['cpu_ms_per_poll']} ms ({steady['loop_thread_cpu_ms_per_poll']} ms on the daemon's event loop, "
            f"the rest its {run.get('poll_workers', run.get('redfish_workers'))} poll workers, DB writer and threads; "
            f"{steady['cpu_cores_used']} cores)", steady["cpu_ms_per_poll"] <= 1.0,
            f"{base['cpu_ms_per_poll'] / steady['cpu_ms_per_poll']:.0f}x less" if base.get("cpu_ms_per_poll") else "")
        row(f"Redfish N={int(n):,}: latency, memory", "(p50/p99, RSS)",
            f"p50 {steady['latency_p50_ms']} ms, p99 {steady['latency_p99_ms']} ms, RSS {run['peak_rss_mb']:.0f} MB, "
            f"fds {run['fds_steady']}, threads {run['threads_steady']}, readings waiting to be written <= "
            f"{steady['queued_readings_max']:.0f}, GC {sum(g['seconds'] for g in steady['gc'].values()):.1f} s of "
            f"{steady['window_s']:.0f} s", None)
    if ceiling := rf.get("ceiling"):
        steady = ceiling["steady"]
        row(f"Redfish N={ceiling['count']:,} due every {ceiling['interval_s']:g} s: the ceiling", "(polls/s)",
            f"{steady['polls_per_s']} polls/s sustained, a round over all every {steady['round_s']} s; "
            f"{steady['cpu_ms_per_poll']} ms CPU per poll ({steady['cpu_cores_used']} cores); {steady['failed']} "
            "failed", None)
    if runs and base_rate:
        n, run = runs[-1]
        rate = max(run["steady"]["polls_per_s"], (ceiling or run)["steady"]["polls_per_s"])
        row(f"Redfish throughput vs baseline (N={int(n):,})", ">= 25x", f"{rate} vs {base_rate} polls/s",
            rate / base_rate >= 25, f"{rate / base_rate:.1f}x",
            f"baseline: sushy, 8 threads, warm cache of {rf['baseline'].get('bmcs')} BMCs, "
            f"{base.get('cpu_ms_per_poll')} ms CPU/poll, p99 {base.get('latency_p99_ms')} ms")
    tp_runs = s.get("tarpit", {}).get("runs", {})
    tp, ref_run = tp_runs.get("5%"), tp_runs.get("0%")
    if tp and ref_run:
        t5, t0 = tp["steady"], ref_run["steady"]
        p99_5, p99_0 = t5["latency_p99_ms"], t0["latency_p99_ms"]
        ratio = p99_5 / p99_0 if p99_5 and p99_0 else None
        row(f"5 % tarpits (N={tp['count']:,}, every {tp['interval_s']:g} s): healthy-poll p99 vs 0 %", "<= 1.10",
            f"{p99_5} vs {p99_0} ms" + (f" = {ratio:.2f}" if ratio else ""), ratio is not None and ratio <= 1.10)
        r5, r0 = t5["polls_per_healthy_bmc_per_interval"], t0["polls_per_healthy_bmc_per_interval"]
        row("5 % tarpits: healthy poll rate", "unchanged",
            f"{r5} vs {r0} polls per healthy BMC per interval", r5 >= 0.99 * r0)
        fds = [x["fds"] for x in tp["per_cycle_samples"]]
        threads = [x["threads"] for x in tp["per_cycle_samples"]]
        row("5 % tarpits: open fds / threads across cycles", "no growth", f"fds {fds}, threads {threads}",
            # growth, not the tarpit connections open at the moment of a sample (up to one per tarpit): the later
            # half of the cycles never above the earlier half's highest
            max(fds[len(fds) // 2:]) <= max(fds[:len(fds) // 2]) + 10 and max(threads) <= threads[0])
    d = s.get("discovery", {})
    if d.get("sweeps"):
        (default, first), (more, second) = d["sweeps"].items()
        row(f"Discovery sweep {d['range']} ({d['live']} live of {d['addresses']}), Redfish + IPMI", "< 30 s",
            f"{first['seconds']} s at the default {default} probes in flight ({second['seconds']} s at {more}); found "
            f"{first['found']}", first["seconds"] < 30 and first["found"] == d["live"])
    sn = s.get("snmp", {})
    if sn.get("cycle1"):
        c = sn.get("cycle2") or sn["cycle1"]
        row(f"SNMPv3 {sn['pdus']:,} PDUs x 24 outlets: full cycle", "<= 30 s",
            f"{c['seconds']} s ({c['ok']} ok, {sum(c['errors'].values())} failed; the poll worker's CPU "
            f"{c['cpu_s']} s, simulators {sn.get('simulator_cpu_s')} s)", c["seconds"] <= 30 and not c["errors"],
            note="" if sn.get("cycle2") else "first cycle, with v3 engine discovery")
    ip = s.get("ipmi", {})
    if ip.get("cycle1"):
        done = [f"{ip['cycle1']['seconds']} s with login ({ip['cycle1']['ok']} ok)"]
        if ip.get("cycle2"):
            done.append(f"{ip['cycle2']['seconds']} s warm ({ip['cycle2']['ok']} ok)")
        if ip.get("hung"):
            done.append(f"then hung: {ip.get('threads_in_pyghmi', '?')} of {ip['workers']} worker threads stuck "
                        f"inside pyghmi ({ip.get('stacks', 'no stacks')})")
        row(f"IPMI {ip['bmcs']:,} BMCs power + sensors", "<= 60 s", "; ".join(done),
            all(ip.get(c, {}).get("seconds", 99) <= 60 for c in ("cycle1", "cycle2")) and not ip.get("hung"))
    inv = s.get("inventory", {})
    if inv.get("nodes_json"):
        row(f"`baie nodes --json` over {inv['nodes']:,} nodes", "(time)", f"{inv['nodes_json']['seconds']} s", None)
        for db in ("sqlite", "postgresql"):
            got = inv.get(f"ingest_{db}", {})
            row(f"Telemetry ingest into {'SQLite' if db == 'sqlite' else 'PostgreSQL'}", "(readings/s)",
                f"{got['readings_per_s']} readings/s into known series ({got['first_round_readings_per_s']}/s "
                f"with the first reading of each of {got['series']:,} series; batches of {got['batch']})"
                if "readings_per_s" in got
                else str(got.get("skipped")), None)
    for name, section in s.items():
        if "error" in section:
            row(f"section {name}", "runs", f"FAILED: {section['error']}", False)
    return rows


def markdown(results: dict, rows: list[dict]) -> str:
    m = results["machine"]
    lines = [f"# Fleet benchmark ({'quick' if results['quick'] else 'full'} run, {results['started']})", "",
             f"Machine: {m['cpus']} CPUs, Python {m['python']}, load average {m['loadavg_start']} at start, "
             f"{m['loadavg_end']} at end (the machine is shared: wall-clock rates move with it, CPU per poll "
             f"much less). Redfish: HTTPS, 20-100 ms per request; scheduler: "
             f"{results['sections'].get('redfish', {}).get('scheduler', '-')}.", "",
             "| measure | target | measured | pass | ratio vs baseline |", "|---|---|---|---|---|"]
    for r in rows:
        verdict = "-" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        measured = r["measured"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(f"| {r['measure']} | {r['target']} | {measured} | {verdict} | {r['ratio_vs_baseline']} |")
    lines += ["", f"Total run time: {results['seconds']:.0f} s. Details: results.json."]
    lines += [f"Re-run later and merged in: {', '.join(m['sections'])} ({m['started']}, {m['seconds']} s)."
              for m in results.get("merged", [])]
    return "\n".join(lines) + "\n"


def main() -> int:
    quiet_logs()
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--quick", action="store_true", help="scaled-down smoke run")
    parser.add_argument("--only", help="comma-separated sections: " + ",".join(SECTIONS))
    parser.add_argument("--merge", action="store_true",
                        help="replace the chosen sections in an existing results.json instead of starting afresh")
    parser.add_argument("--output", type=Path, help="default: bench/results (bench/results/quick with --quick)")
    parser.add_argument("--render", action="store_true", help="only write results.md again from results.json")
    args = parser.parse_args()
    if args.render:
        output = args.output or RESULTS
        results = json.loads((output / "results.json").read_text())
        results["targets"] = targets(results)
        (output / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (output / "results.md").write_text(markdown(results, results["targets"]))
        return 0
    raise_fd_limit()
    scale = QUICK if args.quick else FULL
    chosen = args.only.split(",") if args.only else list(SECTIONS)
    if "tarpit" in chosen and "redfish" not in chosen:
        log("note: the tarpit comparison needs the redfish section's run at the same N as its 0 % reference")
    started = time.monotonic()
    results: dict = {"quick": args.quick, "started": datetime.now(UTC).isoformat(timespec="seconds"),
                     "scale": scale.__dict__, "sections": {},
                     "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "loadavg_start": loadavg()}}
    output = args.output or (RESULTS / "quick" if args.quick
                             else RESULTS / "partial" if args.only and not args.merge else RESULTS)
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="baie-bench-") as tmp:
        (Path(tmp) / ARTEFACTS).mkdir()
        for name in chosen:
            work = Path(tmp) / name
            work.mkdir()
            t0 = time.monotonic()
            try:
                results["sections"][name] = SECTIONS[name](scale, work)
            except Exception as exc:
                traceback.print_exc()
                results["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            results["sections"][name]["section_seconds"] = round(time.monotonic() - t0, 1)
            log(f"{name} done in {time.monotonic() - t0:.0f} s")
        for artefact in (Path(tmp) / ARTEFACTS).iterdir():  # profiles and stacks, beside the results they explain
            shutil.copy(artefact, output / artefact.name)
    results["machine"]["loadavg_end"] = loadavg()
    results["seconds"] = time.monotonic() - started
    if args.merge and (output / "results.json").exists():
        earlier = json.loads((output / "results.json").read_text())
        earlier["sections"].update(results["sections"])
        earlier.setdefault("merged", []).append({"sections": chosen, "started": results["started"],
                                                 "seconds": round(results["seconds"]), "machine": results["machine"]})
        results = earlier
    rows = targets(results)
    results["targets"] = rows
    (output / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (output / "results.md").write_text(markdown(results, rows))
    print(markdown(results, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

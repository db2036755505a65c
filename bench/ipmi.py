"""IPMI BMCs polled as the daemon's loop polls them (``IpmiDriver`` on the daemon's pool of worker threads),
in its own process: ``python -m bench.ipmi CONFIG.json OUT.json``.

Two cycles of power state + sensors over every BMC (the first logs in). OUT is rewritten after each cycle,
so that what was measured survives when a cycle hangs and the caller has to kill this process (pyghmi is
not thread-safe across sessions: see bench/results).
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.poller import quiet_logs
from daemon.config import DaemonSettings
from drivers.base import Credentials, DriverError, Secret
from drivers.ipmi import IpmiDriver, probe_ipmi


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


async def answering(addresses: list[str], port: int) -> int:
    """How many answer (each simulator reads its configuration before it does)."""
    gate = asyncio.Semaphore(256)

    async def one(address: str) -> bool:
        async with gate:
            for _ in range(20):
                if await probe_ipmi(address, port, timeout=1.0):
                    return True
            return False
    return sum(await asyncio.gather(*(one(a) for a in addresses)))


progress: collections.Counter[str] = collections.Counter()  # this cycle's polls by outcome


def poll(driver: IpmiDriver) -> str | None:
    try:
        driver.get_power_state()
        driver.read_sensors()
    except DriverError as exc:
        progress[type(exc).__name__] += 1
        return type(exc).__name__
    progress["ok"] += 1
    return None


def report_progress(cycle: list[int], total: int, stop: threading.Event) -> None:
    """Every 15 s on stderr: a slow cycle and a stuck one look alike from outside."""
    while not stop.wait(15):
        print(f"  ipmi cycle {cycle[0]}: {sum(progress.values())}/{total} polled {dict(progress)}",
              file=sys.stderr, flush=True)


def main() -> None:
    quiet_logs()
    config = json.loads(Path(sys.argv[1]).read_text())
    out_path = Path(sys.argv[2])
    workers = DaemonSettings().ipmi_workers  # the daemon's pool for pyghmi's calls
    out: dict = {"workers": workers, "per_poll": "get_power_state + read_sensors (SDR + DCMI)",
                 "answering": asyncio.run(answering(config["addresses"], config["port"]))}
    creds = Credentials("admin", Secret("password"))
    drivers = [IpmiDriver(a, config["port"], creds, timeout=10.0) for a in config["addresses"]]
    current, stop = [0], threading.Event()
    threading.Thread(target=report_progress, args=(current, len(drivers), stop), daemon=True).start()
    with ThreadPoolExecutor(workers) as pool:
        for cycle in (1, 2):
            current[0] = cycle
            progress.clear()
            w0, c0, load0 = time.monotonic(), time.process_time(), loadavg()
            errors = [e for e in pool.map(poll, drivers) if e]
            out[f"cycle{cycle}"] = {"seconds": round(time.monotonic() - w0, 2),
                                    "cpu_s": round(time.process_time() - c0, 2), "ok": len(drivers) - len(errors),
                                    "errors": {e: errors.count(e) for e in set(errors)},
                                    "loadavg": [load0, loadavg()]}
            print(f"  ipmi cycle {cycle} ({'login + ' if cycle == 1 else ''}power + sensors): "
                  f"{out[f'cycle{cycle}']}", file=sys.stderr, flush=True)
            out_path.write_text(json.dumps(out, indent=1))
        list(pool.map(lambda d: d.close(), drivers))
    stop.set()


if __name__ == "__main__":
    main()

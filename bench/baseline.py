"""The baseline: the same Redfish fleet polled the way Ironic does it, in its own process.

Ironic (``ironic.drivers.modules.redfish``) keeps one ``sushy.Sushy`` client per BMC in a process-wide LRU
(``[redfish] connection_cache_size = 1000``), authenticates with SessionOrBasicAuth (``auth_type = auto``),
verifies TLS against ``redfish_verify_ca`` (a CA bundle), retries a failed connection
(``connection_attempts = 5``, ``connection_retry_interval = 4`` s) and leaves sushy's request timeout at
its default (60 s). Periodic work runs on a pool of worker threads; we use 8. Per node and period it reads
the power state and the sensor data: ``get_system`` (GET Systems/1), ``system.chassis`` (GET Chassis/1),
``chassis.thermal`` and ``chassis.power`` (GET each): 4 GETs per poll, readings equivalent to ours.

``python -m bench.baseline CONFIG.json OUT.json``. Phases: ``cold`` (the first poll of ``warm_count`` BMCs:
client creation, service root, session login) and ``warm`` (``duration`` seconds cycling over the same
BMCs with cached clients: Ironic's steady state with a fleet that fits its cache).
"""

from __future__ import annotations

import collections
import itertools
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sushy
from sushy import exceptions as sushy_exc

from bench.fleet import address, raise_fd_limit
from bench.poller import cpu_seconds, percentile, process_stats

CONNECTION_CACHE_SIZE = 1000
CONNECTION_ATTEMPTS = 5
CONNECTION_RETRY_INTERVAL = 4.0
WORKERS = 8


class SessionCache:
    """Ironic's redfish ``SessionCache``: an LRU of sushy clients keyed by BMC and credentials."""

    def __init__(self, size: int = CONNECTION_CACHE_SIZE) -> None:
        self.size = size
        self.clients: collections.OrderedDict[tuple, sushy.Sushy] = collections.OrderedDict()
        self.lock = threading.Lock()
        self.created = self.evicted = 0

    def get(self, url: str, username: str, password: str, verify: str | bool) -> sushy.Sushy:
        key = (url, username, password, verify)
        with self.lock:
            client = self.clients.get(key)
            if client is not None:
                self.clients.move_to_end(key)
                return client
        auth = sushy.auth.SessionOrBasicAuth(username=username, password=password)
        client = sushy.Sushy(url, auth=auth, verify=verify)
        with self.lock:
            self.created += 1
            self.clients[key] = client
            while len(self.clients) > self.size:
                _, old = self.clients.popitem(last=False)
                self.evicted += 1
        return client


def poll(cache: SessionCache, url: str, verify: str | bool) -> int:
    """One node's period, with Ironic's retries on connection errors; the number of readings."""
    for attempt in range(CONNECTION_ATTEMPTS):
        try:
            conn = cache.get(url, "admin", "password", verify)
            system = conn.get_system("/redfish/v1/Systems/1")
            readings = [system.power_state]
            for chassis in system.chassis:
                thermal, power = chassis.thermal, chassis.power
                readings += [t.reading_celsius for t in thermal.temperatures or []]
                readings += [f.reading for f in thermal.fans or []]
                readings += [p.last_power_output_watts for p in power.power_supplies or []]
            return len(readings)
        except sushy_exc.ConnectionError:
            if attempt == CONNECTION_ATTEMPTS - 1:
                raise
            time.sleep(CONNECTION_RETRY_INTERVAL)
    raise AssertionError("unreachable")


def run(config: dict) -> dict:
    raise_fd_limit()
    scheme, port = config.get("scheme", "https"), config["port"]
    urls = [f"{scheme}://{address(config['net'], i)}:{port}" for i in range(config["warm_count"])]
    verify: str | bool = config.get("ca_bundle") or True
    cache = SessionCache()
    out: dict = {"workers": WORKERS, "cache_size": CONNECTION_CACHE_SIZE, "bmcs": len(urls), "phases": []}
    lock = threading.Lock()

    def phase(name: str, work: list[str] | None, duration: float | None) -> dict:
        latencies: list[float] = []
        errors: collections.Counter[str] = collections.Counter()
        counter = itertools.count()
        deadline = time.monotonic() + duration if duration else None

        def worker() -> None:
            while True:
                k = next(counter)
                if work is not None and k >= len(work):
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    return
                url = work[k] if work is not None else urls[k % len(urls)]
                t0 = time.monotonic()
                try:
                    poll(cache, url, verify)
                except Exception as exc:  # the baseline's failures are counted, not analysed
                    with lock:
                        errors[type(exc).__name__] += 1
                    continue
                with lock:
                    latencies.append(time.monotonic() - t0)

        wall0, cpu0 = time.monotonic(), cpu_seconds()
        with ThreadPoolExecutor(WORKERS) as pool:
            for future in [pool.submit(worker) for _ in range(WORKERS)]:
                future.result()
        wall, cpu = time.monotonic() - wall0, cpu_seconds() - cpu0
        polls = len(latencies) + sum(errors.values())
        result = {"phase": name, "polls": polls, "ok": len(latencies), "wall_s": round(wall, 2),
                  "polls_per_s": round(polls / wall, 2), "cpu_s": round(cpu, 2),
                  "cpu_ms_per_poll": round(1000 * cpu / polls, 2) if polls else None,
                  "latency_p50_ms": round(1000 * (percentile(latencies, 50) or 0), 1),
                  "latency_p99_ms": round(1000 * (percentile(latencies, 99) or 0), 1),
                  "errors": dict(errors), **process_stats()}
        print(f"  [baseline {name}] {json.dumps(result)}", file=sys.stderr, flush=True)
        return result

    out["phases"].append(phase("cold", urls, None))
    out["phases"].append(phase("warm", None, config["duration"]))
    out["clients_created"] = cache.created
    return out


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(json.dumps(run(config), indent=1))


if __name__ == "__main__":
    main()

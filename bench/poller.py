"""The daemon's telemetry loop under load, in its own process (so that its CPU time, RSS, fds and threads are
its own).

``python -m bench.poller CONFIG.json OUT.json``. The config names the fleet (net, count, port, pinned
fingerprint, tarpit share) and the loop's interval. This builds what the daemon would have: a SQLite
inventory migrated to head holding one node per BMC (address, port, pinned certificate), a credential
directory with ``bmc-default``, the bounded thread pool, and ``daemon.telemetry.TelemetryLoop`` with its DB
writer, settings at their defaults but for the interval. The one piece of instrumentation is a wrapper
around ``_Device.poll`` that records when each poll started and ended and whether it failed.

The loop polls every BMC at once when it starts (login + discovery of each BMC's resources: the *first*
cycle), then every ``interval`` seconds at each BMC's slot in the interval (up to ``jitter`` x interval after
it, the daemon's default).
The steady window starts once every BMC has been polled three times (the first cycle, and the cycle that
works off the queue it left behind: from then on the loop either keeps up with the interval or is
saturated) and lasts ``cycles`` intervals. Over the polls that ended in it: polls/s sustained, the time between two polls of
the same BMC (p50/p99/max: how fresh an operator's data is; at saturation, one round over every BMC),
process CPU per poll (everything: event loop, DB writer, threads) and the event loop thread's share, poll
latency p50/p99 of healthy BMCs (the whole ``poll()``, waiting for a slot included), polls per healthy BMC
per interval, and RSS/fds/threads once a second.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import itertools
import json
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import uvloop

from bench.fleet import PASSWORD, USERNAME, address, raise_fd_limit, role

SAMPLE_SECONDS = 1.0
PROCESS_EVERY = 5  # samples
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(stat: str) -> float:
    """User + system CPU seconds from a /proc stat file: ``/proc/PID/stat`` (a process, all its threads) or
    ``/proc/PID/task/TID/stat`` (one thread)."""
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def process_stats(workers: list[int] = ()) -> dict[str, float]:
    """RSS, threads and open fds of this process and its poll workers, summed."""
    rss_kb = threads = fds = 0
    for pid in ("self", *workers):
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in status if ":" in line)
        rss_kb += int(fields["VmRSS"].split()[0])
        threads += int(fields["Threads"])
        fds += len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_mb": round(rss_kb / 1024, 1), "threads": threads, "fds": fds}


def cpu_seconds(workers: list[int] = ()) -> float:
    """CPU seconds of this process and of its poll workers (``workers``: their PIDs)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime + sum(proc_cpu(f"/proc/{pid}/stat") for pid in workers)


def loop_thread_cpu() -> float:
    """CPU seconds of the main thread (the daemon's event loop), without its DB writer and thread pool."""
    return proc_cpu(f"/proc/self/task/{os.getpid()}/stat")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def fill_nodes(url: str, count: int, net: int = 1, port: int = 443, fingerprint: str | None = None) -> None:
    """A migrated inventory with one site, racks of 40 and ``count`` enrolled nodes whose BMCs are
    ``address(net, i):port`` (Redfish, state ok, the certificate pinned when ``fingerprint`` is given)."""
    from sqlalchemy import insert

    from inventory.db import make_engine, upgrade
    from inventory.model import Location, Node, Rack, Site

    per_rack = 40
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(Site.__table__), [{"id": 1, "name": "bench", "country_code": "FR",
                                               "jurisdiction": "EU", "role": "primary"}])
        conn.execute(insert(Location.__table__), [{"id": 1, "site_id": 1, "name": "hall-1"}])
        racks = -(-count // per_rack)
        conn.execute(insert(Rack.__table__), [{"id": r + 1, "site_id": 1, "location_id": 1, "name": f"R{r:04d}",
                                               "u_height": 42} for r in range(racks)])
        now = datetime.now(UTC)
        conn.execute(insert(Node.__table__), [{
            "name": f"node-{i:05d}", "site_id": 1, "rack_id": i // per_rack + 1, "position": i % per_rack + 1,
            "u_height": 1, "face": "front", "serial": f"SIM{i:07d}", "uuid": f"00000000-0000-4000-8000-{i:012d}",
            "manufacturer": "Baie Sim", "model": "SimServer 1U", "bmc_address": address(net, i), "bmc_port": port,
            "bmc_protocol": "redfish", "bmc_state": "ok", "bmc_tls_fingerprint": fingerprint, "state": "available",
            "power_state": "on", "bios_version": "1.2.3", "bmc_firmware": "2.61", "created_at": now,
            "updated_at": now} for i in range(count)])
    engine.dispose()


def credential_store(directory: Path):
    from daemon.credentials import CredentialStore

    directory.mkdir(mode=0o700)
    path = directory / "bmc-default"
    path.touch(mode=0o600)
    path.write_text(f"{USERNAME}:{PASSWORD}\n")
    return CredentialStore(directory)


class Recorder:
    """Every poll's (cycle, start, end, ok), per device, from a wrapper around ``_Device.poll``."""

    def __init__(self) -> None:
        self.polls: list[tuple[str, int, float, float, bool]] = []
        self.cycles: collections.Counter[str] = collections.Counter()
        self.third: list[float] = []  # when each device ended its third poll (kept as they come: scanning every
        # poll once a second cost the measured loop ~5 ms at 10,000 BMCs)

    def install(self) -> None:
        from daemon.telemetry import _Device

        original = _Device.poll
        recorder = self

        async def poll(device: _Device) -> None:
            start = time.monotonic()
            await original(device)
            cycle = recorder.cycles[device.spec.address]
            recorder.cycles[device.spec.address] += 1
            recorder.polls.append((device.spec.address, cycle, start, end := time.monotonic(), device.failures == 0))
            if cycle == 2:
                recorder.third.append(end)

        _Device.poll = poll

    def watch_gc(self) -> None:
        """Seconds spent in the cyclic garbage collector, by generation (a full collection walks every object
        the daemon holds: with 10,000 BMCs, that is millions)."""
        self.gc_seconds = [0.0, 0.0, 0.0]
        self.gc_count = [0, 0, 0]
        began = [0.0]

        self.gc_events: list[tuple[float, int, float, int]] = []  # (end, generation, seconds, collected)

        def callback(phase: str, info: dict) -> None:
            if phase == "start":
                began[0] = time.perf_counter()
            else:
                took = time.perf_counter() - began[0]
                self.gc_seconds[info["generation"]] += took
                self.gc_count[info["generation"]] += 1
                self.gc_events.append((time.monotonic(), info["generation"], took, info["collected"]))

        gc.callbacks.append(callback)


async def run(config: dict, workdir: Path) -> dict:
    from prometheus_client import CollectorRegistry

    from daemon.bmc import BmcAccess
    from daemon.config import BmcSettings, DaemonSettings, TelemetrySettings
    from daemon.executor import install_executor
    from daemon.telemetry import TelemetryLoop
    from inventory.db import make_engine
    from inventory.service import Inventory

    net, count, interval, cycles = config["net"], config["count"], config["interval"], config["cycles"]
    roles = {address(net, i): role(i, config.get("tarpit_share", 0.0)) for i in range(count)}
    url = f"sqlite:///{workdir / 'inventory.db'}"
    fill_nodes(url, count, net, config["port"], config["fingerprint"])
    store = credential_store(workdir / "credentials")
    settings = TelemetrySettings(bmc_interval_seconds=interval, refresh_seconds=3600,
                                 request_timeout_seconds=config.get("timeout", 10.0),
                                 **{key: config[key] for key in ("max_in_flight", "poll_workers", "jitter")
                                    if key in config})
    install_executor(asyncio.get_running_loop(), DaemonSettings().workers)
    engine = make_engine(url)
    registry = CollectorRegistry()
    recorder = Recorder()
    recorder.install()
    recorder.watch_gc()
    loop = TelemetryLoop(settings, Inventory(engine), BmcAccess(
        BmcSettings(redfish_port=config["port"], redfish_scheme="https"), store), store, registry)
    samples: list[dict] = []

    def sample() -> None:
        # The gauge itself, not registry.get_sample_value: that collects every metric of every device (3 per
        # device), which at 5,000 devices cost the event loop 0.12 s per sample, a quarter of its CPU.
        # RSS, fds and threads every PROCESS_EVERY samples: listing 10,000 fds costs ~10 ms, on the measured loop.
        # (Not gc.get_freeze_count(): it walks the frozen objects, 20-40 ms with a fleet's heap frozen.)
        workers = loop.poller.pids()
        stats = process_stats(workers) if len(samples) % PROCESS_EVERY == 0 else samples[-1]
        samples.append({"t": time.monotonic(), "cpu": cpu_seconds(workers), "loop_cpu": loop_thread_cpu(),
                        "queued": loop.metrics.queued.collect()[0].samples[0].value,
                        **{key: stats[key] for key in ("rss_mb", "fds", "threads")}})

    gc.collect()
    started = time.monotonic()
    sample()
    loop.start()
    deadline = started + config.get("max_seconds", 600 + (cycles + 2) * interval * 4)
    while time.monotonic() < deadline:
        await asyncio.sleep(SAMPLE_SECONDS)
        sample()
        window0 = steady_start(recorder.third, count)
        if window0 is not None and time.monotonic() >= window0 + cycles * interval:
            break
    profile_text = None
    if config.get("profile"):  # one more interval: the event loop under pyinstrument, a poll worker under py-spy
        from pyinstrument import Profiler

        spy = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(loop.poller.pids()[0]), "--duration",
            str(int(interval)), "--format", "raw", "--output", str(workdir / "worker.raw"), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        profiler = Profiler(interval=0.002, async_mode="disabled")
        profiler.start()
        await asyncio.sleep(interval)
        profiler.stop()
        profile_text = profiler.output_text(unicode=False, color=False, show_all=False)
        if await spy.wait() == 0:
            profile_text += "\n\n" + collapsed_summary((workdir / "worker.raw").read_text())
    frozen = gc.get_freeze_count()
    stop0 = time.monotonic()
    await loop.stop()
    stop_s = time.monotonic() - stop0
    sample()
    engine.dispose()
    written = registry.get_sample_value("baie_telemetry_readings_written_total") or 0
    batches = registry.get_sample_value("baie_telemetry_batches_written_total") or 0
    out = summarize(recorder.polls, roles, samples, started, interval, cycles)
    print(f"  [poller N={count}] {json.dumps({key: out[key] for key in ('first', 'steady')})}", file=sys.stderr,
          flush=True)
    window0, window1 = out["steady"]["window"]
    steady_gc = [e for e in recorder.gc_events if window0 <= e[0] <= window1]
    out["steady"]["gc"] = {f"gen{g}": {"collections": sum(e[1] == g for e in steady_gc),
                                       "seconds": round(sum(e[2] for e in steady_gc if e[1] == g), 2),
                                       "collected": sum(e[3] for e in steady_gc if e[1] == g)} for g in range(3)}
    print(f"  [poller gc, steady] {json.dumps(out['steady']['gc'])}", file=sys.stderr, flush=True)
    out.update({"count": count, "roles": dict(collections.Counter(roles.values())), "interval_s": interval,
                "cycles": cycles, "max_in_flight": settings.max_in_flight, "jitter": settings.jitter,
                "poll_workers": settings.poll_workers,
                "workers": DaemonSettings().workers, "readings_written": int(written), "batches": int(batches),
                "stop_s": round(stop_s, 2), "end": process_stats(), "frozen_objects": frozen,
                "gc_seconds_by_generation": [round(x, 2) for x in recorder.gc_seconds],
                "gc_collections_by_generation": recorder.gc_count,
                "scheduler": "daemon.telemetry.TelemetryLoop (SQLite inventory, DB writer)"})
    if profile_text:
        Path(config["profile"]).write_text(profile_text)
    return out


def _cpu_at(samples: list[dict], t: float, key: str = "cpu") -> float:
    """Process CPU at time ``t``, interpolated between the once-a-second samples."""
    before = max((s for s in samples if s["t"] <= t), key=lambda s: s["t"], default=samples[0])
    after = min((s for s in samples if s["t"] >= t), key=lambda s: s["t"], default=samples[-1])
    if after["t"] == before["t"]:
        return before[key]
    return before[key] + (after[key] - before[key]) * (t - before["t"]) / (after["t"] - before["t"])


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _s(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 2)


def steady_start(third: list[float], count: int) -> float | None:
    """When the last of ``count`` devices ended its third poll (``third``: when each did; None: not all yet).
    After the second, the polls that waited behind the first cycle's logins still came closer together than
    the loop's steady rate."""
    return max(third) if len(third) == count else None


def summarize(polls: list[tuple[str, int, float, float, bool]], roles: dict[str, str], samples: list[dict],
              started: float, interval: float, cycles: int) -> dict:
    first = [p for p in polls if p[1] == 0]
    window0 = steady_start([p[3] for p in polls if p[1] == 2], len(roles))
    if window0 is None:
        raise RuntimeError(f"not every device was polled three times ({len({p[0] for p in polls if p[1] >= 2})} "
                           f"of {len(roles)}) before the deadline")
    window1 = window0 + cycles * interval
    steady = [p for p in polls if window0 < p[3] <= window1]
    healthy_ok = [p for p in steady if roles[p[0]] == "healthy" and p[4]]
    latencies = [p[3] - p[2] for p in healthy_ok]
    ends: dict[str, list[float]] = collections.defaultdict(list)
    for address_, _, _, end, ok in polls:
        if ok and roles[address_] == "healthy":
            ends[address_].append(end)
    periods = [b - a for times in ends.values() for a, b in itertools.pairwise(times) if window0 < b <= window1]
    cpu = _cpu_at(samples, window1) - _cpu_at(samples, window0)
    loop_cpu = _cpu_at(samples, window1, "loop_cpu") - _cpu_at(samples, window0, "loop_cpu")
    n_healthy = sum(r == "healthy" for r in roles.values())
    in_window = [s for s in samples if window0 <= s["t"] <= window1]
    out: dict = {"first": {"polls": len(first), "ok": sum(p[4] for p in first),
                           "wall_s": round(max(p[3] for p in first) - started, 2)}}
    out["steady"] = {
        "window": [window0, window1], "window_s": round(window1 - window0, 2),
        "starts_after_s": round(window0 - started, 1), "polls": len(steady),
        "failed": sum(not p[4] for p in steady), "polls_per_s": round(len(steady) / (window1 - window0), 1),
        "round_s": round(len(roles) * (window1 - window0) / len(steady), 2) if steady else None,
        "period_p50_s": _s(percentile(periods, 50)), "period_p99_s": _s(percentile(periods, 99)),
        "period_max_s": _s(max(periods, default=None)),
        "cpu_s": round(cpu, 2), "cpu_ms_per_poll": round(1000 * cpu / len(steady), 3) if steady else None,
        "loop_thread_cpu_ms_per_poll": round(1000 * loop_cpu / len(steady), 3) if steady else None,
        "cpu_cores_used": round(cpu / (window1 - window0), 2),
        "latency_p50_ms": _ms(percentile(latencies, 50)), "latency_p99_ms": _ms(percentile(latencies, 99)),
        "healthy_ok_polls": len(latencies),
        "queued_readings_max": max((s["queued"] or 0 for s in in_window), default=None),
        "polls_per_healthy_bmc_per_interval": round(len(latencies) / n_healthy / cycles, 3) if n_healthy else None,
    }
    # fds and threads once per interval (the sample nearest each interval's start) over the window
    out["per_cycle_samples"] = [
        {k: v for k, v in min(samples, key=lambda s: abs(s["t"] - (window0 + c * interval))).items()
         if k in ("rss_mb", "fds", "threads")} for c in range(cycles + 1)]
    out["peak_rss_mb"] = max(s["rss_mb"] for s in samples)
    out["timeline"] = [{"t": round(s["t"] - started, 1), "cpu": round(s["cpu"], 1), "queued": s.get("queued"),
                        "rss_mb": s["rss_mb"]} for s in samples]
    out["fds_steady"] = [min(s["fds"] for s in in_window), max(s["fds"] for s in in_window)] if in_window else None
    out["threads_steady"] = [min(s["threads"] for s in in_window),
                             max(s["threads"] for s in in_window)] if in_window else None
    return out


def collapsed_summary(raw: str, top: int = 30) -> str:
    """py-spy's collapsed stacks of a poll worker as the functions with most samples, inclusive and on top."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0] + ")" for frame in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    lines = [f"Poll worker 0 under py-spy: {total} samples"]
    for title, counter in (("inclusive", inclusive), ("on top of the stack", own)):
        lines += ["", f"{title}:"] + [f"{100 * n / total:5.1f} %  {name}" for name, n in counter.most_common(top)]
    return "\n".join(lines)


def quiet_logs() -> None:
    """The daemon logs through structlog at debug level by default: keep the benchmark's output readable
    (a failing device is logged once, at warning level)."""
    import logging

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def main() -> None:
    quiet_logs()
    config = json.loads(Path(sys.argv[1]).read_text())
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="baie-bench-poller-", dir=config.get("workdir")) as tmp:
        result = uvloop.run(run(config, Path(tmp)))  # as the daemon runs (daemon.main)
    Path(sys.argv[2]).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

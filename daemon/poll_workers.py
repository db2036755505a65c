"""Redfish and SNMP telemetry polled in worker processes: the daemon's event loop schedules, its workers poll.

One event loop polls about 700 Redfish BMCs a second (two HTTPS requests each): aiohttp's request path, TLS
and the parsing take ~1.3 ms of its thread per poll, and that thread was the limit while the host's other
cores idled (bench/, 10,000 BMCs). An SNMPv3 PDU's poll costs ~21 ms of CPU (pyasn1 decoding its varbinds):
a thousand PDUs every 30 s would take most of the loop's thread. ``PollWorkers`` runs
``telemetry.poll_workers`` processes, each with its own event loop, a ``RedfishPoller`` and an ``SnmpPdu``
per PDU; a device always goes to the same worker, which keeps its connection, session and plan (a PDU's
profile and table sizes).

The daemon speaks to a worker over the worker's stdin and stdout: frames of a 4-byte length and a pickled
list of messages, everything one turn of the event loop produced. Pickle is safe here: both ends are our
own processes. Credentials go down that pipe, never into arguments or the environment.

To a worker: ``("target", key, fields)`` a device's address, credentials, TLS and deadline, before its first
poll and whenever they change; ``("poll", id, key, kind)``; ``("cancel", id)`` when the daemon gave up on a
poll (its deadline); ``("forget", key)`` when no device polls that address any more (removed from the
inventory, its spec changed, its credentials refused): log out of its session; ``("close",)``: log out of
every session and exit. From a worker: ``("done", id, readings)``, ``("failed", id, error)``. A worker
whose daemon has gone (end of its stdin) exits too.

A worker that dies fails the polls it had with ``WorkerLost`` (the devices are not to blame: their state does
not change) and is started again for the next poll; one that dies again before it has answered a poll is
started again only after 1 s, then 2, 4 … up to a minute, and the polls in between fail with ``WorkerLost``
at once: a worker that cannot start (a broken install) must not be spawned and logged for every poll.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import itertools
import os
import pickle
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import structlog
from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

from daemon.heap import GC_THRESHOLDS, freeze_heap
from drivers.base import Credentials, DriverError, Health, Metric, Secret, SensorReading
from drivers.redfish_telemetry import BmcTarget, DeviceKind, RedfishPoller
from drivers.snmp import AuthProtocol, PrivProtocol, SnmpPdu, SnmpTarget, SnmpV3User, build_mib_view, new_engine

log = structlog.get_logger("baie.telemetry")

FRAME = struct.Struct("!I")
Target = BmcTarget | SnmpTarget
Key = tuple[str, str, int | None]  # (scheme, address, port): "https", "http" or "snmp"
Row = tuple[str, float, dict[str, str], str | None]
_METRICS = {metric.value: metric for metric in Metric}
_HEALTH = {health.value: health for health in Health}
RESTART_BACKOFF = (1.0, 60.0)  # seconds before a worker that keeps dying is started again: first, at most


class WorkerLost(RuntimeError):
    """The worker process polling a device exited before the poll ended."""


class WorkerFailed(RuntimeError):
    """A poll failed in a worker with an error that is not a driver's (a bug: its traceback is in the log)."""


def _key(target: Target) -> Key:
    if isinstance(target, SnmpTarget):
        return "snmp", target.host, target.port
    return target.scheme, target.address, target.port


def _fields(target: Target) -> tuple:
    """A target as plain values: ``Secret`` refuses to be pickled, and this pipe is the one place it may go."""
    if isinstance(target, SnmpTarget):
        user = target.v3 and (target.v3.username, target.v3.auth_key.reveal(), target.v3.priv_key.reveal(),
                              str(target.v3.auth_protocol), str(target.v3.priv_protocol))
        return ("snmp", target.host, target.port, user, target.community and target.community.reveal(),
                target.insecure_community_waiver, target.context, target.timeout, target.retries,
                target.max_concurrency, target.max_repetitions)
    return ("redfish", target.address, target.credentials.username, target.credentials.password.reveal(),
            target.port, target.scheme, target.ca_bundle and str(target.ca_bundle), target.fingerprint,
            target.timeout, dict(target.labels))


def _target(fields: tuple) -> Target:
    if fields[0] == "snmp":
        _, host, port, user, community, waiver, context, timeout, retries, max_concurrency, max_repetitions = fields
        v3 = user and SnmpV3User(user[0], Secret(user[1]), Secret(user[2]), AuthProtocol(user[3]),
                                 PrivProtocol(user[4]))
        return SnmpTarget(host, port, v3=v3, community=community and Secret(community),
                          insecure_community_waiver=waiver, context=context, timeout=timeout, retries=retries,
                          max_concurrency=max_concurrency, max_repetitions=max_repetitions)
    _, address, username, password, port, scheme, ca_bundle, fingerprint, timeout, labels = fields
    return BmcTarget(address, Credentials(username, Secret(password)), port=port, scheme=scheme,
                     ca_bundle=Path(ca_bundle) if ca_bundle else None, fingerprint=fingerprint, timeout=timeout,
                     labels=labels)


# Readings cross as plain tuples: unpickling the dataclasses themselves (their __setstate__ is Python) cost the
# daemon's loop more than the rest of a poll's handling (bench/).
def _rows(readings: list[SensorReading]) -> list[Row]:
    return [(r.metric.value, r.value, r.labels, r.health and r.health.value) for r in readings]


def _readings(rows: list[Row]) -> list[SensorReading]:
    return [SensorReading(_METRICS[metric], value, labels, _HEALTH[health] if health else None)
            for metric, value, labels, health in rows]


class _Outbox:
    """Messages to the other end, sent as one frame per turn of the event loop."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self._messages: list[tuple] = []

    def put(self, message: tuple) -> None:
        if not self._messages:
            asyncio.get_running_loop().call_soon(self.flush)
        self._messages.append(message)

    def flush(self) -> None:
        if self._messages:
            data = pickle.dumps(self._messages, pickle.HIGHEST_PROTOCOL)
            self._messages = []
            self._write(FRAME.pack(len(data)) + data)


async def _frames(reader: asyncio.StreamReader):
    """The message lists the other end sent, until it closes its end (or dies)."""
    while True:
        try:
            size = FRAME.unpack(await reader.readexactly(FRAME.size))[0]
            messages = pickle.loads(await reader.readexactly(size))
        except asyncio.IncompleteReadError:
            return
        yield messages


# ------------------------------------------------------------------------------------ the daemon's side
class _Worker:
    def __init__(self, number: int, max_in_flight: int) -> None:
        self.number = number
        self.max_in_flight = max_in_flight
        self.targets = 0  # BMCs assigned to this worker
        self._process: asyncio.subprocess.Process | None = None
        self._outbox: _Outbox | None = None
        self._reading: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future[list[SensorReading]]] = {}
        self._sent: dict[Key, Target] = {}  # the targets this process has, as sent
        self._ids = itertools.count()
        self._starting = asyncio.Lock()
        self._closing = False  # close() asked it to exit (and kills it if it takes too long)
        self._exits = 0  # exits since a process of this worker last answered a poll
        self._restart_at = 0.0  # monotonic time before which it is not started again
        self.command = [sys.executable, "-m", "daemon.poll_workers", str(max_in_flight)]

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.returncode is None else None

    async def poll(self, key: Key, target: Target, kind: DeviceKind) -> list[SensorReading]:
        if self._outbox is None and (wait := self._restart_at - time.monotonic()) > 0:
            raise WorkerLost(f"poll worker {self.number} exited {self._exits} times in a row; started "
                             f"again in {wait:.0f} s")
        outbox = self._outbox or await self._started()
        if self._sent.get(key) is not target:  # the daemon keeps one target object per BMC until it changes
            outbox.put(("target", key, _fields(target)))
            self._sent[key] = target
        poll_id = next(self._ids)
        future = self._pending[poll_id] = asyncio.get_running_loop().create_future()
        outbox.put(("poll", poll_id, key, kind.value))
        try:
            return await future
        except asyncio.CancelledError:
            if self._pending.pop(poll_id, None) is not None and self._outbox is outbox:
                outbox.put(("cancel", poll_id))
            raise

    def forget(self, key: Key) -> None:
        self.targets -= 1
        if self._sent.pop(key, None) is not None and self._outbox is not None:
            self._outbox.put(("forget", key))

    async def _started(self) -> _Outbox:
        async with self._starting:
            if self._outbox is None:
                # stderr: the daemon's (the journal); stdout is the pipe back
                process = await asyncio.create_subprocess_exec(
                    *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
                assert process.stdin is not None and process.stdout is not None
                self._process, self._sent = process, {}
                self._outbox = _Outbox(process.stdin.write)
                self._reading = asyncio.create_task(self._read(process), name=f"redfish worker {self.number}")
            return self._outbox

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for messages in _frames(process.stdout):
            for verb, poll_id, result in messages:
                future = self._pending.pop(poll_id, None)
                if future is None or future.done():
                    continue  # the daemon gave up on it
                if verb == "done":
                    future.set_result(_readings(result))
                    self._exits = 0
                else:
                    future.set_exception(result)
        code = await process.wait()
        lost, self._pending = self._pending, {}
        self._outbox = None
        backoff = 0.0
        if not self._closing:
            self._exits += 1
            if self._exits > 1:
                first, most = RESTART_BACKOFF
                backoff = min(first * 2 ** (self._exits - 2), most)
            self._restart_at = time.monotonic() + backoff
        if lost or (code != 0 and not self._closing):
            log.error("poll worker exited", worker=self.number, pid=process.pid, exit_code=code,
                      polls_lost=len(lost), restart_in_s=backoff)
        for future in lost.values():
            if not future.done():
                future.set_exception(WorkerLost(f"poll worker {self.number} (pid {process.pid}) exited "
                                                f"with code {code}"))

    async def close(self, timeout: float) -> None:
        """Ask the worker to log out of its sessions and exit; kill it if it has not within ``timeout`` seconds."""
        process, outbox, reading = self._process, self._outbox, self._reading
        if process is None or reading is None:
            return
        self._closing = True
        if outbox is not None and process.returncode is None:
            outbox.put(("close",))
            outbox.flush()
            assert process.stdin is not None
            process.stdin.close()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(reading)
        except TimeoutError:
            process.kill()
            await reading


class PollWorkers:
    """``RedfishPoller.poll``, run by ``count`` worker processes (started at their first poll)."""

    def __init__(self, count: int, *, max_in_flight: int) -> None:
        self._workers = [_Worker(n, max_in_flight) for n in range(count)]
        self._assigned: dict[Key, _Worker] = {}
        self._holders: collections.Counter[Key] = collections.Counter()

    def pids(self) -> list[int]:
        return [pid for worker in self._workers if (pid := worker.pid) is not None]

    def hold(self, target: Target) -> None:
        """A device starts polling ``target``. Several devices may poll one Redfish service (a rack
        manager's PDUs and CDUs): its session is kept until the last of them releases it."""
        self._holders[_key(target)] += 1

    def release(self, target: Target) -> None:
        """A device stops polling ``target``; after the last one, its worker logs out of it and forgets it
        (BMCs have few session slots, and a session left behind holds one until it times out)."""
        key = _key(target)
        self._holders[key] -= 1
        if self._holders[key] > 0:
            return
        del self._holders[key]
        if (worker := self._assigned.pop(key, None)) is not None:
            worker.forget(key)

    async def poll(self, target: Target, kind: DeviceKind) -> list[SensorReading]:
        key = _key(target)
        worker = self._assigned.get(key)
        if worker is None:
            worker = self._assigned[key] = min(self._workers, key=lambda w: w.targets)
            worker.targets += 1
        return await worker.poll(key, target, kind)

    async def close(self, timeout: float) -> None:
        """Log out of every session (best effort) and stop the workers; those not done in ``timeout`` s are killed."""
        await asyncio.gather(*(worker.close(timeout) for worker in self._workers))


# ------------------------------------------------------------------------------------- the worker's side
def _snmp_engine() -> SnmpEngine:
    build_mib_view()
    return new_engine()


class _SnmpPdus:
    """A worker's SNMP PDUs. One SnmpEngine per credential serves every PDU using it (a new one costs ~0.3 s
    of CPU: a thousand PDUs would cost minutes); engines, and pysnmp's MIB view before the first (~5 s of CPU),
    are built on a thread while the loop goes on polling."""

    def __init__(self) -> None:
        self._engines: dict[tuple, asyncio.Future[SnmpEngine]] = {}
        self._pdus: dict[Key, SnmpPdu] = {}

    async def read(self, key: Key, target: SnmpTarget) -> list[SensorReading]:
        pdu = self._pdus.get(key)
        if pdu is None or pdu.client.target is not target:  # new, or its target changed
            credential = (target.v3, target.community)
            engine = self._engines.get(credential)
            if engine is None or (engine.done() and engine.exception() is not None):
                engine = self._engines[credential] = asyncio.ensure_future(asyncio.to_thread(_snmp_engine))
            pdu = self._pdus[key] = SnmpPdu(target, engine=await asyncio.shield(engine))
        return await pdu.read_telemetry()

    def forget(self, key: Key) -> None:
        self._pdus.pop(key, None)

    def close(self) -> None:
        for engine in self._engines.values():
            if engine.done() and engine.exception() is None:
                engine.result().close_dispatcher()


async def _serve(max_in_flight: int, channel_in: int, channel_out: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**31)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(channel_in, "rb"))
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(channel_out, "wb"))
    outbox = _Outbox(transport.write)
    poller = RedfishPoller(max_in_flight=max_in_flight)
    pdus = _SnmpPdus()
    targets: dict[Key, Target] = {}
    polls: dict[int, asyncio.Task] = {}
    unpolled: set[Key] = set()  # BMCs given but not polled yet: once none is left, the heap is frozen
    logouts: set[asyncio.Task] = set()

    async def poll(poll_id: int, key: Key, target: Target, kind: DeviceKind) -> None:
        try:
            if isinstance(target, SnmpTarget):
                readings = await pdus.read(key, target)
            else:
                readings = await poller.poll(target, kind)
            outbox.put(("done", poll_id, _rows(readings)))
        except DriverError as exc:
            outbox.put(("failed", poll_id, exc))
        except Exception as exc:
            traceback.print_exc()
            outbox.put(("failed", poll_id, WorkerFailed(f"{target.name}: {type(exc).__name__} in the poll worker")))
        finally:
            polls.pop(poll_id, None)
            if key in unpolled:
                unpolled.discard(key)
                if not unpolled:
                    freeze_heap()

    try:
        async for messages in _frames(reader):
            for message in messages:
                if message[0] == "target":
                    if message[1] not in targets:
                        unpolled.add(message[1])
                    targets[message[1]] = _target(message[2])
                elif message[0] == "poll":
                    _, poll_id, key, kind = message
                    polls[poll_id] = asyncio.create_task(poll(poll_id, key, targets[key], DeviceKind(kind)))
                elif message[0] == "cancel":
                    if (task := polls.pop(message[1], None)) is not None:
                        task.cancel()
                elif message[0] == "forget":
                    unpolled.discard(message[1])
                    pdus.forget(message[1])
                    if isinstance(target := targets.pop(message[1], None), BmcTarget):
                        logout = asyncio.create_task(poller.forget(target))
                        logouts.add(logout)
                        logout.add_done_callback(logouts.discard)
                elif message[0] == "close":
                    return
    finally:
        for task in polls.values():
            task.cancel()
        await asyncio.gather(*logouts, return_exceptions=True)
        await poller.close()
        pdus.close()
        outbox.flush()
        transport.close()


def main() -> None:
    import uvloop

    # The daemon stops its workers (they log out of their sessions first); a signal to the whole group, as
    # systemd and a terminal's ^C send, must not kill them before it does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The channel back to the daemon is the stdout we were given; anything printed goes to stderr instead.
    channel_out = os.dup(1)
    os.dup2(2, 1)
    gc.set_threshold(*GC_THRESHOLDS)
    uvloop.run(_serve(int(sys.argv[1]), os.dup(0), channel_out))


if __name__ == "__main__":
    main()

"""Polls in worker processes (daemon.poll_workers) against the peers of test_redfish_telemetry (sushy-static
serving the recorded trees, misbehaving servers, a tarpit, the token-session service) and of
test_snmp_driver (snmpsim). The workers are real processes; they are killed, signalled and read through
/proc here.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.poll_workers import PollWorkers, WorkerLost
from drivers.base import AuthFailed, Credentials, MalformedReply, Metric, Secret, Timeout, TlsMismatch
from drivers.redfish_telemetry import BmcTarget, DeviceKind, RedfishPoller
from tests.lab.common import MOCKUPS, eventually
from drivers.snmp import SnmpPdu
from tests.test_redfish_telemetry import (  # noqa: F401 (fixtures)
    LEGACY,
    PASSWORD,
    bad_bmcs,
    fake,
    sushy,
    target,
    values,
)
from tests.test_snmp_driver import USER, sim, v3_target  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not MOCKUPS.is_dir(), reason=f"Redfish mockups not found at {MOCKUPS}")

KINDS = {"public-pdu": DeviceKind.RACK_PDU, "public-cooling-unit": DeviceKind.CDU,
         "public-liquid-cooled-server": DeviceKind.SERVER, "public-rackmount1": DeviceKind.SERVER,
         LEGACY: DeviceKind.SERVER}
STOP = 5.0


@pytest.fixture
async def workers() -> AsyncIterator[PollWorkers]:
    pool = PollWorkers(1, max_in_flight=16)
    yield pool
    await pool.close(STOP)


class CountingTarpit:
    """Accepts connections and never answers; knows how many are open."""

    def __init__(self) -> None:
        self.open = 0
        self.server: asyncio.Server | None = None

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            await reader.read()  # until the client closes
        finally:
            self.open -= 1
            writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def test_readings_are_the_in_process_poller_s_whichever_worker_polls(sushy):
    pool = PollWorkers(2, max_in_flight=16)
    try:
        async with RedfishPoller() as poller:
            for name, kind in KINDS.items():
                bmc = target(sushy.ports[name], labels={"rack": "R1"})
                expected = await poller.poll(bmc, kind)
                assert expected
                assert await pool.poll(bmc, kind) == expected
                assert await pool.poll(bmc, kind) == expected  # the worker's plan, as the poller's
        assert len(pool.pids()) == 2  # five BMCs, spread over both
    finally:
        await pool.close(STOP)
    assert pool.pids() == []


async def test_snmp_pdus_read_as_in_process_and_their_keys_reach_the_worker_only_through_its_pipe(workers, sim):
    """Four vendors' PDUs sharing one credential: each reads in a worker as it does in-process (outlets and
    inputs); a wrong key is refused with AuthFailed, typed; the keys are in neither the worker's arguments
    nor its environment."""
    for context in ("apc", "eaton", "raritan", "sentry4"):
        pdu = SnmpPdu(v3_target(sim, context))
        try:
            expected = await pdu.read_telemetry()
        finally:
            pdu.close()
        assert {r.metric for r in expected} >= {Metric.OUTLET_POWER_WATTS, Metric.OUTLET_ON}
        assert await workers.poll(v3_target(sim, context), DeviceKind.RACK_PDU) == expected
    [pid] = workers.pids()
    for part in ("cmdline", "environ"):
        data = Path(f"/proc/{pid}/{part}").read_bytes()
        assert USER.auth_key.encode() not in data and USER.priv_key.encode() not in data

    with pytest.raises(AuthFailed):
        await workers.poll(v3_target(sim, "apc", auth="wrong-" + USER.auth_key), DeviceKind.RACK_PDU)


async def test_driver_errors_cross_typed_with_their_fields(workers, sushy, bad_bmcs, fake):
    with pytest.raises(MalformedReply) as raised:
        await workers.poll(target(bad_bmcs["html"]), DeviceKind.SERVER)
    assert raised.value.field == "/redfish/v1" and raised.value.target == f"127.0.0.1:{bad_bmcs['html']}"

    with pytest.raises(Timeout):
        await workers.poll(target(bad_bmcs["tarpit"], timeout=0.5), DeviceKind.SERVER)

    wrong = BmcTarget("127.0.0.1", Credentials("telemetry", Secret("wrong-" + PASSWORD)), port=fake.port,
                      scheme="http")
    with pytest.raises(AuthFailed) as refused:
        await workers.poll(wrong, DeviceKind.RACK_PDU)
    assert PASSWORD not in str(refused.value)

    pinned = target(sushy.ports["tls"], scheme="https", fingerprint="00" * 32)
    with pytest.raises(TlsMismatch) as mismatch:
        await workers.poll(pinned, DeviceKind.RACK_PDU)
    assert mismatch.value.seen_fingerprint == sushy.tls_sha256.replace(":", "").lower()
    assert mismatch.value.expected_fingerprint == "00" * 32


async def test_a_poll_the_daemon_gives_up_on_is_cancelled_in_the_worker():
    tarpit = CountingTarpit()
    async with tarpit as port, asyncio.timeout(20):
        pool = PollWorkers(1, max_in_flight=16)
        try:
            stuck = asyncio.create_task(pool.poll(target(port, timeout=60), DeviceKind.SERVER))
            await eventually(lambda: tarpit.open == 1, deadline=10, what="the worker connected to the tarpit")
            stuck.cancel()
            # the worker drops the request (and its connection) long before its 60 s deadline
            await eventually(lambda: tarpit.open == 0, deadline=10, what="the worker cancelled its request")
        finally:
            await pool.close(STOP)


async def test_a_dead_worker_fails_its_polls_and_is_started_again(workers, sushy):
    tarpit = CountingTarpit()
    async with tarpit as port, asyncio.timeout(20):
        stuck = asyncio.create_task(workers.poll(target(port, timeout=60), DeviceKind.SERVER))
        await eventually(lambda: tarpit.open == 1, deadline=10, what="the worker connected to the tarpit")
        [pid] = workers.pids()
        with capture_logs() as logs:
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(WorkerLost, match="exited with code -9"):
                await stuck
        assert [(e["event"], e["polls_lost"], e["exit_code"]) for e in logs] == [
            ("poll worker exited", 1, -9)]

        bmc = target(sushy.ports["public-cooling-unit"])
        assert await workers.poll(bmc, DeviceKind.CDU)
        assert workers.pids() != [pid]


async def test_a_worker_that_keeps_dying_is_started_again_after_a_growing_wait(workers, sushy, tmp_path):
    """A worker that exits before answering (here: a program that records its start and exits) is started at
    once the first time, then only after 1 s, 2 s …: polls in between fail at once, nothing is started for
    them. Once a worker answers again, the count starts over."""
    [worker] = workers._workers
    starts = tmp_path / "starts"
    worker.command = [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('started\\n')"]
    bmc = target(sushy.ports["public-cooling-unit"])
    with capture_logs() as logs:
        for _ in range(2):
            with pytest.raises(WorkerLost, match="exited with code 0"):
                await workers.poll(bmc, DeviceKind.CDU)
        with pytest.raises(WorkerLost, match="exited 2 times in a row; started again in 1 s"):
            await workers.poll(bmc, DeviceKind.CDU)
    assert starts.read_text().splitlines() == ["started"] * 2
    assert [(e["event"], e["restart_in_s"]) for e in logs] == [("poll worker exited", 0.0),
                                                                ("poll worker exited", 1.0)]

    worker.command = PollWorkers(1, max_in_flight=16)._workers[0].command

    async def answered() -> bool:
        try:
            return bool(await workers.poll(bmc, DeviceKind.CDU))
        except WorkerLost as exc:  # before the wait is over: at once, and nothing started
            assert "in a row" in str(exc) and len(starts.read_text().splitlines()) == 2
            return False

    await eventually(answered, deadline=10, what="a poll answered once the wait is over")
    [pid] = workers.pids()
    with capture_logs() as logs:
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: logs, deadline=10, what="the worker's exit logged")
    assert [e["restart_in_s"] for e in logs] == [0.0]  # it had answered: started again at once
    assert await workers.poll(bmc, DeviceKind.CDU)


async def test_the_last_device_to_release_a_bmc_has_its_session_logged_out(workers, fake):
    """Two devices poll one Redfish service: the session outlives the first one's release and is logged out
    at the second's; a device polling it again logs in again."""
    bmc = target(fake.port)
    for _ in range(2):
        workers.hold(bmc)
    assert await workers.poll(bmc, DeviceKind.RACK_PDU)
    workers.release(bmc)
    assert await workers.poll(bmc, DeviceKind.RACK_PDU)
    assert (fake.logins, fake.logouts) == (1, [])
    workers.release(bmc)
    await eventually(lambda: fake.logouts == ["1"], deadline=10, what="the session logged out")
    assert not fake.tokens

    workers.hold(bmc)
    assert await workers.poll(bmc, DeviceKind.RACK_PDU)
    assert fake.logins == 2 and list(fake.tokens.values()) == ["2"]


async def test_credentials_reach_a_worker_only_through_its_pipe_and_close_logs_out(fake):
    pool = PollWorkers(1, max_in_flight=16)
    bmc = target(fake.port)
    first = await pool.poll(bmc, DeviceKind.RACK_PDU)
    assert values(first, Metric.OUTLET_POWER_WATTS, "outlet") == {"1": 100.5, "2": 42.25}
    [pid] = pool.pids()
    for part in ("cmdline", "environ"):
        assert PASSWORD.encode() not in Path(f"/proc/{pid}/{part}").read_bytes()

    # systemd and a terminal signal the whole group: the worker waits for the daemon to stop it
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    assert await pool.poll(bmc, DeviceKind.RACK_PDU) == first
    assert pool.pids() == [pid] and fake.logins == 1

    with capture_logs() as logs:
        await pool.close(STOP)
    assert fake.logouts == ["1"] and not fake.tokens
    assert pool.pids() == [] and logs == []
    assert not Path(f"/proc/{pid}").exists()

"""Daemons on several hosts sharing one PostgreSQL database take turns at the shared jobs (alerts, webhooks,
roll-ups, discovery, placement): a PostgreSQL advisory lock per job, freed with its holder's connection."""

from __future__ import annotations

import signal
import sys
import textwrap

import pytest
from sqlalchemy import text

from daemon.main import once_per_database
from inventory.db import JobLock, make_engine
from inventory.service import Inventory
from tests.lab.common import REPO, Process, wait_until


@pytest.fixture
def engines(postgres_database):
    made = [make_engine(postgres_database) for _ in range(2)]
    yield made
    for engine in made:
        engine.dispose()


def test_one_holder_per_job_and_database(engines):
    here, there = engines
    alerts = JobLock(here, "alerts")
    assert alerts.acquire()
    assert not JobLock(there, "alerts").acquire()
    other_job = JobLock(there, "webhooks")
    assert other_job.acquire()
    alerts.release()
    taken_over = JobLock(there, "alerts")
    assert taken_over.acquire()
    taken_over.release()
    other_job.release()
    assert JobLock(here, "webhooks").acquire()


def test_a_daemon_that_dies_holding_a_lock_frees_it(engines, postgres_database, tmp_path):
    holder = Process([sys.executable, "-c", textwrap.dedent(f"""\
        import signal
        from inventory.db import JobLock, make_engine
        assert JobLock(make_engine({postgres_database!r}), "alerts").acquire()
        print("held", flush=True)
        signal.pause()
        """)], log=tmp_path / "holder.log", cwd=REPO)
    try:
        wait_until(lambda: "held" in holder.output(), deadline=30, what="the other daemon holding the lock")
        assert not JobLock(engines[0], "alerts").acquire()
        holder.proc.send_signal(signal.SIGKILL)
        holder.proc.wait(10)
        lock = JobLock(engines[0], "alerts")
        wait_until(lock.acquire, deadline=30, what="the lock freed by the holder's death")
        lock.release()
    finally:
        holder.stop()


async def test_a_tick_is_skipped_while_another_daemon_runs_the_job(engines):
    runs = []

    async def job() -> None:
        runs.append(1)

    elsewhere = JobLock(engines[1], "alerts")
    assert elsewhere.acquire()
    tick = once_per_database(Inventory(engines[0]), "alerts", job)
    await tick()
    assert runs == []
    elsewhere.release()
    await tick()
    await tick()  # the tick released what it took
    assert runs == [1, 1]


def test_sqlite_serves_one_host_so_the_lock_is_always_granted(sqlite_template):
    engine = make_engine(f"sqlite:///{sqlite_template}")
    try:
        assert JobLock(engine, "alerts").acquire() and JobLock(engine, "alerts").acquire()
    finally:
        engine.dispose()


def test_a_released_lock_leaves_no_lock_on_the_pooled_connection(engines):
    here, there = engines
    first = JobLock(here, "webhooks")
    assert first.acquire()
    first.release()  # its connection went back to here's pool
    again = JobLock(there, "webhooks")
    assert again.acquire()  # so nothing in here's pool still holds it
    again.release()
    with here.connect() as connection:  # here's pooled connection holds no advisory lock at all
        held = connection.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                       "AND pid = pg_backend_pid()")).scalar_one()
    assert held == 0

"""The thread pools: pyghmi's calls run apart, so that IPMI calls that never return leave the database's
threads free."""

from __future__ import annotations

import asyncio
import threading

from daemon.executor import IPMI_WORKERS, blocking, install_executor, ipmi_blocking


async def test_hung_ipmi_calls_never_take_the_threads_blocking_calls_need():
    install_executor(asyncio.get_running_loop(), workers=2, ipmi_workers=2)
    release, started = threading.Event(), threading.Semaphore(0)

    def hung_ipmi_call() -> str:
        started.release()
        release.wait(60)
        return "released"

    hung = [asyncio.ensure_future(ipmi_blocking(hung_ipmi_call)) for _ in range(4)]  # twice the IPMI pool
    try:
        for _ in range(2):
            assert await asyncio.wait_for(asyncio.to_thread(started.acquire, timeout=30), 30)  # the IPMI pool is full
        names = await asyncio.wait_for(asyncio.gather(*(blocking(lambda: threading.current_thread().name)
                                                         for _ in range(4))), 30)
        assert all(name.startswith("baie-blocking") for name in names)
        assert not any(call.done() for call in hung)
    finally:
        release.set()
    assert await asyncio.wait_for(asyncio.gather(*hung), 30) == ["released"] * 4
    install_executor(asyncio.get_running_loop(), workers=2, ipmi_workers=IPMI_WORKERS)  # the IPMI pool as it was

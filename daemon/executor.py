"""The one thread hop: blocking calls (the ORM, sushy, pyghmi) run on bounded pools, never on the loop.

pyghmi gets a pool of its own: a pyghmi call can hang its thread for good (in bench/, at 2,000 IPMI BMCs, every
worker ended up waiting on an IO wake-up that pyghmi's IO thread never sent), and such threads must never be
the ones the database needs. At worst IPMI stops; the daemon does not.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
IPMI_WORKERS = 8

_ipmi_pool: ThreadPoolExecutor | None = None


def install_executor(loop: asyncio.AbstractEventLoop, workers: int, ipmi_workers: int = IPMI_WORKERS) -> None:
    """Make the bounded pool the loop's default executor, so that ``blocking``, ``asyncio.to_thread`` and
    the scheduler's plain-function jobs all share the one bound; and size the IPMI pool."""
    global _ipmi_pool
    loop.set_default_executor(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="baie-blocking"))
    if _ipmi_pool is not None:
        _ipmi_pool.shutdown(wait=False)
    _ipmi_pool = ThreadPoolExecutor(max_workers=ipmi_workers, thread_name_prefix="baie-ipmi")


async def blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``await blocking(inventory.node, ref)``: run ``fn`` on the bounded pool. The caller's structlog
    context (bound with ``structlog.contextvars``) travels with the call."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def ipmi_blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``blocking`` for pyghmi calls, on the IPMI pool."""
    global _ipmi_pool
    if _ipmi_pool is None:
        _ipmi_pool = ThreadPoolExecutor(max_workers=IPMI_WORKERS, thread_name_prefix="baie-ipmi")
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_ipmi_pool, call)

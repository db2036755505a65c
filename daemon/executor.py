"""The one thread hop: blocking calls (the ORM, sushy, pyghmi) run on a bounded pool, never on the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def install_executor(loop: asyncio.AbstractEventLoop, workers: int) -> None:
    """Make the bounded pool the loop's default executor, so that ``blocking``, ``asyncio.to_thread`` and
    the scheduler's plain-function jobs all share the one bound."""
    loop.set_default_executor(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="baie-blocking"))


async def blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``await blocking(inventory.node, ref)``: run ``fn`` on the bounded pool. The caller's structlog
    context (bound with ``structlog.contextvars``) travels with the call."""
    return await asyncio.to_thread(fn, *args, **kwargs)

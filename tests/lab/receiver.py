"""A webhook receiver on loopback (aiohttp): verifies every Standard Webhooks signature on its own (not with
baie's code), records what arrived, and answers as a test scripts it.

Each path is a target with its own key: ``Receiver({"/a": key_a, "/b": key_b})``. A request whose signature
does not verify is answered 401 and counted in ``bad``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.lab.common import eventually, free_port


@dataclass
class Received:
    path: str
    webhook_id: str
    timestamp: int
    body: dict[str, Any]


class Receiver:
    def __init__(self, keys: dict[str, bytes], port: int | None = None) -> None:
        self.keys = keys
        self.port = port or free_port()
        self.received: list[Received] = []  # verified requests, in arrival order
        self.requests: list[str] = []  # every path requested, verified or not
        self.bad = 0
        self.replies: list[tuple[int, dict[str, str]]] = []  # scripted (status, headers), used first to last
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        body = await request.read()
        key = self.keys.get(request.path)
        webhook_id = request.headers.get("webhook-id", "")
        timestamp = request.headers.get("webhook-timestamp", "")
        expected = base64.b64encode(hmac.new(key or b"", f"{webhook_id}.{timestamp}.".encode() + body,
                                             hashlib.sha256).digest()).decode()
        signatures = [s.partition(",")[2] for s in request.headers.get("webhook-signature", "").split()
                      if s.startswith("v1,")]
        if key is None or not any(hmac.compare_digest(expected, s) for s in signatures):
            self.bad += 1
            return web.Response(status=401)
        self.received.append(Received(request.path, webhook_id, int(timestamp), json.loads(body)))
        status, headers = self.replies.pop(0) if self.replies else (200, {})
        return web.Response(status=status, headers=headers)

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, check: Callable[[], bool], *, deadline: float, what: str) -> None:
        try:
            await eventually(check, deadline=deadline, what=what)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: received {self.received}") from None

"""The CLI's way to the daemon: HTTP over its unix socket (httpx), for what needs the daemon's credentials.

Errors become one line on stderr: no socket, no answer, or the daemon's own ``{"error": ...}``.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import typer

from inventory.cli import fail

# Power actions wait for the BMC to confirm (up to the daemon's bmc.power_confirm_seconds, and retries).
READ_TIMEOUT_SECONDS = 180.0


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class DaemonClient:
    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://baie",
            timeout=httpx.Timeout(10.0, read=READ_TIMEOUT_SECONDS),
            headers={"X-Baie-Actor": f"cli:{getpass.getuser()}"})

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        try:
            yield
        except httpx.TimeoutException:
            fail(f"the daemon did not answer within {READ_TIMEOUT_SECONDS:.0f}s")
        except httpx.TransportError as exc:
            fail(f"the daemon is not answering on {self.socket}: {_first_line(exc)}")

    @staticmethod
    def _check(reply: httpx.Response) -> None:
        if reply.is_success:
            return
        try:
            message = reply.json()["error"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {reply.status_code} {' '.join(reply.text.split())[:200]}"
        fail(str(message))

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._reaching():
            reply = self._client.request(method, path, **kwargs)
        self._check(reply)
        return reply.json()

    def stream(self, path: str, **kwargs: Any) -> Iterator[dict]:
        """POST ``path`` and yield the NDJSON objects the daemon streams back."""
        with self._reaching(), self._client.stream("POST", path, **kwargs) as reply:
            if not reply.is_success:
                reply.read()
                self._check(reply)
            for line in reply.iter_lines():
                if line.strip():
                    yield json.loads(line)


@contextmanager
def daemon_client(ctx: typer.Context) -> Iterator[DaemonClient]:
    socket: Path = ctx.obj.api_socket
    if not socket.exists():
        fail(f"the daemon is not running (no socket at {socket})")
    client = DaemonClient(socket)
    try:
        yield client
    finally:
        client.close()

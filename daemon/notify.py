"""sd_notify(3): READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 over $NOTIFY_SOCKET. A no-op without systemd."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("baie.notify")


class Notifier:
    def __init__(self, environ: Mapping[str, str]) -> None:
        address = environ.get("NOTIFY_SOCKET") or None
        if address and address.startswith("@"):  # an abstract socket
            address = "\0" + address[1:]
        self._address = address
        self._socket: socket.socket | None = None
        if address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)  # a full receiver must not stall the loop
        self._failing = False
        usec = environ.get("WATCHDOG_USEC")
        pid = environ.get("WATCHDOG_PID")
        ours = not pid or int(pid) == os.getpid()
        # systemd's advice: ping at half the timeout
        self.watchdog_interval = int(usec) / 2_000_000 if usec and ours else None

    def send(self, *fields: str) -> None:
        """Send ``fields`` ("READY=1", "STATUS=...") as one datagram."""
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            if not self._failing:
                log.warning("sd_notify failed", error=str(exc))
            self._failing = True
        else:
            if self._failing:
                log.info("sd_notify works again")
            self._failing = False

    async def watchdog(self) -> None:
        """Ping until cancelled. It runs on the loop, so a wedged loop stops the pings and systemd restarts us."""
        assert self.watchdog_interval is not None
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()

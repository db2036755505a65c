"""Shared plumbing for the lab's simulated peers: free loopback ports, readiness waits, process handling.

The lab is used by the tests and by `make demo`; everything it starts listens on loopback only.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from daemon.credentials import CredentialStore

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MOCKUPS = SHARED / "redfish-mockups"
PEERS = SHARED / "peers"
VENV_BIN = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel says is free on ``host`` right now (TCP by default, UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def write_config(path: Path, sections: dict[str, dict[str, object] | list[dict[str, object]]]) -> Path:
    """A daemon config file: each section a TOML table (a list of them: an array of tables), each value
    written as JSON, which TOML reads the same for strings, numbers and booleans; paths become strings."""
    def table(header: str, keys: dict[str, object]) -> list[str]:
        return [header, *(f"{key} = {json.dumps(str(v) if isinstance(v, Path) else v)}" for key, v in keys.items())]

    lines: list[str] = []
    for name, keys in sections.items():
        for entry in keys if isinstance(keys, list) else [keys]:
            lines += table(f"[[{name}]]" if isinstance(keys, list) else f"[{name}]", entry)
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_until(check: Callable[[], bool], *, deadline: float, what: str, interval: float = 0.05) -> None:
    """Poll ``check`` until it returns true; raise TimeoutError naming ``what`` after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    last_error: Exception | None = None
    while time.monotonic() < end:
        try:
            if check():
                return
        except Exception as exc:  # the peer is not up yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready within {deadline}s (last error: {last_error!r})")


async def eventually(check: Callable[[], object], *, deadline: float, what: str, interval: float = 0.05) -> None:
    """``wait_until`` inside a test's event loop: ``check`` may be a coroutine function; its exceptions are
    the test's failures, not retried."""
    end = time.monotonic() + deadline
    while not (await result if inspect.isawaitable(result := check()) else result):
        if time.monotonic() > end:
            raise TimeoutError(f"{what} not within {deadline}s")
        await asyncio.sleep(interval)


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tool(name: str) -> str:
    """Path of a console script from this venv, else from PATH."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed (run `make test`, which installs it)")
    return found


class Process:
    """A child process in its own process group, stopped with SIGTERM (then SIGKILL) on exit."""

    def __init__(self, argv: list[str], *, log: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log = log
        self._log_file = open(log, "ab")
        self.proc = subprocess.Popen(argv, stdout=self._log_file, stderr=subprocess.STDOUT, cwd=cwd,
                                     env={**os.environ, **(env or {})}, start_new_session=True,
                                     stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log_file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def write_credential(directory: Path, name: str, text: str) -> CredentialStore:
    """A credential file as the daemon wants it (directory 0700, file 0600); the store reading it."""
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / name
    path.write_text(text)
    path.chmod(0o600)
    return CredentialStore(directory)


class Peer:
    """Base of the lab's simulated peers: one process with a private directory, both gone on exit."""

    _dir: Path | None = None
    _process: Process | None = None

    def __exit__(self, *exc_info: object) -> None:
        if self._process:
            self._process.stop()
            self._process = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

"""SSH to an installed host (asyncssh): only to a host whose key we already know, every command with a deadline.

There is no trust on first use: the host key is the one the host reported through its provisioning
callback, and a host presenting any other key is refused (``HostKeyMismatch``). Library errors become ours.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncssh

from drivers.base import AuthFailed, DriverError, MalformedReply, Secret, Timeout


class HostUnreachable(DriverError):
    """Nothing answered on the SSH port, or the connection was refused or reset."""


class HostKeyMismatch(DriverError):
    """The host presented a key other than the one on record."""


class CommandFailed(DriverError):
    """A command ran and exited non-zero."""

    def __init__(self, target: str, command: str, exit_status: int | None, stderr: str) -> None:
        detail = stderr.strip().splitlines()[-1][:200] if stderr.strip() else "no output on stderr"
        super().__init__(target, f"`{command}` exited {exit_status}: {detail}")
        self.command = command
        self.exit_status = exit_status


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


def public_key(private_key: Secret) -> str:
    """The OpenSSH public line of a private key (to install in a host's authorized_keys)."""
    try:
        return asyncssh.import_private_key(private_key.reveal()).export_public_key().decode().strip()
    except (asyncssh.KeyImportError, ValueError):
        raise MalformedReply("ssh key", "the SSH private key cannot be read") from None


def parse_host_key(line: str) -> asyncssh.SSHKey:
    """An OpenSSH public key line (``ssh-ed25519 AAAA… comment``); MalformedReply if it is not one."""
    try:
        return asyncssh.import_public_key(line.strip())
    except (asyncssh.KeyImportError, ValueError):
        raise MalformedReply("host key", "not an OpenSSH public key line") from None


class SshHost:
    """One connection to a host (an async context manager that closes it); ``run`` returns the result of a
    command that exited 0, else raises."""

    def __init__(self, target: str, connection: asyncssh.SSHClientConnection, timeout: float) -> None:
        self.target = target
        self._connection = connection
        self._timeout = timeout

    async def run(self, command: str, *, check: bool = True, timeout: float | None = None) -> CommandResult:
        try:
            result = await asyncio.wait_for(self._connection.run(command, check=False),
                                            timeout or self._timeout)
        except TimeoutError:
            raise Timeout(self.target, f"`{command}` did not finish within {timeout or self._timeout:g} s") from None
        except (OSError, asyncssh.Error) as exc:
            raise HostUnreachable(self.target, f"`{command}`: connection lost ({type(exc).__name__})") from None
        stdout, stderr = _text(result.stdout), _text(result.stderr)
        status = result.exit_status if result.exit_status is not None else -1
        if check and status != 0:
            raise CommandFailed(self.target, command, status, stderr)
        return CommandResult(status, stdout, stderr)

    async def __aenter__(self) -> SshHost:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._connection.close()
        await self._connection.wait_closed()


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


async def connect(address: str, port: int, username: str, client_key: Secret, host_key: str, *,
                  timeout: float) -> SshHost:
    """Connect trusting exactly ``host_key`` (strict checking, never adding a key): ``async with await
    connect(…) as host``."""
    target = f"{address}:{port}"
    trusted = parse_host_key(host_key)
    try:
        key = asyncssh.import_private_key(client_key.reveal())
    except (asyncssh.KeyImportError, ValueError):
        raise AuthFailed(target, "the SSH private key cannot be read") from None
    try:
        connection = await asyncio.wait_for(asyncssh.connect(
            address, port, username=username, client_keys=[key], known_hosts=([trusted], [], []),
            agent_path=None, config=[], connect_timeout=timeout, login_timeout=timeout), timeout)
    except asyncssh.HostKeyNotVerifiable:
        raise HostKeyMismatch(target, "the host key differs from the one the host reported at install") from None
    except asyncssh.PermissionDenied:
        raise AuthFailed(target, f"the host refused our key for {username}") from None
    except TimeoutError:
        raise Timeout(target, f"no SSH session within {timeout:g} s") from None
    except (OSError, asyncssh.Error) as exc:
        raise HostUnreachable(target, f"SSH connection failed ({type(exc).__name__})") from None
    return SshHost(target, connection, timeout)

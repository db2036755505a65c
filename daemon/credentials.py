"""Named secrets read from files: systemd's $CREDENTIALS_DIRECTORY (LoadCredential=) or a directory of ours.

A credential is a file named after it. ``get(name)`` returns the whole file (one trailing newline
dropped) as a ``Secret``; ``credentials(name)`` reads a ``username:password`` file — one line, split at the
first colon, so the password may contain colons and the username may not. Files are read on every call,
so a rotated secret takes effect without a restart. Errors name the file, never its content.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from drivers.base import Credentials, Secret


class CredentialError(Exception):
    """A credential cannot be used; the message names the file and why, never the content."""


class CredentialStore:
    def __init__(self, directory: Path, *, systemd: bool = False) -> None:
        """``systemd``: the directory is $CREDENTIALS_DIRECTORY, private to this service by construction,
        so the files' modes are systemd's business and are not checked."""
        self.directory = Path(directory)
        self.systemd = systemd

    def has(self, name: str) -> bool:
        return self._path(name).is_file()

    def get(self, name: str) -> Secret:
        return Secret(self._read(name))

    def credentials(self, name: str) -> Credentials:
        username, sep, password = self._read(name).partition(":")
        if not sep or not username or not password:
            raise CredentialError(f"{self._path(name)}: expected one line 'username:password'")
        return Credentials(username=username, password=Secret(password))

    def _path(self, name: str) -> Path:
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise CredentialError(f"{name!r} is not a credential name (a file name, no '/')")
        return self.directory / name

    def _read(self, name: str) -> str:
        path = self._path(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise CredentialError(f"{path}: no such credential file") from None
        except PermissionError:
            raise CredentialError(f"{path}: not readable by this user") from None
        with os.fdopen(fd, "rb") as file:
            mode = stat.S_IMODE(os.fstat(file.fileno()).st_mode)
            if not self.systemd and mode & 0o077:
                raise CredentialError(f"{path}: mode {mode:04o} lets group or other at it; chmod 600 it")
            data = file.read()
        try:
            value = data.decode()
        except UnicodeDecodeError:
            raise CredentialError(f"{path}: not UTF-8 text") from None
        value = value.removesuffix("\n").removesuffix("\r")
        if not value:
            raise CredentialError(f"{path}: empty")
        return value

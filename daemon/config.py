"""Settings: one validated object built at start-up from a TOML file and handed down. Nothing reads it globally.

Unknown keys are errors that name the file and the key. ``BAIE_DATABASE_URL`` overrides ``database.url``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inventory.db import DEFAULT_URL

DEFAULT_CONFIG = Path("/etc/baie/baie.toml")


class ConfigError(Exception):
    """The configuration file cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str = DEFAULT_URL


class ApiSettings(_Section):
    socket: Path = Path("/run/baie/api.sock")
    # Optional TCP listener "HOST:PORT"; it requires the bearer token named by token_credential.
    listen: str | None = None
    token_credential: str = "api-token"


class LogSettings(_Section):
    level: str = Field(default="info", pattern="^(debug|info|warning|error)$")


class CredentialSettings(_Section):
    # Where secrets are read from: systemd's $CREDENTIALS_DIRECTORY when set, else this directory.
    directory: Path = Path("/etc/baie/credentials")


class Settings(_Section):
    database: DatabaseSettings = DatabaseSettings()
    api: ApiSettings = ApiSettings()
    log: LogSettings = LogSettings()
    credentials: CredentialSettings = CredentialSettings()


def load_settings(path: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read ``path`` (or /etc/baie/baie.toml when it exists, else defaults) and apply the environment."""
    env = os.environ if env is None else env
    data: dict = {}
    source = path or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    if source is not None:
        try:
            data = tomllib.loads(source.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such file") from None
        except PermissionError:
            raise ConfigError(f"{source}: not readable by this user") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    if env.get("BAIE_DATABASE_URL"):
        data.setdefault("database", {})
        if isinstance(data["database"], dict):
            data["database"] = {**data["database"], "url": env["BAIE_DATABASE_URL"]}
    if env.get("CREDENTIALS_DIRECTORY"):
        data.setdefault("credentials", {})
        if isinstance(data["credentials"], dict):
            data["credentials"] = {**data["credentials"], "directory": env["CREDENTIALS_DIRECTORY"]}
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        where = source or "settings"
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r}")
            else:
                problems.append(f"{key}: {err['msg']}")
        raise ConfigError(f"{where}: " + "; ".join(problems)) from None

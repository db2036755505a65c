"""Structured logs: one JSON object per line on stdout, ISO UTC timestamps, bound context, no secrets.

Our own events go through structlog; the libraries' stdlib logging (uvicorn, apscheduler, SQLAlchemy) is
rendered by the same chain, so every line on stdout is JSON and passes the redaction below.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

from drivers.base import Secret

REDACTED = "********"
# Values under these keys are never logged, whatever they hold ("bmc_password", "api_token", "auth_key"...).
SECRET_KEY = re.compile(r"passw(or)?d|passphrase|secret|token|key|community|authorization", re.I)
QUIET_LIBRARIES = ("uvicorn", "apscheduler", "alembic")  # their INFO lines repeat our own events
# sushy warns at every session it opens on a BMC without SessionService (the driver falls back to basic
# auth) and logs every failed request, which the driver turns into our typed errors: ours are the record.
LIBRARY_LEVELS = {"sushy": logging.CRITICAL, "pyghmi": logging.ERROR}


def _redact_value(value: Any) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and SECRET_KEY.search(k) else _redact_value(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Replace the values of secret-sounding keys, and every ``Secret``, at any depth."""
    return _redact_value(event_dict)


def configure_logging(level: str = "info") -> None:
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # a plain traceback string: the rich renderers can include local variables, and so secrets
            structlog.processors.format_exc_info,
            redact,
            structlog.processors.JSONRenderer(),
        ],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name, library_level in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(max(library_level, root.level))

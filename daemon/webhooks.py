"""Webhook delivery: the outbox's notifications, signed the Standard Webhooks way, sent over aiohttp.

Each tick batches the due outbox entries into notifications (inventory.alerts.seal), then sends every
target's notifications oldest first; one waiting for its retry holds back the ones behind it, so a target
hears of an alert's changes in order. Delivery is at least once: a receiver drops an id it has seen.

Signing (https://www.standardwebhooks.com): ``webhook-id`` (the notification's id, the same on every attempt),
``webhook-timestamp`` (unix seconds of the attempt) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">``. The key is the target's credential file: ``whsec_<base64>`` (the spec's form)
is base64-decoded; any other content is used as its raw UTF-8 bytes. Neither is ever logged.

An attempt has 15 s. 2xx delivers; 410 Gone disables the target (an event says so) until its URL changes;
anything else, a 3xx included (redirects are not followed), a timeout or a refused connection is retried
after an exponential backoff with jitter, or after Retry-After when that is longer (at most an hour),
and dead-lettered after the target's ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import importlib.metadata
import json
import random
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Annotated, Any

import aiohttp
import structlog
from fastapi import APIRouter, Depends, Request
from sqlalchemy.exc import SQLAlchemyError

from daemon.actions import Actor
from daemon.config import Settings, WebhookSettings
from daemon.credentials import CredentialError, CredentialStore
from daemon.executor import blocking
from drivers.base import Secret
from inventory.alerts import AlertState, next_due, record_delivered, record_failed, record_gone, seal
from inventory.errors import NotFound
from inventory.model import utcnow
from inventory.service import Inventory

log = structlog.get_logger("baie.webhooks")

DELIVERY_SECONDS = 1.0  # how often the outbox is looked at
ATTEMPT_TIMEOUT = aiohttp.ClientTimeout(total=15)
RETRY_AFTER_MAX = timedelta(hours=1)
USER_AGENT = f"baie/{importlib.metadata.version('baie')}"
NOT_ENDED = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert still firing


# -------------------------------------------------------------------------------------- signing
def signing_key(secret: Secret) -> bytes:
    value = secret.reveal()
    if value.startswith("whsec_"):
        return base64.b64decode(value.removeprefix("whsec_"), validate=True)
    return value.encode()


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


# -------------------------------------------------------------------------------------- payloads
def _status(alerts: list[dict[str, Any]]) -> str:
    return AlertState.FIRING if any(a["state"] == AlertState.FIRING for a in alerts) else AlertState.RESOLVED


def _am_labels(labels: dict[str, str], severity: str | None = None) -> dict[str, str]:
    """Our labels as Alertmanager's: ``rule`` is ``alertname``."""
    renamed = {("alertname" if k == "rule" else k): v for k, v in labels.items()}
    return renamed | ({"severity": severity} if severity else {})


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    return dict(set.intersection(*(set(d.items()) for d in dicts))) if dicts else {}


def alertmanager(payload: dict[str, Any], target: str, group_key: str) -> dict[str, Any]:
    """The Alertmanager webhook (version 4) document."""
    alerts = [{
        "status": a["state"],
        "labels": _am_labels(a["labels"], a["severity"]),
        "annotations": {"summary": a["summary"], **{k: v if isinstance(v, str) else json.dumps(v)
                                                   for k, v in a["details"].items()}},
        "startsAt": a["started_at"],
        "endsAt": a["resolved_at"] or NOT_ENDED,
        "generatorURL": "",
        "fingerprint": a["fingerprint"],
    } for a in payload["alerts"]]
    return {"version": "4", "groupKey": f"{target}:{group_key}", "truncatedAlerts": 0,
            "status": _status(payload["alerts"]), "receiver": target, "groupLabels": _am_labels(payload["group"]),
            "commonLabels": _common([a["labels"] for a in alerts]),
            "commonAnnotations": _common([a["annotations"] for a in alerts]), "externalURL": "", "alerts": alerts}


def render(fmt: str, kind: str, payload: dict[str, Any], target: str, group_key: str, timestamp: datetime) -> bytes:
    """The body for a target's format; the same input gives the same bytes, so every retry sends the same."""
    if fmt == "alertmanager":
        document = alertmanager(payload, target, group_key)
    else:
        document = {"type": kind, "timestamp": timestamp.isoformat(),
                    "data": {"target": target, "status": _status(payload["alerts"]), **payload}}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def sample_payload(actor: str, now: datetime) -> dict[str, Any]:
    """A synthetic alert for `baie webhooks test`, in a notification's payload form."""
    return {"group": {"rule": "webhook_test"}, "alerts": [{
        "id": 0, "fingerprint": "0" * 16, "rule": "webhook_test", "state": AlertState.FIRING, "severity": "info",
        "labels": {"rule": "webhook_test"}, "summary": f"Test notification requested by {actor}",
        "details": {"requested_by": actor}, "started_at": now.isoformat(), "resolved_at": None, "flapping": False}]}


# -------------------------------------------------------------------------------------- retries
def retry_after(value: str | None, now: datetime) -> timedelta:
    """Retry-After as seconds or an HTTP date; zero when absent or unreadable."""
    if not value:
        return timedelta(0)
    if value.strip().isdigit():
        return timedelta(seconds=int(value))
    try:
        return max(parsedate_to_datetime(value) - now, timedelta(0))
    except (TypeError, ValueError):
        return timedelta(0)


def backoff(attempt: int, target: WebhookSettings) -> timedelta:
    """Before retry ``attempt`` (1, 2, …): doubling from ``backoff`` up to ``max_backoff``, the upper half jittered."""
    ceiling = min(target.max_backoff, target.backoff * 2 ** (attempt - 1))
    return ceiling / 2 + ceiling / 2 * random.random()


# -------------------------------------------------------------------------------------- delivery
class Deliverer:
    def __init__(self, inventory: Inventory, settings: Settings, store: CredentialStore,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.inventory = inventory
        self.targets = {target.name: target for target in settings.webhooks}
        self.urls = {target.name: target.url for target in settings.webhooks}
        self.policy = settings.alerts.policy
        self.store = store
        self.clock = clock
        self.failing: set[str] = set()  # targets whose last attempt failed: logged once, and once on recovery
        self.database_failing = False

    async def deliver(self) -> None:
        """One tick: batch what is due, then send each target's due notifications."""
        try:
            await blocking(seal, self.inventory, self.clock(), self.urls, self.policy)
        except SQLAlchemyError as exc:
            return self._database_error(exc)
        if self.database_failing:
            log.info("webhooks.database_recovered")
        self.database_failing = False
        await asyncio.gather(*(self._drain(target) for target in self.targets.values()))

    def _database_error(self, exc: SQLAlchemyError) -> None:
        if not self.database_failing:
            log.error("webhooks.database_failed", error=str(getattr(exc, "orig", exc)).splitlines()[0])
        self.database_failing = True

    async def _drain(self, target: WebhookSettings) -> None:
        session = None
        try:
            while notification := await blocking(next_due, self.inventory, target.name, self.clock()):
                session = session or aiohttp.ClientSession(timeout=ATTEMPT_TIMEOUT)
                body = render(target.format, "alert.notification", notification.payload, target.name,
                              notification.group_key, notification.created_at)
                if not await self._attempt(session, target, notification.id, notification.webhook_id,
                                           notification.attempts, body):
                    return
        except SQLAlchemyError as exc:
            self._database_error(exc)
        finally:
            if session:
                await session.close()

    async def _attempt(self, session: aiohttp.ClientSession, target: WebhookSettings, notification_id: int,
                       webhook_id: str, attempts: int, body: bytes) -> bool:
        now = self.clock()
        status, wait, error = await self._post(session, target, webhook_id, body)
        if error is None:
            await blocking(record_delivered, self.inventory, notification_id, now, status)
            if target.name in self.failing:
                self.failing.discard(target.name)
                log.info("webhook.recovered", target=target.name)
            return True
        if status == 410:
            await blocking(record_gone, self.inventory, notification_id, now, target.url)
            log.error("webhook.disabled", target=target.name, reason="410 Gone")
            return False
        retry_at = now + max(backoff(attempts + 1, target), min(wait, RETRY_AFTER_MAX))
        dead = await blocking(record_failed, self.inventory, notification_id, now, status, error, retry_at,
                              target.max_attempts)
        if dead:
            log.error("webhook.dead_letter", target=target.name, webhook_id=webhook_id, attempts=attempts + 1,
                      error=error)
        elif target.name not in self.failing:
            log.warning("webhook.failing", target=target.name, error=error)
        self.failing.add(target.name)
        return False

    async def _post(self, session: aiohttp.ClientSession, target: WebhookSettings, webhook_id: str,
                    body: bytes) -> tuple[int | None, timedelta, str | None]:
        """One signed POST: (HTTP status or None, Retry-After, error or None when delivered)."""
        try:
            key = signing_key(self.store.get(target.secret_credential))
        except CredentialError as exc:
            return None, timedelta(0), f"secret: {exc}"
        except binascii.Error:
            return None, timedelta(0), f"secret {target.secret_credential!r}: not base64 after whsec_"
        now = self.clock()
        timestamp = int(now.timestamp())
        headers = {"content-type": "application/json", "user-agent": USER_AGENT, "webhook-id": webhook_id,
                   "webhook-timestamp": str(timestamp),
                   "webhook-signature": signature(key, webhook_id, timestamp, body)}
        try:
            async with session.post(target.url, data=body, headers=headers, allow_redirects=False) as reply:
                status, wait = reply.status, retry_after(reply.headers.get("Retry-After"), now)
                location = reply.headers.get("Location")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return None, timedelta(0), f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= status < 300:
            return status, wait, None
        if 300 <= status < 400:
            return status, wait, f"HTTP {status}: redirect to {location} not followed"
        return status, wait, f"HTTP {status}"

    async def send_test(self, name: str, actor: str) -> dict[str, Any]:
        """Send one signed test notification now (no retries): what the target answered."""
        target = self.targets.get(name)
        if target is None:
            raise NotFound("webhook target", name)
        webhook_id, now = f"msg_{uuid.uuid4().hex}", self.clock()
        body = render(target.format, "webhook.test", sample_payload(actor, now), name, "webhook_test", now)
        async with aiohttp.ClientSession(timeout=ATTEMPT_TIMEOUT) as session:
            status, _wait, error = await self._post(session, target, webhook_id, body)
        log.info("webhook.test", target=name, actor=actor, status=status, error=error)
        return {"target": name, "webhook_id": webhook_id, "delivered": error is None, "status": status,
                "error": error}


# -------------------------------------------------------------------------------------------- API
router = APIRouter(prefix="/api/v1")


def _deliverer(request: Request) -> Deliverer:
    return request.app.state.webhooks


@router.post("/webhooks/{name}/test", summary="Send a signed test notification to a webhook target")
async def webhook_test(name: str, actor: Actor, deliverer: Annotated[Deliverer, Depends(_deliverer)]) -> dict:
    return await deliverer.send_test(name, actor)

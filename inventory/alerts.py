"""Alerts on the database: their state, silences, acknowledgements and the webhook outbox.

The daemon's rules say which conditions hold (:class:`Condition`); :func:`apply` turns that into alert state
and, in the SAME transaction, into outbox entries, one per webhook target, for every change the targets
must hear of. :func:`seal` batches the entries that are due into :class:`Notification` rows (one signed
message each); the daemon delivers those and records each attempt here. The CLI reads and writes the rest.

Lifecycle of an alert: ``pending`` (condition true, its ``for`` not yet elapsed) → ``firing`` → ``resolved``.
An alert whose condition changed ``flap_threshold`` times within ``flap_window`` is flapping: it is held
firing, without notifications, until it has been steady for long enough.
"""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from pydantic import BaseModel
from sqlalchemy import func, or_, update
from sqlmodel import Session, col, select

from inventory.errors import Invalid, NotFound
from inventory.model import (
    Alert,
    Event,
    Node,
    NodeState,
    Notification,
    OutboxEntry,
    Rack,
    Silence,
    Site,
    WebhookTarget,
)
from inventory.service import Inventory, _node_label, as_utc
from inventory.telemetry import series


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class AlertState(enum.StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class Delivery(enum.StrEnum):
    """A notification's state."""

    PENDING = "pending"  # to be sent, or to be retried at next_attempt_at
    DELIVERED = "delivered"
    DEAD = "dead"  # dead-lettered: every attempt failed
    DISABLED = "disabled"  # its target answered 410 Gone


class LeakPolicy(enum.StrEnum):
    """What the daemon does to the nodes a leaking loop serves."""

    NONE = "none"
    CORDON = "cordon"  # nodes to maintenance
    POWER_OFF = "power-off"


class BuiltinRule(NamedTuple):
    severity: Severity
    threshold: float | None  # None: the rule has no threshold of its own


# The built-in rules with their default severity and threshold; `[alerts.builtin.NAME]` overrides either.
BUILTIN_RULES: dict[str, BuiltinRule] = {
    # threshold: evaluations in a row that find the BMC unreachable (the telemetry loop marks it so after
    # telemetry.failures_before_unreachable failed polls)
    "bmc_unreachable": BuiltinRule(Severity.WARNING, 1),
    "bmc_auth_failed": BuiltinRule(Severity.WARNING, None),
    "bmc_certificate_changed": BuiltinRule(Severity.CRITICAL, None),
    "psu_failed": BuiltinRule(Severity.WARNING, None),
    "rack_redundancy_lost": BuiltinRule(Severity.CRITICAL, None),
    "rack_over_budget": BuiltinRule(Severity.WARNING, 100),  # % of the rack's power budget
    "inlet_temperature_high": BuiltinRule(Severity.WARNING, 32),  # °C
    "coolant_leak": BuiltinRule(Severity.CRITICAL, None),
    # the CDU rules' limits are the loop's own: supply_temperature_max_c, flow_min_lpm
    "cdu_supply_temperature_high": BuiltinRule(Severity.WARNING, None),
    "cdu_flow_low": BuiltinRule(Severity.WARNING, None),
    "cdu_pump_failed": BuiltinRule(Severity.CRITICAL, None),
    # threshold: seconds an event keeps its alert firing
    "hardware_drift": BuiltinRule(Severity.INFO, 3600),
    "placement_mismatch": BuiltinRule(Severity.WARNING, 3600),
}

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: str) -> timedelta:
    """``90s``, ``5m``, ``2h``, ``7d``, ``1w``."""
    if match := _DURATION.fullmatch(value.strip()):
        return timedelta(**{_DURATION_UNITS[match[2]]: float(match[1])})
    raise ValueError(f"{value!r} is not a duration like 90s, 5m, 2h or 7d")


class Policy(NamedTuple):
    """How alerts become notifications (the daemon's ``[alerts]`` settings)."""

    group_by: tuple[str, ...] = ("rule", "site")
    group_wait: timedelta = timedelta(seconds=30)
    group_interval: timedelta = timedelta(minutes=5)
    repeat_interval: timedelta = timedelta(hours=4)
    flap_window: timedelta = timedelta(hours=1)
    flap_threshold: int = 4


@dataclass
class Condition:
    """A rule's condition holding now for one label set. ``labels`` carry ``rule``."""

    severity: str
    labels: dict[str, str]
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    for_: timedelta = timedelta(0)

    @property
    def rule(self) -> str:
        return self.labels["rule"]


class _Fields(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"  # a label the series does not carry shows as itself


def render_summary(template: str, labels: Mapping[str, str], value: float) -> str:
    """A user rule's summary: ``str.format`` with the labels and ``value``, e.g. "{node} at {value:.0f} °C"."""
    return template.format_map(_Fields(labels, value=value))


def fingerprint(labels: Mapping[str, str]) -> str:
    return hashlib.sha256(series(labels).encode()).hexdigest()[:16]


# -------------------------------------------------------------------------------------------- views
class AlertView(BaseModel):
    id: int
    fingerprint: str
    rule: str
    state: str
    severity: str
    labels: dict[str, str]
    summary: str
    details: dict[str, Any]
    started_at: datetime | None
    resolved_at: datetime | None
    flapping: bool
    silenced: bool = False
    acked_by: str | None
    acked_at: datetime | None


class SilenceView(BaseModel):
    id: int
    matchers: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    expired_by: str | None
    active: bool


class NotificationView(BaseModel):
    id: int
    webhook_id: str
    target: str
    group_key: str
    state: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    payload: dict[str, Any]


class TargetStatusView(BaseModel):
    name: str
    url: str
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    pending: int
    delivered: int
    dead: int
    oldest_pending: datetime | None
    last_delivered_at: datetime | None
    last_error: str | None


class WebhookStatusView(BaseModel):
    targets: list[TargetStatusView]
    dead_letters: list[NotificationView]


def _alert_view(alert: Alert, silenced: bool = False) -> AlertView:
    return AlertView(id=alert.id, fingerprint=alert.fingerprint, rule=alert.rule, state=alert.state,
                     severity=alert.severity, labels=alert.labels, summary=alert.summary, details=alert.details,
                     started_at=_utc(alert.started_at), resolved_at=_utc(alert.resolved_at),
                     flapping=alert.flapping, silenced=silenced, acked_by=alert.acked_by,
                     acked_at=_utc(alert.acked_at))


def _notification_view(n: Notification) -> NotificationView:
    return NotificationView(id=n.id, webhook_id=n.webhook_id, target=n.target, group_key=n.group_key, state=n.state,
                            attempts=n.attempts,
                            created_at=as_utc(n.created_at), next_attempt_at=as_utc(n.next_attempt_at),
                            last_status=n.last_status, last_error=n.last_error, payload=n.payload)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


# ----------------------------------------------------------------------------------- rule queries
def nodes_in_bmc_states(inventory: Inventory, states: Iterable[str]) -> list[tuple[Node, str | None, str | None]]:
    """Nodes whose BMC is in one of ``states``, with their site and rack names."""
    with inventory.session() as s:
        query = (select(Node, Site.name, Rack.name).outerjoin(Site, col(Node.site_id) == Site.id)
                 .outerjoin(Rack, col(Node.rack_id) == Rack.id).where(col(Node.bmc_state).in_(list(states))))
        return list(s.exec(query).all())


def latest_events(inventory: Inventory, kind: str, since: datetime) -> list[Event]:
    """The newest event of ``kind`` per subject since ``since``."""
    with inventory.session() as s:
        rows = s.exec(select(Event).where(Event.kind == kind, col(Event.time) >= since).order_by(col(Event.id))).all()
    return list({event.subject: event for event in rows}.values())


# ------------------------------------------------------------------------------- state and outbox
def apply(inventory: Inventory, conditions: Iterable[Condition], now: datetime, targets: Mapping[str, str],
          policy: Policy) -> list[AlertView]:
    """Bring alert state in line with the conditions holding at ``now`` and write the outbox entries for
    ``targets`` (name → URL), all in one transaction. Returns the alerts that started firing."""
    wanted = {fingerprint(c.labels): c for c in conditions}
    fired: list[Alert] = []
    with inventory.session() as s:
        alerts = {a.fingerprint: a for a in s.exec(select(Alert).where(or_(
            col(Alert.fingerprint).in_(list(wanted)), col(Alert.active_since).is_not(None),
            Alert.state != AlertState.RESOLVED, Alert.notified_state == AlertState.FIRING)))}
        for key, condition in wanted.items():
            alert = alerts.get(key)
            if alert is None:
                alert = alerts[key] = Alert(fingerprint=key, rule=condition.rule, state=AlertState.PENDING,
                                            severity=condition.severity, summary=condition.summary)
                s.add(alert)
            alert.severity, alert.labels = condition.severity, condition.labels
            alert.summary, alert.details = condition.summary, condition.details
            if alert.active_since is None:
                alert.active_since = now
                _flip(alert, now)
            if alert.state != AlertState.FIRING:
                if now - as_utc(alert.active_since) >= condition.for_:
                    alert.state, alert.started_at, alert.resolved_at = AlertState.FIRING, now, None
                    alert.acked_by = alert.acked_at = None
                    fired.append(alert)
                else:
                    alert.state = AlertState.PENDING
        for key, alert in alerts.items():
            if key not in wanted and alert.active_since is not None:
                alert.active_since = None
                _flip(alert, now)
            alert.flips = [t for t in alert.flips if datetime.fromisoformat(t) > now - policy.flap_window]
            alert.flapping = len(alert.flips) >= policy.flap_threshold
            if key not in wanted and alert.state == AlertState.PENDING:
                alert.state = AlertState.RESOLVED  # it never fired: nobody hears of it
            elif key not in wanted and alert.state == AlertState.FIRING and not alert.flapping:
                alert.state, alert.resolved_at = AlertState.RESOLVED, now
        s.flush()
        enabled = _enabled(s, targets)
        silences = _active_silences(s, now)
        for alert in alerts.values():
            _notify(s, alert, now, enabled, policy, silences)
        return [_alert_view(alert) for alert in fired]


def _flip(alert: Alert, now: datetime) -> None:
    alert.flips = [*alert.flips, now.isoformat()]


def _matches(matchers: Mapping[str, str], alert: Alert) -> bool:
    labels = {**alert.labels, "severity": alert.severity}
    return all(labels.get(name) == value for name, value in matchers.items())


def _notify(s: Session, alert: Alert, now: datetime, targets: list[str], policy: Policy,
            silences: list[Silence]) -> None:
    """Write outbox entries when the targets must hear of this alert: it fired, it resolved after they heard
    it fire, or it has been firing, unacknowledged, for a repeat interval since they last heard."""
    if alert.state == AlertState.PENDING or any(_matches(silence.matchers, alert) for silence in silences):
        return
    if alert.state == AlertState.FIRING:
        if alert.notified_state == AlertState.FIRING and (
                alert.acked_at is not None or as_utc(alert.notified_at) + policy.repeat_interval > now):
            return
    elif alert.notified_state != AlertState.FIRING:
        return
    alert.notified_state, alert.notified_at = alert.state, now
    key = series(_group_labels(alert.labels, alert.severity, policy))
    snapshot = _snapshot(alert)
    for target in targets:
        last = s.exec(select(func.max(Notification.created_at))
                      .where(Notification.target == target, Notification.group_key == key)).one()
        due = now + policy.group_wait
        if last is not None and as_utc(last) + policy.group_interval > now:
            due = as_utc(last) + policy.group_interval
        s.add(OutboxEntry(alert_id=alert.id, target=target, group_key=key, status=alert.state,
                          snapshot=snapshot, created_at=now, due_at=due))


def _group_labels(labels: Mapping[str, str], severity: str, policy: Policy) -> dict[str, str]:
    """The labels that make the group an alert is notified in (``severity`` counts as one)."""
    labels = {**labels, "severity": severity}
    return {name: labels[name] for name in policy.group_by if name in labels}


def _snapshot(alert: Alert) -> dict[str, Any]:
    """The alert as a notification carries it (JSON)."""
    return _alert_view(alert).model_dump(mode="json", exclude={"silenced", "acked_by", "acked_at"})


def _enabled(s: Session, targets: Mapping[str, str]) -> list[str]:
    """The targets not disabled at their configured URL."""
    disabled = {row.name for row in s.exec(select(WebhookTarget).where(col(WebhookTarget.disabled_at).is_not(None)))
                if targets.get(row.name) == row.url}
    return [name for name in targets if name not in disabled]


def seal(inventory: Inventory, now: datetime, targets: Mapping[str, str], policy: Policy) -> int:
    """Batch the entries of each (target, group) with one due into one notification; returns how many.
    Also records the configured targets (``baie webhooks status`` lists them): a target whose URL changed
    since it was disabled is enabled again."""
    with inventory.session() as s:
        rows = {row.name: row for row in s.exec(select(WebhookTarget))}
        for name, row in rows.items():
            if name not in targets:
                s.delete(row)
        for name, url in targets.items():
            row = rows.get(name)
            if row is None:
                s.add(WebhookTarget(name=name, url=url))
            elif row.url != url:
                row.url, row.disabled_at, row.disabled_reason = url, None, None
        due = s.exec(select(OutboxEntry.target, OutboxEntry.group_key).distinct().where(
            col(OutboxEntry.notification_id).is_(None), col(OutboxEntry.due_at) <= now,
            col(OutboxEntry.target).in_(_enabled(s, targets)))).all()
        for target, key in due:
            notification = Notification(webhook_id=f"msg_{uuid.uuid4().hex}", target=target, group_key=key,
                                        created_at=now, next_attempt_at=now, state=Delivery.PENDING)
            s.add(notification)
            s.flush()
            s.exec(update(OutboxEntry).where(col(OutboxEntry.notification_id).is_(None),
                                             OutboxEntry.target == target, OutboxEntry.group_key == key)
                   .values(notification_id=notification.id))
            entries = s.exec(select(OutboxEntry).where(OutboxEntry.notification_id == notification.id)
                             .order_by(col(OutboxEntry.id))).all()
            latest = {entry.alert_id: entry.snapshot for entry in entries}  # an alert's newest state only
            first = next(iter(latest.values()))
            notification.payload = {"group": _group_labels(first["labels"], first["severity"], policy),
                                    "alerts": list(latest.values())}
        return len(due)


def next_due(inventory: Inventory, target: str, now: datetime) -> NotificationView | None:
    """The target's oldest undelivered notification, if its next attempt is due: a target gets its
    notifications in order, so one waiting for a retry holds back the ones behind it."""
    with inventory.session() as s:
        head = s.exec(select(Notification).where(Notification.target == target,
                                                 Notification.state == Delivery.PENDING)
                      .order_by(col(Notification.id)).limit(1)).first()
        if head is None or as_utc(head.next_attempt_at) > now:
            return None
        return _notification_view(head)


def record_delivered(inventory: Inventory, notification_id: int, now: datetime, status: int) -> None:
    with inventory.session() as s:
        n = s.get(Notification, notification_id)
        n.state, n.delivered_at, n.last_attempt_at, n.last_status = Delivery.DELIVERED, now, now, status
        n.attempts += 1
        n.last_error = None


def record_failed(inventory: Inventory, notification_id: int, now: datetime, status: int | None, error: str,
                  retry_at: datetime, max_attempts: int) -> bool:
    """Count a failed attempt; the notification is dead-lettered (with an event) after ``max_attempts``.
    Returns whether it was."""
    with inventory.session() as s:
        n = s.get(Notification, notification_id)
        n.attempts += 1
        n.last_attempt_at, n.last_status, n.last_error, n.next_attempt_at = now, status, error[:500], retry_at
        if n.attempts < max_attempts:
            return False
        n.state = Delivery.DEAD
        Inventory.add_event(s, "webhook.dead_letter", f"webhook/{n.target}",
                            f"notification {n.webhook_id} dead-lettered after {n.attempts} attempts: {n.last_error}",
                            "daemon", {"webhook_id": n.webhook_id, "attempts": n.attempts})
        return True


def record_gone(inventory: Inventory, notification_id: int, now: datetime, url: str) -> None:
    """The target answered 410 Gone: disable it (an event says so) and drop what was queued for it."""
    with inventory.session() as s:
        n = s.get(Notification, notification_id)
        n.attempts += 1
        n.last_attempt_at, n.last_status, n.last_error = now, 410, "410 Gone: target disabled"
        row = s.get(WebhookTarget, n.target) or WebhookTarget(name=n.target, url=url)
        row.url, row.disabled_at, row.disabled_reason = url, now, f"HTTP 410 Gone for {n.webhook_id}"
        s.add(row)
        s.exec(update(Notification).where(Notification.target == n.target, Notification.state == Delivery.PENDING)
               .values(state=Delivery.DISABLED))
        Inventory.add_event(s, "webhook.disabled", f"webhook/{n.target}",
                            "the target answered 410 Gone: disabled until its URL changes", "daemon",
                            {"webhook_id": n.webhook_id})


# ----------------------------------------------------------------------------- operator commands
def alerts(inventory: Inventory, now: datetime, include_resolved: bool = False) -> list[AlertView]:
    with inventory.session() as s:
        query = select(Alert).order_by(col(Alert.started_at).desc(), col(Alert.id).desc())
        if not include_resolved:
            query = query.where(Alert.state != AlertState.RESOLVED)
        silences = _active_silences(s, now)
        return [_alert_view(a, any(_matches(x.matchers, a) for x in silences)) for a in s.exec(query)]


def ack(inventory: Inventory, alert_id: int, actor: str, now: datetime) -> AlertView:
    """Acknowledge a firing alert: no more repeat notifications until it resolves."""
    with inventory.session() as s:
        alert = s.get(Alert, alert_id)
        if alert is None:
            raise NotFound("alert", str(alert_id))
        if alert.state != AlertState.FIRING:
            raise Invalid("alert", f"alert {alert_id} is {alert.state}, not firing")
        alert.acked_by, alert.acked_at = actor, now
        Inventory.add_event(s, "alert.acked", f"alert/{alert_id}", f"{alert.rule} acknowledged: {alert.summary}",
                            actor, {"fingerprint": alert.fingerprint})
        return _alert_view(alert)


def _active_silences(s: Session, now: datetime) -> list[Silence]:
    return list(s.exec(select(Silence).where(col(Silence.starts_at) <= now, col(Silence.ends_at) > now)))


def _silence_view(silence: Silence, now: datetime) -> SilenceView:
    starts, ends = as_utc(silence.starts_at), as_utc(silence.ends_at)
    return SilenceView(id=silence.id, matchers=silence.matchers, starts_at=starts, ends_at=ends,
                       created_by=silence.created_by, comment=silence.comment, expired_by=silence.expired_by,
                       active=starts <= now < ends)


def add_silence(inventory: Inventory, matchers: Mapping[str, str], duration: timedelta, comment: str, actor: str,
                now: datetime) -> SilenceView:
    if not matchers:
        raise Invalid("match", "a silence needs at least one LABEL=VALUE")
    if duration <= timedelta(0):
        raise Invalid("for", "a silence must last longer than nothing")
    if not comment.strip():
        raise Invalid("comment", "say why (the on-call reading it will want to know)")
    with inventory.session() as s:
        silence = Silence(matchers=dict(matchers), starts_at=now, ends_at=now + duration, created_by=actor,
                          comment=comment)
        s.add(silence)
        s.flush()
        return _silence_view(silence, now)


def silences(inventory: Inventory, now: datetime, include_expired: bool = False) -> list[SilenceView]:
    with inventory.session() as s:
        query = select(Silence).order_by(col(Silence.ends_at).desc(), col(Silence.id).desc())
        if not include_expired:
            query = query.where(col(Silence.ends_at) > now)
        return [_silence_view(silence, now) for silence in s.exec(query)]


def expire_silence(inventory: Inventory, silence_id: int, actor: str, now: datetime) -> SilenceView:
    with inventory.session() as s:
        silence = s.get(Silence, silence_id)
        if silence is None:
            raise NotFound("silence", str(silence_id))
        if as_utc(silence.ends_at) > now:
            silence.ends_at, silence.expired_by = now, actor
        return _silence_view(silence, now)


def webhook_status(inventory: Inventory) -> WebhookStatusView:
    with inventory.session() as s:
        counts = {(target, state): count for target, state, count in s.exec(
            select(Notification.target, Notification.state, func.count()).group_by(Notification.target,
                                                                                  Notification.state))}
        views = []
        for row in s.exec(select(WebhookTarget).order_by(WebhookTarget.name)):
            mine = select(Notification).where(Notification.target == row.name)
            oldest = s.exec(mine.where(Notification.state == Delivery.PENDING).order_by(col(Notification.id))).first()
            last = s.exec(mine.where(Notification.state == Delivery.DELIVERED)
                          .order_by(col(Notification.id).desc())).first()
            failed = s.exec(mine.where(col(Notification.last_error).is_not(None))
                            .order_by(col(Notification.last_attempt_at).desc())).first()
            views.append(TargetStatusView(
                name=row.name, url=row.url, enabled=row.disabled_at is None, disabled_at=_utc(row.disabled_at),
                disabled_reason=row.disabled_reason, pending=counts.get((row.name, Delivery.PENDING), 0),
                delivered=counts.get((row.name, Delivery.DELIVERED), 0), dead=counts.get((row.name, Delivery.DEAD), 0),
                oldest_pending=oldest and as_utc(oldest.created_at),
                last_delivered_at=last and _utc(last.delivered_at), last_error=failed and failed.last_error))
        dead = s.exec(select(Notification).where(Notification.state == Delivery.DEAD)
                      .order_by(col(Notification.id).desc()).limit(100))
        return WebhookStatusView(targets=views, dead_letters=[_notification_view(n) for n in dead])


# ------------------------------------------------------------------------------------ leak policy
def cordon(inventory: Inventory, nodes: Iterable[str], reason: str, actor: str) -> list[str]:
    """Put the nodes in maintenance, each with an event; returns those that were not already."""
    done = []
    with inventory.session() as s:
        for ref in nodes:
            node = Inventory.node_by_ref(s, ref)
            if node.state in (NodeState.MAINTENANCE, NodeState.RETIRED):
                continue
            previous, node.state = node.state, NodeState.MAINTENANCE
            Inventory.add_event(s, "node.cordoned", f"node/{_node_label(node)}", f"cordoned: {reason}", actor,
                                {"previous": previous})
            done.append(_node_label(node))
    return done

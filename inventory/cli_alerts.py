"""The alerting commands of ``baie``: alerts and acknowledgements, silences, webhook delivery.

They read and write the database through inventory.alerts, as the other inventory commands do; only
``webhooks test`` asks the daemon (over its API socket), which holds the targets' secrets.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Annotated

import httpx
import typer

from inventory import alerts as service
from inventory.cli import Json, _first_line, fail, open_inventory, print_json, show, table

app = typer.Typer()  # merged into daemon.cli's app
alerts_app = typer.Typer(help="Alerts firing and pending (with --all, resolved too); `alerts ack ID`.",
                         invoke_without_command=True)
silence_app = typer.Typer(help="Silences: hold back the notifications of matching alerts for a while.",
                          no_args_is_help=True)
webhooks_app = typer.Typer(help="Webhook targets: delivery status, and a signed test notification.",
                           no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")
app.add_typer(silence_app, name="silence")
app.add_typer(webhooks_app, name="webhooks")


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _time(value: datetime | None) -> str | None:
    return value and value.strftime("%Y-%m-%d %H:%M:%SZ")


def _pairs(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items())


def _notes(alert: service.AlertView) -> str:
    notes = (("flapping", alert.flapping), ("silenced", alert.silenced), (f"acked by {alert.acked_by}", alert.acked_by))
    return ", ".join(note for note, on in notes if on)


# ------------------------------------------------------------------------------------------ alerts
@alerts_app.callback()
def alerts(ctx: typer.Context, include_resolved: Annotated[bool, typer.Option("--all", help="Resolved ones too.")]
           = False, as_json: Json = False) -> None:
    if ctx.invoked_subcommand:
        return
    with open_inventory(ctx) as inventory:
        views = service.alerts(inventory, datetime.now(UTC), include_resolved)
    if as_json:
        return print_json(views)
    show(table(None, "ID", "State", "Severity", "Rule", "Labels", "Since", "Notes", "Summary",
               rows=[(a.id, a.state, a.severity, a.rule, _pairs({k: v for k, v in a.labels.items() if k != "rule"}),
                      _time(a.started_at), _notes(a), a.summary) for a in views]))



@alerts_app.command("ack")
def ack(ctx: typer.Context, alert_id: Annotated[int, typer.Argument(help="The alert's ID (`baie alerts`).")]) -> None:
    """Acknowledge a firing alert: no repeat notifications until it resolves."""
    with open_inventory(ctx) as inventory:
        view = service.ack(inventory, alert_id, _actor(), datetime.now(UTC))
    typer.echo(f"alert {view.id} ({view.rule}) acknowledged by {view.acked_by}")


# ---------------------------------------------------------------------------------------- silences
@silence_app.command("add")
def silence_add(ctx: typer.Context,
                match: Annotated[list[str], typer.Option(help="LABEL=VALUE; repeat it: all must match. "
                                                              "Labels include rule, severity, site, node.")],
                duration: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1d.")],
                comment: Annotated[str, typer.Option(help="Why, for the on-call who reads it.")]) -> None:
    """Hold back notifications of the alerts matching every --match, from now for --for."""
    matchers = {}
    for item in match:
        name, sep, value = item.partition("=")
        if not sep or not name:
            fail(f"--match: {item!r} is not LABEL=VALUE")
        matchers[name] = value
    try:
        length = service.parse_duration(duration)
    except ValueError as exc:
        fail(f"--for: {exc}")
    with open_inventory(ctx) as inventory:
        view = service.add_silence(inventory, matchers, length, comment, _actor(), datetime.now(UTC))
    typer.echo(f"silence {view.id} by {view.created_by} until {_time(view.ends_at)}")


@silence_app.command("list")
def silence_list(ctx: typer.Context,
                 include_expired: Annotated[bool, typer.Option("--all", help="Expired ones too.")] = False,
                 as_json: Json = False) -> None:
    """The silences in force (with --all, expired ones too)."""
    with open_inventory(ctx) as inventory:
        views = service.silences(inventory, datetime.now(UTC), include_expired)
    if as_json:
        return print_json(views)
    show(table(None, "ID", "Matchers", "From", "Until", "By", "Expired by", "Comment",
               rows=[(s.id, _pairs(s.matchers), _time(s.starts_at), _time(s.ends_at), s.created_by, s.expired_by,
                      s.comment) for s in views]))


@silence_app.command("expire")
def silence_expire(ctx: typer.Context, silence_id: Annotated[int, typer.Argument(help="The silence's ID.")]) -> None:
    """End a silence now."""
    with open_inventory(ctx) as inventory:
        view = service.expire_silence(inventory, silence_id, _actor(), datetime.now(UTC))
    typer.echo(f"silence {view.id} expired at {_time(view.ends_at)}")


# ---------------------------------------------------------------------------------------- webhooks
@webhooks_app.command("status")
def webhooks_status(ctx: typer.Context, as_json: Json = False) -> None:
    """Each target: enabled or disabled (410 Gone), what waits, what was delivered, what was dead-lettered."""
    with open_inventory(ctx) as inventory:
        view = service.webhook_status(inventory)
    if as_json:
        return print_json(view)
    show(table("Targets", "Target", "Enabled", "Pending", "Oldest pending", "Delivered", "Last delivered", "Dead",
               "Last error",
               rows=[(t.name, "yes" if t.enabled else f"no: {t.disabled_reason}", t.pending, _time(t.oldest_pending),
                      t.delivered, _time(t.last_delivered_at), t.dead, t.last_error) for t in view.targets]),
         table("Dead letters", "ID", "Webhook id", "Target", "Created", "Attempts", "Last error",
               rows=[(n.id, n.webhook_id, n.target, _time(n.created_at), n.attempts, n.last_error)
                     for n in view.dead_letters]))


@webhooks_app.command("test")
def webhooks_test(ctx: typer.Context, target: Annotated[str, typer.Argument(help="The target's name.")],
                  as_json: Json = False) -> None:
    """Have the daemon send a signed test notification to TARGET now, and say what it answered."""
    socket = ctx.obj.api_socket
    if not socket.exists():
        fail(f"the daemon is not running (no socket at {socket})")
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=30) as client:
            reply = client.post(f"http://baie/api/v1/webhooks/{target}/test", headers={"X-Baie-Actor": _actor()})
    except httpx.TransportError as exc:
        fail(f"the daemon is not answering on {socket}: {_first_line(exc)}")
    if reply.status_code != 200:
        fail(reply.json().get("error", f"HTTP {reply.status_code}"))
    result = reply.json()
    if as_json:
        print_json(result)
        raise typer.Exit(0 if result["delivered"] else 1)
    if not result["delivered"]:
        fail(f"test notification {result['webhook_id']} to {target} failed: {result['error']}")
    typer.echo(f"test notification {result['webhook_id']} delivered to {target}: HTTP {result['status']}")

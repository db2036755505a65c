"""Webhook delivery against a real receiver on loopback that verifies every signature: formats, secrets,
redirects, 410 Gone, Retry-After, dead letters; and the daemon as a real process killed with SIGKILL while
the receiver is down: after a restart every alert raised before the kill arrives, each id once per target.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
import time
from datetime import timedelta

from sqlmodel import select
from typer.testing import CliRunner

from daemon.cli import app
from inventory import alerts as service
from inventory.db import make_engine
from inventory.enrolment import set_bmc_state
from inventory.model import BmcState, Event, Node, Notification
from inventory.service import Inventory
from tests.lab.common import REPO, Process, eventually, free_port, write_config
from tests.lab.receiver import Receiver
from tests.test_alerts import KEY, T0, Clock, machinery, make_settings, populate, tick
from tests.test_daemon import NotifyListener

WHSEC = "whsec_" + base64.b64encode(b"k" * 24).decode()
RAW = "a plain shared secret"


def target(receiver: Receiver, path: str, **extra) -> dict:
    return {"name": path.strip("/"), "url": receiver.url(path), "secret_credential": "hook", **extra}


def notifications(inventory) -> list[Notification]:
    with inventory.session() as s:
        return list(s.exec(select(Notification).order_by(Notification.id)))


def events(inventory, kind: str) -> list[Event]:
    with inventory.session() as s:
        return list(s.exec(select(Event).where(Event.kind == kind)))


async def test_signed_in_our_format_and_alertmanager_s_with_either_form_of_secret(inventory, tmp_path):
    populate(inventory)
    clock = Clock(T0)
    async with Receiver({"/ours": base64.b64decode(WHSEC[6:]), "/am": RAW.encode()}) as receiver:
        settings = make_settings(tmp_path, webhooks=[
            target(receiver, "/ours", secret_credential="whsec"),
            target(receiver, "/am", secret_credential="raw", format="alertmanager")])
        for name, secret in (("whsec", WHSEC), ("raw", RAW)):
            (tmp_path / "credentials" / name).write_text(secret + "\n")
            (tmp_path / "credentials" / name).chmod(0o600)
        alerting, deliverer = machinery(inventory, settings, clock)
        set_bmc_state(inventory, "n1", BmcState.UNREACHABLE, "no answer", "telemetry")
        await tick(alerting, deliverer)
        clock.advance(seconds=30)
        await tick(alerting, deliverer)
    assert receiver.bad == 0
    [ours], [am] = receiver.on("/ours"), receiver.on("/am")
    assert ours.webhook_id != am.webhook_id and ours.timestamp == int(clock.now.timestamp())
    assert ours.body["type"] == "alert.notification"
    data = ours.body["data"]
    assert (data["target"], data["status"], data["group"]) == ("ours", "firing",
                                                               {"rule": "bmc_unreachable", "site": "par1"})
    [alert] = data["alerts"]
    assert {key: alert[key] for key in ("rule", "state", "severity", "summary", "started_at", "resolved_at")} == {
        "rule": "bmc_unreachable", "state": "firing", "severity": "warning",
        "summary": "BMC 10.0.0.10 of node n1 does not answer", "started_at": "2026-11-24T12:00:00Z",
        "resolved_at": None}
    assert am.body["version"] == "4" and am.body["receiver"] == "am" and am.body["status"] == "firing"
    assert am.body["groupLabels"] == {"alertname": "bmc_unreachable", "site": "par1"}
    [am_alert] = am.body["alerts"]
    assert am_alert["labels"] == {"alertname": "bmc_unreachable", "site": "par1", "rack": "R01", "node": "n1",
                                  "severity": "warning"}
    assert am_alert["annotations"]["summary"] == alert["summary"] and am_alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert am_alert["fingerprint"] == alert["fingerprint"]


async def test_a_redirect_is_a_failure_and_is_not_followed(inventory, tmp_path):
    populate(inventory)
    clock = Clock(T0)
    async with Receiver({"/a": KEY, "/elsewhere": KEY}) as receiver:
        receiver.replies = [(302, {"Location": receiver.url("/elsewhere")})]
        alerting, deliverer = machinery(inventory, make_settings(tmp_path, receiver), clock)
        set_bmc_state(inventory, "n1", BmcState.UNREACHABLE, "no answer", "telemetry")
        await tick(alerting, deliverer)
        clock.advance(seconds=30)
        await tick(alerting, deliverer)
        [notification] = notifications(inventory)
        assert (notification.state, notification.attempts, notification.last_status) == ("pending", 1, 302)
        assert notification.last_error == f"HTTP 302: redirect to {receiver.url('/elsewhere')} not followed"
        clock.advance(minutes=1)
        await deliverer.deliver()
    assert receiver.requests == ["/a", "/a"]
    assert receiver.received[0].webhook_id == receiver.received[1].webhook_id  # a retry keeps its id
    assert notifications(inventory)[0].state == "delivered"


async def test_410_gone_disables_the_target_with_an_event_until_its_url_changes(inventory, tmp_path):
    populate(inventory)
    clock = Clock(T0)
    async with Receiver({"/a": KEY, "/b": KEY}) as receiver:
        receiver.replies = [(410, {})]
        settings = make_settings(tmp_path, receiver)
        alerting, deliverer = machinery(inventory, settings, clock)
        set_bmc_state(inventory, "n1", BmcState.UNREACHABLE, "no answer", "telemetry")
        await tick(alerting, deliverer)
        clock.advance(seconds=30)
        await tick(alerting, deliverer)
        [gone] = events(inventory, "webhook.disabled")
        assert gone.subject == "webhook/oncall"
        [status] = service.webhook_status(inventory).targets
        assert (status.enabled, status.pending, status.disabled_reason) == (
            False, 0, f"HTTP 410 Gone for {receiver.received[0].webhook_id}")
        set_bmc_state(inventory, "n2", BmcState.UNREACHABLE, "no answer", "telemetry")
        clock.advance(minutes=10)
        await tick(alerting, deliverer)
        assert len(receiver.received) == 1 and notifications(inventory)[0].state == "disabled"

        moved = make_settings(tmp_path, webhooks=[target(receiver, "/b", name="oncall")])
        alerting, deliverer = machinery(inventory, moved, clock)
        set_bmc_state(inventory, "n3", BmcState.UNREACHABLE, "no answer", "telemetry")
        await tick(alerting, deliverer)
        clock.advance(seconds=30)
        await tick(alerting, deliverer)
    [after] = receiver.on("/b")
    assert [a["labels"]["node"] for a in after.body["data"]["alerts"]] == ["n3"]
    assert service.webhook_status(inventory).targets[0].enabled


async def test_retry_after_is_honoured(inventory, tmp_path):
    populate(inventory)
    clock = Clock(T0)
    async with Receiver({"/a": KEY}) as receiver:
        receiver.replies = [(503, {"Retry-After": "120"}), (500, {})]
        alerting, deliverer = machinery(inventory, make_settings(tmp_path, receiver), clock)
        set_bmc_state(inventory, "n1", BmcState.UNREACHABLE, "no answer", "telemetry")
        await tick(alerting, deliverer)
        clock.advance(seconds=30)
        await deliverer.deliver()
        for seconds in (60, 119):
            clock.now = T0 + timedelta(seconds=30 + seconds)
            await deliverer.deliver()
        assert len(receiver.received) == 1
        clock.now = T0 + timedelta(seconds=30 + 120)
        await deliverer.deliver()
        assert len(receiver.received) == 2
        [failed] = notifications(inventory)
        wait = failed.next_attempt_at - failed.last_attempt_at
        assert timedelta(seconds=10) <= wait <= timedelta(seconds=20)  # no Retry-After: 2nd backoff of 10 s, jittered
        clock.now = failed.next_attempt_at.replace(tzinfo=T0.tzinfo)
        await deliverer.deliver()
    assert len({r.webhook_id for r in receiver.received}) == 1 and len(receiver.received) == 3
    assert notifications(inventory)[0].state == "delivered"


async def test_dead_letter_after_max_attempts_then_the_next_goes(inventory, tmp_path):
    populate(inventory)
    clock = Clock(T0)
    async with Receiver({"/a": KEY}) as receiver:
        receiver.replies = [(500, {})] * 3
        settings = make_settings(tmp_path, webhooks=[target(receiver, "/a", name="oncall", max_attempts=3,
                                                            backoff="1s")])
        alerting, deliverer = machinery(inventory, settings, clock)
        set_bmc_state(inventory, "n1", BmcState.UNREACHABLE, "no answer", "telemetry")
        await tick(alerting, deliverer)
        clock.advance(seconds=30)
        for _ in range(3):
            await tick(alerting, deliverer)
            clock.advance(seconds=2)
        set_bmc_state(inventory, "n1", BmcState.OK, "answers", "telemetry")
        clock.advance(minutes=5)
        await tick(alerting, deliverer)
        clock.advance(seconds=30)
        await deliverer.deliver()
    assert [(n.state, n.attempts) for n in notifications(inventory)] == [("dead", 3), ("delivered", 1)]
    status = service.webhook_status(inventory)
    assert (status.targets[0].dead, status.targets[0].delivered) == (1, 1)
    [dead] = status.dead_letters
    assert (dead.attempts, dead.last_error) == (3, "HTTP 500")
    [event] = events(inventory, "webhook.dead_letter")
    assert dead.webhook_id in event.message
    assert [r.body["data"]["status"] for r in receiver.received] == ["firing"] * 3 + ["resolved"]


# ---------------------------------------------------------------------------------- the daemon, killed
def _populate(url: str) -> None:
    """n1 and n2 with unreachable BMCs, n3 with one that answers (for now)."""
    engine = make_engine(url)
    with Inventory(engine).session() as s:
        s.add_all([Node(name=name, serial=f"SN-{name}", bmc_address=f"10.9.0.{i}", bmc_state=state)
                   for i, (name, state) in enumerate((("n1", BmcState.UNREACHABLE), ("n2", BmcState.UNREACHABLE),
                                                      ("n3", BmcState.OK)), 1)])
    engine.dispose()


def _config(tmp_path, url: str, receiver_port: int) -> str:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, secret in (("whsec", WHSEC), ("raw", RAW)):
        (credentials / name).write_text(secret)
        (credentials / name).chmod(0o600)
    targets = [{"name": name, "url": f"http://127.0.0.1:{receiver_port}/{name}", "secret_credential": secret,
                "format": fmt, "backoff": "0.2s", "max_backoff": "1s", "max_attempts": 1000}
               for name, secret, fmt in (("a", "whsec", "baie"), ("b", "raw", "alertmanager"))]
    return str(write_config(tmp_path / "baie.toml", {
        "database": {"url": url}, "api": {"socket": tmp_path / "api.sock"}, "credentials": {"directory": credentials},
        "telemetry": {"enabled": False}, "alerts": {"interval": "1s", "group_wait": "0s", "group_interval": "1s"},
        "webhooks": targets}))


def _wait(check, *, deadline: float, what: str, daemon: Process) -> None:
    end = time.monotonic() + deadline
    while not check():
        assert daemon.alive(), daemon.output()
        if time.monotonic() > end:
            raise TimeoutError(f"{what} not within {deadline}s:\n{daemon.output()[-3000:]}")
        time.sleep(0.1)


async def test_alerts_raised_before_a_sigkill_arrive_once_each_after_the_restart(tmp_path, database_url):
    _populate(database_url)
    engine = make_engine(database_url)
    inventory = Inventory(engine)
    port = free_port()
    config = _config(tmp_path, database_url, port)
    notify = NotifyListener(str(tmp_path / "notify.sock"))

    def start() -> Process:
        daemon = Process([sys.executable, "-m", "daemon", "--config", config], log=tmp_path / "daemon.log",
                         cwd=REPO, env={"NOTIFY_SOCKET": notify.address, "PYTHONUNBUFFERED": "1"})
        notify.wait_for("READY=1", count=len([m for m in notify.messages if "READY=1" in m]) + 1, sender=daemon)
        return daemon

    daemon = start()
    try:
        _wait(lambda: sum(n.attempts > 0 for n in notifications(inventory)) == 2, deadline=20,
              what="a notification to each target attempted (and failed: nobody listens)", daemon=daemon)
        set_bmc_state(inventory, "n3", BmcState.UNREACHABLE, "no answer", "telemetry")
        # in order: the second waits behind the first's retries
        _wait(lambda: len(notifications(inventory)) == 4, deadline=20, what="n3's notifications", daemon=daemon)
        os.killpg(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait(10)
        daemon.stop()
        assert {n.state for n in notifications(inventory)} == {"pending"}

        daemon = start()
        async with Receiver({"/a": base64.b64decode(WHSEC[6:]), "/b": RAW.encode()}, port=port) as receiver:
            def delivered() -> bool:
                assert daemon.alive(), daemon.output()
                return all(n.state == "delivered" for n in notifications(inventory))

            await eventually(delivered, deadline=30, what="every notification delivered", interval=0.1)
            result = await asyncio.to_thread(CliRunner().invoke, app, ["--config", config, "webhooks", "test", "a"],
                                             prog_name="baie", env={"BAIE_DATABASE_URL": None, "BAIE_CONFIG": None})
            assert result.exit_code == 0, result.stderr or result.stdout
            assert result.stdout.startswith("test notification msg_") and "delivered to a: HTTP 200" in result.stdout
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(10) == 0
    finally:
        daemon.stop()
        notify.close()
        engine.dispose()
    assert receiver.bad == 0
    for path in ("/a", "/b"):
        ids = [r.webhook_id for r in receiver.on(path)]
        assert len(ids) == len(set(ids)), f"{path} got an id twice: {ids}"
    alerts_a = [a for r in receiver.on("/a") if r.body["type"] == "alert.notification"
                for a in r.body["data"]["alerts"]]
    alerts_b = [a for r in receiver.on("/b") for a in r.body["alerts"]]
    assert sorted(a["labels"]["node"] for a in alerts_a) == ["n1", "n2", "n3"]
    assert sorted(a["labels"]["node"] for a in alerts_b) == ["n1", "n2", "n3"]
    assert receiver.on("/a")[-1].body["type"] == "webhook.test"
    output = daemon.output()
    for secret in (WHSEC, RAW, WHSEC[6:]):
        assert secret not in output

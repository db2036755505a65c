"""The daemon as a real process: sd_notify, the API over the unix socket and TCP, metrics, signals, logs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.logging import redact
from drivers.base import Secret
from inventory.db import make_engine
from inventory.model import Location, Node, Rack, Site
from inventory.service import Inventory
from tests.lab.common import REPO, Process, free_port, write_config

STOP_DEADLINE = 10.0
TOKEN = "tok-" + uuid.uuid4().hex


class NotifyListener:
    """What systemd would be: an AF_UNIX datagram socket collecting sd_notify messages."""

    def __init__(self, address: str) -> None:
        self.address = address  # a path, or "@name" for an abstract socket
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[str] = []

    def wait_for(self, line: str, *, count: int = 1, deadline: float = 15.0, sender: Process | None = None) -> None:
        end = time.monotonic() + deadline
        while sum(m.splitlines().count(line) for m in self.messages) < count:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{count} x {line!r} not received within {deadline}s: {self.messages}")
            if sender is not None and not sender.alive():
                raise AssertionError(f"the daemon exited waiting for {line!r}:\n{sender.output()}")
            self.sock.settimeout(min(left, 0.5))
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                pass

    def close(self) -> None:
        self.sock.close()


def _populate(url: str) -> None:
    engine = make_engine(url)
    inventory = Inventory(engine)
    with inventory.session() as s:
        site = Site(name="par1", country_code="FR", jurisdiction="France", role="primary")
        s.add(site)
        s.flush()
        location = Location(site_id=site.id, name="hall-1")
        s.add(location)
        s.flush()
        rack = Rack(site_id=site.id, location_id=location.id, name="R01", u_height=42)
        s.add(rack)
        s.flush()
        inventory.place_node(s, Node(serial="SN-1", name="web-1", site_id=site.id), rack, 10)
    inventory.record_event("node.created", "node/SN-1", "created for the test", "test")
    engine.dispose()


def _write_config(tmp: Path, url: str, *, listen: str | None = None, log_level: str = "info") -> Path:
    return write_config(tmp / "baie.toml", {
        "log": {"level": log_level}, "database": {"url": url},
        "api": {"socket": tmp / "run" / "api.sock", **({"listen": listen} if listen else {})},
        "credentials": {"directory": tmp / "credentials"}})


def _start(tmp: Path, config: Path, notify: NotifyListener, **env: str) -> Process:
    return Process([sys.executable, "-m", "daemon", "--config", str(config)], log=tmp / "daemon.log", cwd=REPO,
                   env={"NOTIFY_SOCKET": notify.address, "PYTHONUNBUFFERED": "1", **env})


def _stop(daemon: Process, notify: NotifyListener) -> None:
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(STOP_DEADLINE) == 0, daemon.output()
    notify.wait_for("STOPPING=1", deadline=1)


def _unix_client(tmp: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(tmp / "run" / "api.sock")), base_url="http://baie",
                        timeout=10)


def _log_lines(daemon: Process) -> list[dict]:
    """Every line the daemon wrote (stdout and stderr) must be one JSON object."""
    return [json.loads(line) for line in daemon.output().splitlines()]


@pytest.fixture
def sqlite_url(sqlite_template, tmp_path) -> str:
    path = tmp_path / "baie.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def test_lifecycle_notify_watchdog_metrics_and_sigterm(tmp_path, sqlite_url):
    _populate(sqlite_url)
    config = _write_config(tmp_path, sqlite_url)
    # a stale socket left by a daemon that died: the new one must replace it
    (tmp_path / "run").mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "run" / "api.sock"))
    stale.close()
    notify = NotifyListener(str(tmp_path / "notify.sock"))
    daemon = _start(tmp_path, config, notify, WATCHDOG_USEC="1000000")
    try:
        notify.wait_for("READY=1", sender=daemon)
        notify.wait_for("WATCHDOG=1", count=2, deadline=5)
        assert (tmp_path / "run" / "api.sock").stat().st_mode & 0o777 == 0o660
        with _unix_client(tmp_path) as client:
            health = client.get("/healthz")
            assert health.status_code == 200
            assert health.json() == {"status": "ok", "version": "0.1.0", "database": "ok"}

            assert [site["name"] for site in client.get("/api/v1/sites").json()] == ["par1"]
            missing = client.get("/api/v1/racks/nope")
            assert missing.status_code == 404
            assert missing.json() == {"error": "no rack matches 'nope'"}

            families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
            assert families["baie_build_info"].samples[0].labels == {"version": "0.1.0"}
            assert families["baie_up"].samples[0].value == 1
            assert [(s.labels, s.value) for s in families["baie_nodes"].samples] == [
                ({"site": "par1", "state": "discovered"}, 1)]
            requests = {(s.labels["route"], s.labels["status"]): s.value
                        for s in families["baie_http_requests"].samples if s.name.endswith("_total")}
            assert requests[("/api/v1/racks/{ref:path}", "404")] == 1

            paths = client.get("/openapi.json").json()["paths"]
            assert {"/healthz", "/api/v1/sites", "/api/v1/racks/{ref}", "/api/v1/events"} <= set(paths)
        _stop(daemon, notify)
    finally:
        daemon.stop()
        notify.close()
    assert not (tmp_path / "run" / "api.sock").exists()
    events = [line["event"] for line in _log_lines(daemon)]
    assert events[0] == "daemon starting" and events[-1] == "daemon stopped"


def test_read_api(tmp_path, database_url):
    _populate(database_url)
    notify = NotifyListener(f"@baie-test-{uuid.uuid4().hex}")
    daemon = _start(tmp_path, _write_config(tmp_path, database_url), notify)
    try:
        notify.wait_for("READY=1", sender=daemon)
        with _unix_client(tmp_path) as client:
            assert [r["name"] for r in client.get("/api/v1/racks", params={"site": "par1"}).json()] == ["R01"]
            elevation = client.get("/api/v1/racks/par1/R01").json()["elevation"]
            assert [u["u"] for u in elevation if u["node"] == "web-1"] == [10]
            assert [n["serial"] for n in client.get("/api/v1/nodes", params={"rack": "R01"}).json()] == ["SN-1"]
            assert client.get("/api/v1/nodes/SN-1").json()["name"] == "web-1"
            assert client.get("/api/v1/pdus", params={"site": "par1"}).json() == []
            assert client.get("/api/v1/cooling-loops").json() == []
            assert [e["subject"] for e in client.get("/api/v1/events", params={"since": "1h"}).json()] == ["node/SN-1"]
            assert client.get("/api/v1/events", params={"since": "2999-01-01T00:00:00Z"}).json() == []
            for path, params, status in [("/api/v1/racks", {"site": "nowhere"}, 404),
                                         ("/api/v1/nodes", {"state": "melted"}, 422),
                                         ("/api/v1/events", {"since": "yesterday"}, 422)]:
                reply = client.get(path, params=params)
                assert reply.status_code == status and "error" in reply.json(), (path, reply.text)
        _stop(daemon, notify)
    finally:
        daemon.stop()
        notify.close()


def test_tcp_needs_the_bearer_token_and_never_logs_it(tmp_path, sqlite_url):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "api-token").write_text(TOKEN + "\n")
    (credentials / "api-token").chmod(0o600)
    port = free_port()
    notify = NotifyListener(str(tmp_path / "notify.sock"))
    daemon = _start(tmp_path, _write_config(tmp_path, sqlite_url, listen=f"127.0.0.1:{port}", log_level="debug"),
                    notify)
    try:
        notify.wait_for("READY=1", sender=daemon)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            assert client.get("/api/v1/sites").status_code == 401
            assert client.get("/api/v1/sites", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert client.get("/metrics", headers={"Authorization": TOKEN}).status_code == 401
            assert client.get("/api/v1/sites", headers={"Authorization": f"Bearer {TOKEN}"}).json() == []
        with _unix_client(tmp_path) as client:  # the socket's file mode guards it instead
            assert client.get("/api/v1/sites").status_code == 200
        _stop(daemon, notify)
    finally:
        daemon.stop()
        notify.close()
    assert TOKEN not in daemon.output()
    _log_lines(daemon)


def _run_once(tmp_path: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon", "--config", str(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=30, env={**os.environ, "NOTIFY_SOCKET": ""})


def test_tcp_without_a_token_is_refused(tmp_path, sqlite_url):
    result = _run_once(tmp_path, _write_config(tmp_path, sqlite_url, listen=f"127.0.0.1:{free_port()}"))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "api.listen needs the bearer token credential 'api-token'" in result.stderr


def test_unmigrated_database_is_refused(tmp_path):
    result = _run_once(tmp_path, _write_config(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}"))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "run `baie db upgrade`" in result.stderr
    assert not (tmp_path / "run" / "api.sock").exists()


def test_logs_redact_secrets():
    event = redact(None, "info", {"event": "enrolled", "bmc": "10.0.0.5", "password": "hunter2",
                                  "auth": {"api_token": "t0k", "user": "admin"}, "extra": [Secret("s3cret")]})
    assert event == {"event": "enrolled", "bmc": "10.0.0.5", "password": "********",
                     "auth": {"api_token": "********", "user": "admin"}, "extra": ["********"]}

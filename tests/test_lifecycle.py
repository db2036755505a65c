"""The node lifecycle on both backends: the transition table, locks and their recovery, timeouts, tokens; and
the daemon as a real process, SIGKILLed mid-provisioning and restarted."""

from __future__ import annotations

import re
import shutil
import signal
import sys
import threading
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlmodel import select

from inventory import lifecycle
from inventory.db import make_engine
from inventory.errors import Conflict, NotFound
from inventory.lifecycle import ALLOWED, DAEMON, FAILED, OPERATOR, TRANSITIONS, TokenRejected
from inventory.model import NetworkInterface, Node, NodeState, Provisioning, utcnow
from inventory.service import Inventory
from tests.lab.common import REPO, Process, free_port, wait_until
from tests.test_daemon import NotifyListener
from tests.test_provisioning import bmc, client_key, credentials, daemon_config, populate  # noqa: F401 (fixtures)

S = NodeState
MAC = "52:54:00:12:34:56"


def _node(inventory, name: str, state: NodeState, *, mac: str | None = None, lock_owner: str | None = None) -> int:
    with inventory.session() as s:
        node = Node(name=name, state=state, lock_owner=lock_owner, state_since=utcnow())
        s.add(node)
        s.flush()
        if mac:
            s.add(NetworkInterface(node_id=node.id, name="eno1", mac=mac))
        return node.id


def _set(inventory, name: str, **fields) -> Node:
    with inventory.session() as s:
        node = s.exec(select(Node).where(Node.name == name)).one()
        for key, value in fields.items():
            setattr(node, key, value)
        s.add(node)
    return _get(inventory, name)


def _get(inventory, name: str) -> Node:
    with inventory.session() as s:
        return s.exec(select(Node).where(Node.name == name)).one()


def test_every_transition_in_the_table_is_allowed_and_recorded(inventory):
    _node(inventory, "n1", S.DISCOVERED)
    for source, target, by in TRANSITIONS:
        _set(inventory, "n1", state=source)
        view = lifecycle.transition(inventory, "n1", target, f"test {source}->{target}", "cli:alice",
                                    operator=by == OPERATOR)
        assert (view.source, view.target) == (source, target)
        assert _get(inventory, "n1").state == target
    history = lifecycle.history(inventory, "n1")
    assert [(t.source, t.target) for t in history] == [(s, t) for s, t, _ in TRANSITIONS]
    assert all(t.actor == "cli:alice" and t.reason.startswith("test ") and t.time for t in history)


def test_other_transitions_are_refused_with_a_clear_error(inventory):
    refused = [(s, t) for s in S for t in S if (s, t) not in ALLOWED]
    assert len(refused) > 300
    for source, target in refused:
        with pytest.raises(Conflict, match=f"is {source}: it cannot go to {target}"):
            lifecycle.check_transition("n1", source, target)
    _node(inventory, "n1", S.AVAILABLE)
    with pytest.raises(Conflict, match=r"n1 is available: it cannot go to in_pool \(from available: booting, "
                                       r"maintenance, retired\)"):
        lifecycle.transition(inventory, "n1", S.IN_POOL, "skip ahead", "cli:bob")
    with pytest.raises(Conflict, match="made by the daemon"):  # operators do not enter the flow's states
        lifecycle.transition(inventory, "n1", S.BOOTING, "by hand", "cli:bob", operator=True)
    _set(inventory, "n1", state=S.RETIRED)
    with pytest.raises(Conflict, match="none: it is final"):
        lifecycle.transition(inventory, "n1", S.AVAILABLE, "resurrect", "cli:bob")
    assert _get(inventory, "n1").state == S.RETIRED and lifecycle.history(inventory, "n1") == []


def test_every_waiting_state_fails_into_its_own_failed_state_which_can_be_retried_or_maintained(inventory):
    for waiting, failed in FAILED.items():
        assert ALLOWED[(waiting, failed)] == DAEMON
        assert ALLOWED[(failed, S.MAINTENANCE)] == OPERATOR
        assert any(s == failed and t not in (S.MAINTENANCE,) for s, t, _ in TRANSITIONS), f"{failed} has no retry"


def test_a_node_is_locked_by_one_daemon_at_a_time(inventory):
    _node(inventory, "n1", S.AVAILABLE)
    assert lifecycle.acquire(inventory, "n1", "host-a/1") == "n1"
    with pytest.raises(Conflict, match="being worked on by host-a/1"):
        lifecycle.acquire(inventory, "n1", "host-b/2")
    with pytest.raises(Conflict, match="being worked on by host-a/1"):
        lifecycle.transition(inventory, "n1", S.MAINTENANCE, "meddling", "cli:bob", operator=True)
    lifecycle.transition(inventory, "n1", S.BOOTING, "provision", "daemon", owner="host-a/1")
    lifecycle.unlock(inventory, "n1", "host-b/2")  # not its lock: nothing happens
    assert _get(inventory, "n1").lock_owner == "host-a/1"
    lifecycle.unlock(inventory, "n1", "host-a/1")
    assert _get(inventory, "n1").lock_owner is None


def test_a_restarted_daemon_fails_what_it_and_dead_daemons_left_and_clears_their_locks(inventory):
    lifecycle.heartbeat(inventory, "host-b/2", "host-b")  # alive
    _node(inventory, "mine-installing", S.INSTALLING, lock_owner="host-a/1")
    _node(inventory, "mine-available", S.AVAILABLE, lock_owner="host-a/1")
    _node(inventory, "dead-cleaning", S.CLEANING, lock_owner="host-c/3")
    _node(inventory, "orphan-booting", S.BOOTING)
    _node(inventory, "alive-verifying", S.VERIFYING, lock_owner="host-b/2")
    _node(inventory, "inspecting", S.INSPECTING)  # an operator's inspection: not a daemon's work
    alive = lifecycle.live_daemons(inventory, timedelta(seconds=30))
    assert alive == {"host-b/2"}
    recovered = lifecycle.recover(inventory, alive, "daemon:host-a/1", restarted="host-a/1")
    assert sorted(recovered) == ["dead-cleaning", "mine-available", "mine-installing", "orphan-booting"]
    expected = {
        "mine-installing": (S.INSTALLING_FAILED, "interrupted while installing: its daemon restarted"),
        "mine-available": (S.AVAILABLE, None),
        "dead-cleaning": (S.CLEANING_FAILED, "interrupted while cleaning: daemon host-c/3 is gone"),
        "orphan-booting": (S.BOOTING_FAILED, "interrupted while booting: no daemon was working on it"),
        "alive-verifying": (S.VERIFYING, None),
        "inspecting": (S.INSPECTING, None),
    }
    for name, (state, reason) in expected.items():
        node = _get(inventory, name)
        assert node.state == state, name
        assert node.lock_owner == ("host-b/2" if name == "alive-verifying" else None), name
        assert [t.reason for t in lifecycle.history(inventory, name)] == ([reason] if reason else []), name


def test_timeouts_send_waiting_nodes_to_their_failed_state(inventory):
    _node(inventory, "slow", S.INSTALLING, lock_owner="host-a/1")
    _node(inventory, "fresh", S.INSTALLING)
    _node(inventory, "resting", S.AVAILABLE)
    _set(inventory, "slow", state_since=utcnow() - timedelta(hours=2))
    _set(inventory, "resting", state_since=utcnow() - timedelta(days=30))
    expired = lifecycle.expire(inventory, {S.INSTALLING: 3600.0, S.BOOTING: 600.0}, "daemon:host-a/1")
    assert expired == ["slow"]
    assert _get(inventory, "slow").state == S.INSTALLING_FAILED
    assert lifecycle.history(inventory, "slow")[0].reason == "timed out: installing for more than 3600 s"
    assert _get(inventory, "fresh").state == S.INSTALLING and _get(inventory, "resting").state == S.AVAILABLE


def test_one_time_tokens_are_bound_to_the_mac_expire_and_cannot_be_replayed(inventory):
    _node(inventory, "hv1", S.AVAILABLE, mac=MAC.upper())
    _node(inventory, "other", S.AVAILABLE, mac="52:54:00:ff:ff:ff")
    with pytest.raises(NotFound):
        lifecycle.issue_token(inventory, "52:54:00:00:00:00", 600)
    assert lifecycle.issue_token(inventory, MAC, 600) is None  # not booting: the script boots from disk
    lifecycle.acquire(inventory, "hv1", "host-a/1")
    attempt_id, _ = lifecycle.begin_provisioning(inventory, "hv1", "kvm", "provision", "cli:alice", "host-a/1")
    token, boot = lifecycle.issue_token(inventory, MAC.replace(":", "-"), 600)
    assert (boot.node, boot.hostname, boot.profile, boot.mac) == ("hv1", "hv1", "kvm", MAC)
    row = lifecycle.attempt(inventory, attempt_id)
    assert row.token_sha256 == lifecycle.token_sha256(token) and token not in str(row.model_dump())
    assert lifecycle.check_token(inventory, MAC, token).provisioning_id == attempt_id
    with pytest.raises(TokenRejected, match="not valid for 52:54:00:ff:ff:ff"):
        lifecycle.check_token(inventory, "52:54:00:ff:ff:ff", token)
    with pytest.raises(TokenRejected, match="not valid"):
        lifecycle.check_token(inventory, MAC, token + "x")
    assert lifecycle.record_callback(inventory, MAC, token, "ssh-ed25519 AAAA", "10.0.0.5") == "hv1"
    with pytest.raises(TokenRejected, match="has been used"):
        lifecycle.record_callback(inventory, MAC, token, "ssh-ed25519 BBBB", "10.6.6.6")
    assert lifecycle.last_attempt(inventory, "hv1").ssh_host_key == "ssh-ed25519 AAAA"

    lifecycle.transition(inventory, "hv1", S.INSTALLING, "script", "daemon", owner="host-a/1")
    lifecycle.transition(inventory, "hv1", S.INSTALLING_FAILED, "test", "daemon", owner="host-a/1")
    lifecycle.begin_provisioning(inventory, "hv1", "kvm", "retry", "cli:alice", "host-a/1")
    token, _ = lifecycle.issue_token(inventory, MAC, 600)
    with inventory.session() as s:
        row = s.exec(select(Provisioning).where(Provisioning.token_sha256 == lifecycle.token_sha256(token))).one()
        row.token_expires_at = utcnow() - timedelta(seconds=1)
        s.add(row)
    with pytest.raises(TokenRejected, match="expired"):
        lifecycle.check_token(inventory, MAC, token)


def test_the_daemon_name_persists_per_host(inventory):
    first = lifecycle.daemon_name(inventory, "host-a")
    assert first.startswith("host-a/") and lifecycle.daemon_name(inventory, "host-a") == first
    assert lifecycle.daemon_name(inventory, "host-b") != first


# ----------------------------------------------------------------------------- a daemon killed mid-way
def _start(tmp_path, config: str, notify: NotifyListener) -> Process:
    daemon = Process([sys.executable, "-m", "daemon", "--config", config], log=tmp_path / "daemon.log", cwd=REPO,
                     env={"NOTIFY_SOCKET": notify.address, "PYTHONUNBUFFERED": "1"})
    notify.wait_for("READY=1", count=len([m for m in notify.messages if "READY=1" in m]) + 1, deadline=30,
                    sender=daemon)
    return daemon


def _rows(url: str) -> dict[str, dict]:
    engine = make_engine(url)
    try:
        with Inventory(engine).session() as s:
            return {n.name: n.model_dump() for n in s.exec(select(Node))}
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(sqlite_template, tmp_path) -> str:
    path = tmp_path / "baie.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def test_a_daemon_killed_mid_provisioning_fails_the_node_at_restart(tmp_path, sqlite_url, bmc, credentials):
    """SQLite only: the conditional updates behind the locks run on both backends above."""
    database_url = sqlite_url
    engine = make_engine(database_url)
    inventory = Inventory(engine)
    populate(inventory, bmc, extra=("hv-2",))
    engine.dispose()
    boot_port = free_port()
    config = daemon_config(tmp_path, database_url, credentials, socket=tmp_path / "run" / "api.sock", bmc_port=bmc.port,
                           listen=f"127.0.0.1:{boot_port}")
    notify = NotifyListener(f"@baie-test-{uuid.uuid4().hex}")
    daemon = _start(tmp_path, config, notify)
    try:
        before = _rows(database_url)
        unix = httpx.Client(transport=httpx.HTTPTransport(uds=str(tmp_path / "run" / "api.sock")),
                            base_url="http://baie", timeout=120)
        threading.Thread(target=lambda: _ignore_errors(unix.post, "/api/v1/provision",
                                                       json={"profile": "kvm", "nodes": ["hv-1"]}),
                         daemon=True).start()
        boot = httpx.Client(base_url=f"http://127.0.0.1:{boot_port}", timeout=10)

        scripts = []

        def installing() -> bool:
            scripts.append(boot.get("/boot/ipxe", params={"mac": bmc.NIC_MAC}).text)  # iPXE, once it is booting
            return _rows(database_url)["hv-1"]["state"] == S.INSTALLING

        wait_until(installing, deadline=60, what="hv-1 installing", interval=0.5)
        script = boot.get("/boot/ipxe", params={"mac": bmc.NIC_MAC})
        assert script.text.endswith("exit\n")  # installing: the script was served once
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
        assert _rows(database_url)["hv-1"]["lock_owner"] is not None  # what the crash left

        daemon = _start(tmp_path, config, notify)
        after = _rows(database_url)
        node = after["hv-1"]
        assert (node["state"], node["lock_owner"]) == (S.INSTALLING_FAILED, None)
        last = unix.get("/api/v1/nodes/hv-1/history").json()[-1]
        assert last["reason"] == "interrupted while installing: its daemon restarted"
        assert last["actor"].startswith("daemon:")
        assert after["hv-2"] == before["hv-2"]  # nothing else changed
        assert {name for name, row in after.items() if row["lock_owner"]} == set()
        # the token of the interrupted provisioning is no longer good
        config_url = re.search(r"url=(\S+)", [s for s in scripts if "url=" in s][-1])[1]  # the script iPXE ran
        refused = boot.get(config_url)
        assert refused.status_code == 403 and "its provisioning is over" in refused.text
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(15) == 0, daemon.output()
    finally:
        daemon.stop()
        notify.close()


def _ignore_errors(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except httpx.HTTPError:
        pass  # the daemon is killed under this request

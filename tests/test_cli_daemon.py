"""The CLI commands that go through the daemon, against a real daemon process and real Redfish BMCs."""

from __future__ import annotations

import json
import secrets
import shutil
import sys

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from inventory.db import make_engine
from inventory.model import DiscoveryRange, Site
from inventory.service import Inventory
from tests.lab.common import MOCKUPS, REPO, Process, free_port, wait_until, write_config
from tests.lab.redfish import SushyStatic

pytestmark = pytest.mark.skipif(not MOCKUPS.is_dir(), reason=f"Redfish mockups not found at {MOCKUPS}")
NET = "127.76.0"
PASSWORD = "pw-" + secrets.token_hex(12)  # sushy-static takes any credentials; this one must never show


@pytest.fixture(scope="module")
def lab(tmp_path_factory, sqlite_template):
    tmp = tmp_path_factory.mktemp("cli-daemon")
    db = tmp / "baie.db"
    shutil.copy(sqlite_template, db)
    engine = make_engine(f"sqlite:///{db}")
    with Inventory(engine).session() as s:
        site = Site(name="lab", country_code="FR", jurisdiction="France", role="primary")
        s.add(site)
        s.flush()
        s.add(DiscoveryRange(site_id=site.id, cidr=f"{NET}.0/30", protocols="redfish"))
    engine.dispose()
    creds = tmp / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "bmc-default").write_text(f"admin:{PASSWORD}\n")
    (creds / "bmc-default").chmod(0o600)
    port = free_port(f"{NET}.1")
    config = write_config(tmp / "baie.toml", {
        "database": {"url": f"sqlite:///{db}"}, "api": {"socket": tmp / "api.sock"}, "credentials": {"directory": creds},
        "bmc": {"redfish_port": port}, "discovery": {"probe_timeout_seconds": 1.0}})
    with SushyStatic("public-rackmount1", f"{NET}.1", port, tls=True) as rackmount, \
            SushyStatic("DL325", f"{NET}.2", port, tls=True) as dl325:
        daemon = Process([sys.executable, "-m", "daemon", "--config", str(config)], log=tmp / "daemon.log",
                         cwd=REPO)
        try:
            wait_until(lambda: daemon.alive() and (tmp / "api.sock").is_socket(), deadline=30,
                       what="the daemon's socket")
            yield {"config": config, "rackmount": rackmount, "dl325": dl325, "port": port, "daemon": daemon}
        finally:
            daemon.stop()
    assert PASSWORD not in daemon.output(), "a BMC password reached the daemon's log"


def baie(lab, *args: str):
    return CliRunner().invoke(app, ["--config", str(lab["config"]), *args])


def test_discover_power_boot_and_trust(lab):
    result = baie(lab, "discover", "lab", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["addresses"], summary["found"], summary["enrolled"]) == (2, 2, 2)

    again = baie(lab, "discover", "lab")
    assert again.exit_code == 0 and "updated" in again.stdout

    status = baie(lab, "power", "437XR1138R2", "status")
    assert (status.exit_code, status.stdout.strip()) == (0, "437XR1138R2: on")
    already = baie(lab, "power", "437XR1138R2", "on")
    assert already.exit_code == 0 and "already on" in already.stdout

    refused = baie(lab, "boot", "437XR1138R2", "pxe")
    assert refused.exit_code == 1 and "--once" in refused.stderr
    boot = baie(lab, "boot", "437XR1138R2", "pxe", "--once", "--mode", "uefi")
    assert boot.exit_code == 0 and "next boot once from pxe (uefi)" in boot.stdout

    # The DL325's certificate is replaced: the pin fails closed until an operator re-pins it.
    dl325 = lab["dl325"]
    old = dl325.fingerprint
    dl325.__exit__()
    dl325.__enter__()
    failed = baie(lab, "power", "MXQ019020B", "status")
    assert failed.exit_code == 1 and "does not match the pinned fingerprint" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    trusted = baie(lab, "bmc", "trust", "MXQ019020B")
    assert trusted.exit_code == 0, trusted.output
    assert f"pinned sha256 {dl325.fingerprint} (was {old})" in trusted.stdout
    assert baie(lab, "power", "MXQ019020B", "status").stdout.strip() == "MXQ019020B: on"
    log = lab["daemon"].output()
    assert "discovery.enrolled" in log and PASSWORD not in log


def test_errors_are_one_line(lab):
    for args, message in ((("discover", "atlantis"), "no site matches 'atlantis'"),
                          (("power", "nope", "status"), "no node matches 'nope'"),
                          (("discover", "lab", "--range", "10.0.0.0/8"), "at most a /16")):
        result = baie(lab, *args)
        assert result.exit_code == 1, result.output
        assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
        assert message in result.stderr

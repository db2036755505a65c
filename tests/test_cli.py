"""The `baie` command line on both backends: what an operator reads, what a script parses, and how it fails."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socketserver
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from daemon.cli import app
from inventory.model import (
    CoolingLoop,
    CoolingUnit,
    Event,
    Location,
    MemoryModule,
    NetworkInterface,
    Node,
    Pdu,
    PduOutlet,
    PowerFeed,
    PowerPanel,
    Processor,
    Rack,
    Site,
)
from tests.conftest import PG_ADMIN_URL

VENV_BIN = Path(sys.executable).parent
SECRET = "Sup3rS3cretPassw0rd"


@pytest.fixture
def config(tmp_path) -> Path:
    """Settings of our own, so that a file in /etc/baie never leaks into a test; no daemon listens."""
    path = tmp_path / "baie.toml"
    path.write_text(f'[api]\nsocket = "{tmp_path / "api.sock"}"\n')
    return path


@pytest.fixture
def baie(config):
    """Run `baie ARGS` against ``url``: the result has exit_code, stdout and stderr apart."""
    runner = CliRunner()

    def run(*args: str, url: str):
        return runner.invoke(app, ["--config", str(config), "--database-url", url, *args], prog_name="baie",
                             env={"COLUMNS": "200", "BAIE_DATABASE_URL": None, "BAIE_CONFIG": None})

    return run


def one_line_error(result) -> str:
    assert result.exit_code != 0, result.stdout
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def populate(inventory) -> None:
    """par1: rack R01 (12U) on a loop and two feeds, a 2U GPU node at U10 and a planned 1U node at U1."""
    with inventory.session() as s:
        site = Site(name="par1", country_code="FR", jurisdiction="France", role="primary", description="Paris")
        s.add_all([site, Site(name="ams1", country_code="NL", jurisdiction="Netherlands", role="backup")])
        s.flush()
        hall = Location(site_id=site.id, name="hall-1")
        cdu = CoolingUnit(site_id=site.id, name="cdu-1")
        panel = PowerPanel(site_id=site.id, name="PP1")
        s.add_all([hall, cdu, panel])
        s.flush()
        loop = CoolingLoop(site_id=site.id, cooling_unit_id=cdu.id, name="loop-a")
        s.add(loop)
        s.flush()
        rack = Rack(site_id=site.id, location_id=hall.id, name="R01", u_height=12, power_budget_watts=8000,
                    cooling_loop_id=loop.id, switch_name="tor-r01")
        s.add(rack)
        s.flush()
        feed_a = PowerFeed(power_panel_id=panel.id, rack_id=rack.id, name="F1", side="A", voltage=230, amperage=32)
        feed_b = PowerFeed(power_panel_id=panel.id, rack_id=rack.id, name="F2", side="B", voltage=230, amperage=32)
        s.add_all([feed_a, feed_b])
        s.flush()
        gpu = Node(name="gpu-01", serial="SN-GPU-01", manufacturer="Dell", model="XE8640", state="available",
                   bmc_address="10.1.0.10", bmc_protocol="redfish", bmc_state="ok", bmc_tls_fingerprint="AB:CD:EF",
                   bios_version="2.1.0", bmc_firmware="7.00.30")
        inventory.place_node(s, gpu, rack, 10, u_height=2)
        inventory.place_node(s, Node(name="web-01", serial="SN-WEB-01", state="planned"), rack, 1)
        s.add_all([Processor(node_id=gpu.id, socket=f"CPU{i}", model="Xeon 8480+", cores=56) for i in (1, 2)])
        s.add_all([MemoryModule(node_id=gpu.id, slot=f"A{i}", size_mib=65536) for i in range(4)])
        s.add(NetworkInterface(node_id=gpu.id, name="eno1", mac="52:54:00:12:34:56", speed_mbps=25000))
        pdu = Pdu(site_id=site.id, rack_id=rack.id, power_feed_id=feed_a.id, name="pdu-r01-a", address="10.1.0.2")
        s.add(pdu)
        s.flush()
        s.add(PduOutlet(pdu_id=pdu.id, index=1, node_id=gpu.id, psu="PSU1"))
        s.add(PduOutlet(pdu_id=pdu.id, index=2))
        s.add(Event(kind="node.created", subject="node/SN-GPU-01", actor="test", message="old news",
                    time=datetime.now(UTC) - timedelta(hours=3)))
        inventory.add_event(s, "node.placed", "node/SN-WEB-01", "fresh news", "test")


@pytest.fixture
def url(database_url, inventory) -> str:
    populate(inventory)
    return database_url


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request, tmp_path):
    """A database that exists but has no schema, on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "empty.db"
        sqlite3.connect(path).close()
        yield f"sqlite:///{path}"
        return
    request.getfixturevalue("postgres_database")  # skips (or fails under CI) without a PostgreSQL server
    name = f"baie_cli_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# ----------------------------------------------------------------------------------- reading
def test_sites_table_lists_the_sites(baie, url, config):
    result = baie("sites", url=url)
    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "par1" in line or "ams1" in line]
    assert len(rows) == 2
    assert "hall-1" in rows[1] and "Paris" in rows[1]
    via_env = CliRunner().invoke(app, ["--config", str(config), "sites", "--json"], env={"BAIE_DATABASE_URL": url})
    assert [s["name"] for s in json.loads(via_env.stdout)] == ["ams1", "par1"]


def test_rack_show_draws_the_elevation_power_and_cooling(baie, url):
    result = baie("rack", "show", "R01", url=url)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    cells = {int(row[0]): row[1:] for row in rows if row[0].isdigit()}  # the elevation: U → node, serial, face
    assert sorted(cells) == list(range(1, 13))
    assert cells[11][:3] == ["┌ gpu-01", "SN-GPU-01", "front"]  # the 2U node from its top U...
    assert cells[10][0] == "└"  # ...down to its base, U10
    assert cells[1][:2] == ["web-01", "SN-WEB-01"]
    assert {u for u, c in cells.items() if c[0] == "·"} == {2, 3, 4, 5, 6, 7, 8, 9, 12}
    assert "8,000 W" in out and "loop-a" in out and "tor-r01" in out
    assert "PP1/F1" in out and "PP1/F2" in out and "5,888 W" in out  # 230 V × 32 A × 80 %
    assert "pdu-r01-a" in out and "1/2" in out


def test_node_show_gives_identity_bmc_firmware_and_components(baie, url):
    result = baie("node", "show", "SN-GPU-01", url=url)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for expected in ("gpu-01", "Dell XE8640", "par1/R01 U10-U11 (2U, front)", "redfish 10.1.0.10 (ok)",
                     "AB:CD:EF", "2.1.0", "7.00.30", "2 × Xeon 8480+", "256 GiB in 4 modules",
                     "52:54:00:12:34:56", "25,000 Mb/s"):
        assert expected in out, expected


def test_json_is_plain_and_carries_the_fields(baie, url):
    sites = json.loads(baie("sites", "--json", url=url).stdout)
    assert [s["name"] for s in sites] == ["ams1", "par1"]
    rack = json.loads(baie("rack", "show", "par1/R01", "--json", url=url).stdout)
    assert rack["power_budget_watts"] == 8000 and rack["cooling_loop"] == "loop-a"
    assert {u["u"]: u["node"] for u in rack["elevation"] if u["node"]} == {11: "gpu-01", 10: "gpu-01", 1: "web-01"}
    assert [f["side"] for f in rack["feeds"]] == ["A", "B"]
    node = json.loads(baie("node", "show", "gpu-01", "--json", url=url).stdout)
    assert node["memory_total_mib"] == 4 * 65536 and node["components"]["nics"][0]["mac"] == "52:54:00:12:34:56"
    assert json.loads(baie("racks", "--json", url=url).stdout)[0]["u_used"] == 3
    assert json.loads(baie("pdus", "--site", "par1", "--json", url=url).stdout)[0]["outlets"][0]["node"] == "gpu-01"
    assert json.loads(baie("cooling-loops", "--json", url=url).stdout)[0]["racks"] == ["R01"]
    events = json.loads(baie("events", "--json", url=url).stdout)
    assert events[0]["message"] == "fresh news" and events[0]["time"].endswith("Z")


def test_nodes_filter_by_state(baie, url):
    result = baie("nodes", "--state", "planned", url=url)
    assert result.exit_code == 0, result.stderr
    assert "web-01" in result.stdout and "gpu-01" not in result.stdout
    planned = json.loads(baie("nodes", "--state", "planned", "--json", url=url).stdout)
    assert [(n["name"], n["position"]) for n in planned] == [("web-01", 1)]
    assert "state: 'broken' is not one of" in one_line_error(baie("nodes", "--state", "broken", url=url))


def test_events_since_a_duration_or_a_time(baie, url):
    recent = json.loads(baie("events", "--since", "1h", "--json", url=url).stdout)
    assert [e["message"] for e in recent] == ["fresh news"]
    since = (datetime.now(UTC) - timedelta(hours=4)).isoformat()
    assert len(json.loads(baie("events", "--since", since, "--json", url=url).stdout)) == 2
    table = baie("events", "--since", "2d", "--subject", "node/SN-GPU-01", url=url).stdout
    assert "old news" in table and "fresh news" not in table
    assert "--since: 'yesterday'" in one_line_error(baie("events", "--since", "yesterday", url=url))


@pytest.mark.parametrize("args,named", [(("rack", "show", "R99"), "'R99'"), (("node", "show", "nope"), "'nope'"),
                                        (("racks", "--site", "lon9"), "'lon9'")])
def test_unknown_names_fail_in_one_line(baie, url, args, named):
    assert named in one_line_error(baie(*args, url=url))


# ----------------------------------------------------------------------------- import / export
EXAMPLE = Path(__file__).parent / "data" / "example.yaml"


def test_import_then_export_round_trips(baie, database_url, sqlite_template, tmp_path):
    result = baie("import", str(EXAMPLE), url=database_url)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"{EXAMPLE}: ") and " created, 0 updated, 0 unchanged" in result.stdout
    assert {e["actor"] for e in json.loads(baie("events", "--json", url=database_url).stdout)} \
        == {f"cli:{getpass.getuser()}"}
    assert "0 created, 0 updated" in baie("import", str(EXAMPLE), "--actor", "test", url=database_url).stdout
    exported = tmp_path / "exported.yaml"
    assert baie("export", "--format", "yaml", "--output", str(exported), url=database_url).exit_code == 0
    # into a second, empty database and out again: the same file
    copy = tmp_path / "copy.db"
    shutil.copy(sqlite_template, copy)
    assert baie("import", str(exported), url=f"sqlite:///{copy}").exit_code == 0
    assert baie("export", url=f"sqlite:///{copy}").stdout == exported.read_text()
    as_json = json.loads(baie("export", "--format", "json", url=database_url).stdout)
    assert as_json == yaml.safe_load(exported.read_text())
    assert baie("export", "--format", "csv", url=database_url).stdout.count("\n") > 10


def test_refused_import_lists_every_problem_and_writes_nothing(baie, database_url, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("""\
sites:
  - name: tst1
    country_code: FR
    jurisdiction: France
    role: secondary
    locations: [{name: hall-t}]
    racks: [{name: T01, location: hall-t}]
    nodes:
      - {serial: TST-1, rack: T98, position: 1}
      - {serial: TST-2, rack: T99, position: 1}
""")
    result = baie("import", str(bad), url=database_url)
    assert result.exit_code == 1 and result.stdout == ""
    assert [line.split(": ", 1)[1] for line in result.stderr.splitlines()] == [
        f"{bad}:9: sites[0].nodes[0].rack: no rack 'T98' in site tst1",
        f"{bad}:10: sites[0].nodes[1].rack: no rack 'T99' in site tst1",
    ]
    assert json.loads(baie("sites", "--json", url=database_url).stdout) == []
    assert "No such file or directory" in one_line_error(baie("import", str(tmp_path / "nope.yaml"), url=database_url))


# ---------------------------------------------------------------------------------- database
def test_db_upgrade_creates_the_schema(baie, empty_database_url):
    assert "not migrated: run `baie db upgrade`" in one_line_error(baie("sites", url=empty_database_url))
    assert "not migrated" in baie("db", "current", url=empty_database_url).stdout
    result = baie("db", "upgrade", url=empty_database_url)
    assert result.exit_code == 0, result.stderr
    assert "is at the latest revision" in baie("db", "current", url=empty_database_url).stdout
    assert json.loads(baie("sites", "--json", url=empty_database_url).stdout) == []


def test_db_upgrade_creates_a_missing_sqlite_file(baie, tmp_path):
    url = f"sqlite:///{tmp_path}/new/baie.db"
    assert "no database at" in one_line_error(baie("sites", url=url))
    assert not (tmp_path / "new").exists()  # reading did not leave an empty file behind
    assert baie("db", "upgrade", url=url).exit_code == 0
    assert baie("sites", url=url).exit_code == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_schema_newer_than_the_code_is_not_sent_to_upgrade(baie, database_url):
    conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
    with conn:
        conn.execute("DROP TABLE site")  # what a later baie might have done
        conn.execute("UPDATE alembic_version SET version_num = 'f00d'")
    conn.close()
    assert "is at revision f00d, newer than this baie knows" in one_line_error(baie("sites", url=database_url))
    assert "upgrade baie" in baie("db", "current", url=database_url).stdout


@pytest.mark.parametrize("args", [("sites",), ("db", "upgrade"), ("db", "current")])
def test_unreachable_database_fails_without_showing_the_password(baie, args):
    # port 1 on loopback: nothing listens there, the connection is refused at once
    result = baie(*args, url=f"postgresql://baie:{SECRET}@127.0.0.1:1/baie")
    line = one_line_error(result)
    assert "cannot connect to the database postgresql://baie:***@127.0.0.1:1/baie" in line
    assert SECRET not in result.stdout + result.stderr


def test_malformed_database_url_is_not_echoed(baie):
    line = one_line_error(baie("sites", url=f"nonsense {SECRET}"))
    assert "database URL is not valid" in line and SECRET not in line


# ------------------------------------------------------------------------------ config, daemon
def test_bad_config_exits_2_naming_file_and_key(baie, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[database]\nurl = 'sqlite://'\ncolour = 'blue'\n")
    result = CliRunner().invoke(app, ["--config", str(bad), "sites"], prog_name="baie")
    assert result.exit_code == 2
    assert result.stderr == f"error: {bad}: unknown key 'database.colour'\n"
    result = CliRunner().invoke(app, ["daemon", "--config", str(tmp_path / "missing.toml")], prog_name="baie",
                                env={"BAIE_CONFIG": None})
    assert result.exit_code == 2 and "missing.toml: no such file" in result.stderr


def test_status_without_a_daemon(baie, config, tmp_path):
    line = one_line_error(baie("status", url="sqlite://"))
    assert line == f"error: the daemon is not running (no socket at {tmp_path / 'api.sock'})"


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "unix"  # a unix socket client has no address

    def log_message(self, *args) -> None:
        pass


def test_status_asks_healthz_on_the_socket(baie, tmp_path):
    server = socketserver.UnixStreamServer(str(tmp_path / "api.sock"), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = baie("status", "--json", url="sqlite://")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout) == {"status": "ok", "path": "/healthz"}
        assert "The daemon is running" in baie("status", url="sqlite://").stdout
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_baie_daemon_serves_what_baie_status_asks(baie, url, tmp_path):
    config = tmp_path / "daemon.toml"
    config.write_text(f'[database]\nurl = "{url}"\n[api]\nsocket = "{tmp_path / "api.sock"}"\n'
                      f'[credentials]\ndirectory = "{tmp_path}"\n')
    with open(tmp_path / "daemon.log", "w") as log:
        daemon = subprocess.Popen([VENV_BIN / "baie", "daemon", "--config", config], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while (result := baie("status", "--json", url=url)).exit_code != 0:
            assert daemon.poll() is None and time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
            time.sleep(0.2)
        assert json.loads(result.stdout)["database"] == "ok"
    finally:
        daemon.terminate()
        assert daemon.wait(15) == 0


def test_completion_answers_for_a_subcommand_prefix():
    # What the script from `baie --install-completion bash` runs on <TAB>
    env = {"_BAIE_COMPLETE": "complete_bash", "COMP_WORDS": "baie rac", "COMP_CWORD": "1"}
    result = CliRunner().invoke(app, [], prog_name="baie", env=env)
    assert set(result.stdout.split()) == {"racks", "rack"}
    env = {"_BAIE_COMPLETE": "complete_bash", "COMP_WORDS": "baie db ", "COMP_CWORD": "2"}
    assert set(CliRunner().invoke(app, [], prog_name="baie", env=env).stdout.split()) == {"upgrade", "current"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the entry point, not the backend, is under test
def test_console_script(config, url):
    """The installed entry point (`pip install -e .` after a change to [project.scripts])."""
    env = {**os.environ, "BAIE_DATABASE_URL": url, "BAIE_CONFIG": str(config)}
    help_ = subprocess.run([VENV_BIN / "baie", "--help"], env=env, capture_output=True, text=True, check=True)
    assert "rack" in help_.stdout and "daemon" in help_.stdout
    sites = subprocess.run([VENV_BIN / "baie", "sites", "--json"], env=env, capture_output=True, text=True, check=True)
    assert [s["name"] for s in json.loads(sites.stdout)] == ["ams1", "par1"]

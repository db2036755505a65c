"""``baie provision``, ``baie release`` and ``baie node history`` against a real daemon process: sushy-emulator
--fake as the BMC, the test acting as iPXE and as the installer on the daemon's boot port, and an asyncssh
server standing in for the installed host."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys

import httpx
import pytest
from typer.testing import CliRunner

from daemon.cli import app
from inventory.db import make_engine
from inventory.service import Inventory
from tests.lab.common import REPO, Process, free_port, wait_until
from tests.lab.installed_host import InstalledHost
from tests.test_provisioning import (  # noqa: F401 (fixtures)
    PASSWORD, act_as_node, bmc, client_key, credentials, daemon_config, populate)


@pytest.fixture
def inventory_file(sqlite_template, tmp_path):
    path = tmp_path / "baie.db"
    shutil.copy(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    yield path, Inventory(engine)
    engine.dispose()


async def test_provision_follows_the_daemon_to_the_pool_then_release_and_history(
        tmp_path, inventory_file, bmc, credentials, client_key):  # noqa: F811
    database, inventory = inventory_file
    populate(inventory, bmc, extra=("hv-2",))
    boot_port = free_port()
    async with InstalledHost(client_key.export_public_key().decode().strip(), bmc.NIC_MAC) as host:
        config = daemon_config(tmp_path, f"sqlite:///{database}", credentials, socket=tmp_path / "api.sock",
                               bmc_port=bmc.port, listen=f"127.0.0.1:{boot_port}", bmc={"power_confirm_seconds": 30},
                               provisioning={"ssh_port": host.port}, profile={"pool": "pool-a", "disks": 2})
        daemon = Process([sys.executable, "-m", "daemon", "--config", config], log=tmp_path / "daemon.log", cwd=REPO)
        try:
            wait_until(lambda: daemon.alive() and (tmp_path / "api.sock").is_socket(), deadline=30,
                       what="the daemon's socket")

            def baie(*args: str):
                return CliRunner().invoke(app, ["--config", config, *args])

            assert "give a NODE, or --rack RACK --count N" in baie("provision", "--profile", "kvm").output
            command = asyncio.create_task(asyncio.to_thread(baie, "provision", "hv-1", "--profile", "kvm"))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{boot_port}", timeout=30) as boot:
                await act_as_node(boot, inventory, "hv-1", bmc.NIC_MAC, host.public_key)
            provisioned = await command
            assert provisioned.exit_code == 0, provisioned.output
            assert "hv-1: available → booting" in provisioned.output
            assert "hv-1: deployed → in_pool" in provisioned.output
            assert provisioned.output.rstrip().endswith("1 of 1 done")

            history = baie("node", "history", "hv-1", "--json")
            assert [(t["source"], t["target"]) for t in json.loads(history.output)] == [
                ("available", "booting"), ("booting", "installing"), ("installing", "verifying"),
                ("verifying", "deployed"), ("deployed", "in_pool")]

            released = await asyncio.to_thread(baie, "release", "hv-1", "--json")
            assert json.loads(released.output) == [{"node": "hv-1", "state": "available", "error": None}]

            # hv-2's BMC does not answer: the command says so in one line and exits 1
            failed = await asyncio.to_thread(baie, "provision", "hv-2", "--profile", "kvm")
            assert failed.exit_code == 1
            assert "error: hv-2 (booting_failed): " in failed.output and "0 of 1 done" in failed.output
            assert "Traceback" not in failed.output and PASSWORD not in failed.output
        finally:
            daemon.stop()
    assert PASSWORD not in daemon.output()

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
from tests.test_provisioning import PASSWORD, _settings, act_as_node, bmc, client_key, credentials, populate  # noqa: F401


@pytest.fixture
def inventory_file(sqlite_template, tmp_path):
    path = tmp_path / "baie.db"
    shutil.copy(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    yield path, Inventory(engine)
    engine.dispose()


def _config(tmp_path, database, bmc, boot_port: int, ssh_port: int, credentials) -> str:
    image = _settings(tmp_path, ssh_port).images["debian12"]
    config = tmp_path / "baie.toml"
    config.write_text("\n".join([
        "[database]", f"url = {json.dumps(f'sqlite:///{database}')}",
        "[api]", f"socket = {json.dumps(str(tmp_path / 'api.sock'))}",
        "[credentials]", f"directory = {json.dumps(str(credentials))}",
        "[bmc]", f"redfish_port = {bmc.port}", "power_confirm_seconds = 30",
        "[provisioning]", f'listen = "127.0.0.1:{boot_port}"', f"ssh_port = {ssh_port}",
        f"hosts_directory = {json.dumps(str(tmp_path / 'hosts'))}",
        "[provisioning.images.debian12]", 'family = "debian"', f"kernel = {json.dumps(image.kernel)}",
        f"initrd = {json.dumps(image.initrd)}", f"repository = {json.dumps(image.repository)}",
        "[provisioning.profiles.kvm]", 'image = "debian12"', 'pool = "pool-a"', "disks = 2",
    ]) + "\n")
    return str(config)


async def test_provision_follows_the_daemon_to_the_pool_then_release_and_history(
        tmp_path, inventory_file, bmc, credentials, client_key):  # noqa: F811
    database, inventory = inventory_file
    populate(inventory, bmc, extra=("hv-2",))
    boot_port = free_port()
    async with InstalledHost(client_key.export_public_key().decode().strip(), bmc.NIC_MAC) as host:
        config = _config(tmp_path, database, bmc, boot_port, host.port, credentials)
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

"""The boot service, on the provisioning network: what a PXE-booting node and its installer fetch.

    GET  /boot/ipxe                       chain script: asks again with the booting NIC's MAC
    GET  /boot/ipxe?mac=MAC               the node's iPXE script (kernel, initrd, arguments) while it is
                                          booting for a provisioning, with a new one-time token; else "boot
                                          from disk". Unknown MAC: 404
    GET  /boot/images/NAME/kernel|initrd  catalogue files kept on the daemon's disk
    GET  /boot/MAC/TOKEN/FILE             the installer's configuration (preseed.cfg, user-data and
                                          meta-data, ks.cfg), rendered for the node
    POST /boot/MAC/TOKEN/callback         the installed host reports its SSH host key; spends the token

A token is bound to the MAC it was issued for and expires after provisioning.token_ttl_seconds; a wrong,
spent or expired token is 403. Only the token's SHA-256 is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, PlainTextResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from daemon.config import ProvisioningSettings
from daemon.credentials import CredentialStore
from daemon.executor import blocking
from drivers.base import DriverError
from drivers.ssh import parse_host_key, public_key
from inventory.errors import InventoryError, NotFound
from inventory.lifecycle import BootContext, TokenRejected, check_token, issue_token, record_callback
from inventory.service import Inventory

PLAIN = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Family:
    files: dict[str, str]  # file the installer fetches → template
    kernel_args: str  # {config} is the URL prefix of the files, {repository} the image's


FAMILIES: dict[str, Family] = {
    "debian": Family({"preseed.cfg": "preseed.cfg.j2"},
                     "auto=true priority=critical url={config}preseed.cfg interface=auto"),
    "ubuntu": Family({"user-data": "user-data.j2", "meta-data": "meta-data.j2"},
                     "autoinstall ip=dhcp ds=nocloud-net;s={config}"),
    "rocky": Family({"ks.cfg": "kickstart.cfg.j2"}, "inst.ks={config}ks.cfg inst.repo={repository} ip=dhcp"),
    "alma": Family({"ks.cfg": "kickstart.cfg.j2"}, "inst.ks={config}ks.cfg inst.repo={repository} ip=dhcp"),
}
ERROR_STATUS: tuple[tuple[type[InventoryError], int], ...] = ((NotFound, 404), (TokenRejected, 403),
                                                              (InventoryError, 409))

templates = Environment(loader=PackageLoader("daemon", "templates"), undefined=StrictUndefined,
                        autoescape=select_autoescape(["html", "xml"]), keep_trailing_newline=True)


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def base_url(settings: ProvisioningSettings) -> str:
    return (settings.base_url or f"http://{settings.listen}").rstrip("/")


class BootService:
    def __init__(self, inventory: Inventory, settings: ProvisioningSettings, credentials: CredentialStore) -> None:
        self.inventory = inventory
        self.settings = settings
        self.credentials = credentials
        self.base = base_url(settings)

    def _authorized_key(self) -> str:
        key = public_key(self.credentials.get(self.settings.ssh_key_credential))
        return " ".join(key.split()[:2])  # no comment: it goes into shell and YAML lines

    def _context(self, boot: BootContext, token: str) -> dict:
        profile = self.settings.profiles[boot.profile]
        image = self.settings.images[profile.image]
        mirror = urlsplit(image.repository)
        folder = f"{self.base}/boot/{boot.mac.replace(':', '-')}/{token}/"
        return dict(node=boot.node, hostname=boot.hostname, mac=boot.mac, profile=boot.profile,
                    provisioning_id=boot.provisioning_id, family=image.family, repository=image.repository,
                    mirror_scheme=mirror.scheme, mirror_host=mirror.netloc, mirror_directory=mirror.path or "/",
                    timezone=profile.timezone, config_url=folder, callback_url=f"{folder}callback")

    def image_url(self, name: str, part: Literal["kernel", "initrd"]) -> str:
        location = getattr(self.settings.images[name], part)
        return location if is_url(location) else f"{self.base}/boot/images/{name}/{part}"

    async def ipxe(self, mac: str) -> str:
        issued = await blocking(issue_token, self.inventory, mac, self.settings.token_ttl_seconds)
        if issued is None:
            return "#!ipxe\n# baie: nothing to install on this node; boot from disk\nexit\n"
        token, boot = issued
        context = self._context(boot, token)
        image_name = self.settings.profiles[boot.profile].image
        image = self.settings.images[image_name]
        args = FAMILIES[image.family].kernel_args.format(config=context["config_url"], repository=image.repository)
        return templates.get_template("ipxe.j2").render(
            context, kernel_url=self.image_url(image_name, "kernel"), initrd_url=self.image_url(image_name, "initrd"),
            kernel_args=" ".join(filter(None, (args, image.kernel_args))))

    async def config(self, mac: str, token: str, file: str) -> str:
        boot = await blocking(check_token, self.inventory, mac, token)
        family = FAMILIES[self.settings.images[self.settings.profiles[boot.profile].image].family]
        if file not in family.files:
            raise NotFound("installer file", file)
        key = await blocking(self._authorized_key)
        return templates.get_template(family.files[file]).render(self._context(boot, token), authorized_key=key)

    async def callback(self, mac: str, token: str, host_key: str, address: str) -> str:
        await blocking(check_token, self.inventory, mac, token)  # 404 / 403 before the body is looked at
        parse_host_key(host_key)
        return await blocking(record_callback, self.inventory, mac, token, " ".join(host_key.split()[:2]), address)


router = APIRouter(prefix="/boot")


def _service(request: Request) -> BootService:
    return request.app.state.boot


@router.get("/ipxe", response_class=PlainTextResponse)
async def ipxe(request: Request, mac: str | None = None) -> PlainTextResponse:
    service = _service(request)
    if mac is None:  # what DHCP points iPXE at: ask again, naming the NIC that booted
        return PlainTextResponse(f"#!ipxe\nchain {service.base}/boot/ipxe?mac=${{netX/mac}}\n", media_type=PLAIN)
    return PlainTextResponse(await service.ipxe(mac), media_type=PLAIN)


@router.get("/images/{name}/{part}")
async def image(request: Request, name: str, part: Literal["kernel", "initrd"]) -> FileResponse:
    images = _service(request).settings.images
    if name not in images or is_url(getattr(images[name], part)):
        raise NotFound("image file", f"{name}/{part}")
    path = Path(getattr(images[name], part))
    if not path.is_file():
        raise NotFound("image file", str(path))
    return FileResponse(path, media_type="application/octet-stream")


@router.get("/{mac}/{token}/{file}", response_class=PlainTextResponse)
async def config(request: Request, mac: str, token: str, file: str) -> PlainTextResponse:
    return PlainTextResponse(await _service(request).config(mac, token, file), media_type=PLAIN)


@router.post("/{mac}/{token}/callback", response_class=PlainTextResponse)
async def callback(request: Request, mac: str, token: str) -> PlainTextResponse:
    """The body is the host's ``/etc/ssh/ssh_host_ed25519_key.pub``."""
    body = (await request.body()).decode(errors="replace")
    node = await _service(request).callback(mac, token, body, request.client.host)
    return PlainTextResponse(f"{node}: host key recorded\n", media_type=PLAIN)


def create_boot_app(inventory: Inventory, settings: ProvisioningSettings, credentials: CredentialStore) -> FastAPI:
    """The boot service's own app: served on provisioning.listen, without the API's bearer token."""
    app = FastAPI(title="baie boot service", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.boot = BootService(inventory, settings, credentials)
    app.include_router(router)

    @app.exception_handler(InventoryError)
    async def inventory_error(_request: Request, exc: InventoryError) -> PlainTextResponse:
        status = next(code for kind, code in ERROR_STATUS if isinstance(exc, kind))
        return PlainTextResponse(f"{exc}\n", status_code=status, media_type=PLAIN)

    @app.exception_handler(DriverError)
    async def bad_key(_request: Request, exc: DriverError) -> PlainTextResponse:
        return PlainTextResponse(f"{exc}\n", status_code=400, media_type=PLAIN)

    return app

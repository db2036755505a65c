"""Settings: one validated object built at start-up from a TOML file and handed down. Nothing reads it globally.

Unknown keys are errors that name the file and the key. ``BAIE_DATABASE_URL`` overrides ``database.url``.
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from inventory.alerts import BUILTIN_RULES, LeakPolicy, Policy, Severity, parse_duration, render_summary
from inventory.db import DEFAULT_URL

DEFAULT_CONFIG = Path("/etc/baie/baie.toml")


class ConfigError(Exception):
    """The configuration file cannot be used; the message names the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str = DEFAULT_URL


class ApiSettings(_Section):
    socket: Path = Path("/run/baie/api.sock")
    # Optional TCP listener "HOST:PORT"; it requires the bearer token named by token_credential.
    listen: str | None = None
    token_credential: str = "api-token"


class LogSettings(_Section):
    level: str = Field(default="info", pattern="^(debug|info|warning|error)$")


class CredentialSettings(_Section):
    # Where secrets are read from: systemd's $CREDENTIALS_DIRECTORY when set, else this directory.
    directory: Path = Path("/etc/baie/credentials")


class BmcSettings(_Section):
    """How the daemon talks to BMCs (Redfish and IPMI)."""

    redfish_scheme: str = Field(default="https", pattern="^(https|http)$")  # http: only for a lab
    redfish_port: int = Field(default=443, ge=1, le=65535)
    ipmi_port: int = Field(default=623, ge=1, le=65535)
    timeout_seconds: float = Field(default=10.0, gt=0)
    # Verify BMC certificates against this bundle; without one, certificates are pinned at enrolment
    # (trust on first use), when trust_on_first_use is true, and re-pinned only by `baie bmc trust NODE`.
    ca_bundle: Path | None = None
    trust_on_first_use: bool = True
    power_confirm_seconds: float = Field(default=30.0, gt=0)


class DiscoverySettings(_Section):
    interval_seconds: float = Field(default=3600.0, gt=0)  # scheduled sweep of every site's ranges
    concurrency: int = Field(default=512, ge=1, le=4096)
    probe_timeout_seconds: float = Field(default=2.0, gt=0)
    enrol_concurrency: int = Field(default=8, ge=1, le=256)


class PlacementSettings(_Section):
    """The placement check: switches' LLDP and forwarding tables against the racks' declared switches."""

    interval_seconds: float = Field(default=900.0, gt=0)
    timeout_seconds: float = Field(default=5.0, gt=0)  # each SNMP request to a switch


class TelemetrySettings(_Section):
    """The telemetry loop: every device on its own timer, readings written in batches, kept and rolled up."""

    enabled: bool = True
    sites: list[str] = []  # poll only the devices of these sites (hosts sharing a database); empty: every site
    bmc_interval_seconds: float = Field(default=60.0, gt=0)  # node BMCs (Redfish and IPMI)
    pdu_interval_seconds: float = Field(default=30.0, gt=0)
    cdu_interval_seconds: float = Field(default=10.0, gt=0)
    jitter: float = Field(default=0.1, ge=0, le=1)  # a poll starts up to jitter x interval after its slot
    request_timeout_seconds: float = Field(default=10.0, gt=0)  # each request to a device
    poll_timeout_seconds: float = Field(default=30.0, gt=0)  # one whole poll of a device (a Redfish walk)
    # polls (and so requests) in flight at once. With 10,000 BMCs answering in 20-100 ms, the event loop idled
    # waiting for replies at 256 (587 polls/s, its thread 83 % busy); 512 gave 646 and 1,024 673 (bench/)
    max_in_flight: int = Field(default=512, ge=1, le=4096)
    # SNMP polls in flight at once, apart: an SNMPv3 PDU's walks cost tens of ms of a poll worker's CPU, so
    # hundreds at once overran their deadlines waiting for it (bench/: 933 of 1,000 PDUs timed out at 256)
    snmp_in_flight: int = Field(default=32, ge=1, le=4096)
    # processes polling Redfish devices and SNMP PDUs, each with its own event loop, while the daemon's loop
    # schedules and writes (the key's old name, redfish_workers, is refused as unknown). One loop doing both
    # topped out near 650 polls/s at 10,000 BMCs (two HTTPS requests each); one worker did ~1,800 with the polls
    # spread over the interval, on 2 cores shared with the simulated fleet, where two workers did no better for
    # 12 % more CPU (bench/)
    poll_workers: int = Field(default=1, ge=1, le=64)
    failures_before_unreachable: int = Field(default=3, ge=1)  # consecutive failures before a BMC is marked
    refresh_seconds: float = Field(default=300.0, gt=0)  # reload the device list from the inventory
    batch_size: int = Field(default=5000, ge=1)  # readings per database write...
    flush_seconds: float = Field(default=5.0, gt=0)  # ...or fewer, once the oldest has waited this long
    rollup_interval_seconds: float = Field(default=300.0, gt=0)
    prune_interval_seconds: float = Field(default=86400.0, gt=0)
    raw_days: int = Field(default=7, ge=1)
    rollup_days: int = Field(default=365, ge=1)


class DaemonSettings(_Section):
    # Threads for the blocking calls (the ORM, sushy): the bound on how many run at once.
    workers: int = Field(default=16, ge=1, le=256)
    # Threads for pyghmi's calls, apart: one that hangs never takes a thread the database needs.
    ipmi_workers: int = Field(default=8, ge=1, le=256)


class ImageSettings(_Section):
    """An installer in the catalogue: kernel and initrd are local files (served by the boot service) or URLs."""

    family: Literal["debian", "ubuntu", "rocky", "alma"]
    kernel: str
    initrd: str
    repository: str  # the package mirror (Debian/Ubuntu archive, or the Rocky/Alma BaseOS tree)
    kernel_args: str = ""  # extra kernel arguments, e.g. Ubuntu's url=…live-server.iso


class ProfileSettings(_Section):
    image: str  # a key of provisioning.images
    pool: str = "default"
    # Run on the host over SSH to join it to the pool (the node is registered in our database regardless).
    join_command: str | None = None
    disks: int = Field(default=1, ge=0)  # disks the verification expects at least
    timezone: str = "UTC"


class ProvisioningTimeouts(_Section):
    """Seconds a node may wait in each state before it goes to that state's *_failed."""

    inspecting: float = Field(default=3600.0, gt=0)
    booting: float = Field(default=600.0, gt=0)
    installing: float = Field(default=3600.0, gt=0)
    verifying: float = Field(default=300.0, gt=0)
    deployed: float = Field(default=600.0, gt=0)
    draining: float = Field(default=1800.0, gt=0)
    cleaning: float = Field(default=7200.0, gt=0)


class ProvisioningSettings(_Section):
    # The boot service (iPXE scripts, installer configuration, callbacks, images) on the provisioning
    # network, "HOST:PORT", without the API's bearer token; base_url is how hosts reach it.
    listen: str | None = None
    base_url: str | None = None  # default: http://LISTEN
    hosts_directory: Path = Path("/var/lib/baie/dnsmasq-hosts")  # dnsmasq dhcp-hostsdir
    images: dict[str, ImageSettings] = {}
    profiles: dict[str, ProfileSettings] = {}
    token_ttl_seconds: float = Field(default=7200.0, gt=0)
    timeouts: ProvisioningTimeouts = ProvisioningTimeouts()
    parallel: int = Field(default=8, ge=1, le=256)  # provisionings this daemon runs at once
    ssh_user: str = "root"
    ssh_port: int = Field(default=22, ge=1, le=65535)
    ssh_key_credential: str = "ssh-provisioning"  # the private key; its public half goes into the installs
    ssh_timeout_seconds: float = Field(default=30.0, gt=0)  # connecting, and each command
    drain_command: str | None = None  # default: no libvirt domain may be running
    erase_command: str = "blkdiscard --force /dev/{disk}"  # for each disk of the host
    erase_verify_command: str = "cmp --bytes=16777216 /dev/{disk} /dev/zero"  # exit 0: reads back zeroes

    @model_validator(mode="after")
    def _profiles_name_images(self) -> ProvisioningSettings:
        for name, profile in self.profiles.items():
            if profile.image not in self.images:
                raise ValueError(f"profiles.{name}.image: no image {profile.image!r} in provisioning.images")
        return self


# "90s", "5m", "2h", "7d", or a number of seconds
Duration = Annotated[timedelta, BeforeValidator(lambda v: parse_duration(v) if isinstance(v, str) else v)]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]


class BuiltinRuleSettings(_Section):
    """``[alerts.builtin.NAME]``: a built-in rule's severity and threshold (see inventory.alerts.BUILTIN_RULES)."""

    enabled: bool = True
    severity: Severity | None = None
    threshold: float | None = None


class UserRule(_Section):
    """``[[alerts.rules]]``: fires while the latest value of a metric's series compares true with threshold."""

    name: Name
    metric: str
    match: dict[str, str] = {}  # label matchers: only series with these label values
    op: Literal[">", ">=", "<", "<=", "==", "!="] = ">"
    threshold: float
    for_: Duration = Field(default=timedelta(0), alias="for")
    severity: Severity = Severity.WARNING
    labels: dict[str, str] = {}  # added to the alert's labels
    summary: str = "{rule}: {value:g}"  # str.format with the labels and {value}

    @model_validator(mode="after")
    def _summary_renders(self) -> UserRule:
        try:
            render_summary(self.summary, {}, 0.0)
        except (ValueError, IndexError, AttributeError) as exc:
            raise ValueError(f"summary {self.summary!r}: {exc}") from None
        return self


class AlertSettings(_Section):
    interval: Duration = timedelta(seconds=30)  # rule evaluation; a "poll" of bmc_unreachable
    group_by: tuple[str, ...] = ("rule", "site")
    group_wait: Duration = timedelta(seconds=30)
    group_interval: Duration = timedelta(minutes=5)
    repeat_interval: Duration = timedelta(hours=4)
    flap_window: Duration = timedelta(hours=1)
    flap_threshold: int = Field(default=4, ge=2)
    builtin: dict[str, BuiltinRuleSettings] = {}
    rules: list[UserRule] = []
    leak_policy: dict[str, LeakPolicy] = {}  # "SITE/LOOP" or "LOOP" -> none | cordon | power-off

    @model_validator(mode="after")
    def _known_names(self) -> AlertSettings:
        if unknown := set(self.builtin) - set(BUILTIN_RULES):
            raise ValueError(f"no built-in rule {', '.join(sorted(unknown))} (there are {', '.join(BUILTIN_RULES)})")
        names = [rule.name for rule in self.rules]
        if clash := {n for n in names if n in BUILTIN_RULES or names.count(n) > 1}:
            raise ValueError(f"rule name {', '.join(sorted(clash))} is taken")
        return self

    @property
    def policy(self) -> Policy:
        return Policy(self.group_by, self.group_wait, self.group_interval, self.repeat_interval, self.flap_window,
                      self.flap_threshold)


class WebhookSettings(_Section):
    """``[[webhooks]]``: a target notifications are delivered to, signed the Standard Webhooks way."""

    name: Name
    url: str = Field(pattern=r"^https?://")
    secret_credential: str  # a credential file: "whsec_" + base64 key, or any other text used as raw bytes
    format: Literal["baie", "alertmanager"] = "baie"
    max_attempts: int = Field(default=12, ge=1)  # then dead-lettered
    backoff: Duration = timedelta(seconds=10)  # before the first retry; doubled each time, with jitter
    max_backoff: Duration = timedelta(minutes=30)


class Settings(_Section):
    daemon: DaemonSettings = DaemonSettings()
    database: DatabaseSettings = DatabaseSettings()
    api: ApiSettings = ApiSettings()
    log: LogSettings = LogSettings()
    credentials: CredentialSettings = CredentialSettings()
    bmc: BmcSettings = BmcSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    placement: PlacementSettings = PlacementSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    alerts: AlertSettings = AlertSettings()
    webhooks: list[WebhookSettings] = []

    @model_validator(mode="after")
    def _unique_webhooks(self) -> Settings:
        names = [target.name for target in self.webhooks]
        if duplicates := {n for n in names if names.count(n) > 1}:
            raise ValueError(f"webhooks: target name {', '.join(sorted(duplicates))} is used twice")
        return self


def load_settings(path: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read ``path`` (or /etc/baie/baie.toml when it exists, else defaults) and apply the environment."""
    env = os.environ if env is None else env
    data: dict = {}
    source = path or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    if source is not None:
        try:
            data = tomllib.loads(source.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such file") from None
        except PermissionError:
            raise ConfigError(f"{source}: not readable by this user") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    if env.get("BAIE_DATABASE_URL"):
        data.setdefault("database", {})
        if isinstance(data["database"], dict):
            data["database"] = {**data["database"], "url": env["BAIE_DATABASE_URL"]}
    if env.get("CREDENTIALS_DIRECTORY"):
        data.setdefault("credentials", {})
        if isinstance(data["credentials"], dict):
            data["credentials"] = {**data["credentials"], "directory": env["CREDENTIALS_DIRECTORY"]}
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        where = source or "settings"
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r}")
            else:
                problems.append(f"{key}: {err['msg']}")
        raise ConfigError(f"{where}: " + "; ".join(problems)) from None

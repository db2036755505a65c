"""What the service layer hands out: plain, serialisable read models shared by the CLI, the API and the daemon."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class SiteView(BaseModel):
    name: str
    country_code: str
    jurisdiction: str
    role: str
    description: str | None = None
    locations: list[str] = []
    racks: int = 0
    nodes: int = 0


class FeedView(BaseModel):
    panel: str
    name: str
    side: str
    voltage: float
    amperage: float
    phase: str
    max_utilization: float
    capacity_watts: float


class RackView(BaseModel):
    site: str
    location: str
    name: str
    u_height: int
    power_budget_watts: float | None
    cooling_loop: str | None
    switch_name: str | None = None
    feeds: list[FeedView] = []
    u_used: int = 0
    nodes: int = 0


class UnitView(BaseModel):
    """One U of an elevation, top to bottom; ``node`` is None where the U is free."""

    u: int
    node: str | None = None
    serial: str | None = None
    face: str | None = None
    is_base: bool = False  # the node's lowest U (its ``position``)


class OutletView(BaseModel):
    index: int
    name: str | None
    feed: str | None
    node: str | None
    psu: str | None


class PduView(BaseModel):
    site: str
    name: str
    rack: str | None
    feed: str | None
    address: str | None
    protocol: str
    port: int | None = None
    outlets: list[OutletView] = []


class RackDetail(RackView):
    elevation: list[UnitView] = []
    pdus: list[PduView] = []


class ComponentsView(BaseModel):
    processors: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    drives: list[dict[str, Any]] = []
    nics: list[dict[str, Any]] = []


class NodeView(BaseModel):
    name: str | None
    serial: str | None
    uuid: str | None
    site: str | None
    rack: str | None
    position: int | None
    u_height: int
    face: str
    manufacturer: str | None
    model: str | None
    asset_tag: str | None
    state: str
    power_state: str | None
    bmc_address: str | None
    bmc_protocol: str | None
    bmc_state: str

    @property
    def label(self) -> str:
        return self.name or self.serial or self.uuid or self.bmc_address or "?"


class NodeDetail(NodeView):
    bmc_port: int | None = None
    bmc_tls_fingerprint: str | None = None
    credential_ref: str | None = None
    bios_version: str | None = None
    bmc_firmware: str | None = None
    expected_power_watts: float | None = None
    processor_count: int = 0
    memory_total_mib: int = 0
    components: ComponentsView = ComponentsView()
    created_at: datetime
    updated_at: datetime


class CoolingLoopView(BaseModel):
    site: str
    name: str
    cooling_unit: str
    racks: list[str] = []


class EventView(BaseModel):
    id: int
    time: datetime
    kind: str
    subject: str
    actor: str
    message: str
    details: dict[str, Any] = {}


class FeedPowerView(BaseModel):
    feed: str  # "PANEL/FEED"
    side: str
    capacity_watts: float
    draw_watts: float | None = None  # None: nothing fresh was reported on this feed
    headroom_watts: float | None = None


class RackPowerView(BaseModel):
    """Measured draw of a rack against its budget and feeds; every measured figure is None when unreported."""

    site: str
    rack: str
    source: str  # "outlets" | "psu" | "none": where draw_watts comes from
    draw_watts: float | None = None
    reporting: int = 0  # outlets (or PSUs and nodes) whose fresh readings make up draw_watts
    budget_watts: float | None = None
    headroom_watts: float | None = None  # budget − draw
    feeds: list[FeedPowerView] = []
    redundant: bool | None = None  # the whole draw fits the other side's feeds when either side is lost


class PumpView(BaseModel):
    name: str
    ok: bool


class LoopCoolingView(BaseModel):
    site: str
    loop: str
    cooling_unit: str
    supply_temperature_c: float | None = None
    return_temperature_c: float | None = None
    delta_t_c: float | None = None  # return − supply
    flow_lpm: float | None = None
    heat_removed_kw: float | None = None  # computed from flow and delta-T
    supply_temperature_max_c: float | None = None
    flow_min_lpm: float | None = None
    pumps: list[PumpView] = []
    leak: bool | None = None  # None: no leak detector reported
    leak_detectors: list[str] = []  # those reporting a leak
    racks: list[str] = []
    nodes: list[str] = []
    warnings: list[str] = []  # inventory.telemetry.CoolingWarning values


class SiteTotalsView(BaseModel):
    site: str
    racks: int = 0
    racks_reporting: int = 0
    draw_watts: float | None = None  # sum over the racks reporting
    budget_watts: float | None = None  # sum over the racks with a budget
    racks_over_budget: list[str] = []
    racks_not_redundant: list[str] = []
    loops: int = 0
    loops_reporting: int = 0  # loops whose heat removed could be computed
    heat_removed_kw: float | None = None
    loops_in_leak: list[str] = []
    loops_with_warnings: list[str] = []

"""Import a datacenter description (YAML; JSON is read as YAML) into the inventory.

The document is ``sites:`` with, per site, its locations, discovery ranges, cooling units and their loops,
power panels and their feeds, switches, racks, PDUs and their outlets, and the declared nodes (see
tests/data/example.yaml). ``baie export --format yaml`` writes the same shape.

Rules:

* All or nothing: the file is read with a safe loader, validated row by row, then applied in one
  transaction; any problem and nothing is written. Every problem found is reported as
  ``file:line: field: message``.
* Upsert by natural key: site name; location, cooling unit, cooling loop, switch, rack, power panel and PDU
  name within their site; feed name within its panel; outlet index within its PDU; node serial. Importing the
  same file twice changes nothing the second time, and a no-op import records no event.
* A key the file gives is applied; a key it leaves out keeps the stored value (a new row takes the column
  default), so that a declaration does not erase what discovery found. Two exceptions, because the file
  declares them in full: a node's placement (no ``rack`` means not in a rack; ``u_height`` 1 and ``face``
  front by default) and an outlet's feed (its PDU's unless given).
* Rows in the database that the file does not mention are left alone: nothing is deleted.
* New nodes are ``planned``; a node already known by its serial (discovered) keeps its state.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    StringConstraints,
    ValidationError,
)
from sqlmodel import Session, SQLModel, select

from inventory.errors import Conflict, Invalid, InventoryError, NotFound
from inventory.model import (
    BmcProtocol,
    CoolingLoop,
    CoolingUnit,
    DeviceProtocol,
    DiscoveryRange,
    Face,
    FeedPhase,
    FeedSide,
    Location,
    Node,
    NodeState,
    Pdu,
    PduOutlet,
    PowerFeed,
    PowerPanel,
    Rack,
    Site,
    SiteRole,
    Switch,
)
from inventory.service import Inventory

DocPath = tuple[str | int, ...]  # where a value sits in the document: ("sites", 0, "racks", 1, "name")


# ------------------------------------------------------------------------------------------ errors
@dataclass(frozen=True)
class ImportProblem:
    file: str
    line: int
    field: str  # e.g. "sites[0].racks[1].position"; "(yaml)" for a syntax error
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class ImportFailed(InventoryError):
    """The file was refused and nothing was written; ``problems`` lists every reason, one per line of the message."""

    def __init__(self, problems: list[ImportProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# ------------------------------------------------------------------------------------------ schema
def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value))
    except ValueError as exc:
        raise ValueError(f"not a network in CIDR notation: {exc}") from None


def _matching(pattern: str, meaning: str) -> AfterValidator:
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(f"must be {meaning}")
        return value
    return AfterValidator(check)


Name = Annotated[str, StringConstraints(min_length=1, max_length=64),
                 _matching(r"[^/\s]+", "a name without spaces or '/'")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Address = Annotated[str, StringConstraints(min_length=1, max_length=253),
                    _matching(r"\S+", "an IP address or a DNS name")]
Port = Annotated[int, Field(ge=1, le=65535)]
# A credential is named, never given: the secret lives with the daemon.
CredentialRef = Annotated[str, StringConstraints(max_length=64),
                          _matching(r"[A-Za-z0-9][A-Za-z0-9._-]*", "the name of a credential, not a secret")]
CountryCode = Annotated[str, _matching(r"[A-Z]{2}", "an ISO 3166-1 alpha-2 code (two capital letters)")]
Cidr = Annotated[str, AfterValidator(_cidr)]
FeedRef = Annotated[str, _matching(r"[^/\s]+/[^/\s]+", "PANEL/FEED, e.g. pp-a/A01")]


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Defaults mirror the columns' so that a missing key and a new row agree.
class LocationRow(_Row):
    name: Name


class DiscoveryRow(_Row):
    cidr: Cidr
    protocols: Annotated[list[BmcProtocol], Field(min_length=1)] = [BmcProtocol.REDFISH, BmcProtocol.IPMI]


class LoopRow(_Row):
    name: Name
    supply_temperature_max_c: float | None = None
    flow_min_lpm: PositiveFloat | None = None


class CoolingUnitRow(_Row):
    name: Name
    location: Name | None = None
    address: Address | None = None
    protocol: DeviceProtocol = DeviceProtocol.REDFISH
    port: Port | None = None
    credential: CredentialRef | None = None
    loops: list[LoopRow] = []


class FeedRow(_Row):
    name: Name
    side: FeedSide
    rack: Name | None = None
    voltage: PositiveFloat = 230.0  # line to line on three phase (400 in Europe)
    amperage: PositiveFloat = 16.0
    phase: FeedPhase = FeedPhase.SINGLE
    max_utilization: Annotated[float, Field(gt=0, le=100)] = 80.0


class PanelRow(_Row):
    name: Name
    location: Name | None = None
    feeds: list[FeedRow] = []


class SwitchRow(_Row):
    name: Name
    address: Address | None = None
    protocol: Literal[DeviceProtocol.SNMP] = DeviceProtocol.SNMP  # LLDP and the FDB are read over SNMP
    port: Port | None = None
    credential: CredentialRef | None = None
    insecure_community_waiver: bool = False


class RackRow(_Row):
    name: Name
    location: Name
    u_height: PositiveInt = 42
    power_budget_watts: PositiveFloat | None = None
    cooling_loop: Name | None = None
    switch: Label | None = None


class OutletRow(_Row):
    index: PositiveInt
    name: Label | None = None
    feed: FeedRef | None = None
    node: Label | None = None  # the node's serial
    psu: Label | None = None


class PduRow(_Row):
    name: Name
    rack: Name | None = None
    feed: FeedRef | None = None
    address: Address | None = None
    protocol: DeviceProtocol = DeviceProtocol.SNMP
    port: Port | None = None
    credential: CredentialRef | None = None
    insecure_community_waiver: bool = False
    outlets: list[OutletRow] = []


class NodeRow(_Row):
    serial: Label
    name: Label | None = None
    rack: Name | None = None
    position: PositiveInt | None = None
    u_height: PositiveInt = 1
    face: Face = Face.FRONT
    asset_tag: Label | None = None
    manufacturer: Text | None = None
    model: Text | None = None
    expected_power_watts: PositiveFloat | None = None


class SiteRow(_Row):
    name: Name
    country_code: CountryCode  # ISO 3166-1 alpha-2
    jurisdiction: Text
    role: SiteRole
    description: str | None = None
    locations: list[LocationRow] = []
    discovery: list[DiscoveryRow] = []
    cooling_units: list[CoolingUnitRow] = []
    power_panels: list[PanelRow] = []
    switches: list[SwitchRow] = []
    racks: list[RackRow] = []
    pdus: list[PduRow] = []
    nodes: list[NodeRow] = []


class Document(_Row):
    sites: list[SiteRow]


CHILDREN = {"locations", "discovery", "cooling_units", "loops", "power_panels", "feeds", "switches", "racks",
            "pdus", "outlets", "nodes"}
COLUMNS = {"credential": "credential_ref", "switch": "switch_name"}  # document key → column, where they differ


# --------------------------------------------------------------------------------------------- result
KINDS = ("site", "location", "discovery_range", "cooling_unit", "cooling_loop", "switch", "rack", "power_panel",
         "power_feed", "pdu", "outlet", "node")


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class ImportSummary:
    source: str
    counts: dict[str, Counts] = field(default_factory=lambda: {kind: Counts() for kind in KINDS})

    @property
    def changed(self) -> bool:
        return any(c.created or c.updated for c in self.counts.values())

    def totals(self) -> Counts:
        counts = self.counts.values()
        return Counts(sum(c.created for c in counts), sum(c.updated for c in counts), sum(c.unchanged for c in counts))

    def __str__(self) -> str:
        t = self.totals()
        lines = [f"{self.source}: {t.created} created, {t.updated} updated, {t.unchanged} unchanged"]
        lines += [f"  {kind}: {c.created} created, {c.updated} updated, {c.unchanged} unchanged"
                  for kind, c in self.counts.items() if c.created or c.updated or c.unchanged]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- entry
def import_file(inventory: Inventory, path: Path, actor: str) -> ImportSummary:
    """Import ``path``; raises ImportFailed (nothing written) or OSError if it cannot be read."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportFailed([ImportProblem(str(path), line, "(file)", "not UTF-8 text")]) from None
    return import_text(inventory, text, str(path), actor)


def import_text(inventory: Inventory, text: str, source_name: str, actor: str) -> ImportSummary:
    """Import a document; ``source_name`` names it in problems and events, ``actor`` in events."""
    data, lines = _load(text, source_name)
    try:
        document = Document.model_validate(data)
    except ValidationError as exc:
        raise ImportFailed([_schema_problem(source_name, lines, e) for e in exc.errors()]) from None
    problems = [ImportProblem(source_name, _line(lines, path), _field(path), message)
                for path, message in _duplicates(document)]
    if problems:
        raise ImportFailed(problems)
    with inventory.session() as session:
        run = _Apply(session, source_name, lines, actor)
        run.document(document)
        if run.problems:
            raise ImportFailed(run.problems)
        run.record()
    return run.summary


# ----------------------------------------------------------------------------------------------- YAML
def _load(text: str, source: str) -> tuple[Any, dict[DocPath, int]]:
    """The document as plain data, and the line (1-based) of every key and list item in it."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ImportFailed([ImportProblem(source, 1, "(document)", "the file is empty")])
        lines: dict[DocPath, int] = {(): node.start_mark.line + 1}
        problems: list[ImportProblem] = []
        _walk(node, (), lines, problems, source, set())
        if problems:
            raise ImportFailed(problems)
        # The safe constructor refuses tags such as !!python/object with a ConstructorError.
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"{problem} ({context})" if context else problem
        raise ImportFailed([ImportProblem(source, mark.line + 1 if mark else 1, "(yaml)", message)]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ImportFailed([ImportProblem(source, lines[()], "(document)",
                                          f"the document must be a mapping with a 'sites' key, "
                                          f"not a {type(data).__name__}")])
    return data, lines


def _walk(node: yaml.Node, path: DocPath, lines: dict[DocPath, int], problems: list[ImportProblem], source: str,
          seen: set[int]) -> None:
    # An alias is the same node object again; refusing them keeps the walk linear (no "billion laughs")
    # and finite (no recursive documents). Nothing in an inventory needs them.
    if id(node) in seen:
        problems.append(ImportProblem(source, lines[path], _field(path),
                                      "anchors and aliases are not supported: write the value out"))
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = path + (str(key_node.value),)
            if child in lines:
                problems.append(ImportProblem(source, key_node.start_mark.line + 1, _field(child),
                                              f"duplicate key (first on line {lines[child]})"))
                continue
            lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines, problems, source, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            _walk(item, path + (index,), lines, problems, source, seen)


def _line(lines: dict[DocPath, int], path: DocPath) -> int:
    """The line of ``path``, or of its nearest ancestor in the file (a missing key: the row that lacks it)."""
    while path not in lines:
        path = path[:-1]
    return lines[path]


def _field(path: DocPath) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return text or "(document)"


def _schema_problem(source: str, lines: dict[DocPath, int], error: Any) -> ImportProblem:
    path = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required"
    else:
        message = str(error["ctx"]["error"]) if kind == "value_error" else error["msg"]
        if not isinstance(error["input"], (dict, list)) and str(error["input"]) not in message:
            message += f", got {error['input']!r}"
    return ImportProblem(source, _line(lines, path), _field(path), message)


def _duplicates(doc: Document) -> list[tuple[DocPath, str]]:
    """Keys the file gives twice: names within their scope, outlet indexes, node serials, names and tags."""
    found: list[tuple[DocPath, str]] = []

    def check(rows: list[tuple[DocPath, Any]], what: str) -> None:
        first: dict[Any, DocPath] = {}
        for path, value in rows:
            if value is None:
                continue
            if value in first:
                found.append((path, f"{what} {value!r} is already used at {_field(first[value])}"))
            else:
                first[value] = path

    def rows(items: list[BaseModel], base: DocPath, key: str) -> list[tuple[DocPath, Any]]:
        return [(base + (i, key), getattr(item, key)) for i, item in enumerate(items)]

    sites: DocPath = ("sites",)
    check(rows(doc.sites, sites, "name"), "site")
    for s, site in enumerate(doc.sites):
        at = sites + (s,)
        check(rows(site.locations, at + ("locations",), "name"), "location")
        check(rows(site.discovery, at + ("discovery",), "cidr"), "discovery range")
        check(rows(site.cooling_units, at + ("cooling_units",), "name"), "cooling unit")
        check([row for u, unit in enumerate(site.cooling_units)
               for row in rows(unit.loops, at + ("cooling_units", u, "loops"), "name")], "cooling loop")
        check(rows(site.power_panels, at + ("power_panels",), "name"), "power panel")
        for p, panel in enumerate(site.power_panels):
            check(rows(panel.feeds, at + ("power_panels", p, "feeds"), "name"), "feed")
        check(rows(site.switches, at + ("switches",), "name"), "switch")
        check(rows(site.racks, at + ("racks",), "name"), "rack")
        check(rows(site.pdus, at + ("pdus",), "name"), "PDU")
        for p, pdu in enumerate(site.pdus):
            check(rows(pdu.outlets, at + ("pdus", p, "outlets"), "index"), "outlet index")
    for key, what in (("serial", "serial"), ("name", "node name"), ("asset_tag", "asset tag")):
        check([row for s, site in enumerate(doc.sites) for row in rows(site.nodes, sites + (s, "nodes"), key)],
              what)
    return found


# ---------------------------------------------------------------------------------------------- apply
class _RowError(Exception):
    def __init__(self, path: DocPath, message: str) -> None:
        self.path = path
        self.message = message


def _given(row: _Row, *exclude: str) -> dict[str, Any]:
    """The keys the file gives for ``row``, as column names and values."""
    values = row.model_dump(mode="json", include=row.model_fields_set - CHILDREN - set(exclude))
    return {COLUMNS.get(key, key): value for key, value in values.items()}


@dataclass
class _Move:
    node: Node
    site: Site
    rack: Rack | None
    row: NodeRow
    path: DocPath
    before: str


class _Apply:
    """Applies a validated document in one session, collecting the problems it meets on the way."""

    def __init__(self, session: Session, source: str, lines: dict[DocPath, int], actor: str) -> None:
        self.s = session
        self.source = source
        self.lines = lines
        self.actor = actor
        self.summary = ImportSummary(source)
        self.problems: list[ImportProblem] = []
        self.placed: list[tuple[Node, str, str]] = []

    def document(self, doc: Document) -> None:
        # Nodes after every site's racks (a node may move between sites), outlets after the nodes they feed.
        sites = [(("sites", i), row, self.site(("sites", i), row)) for i, row in enumerate(doc.sites)]
        self.nodes([(path + ("nodes", i), site, node) for path, row, site in sites
                    for i, node in enumerate(row.nodes)])
        for path, row, site in sites:
            for i, pdu in enumerate(row.pdus):
                self.attempt(self.pdu, path + ("pdus", i), site, pdu)

    def attempt(self, step, path: DocPath, *args) -> Any:
        """Run one row's step; a problem skips that row (and its children) and is reported."""
        try:
            return step(path, *args)
        except _RowError as exc:
            self.problems.append(ImportProblem(self.source, _line(self.lines, exc.path), _field(exc.path),
                                               exc.message))
            return None

    def upsert(self, kind: str, model: type[SQLModel], key: dict[str, Any], values: dict[str, Any]) -> Any:
        row = self.s.exec(select(model).filter_by(**key)).first()
        counts = self.summary.counts[kind]
        if row is None:
            row = model(**key, **values)
            self.s.add(row)
            self.s.flush()  # its id keys the children
            counts.created += 1
            return row
        changed = {k: v for k, v in values.items() if getattr(row, k) != v}
        for k, v in changed.items():
            setattr(row, k, v)
        if changed:
            counts.updated += 1
        else:
            counts.unchanged += 1
        return row

    # ------------------------------------------------------------------------------- references
    def ref(self, model: type[SQLModel], site: Site, name: str | None, path: DocPath, what: str) -> int | None:
        if name is None:
            return None
        row = self.s.exec(select(model).filter_by(site_id=site.id, name=name)).first()
        if row is None:
            raise _RowError(path, f"no {what} {name!r} in site {site.name}")
        return row.id

    def rack(self, site: Site, name: str | None, path: DocPath) -> Rack | None:
        if name is None:
            return None
        try:
            return Inventory.rack_by_ref(self.s, name, site.name)
        except NotFound:
            raise _RowError(path, f"no rack {name!r} in site {site.name}") from None

    def feed(self, site: Site, ref: str | None, path: DocPath) -> int | None:
        if ref is None:
            return None
        panel, name = ref.split("/")
        feed = self.s.exec(select(PowerFeed).join(PowerPanel).where(
            PowerPanel.site_id == site.id, PowerPanel.name == panel, PowerFeed.name == name)).first()
        if feed is None:
            raise _RowError(path, f"no feed {ref!r} in site {site.name}")
        return feed.id

    # ------------------------------------------------------------------------------------ steps
    def site(self, path: DocPath, row: SiteRow) -> Site:
        site = self.upsert("site", Site, {"name": row.name}, _given(row, "name"))
        for loc in row.locations:
            self.upsert("location", Location, {"site_id": site.id, "name": loc.name}, {})
        for rng in row.discovery:
            self.upsert("discovery_range", DiscoveryRange, {"site_id": site.id, "cidr": rng.cidr},
                        {"protocols": ",".join(rng.protocols)} if "protocols" in rng.model_fields_set else {})
        for i, unit in enumerate(row.cooling_units):
            self.attempt(self.cooling_unit, path + ("cooling_units", i), site, unit)
        for switch in row.switches:
            self.upsert("switch", Switch, {"site_id": site.id, "name": switch.name}, _given(switch, "name"))
        for i, rack in enumerate(row.racks):
            self.attempt(self.rack_row, path + ("racks", i), site, rack)
        for i, panel in enumerate(row.power_panels):
            self.attempt(self.panel, path + ("power_panels", i), site, panel)
        return site

    def cooling_unit(self, path: DocPath, site: Site, row: CoolingUnitRow) -> None:
        values = _given(row, "name", "location")
        if "location" in row.model_fields_set:
            values["location_id"] = self.ref(Location, site, row.location, path + ("location",), "location")
        unit = self.upsert("cooling_unit", CoolingUnit, {"site_id": site.id, "name": row.name}, values)
        for loop in row.loops:
            self.upsert("cooling_loop", CoolingLoop, {"site_id": site.id, "name": loop.name},
                        {"cooling_unit_id": unit.id, **_given(loop, "name")})

    def rack_row(self, path: DocPath, site: Site, row: RackRow) -> None:
        values = _given(row, "name", "location", "cooling_loop")
        values["location_id"] = self.ref(Location, site, row.location, path + ("location",), "location")
        if "cooling_loop" in row.model_fields_set:
            values["cooling_loop_id"] = self.ref(CoolingLoop, site, row.cooling_loop, path + ("cooling_loop",),
                                                 "cooling loop")
        self.ref(Switch, site, row.switch, path + ("switch",), "switch")
        self.upsert("rack", Rack, {"site_id": site.id, "name": row.name}, values)

    def panel(self, path: DocPath, site: Site, row: PanelRow) -> None:
        values = {}
        if "location" in row.model_fields_set:
            values["location_id"] = self.ref(Location, site, row.location, path + ("location",), "location")
        panel = self.upsert("power_panel", PowerPanel, {"site_id": site.id, "name": row.name}, values)
        for i, feed in enumerate(row.feeds):
            self.attempt(self.feed_row, path + ("feeds", i), site, panel, feed)

    def feed_row(self, path: DocPath, site: Site, panel: PowerPanel, row: FeedRow) -> None:
        values = _given(row, "name", "rack")
        if "rack" in row.model_fields_set:
            rack = self.rack(site, row.rack, path + ("rack",))
            values["rack_id"] = rack.id if rack else None
        self.upsert("power_feed", PowerFeed, {"power_panel_id": panel.id, "name": row.name}, values)

    def pdu(self, path: DocPath, site: Site, row: PduRow) -> None:
        values = _given(row, "name", "rack", "feed")
        if "rack" in row.model_fields_set:
            rack = self.rack(site, row.rack, path + ("rack",))
            values["rack_id"] = rack.id if rack else None
        if "feed" in row.model_fields_set:
            values["power_feed_id"] = self.feed(site, row.feed, path + ("feed",))
        pdu = self.upsert("pdu", Pdu, {"site_id": site.id, "name": row.name}, values)
        for i, outlet in enumerate(row.outlets):
            self.attempt(self.outlet, path + ("outlets", i), site, pdu, outlet)

    def outlet(self, path: DocPath, site: Site, pdu: Pdu, row: OutletRow) -> None:
        values = _given(row, "index", "feed", "node")
        values["power_feed_id"] = self.feed(site, row.feed, path + ("feed",)) if row.feed else pdu.power_feed_id
        if row.node is not None:
            node = self.s.exec(select(Node).where(Node.serial == row.node)).first()
            if node is None:
                raise _RowError(path + ("node",), f"no node with serial {row.node!r}")
            values["node_id"] = node.id
        elif "node" in row.model_fields_set:
            values["node_id"] = None
        self.upsert("outlet", PduOutlet, {"pdu_id": pdu.id, "index": row.index}, values)

    # ------------------------------------------------------------------------------------ nodes
    def nodes(self, rows: list[tuple[DocPath, Site, NodeRow]]) -> None:
        moves = [move for path, site, row in rows if (move := self.attempt(self.node, path, site, row))]
        # Free every moving node's units before placing any, so that nodes may swap or shift positions.
        for move in moves:
            Inventory.place_node(self.s, move.node, None, None)
        for move in moves:
            self.attempt(self.place, move.path, move)

    def node(self, path: DocPath, site: Site, row: NodeRow) -> _Move | None:
        """Create or update the node; returns the move to make if its placement changes."""
        node = self.s.exec(select(Node).where(Node.serial == row.serial)).first()
        values = _given(row, "serial", "rack", "position", "u_height", "face")
        for column in ("name", "asset_tag"):
            value = values.get(column)
            other = value and self.s.exec(select(Node).where(getattr(Node, column) == value)).first()
            if other and other.serial != row.serial:
                raise _RowError(path + (column,), f"{value!r} is already the {column} of node "
                                                  f"{other.serial or other.id}")
        if row.position is not None and row.rack is None:
            raise _RowError(path + ("position",), "a position needs a rack")
        rack = self.rack(site, row.rack, path + ("rack",))
        counts = self.summary.counts["node"]
        if node is None:
            node = Node(serial=row.serial, site_id=site.id, state=NodeState.PLANNED, **values)
            self.s.add(node)
            counts.created += 1
            return _Move(node, site, rack, row, path, self.where(node))
        changed = {k: v for k, v in values.items() if getattr(node, k) != v}
        for k, v in changed.items():
            setattr(node, k, v)
        target = (site.id, rack and rack.id, row.position, row.u_height, row.face)
        moves = target != (node.site_id, node.rack_id, node.position, node.u_height, node.face)
        if changed or moves:
            counts.updated += 1
        else:
            counts.unchanged += 1
        return _Move(node, site, rack, row, path, self.where(node)) if moves else None

    def place(self, path: DocPath, move: _Move) -> None:
        row = move.row
        try:
            Inventory.place_node(self.s, move.node, move.rack, row.position, row.u_height, row.face)
        except Invalid as exc:
            raise _RowError(path + (exc.field,), str(exc).removeprefix(f"{exc.field}: ")) from None
        except Conflict as exc:
            raise _RowError(path + ("position",), str(exc)) from None
        if move.rack is None:
            move.node.site_id = move.site.id
        after = self.where(move.node)
        if after != move.before:
            self.placed.append((move.node, move.before, after))

    def where(self, node: Node) -> str:
        if node.rack_id is None:
            site = self.s.get(Site, node.site_id) if node.site_id else None
            return f"{site.name}, not in a rack" if site else "not in a rack"
        rack = self.s.get(Rack, node.rack_id)
        site = self.s.get(Site, rack.site_id)
        top = node.position + node.u_height - 1
        units = f"U{node.position}" if top == node.position else f"U{node.position}-U{top}"
        return f"{site.name}/{rack.name} {units} {node.face}"

    # ----------------------------------------------------------------------------------- events
    def record(self) -> None:
        if not self.summary.changed:
            return
        for node, before, after in self.placed:
            Inventory.add_event(self.s, "node.placed", f"node/{node.serial}", f"{node.serial}: {before} → {after}",
                                self.actor, {"from": before, "to": after, "source": self.source})
        t = self.summary.totals()
        Inventory.add_event(
            self.s, "import.applied", f"import/{self.source}"[-128:],
            f"imported {self.source}: {t.created} created, {t.updated} updated, {t.unchanged} unchanged",
            self.actor, {kind: vars(c) for kind, c in self.summary.counts.items()},
        )

"""The inventory commands of ``baie``: read the inventory, import and export it, migrate the database.

The console script is ``daemon.cli:app``: it loads the settings and hands these commands a :class:`CliContext`
in ``ctx.obj`` (inventory never imports the daemon). Output is a rich table on a terminal, or JSON with
``--json``; every failure is one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import getpass
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from alembic.script import ScriptDirectory
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from inventory import db
from inventory.errors import InventoryError
from inventory.exporter import export
from inventory.importer import import_file
from inventory.service import Inventory
from inventory.telemetry import loop_cooling, rack_power
from inventory.views import FeedView, LoopCoolingView, NodeDetail, PduView, RackDetail, RackPowerView, UnitView


@dataclass(frozen=True)
class CliContext:
    """What the commands need from the settings; built by the entry point and passed in ``ctx.obj``."""

    database_url: str
    api_socket: Path


app = typer.Typer()  # merged into daemon.cli's app, which carries the help, the callback and the settings
rack_app = typer.Typer(help="One rack.", no_args_is_help=True)
node_app = typer.Typer(help="One node.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
app.add_typer(rack_app, name="rack")
app.add_typer(node_app, name="node")
app.add_typer(db_app, name="db")

Json = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")]
SiteOption = Annotated[str | None, typer.Option("--site", help="Only this site.")]


# ------------------------------------------------------------------------------------- plumbing
def fail(message: str, code: int = 1) -> NoReturn:
    """Report on stderr and exit. A message is one line, except an import's, which has a line per problem."""
    for line in message.splitlines():
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def shown(url: str) -> str:
    """A database URL as it may be printed: without its password."""
    return make_url(url).render_as_string(hide_password=True)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _schema_problem(url: str) -> str | None:
    """How the schema differs from this baie's, or None when it matches. Raises DBAPIError when unreachable."""
    script = ScriptDirectory.from_config(db.alembic_config(url))
    head, revision = script.get_current_head(), db.current_revision(url)
    if revision == head:
        return None
    if revision is None:
        return "is not migrated: run `baie db upgrade`"
    if revision not in {r.revision for r in script.walk_revisions()}:
        return f"is at revision {revision}, newer than this baie knows ({head}): upgrade baie"
    return f"is at revision {revision}, not the latest ({head}): run `baie db upgrade`"


def _database_problem(url: str, error: DBAPIError) -> str:
    """Explain a failed statement: a server we cannot reach, a schema unlike the code's, or the error itself."""
    try:
        problem = _schema_problem(url)
    except DBAPIError as unreachable:
        return f"cannot connect to the database {shown(url)}: {_first_line(unreachable.orig)}"
    return f"database {shown(url)} {problem}" if problem else f"database {shown(url)}: {_first_line(error.orig)}"


@contextmanager
def reporting(url: str) -> Iterator[None]:
    """Turn the errors an operator can act on into one line on stderr; anything else is a bug: a traceback."""
    try:
        yield
    except InventoryError as exc:
        fail(str(exc))
    except ArgumentError:
        # The message would quote the URL, password included.
        fail("the database URL is not valid (--database-url, BAIE_DATABASE_URL or database.url)")
    except DBAPIError as exc:
        fail(_database_problem(url, exc))
    except OSError as exc:
        fail(str(exc))


@contextmanager
def open_inventory(ctx: typer.Context) -> Iterator[Inventory]:
    url = ctx.obj.database_url
    with reporting(url):
        parsed = make_url(url)
        # SQLite would create an empty file (and its directory) for a mistyped path
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") \
                and not Path(parsed.database).exists():
            fail(f"no database at {parsed.database}: run `baie db upgrade` to create it")
        engine = db.make_engine(url)
        try:
            yield Inventory(engine)
        finally:
            engine.dispose()


def print_json(data: Any) -> None:
    """Views (or lists of them) as model_dump(mode="json") gives them, on stdout without colour."""
    typer.echo(json.dumps(to_jsonable_python(data), indent=2))


def show(*renderables: Any) -> None:
    # Names and fingerprints come from the inventory: a "[" must not be read as a style, nor ":cd:" as an emoji.
    console = Console(markup=False, emoji=False, highlight=False)
    for renderable in renderables:
        console.print(renderable)


def table(title: str | None, *columns: str, rows: Iterable[Sequence[Any]]) -> Table:
    result = Table(*columns, title=title, title_justify="left")
    for row in rows:
        result.add_row(*("" if cell is None else str(cell) for cell in row))
    return result


def details(rows: Iterable[tuple[str, Any]]) -> Table:
    """A key/value block; values not reported show as a dash."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows:
        grid.add_row(key, "—" if value in (None, "") else str(value))
    return grid


def units(position: int | None, height: int) -> str:
    if position is None:
        return ""
    return f"U{position}" if height == 1 else f"U{position}-U{position + height - 1}"


def watts(value: float | None) -> str | None:
    return None if value is None else f"{value:,.0f} W"


NOT_REPORTED = "not reported"  # a live figure nothing reported recently (inventory.telemetry.MAX_AGE)


def reported(value: float | None, unit: str, digits: int = 0) -> str:
    return NOT_REPORTED if value is None else f"{value:,.{digits}f} {unit}"


def redundancy(power: RackPowerView) -> str:
    return {None: NOT_REPORTED, True: "yes", False: "NO"}[power.redundant]


def leak(cooling: LoopCoolingView) -> str:
    if cooling.leak is None:
        return NOT_REPORTED
    return f"LEAK ({', '.join(cooling.leak_detectors)})" if cooling.leak else "none"


def feeds_summary(feeds: list[FeedView]) -> str:
    return ", ".join(f"{f.side} {watts(f.capacity_watts)}" for f in feeds)


def mib(value: int) -> str:
    return f"{value / 1024:g} GiB" if value >= 1024 else f"{value} MiB"


def capacity(value: int | None) -> str:
    if value is None:
        return "?"
    return f"{value / 1e12:.2f} TB" if value >= 1e12 else f"{value / 1e9:.0f} GB"


# ----------------------------------------------------------------------------------- listings
@app.command()
def sites(ctx: typer.Context, as_json: Json = False) -> None:
    """The sites, their rooms, racks and nodes."""
    with open_inventory(ctx) as inventory:
        views = inventory.sites()
    if as_json:
        return print_json(views)
    show(table(None, "Site", "Role", "Country", "Jurisdiction", "Locations", "Racks", "Nodes", "Description",
               rows=[(s.name, s.role, s.country_code, s.jurisdiction, ", ".join(s.locations), s.racks, s.nodes,
                      s.description) for s in views]))


@app.command()
def racks(ctx: typer.Context, site: SiteOption = None, as_json: Json = False) -> None:
    """The racks, with their power budget, feeds and cooling loop."""
    with open_inventory(ctx) as inventory:
        views = inventory.racks(site)
    if as_json:
        return print_json(views)
    show(table(None, "Site", "Rack", "Location", "U used", "Nodes", "Power budget", "Feeds", "Cooling loop",
               rows=[(r.site, r.name, r.location, f"{r.u_used}/{r.u_height}", r.nodes,
                      watts(r.power_budget_watts), feeds_summary(r.feeds), r.cooling_loop) for r in views]))


@app.command()
def nodes(ctx: typer.Context, site: SiteOption = None,
          rack: Annotated[str | None, typer.Option(help="Only this rack (NAME or SITE/NAME).")] = None,
          state: Annotated[str | None, typer.Option(help="Only nodes in this state, e.g. planned.")] = None,
          as_json: Json = False) -> None:
    """The nodes, highest U first within each rack."""
    with open_inventory(ctx) as inventory:
        views = inventory.nodes(site, rack, state)
    if as_json:
        return print_json(views)
    show(table(None, "Node", "Serial", "Site", "Rack", "U", "Face", "Model", "State", "Power", "BMC", "BMC state",
               rows=[(n.label, n.serial, n.site, n.rack, units(n.position, n.u_height), n.face, n.model, n.state,
                      n.power_state, n.bmc_protocol and f"{n.bmc_protocol} {n.bmc_address}", n.bmc_state)
                     for n in views]))


@app.command()
def pdus(ctx: typer.Context, site: SiteOption = None, as_json: Json = False) -> None:
    """The PDUs and what their outlets feed."""
    with open_inventory(ctx) as inventory:
        views = inventory.pdus(site)
    if as_json:
        return print_json(views)
    show(table(None, "Site", "Rack", *PDU_COLUMNS, rows=[(p.site, p.rack, *pdu_row(p)) for p in views]))


PDU_COLUMNS = ("PDU", "Feed", "Address", "Protocol", "Outlets used")


def pdu_row(p: PduView) -> tuple[Any, ...]:
    address = p.address and (f"{p.address}:{p.port}" if p.port else p.address)
    return p.name, p.feed, address, p.protocol, f"{sum(o.node is not None for o in p.outlets)}/{len(p.outlets)}"


@app.command("cooling-loops")
def cooling_loops(ctx: typer.Context, site: SiteOption = None, as_json: Json = False) -> None:
    """The cooling loops, their CDU and the racks they cool."""
    with open_inventory(ctx) as inventory:
        views = inventory.cooling_loops(site)
    if as_json:
        return print_json(views)
    show(table(None, "Site", "Loop", "CDU", "Racks",
               rows=[(c.site, c.name, c.cooling_unit, ", ".join(c.racks)) for c in views]))


_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime) -> datetime:
    """``30m``, ``1h``, ``2d`` before ``now``, or an ISO time (UTC when it carries no offset, as in the API)."""
    if match := _DURATION.fullmatch(value.strip()):
        return now - timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since: {value!r} is neither a duration (30m, 1h, 2d) nor an ISO time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@app.command()
def events(ctx: typer.Context,
           since: Annotated[str | None, typer.Option(help="A duration (30m, 1h, 2d) or an ISO time (UTC by default).")]
           = None,
           subject: Annotated[str | None, typer.Option(help="Only this subject, e.g. node/SN123.")] = None,
           as_json: Json = False) -> None:
    """What changed, who did it and when; newest first."""
    try:
        start = parse_since(since, datetime.now(UTC)) if since else None
    except ValueError as exc:
        fail(str(exc))
    with open_inventory(ctx) as inventory:
        views = inventory.events(start, subject)
    if as_json:
        return print_json(views)
    show(table(None, "Time", "Kind", "Subject", "Actor", "Message",
               rows=[(e.time.strftime("%Y-%m-%d %H:%M:%SZ"), e.kind, e.subject, e.actor, e.message)
                     for e in views]))


# --------------------------------------------------------------------------------------- detail
@rack_app.command("show")
def rack_show(ctx: typer.Context, rack: Annotated[str, typer.Argument(help="NAME or SITE/NAME.")],
              as_json: Json = False) -> None:
    """A rack's elevation, power feeds, cooling loop and PDUs, with its measured power and cooling."""
    with open_inventory(ctx) as inventory:
        detail = inventory.rack(rack)
        power = rack_power(inventory, f"{detail.site}/{detail.name}")[0]
        cooling = detail.cooling_loop and loop_cooling(inventory, f"{detail.site}/{detail.cooling_loop}")[0]
    if as_json:
        return print_json({**detail.model_dump(mode="json"), "power": power, "cooling": cooling})
    show(
        f"Rack {detail.site}/{detail.name}",
        details([("Location", detail.location),
                 ("Units", f"{detail.u_used} of {detail.u_height}U used by {detail.nodes} nodes"),
                 ("Power budget", watts(detail.power_budget_watts)),
                 ("Cooling loop", detail.cooling_loop),
                 ("Switch", detail.switch_name)]),
        table("Power feeds", "Side", "Feed", "Voltage", "Current", "Phase", "Max use", "Capacity",
              rows=[(f.side, f"{f.panel}/{f.name}", f"{f.voltage:g} V", f"{f.amperage:g} A", f.phase,
                     f"{f.max_utilization:g} %", watts(f.capacity_watts)) for f in detail.feeds]),
        live(power, cooling),
        table("Live power per feed", "Side", "Feed", "Draw", "Headroom",
              rows=[(f.side, f.feed, reported(f.draw_watts, "W"), reported(f.headroom_watts, "W"))
                    for f in power.feeds]),
        elevation(detail),
        table("PDUs", *PDU_COLUMNS, rows=[pdu_row(p) for p in detail.pdus]),
    )


def live(power: RackPowerView, cooling: LoopCoolingView | None) -> Table:
    """The rack's measured figures (inventory.telemetry), "not reported" where nothing fresh came in."""
    rows = [("Measured draw", reported(power.draw_watts, "W")),
            ("Source", f"{power.source} ({power.reporting} reporting)"),
            ("Headroom", reported(power.headroom_watts, "W") if power.budget_watts is not None else None),
            ("A/B redundant", redundancy(power))]
    if cooling:
        rows += [("Loop supply", reported(cooling.supply_temperature_c, "°C", 1)),
                 ("Loop return", reported(cooling.return_temperature_c, "°C", 1)),
                 ("Loop flow", reported(cooling.flow_lpm, "L/min", 1)),
                 ("Leak", leak(cooling))]
    return details(rows)


def elevation(detail: RackDetail) -> Table:
    """Top U first; a node taller than 1U is drawn as a bracket from its top U down to its base."""
    rows = []
    above: UnitView | None = None
    for unit in detail.elevation:
        if unit.node is None:
            rows.append((unit.u, "·", None, None))
        elif above is None or above.node != unit.node or above.is_base:
            mark = "" if unit.is_base else "┌ "
            rows.append((unit.u, f"{mark}{unit.node}", unit.serial, unit.face))
        else:
            rows.append((unit.u, "└" if unit.is_base else "│", None, None))
        above = unit
    return table("Elevation", "U", "Node", "Serial", "Face", rows=rows)


@node_app.command("show")
def node_show(ctx: typer.Context,
              node: Annotated[str, typer.Argument(help="Name, serial, UUID, asset tag, BMC address or #id.")],
              as_json: Json = False) -> None:
    """A node's identity, placement, BMC, firmware and components."""
    with open_inventory(ctx) as inventory:
        detail = inventory.node(node)
    if as_json:
        return print_json(detail)
    show(f"Node {detail.label}", details(node_rows(detail)))


def node_rows(n: NodeDetail) -> list[tuple[str, Any]]:
    c = n.components
    placement = n.rack and f"{n.site}/{n.rack} {units(n.position, n.u_height)} ({n.u_height}U, {n.face})"
    bmc = n.bmc_address and f"{n.bmc_protocol or '?'} {n.bmc_address}{f':{n.bmc_port}' if n.bmc_port else ''}"
    processors = Counter(p["model"] or "unknown model" for p in c.processors)
    return [
        ("Name", n.name), ("Serial", n.serial), ("UUID", n.uuid), ("Asset tag", n.asset_tag),
        ("Model", " ".join(filter(None, (n.manufacturer, n.model)))),
        ("State", n.state), ("Power", n.power_state),
        ("Placement", placement or n.site),
        ("BMC", bmc and f"{bmc} ({n.bmc_state})"),
        ("TLS fingerprint", n.bmc_tls_fingerprint), ("Credential", n.credential_ref),
        ("BIOS", n.bios_version), ("BMC firmware", n.bmc_firmware),
        ("Expected power", watts(n.expected_power_watts)),
        ("Processors", ", ".join(f"{count} × {model}" for model, count in processors.items())),
        ("Memory", f"{mib(n.memory_total_mib)} in {len(c.memory)} modules" if c.memory else None),
        ("Drives", "\n".join(" ".join(filter(None, (d["name"], d["model"], capacity(d["capacity_bytes"]),
                                                    d["media_type"], d["serial"]))) for d in c.drives)),
        ("NICs", "\n".join(" ".join(filter(None, (i["name"], i["mac"],
                                                  i["speed_mbps"] and f"{i['speed_mbps']:,} Mb/s")))
                           for i in c.nics)),
    ]


# ------------------------------------------------------------------------------ import / export
class ExportFormat(StrEnum):
    YAML = "yaml"
    JSON = "json"
    CSV = "csv"


@app.command("export")
def export_command(ctx: typer.Context,
                   fmt: Annotated[ExportFormat, typer.Option("--format", help="The file format.")] = ExportFormat.YAML,
                   output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None) -> None:
    """The inventory as YAML or JSON (which `baie import` reads back), or CSV for a spreadsheet."""
    with open_inventory(ctx) as inventory:
        text = export(inventory, fmt.value)
        if output is None:
            typer.echo(text, nl=not text.endswith("\n"))
        else:
            output.write_text(text)


@app.command("import")
def import_command(ctx: typer.Context,
                   file: Annotated[Path, typer.Argument(help="A YAML (or JSON) inventory file.")],
                   actor: Annotated[str | None, typer.Option(help="Who the events name (default: cli:$USER).")]
                   = None) -> None:
    """Declare sites, racks, power, cooling and planned nodes from a file (all or nothing)."""
    with open_inventory(ctx) as inventory:
        summary = import_file(inventory, file, actor or f"cli:{getpass.getuser()}")
    typer.echo(str(summary))


# ---------------------------------------------------------------------------------- database
@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create the schema, or bring it to the latest revision."""
    url = ctx.obj.database_url
    with reporting(url):
        db.upgrade(url)
        typer.echo(f"database {shown(url)} is at revision {db.current_revision(url)}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """The schema revision of the database."""
    url = ctx.obj.database_url
    with reporting(url):
        problem = _schema_problem(url)
        typer.echo(f"database {shown(url)} {problem or f'is at the latest revision, {db.current_revision(url)}'}")

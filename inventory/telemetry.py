"""Telemetry: storing readings, keeping them, and reading them back as power and cooling roll-ups.

A reading is one value of one series: a metric and a label set. A ``Series`` row holds the metric, the labels
and their canonical text (``series()``, its ``key``), so that a series is found by an index lookup on SQLite
and PostgreSQL alike, with no JSON operators; a ``Reading`` row is the series' id, a time and a value. Raw readings are kept ``RAW_DAYS``; 5-minute
roll-ups (count/min/avg/max per series) ``ROLLUP_DAYS``. The daemon calls ``rollup`` then ``prune``.

The roll-ups match readings to the inventory by the names in their labels: ``pdu`` + ``outlet`` (the index),
``node`` (name or serial), ``loop``, ``cdu``. PDU, CDU and loop names are unique per site only, so a reading
with a ``site`` label matches in that site alone, and one without matches by name in any site. A reading
labelled ``circuit=facility`` (a CDU's primary side: the facility water feeding it) belongs to no loop.
"""

from __future__ import annotations

import enum
import itertools
import operator
import weakref
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from sqlalchemy import DateTime, Engine, Row, delete, false, func, insert, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import Session, col, select

from inventory.errors import Ambiguous, NotFound
from inventory.model import (
    CoolingLoop,
    CoolingUnit,
    FeedSide,
    Node,
    Pdu,
    PduOutlet,
    PowerFeed,
    PowerPanel,
    Rack,
    Reading,
    ReadingRollup,
    Series,
    Site,
    utcnow,
)
from inventory.service import Inventory, _node_label, as_utc
from inventory.views import FeedPowerView, LoopCoolingView, PumpView, RackPowerView, SiteTotalsView

# Metric names as drivers.base.Metric spells them (inventory never imports drivers).
OUTLET_POWER = "baie_outlet_power_watts"
PSU_INPUT_POWER = "baie_psu_input_power_watts"
NODE_POWER = "baie_node_power_watts"
SUPPLY_TEMPERATURE = "baie_coolant_supply_temperature_celsius"
RETURN_TEMPERATURE = "baie_coolant_return_temperature_celsius"
COOLANT_FLOW = "baie_coolant_flow_litres_per_minute"
PUMP_OK = "baie_pump_ok"  # 1 healthy, 0 failed
LEAK_DETECTED = "baie_leak_detected"  # 1 leak, 0 dry
COOLING_METRICS = (SUPPLY_TEMPERATURE, RETURN_TEMPERATURE, COOLANT_FLOW, PUMP_OK, LEAK_DETECTED)
FACILITY = "facility"  # the ``circuit`` label of a CDU's primary (facility) side

BUCKET = timedelta(minutes=5)
RAW_DAYS = 7
ROLLUP_DAYS = 365
MAX_AGE = timedelta(minutes=5)  # a reading older than this is stale: its value is not reported
WATER_DENSITY_KG_PER_L = 0.997
WATER_CP_KJ_PER_KG_K = 4.18


class PowerSource(enum.StrEnum):
    OUTLETS = "outlets"
    PSU = "psu"
    NONE = "none"


class CoolingWarning(enum.StrEnum):
    SUPPLY_TEMPERATURE_HIGH = "supply_temperature_high"
    FLOW_LOW = "flow_low"
    PUMP_FAILED = "pump_failed"
    LEAK = "leak"


class ReadingIn(NamedTuple):
    metric: str
    labels: dict[str, str]
    value: float
    time: datetime


class Latest(NamedTuple):
    labels: dict[str, str]
    value: float
    time: datetime


def series(labels: Mapping[str, str]) -> str:
    """The canonical text of a label set: ``k="v"`` sorted by key, comma-separated. Values are quoted the
    Prometheus way, so that a value holding a comma or a quote cannot make two label sets look alike."""
    return ",".join(f'{key}="{_quote(value)}"' for key, value in sorted(labels.items()))


def _quote(value: str) -> str:
    if "\\" not in value and '"' not in value and "\n" not in value:
        return value  # nearly every value: no copies
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ------------------------------------------------------------------------------------ store and keep
_STORED = ("series_id", "value", "time")
ROWS_PER_STATEMENT = 1000  # x 3 parameters: well under SQLite's 32,766
SERIES_PER_STATEMENT = 500

# The series ids this process has seen, per database: (metric, label keys..., label values...) -> id.
_series_ids: weakref.WeakKeyDictionary[Engine, dict[tuple[str, ...], int]] = weakref.WeakKeyDictionary()


def store_readings(inventory: Inventory, readings: Iterable[ReadingIn]) -> int:
    """Insert a batch of ``(metric, labels, value, time)``; returns how many.

    The telemetry loop's hot path (a poll of a server is ~20 readings), measured in bench/:
    - a reading row is (series id, time, value), the series' ids looked up in memory (a series not seen
      yet is looked up, or added, in the database);
    - the rows go to the driver as they are, converted by the column types' own bind processors, each
      timestamp once per batch: SQLAlchemy's per-row parameter handling cost more CPU than the insert;
    - with a positional driver (SQLite), one INSERT carries up to ROWS_PER_STATEMENT rows: sqlite3's
      executemany lets go of the GIL and takes it back for every row, and each time waits for the busy
      event loop thread to hand it over, so that a batch written while the loop polled took seconds and
      the readings piled up. PostgreSQL (named parameters) gets one executemany."""
    readings = list(readings)
    if not readings:
        return 0
    try:
        return _insert(inventory.engine, readings)
    except IntegrityError:
        _series_ids.pop(inventory.engine, None)  # a series we knew is gone (the database was reset): look again
        return _insert(inventory.engine, readings)


def _insert(engine: Engine, readings: list[ReadingIn]) -> int:
    known = _series_ids.setdefault(engine, {})
    table, dialect = Reading.__table__, engine.dialect
    to_time = table.c.time.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)
    times: dict[datetime, object] = {}
    rows: list[list] = []
    missing: dict[tuple[str, ...], tuple[str, dict[str, str]]] = {}
    for metric, labels, value, time in readings:
        if (stamp := times.get(time)) is None:
            stamp = times[time] = to_time(_utc(time))
        key = (metric, *labels, *labels.values())  # one flat tuple: the cheapest key that tells them apart
        if (series_id := known.get(key)) is None:
            missing[key] = (metric, labels)
            series_id = key
        rows.append([series_id, value, stamp])
    if missing:
        _add_series(engine, known, missing)
        for row in rows:
            if type(row[0]) is tuple:
                row[0] = known[row[0]]
    compiled = insert(table).compile(dialect=dialect, column_keys=list(_STORED))
    with engine.begin() as conn:
        if not compiled.positional:
            conn.exec_driver_sql(compiled.string, [dict(zip(_STORED, row)) for row in rows])
            return len(rows)
        arrange = operator.itemgetter(*(_STORED.index(key) for key in compiled.positiontup))
        head, _, values = compiled.string.partition(" VALUES ")
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start:start + ROWS_PER_STATEMENT]
            conn.exec_driver_sql(f"{head} VALUES {', '.join([values] * len(chunk))}",
                                 tuple(itertools.chain.from_iterable(map(arrange, chunk))))
    return len(rows)


def _add_series(engine: Engine, known: dict, missing: dict[tuple[str, ...], tuple[str, dict[str, str]]]) -> None:
    """Find or create the series of ``missing`` (several daemons may create the same one at once: the
    unique constraint settles it) and remember their ids. Its own transaction: an id never outlives a
    rolled-back batch."""
    canonical = {key: (metric, series(labels)) for key, (metric, labels) in missing.items()}
    wanted = {pair: missing[key][1] for key, pair in canonical.items()}
    table = Series.__table__
    dialect_insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[engine.dialect.name]
    ids: dict[tuple[str, str], int] = {}
    by_metric: dict[str, list[str]] = defaultdict(list)
    for metric, key in wanted:
        by_metric[metric].append(key)
    with engine.begin() as conn:
        conn.execute(dialect_insert(table).on_conflict_do_nothing(),
                     [{"metric": metric, "key": key, "labels": labels} for (metric, key), labels in wanted.items()])
        # metric = ? AND key IN (...): a walk of the (metric, key) index (a row-value IN scanned the table)
        for metric, keys in by_metric.items():
            for start in range(0, len(keys), SERIES_PER_STATEMENT):
                found = conn.execute(select(table.c.key, table.c.id).where(
                    table.c.metric == metric, table.c.key.in_(keys[start:start + SERIES_PER_STATEMENT])))
                ids.update({(metric, key): id_ for key, id_ in found})
    for key, pair in canonical.items():
        known[key] = ids[pair]


class _bucket(FunctionElement):
    """The start of the 5-minute bucket a timestamp falls in."""

    type = DateTime(timezone=True)
    inherit_cache = True


@compiles(_bucket, "postgresql")
def _bucket_postgresql(element, compiler, **kw) -> str:
    seconds = int(BUCKET.total_seconds())
    return f"to_timestamp(floor(extract(epoch from {compiler.process(element.clauses, **kw)}) / {seconds}) * {seconds})"


@compiles(_bucket, "sqlite")
def _bucket_sqlite(element, compiler, **kw) -> str:
    seconds = int(BUCKET.total_seconds())
    # Whole seconds only: SQLite rounds to the millisecond, which would put 04:59.9999 in the next bucket.
    # The result is the text SQLAlchemy stores datetimes as on SQLite, so it compares with bound datetimes.
    time = f"substr({compiler.process(element.clauses, **kw)}, 1, 19)"
    return (f"strftime('%Y-%m-%d %H:%M:%S.000000', (CAST(strftime('%s', {time}) AS INTEGER) / {seconds}) * {seconds},"
            f" 'unixepoch')")


def rollup(inventory: Inventory, until: datetime) -> int:
    """Aggregate the complete buckets before ``until`` that follow the newest bucket already rolled up;
    returns the roll-up rows added. A second run adds nothing. Readings stored after their bucket was rolled
    up are left out of it, so ``until`` should trail the slowest poll."""
    end = _floor(_utc(until))
    with inventory.session() as s:
        done = s.exec(select(func.max(ReadingRollup.bucket))).one()
        raw = select(Series.metric, col(Series.key).label("series"), _bucket(Reading.time).label("bucket"),
                     Reading.value).join(Series, col(Series.id) == col(Reading.series_id)) \
            .where(col(Reading.time) < end)
        if done is not None:
            raw = raw.where(col(Reading.time) >= as_utc(done) + BUCKET)
        raw = raw.subquery()
        keys = (raw.c.metric, raw.c.series, raw.c.bucket)
        aggregate = select(*keys, func.count(), func.min(raw.c.value), func.avg(raw.c.value),
                           func.max(raw.c.value)).group_by(*keys)
        columns = ["metric", "series", "bucket", "count", "min_value", "avg_value", "max_value"]
        added = insert(ReadingRollup.__table__).from_select(columns, aggregate) \
            .execution_options(preserve_rowcount=True)  # SQLAlchemy keeps rowcount only for UPDATE/DELETE
        return s.exec(added).rowcount


def prune(inventory: Inventory, now: datetime, raw_days: int = RAW_DAYS,
          rollup_days: int = ROLLUP_DAYS) -> tuple[int, int]:
    """Delete raw readings older than ``raw_days`` and roll-ups older than ``rollup_days``; returns both counts."""
    now = _utc(now)
    with inventory.session() as s:
        raw = s.exec(delete(Reading).where(col(Reading.time) < now - timedelta(days=raw_days))).rowcount
        rolled = s.exec(delete(ReadingRollup)
                        .where(col(ReadingRollup.bucket) < now - timedelta(days=rollup_days))).rowcount
    return raw, rolled


def latest(inventory: Inventory, metrics: Iterable[str], since: datetime, until: datetime | None = None,
           **label_filters: str | Iterable[str]) -> dict[tuple[str, str], Latest]:
    """The newest reading of each series of ``metrics`` in [since, until], keyed by (metric, series).
    ``label_filters`` keep the series whose label has that value, or one of those values:
    ``latest(inv, [OUTLET_POWER], since, pdu=("P1", "P2"))``."""
    wanted = {key: {values} if isinstance(values, str) else set(values) for key, values in label_filters.items()}
    window = [col(Reading.series_id) == col(Series.id), col(Reading.time) >= _utc(since)]
    if until is not None:
        window.append(col(Reading.time) <= _utc(until))
    # Per series, one walk down its (series_id, time) index: the cost follows the series asked for, not the
    # readings stored in the window (4 million in 5 minutes at 10,000 nodes).
    newest = select(Reading.id).where(*window).order_by(col(Reading.time).desc(), col(Reading.id).desc()) \
        .limit(1).correlate(Series).scalar_subquery()
    where = [col(Series.metric).in_(list(metrics))]
    # A coarse match on the series text narrows the series; the exact match on the labels follows in Python.
    where += [or_(false(), *(col(Series.key).contains(series({key: value}), autoescape=True) for value in values))
              for key, values in wanted.items()]
    query = select(Series.metric, Series.key, Series.labels, Reading.value, Reading.time) \
        .join(Reading, col(Reading.id) == newest).where(*where)
    with inventory.session() as s:
        rows = s.exec(query).all()
    return {(metric, key): Latest(labels, value, as_utc(time)) for metric, key, labels, value, time in rows
            if all(labels.get(k) in values for k, values in wanted.items())}


def readings(inventory: Inventory, since: datetime, until: datetime | None = None, *, limit: int = 10_000,
             **label_filters: str) -> list[ReadingIn]:
    """Raw readings in [since, until] whose labels have these values (``node="web-1"``), oldest first;
    the newest ``limit`` of them when there are more."""
    where = [col(Reading.time) >= _utc(since)]
    if until is not None:
        where.append(col(Reading.time) <= _utc(until))
    where += [col(Series.key).contains(series({key: value}), autoescape=True)
              for key, value in label_filters.items()]
    query = select(Series.metric, Series.labels, Reading.value, Reading.time) \
        .join(Series, col(Series.id) == col(Reading.series_id)).where(*where) \
        .order_by(col(Reading.time).desc(), col(Reading.id).desc()).limit(limit)
    with inventory.session() as s:
        rows = s.exec(query).all()
    return [ReadingIn(metric, labels, value, as_utc(time)) for metric, labels, value, time in reversed(rows)
            if all(labels.get(key) == value for key, value in label_filters.items())]


# -------------------------------------------------------------------------------------------- power
def rack_power(inventory: Inventory, rack_ref: str | None = None, site: str | None = None, *,
               now: datetime | None = None, max_age: timedelta = MAX_AGE) -> list[RackPowerView]:
    """Measured draw per rack: the sum of its PDUs' outlets, else (no outlet reading fresh) of its nodes'
    PSU inputs, or the node's own power reading for a node without PSU readings."""
    now = _utc(now or utcnow())
    with inventory.session() as s:
        racks = _racks(s, inventory, rack_ref, site)
        rack_site = {rack.id: site_name for rack, site_name in racks}
        pdus = s.exec(select(Pdu).where(col(Pdu.rack_id).in_(rack_site))).all()
        # Columns, not ORM objects: a site has tens of thousands of outlets.
        outlets = s.exec(select(PduOutlet.pdu_id, PduOutlet.index, PduOutlet.power_feed_id, PduOutlet.node_id,
                                PduOutlet.psu).where(col(PduOutlet.pdu_id).in_([p.id for p in pdus]))).all()
        nodes = s.exec(select(Node).where(col(Node.rack_id).in_(rack_site))).all()
        feed_ids = ({p.power_feed_id for p in pdus} | {o.power_feed_id for o in outlets}) - {None}
        feeds = s.exec(select(PowerFeed, PowerPanel.name).join(PowerPanel)
                       .where(or_(col(PowerFeed.rack_id).in_(rack_site), col(PowerFeed.id).in_(feed_ids)))
                       .order_by(PowerFeed.side, PowerFeed.name)).all()

    pdu_by_id = {p.id: p for p in pdus}
    pdu_by_name = {(rack_site[p.rack_id], p.name): p for p in pdus}
    outlet_by_index = {(o.pdu_id, str(o.index)): o for o in outlets}
    outlet_by_psu = {(o.node_id, o.psu): o for o in outlets if o.node_id is not None}
    node_by_label = {label: n for n in nodes for label in (n.name, n.serial) if label}

    def feed_of(outlet: Row) -> int | None:
        return outlet.power_feed_id or pdu_by_id[outlet.pdu_id].power_feed_id

    since, sites = now - max_age, set(rack_site.values())
    # Filtering on labels pays for one rack; for many it would be one LIKE per PDU or node.
    one = rack_ref is not None
    by_outlets: dict[int, list[tuple[int | None, float]]] = defaultdict(list)  # rack id → (feed id, watts)
    for labels, watts, _ in latest(inventory, [OUTLET_POWER], since, now,
                                   **({"pdu": [p.name for p in pdus]} if one else {})).values():
        for key in _named(labels, "pdu", sites):
            if pdu := pdu_by_name.get(key):
                outlet = outlet_by_index.get((pdu.id, labels.get("outlet")))
                by_outlets[pdu.rack_id].append((feed_of(outlet) if outlet else pdu.power_feed_id, watts))

    node_readings: dict[int, dict[str, list[tuple[int | None, float]]]] = defaultdict(lambda: defaultdict(list))
    for (metric, _), (labels, watts, _) in latest(inventory, [PSU_INPUT_POWER, NODE_POWER], since, now,
                                                  **({"node": list(node_by_label)} if one else {})).items():
        if node := node_by_label.get(labels.get("node", "")):
            outlet = outlet_by_psu.get((node.id, labels.get("psu"))) if metric == PSU_INPUT_POWER else None
            node_readings[node.id][metric].append((feed_of(outlet) if outlet else None, watts))
    by_psu: dict[int, list[tuple[int | None, float]]] = defaultdict(list)
    for node in nodes:
        readings = node_readings.get(node.id, {})
        by_psu[node.rack_id] += readings.get(PSU_INPUT_POWER) or readings.get(NODE_POWER, [])

    # A rack's feeds: those assigned to it, and those its PDUs and outlets are wired to.
    feed_racks: dict[int | None, set[int]] = defaultdict(set)
    for p in pdus:
        feed_racks[p.power_feed_id].add(p.rack_id)
    for o in outlets:
        feed_racks[o.power_feed_id].add(pdu_by_id[o.pdu_id].rack_id)
    rack_feeds: dict[int, list[tuple[PowerFeed, str]]] = defaultdict(list)
    for feed, panel in feeds:
        for rack_id in feed_racks[feed.id] | ({feed.rack_id} & rack_site.keys()):
            rack_feeds[rack_id].append((feed, panel))

    views = []
    for rack, site_name in racks:
        if by_outlets[rack.id]:
            source, parts = PowerSource.OUTLETS, by_outlets[rack.id]
        elif by_psu[rack.id]:
            source, parts = PowerSource.PSU, by_psu[rack.id]
        else:
            source, parts = PowerSource.NONE, []
        draw = _sum(watts for _, watts in parts)
        per_feed: dict[int | None, list[float]] = defaultdict(list)
        for feed_id, watts in parts:
            per_feed[feed_id].append(watts)
        feed_views, capacity = [], dict.fromkeys(FeedSide, 0.0)
        for feed, panel in rack_feeds[rack.id]:
            on_feed = _sum(per_feed[feed.id])
            feed_views.append(FeedPowerView(feed=f"{panel}/{feed.name}", side=feed.side,
                                            capacity_watts=feed.capacity_watts, draw_watts=on_feed,
                                            headroom_watts=_minus(feed.capacity_watts, on_feed)))
            capacity[FeedSide(feed.side)] += feed.capacity_watts
        views.append(RackPowerView(
            site=site_name, rack=rack.name, source=source, draw_watts=draw, reporting=len(parts),
            budget_watts=rack.power_budget_watts, headroom_watts=_minus(rack.power_budget_watts, draw),
            feeds=feed_views,
            # Losing side A leaves the load on side B's capacity, and the other way round.
            redundant=None if draw is None or not feed_views else all(draw <= c for c in capacity.values())))
    return views


# ------------------------------------------------------------------------------------------ cooling
def loop_cooling(inventory: Inventory, loop_ref: str | None = None, site: str | None = None, *,
                 now: datetime | None = None, max_age: timedelta = MAX_AGE,
                 density_kg_per_l: float = WATER_DENSITY_KG_PER_L,
                 cp_kj_per_kg_k: float = WATER_CP_KJ_PER_KG_K) -> list[LoopCoolingView]:
    """Per cooling loop: temperatures, flow, heat removed, pumps, leaks, what it serves, and warnings.

    A loop's readings are those labelled ``loop=<name>`` (and, if they carry ``cdu``, its CDU's name); where
    its CDU serves this loop alone, readings labelled ``cdu=<name>`` without a ``loop`` label count too.
    Where several connectors report a temperature or flow, the one labelled ``connector=<loop name>`` is
    taken, else the first in series order.
    """
    now = _utc(now or utcnow())
    with inventory.session() as s:
        loops = _loops(s, inventory, loop_ref, site)
        loop_site = {loop.id: site_name for loop, site_name in loops}
        cdu_ids = {loop.cooling_unit_id for loop, _ in loops}
        cdu_name = dict(s.exec(select(CoolingUnit.id, CoolingUnit.name).where(col(CoolingUnit.id).in_(cdu_ids))).all())
        cdu_loops = dict(s.exec(select(CoolingLoop.cooling_unit_id, func.count())
                                .where(col(CoolingLoop.cooling_unit_id).in_(cdu_ids))
                                .group_by(CoolingLoop.cooling_unit_id)).all())
        racks = s.exec(select(Rack.name, Rack.cooling_loop_id)
                       .where(col(Rack.cooling_loop_id).in_(loop_site)).order_by(Rack.name)).all()
        nodes = s.exec(select(Node, Rack.cooling_loop_id).join(Rack, col(Node.rack_id) == Rack.id)
                       .where(col(Rack.cooling_loop_id).in_(loop_site))).all()

    by_name = {(loop_site[loop.id], loop.name): loop for loop, _ in loops}
    alone = {(loop_site[loop.id], cdu_name[loop.cooling_unit_id]): loop for loop, _ in loops
             if cdu_loops[loop.cooling_unit_id] == 1}
    sites = set(loop_site.values())
    matched: dict[int, dict[str, list[tuple[str, Latest]]]] = defaultdict(lambda: defaultdict(list))
    for (metric, key), reading in sorted(latest(inventory, COOLING_METRICS, now - max_age, now).items()):
        labels = reading.labels
        if labels.get("circuit") == FACILITY:
            continue
        if "loop" in labels:
            candidates = [by_name.get(k) for k in _named(labels, "loop", sites)]
        else:
            candidates = [alone.get(k) for k in _named(labels, "cdu", sites)]
        for loop in candidates:
            if loop and labels.get("cdu") in (None, cdu_name[loop.cooling_unit_id]):
                matched[loop.id][metric].append((key, reading))

    views = []
    for loop, site_name in loops:
        readings = matched.get(loop.id, {})
        supply, back, flow = (_connector(readings.get(metric, []), loop.name)
                              for metric in (SUPPLY_TEMPERATURE, RETURN_TEMPERATURE, COOLANT_FLOW))
        delta = _minus(back, supply)
        heat = None
        if flow is not None and delta is not None:
            heat = flow / 60 * density_kg_per_l * cp_kj_per_kg_k * delta
        pumps = [PumpView(name=r.labels.get("pump", key), ok=r.value != 0) for key, r in readings.get(PUMP_OK, [])]
        detectors = readings.get(LEAK_DETECTED, [])
        wet = [r.labels.get("detector", key) for key, r in detectors if r.value != 0]
        leak = bool(wet) if detectors else None
        warnings = [warning for warning, raised in (
            (CoolingWarning.SUPPLY_TEMPERATURE_HIGH, _above(supply, loop.supply_temperature_max_c)),
            (CoolingWarning.FLOW_LOW, _above(loop.flow_min_lpm, flow)),
            (CoolingWarning.PUMP_FAILED, any(not p.ok for p in pumps)),
            (CoolingWarning.LEAK, leak),
        ) if raised]
        views.append(LoopCoolingView(
            site=site_name, loop=loop.name, cooling_unit=cdu_name[loop.cooling_unit_id],
            supply_temperature_c=supply, return_temperature_c=back, delta_t_c=delta, flow_lpm=flow,
            heat_removed_kw=heat, supply_temperature_max_c=loop.supply_temperature_max_c,
            flow_min_lpm=loop.flow_min_lpm, pumps=pumps, leak=leak, leak_detectors=wet,
            racks=[name for name, loop_id in racks if loop_id == loop.id],
            nodes=sorted(_node_label(node) for node, loop_id in nodes if loop_id == loop.id),
            warnings=warnings))
    return views


# --------------------------------------------------------------------------------------------- site
def site_totals(inventory: Inventory, site: str, *, now: datetime | None = None, max_age: timedelta = MAX_AGE,
                density_kg_per_l: float = WATER_DENSITY_KG_PER_L,
                cp_kj_per_kg_k: float = WATER_CP_KJ_PER_KG_K) -> SiteTotalsView:
    now = _utc(now or utcnow())
    racks = rack_power(inventory, site=site, now=now, max_age=max_age)
    loops = loop_cooling(inventory, site=site, now=now, max_age=max_age, density_kg_per_l=density_kg_per_l,
                         cp_kj_per_kg_k=cp_kj_per_kg_k)
    return SiteTotalsView(
        site=site, racks=len(racks), racks_reporting=sum(r.draw_watts is not None for r in racks),
        draw_watts=_sum(r.draw_watts for r in racks if r.draw_watts is not None),
        budget_watts=_sum(r.budget_watts for r in racks if r.budget_watts is not None),
        racks_over_budget=[r.rack for r in racks if r.headroom_watts is not None and r.headroom_watts < 0],
        racks_not_redundant=[r.rack for r in racks if r.redundant is False],
        loops=len(loops), loops_reporting=sum(loop.heat_removed_kw is not None for loop in loops),
        heat_removed_kw=_sum(loop.heat_removed_kw for loop in loops if loop.heat_removed_kw is not None),
        loops_in_leak=[loop.loop for loop in loops if loop.leak],
        loops_with_warnings=[loop.loop for loop in loops if loop.warnings])


# ------------------------------------------------------------------------------------------ helpers
def _racks(s: Session, inventory: Inventory, rack_ref: str | None, site: str | None) -> list[tuple[Rack, str]]:
    query = select(Rack, Site.name).join(Site).order_by(Site.name, Rack.name)
    if rack_ref:
        query = query.where(Rack.id == inventory.rack_by_ref(s, rack_ref, site).id)
    elif site:
        query = query.where(Site.id == inventory.site_by_name(s, site).id)
    return list(s.exec(query).all())


def _loops(s: Session, inventory: Inventory, loop_ref: str | None,
           site: str | None) -> list[tuple[CoolingLoop, str]]:
    """Loops by ``NAME`` or ``SITE/NAME`` (as racks are), or all of a site, or all."""
    query = select(CoolingLoop, Site.name).join(Site).order_by(Site.name, CoolingLoop.name)
    if loop_ref:
        if "/" in loop_ref:
            site, loop_ref = loop_ref.split("/", 1)
        query = query.where(CoolingLoop.name == loop_ref)
    if site:
        query = query.where(Site.id == inventory.site_by_name(s, site).id)
    loops = list(s.exec(query).all())
    if loop_ref and not loops:
        raise NotFound("cooling loop", f"{site}/{loop_ref}" if site else loop_ref)
    if loop_ref and len(loops) > 1:
        raise Ambiguous("cooling loop", loop_ref, [f"{site_name}/{loop.name}" for loop, site_name in loops])
    return loops


def _connector(readings: list[tuple[str, Latest]], loop_name: str) -> float | None:
    """The value of the connector labelled with the loop's name, else of the first (in series order)."""
    if not readings:
        return None
    return next((r for _, r in readings if r.labels.get("connector") == loop_name), readings[0][1]).value


def _named(labels: Mapping[str, str], key: str, sites: Iterable[str]) -> list[tuple[str, str]]:
    """The (site, name) keys a reading's ``key`` label may mean: in its ``site`` label's site, else in any."""
    name = labels.get(key)
    if name is None:
        return []
    return [(labels["site"], name)] if "site" in labels else [(site, name) for site in sites]


def _utc(value: datetime) -> datetime:
    return as_utc(value).astimezone(UTC)


def _floor(value: datetime) -> datetime:
    seconds = int(BUCKET.total_seconds())
    return datetime.fromtimestamp(int(value.timestamp()) // seconds * seconds, UTC)


def _sum(values: Iterable[float]) -> float | None:
    """The sum, or None when there is nothing to add: unreported is not zero."""
    values = list(values)
    return sum(values) if values else None


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _above(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and value > limit


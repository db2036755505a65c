"""Telemetry storage, retention and the power/cooling roll-ups, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func
from sqlmodel import delete, select

from drivers.base import Metric
from inventory import telemetry
from inventory.model import (
    CoolingLoop,
    CoolingUnit,
    Location,
    Node,
    Pdu,
    PduOutlet,
    PowerFeed,
    PowerPanel,
    Rack,
    Reading,
    Series,
    ReadingRollup,
    Site,
)
from inventory.service import as_utc
from inventory.telemetry import (
    COOLANT_FLOW,
    LEAK_DETECTED,
    NODE_POWER,
    OUTLET_POWER,
    PSU_INPUT_POWER,
    PUMP_OK,
    RETURN_TEMPERATURE,
    SUPPLY_TEMPERATURE,
    CoolingWarning,
    ReadingIn,
    latest,
    readings,
    loop_cooling,
    prune,
    rack_power,
    rollup,
    site_totals,
    store_readings,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FRESH = NOW - timedelta(minutes=1)
STALE = NOW - timedelta(minutes=10)
CAPACITY_A = 230 * 16 * 0.8  # 2944 W
CAPACITY_B = 230 * 10 * 0.8  # 1840 W


@pytest.fixture
def dc(inventory):
    """Site par1: rack R01 (budget 5000 W) on feeds A (16 A) and B (10 A) through PDUs pdu-a and pdu-b, whose
    outlets 1 and 2 feed the PSUs of nodes n1 and n2; rack R02 (budget 3000 W) with nothing; CDU cdu1 with
    loop1 cooling R01."""
    with inventory.session() as s:
        site = _add(s, Site(name="par1", country_code="FR", jurisdiction="EU", role="primary"))
        room = _add(s, Location(site_id=site.id, name="room1"))
        cdu = _add(s, CoolingUnit(site_id=site.id, name="cdu1"))
        loop = _add(s, CoolingLoop(site_id=site.id, cooling_unit_id=cdu.id, name="loop1",
                                   supply_temperature_max_c=35.0, flow_min_lpm=20.0))
        rack = _add(s, Rack(site_id=site.id, location_id=room.id, name="R01", power_budget_watts=5000.0,
                            cooling_loop_id=loop.id))
        _add(s, Rack(site_id=site.id, location_id=room.id, name="R02", power_budget_watts=3000.0))
        panel = _add(s, PowerPanel(site_id=site.id, name="PP1"))
        feed_a = _add(s, PowerFeed(power_panel_id=panel.id, rack_id=rack.id, name="F1", side="A", amperage=16))
        feed_b = _add(s, PowerFeed(power_panel_id=panel.id, rack_id=rack.id, name="F2", side="B", amperage=10))
        pdu_a = _add(s, Pdu(site_id=site.id, rack_id=rack.id, power_feed_id=feed_a.id, name="pdu-a"))
        pdu_b = _add(s, Pdu(site_id=site.id, rack_id=rack.id, power_feed_id=feed_b.id, name="pdu-b"))
        for index, name in ((1, "n1"), (2, "n2")):
            node = _add(s, Node(name=name, serial=f"SN{index}", site_id=site.id, rack_id=rack.id))
            # pdu-a's outlets name their feed; pdu-b's take their PDU's
            s.add(PduOutlet(pdu_id=pdu_a.id, index=index, node_id=node.id, psu="PSU1", power_feed_id=feed_a.id))
            s.add(PduOutlet(pdu_id=pdu_b.id, index=index, node_id=node.id, psu="PSU2"))
    return inventory


def _add(s, row):
    s.add(row)
    s.flush()
    return row


def _put(inventory, *readings: tuple[str, dict[str, str], float, datetime]) -> None:
    store_readings(inventory, [ReadingIn(*r) for r in readings])


def _outlets(watts: dict[tuple[str, int], float], time: datetime = FRESH) -> list[tuple]:
    return [(OUTLET_POWER, {"pdu": pdu, "outlet": str(index)}, value, time) for (pdu, index), value in watts.items()]


def test_metric_names_are_the_drivers():
    assert {OUTLET_POWER, PSU_INPUT_POWER, NODE_POWER, SUPPLY_TEMPERATURE, RETURN_TEMPERATURE, COOLANT_FLOW,
            PUMP_OK, LEAK_DETECTED} <= {m.value for m in Metric}


def test_series_is_canonical_and_unambiguous():
    assert telemetry.series({"pdu": "P1", "outlet": "3"}) == 'outlet="3",pdu="P1"'
    assert telemetry.series({"a": '1",b="2'}) != telemetry.series({"a": "1", "b": "2"})


# -------------------------------------------------------------------------------------------- power
def test_rack_draw_from_outlets_per_feed(dc):
    _put(dc, *_outlets({("pdu-a", 1): 400, ("pdu-a", 2): 300, ("pdu-b", 1): 350, ("pdu-b", 2): 250}),
         (OUTLET_POWER, {"pdu": "pdu-a", "outlet": "1"}, 999, STALE),  # older: superseded
         (OUTLET_POWER, {"pdu": "pdu-a", "outlet": "1"}, 5000, NOW + timedelta(minutes=1)),  # after `now`
         (OUTLET_POWER, {"pdu": "pdu-a", "outlet": "1", "site": "other"}, 700, FRESH),  # another site's pdu-a
         (OUTLET_POWER, {"pdu": "pdu-c", "outlet": "1"}, 800, FRESH))  # not in the inventory

    [view] = rack_power(dc, "R01", now=NOW)
    assert (view.source, view.draw_watts, view.reporting) == ("outlets", 1300, 4)
    assert (view.budget_watts, view.headroom_watts) == (5000, 3700)
    assert [(f.feed, f.side, f.draw_watts) for f in view.feeds] == [("PP1/F1", "A", 700), ("PP1/F2", "B", 600)]
    assert [f.headroom_watts for f in view.feeds] == pytest.approx([CAPACITY_A - 700, CAPACITY_B - 600])
    assert view.redundant is True
    # the site-wide read (no label filter in SQL) agrees with the one-rack read
    assert rack_power(dc, site="par1", now=NOW)[0] == view


@pytest.mark.parametrize("total, redundant", [(CAPACITY_B, True), (CAPACITY_B + 1, False), (CAPACITY_A + 1, False)])
def test_redundancy_needs_each_side_to_carry_the_whole_load(dc, total, redundant):
    _put(dc, *_outlets({("pdu-a", 1): total / 2, ("pdu-b", 1): total / 2}))
    [view] = rack_power(dc, "R01", now=NOW)
    assert view.draw_watts == pytest.approx(total)
    assert view.redundant is redundant


def test_psu_readings_stand_in_when_outlets_are_stale(dc):
    _put(dc, *_outlets({("pdu-a", 1): 400, ("pdu-b", 1): 350}, time=STALE),
         (PSU_INPUT_POWER, {"node": "n1", "psu": "PSU1"}, 200, FRESH),
         (PSU_INPUT_POWER, {"node": "n1", "psu": "PSU2"}, 190, FRESH),
         (NODE_POWER, {"node": "n1"}, 999, FRESH),  # n1 has PSU readings: its own total is not added
         (NODE_POWER, {"node": "SN2"}, 500, FRESH))  # n2 by serial, without PSU readings

    for view in (rack_power(dc, "R01", now=NOW)[0], rack_power(dc, site="par1", now=NOW)[0]):
        assert (view.source, view.draw_watts, view.reporting) == ("psu", 890, 3)
        assert [f.draw_watts for f in view.feeds] == [200, 190]  # n2's node total has no feed
        assert view.redundant is True


def test_nothing_reported_is_none_not_zero(dc):
    _put(dc, *_outlets({("pdu-a", 1): 400}, time=STALE))
    r01, r02 = rack_power(dc, site="par1", now=NOW)
    assert (r01.source, r01.draw_watts, r01.headroom_watts, r01.redundant, r01.reporting) == ("none", None, None,
                                                                                               None, 0)
    assert [(f.draw_watts, f.headroom_watts) for f in r01.feeds] == [(None, None), (None, None)]
    assert (r02.rack, r02.draw_watts, r02.feeds, r02.redundant) == ("R02", None, [], None)


def test_latest_filters_on_exact_label_values(dc):
    _put(dc, (OUTLET_POWER, {"pdu": "p_1"}, 1, FRESH), (OUTLET_POWER, {"pdu": "pX1"}, 2, FRESH),
         (OUTLET_POWER, {"pdu": "p_10"}, 3, FRESH))
    found = latest(dc, [OUTLET_POWER], STALE, NOW, pdu="p_1")
    assert [(r.labels, r.value, r.time) for r in found.values()] == [({"pdu": "p_1"}, 1, FRESH)]
    assert latest(dc, [OUTLET_POWER], STALE, NOW, pdu=()) == {}


# ------------------------------------------------------------------------------------------ cooling
def _cooling(supply=30.0, back=40.0, flow=60.0, pumps=(1, 1), leaks=(0, 0)) -> list[tuple]:
    loop = {"cdu": "cdu1", "loop": "loop1"}
    return [
        (SUPPLY_TEMPERATURE, {**loop, "connector": "aux"}, 10.0, FRESH),  # not the loop's connector
        (SUPPLY_TEMPERATURE, {**loop, "connector": "loop1"}, supply, FRESH),
        (RETURN_TEMPERATURE, {**loop, "connector": "loop1"}, back, FRESH),
        (COOLANT_FLOW, {**loop, "connector": "loop1"}, flow, FRESH),
        # pumps and detectors carry the CDU's name only: cdu1 serves loop1 alone, so they are loop1's
        *[(PUMP_OK, {"cdu": "cdu1", "pump": f"p{i}"}, ok, FRESH) for i, ok in enumerate(pumps, 1)],
        *[(LEAK_DETECTED, {"cdu": "cdu1", "detector": f"d{i}"}, wet, FRESH) for i, wet in enumerate(leaks, 1)],
    ]


def test_loop_delta_t_heat_pumps_and_leak(dc):
    _put(dc, *_cooling(supply=30, back=40, flow=60, pumps=(1, 0), leaks=(0, 1)),
         (SUPPLY_TEMPERATURE, {"cdu": "cdu9", "loop": "loop1"}, 99, FRESH))  # another CDU's loop1

    [view] = loop_cooling(dc, "loop1", now=NOW)
    assert (view.supply_temperature_c, view.return_temperature_c, view.delta_t_c, view.flow_lpm) == (30, 40, 10, 60)
    assert view.heat_removed_kw == pytest.approx(60 / 60 * 0.997 * 4.18 * 10)
    assert [(p.name, p.ok) for p in view.pumps] == [("p1", True), ("p2", False)]
    assert (view.leak, view.leak_detectors) == (True, ["d2"])
    assert (view.racks, view.nodes) == (["R01"], ["n1", "n2"])
    assert view.warnings == [CoolingWarning.PUMP_FAILED, CoolingWarning.LEAK]

    [glycol] = loop_cooling(dc, site="par1", now=NOW, density_kg_per_l=1.04, cp_kj_per_kg_k=3.6)
    assert glycol.heat_removed_kw == pytest.approx(60 / 60 * 1.04 * 3.6 * 10)


def test_loop_supply_high_and_flow_low(dc):
    _put(dc, *_cooling(supply=36, back=44, flow=15))
    [view] = loop_cooling(dc, "par1/loop1", now=NOW)
    assert view.warnings == [CoolingWarning.SUPPLY_TEMPERATURE_HIGH, CoolingWarning.FLOW_LOW]
    assert (view.leak, [p.ok for p in view.pumps]) == (False, [True, True])


def test_loop_without_readings_and_cdu_readings_of_a_shared_cdu(dc):
    with dc.session() as s:
        cdu = s.exec(select(CoolingUnit)).one()
        s.add(CoolingLoop(site_id=cdu.site_id, cooling_unit_id=cdu.id, name="loop2"))
    _put(dc, (PUMP_OK, {"cdu": "cdu1", "pump": "p1"}, 0, FRESH), (LEAK_DETECTED, {"cdu": "cdu1"}, 1, FRESH))
    for view in loop_cooling(dc, site="par1", now=NOW):  # cdu1 now serves two loops: neither claims these
        assert (view.supply_temperature_c, view.delta_t_c, view.heat_removed_kw, view.leak) == (None, None, None, None)
        assert (view.pumps, view.warnings) == ([], [])


# --------------------------------------------------------------------------------------------- site
def test_site_totals(dc):
    _put(dc, *_outlets({("pdu-a", 1): 1000, ("pdu-b", 1): 1000}), *_cooling(leaks=(1, 0)))
    totals = site_totals(dc, "par1", now=NOW)
    assert (totals.racks, totals.racks_reporting, totals.draw_watts, totals.budget_watts) == (2, 1, 2000, 8000)
    assert (totals.racks_not_redundant, totals.racks_over_budget) == (["R01"], [])
    assert (totals.loops, totals.loops_reporting) == (1, 1)
    assert totals.heat_removed_kw == pytest.approx(60 / 60 * 0.997 * 4.18 * 10)
    assert (totals.loops_in_leak, totals.loops_with_warnings) == (["loop1"], ["loop1"])


# ---------------------------------------------------------------------------------------- retention
def _count(inventory, model) -> int:
    with inventory.session() as s:
        return s.exec(select(func.count()).select_from(model)).one()


def test_prune_keeps_raw_days_and_rollup_days(inventory):
    hours = 9 * 24  # one reading an hour over 9 days, the newest an hour ago
    _put(inventory, *[(NODE_POWER, {"node": "n1"}, float(h), NOW - timedelta(hours=h)) for h in range(1, hours + 1)])
    assert rollup(inventory, NOW) == hours  # one bucket each

    assert prune(inventory, NOW, raw_days=7, rollup_days=8) == (hours - 7 * 24, hours - 8 * 24)
    assert _count(inventory, Reading) == 7 * 24  # the one exactly 7 days old is kept
    assert _count(inventory, ReadingRollup) == 8 * 24
    assert prune(inventory, NOW) == (0, 0)


def test_rollup_buckets_are_right_and_idempotent(inventory):
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    a, b = {"pdu": "p1", "outlet": "1"}, {"pdu": "p1", "outlet": "2"}
    _put(inventory,
         (OUTLET_POWER, a, 1, t0), (OUTLET_POWER, a, 2, t0 + timedelta(minutes=2, seconds=30)),
         (OUTLET_POWER, a, 6, t0 + timedelta(minutes=4, seconds=59, microseconds=999_999)),
         (OUTLET_POWER, a, 10, t0 + timedelta(minutes=5)),
         (OUTLET_POWER, b, 7, t0 + timedelta(minutes=1)),
         (OUTLET_POWER, a, 3, t0 + timedelta(minutes=11)))  # its bucket is still open at 12:13

    def rows():
        with inventory.session() as s:
            return [(r.series, as_utc(r.bucket), r.count, r.min_value, r.avg_value, r.max_value)
                    for r in s.exec(select(ReadingRollup).order_by(ReadingRollup.series, ReadingRollup.bucket))]

    assert rollup(inventory, t0 + timedelta(minutes=13)) == 3
    sa, sb = telemetry.series(a), telemetry.series(b)
    expected = [(sa, t0, 3, 1, pytest.approx(3), 6), (sa, t0 + timedelta(minutes=5), 1, 10, 10, 10),
                (sb, t0, 1, 7, 7, 7)]
    assert rows() == expected
    assert rollup(inventory, t0 + timedelta(minutes=13)) == 0
    assert rows() == expected
    assert rollup(inventory, t0 + timedelta(minutes=15)) == 1
    assert rows()[2] == (sa, t0 + timedelta(minutes=10), 1, 3, 3, 3)


def test_batch_of_ten_thousand(inventory):
    readings = [ReadingIn(OUTLET_POWER, {"pdu": f"pdu{i % 100}", "outlet": str(i % 1000 // 100)}, float(i),
                          NOW - timedelta(seconds=10_000 - i)) for i in range(10_000)]
    assert store_readings(inventory, readings) == 10_000
    assert _count(inventory, Reading) == 10_000
    newest = latest(inventory, [OUTLET_POWER], NOW - timedelta(hours=3), NOW)
    assert len(newest) == 1000
    assert sorted(r.value for r in newest.values()) == [float(i) for i in range(9000, 10_000)]


def test_a_reading_names_its_series_once(inventory):
    _put(inventory, *_outlets({("pdu-a", 1): 400, ("pdu-a", 2): 300}),
         (OUTLET_POWER, {"outlet": "1", "pdu": "pdu-a"}, 410, FRESH + timedelta(seconds=15)))  # labels reordered
    assert (_count(inventory, Series), _count(inventory, Reading)) == (2, 3)
    assert latest(inventory, [OUTLET_POWER], FRESH)[(OUTLET_POWER, 'outlet="1",pdu="pdu-a"')].value == 410


def test_series_deleted_under_the_writer_are_made_again(inventory):
    """The ids the writer remembers go stale if the readings are deleted under it (a restore, an operator's
    DELETE): the batch is written all the same."""
    _put(inventory, *_outlets({("pdu-a", 1): 400}))
    with inventory.session() as s:
        s.exec(delete(Reading))
        s.exec(delete(Series))
    _put(inventory, *_outlets({("pdu-a", 1): 420}, FRESH + timedelta(seconds=15)))
    assert [r.value for r in readings(inventory, FRESH - timedelta(minutes=1))] == [420]

"""The migrations and the model agree: a database upgraded to head has exactly the model's schema."""

from __future__ import annotations

import json

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

import inventory.model  # noqa: F401  (registers the tables)
from inventory.db import alembic_config, current_revision, make_engine, upgrade


def test_head_matches_the_model(database_url):
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"the model and the migrations differ; write a migration for: {diff}"


def test_revisions_form_one_chain():
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    heads = script.get_heads()
    assert len(heads) == 1, f"migrations branch: heads {heads}; chain the newest after the others"


def test_downgrade_to_base_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    head = current_revision(url)
    command.downgrade(alembic_config(url), "base")
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == head


def test_readings_move_to_series_and_back(tmp_path):
    """0006 gives each (metric, labels) of the readings already stored a series, and downgrading puts the
    labels back on each reading."""
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    from inventory.service import Inventory
    from inventory.telemetry import ReadingIn, latest, readings, series, store_readings

    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0005")
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    old = [("baie_node_power_watts", {"node": "n1", "site": "par"}, 200.0 + i, t0 + timedelta(seconds=15 * i))
           for i in range(3)] + [("baie_node_power_watts", {"node": "n2", "site": "par"}, 300.0, t0),
                                 ("baie_pump_ok", {"cdu": "c1", "pump": "1"}, 1.0, t0)]
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO reading (time, metric, labels, series, value) "
                             "VALUES (:time, :metric, :labels, :series, :value)"),
                     [{"time": time.strftime("%Y-%m-%d %H:%M:%S.000000"), "metric": metric,
                       "labels": json.dumps(labels), "series": series(labels), "value": value}
                      for metric, labels, value, time in old])
    engine.dispose()

    upgrade(url)
    store = Inventory(make_engine(url))
    newest = latest(store, ["baie_node_power_watts"], t0 - timedelta(minutes=1))
    assert {key: r.value for key, r in newest.items()} == {
        ("baie_node_power_watts", 'node="n1",site="par"'): 202.0,
        ("baie_node_power_watts", 'node="n2",site="par"'): 300.0}
    store_readings(store, [ReadingIn("baie_pump_ok", {"pump": "1", "cdu": "c1"}, 0.0, t0 + timedelta(minutes=1))])
    assert [(r.labels, r.value) for r in readings(store, t0 - timedelta(minutes=1), cdu="c1")] == [
        ({"cdu": "c1", "pump": "1"}, 1.0), ({"cdu": "c1", "pump": "1"}, 0.0)]  # one series, both readings
    store.engine.dispose()

    command.downgrade(alembic_config(url), "0005")
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT metric, series, labels, value FROM reading ORDER BY id")).all()
    engine.dispose()
    assert [(m, s, json.loads(labels), v) for m, s, labels, v in rows] == [
        *((metric, series(labels), labels, value) for metric, labels, value, _ in old),
        ("baie_pump_ok", 'cdu="c1",pump="1"', {"cdu": "c1", "pump": "1"}, 0.0)]

"""Import and export on both backends: the example file, idempotence, round trips, CSV safety, refused files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func
from sqlmodel import SQLModel, select

from inventory.exporter import export
from inventory.importer import ImportFailed, import_file, import_text
from inventory.model import Node, NodeState

DATA = Path(__file__).parent / "data"
EXAMPLE = DATA / "example.yaml"
BAD = sorted((DATA / "bad").glob("*.yaml"))


def row_counts(inventory) -> dict[str, int]:
    with inventory.session() as s:
        return {t.name: s.exec(select(func.count()).select_from(t)).one() for t in SQLModel.metadata.sorted_tables}


def snapshot(inventory) -> tuple[str, dict[str, int]]:
    return export(inventory, "yaml"), row_counts(inventory)


def wipe(inventory) -> None:
    with inventory.session() as s:
        for table in reversed(SQLModel.metadata.sorted_tables):
            s.exec(table.delete())


def events(inventory, kind: str) -> list:
    return [e for e in inventory.events() if e.kind == kind]


# ------------------------------------------------------------------------------------------ example
def test_example_imports_sites_power_cooling_and_nodes(inventory):
    summary = import_file(inventory, EXAMPLE, "import:alice")

    created = {kind: c.created for kind, c in summary.counts.items()}
    assert created == {"site": 3, "location": 6, "discovery_range": 4, "cooling_unit": 4, "cooling_loop": 4,
                       "switch": 6, "rack": 6, "power_panel": 6, "power_feed": 12, "pdu": 12, "outlet": 34, "node": 17}
    assert summary.totals().updated == summary.totals().unchanged == 0

    sites = {s.name: s for s in inventory.sites()}
    assert {n: (s.country_code, s.role) for n, s in sites.items()} == {
        "par1": ("FR", "primary"), "mrs1": ("FR", "secondary"), "lux1": ("LU", "backup")}
    assert "data embassy" in sites["lux1"].jurisdiction
    assert sites["par1"].locations == ["elec-1", "hall-a", "hall-b"] and sites["par1"].nodes == 10

    r01 = inventory.rack("par1/R01")
    assert (r01.location, r01.cooling_loop, r01.switch_name, r01.power_budget_watts) == (
        "hall-a", "loop-a1", "tor-r01", 17000)
    assert [(f.panel, f.name, f.side, f.phase, f.voltage, f.amperage) for f in r01.feeds] == [
        ("pp-a", "A01", "A", "three", 400, 32), ("pp-b", "B01", "B", "three", 400, 32)]
    assert [(p.name, p.feed) for p in r01.pdus] == [("pdu-r01-a", "pp-a/A01"), ("pdu-r01-b", "pp-b/B01")]
    b_outlets = r01.pdus[1].outlets
    assert (b_outlets[4].index, b_outlets[4].node, b_outlets[4].psu, b_outlets[4].feed) == (
        5, "par1-r01-u20", "PSU2", "pp-b/B01")  # an outlet's feed defaults to its PDU's
    assert {u.u: u.node for u in r01.elevation if u.node} == {
        10: "par1-r01-u10", 11: "par1-r01-u11", 12: "par1-r01-u12", 13: "par1-r01-u13",
        20: "par1-r01-u20", 21: "par1-r01-u20"}

    loops = {(loop.site, loop.name): (loop.cooling_unit, loop.racks) for loop in inventory.cooling_loops()}
    assert loops[("par1", "loop-a1")] == ("cdu-a1", ["R01", "R02"])
    assert loops[("lux1", "loop-l1")] == ("cdu-l1", ["L01"])

    legacy = next(p for p in inventory.pdus("lux1") if p.name == "pdu-l01-b")
    assert legacy.protocol == "snmp" and [o.node for o in legacy.outlets] == [
        "lux1-l01-u10", "lux1-l01-u12", "lux1-l01-u14"]

    node = inventory.node("9FJ3M82")
    assert (node.name, node.rack, node.position, node.u_height, node.state, node.expected_power_watts) == (
        "par1-r01-u20", "R01", 20, 2, NodeState.PLANNED, 900)
    assert {n.state for n in inventory.nodes()} == {"planned"}

    applied = events(inventory, "import.applied")
    assert len(applied) == 1 and applied[0].actor == "import:alice"
    assert applied[0].details["node"] == {"created": 17, "updated": 0, "unchanged": 0}
    placed = events(inventory, "node.placed")
    assert len(placed) == 17 and {e.actor for e in placed} == {"import:alice"}
    assert next(e for e in placed if e.subject == "node/9FJ3M82").details["to"] == "par1/R01 U20-U21 front"


def test_example_is_coherent(inventory):
    """Each feed alone carries its rack's budget (2N), and the declared nodes fit in the budget."""
    import_file(inventory, EXAMPLE, "test")
    for rack in inventory.racks():
        assert sorted(f.side for f in rack.feeds) == ["A", "B"], rack.name
        assert all(f.capacity_watts >= rack.power_budget_watts for f in rack.feeds), rack.name
        with inventory.session() as s:
            expected = s.exec(select(func.sum(Node.expected_power_watts))
                              .where(Node.rack_id == inventory.rack_by_ref(s, rack.name).id)).one()
        assert 0 < expected <= rack.power_budget_watts, rack.name
        pdus = inventory.rack(f"{rack.site}/{rack.name}").pdus
        assert len(pdus) == 2
        # every node in the rack has PSU1 on the A PDU and PSU2 on the B PDU
        wired = {(o.node, o.psu) for p in pdus for o in p.outlets}
        assert wired == {(n.name, psu) for n in inventory.nodes(rack=rack.name) for psu in ("PSU1", "PSU2")}


# ---------------------------------------------------------------------------------------- idempotence
def test_importing_twice_changes_nothing(inventory):
    import_file(inventory, EXAMPLE, "test")
    before = snapshot(inventory)

    again = import_file(inventory, EXAMPLE, "test")

    assert not again.changed
    assert again.totals().unchanged == 114
    assert snapshot(inventory) == before  # no new rows, not even an event


def test_changes_are_applied_and_placements_may_swap(inventory):
    import_file(inventory, EXAMPLE, "test")
    doc = yaml.safe_load(EXAMPLE.read_text())
    par1 = next(site for site in doc["sites"] if site["name"] == "par1")
    nodes = {n["serial"]: n for n in par1["nodes"]}
    nodes["7H2K9Q3"]["position"], nodes["7H2K9Q4"]["position"] = 11, 10  # swap U10 and U11
    par1["racks"][0]["power_budget_watts"] = 16000

    summary = import_text(inventory, yaml.safe_dump(doc), "edited.yaml", "cli:bob")

    assert (summary.counts["node"].updated, summary.counts["rack"].updated, summary.totals().created) == (2, 1, 0)
    elevation = {u.u: u.node for u in inventory.rack("par1/R01").elevation if u.node}
    assert (elevation[10], elevation[11]) == ("par1-r01-u11", "par1-r01-u10")
    moves = {e.subject: (e.details["from"], e.details["to"], e.actor) for e in events(inventory, "node.placed")
             if e.actor == "cli:bob"}
    assert moves == {"node/7H2K9Q3": ("par1/R01 U10 front", "par1/R01 U11 front", "cli:bob"),
                     "node/7H2K9Q4": ("par1/R01 U11 front", "par1/R01 U10 front", "cli:bob")}
    assert inventory.rack("par1/R01").power_budget_watts == 16000


def test_a_discovered_node_keeps_its_state_and_what_the_file_leaves_out(inventory):
    with inventory.session() as s:
        s.add(Node(serial="SN-0001", state=NodeState.DISCOVERED, manufacturer="Dell Inc.", model="PowerEdge R660",
                   uuid="4c4c4544-0031-3010-8035-b7c04f4d3133", bmc_address="10.10.1.10", bmc_protocol="redfish"))
    text = """
sites:
  - name: par1
    country_code: FR
    jurisdiction: France
    role: primary
    locations: [{name: hall-a}]
    racks: [{name: R01, location: hall-a}]
    nodes:
      - {serial: SN-0001, name: par1-r01-u10, rack: R01, position: 10, asset_tag: AT-1}
      - {serial: SN-0002, name: par1-r01-u11, rack: R01, position: 11}
"""
    summary = import_text(inventory, text, "declared.yaml", "test")

    assert (summary.counts["node"].created, summary.counts["node"].updated) == (1, 1)
    found = inventory.node("SN-0001")
    assert (found.state, found.manufacturer, found.bmc_address) == ("discovered", "Dell Inc.", "10.10.1.10")
    assert (found.site, found.rack, found.position, found.name, found.asset_tag) == (
        "par1", "R01", 10, "par1-r01-u10", "AT-1")
    assert inventory.node("SN-0002").state == "planned"
    # the export carries the discovered node with its placement, and the CSV its discovered fields
    exported = yaml.safe_load(export(inventory, "yaml"))["sites"][0]["nodes"]
    assert exported[0] == {"serial": "SN-0001", "name": "par1-r01-u10", "rack": "R01", "position": 10,
                           "u_height": 1, "face": "front", "asset_tag": "AT-1", "manufacturer": "Dell Inc.",
                           "model": "PowerEdge R660"}
    rows = list(csv.DictReader(io.StringIO(export(inventory, "csv"))))
    assert (rows[0]["serial"], rows[0]["state"], rows[0]["bmc_address"], rows[0]["bmc_protocol"],
            rows[0]["uuid"]) == ("SN-0001", "discovered", "10.10.1.10", "redfish",
                                 "4c4c4544-0031-3010-8035-b7c04f4d3133")


# ---------------------------------------------------------------------------------------- round trips
def test_yaml_export_imports_into_an_empty_database_and_exports_the_same(inventory):
    import_file(inventory, EXAMPLE, "test")
    first = export(inventory, "yaml")
    counts = row_counts(inventory)
    wipe(inventory)
    assert row_counts(inventory)["site"] == 0

    import_text(inventory, first, "export.yaml", "test")

    assert export(inventory, "yaml") == first
    assert row_counts(inventory) == counts
    assert yaml.safe_load(first)["sites"][1]["switches"] == [
        {"name": "tor-m01", "address": "10.20.8.31", "protocol": "snmp", "credential": "switch-snmpv3",
         "insecure_community_waiver": False},
        {"name": "tor-m02", "address": "10.20.8.32", "protocol": "snmp", "credential": "switch-snmpv3",
         "insecure_community_waiver": False}]


def test_json_export_is_the_same_document_and_imports_back(inventory):
    import_file(inventory, EXAMPLE, "test")
    exported = export(inventory, "json")
    document = json.loads(exported)
    assert document == yaml.safe_load(export(inventory, "yaml"))
    assert [s["name"] for s in document["sites"]] == ["lux1", "mrs1", "par1"]
    assert len([n for s in document["sites"] for n in s["nodes"]]) == 17
    wipe(inventory)
    import_text(inventory, exported, "export.json", "test")
    assert export(inventory, "json") == exported


def test_csv_neutralises_formulas(inventory):
    text = """
sites:
  - name: par1
    country_code: FR
    jurisdiction: France
    role: primary
    locations: [{name: hall-a}]
    racks: [{name: R01, location: hall-a}]
    nodes:
      - {serial: SN-1, name: "=cmd|' /C calc'!A0", rack: R01, position: 1, asset_tag: "+1"}
      - {serial: SN-2, name: plain, rack: R01, position: 2, asset_tag: "-2", model: "\\tTab"}
      - {serial: SN-3, rack: R01, position: 3, asset_tag: "@x", manufacturer: "\\rCR"}
"""
    import_text(inventory, text, "evil.yaml", "test")

    rows = list(csv.DictReader(io.StringIO(export(inventory, "csv"))))

    assert [r["serial"] for r in rows] == ["SN-1", "SN-2", "SN-3"]
    assert rows[0]["name"] == "'=cmd|' /C calc'!A0"
    assert [r["asset_tag"] for r in rows] == ["'+1", "'-2", "'@x"]
    assert (rows[1]["model"], rows[2]["manufacturer"]) == ("'\tTab", "'\rCR")
    assert (rows[1]["name"], rows[0]["position"], rows[0]["site"]) == ("plain", "1", "par1")
    assert list(rows[0]) == ["site", "location", "rack", "position", "u_height", "face", "name", "serial", "uuid",
                             "asset_tag", "manufacturer", "model", "state", "bmc_address", "bmc_protocol"]


# ------------------------------------------------------------------------------------- refused files
@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_a_refused_file_names_file_line_and_field_and_writes_nothing(inventory, path):
    import_file(inventory, EXAMPLE, "test")
    before = snapshot(inventory)
    lines = path.read_text().splitlines()
    bad_line = next(i for i, line in enumerate(lines, 1) if "# bad" in line)

    with pytest.raises(ImportFailed) as failed:
        import_file(inventory, path, "test")

    assert len(failed.value.problems) == 1, str(failed.value)
    problem = failed.value.problems[0]
    assert (problem.file, problem.line) == (str(path), bad_line), str(problem)
    assert str(failed.value).startswith(f"{path}:{bad_line}: {problem.field}: ")
    key = lines[bad_line - 1].split("#")[0]
    assert problem.field.startswith("(") or problem.field.rsplit(".", 1)[-1] in key, str(problem)
    assert snapshot(inventory) == before
    assert not Path("/tmp/baie-pwned").exists()


@pytest.mark.parametrize("path,field,message", [
    ("unknown_key.yaml", "sites[0].pdus[0].community", "unknown key"),
    ("bad_enum.yaml", "sites[0].power_panels[0].feeds[1].side", "Input should be 'A' or 'B', got 'C'"),
    ("overlapping_positions.yaml", "sites[0].nodes[1].position", "rack T01 U11 is already occupied by tst1-t01-u10"),
    ("position_outside_rack.yaml", "sites[0].nodes[1].position", "U42-U43 does not fit rack T01 (1-42)"),
    ("duplicate_serial.yaml", "sites[0].nodes[1].serial", "serial 'TST-0001' is already used at sites[0].nodes[0]"),
    ("unknown_rack.yaml", "sites[0].nodes[1].rack", "no rack 'T99' in site tst1"),
    ("unknown_switch.yaml", "sites[0].racks[1].switch", "no switch 'tor-t02' in site tst1"),
    ("unknown_outlet_node.yaml", "sites[0].pdus[0].outlets[1].node", "no node with serial 'NO-SUCH-SERIAL'"),
    ("bad_cidr.yaml", "sites[0].discovery[1].cidr", "10.40.1.1/24 has host bits set"),
    ("bad_country_code.yaml", "sites[1].country_code", "ISO 3166-1 alpha-2"),
    ("python_tag.yaml", "(yaml)", "could not determine a constructor for the tag"),
    ("not_a_mapping.yaml", "(document)", "must be a mapping"),
])
def test_refusals_say_why(inventory, path, field, message):
    with pytest.raises(ImportFailed) as failed:
        import_file(inventory, DATA / "bad" / path, "test")
    assert failed.value.problems[0].field == field
    assert message in failed.value.problems[0].message
    assert row_counts(inventory)["site"] == 0


def test_every_problem_is_reported_at_once(inventory):
    text = """sites:
  - name: tst1
    country_code: fr
    jurisdiction: France
    role: primary
    locations: [{name: hall-t}]
    racks:
      - {name: T01, location: hall-x}
      - {name: T02, location: hall-t, colour: blue}
"""
    with pytest.raises(ImportFailed) as failed:
        import_text(inventory, text, "many.yaml", "test")
    assert [str(p) for p in failed.value.problems] == [
        "many.yaml:3: sites[0].country_code: must be an ISO 3166-1 alpha-2 code (two capital letters), got 'fr'",
        "many.yaml:9: sites[0].racks[1].colour: unknown key",
    ]
    text = text.replace("country_code: fr", "country_code: FR").replace(", colour: blue", "")
    text += "      - {name: T03, location: hall-y}\n"
    with pytest.raises(ImportFailed) as failed:
        import_text(inventory, text, "many.yaml", "test")
    assert [str(p) for p in failed.value.problems] == [
        "many.yaml:8: sites[0].racks[0].location: no location 'hall-x' in site tst1",
        "many.yaml:10: sites[0].racks[2].location: no location 'hall-y' in site tst1",
    ]
    assert row_counts(inventory) == {name: 0 for name in row_counts(inventory)}


def test_a_missing_key_points_at_its_row(inventory):
    text = "sites:\n  - name: tst1\n    country_code: FR\n    role: primary\n"
    with pytest.raises(ImportFailed, match=r"^x.yaml:2: sites\[0\].jurisdiction: required$"):
        import_text(inventory, text, "x.yaml", "test")


def test_a_name_or_tag_held_by_another_node_in_the_database_is_refused(inventory):
    import_file(inventory, EXAMPLE, "test")
    before = snapshot(inventory)
    text = EXAMPLE.read_text().replace("{serial: 6CT4PZ3, name: lux1-l01-u14,", "{serial: 6CT4PZ9, name: lux1-l01-u14,")
    with pytest.raises(ImportFailed) as failed:
        import_text(inventory, text, "clash.yaml", "test")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "6CT4PZ9" in row and "serial" in row)
    assert [str(p) for p in failed.value.problems] == [
        f"clash.yaml:{line}: sites[2].nodes[2].name: 'lux1-l01-u14' is already the name of node 6CT4PZ3"]
    assert snapshot(inventory) == before


def test_a_file_that_is_not_utf8_is_refused(inventory, tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"sites:\n  - name: caf\xe9\n")
    with pytest.raises(ImportFailed, match=r"latin1.yaml:2: \(file\): not UTF-8 text"):
        import_file(inventory, path, "test")

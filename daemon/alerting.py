"""Alert rules, evaluated every ``alerts.interval``, and the leak policy.

Built-in rules read the state the other loops keep: nodes' BMC state, the latest readings, rack power, loop
cooling and events. User rules (``[[alerts.rules]]``) compare the latest value of each series of a metric
with a threshold. Every condition that holds goes to :func:`inventory.alerts.apply`, which keeps the alert
state and writes the webhook outbox in one transaction; daemon.webhooks delivers it.

A coolant leak alert that starts firing applies its loop's ``alerts.leak_policy``: none (default), cordon
(the served nodes go to maintenance, with an event each) or power-off (through PowerService, which records
each action as an event).
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

import structlog
from sqlalchemy.exc import SQLAlchemyError

from daemon.bmc import PowerService
from daemon.config import BuiltinRuleSettings, Settings, UserRule
from daemon.executor import blocking
from drivers.base import Metric, PowerAction
from inventory.alerts import (
    BUILTIN_RULES,
    AlertView,
    Condition,
    LeakPolicy,
    apply,
    cordon,
    latest_events,
    nodes_in_bmc_states,
    render_summary,
)
from inventory.model import BmcState, utcnow
from inventory.service import Inventory
from inventory.telemetry import MAX_AGE, CoolingWarning, Latest, latest, loop_cooling, rack_power
from inventory.views import LoopCoolingView

log = structlog.get_logger("baie.alerts")

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}
BMC_RULES: dict[str, tuple[BmcState, str]] = {
    "bmc_unreachable": (BmcState.UNREACHABLE, "does not answer"),
    "bmc_auth_failed": (BmcState.AUTH_FAILED, "refuses our credentials"),
    "bmc_certificate_changed": (BmcState.TLS_MISMATCH, "presents a certificate other than the pinned one"),
}
# Cooling rules: the loop_cooling warning each stands for, and its summary (formatted with the loop's view).
COOLING_RULES: dict[str, tuple[CoolingWarning, str]] = {
    "coolant_leak": (CoolingWarning.LEAK, "Coolant leak at CDU {cooling_unit}, loop {loop} ({site}): "
                                          "detectors {detectors}; serves racks {racks}; nodes {nodes}"),
    "cdu_supply_temperature_high": (CoolingWarning.SUPPLY_TEMPERATURE_HIGH,
                                    "Loop {loop} (CDU {cooling_unit}, {site}) supplies coolant at "
                                    "{supply_temperature_c:.1f} °C, above {supply_temperature_max_c:g} °C"),
    "cdu_flow_low": (CoolingWarning.FLOW_LOW, "Loop {loop} (CDU {cooling_unit}, {site}) flows "
                                              "{flow_lpm:.1f} l/min, below {flow_min_lpm:g} l/min"),
    "cdu_pump_failed": (CoolingWarning.PUMP_FAILED, "Pump {pumps} of CDU {cooling_unit} failed (loop {loop}, {site})"),
}
EVENT_RULES: dict[str, str] = {"hardware_drift": "hardware.drift", "placement_mismatch": "placement.mismatch"}


@dataclass
class Facts:
    """What the rules read at one evaluation, each fetched once."""

    inventory: Inventory
    now: datetime

    @cached_property
    def racks(self):
        return rack_power(self.inventory, now=self.now)

    @cached_property
    def loops(self) -> list[LoopCoolingView]:
        return loop_cooling(self.inventory, now=self.now)

    def latest(self, metric: str, **match: str) -> list[Latest]:
        return list(latest(self.inventory, [metric], self.now - MAX_AGE, self.now, **match).values())


@dataclass(frozen=True)
class Rule:
    """A built-in rule with its configured severity and threshold."""

    name: str
    severity: str
    threshold: float | None
    interval: timedelta  # between evaluations

    def condition(self, labels: dict[str, str], summary: str, details: dict | None = None,
                  for_: timedelta = timedelta(0)) -> Condition:
        return Condition(self.severity, {"rule": self.name, **labels}, summary, details or {}, for_)


def _where(site: str | None, rack: str | None) -> dict[str, str]:
    return {key: value for key, value in (("site", site), ("rack", rack)) if value}


def bmc(facts: Facts, rule: Rule) -> Iterator[Condition]:
    state, what = BMC_RULES[rule.name]
    # bmc_unreachable's threshold: evaluations in a row that saw it unreachable
    for_ = rule.interval * (rule.threshold - 1) if rule.threshold else timedelta(0)
    for node, site, rack in nodes_in_bmc_states(facts.inventory, [state]):
        label = node.name or node.serial or node.uuid or node.bmc_address
        yield rule.condition({**_where(site, rack), "node": label},
                             f"BMC {node.bmc_address} of node {label} {what}",
                             {"bmc_address": node.bmc_address, "bmc_protocol": node.bmc_protocol}, for_)


def psu_failed(facts: Facts, rule: Rule) -> Iterator[Condition]:
    for reading in facts.latest(Metric.PSU_OK):
        if reading.value == 0:
            labels = reading.labels
            yield rule.condition(labels, f"PSU {labels.get('psu', '?')} of node {labels.get('node', '?')} failed",
                                 {"reported_at": reading.time.isoformat()})


def rack_redundancy_lost(facts: Facts, rule: Rule) -> Iterator[Condition]:
    for rack in facts.racks:
        if rack.redundant is False:
            feeds = ", ".join(f"{f.side} {f.feed} {f.capacity_watts:.0f} W" for f in rack.feeds)
            yield rule.condition({"site": rack.site, "rack": rack.rack},
                                 f"Rack {rack.site}/{rack.rack} draws {rack.draw_watts:.0f} W: more than one feed "
                                 f"side can carry alone ({feeds})",
                                 {"draw_watts": rack.draw_watts, "feeds": [f.model_dump() for f in rack.feeds]})


def rack_over_budget(facts: Facts, rule: Rule) -> Iterator[Condition]:
    for rack in facts.racks:
        if rack.budget_watts and rack.draw_watts is not None \
                and rack.draw_watts > rack.budget_watts * rule.threshold / 100:
            yield rule.condition({"site": rack.site, "rack": rack.rack},
                                 f"Rack {rack.site}/{rack.rack} draws {rack.draw_watts:.0f} W, over "
                                 f"{rule.threshold:g} % of its {rack.budget_watts:.0f} W budget",
                                 {"draw_watts": rack.draw_watts, "budget_watts": rack.budget_watts})


def inlet_temperature_high(facts: Facts, rule: Rule) -> Iterator[Condition]:
    for reading in facts.latest(Metric.INLET_TEMPERATURE_CELSIUS):
        if reading.value > rule.threshold:
            yield rule.condition(reading.labels, f"Inlet of node {reading.labels.get('node', '?')} at "
                                 f"{reading.value:.1f} °C, above {rule.threshold:g} °C",
                                 {"value": reading.value, "reported_at": reading.time.isoformat()})


def cooling(facts: Facts, rule: Rule) -> Iterator[Condition]:
    warning, summary = COOLING_RULES[rule.name]
    for loop in facts.loops:
        if warning in loop.warnings:
            view = loop.model_dump()
            details = {key: view[key] for key in ("cooling_unit", "loop", "racks", "nodes", "leak_detectors",
                                                  "supply_temperature_c", "flow_lpm")}
            text = summary.format_map({**view, "detectors": ", ".join(loop.leak_detectors) or "?",
                                       "pumps": ", ".join(p.name for p in loop.pumps if not p.ok),
                                       "racks": ", ".join(loop.racks) or "none",
                                       "nodes": ", ".join(loop.nodes) or "none"})
            yield rule.condition({"site": loop.site, "cdu": loop.cooling_unit, "loop": loop.loop}, text, details)


def event(facts: Facts, rule: Rule) -> Iterator[Condition]:
    for found in latest_events(facts.inventory, EVENT_RULES[rule.name], facts.now - timedelta(seconds=rule.threshold)):
        yield rule.condition({"subject": found.subject}, f"{found.subject}: {found.message}",
                             {"event_id": found.id, "time": found.time.isoformat(), "actor": found.actor,
                              **found.details})


BUILTINS: dict[str, Callable[[Facts, Rule], Iterator[Condition]]] = {
    **dict.fromkeys(BMC_RULES, bmc),
    "psu_failed": psu_failed,
    "rack_redundancy_lost": rack_redundancy_lost,
    "rack_over_budget": rack_over_budget,
    "inlet_temperature_high": inlet_temperature_high,
    **dict.fromkeys(COOLING_RULES, cooling),
    **dict.fromkeys(EVENT_RULES, event),
}


def user_rule(facts: Facts, rule: UserRule) -> Iterator[Condition]:
    compare = OPERATORS[rule.op]
    for reading in facts.latest(rule.metric, **rule.match):
        if compare(reading.value, rule.threshold):
            labels = {**reading.labels, **rule.labels, "rule": rule.name}
            yield Condition(rule.severity, labels, render_summary(rule.summary, labels, reading.value),
                            {"value": reading.value, "threshold": rule.threshold, "op": rule.op}, rule.for_)


class Alerting:
    def __init__(self, inventory: Inventory, settings: Settings, power: PowerService,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.inventory = inventory
        self.settings = settings.alerts
        self.targets = {target.name: target.url for target in settings.webhooks}
        self.power = power
        self.clock = clock
        self.failing = False  # the last evaluation failed on the database: logged once, and once on recovery
        self.rules = []
        for name, default in BUILTIN_RULES.items():
            configured = self.settings.builtin.get(name, BuiltinRuleSettings())
            if configured.enabled:
                self.rules.append(Rule(name, configured.severity or default.severity,
                                       default.threshold if configured.threshold is None else configured.threshold,
                                       self.settings.interval))

    def conditions(self, now: datetime) -> list[Condition]:
        facts = Facts(self.inventory, now)
        found = [c for rule in self.rules for c in BUILTINS[rule.name](facts, rule)]
        return found + [c for rule in self.settings.rules for c in user_rule(facts, rule)]

    async def evaluate(self) -> list[AlertView]:
        """One evaluation: the alerts that started firing (their notifications are in the outbox)."""
        now = self.clock()
        try:
            conditions = await blocking(self.conditions, now)
            fired = await blocking(apply, self.inventory, conditions, now, self.targets, self.settings.policy)
        except SQLAlchemyError as exc:
            if not self.failing:
                log.error("alerts.evaluation_failed", error=str(getattr(exc, "orig", exc)).splitlines()[0])
            self.failing = True
            return []
        if self.failing:
            log.info("alerts.evaluation_recovered")
        self.failing = False
        for alert in fired:
            log.warning("alert.firing", alert=alert.id, rule=alert.rule, severity=alert.severity,
                        summary=alert.summary)
            if alert.rule == "coolant_leak":
                await self.leak_policy(alert)
        return fired

    async def leak_policy(self, alert: AlertView) -> None:
        site, loop = alert.labels["site"], alert.labels["loop"]
        policies = self.settings.leak_policy
        policy = policies.get(f"{site}/{loop}", policies.get(loop, LeakPolicy.NONE))
        nodes, actor = alert.details["nodes"], f"alerts:{alert.rule}"
        if policy == LeakPolicy.CORDON:
            done = await blocking(cordon, self.inventory, nodes, alert.summary, actor)
            log.warning("leak.cordoned", loop=f"{site}/{loop}", nodes=done)
        elif policy == LeakPolicy.POWER_OFF:
            results = await asyncio.gather(*(self.power.power(node, PowerAction.OFF, actor) for node in nodes),
                                           return_exceptions=True)
            for node, result in zip(nodes, results):
                if isinstance(result, Exception):
                    log.error("leak.power_off_failed", loop=f"{site}/{loop}", node=node, error=str(result))

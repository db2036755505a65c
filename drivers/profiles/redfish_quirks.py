"""Vendor workarounds for Redfish trees, each a named function with a fixture test.

drivers/redfish.py calls them at its edge, on replies that are still JSON; nothing else uses them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_COLLECTIONS = ("Systems", "Chassis", "Managers")
_LOWERCASE_COLLECTION = re.compile(r"^/redfish/v1/(" + "|".join(_COLLECTIONS) + r")(?=/|$)", re.IGNORECASE)


def lowercase_links_ilo5(link: str) -> str:
    """HPE iLO 5 (DL325 Gen10 Plus) hands out some links in lower case (``/redfish/v1/systems/1/bios``).

    iLO itself matches paths without regard to case, other services do not: give the top-level collection its
    canonical spelling, ``/redfish/v1/Systems/1/bios``. The rest of the path is left as the BMC wrote it.
    """
    return _LOWERCASE_COLLECTION.sub(lambda m: "/redfish/v1/" + _canonical(m.group(1)), link)


def _canonical(segment: str) -> str:
    return next(name for name in _COLLECTIONS if name.lower() == segment.lower())


def chassis_without_chassis_type(linked_chassis: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The server's enclosure among the chassis a System links to: the first that reports a ChassisType.

    Intel S2600BPB: the System's only chassis link (``/Chassis/RackMount``) answers a recorded error body, so
    it has no ChassisType, which sushy requires -- and one such member fails sushy's whole Chassis collection
    read. We read the linked chassis one at a time and skip those without a ChassisType, so chassis type and
    serial are "not reported" (None) instead of the inventory failing.
    """
    return next((c for c in linked_chassis if isinstance(c.get("ChassisType"), str)), None)


LINK_FIXUPS: tuple[Callable[[str], str], ...] = (lowercase_links_ilo5,)
"""Applied, in order, to every link the driver follows."""

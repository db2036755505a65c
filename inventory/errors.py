"""Errors of the inventory service, in terms an operator can act on."""

from __future__ import annotations


class InventoryError(Exception):
    """Base of every error the service layer raises; the message is one line, safe to show."""


class NotFound(InventoryError):
    def __init__(self, kind: str, ref: str) -> None:
        self.kind = kind
        self.ref = ref
        super().__init__(f"no {kind} matches {ref!r}")


class Ambiguous(InventoryError):
    def __init__(self, kind: str, ref: str, candidates: list[str]) -> None:
        self.kind = kind
        self.ref = ref
        self.candidates = candidates
        super().__init__(f"{kind} {ref!r} is ambiguous: {', '.join(candidates)} (qualify it as SITE/NAME)")


class Conflict(InventoryError):
    """The change would break a rule reality has: a duplicated serial, MAC, BMC address or rack position."""


class Invalid(InventoryError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")

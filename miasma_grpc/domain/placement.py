"""Swarm placement constraints (``node.labels.zone==a``), checked before Docker sees them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from miasma_grpc.domain.errors import InvalidArgument

MAX_CONSTRAINTS = 32
_CONSTRAINT = re.compile(
    r"\s*(?P<key>[A-Za-z][A-Za-z0-9_.\-]*)\s*(?P<op>==|!=)\s*(?P<value>\S+)\s*"
)


def validate_constraints(values: Iterable[str], field: str = "app.constraints") -> tuple[str, ...]:
    """Return the constraints normalised to ``key==value`` / ``key!=value``, or refuse them."""
    result: list[str] = []
    for index, text in enumerate(values):
        match = _CONSTRAINT.fullmatch(text)
        if match is None or len(text) > 256 or not text.isprintable():
            raise InvalidArgument.field(
                f"{field}[{index}]",
                f"{text[:80]!r} is not a placement constraint: use KEY==VALUE or KEY!=VALUE, "
                "e.g. node.labels.zone==a or node.hostname!=db1",
                reason="INVALID_CONSTRAINT",
            )
        result.append(f"{match['key']}{match['op']}{match['value']}")
    if len(result) > MAX_CONSTRAINTS:
        raise InvalidArgument.field(field, f"at most {MAX_CONSTRAINTS} constraints")
    return tuple(result)


@dataclass(frozen=True)
class PlacementEdit:
    """Constraints to add and to remove, in one change (``apps:edit
    --add-placement-constraint`` / ``--rm-placement-constraint``)."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()

    def applied_to(self, constraints: tuple[str, ...]) -> tuple[str, ...]:
        """``constraints`` without those removed, then with those added (each once);
        removing one the app does not have is :class:`InvalidArgument`."""
        removed = validate_constraints(self.remove, "remove_constraints")
        for index, constraint in enumerate(removed):
            if constraint not in constraints:
                raise InvalidArgument.field(
                    f"remove_constraints[{index}]",
                    f"the app has no constraint {constraint!r} (it has "
                    f"{', '.join(constraints) or 'none'})",
                )
        kept = [c for c in constraints if c not in removed]
        added = [c for c in validate_constraints(self.add, "add_constraints") if c not in kept]
        return validate_constraints([*kept, *dict.fromkeys(added)], "add_constraints")

"""Who acts on a turn. A turn order is any `Callable[[state], list[str]]` (a selector) returning the
roles that act on the turn `state["turn"]`; when it returns several, they move simultaneously: from the same
context, as parallel nodes. Roles that already left are skipped by the router whatever a selector returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

Selector = Callable[[Mapping[str, Any]], list[str]]
TurnOrder = Literal["round_robin", "simultaneous"] | Selector


def round_robin(role_names: Sequence[str]) -> Selector:
    """Turn t: role t mod n in `role_names` order, or the next one after it that has not left."""
    names = list(role_names)

    def select(state: Mapping[str, Any]) -> list[str]:
        left = set(state.get("left") or [])
        turn = state.get("turn") or 0
        for offset in range(len(names)):
            candidate = names[(turn + offset) % len(names)]
            if candidate not in left:
                return [candidate]
        return []

    return select


def simultaneous(role_names: Sequence[str]) -> Selector:
    """Every role that has not left acts on every turn, all from the same context (the OMAR setting)."""
    names = list(role_names)

    def select(state: Mapping[str, Any]) -> list[str]:
        left = set(state.get("left") or [])
        return [name for name in names if name not in left]

    return select


def resolve_turn_order(turn_order: TurnOrder, role_names: Sequence[str]) -> Selector:
    if turn_order == "round_robin":
        return round_robin(role_names)
    if turn_order == "simultaneous":
        return simultaneous(role_names)
    if callable(turn_order):
        return turn_order
    raise ValueError(
        f"turn_order: expected 'round_robin', 'simultaneous' or a callable state -> list of role names, "
        f"got {turn_order!r}"
    )


def validated_speakers(selected: object, role_names: Sequence[str], left: Sequence[str]) -> list[str]:
    """A selector's answer checked against the roles: unknown names or duplicates are errors; roles that
    left are dropped (documented: a selector need not track departures)."""
    if isinstance(selected, str) or not isinstance(selected, Sequence):
        raise ValueError(f"turn order returned {selected!r}; expected a list of role names")
    unknown = [name for name in selected if name not in role_names]
    if unknown:
        raise ValueError(f"turn order returned unknown roles {unknown}; known roles: {list(role_names)}")
    if len(set(selected)) != len(selected):
        raise ValueError(f"turn order returned a role twice: {list(selected)}")
    return [name for name in selected if name not in left]

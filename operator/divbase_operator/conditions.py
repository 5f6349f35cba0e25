"""Condition bookkeeping in the Kubernetes (metav1.Condition) shape that kstatus, Flux and `kubectl wait` read."""

from __future__ import annotations

from typing import Any


def get_condition(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == kind), None)


def set_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Returns a new list with `kind` set; lastTransitionTime moves only when the status flips."""
    value = "True" if status else "False"
    previous = get_condition(conditions, kind)
    transition = previous["lastTransitionTime"] if previous and previous.get("status") == value else now
    updated = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": transition,
    }
    result = [c for c in conditions if c.get("type") != kind]
    result.append(updated)
    return result


def is_true(conditions: list[dict[str, Any]], kind: str) -> bool:
    cond = get_condition(conditions, kind)
    return bool(cond and cond.get("status") == "True")

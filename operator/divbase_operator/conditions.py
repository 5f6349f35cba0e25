"""Condition bookkeeping in the Kubernetes (metav1.Condition) shape that kstatus, Flux and `kubectl wait` read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import names


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


def in_display_order(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ready, Reconciling, Stalled, then the steps: the order `kubectl describe` readers expect."""
    order = {kind: i for i, kind in enumerate(names.CONDITION_TYPES)}
    return sorted(conditions, key=lambda c: order.get(c["type"], 99))


@dataclass(frozen=True)
class Readiness:
    """The three kstatus conditions of one outcome, set together so they never contradict each other: Ready
    (rolled out), Reconciling (working towards it), Stalled (cannot get there without someone acting)."""

    ready: tuple[bool, str, str]  # (status, reason, message) of each
    reconciling: tuple[bool, str, str]
    stalled: tuple[bool, str, str]

    @classmethod
    def is_ready(cls, message: str) -> Readiness:
        """Rolled out and serving: nothing left to do."""
        return cls(
            (True, names.REASON_RECONCILED, message),
            (False, names.REASON_UP_TO_DATE, ""),
            (False, names.REASON_PROGRESSING, ""),
        )

    @classmethod
    def is_stalled(cls, reason: str, message: str, ready_message: str | None = None) -> Readiness:
        """Cannot progress until the spec, an annotation or another object changes."""
        return cls(
            (False, reason, message if ready_message is None else ready_message),
            (False, reason, "stalled"),
            (True, reason, message),
        )

    @classmethod
    def is_progressing(
        cls,
        reason: str,
        message: str,
        ready_message: str,
        reconciling: bool = True,
        stalled_reason: str = names.REASON_PROGRESSING,
    ) -> Readiness:
        """On its way (or, `reconciling` False, deliberately holding: paused): Ready says why it is not yet."""
        return cls((False, reason, ready_message), (reconciling, reason, message), (False, stalled_reason, ""))

    def apply(self, conditions: list[dict[str, Any]], generation: int, now: str) -> list[dict[str, Any]]:
        """`conditions` with Ready, Reconciling and Stalled set to this, in display order."""
        for kind, (status, reason, message) in (
            (names.COND_READY, self.ready),
            (names.COND_RECONCILING, self.reconciling),
            (names.COND_STALLED, self.stalled),
        ):
            conditions = set_condition(conditions, kind, status, reason, message, generation, now)
        return in_display_order(conditions)

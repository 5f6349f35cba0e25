"""What the operator lets a DivBaseDatabase ask for: set by the operator's own flags (chart values), never by the
resource, and checked by the planner before it acts (pure).

Writing a DivBaseDatabase runs pods from an image of the writer's choice, with a ServiceAccount and Secrets of the
writer's choice, in the resource's namespace (docs/security.md): the same power as writing a Deployment there.
These checks keep it at that: nothing in the operator's own namespace (whose ServiceAccount holds the operator's
rights), and, optionally, only listed image repositories and ServiceAccounts."""

from __future__ import annotations

from dataclasses import dataclass

from . import names
from .spec import DatabaseSpec


@dataclass(frozen=True)
class Refusal:
    reason: str  # condition reason (names.REASON_*)
    message: str


@dataclass(frozen=True)
class Policy:
    own_namespace: str | None = None  # the operator's namespace: resources there are refused (None: unknown)

    def refusal(self, namespace: str, spec: DatabaseSpec | None) -> Refusal | None:
        """Why the operator will not act on this resource, or None."""
        if self.own_namespace and namespace == self.own_namespace:
            return Refusal(names.REASON_OPERATOR_NAMESPACE, (
                f"divbase-operator does not manage DivBaseDatabases in its own namespace {namespace!r}: their Jobs "
                f"and workloads could run as its ServiceAccount, whose rights reach every namespace it watches. "
                f"Create the resource in the application's namespace (docs/security.md)"))
        return None

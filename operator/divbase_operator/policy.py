"""What the operator lets a DivBaseDatabase ask for: set by the operator's own flags (chart values `policy.*`),
never by the resource, and checked by the planner before it acts (pure).

Writing a DivBaseDatabase runs pods from an image, with a ServiceAccount and Secrets of the writer's choice, in
the resource's namespace (docs/security.md): the power of writing a Deployment there. These checks keep it at
that, or narrower: nothing in the operator's own namespace (whose ServiceAccount holds the operator's rights), no
pod with the node's powers unless `allow_privileged_workloads` (spec.privileged_errors), and, when the lists are
set, only listed image repositories and ServiceAccounts."""

from __future__ import annotations

from dataclasses import dataclass

from . import names
from .spec import DatabaseSpec, image_repository, images_of, service_accounts_of


@dataclass(frozen=True)
class Refusal:
    reason: str  # condition reason (names.REASON_*)
    message: str


@dataclass(frozen=True)
class Policy:
    own_namespace: str | None = None  # the operator's namespace: resources there are refused (None: unknown)
    allow_privileged_workloads: bool = False  # host namespaces, hostPath, privileged, added capabilities...
    allowed_image_repositories: tuple[str, ...] = ()  # empty: any; `repo` exactly, or every repo under `prefix/`
    allowed_service_accounts: tuple[str, ...] = ()  # empty: any; the namespace's `default` is always allowed

    def namespace_refusal(self, namespace: str) -> Refusal | None:
        if self.own_namespace and namespace == self.own_namespace:
            return Refusal(
                names.REASON_OPERATOR_NAMESPACE,
                (
                    f"divbase-operator does not manage DivBaseDatabases in its own namespace {namespace!r}: their Jobs "
                    f"and workloads could run as its ServiceAccount, whose rights reach every namespace it watches. "
                    f"Create the resource in the application's namespace (docs/security.md)"
                ),
            )
        return None

    def image_allowed(self, image: str) -> bool:
        if not self.allowed_image_repositories:
            return True
        repository = image_repository(image)
        return any(
            repository == allowed or (allowed.endswith("/") and repository.startswith(allowed))
            for allowed in self.allowed_image_repositories
        )

    def service_account_allowed(self, name: str) -> bool:
        return not self.allowed_service_accounts or name == "default" or name in self.allowed_service_accounts

    def spec_refusal(self, spec: DatabaseSpec) -> Refusal | None:
        """The allow-lists: every field that names an image or a ServiceAccount outside them."""
        problems = [
            f"spec.{field}: repository {image_repository(image)!r} is not allowed"
            for field, image in images_of(spec)
            if not self.image_allowed(image)
        ]
        if problems:
            problems.append(f"allowed: {', '.join(self.allowed_image_repositories)}")
        accounts = [
            f"spec.{field}: ServiceAccount {name!r} is not allowed"
            for field, name in service_accounts_of(spec)
            if not self.service_account_allowed(name)
        ]
        if accounts:
            problems += [*accounts, f"allowed: default, {', '.join(self.allowed_service_accounts)}"]
        if not problems:
            return None
        return Refusal(
            names.REASON_NOT_ALLOWED,
            "; ".join(problems) + " (divbase-operator's --allowed-image-repository / --allowed-service-account)",
        )

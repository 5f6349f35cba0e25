"""`divbase-operator`: runs the Kopf operator with production settings (JSON logs, liveness, leader election)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import kopf

from . import names
from .policy import Policy

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="divbase-operator",
        description="Watches DivBaseDatabase resources and rolls DivBase releases out as expand -> deploy -> "
        "contract, each step gated on the one before.",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        help="watch only this namespace (repeatable; default: every namespace). "
        "Env: DIVBASE_WATCH_NAMESPACES, comma-separated.",
    )
    parser.add_argument(
        "--liveness",
        default=os.environ.get("DIVBASE_LIVENESS", "http://0.0.0.0:8080/healthz"),
        help="liveness endpoint URL (default %(default)s); 'off' disables it",
    )
    parser.add_argument(
        "--leader-election",
        action="store_true",
        default=os.environ.get("DIVBASE_LEADER_ELECTION", "").lower() in ("1", "true", "yes"),
        help="elect one active replica through a coordination.k8s.io Lease (needed to run more "
        "than one replica; env DIVBASE_LEADER_ELECTION=true). Default: standalone.",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("POD_NAMESPACE") or None,
        help="namespace of the Lease (default: $POD_NAMESPACE, the pod's own namespace, or the only --namespace)",
    )
    parser.add_argument(
        "--leader-election-lease", default=names.LEASE_NAME, help="name of the Lease (default %(default)s)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("DIVBASE_METRICS_PORT", "9090")),
        help="Prometheus metrics port (default %(default)s; 0 disables)",
    )
    parser.add_argument("--metrics-address", default="0.0.0.0", help="address the metrics server binds")
    parser.add_argument(
        "--watch-timeout",
        type=int,
        default=int(os.environ.get("DIVBASE_WATCH_TIMEOUT", "300")),
        help="seconds a watch request may last before it is re-opened (default %(default)s). A watch "
        "that goes silent (a dropped connection nobody reset) is abandoned after this plus a "
        "margin, so it bounds how long a lost event can go unnoticed.",
    )
    parser.add_argument(
        "--allow-privileged-workloads",
        action="store_true",
        default=os.environ.get("DIVBASE_ALLOW_PRIVILEGED_WORKLOADS", "").lower() in ("1", "true"),
        help="let workload templates ask for what Pod Security baseline forbids: host "
        "namespaces, hostPath volumes, host ports, privileged containers, added capabilities, "
        "unconfined seccomp/AppArmor, SELinux options, unsafe sysctls, ... (refused by default: "
        "docs/security.md)",
    )
    parser.add_argument(
        "--allowed-image-repository",
        action="append",
        metavar="REPO",
        help="run only images of this repository (`ghcr.io/org/app`), or of every repository "
        "under a prefix ending in `/` (`ghcr.io/org/`); repeatable. Default: any",
    )
    parser.add_argument(
        "--allowed-service-account",
        action="append",
        metavar="NAME",
        help="let pods run only as this ServiceAccount (or the namespace's `default`); repeatable. Default: any",
    )
    parser.add_argument(
        "--log-format", choices=["json", "plain", "full"], default=os.environ.get("DIVBASE_LOG_FORMAT", "json")
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if args.leader_election and not args.leader_election_namespace:
        args.leader_election_namespace = _own_namespace() or (
            args.namespace[0] if args.namespace and len(args.namespace) == 1 else None
        )
        if not args.leader_election_namespace:
            parser.error(
                "--leader-election needs --leader-election-namespace (or POD_NAMESPACE): where to keep the Lease"
            )
    return args


def policy_from_args(args: argparse.Namespace) -> Policy:
    """What resources may ask for: the operator's own namespace (refused) comes from $POD_NAMESPACE or the
    ServiceAccount's namespace file, i.e. where the operator runs; unknown when it runs outside a pod."""
    return Policy(
        own_namespace=os.environ.get("POD_NAMESPACE") or _own_namespace(),
        allow_privileged_workloads=args.allow_privileged_workloads,
        allowed_image_repositories=tuple(args.allowed_image_repository or ()),
        allowed_service_accounts=tuple(args.allowed_service_account or ()),
    )


def _own_namespace() -> str | None:
    """In a pod, the ServiceAccount's namespace is the operator's own."""
    try:
        return SA_NAMESPACE_FILE.read_text().strip() or None
    except OSError:
        return None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    namespaces = args.namespace
    if namespaces is None and os.environ.get("DIVBASE_WATCH_NAMESPACES"):
        namespaces = [n.strip() for n in os.environ["DIVBASE_WATCH_NAMESPACES"].split(",") if n.strip()]
    log_format = {"json": kopf.LogFormat.JSON, "plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL}
    kopf.configure(verbose=args.verbose, log_format=log_format[args.log_format])
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    if not args.verbose:  # one "Handler ... succeeded" line per watch event is noise at scale
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from . import handlers  # registers the handlers with Kopf

    handlers.OPTIONS.metrics_port = args.metrics_port
    handlers.OPTIONS.metrics_address = args.metrics_address
    handlers.OPTIONS.watch_timeout = args.watch_timeout
    handlers.OPTIONS.policy = policy_from_args(args)
    if args.leader_election:
        handlers.OPTIONS.leader_election_namespace = args.leader_election_namespace
        handlers.OPTIONS.lease_name = args.leader_election_lease

    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces or [],
        liveness_endpoint=None if args.liveness == "off" else args.liveness,
        standalone=True,  # one active replica comes from our Lease, not Kopf's peering (see leader.py)
    )


if __name__ == "__main__":
    main()

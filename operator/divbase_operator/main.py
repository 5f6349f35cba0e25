"""`divbase-operator`: runs the Kopf operator with production settings (JSON logs, liveness, peering)."""

from __future__ import annotations

import argparse
import logging
import os
import secrets

import kopf


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="divbase-operator",
        description="Watches DivBaseDatabase resources and rolls DivBase releases out as expand -> deploy -> "
                    "contract, each step gated on the one before.",
    )
    parser.add_argument("-n", "--namespace", action="append", default=None,
                        help="watch only this namespace (repeatable; default: every namespace). "
                             "Env: DIVBASE_WATCH_NAMESPACES, comma-separated.")
    parser.add_argument("--liveness", default=os.environ.get("DIVBASE_LIVENESS", "http://0.0.0.0:8080/healthz"),
                        help="liveness endpoint URL (default %(default)s); 'off' disables it")
    parser.add_argument("--peering", default=os.environ.get("DIVBASE_PEERING") or None,
                        help="Kopf peering name: run several replicas, one active (needs the KopfPeering CRDs). "
                             "Default: standalone.")
    parser.add_argument("--priority", type=int, default=None,
                        help="peering priority; the highest live replica is the active one. Default: random per "
                             "replica (equal priorities make Kopf pause every replica)")
    parser.add_argument("--metrics-port", type=int, default=int(os.environ.get("DIVBASE_METRICS_PORT", "9090")),
                        help="Prometheus metrics port (default %(default)s; 0 disables)")
    parser.add_argument("--metrics-address", default="0.0.0.0", help="address the metrics server binds")
    parser.add_argument("--watch-timeout", type=float,
                        default=float(os.environ.get("DIVBASE_WATCH_TIMEOUT", "300")),
                        help="seconds a watch request may last before it is re-opened (default %(default)s). A watch "
                             "that goes silent (a dropped connection nobody reset) is abandoned after this plus a "
                             "margin, so it bounds how long a lost event can go unnoticed.")
    parser.add_argument("--log-format", choices=["json", "plain", "full"],
                        default=os.environ.get("DIVBASE_LOG_FORMAT", "json"))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


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

    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces or [],
        liveness_endpoint=None if args.liveness == "off" else args.liveness,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority if args.priority is not None else secrets.randbelow(2**31 - 1) + 1,
    )


if __name__ == "__main__":
    main()

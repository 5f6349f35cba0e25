"""`divbase-localcluster {build,up,down,status,env}`: a real Kubernetes control plane on 127.0.0.1."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import build
from .cluster import ClusterError, LocalCluster, default_state_dir


def _state(args: argparse.Namespace) -> LocalCluster:
    return LocalCluster(args.state_dir or default_state_dir(), node_name=getattr(args, "node_name", None)
                        or "divbase-node-0")  # fmt: skip


def cmd_build(args: argparse.Namespace) -> int:
    start = time.monotonic()
    bins = build.build(force=args.force)
    print(f"binaries in {bins.bin_dir} ({time.monotonic() - start:.1f} s; cache key {build.cache_key()})")
    timings = build.build_dir() / "timings.json"
    if timings.exists():
        print(f"last cold build timings: {json.loads(timings.read_text()).get('build', {}).get('seconds')}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    cluster = _state(args)
    info = cluster.up(node=not args.no_node, kwok_nodes=args.kwok, timeout=args.timeout,
                      image_map=args.image_map)  # fmt: skip
    print(f"cluster {build.K8S_VERSION} ready in {info.seconds_to_ready:.1f} s at {info.server}", file=sys.stderr)
    print(f"  ready at (s): {info.phase_seconds}; logs in {info.log_dir}", file=sys.stderr)
    if info.node_name:
        print(f"node {info.node_name} Ready (agent log {info.log_dir / 'node-agent.log'})", file=sys.stderr)
    if info.kwok_nodes:
        print(f"{len(info.kwok_nodes)} kwok nodes: {', '.join(info.kwok_nodes[:5])}...", file=sys.stderr)
    print(f"export KUBECONFIG={info.kubeconfig}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    cluster = _state(args)
    result = cluster.down(remove_state=not args.keep_state)
    for name, what in result.items():
        print(f"{name}: {what}", file=sys.stderr)
    print(f"cluster at {cluster.state_dir} is down", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = _state(args).status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(f"{'up' if status['up'] else 'DOWN'}: {status['state_dir']}")
        for name, alive in status["processes"].items():
            print(f"  {name:<24} {'running' if alive else 'not running'}")
        print(f"  {'readyz':<24} {'ok' if status['readyz'] else 'no answer'}")
    return 0 if status["up"] else 1


def cmd_env(args: argparse.Namespace) -> int:
    info = _state(args).info()
    print(f"export KUBECONFIG={info.kubeconfig}")
    if info.bin_dir:
        print(f"export PATH={info.bin_dir}:$PATH")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="divbase-localcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="build (or reuse from the cache) kube-apiserver, etcd, kubectl, helm, kwok...")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache has the binaries")
    p.set_defaults(func=cmd_build)

    for name, func, text in (
        ("up", cmd_up, "start a cluster and print `export KUBECONFIG=...`"),
        ("down", cmd_down, "stop the cluster's processes and remove its state directory"),
        ("status", cmd_status, "report whether the processes run and /readyz answers"),
        ("env", cmd_env, "print shell exports for KUBECONFIG and PATH"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--state-dir", type=Path, default=None, help=f"default {default_state_dir()}")
        p.set_defaults(func=func)
        if name == "up":
            p.add_argument("--no-node", action="store_true", help="do not start the node agent")
            p.add_argument("--node-name", default="divbase-node-0")
            p.add_argument("--kwok", type=int, default=0, metavar="N", help="also run kwok with N fake nodes")
            p.add_argument("--image-map", type=Path, default=None, help="image map for the node agent")
            p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
        if name == "down":
            p.add_argument("--keep-state", action="store_true", help="stop processes but keep logs and data")
        if name == "status":
            p.add_argument("--json", action="store_true")

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ClusterError, build.BuildError) as e:
        print(f"divbase-localcluster {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

"""`divbase-localcluster {build,up,down,status,env,postgres}`: a real Kubernetes control plane on 127.0.0.1, and a
private PostgreSQL for it.

    eval "$(.venv/bin/divbase-localcluster up)"            # KUBECONFIG, and PATH with its kubectl, helm and .venv/bin
    eval "$(divbase-localcluster postgres up)"             # DIVBASE_DATABASE_URL of a server that keeps running
    divbase-localcluster postgres down; divbase-localcluster down
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import build
from .cluster import ClusterError, ClusterInfo, LocalCluster, default_state_dir

POSTGRES_RECORD = "postgres.json"  # in the cluster's state directory: where the private server lives, its port
POSTGRES_DATABASE = "divbase"


def _state(args: argparse.Namespace) -> LocalCluster:
    return LocalCluster(
        args.state_dir or default_state_dir(), node_name=getattr(args, "node_name", None) or "divbase-node-0"
    )


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
    network = {"on": True, "off": False, "auto": None}[args.pod_network]
    info = cluster.up(
        node=not args.no_node, kwok_nodes=args.kwok, timeout=args.timeout, image_map=args.image_map, pod_network=network
    )
    print(f"cluster {build.K8S_VERSION} ready in {info.seconds_to_ready:.1f} s at {info.server}", file=sys.stderr)
    print(f"  ready at (s): {info.phase_seconds}; logs in {info.log_dir}", file=sys.stderr)
    if info.node_name:
        print(f"node {info.node_name} Ready (agent log {info.log_dir / 'node-agent.log'})", file=sys.stderr)
    if info.pod_network:
        print(
            f"pod network in netns {info.node_netns}; pods reach the host's 127.0.0.1:<port> at "
            f"{info.host_address}:<port>",
            file=sys.stderr,
        )
    if info.kwok_nodes:
        print(f"{len(info.kwok_nodes)} kwok nodes: {', '.join(info.kwok_nodes[:5])}...", file=sys.stderr)
    print(exports(info, scripts_dir()))
    return 0


def scripts_dir() -> Path:
    """Where this installation's console scripts are (`.venv/bin`: divbase-operator, kubectl-divbase, ...)."""
    return Path(sys.executable).parent


def exports(info: ClusterInfo, scripts: Path | None) -> str:
    """What to eval: KUBECONFIG, and PATH with the cluster's kubectl and helm first (not the system's), then the
    venv's scripts (kubectl finds the `kubectl-divbase` plugin on PATH)."""
    bin_dir = info.bin_dir or build.binaries().bin_dir
    path = [str(bin_dir), *([str(scripts)] if scripts else [])]
    return "\n".join(
        [f"export KUBECONFIG={shlex.quote(str(info.kubeconfig))}", f'export PATH={shlex.quote(":".join(path))}:"$PATH"']
    )


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
        print(f"  {'network namespaces':<24} {', '.join(status['netns']) or 'none'}")
    return 0 if status["up"] else 1


def cmd_env(args: argparse.Namespace) -> int:
    print(exports(_state(args).info(), scripts_dir()))
    return 0


# --- a private PostgreSQL that keeps running ---------------------------------------------------------------------
def _postgres_record(args: argparse.Namespace) -> Path:
    return (args.state_dir or default_state_dir()) / POSTGRES_RECORD


def cmd_postgres(args: argparse.Namespace) -> int:
    """`postgres up`: start a private server (initdb under /tmp, a free port on 127.0.0.1, a random password)
    with a database `divbase`, and print `export DIVBASE_DATABASE_URL=...` (and DIVBASE_POD_DATABASE_URL, the same
    server as pods reach it); it keeps running until `postgres down`.
    A second `up` prints the URL of the running one."""
    from divbase_migrations.testing.postgres import PostgresError, PostgresServer

    record = _postgres_record(args)
    saved = json.loads(record.read_text()) if record.is_file() else None
    if args.action == "status":
        running = bool(saved) and Path(saved["dir"], "data", "postmaster.pid").is_file()
        print(
            f"{'running' if running else 'not running'}"
            + (f": 127.0.0.1:{saved['port']}, {saved['dir']}" if saved else "")
        )
        return 0 if running else 1
    if args.action == "down":
        if not saved:
            print("no private PostgreSQL recorded", file=sys.stderr)
            return 0
        server = PostgresServer(base_dir=Path(saved["dir"]), port=int(saved["port"]))
        server.stop(remove=False)
        shutil.rmtree(saved["dir"], ignore_errors=True)
        record.unlink()
        print(f"PostgreSQL on 127.0.0.1:{saved['port']} stopped and {saved['dir']} removed", file=sys.stderr)
        return 0
    if saved and Path(saved["dir"], "data", "postmaster.pid").is_file():
        print(f"PostgreSQL already running on 127.0.0.1:{saved['port']} ({saved['dir']})", file=sys.stderr)
        _print_urls(args, saved["url"])
        return 0
    # under /tmp: as root the server runs as the `postgres` user, who cannot enter root's home
    server = PostgresServer(base_dir=Path(tempfile.mkdtemp(prefix="divbase-pg-")))
    try:
        server.start()
        url = server.create_database(POSTGRES_DATABASE).set(drivername="postgresql")
    except PostgresError:
        server.stop(remove=False)
        shutil.rmtree(server.base_dir, ignore_errors=True)
        raise
    text = url.render_as_string(hide_password=False)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.touch(mode=0o600)
    record.write_text(json.dumps({"dir": str(server.base_dir), "port": server.port, "url": text}))
    os.chmod(record, 0o600)
    print(
        f"PostgreSQL {server.bindir.parent.name} on 127.0.0.1:{server.port}, data in {server.base_dir}, log "
        f"{server.log_file}; stop it with: divbase-localcluster postgres down",
        file=sys.stderr,
    )
    _print_urls(args, text)
    return 0


def _print_urls(args: argparse.Namespace, url: str) -> None:
    """The URL for this machine, and the one pods dial (the pod network's gateway when the cluster of the same
    state dir has one; the same URL otherwise)."""
    cluster = _state(args)
    pods = cluster.info().for_pods(url) if cluster.info_file.is_file() else url
    print(f"export DIVBASE_DATABASE_URL={shlex.quote(url)}")
    print(f"export DIVBASE_POD_DATABASE_URL={shlex.quote(pods)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="divbase-localcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="build (or reuse from the cache) kube-apiserver, etcd, kubectl, helm, kwok...")
    p.add_argument("--force", action="store_true", help="rebuild even if the cache has the binaries")
    p.set_defaults(func=cmd_build)

    for name, func, text in (
        ("up", cmd_up, "start a cluster and print the exports to eval (KUBECONFIG, PATH)"),
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
            p.add_argument(
                "--pod-network",
                choices=["off", "on", "auto"],
                default="auto",
                help="pods in their own network namespaces with kube-proxy (default auto: when this "
                "machine can, else pods share the host's loopback; on: fail if it cannot)",
            )
        if name == "down":
            p.add_argument("--keep-state", action="store_true", help="stop processes but keep logs and data")
        if name == "status":
            p.add_argument("--json", action="store_true")

    p = sub.add_parser("postgres", help="a private PostgreSQL that keeps running: up prints DIVBASE_DATABASE_URL")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--state-dir", type=Path, default=None, help=f"where it is recorded (default {default_state_dir()})")
    p.set_defaults(func=cmd_postgres)

    args = parser.parse_args(argv)
    from divbase_migrations.testing.postgres import PostgresError

    try:
        return int(args.func(args))
    except (ClusterError, build.BuildError, PostgresError) as e:
        print(f"divbase-localcluster {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

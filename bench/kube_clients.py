"""Kubernetes clients compared: resident memory after import and one list call, and code size.

Each client runs in a fresh interpreter (one subprocess per sample) that imports it, lists 50 DivBaseDatabases from
a stub apiserver (plain HTTP on 127.0.0.1, served by this process: the figures are the client's, not a cluster's)
and reports its VmRSS. The baseline, measured in the same run, does the same list with the standard library alone
(http.client + json). Clients:

- kubeapi: the operator's KubeApi (kubernetes' ApiClient, plain JSON requests; no typed API classes);
- kubernetes-typed: kubernetes' CustomObjectsApi, as the kubectl plugin's Client and the tests' Kube use it;
- lightkube: lightkube's sync Client with a generic resource (only when lightkube is installed).

Code size: lines of our own client code, and the installed libraries' Python files on disk.

    .venv/bin/python -m bench.kube_clients [--samples 5] [--out bench/results]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from divbase_operator import names

from bench import report

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
ITEMS = 50
PATH = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NAMESPACE}/{names.PLURAL}"

RSS = """
def rss_kib():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
"""
CLIENTS = {
    "baseline (stdlib http.client)": """
import http.client, json, os
conn = http.client.HTTPConnection('127.0.0.1', int(os.environ['STUB_PORT']))
conn.request('GET', os.environ['STUB_PATH'])
items = json.loads(conn.getresponse().read())['items']
""",
    "kubeapi (operator's KubeApi)": """
import os
from kubernetes import config
from divbase_operator.kube import KubeApi
api = KubeApi(config.new_client_from_config(config_file=os.environ['KUBECONFIG']))
items = api.call('GET', os.environ['STUB_PATH'])['items']
""",
    "kubernetes-typed (CustomObjectsApi)": """
import os
from kubernetes import client, config
custom = client.CustomObjectsApi(config.new_client_from_config(config_file=os.environ['KUBECONFIG']))
items = custom.list_namespaced_custom_object('divbase.io', os.environ['STUB_VERSION'], 'bench',
                                             'divbasedatabases')['items']
""",
    "lightkube (sync Client, generic resource)": """
import os
from lightkube import Client, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
Db = create_namespaced_resource('divbase.io', os.environ['STUB_VERSION'], 'DivBaseDatabase', 'divbasedatabases')
items = list(Client(config=KubeConfig.from_file(os.environ['KUBECONFIG']), namespace='bench').list(Db))
""",
}
OUR_CLIENTS = {  # (file, where the client starts, where it ends: None for the next top-level statement)
    "operator KubeApi": ("operator/divbase_operator/kube.py", "class KubeApi:", None),
    "kubectl plugin Client": ("operator/divbase_operator/kubectl_plugin.py", "class Client:", None),
    "tests' Kube": ("operator/divbase_operator/testing.py", "class Kube:", None),
    "node agent Api": ("localcluster/divbase_localcluster/node/api.py", "class Api:", None),
    "LocalCluster HTTP (on the node Api)": (
        "localcluster/divbase_localcluster/cluster.py",
        "    def _api(",
        "    # -- lifecycle",
    ),
}
LIBRARIES = {
    "kubernetes": ["kubernetes"],
    "lightkube": ["lightkube", "lightkube.models", "lightkube.resources"],
    "httpx2 (lightkube's HTTP)": ["httpx2", "httpcore2"],
}


class Stub(BaseHTTPRequestHandler):
    """Answers the one list call with ITEMS DivBaseDatabases."""

    def do_GET(self) -> None:
        items = [
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "metadata": {"name": f"db-{i}", "namespace": NAMESPACE, "resourceVersion": str(i)},
                "spec": {"version": "1"},
            }
            for i in range(ITEMS)
        ]
        body = json.dumps(
            {
                "apiVersion": names.API_VERSION,
                "kind": f"{names.KIND}List",
                "metadata": {"resourceVersion": "99"},
                "items": items,
            }
        ).encode()
        self.send_response(200 if self.path.split("?")[0] == PATH else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def stub_apiserver() -> Iterator[tuple[int, Path]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "stub",
                    "clusters": [{"name": "stub", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                    "users": [{"name": "stub", "user": {"token": "bench"}}],
                    "contexts": [
                        {"name": "stub", "context": {"cluster": "stub", "user": "stub", "namespace": NAMESPACE}}
                    ],
                }
            )
        )
        try:
            yield port, kubeconfig
        finally:
            server.shutdown()


def sample(code: str, port: int, kubeconfig: Path) -> int:
    """VmRSS (KiB) of a fresh interpreter after `code` ran; it must have listed ITEMS objects."""
    script = f"{RSS}{code}\nassert len(items) == {ITEMS}, len(items)\nprint(rss_kib())\n"
    env = {
        "STUB_PORT": str(port),
        "STUB_PATH": PATH,
        "STUB_VERSION": names.VERSION,
        "KUBECONFIG": str(kubeconfig),
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed")
    return int(out.stdout.strip().splitlines()[-1])


def our_lines(path: str, start: str, end: str | None) -> int:
    """Non-blank lines of one client in our code: from the line starting with `start` to the line starting with
    `end` (default: the next top-level statement)."""
    lines = (REPO / path).read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    last = next(
        (
            i
            for i in range(first + 1, len(lines))
            if (lines[i].startswith(end) if end else lines[i][:1].strip() and lines[i][0] not in ")]}")
        ),
        len(lines),
    )
    return sum(1 for line in lines[first:last] if line.strip())


def library_size(packages: list[str]) -> dict[str, float] | None:
    files: set[Path] = set()
    for package in packages:
        spec = importlib.util.find_spec(package) if importlib.util.find_spec(package.split(".")[0]) else None
        if spec is None or not spec.submodule_search_locations:
            return None
        for location in spec.submodule_search_locations:
            files.update(Path(location).rglob("*.py"))
    return {
        "python_files": len(files),
        "lines": sum(len(f.read_bytes().splitlines()) for f in files),
        "kib": round(sum(f.stat().st_size for f in files) / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args()
    report.RESULTS = args.out.resolve()

    rss: dict[str, dict[str, Any]] = {}
    with stub_apiserver() as (port, kubeconfig):
        for name, code in CLIENTS.items():
            if name.startswith("lightkube") and importlib.util.find_spec("lightkube") is None:
                rss[name] = {"error": "lightkube is not installed (pip install lightkube)"}
                continue
            values = [sample(code, port, kubeconfig) for _ in range(args.samples)]
            rss[name] = {"samples_kib": values, "median_mib": round(statistics.median(values) / 1024, 1)}
    base = rss["baseline (stdlib http.client)"]["median_mib"]
    for entry in rss.values():
        if "median_mib" in entry:
            entry["vs_baseline"] = round(entry["median_mib"] / base, 2)
    kubeapi = rss["kubeapi (operator's KubeApi)"]["median_mib"]
    ours = {name: our_lines(path, start, end) for name, (path, start, end) in OUR_CLIENTS.items()}
    libraries = {name: library_size(packages) for name, packages in LIBRARIES.items()}

    md = [
        "# Kubernetes clients: memory and code size",
        "",
        f"RSS of a fresh interpreter after importing the client and listing {ITEMS} DivBaseDatabases from a stub "
        f"apiserver, median of {args.samples}; the baseline does the same list with the standard library alone "
        "(same run).",
        "",
        "| client | RSS MiB | vs baseline | vs KubeApi |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, entry in rss.items():
        if "median_mib" in entry:
            md.append(
                f"| {name} | {entry['median_mib']} | {entry['vs_baseline']} | "
                f"{round(entry['median_mib'] / kubeapi, 2)} |"
            )
        else:
            md.append(f"| {name} | - | - | {entry['error']} |")
    md += ["", "Our own client code (non-blank lines):", "", "| client | lines |", "| --- | ---: |"]
    md += [f"| {name} | {lines} |" for name, lines in ours.items()]
    md += [
        "",
        "Libraries installed (Python files):",
        "",
        "| library | files | lines | KiB |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, size in libraries.items():
        md.append(
            f"| {name} | "
            + (f"{size['python_files']} | {size['lines']} | {size['kib']} |" if size else "not installed | | |")
        )
    report.write(
        "kube_clients",
        {"items_listed": ITEMS, "samples": args.samples, "rss": rss, "our_client_lines": ours, "libraries": libraries},
        "\n".join(md) + "\n",
    )


if __name__ == "__main__":
    main()

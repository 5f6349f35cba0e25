"""Command line of the node agent (started by `divbase-localcluster up`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..podnet.layout import Layout
from .agent import DEFAULT_POD_CIDR, NodeAgent
from .api import Api
from .images import ImageResolver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m divbase_localcluster.node", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True, help="identity system:node:<name>")
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--state-dir", type=Path, required=True, help="pod directories and logs go here")
    parser.add_argument("--image-map", type=Path, required=True, help="images.yaml: image -> local command")
    parser.add_argument("--pod-cidr", default=DEFAULT_POD_CIDR, help="loopback range for pod IPs")
    parser.add_argument("--tls-cert-file", type=Path, help="serving certificate of the log endpoint (`kubectl logs`)")
    parser.add_argument("--tls-private-key-file", type=Path)
    parser.add_argument("--client-ca-file", type=Path, help="CA of the apiserver's kubelet client certificate")
    parser.add_argument("--pod-network-id", help="run pods in the pod network of this cluster id (podnet.layout)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(threadName)s %(message)s",
        stream=sys.stdout,
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    images = ImageResolver(args.image_map.resolve(), state_dir / "images")  # the map is read again when it changes
    api = Api(args.kubeconfig, state_dir / "credentials")
    tls = (args.tls_cert_file, args.tls_private_key_file, args.client_ca_file)
    if any(tls) and not all(tls):
        parser.error("--tls-cert-file, --tls-private-key-file and --client-ca-file go together")
    network = Layout(args.pod_network_id) if args.pod_network_id else None
    agent = NodeAgent(
        api, args.node_name, state_dir, images, args.pod_cidr, log_tls=tls if all(tls) else None, network=network
    )
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())

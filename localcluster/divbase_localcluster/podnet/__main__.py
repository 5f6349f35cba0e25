"""`python -m divbase_localcluster.podnet forward`: the host-port forwarder process `up` starts (see forwarder)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from .forwarder import Forwarder
from .layout import Layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m divbase_localcluster.podnet")
    sub = parser.add_subparsers(dest="command", required=True)
    fwd = sub.add_parser("forward", help="carry pods' connections to GATEWAY:<port> to the host's 127.0.0.1:<port>")
    fwd.add_argument("--state-dir", type=Path, required=True, help="the cluster's state directory (names its netns)")
    fwd.add_argument("--api-port", type=int, required=True, help="the apiserver's port on 127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    forwarder = Forwarder(Layout.for_state_dir(args.state_dir), args.api_port)
    signal.signal(signal.SIGTERM, lambda *_: forwarder.stop())
    forwarder.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

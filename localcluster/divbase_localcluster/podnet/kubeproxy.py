"""kube-proxy's configuration for the node namespace: nftables mode, and nothing that would reach outside the
namespace (conntrack sysctls are machine-wide on older kernels, so kube-proxy is told to leave them alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .layout import Layout

HEALTHZ_PORT = 10256


def config(layout: Layout, kubeconfig: Path, node_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig), "qps": 50, "burst": 100},
        "hostnameOverride": node_name,
        "bindAddress": layout.gateway,  # the node IP kube-proxy uses (the Node's InternalIP is the host's loopback)
        "mode": "nftables",
        "clusterCIDR": layout.pod_cidr,
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": f"127.0.0.1:{HEALTHZ_PORT}",  # inside the node namespace
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": [f"{layout.gateway}/32"],
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def argv(binary: Path, layout: Layout, config_file: Path) -> list[str]:
    """kube-proxy run inside the node namespace (`ip netns exec` execs it: the recorded pid is kube-proxy's)."""
    return ["ip", "netns", "exec", layout.node_netns, str(binary), f"--config={config_file}"]

"""Names and addresses of one cluster's pod network, a pure function of its state directory: `up`, the node agent,
the host-port forwarder, kube-proxy's configuration and `down` agree on them without talking to each other."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
# Every TCP connection from a pod to GATEWAY:<port> is redirected to this port of the forwarder, which connects to
# 127.0.0.1:<port> on the host; so the forwarder cannot carry the host's own port 65535.
FORWARD_PORT = 65535
NETNS_PREFIX = "dbn"


@dataclass(frozen=True)
class Layout:
    """One cluster's network namespaces (`<prefix>-node`, `<prefix>-p<n>` per pod) and addresses."""

    cluster_id: str
    pod_cidr: str = POD_CIDR

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> Layout:
        """Two clusters on one machine get different namespace names (their addresses may coincide: nothing routes
        between their node namespaces)."""
        return cls(hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8])

    @property
    def prefix(self) -> str:
        return f"{NETNS_PREFIX}{self.cluster_id}"

    @property
    def node_netns(self) -> str:
        return f"{self.prefix}-node"

    @property
    def network(self) -> ipaddress.IPv4Network:
        net = ipaddress.ip_network(self.pod_cidr)
        if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 30:
            raise ValueError(f"pod CIDR {self.pod_cidr}: an IPv4 network of at least 4 addresses is needed")
        return net

    @property
    def gateway(self) -> str:
        """The node's address: pods' default gateway, where the apiserver and the host's loopback ports are."""
        return str(self.network.network_address + 1)

    def pod_hosts(self) -> list[str]:
        return [str(h) for h in self.network.hosts() if str(h) != self.gateway]

    def _offset(self, ip: str) -> int:
        addr = ipaddress.ip_address(ip)
        if addr not in self.network or str(addr) == self.gateway:
            raise ValueError(f"{ip} is not a pod address of {self.pod_cidr}")
        return int(addr) - int(self.network.network_address)

    def pod_netns(self, ip: str) -> str:
        """Named after the address, so a restarted agent finds the namespace of each pod IP it reported."""
        return f"{self.prefix}-p{self._offset(ip):x}"

    def node_veth(self, ip: str) -> str:
        """The node end of a pod's veth pair (interface names have at most 15 characters)."""
        return f"vp{self._offset(ip):x}"

    def owns(self, netns: str) -> bool:
        return netns == self.node_netns or netns.startswith(f"{self.prefix}-p")

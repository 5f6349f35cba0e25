"""The node namespace and each pod's namespace: made by `up` and the node agent with iproute2 and nftables,
removed by `down` (and by the next `up` after a crash). Pods are routed, not bridged: each pod's veth pair is a
point-to-point link to the node namespace, so pod-to-pod traffic passes the node's netfilter hooks, where kube-proxy's
rules are, without br_netfilter (a kernel module this machine may not be allowed to load)."""

from __future__ import annotations

from . import netns
from .layout import FORWARD_PORT, SERVICE_CIDR, Layout


def hostports_ruleset(layout: Layout, api_port: int) -> str:
    """nftables rules of the node namespace that send every TCP connection to GATEWAY:<port> (but the apiserver's
    port, which the forwarder serves itself because kube-proxy has already DNATed the `kubernetes` Service to it)
    to the forwarder, which reads the original port back (SO_ORIGINAL_DST). kube-proxy's own table is separate."""
    gw, skip = layout.gateway, f"{{ {api_port}, {FORWARD_PORT} }}"
    rule = f"ip daddr {gw} tcp dport != {skip} dnat to {gw}:{FORWARD_PORT}"
    return (
        "table ip divbase-hostports {\n"
        f"  chain prerouting {{ type nat hook prerouting priority dstnat + 10; {rule}; }}\n"
        f"  chain output {{ type nat hook output priority -90; {rule}; }}\n"
        "}\n"
    )


def create_node(layout: Layout, api_port: int) -> None:
    """The node namespace: loopback up with the gateway address on it (ARP answers for it on every pod link),
    forwarding on, a route for Service addresses (kube-proxy rewrites them; locally made connections need a route
    before the rewrite), and the host-port redirect."""
    name = layout.node_netns
    netns.add(name)
    netns.ip_batch(
        [
            "link set lo up",
            f"address add {layout.gateway}/32 dev lo",
            f"route add {SERVICE_CIDR} dev lo",
        ],
        netns=name,
    )
    netns.run(["ip", "netns", "exec", name, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
    netns.run(["ip", "netns", "exec", name, "nft", "-f", "-"], stdin=hostports_ruleset(layout, api_port))


def attach_pod(layout: Layout, ip: str) -> str:
    """Make the pod's namespace with `ip` on its eth0 (a /32, default route via the gateway) and the node end of the
    veth pair routed to it; returns the namespace's name. A namespace left over with that name is replaced."""
    pod_ns, veth = layout.pod_netns(ip), layout.node_veth(ip)
    netns.delete(pod_ns)
    netns.add(pod_ns)
    try:
        netns.ip(
            "link", "add", veth, "netns", layout.node_netns, "type", "veth", "peer", "name", "eth0", "netns", pod_ns
        )
        netns.ip_batch(
            [
                "link set lo up",
                f"address add {ip}/32 dev eth0",
                "link set eth0 up",
                f"route add {layout.gateway} dev eth0 scope link",
                f"route add default via {layout.gateway} dev eth0",
            ],
            netns=pod_ns,
        )
        netns.ip_batch([f"link set {veth} up", f"route replace {ip}/32 dev {veth}"], netns=layout.node_netns)
    except netns.NetworkError:
        netns.delete(pod_ns)
        raise
    return pod_ns


def detach_pod(layout: Layout, ip: str) -> None:
    """Deleting the namespace takes eth0, its veth peer in the node namespace and the route with it."""
    netns.delete(layout.pod_netns(ip))


def remove_all(layout: Layout) -> list[str]:
    """Every namespace of this cluster (pods first, the node last); returns the names removed."""
    mine = [n for n in netns.names() if layout.owns(n)]
    mine.sort(key=lambda n: n == layout.node_netns)
    for name in mine:
        netns.delete(name)
    return mine

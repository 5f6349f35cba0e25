"""The pod network's pure parts: names and addresses, the host-port redirect rules (checked by nft itself), what
a machine lacks for it, and when `up` makes one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from divbase_localcluster.cluster import ClusterError, ClusterInfo, LocalCluster
from divbase_localcluster.podnet import kubeproxy, netns
from divbase_localcluster.podnet.layout import FORWARD_PORT, Layout
from divbase_localcluster.podnet.node import hostports_ruleset


def test_layout_names_follow_the_state_dir_and_the_address(tmp_path: Path) -> None:
    a, b = Layout.for_state_dir(tmp_path / "a"), Layout.for_state_dir(tmp_path / "b")
    assert a.node_netns != b.node_netns and a.prefix != b.prefix
    assert a == Layout.for_state_dir(tmp_path / "a")
    assert a.gateway == "10.244.0.1"
    assert a.pod_netns("10.244.1.2") == f"{a.prefix}-p102" and a.node_veth("10.244.1.2") == "vp102"
    assert len(a.node_veth("10.244.255.254")) <= 15  # Linux interface names
    assert a.owns(a.node_netns) and a.owns(a.pod_netns("10.244.0.9")) and not a.owns(b.pod_netns("10.244.0.9"))
    hosts = a.pod_hosts()
    assert a.gateway not in hosts and hosts[0] == "10.244.0.2" and len(hosts) == 2**16 - 3


@pytest.mark.parametrize("ip", ["10.244.0.1", "10.245.0.2", "127.0.0.1"])
def test_layout_refuses_addresses_outside_the_pods_range(ip: str) -> None:
    with pytest.raises(ValueError, match=ip):
        Layout("x").pod_netns(ip)


def test_layout_refuses_a_cidr_too_small_or_not_ipv4() -> None:
    for cidr in ("10.0.0.0/31", "fd00::/64"):
        with pytest.raises(ValueError, match="pod CIDR"):
            _ = Layout("x", cidr).gateway


def test_hostports_rules_skip_the_apiserver_and_the_forwarder(tmp_path: Path) -> None:
    rules = hostports_ruleset(Layout("x"), 6443)
    assert f"ip daddr 10.244.0.1 tcp dport != {{ 6443, {FORWARD_PORT} }} dnat to 10.244.0.1:{FORWARD_PORT}" in rules
    assert "hook prerouting" in rules and "hook output" in rules


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft (Debian package nftables) is not installed")
def test_hostports_rules_are_valid_nftables() -> None:
    """nft itself parses and checks the ruleset (`-c`: nothing is applied)."""
    done = subprocess.run(
        ["nft", "-c", "-f", "-"],
        input=hostports_ruleset(Layout("x"), 6443),
        text=True,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_kube_proxy_leaves_machine_wide_settings_alone(tmp_path: Path) -> None:
    cfg = kubeproxy.config(Layout("x"), tmp_path / "kc", "node-0")
    assert cfg["mode"] == "nftables" and cfg["clusterCIDR"] == "10.244.0.0/16"
    assert cfg["conntrack"]["maxPerCore"] == 0 and cfg["conntrack"]["min"] == 0  # nf_conntrack_max is not per netns
    assert kubeproxy.argv(Path("/b/kube-proxy"), Layout("x"), tmp_path / "c.yaml")[:4] == [
        "ip",
        "netns",
        "exec",
        "dbnx-node",
    ]


def test_missing_requirements_name_each_capability_and_tool() -> None:
    everything = "CapEff:\t000001ffffffffff\n"
    assert netns.missing_requirements(everything, which=lambda t: f"/usr/sbin/{t}") == []
    unprivileged = "CapEff:\t0000000000000000\n"
    missing = netns.missing_requirements(unprivileged, which=lambda t: None if t == "nft" else "/x")
    assert [m.split(" (")[0] for m in missing] == ["capability CAP_NET_ADMIN", "capability CAP_SYS_ADMIN", "`nft`"]
    net_admin_only = f"CapEff:\t{1 << netns.CAP_NET_ADMIN:016x}\n"
    assert netns.missing_requirements(net_admin_only, which=lambda t: "/x") == [
        "capability CAP_SYS_ADMIN (named network namespaces (`ip netns add`))"
    ]


def test_up_makes_a_pod_network_only_with_the_node_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lc = LocalCluster(tmp_path)
    assert lc._pod_network_wanted(False, node=True) is False
    assert lc._pod_network_wanted(None, node=False) is False
    with pytest.raises(ClusterError, match="needs the node agent"):
        lc._pod_network_wanted(True, node=False)
    monkeypatch.setattr(netns, "missing_requirements", lambda: ["capability CAP_NET_ADMIN (veth pairs)"])
    with pytest.raises(ClusterError, match="cannot make a pod network here, missing: capability CAP_NET_ADMIN"):
        lc._pod_network_wanted(True, node=True)
    assert lc._pod_network_wanted(None, node=True) is False  # auto: falls back, saying why on stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://u:p%40ss@127.0.0.1:5432/db?sslmode=disable",
            "postgresql://u:p%40ss@10.244.0.1:5432/db?sslmode=disable",
        ),
        ("postgresql+psycopg://u@localhost:1/db", "postgresql+psycopg://u@10.244.0.1:1/db"),
        ("postgresql://u:p@db.example.org:5432/db", "postgresql://u:p@db.example.org:5432/db"),  # not on this machine
    ],
)
def test_urls_for_pods_dial_the_gateway(tmp_path: Path, url: str, expected: str) -> None:
    info = ClusterInfo(
        tmp_path,
        tmp_path / "kc",
        "https://127.0.0.1:1",
        tmp_path / "ca",
        tmp_path,
        {},
        pod_network=True,
        host_address="10.244.0.1",
    )
    assert info.for_pods(url) == expected
    loopback = ClusterInfo(tmp_path, tmp_path / "kc", "https://127.0.0.1:1", tmp_path / "ca", tmp_path, {})
    assert loopback.for_pods(url) == url

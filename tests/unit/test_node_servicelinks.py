"""The node agent's service links (divbase_localcluster.node.servicelinks) as the kubelet makes them, without a
cluster: variable names and values, which Services a pod sees, and the pod's own env winning."""

from __future__ import annotations

from typing import Any

from divbase_localcluster.node import podspec, servicelinks

KUBERNETES_VARS = {
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
    "KUBERNETES_PORT": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
    "KUBERNETES_PORT_443_TCP_PORT": "443",
    "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
}


def service(name: str, ns: str, ip: str | None, *ports: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": list(ports)}
    if ip is not None:
        spec["clusterIP"] = ip
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


MASTER = service("kubernetes", "default", "10.96.0.1", {"name": "https", "port": 443, "protocol": "TCP"})


def pod(ns: str = "app", enable: bool | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main"}]}
    if enable is not None:
        spec["enableServiceLinks"] = enable
    return {"metadata": {"name": "p", "namespace": ns}, "spec": spec}


def test_a_dashed_name_with_one_unnamed_port() -> None:
    svc = service("my-web-app", "app", "10.96.3.4", {"port": 80, "targetPort": 8080})
    assert servicelinks.service_vars(svc) == {
        "MY_WEB_APP_SERVICE_HOST": "10.96.3.4",
        "MY_WEB_APP_SERVICE_PORT": "80",
        "MY_WEB_APP_PORT": "tcp://10.96.3.4:80",  # protocol unset means TCP
        "MY_WEB_APP_PORT_80_TCP": "tcp://10.96.3.4:80",
        "MY_WEB_APP_PORT_80_TCP_PROTO": "tcp",
        "MY_WEB_APP_PORT_80_TCP_PORT": "80",
        "MY_WEB_APP_PORT_80_TCP_ADDR": "10.96.3.4",
    }


def test_named_ports_a_udp_port_and_the_first_port_as_the_default() -> None:
    svc = service(
        "dns-cache",
        "app",
        "10.96.0.10",
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "metrics", "port": 9153},
    )
    assert servicelinks.service_vars(svc) == {
        "DNS_CACHE_SERVICE_HOST": "10.96.0.10",
        "DNS_CACHE_SERVICE_PORT": "53",
        "DNS_CACHE_SERVICE_PORT_DNS_TCP": "53",
        "DNS_CACHE_SERVICE_PORT_DNS": "53",
        "DNS_CACHE_SERVICE_PORT_METRICS": "9153",
        "DNS_CACHE_PORT": "tcp://10.96.0.10:53",  # only the first port
        "DNS_CACHE_PORT_53_TCP": "tcp://10.96.0.10:53",
        "DNS_CACHE_PORT_53_TCP_PROTO": "tcp",
        "DNS_CACHE_PORT_53_TCP_PORT": "53",
        "DNS_CACHE_PORT_53_TCP_ADDR": "10.96.0.10",
        "DNS_CACHE_PORT_53_UDP": "udp://10.96.0.10:53",
        "DNS_CACHE_PORT_53_UDP_PROTO": "udp",
        "DNS_CACHE_PORT_53_UDP_PORT": "53",
        "DNS_CACHE_PORT_53_UDP_ADDR": "10.96.0.10",
        "DNS_CACHE_PORT_9153_TCP": "tcp://10.96.0.10:9153",
        "DNS_CACHE_PORT_9153_TCP_PROTO": "tcp",
        "DNS_CACHE_PORT_9153_TCP_PORT": "9153",
        "DNS_CACHE_PORT_9153_TCP_ADDR": "10.96.0.10",
    }


def test_headless_and_external_name_services_give_nothing() -> None:
    services = [
        service("headless", "app", "None", {"port": 80}),
        service("external", "app", "", {"port": 80}),
        service("unset", "app", None, {"port": 80}),
        MASTER,
    ]
    assert servicelinks.service_env(services, "app", True) == KUBERNETES_VARS


def test_own_namespace_and_the_kubernetes_service_only() -> None:
    services = [
        MASTER,
        service("web", "app", "10.96.0.20", {"port": 80}),
        service("other", "elsewhere", "10.96.0.30", {"port": 80}),
        service("notmaster", "default", "10.96.0.40", {"port": 80}),
    ]
    env = servicelinks.service_env(services, "app", True)
    assert {k for k in env if k.endswith("_SERVICE_HOST")} == {"KUBERNETES_SERVICE_HOST", "WEB_SERVICE_HOST"}
    in_default = servicelinks.service_env(services, "default", True)
    assert {k for k in in_default if k.endswith("_SERVICE_HOST")} == {
        "KUBERNETES_SERVICE_HOST",
        "NOTMASTER_SERVICE_HOST",
    }


def test_enable_service_links_false_keeps_only_the_kubernetes_service() -> None:
    services = [service("web", "app", "10.96.0.20", {"port": 80}), MASTER]
    assert servicelinks.links_enabled(pod()) and servicelinks.links_enabled(pod(enable=True))
    assert not servicelinks.links_enabled(pod(enable=False))
    assert servicelinks.service_env(services, "app", False) == KUBERNETES_VARS
    assert servicelinks.service_env(services, "default", False) == KUBERNETES_VARS


def test_a_kubernetes_service_of_the_pods_namespace_wins_over_defaults() -> None:
    own = service("kubernetes", "app", "10.96.0.50", {"port": 8443})
    for listing in ([MASTER, own], [own, MASTER]):  # as in the kubelet, whatever the order
        assert servicelinks.service_env(listing, "app", True)["KUBERNETES_SERVICE_HOST"] == "10.96.0.50"
        assert servicelinks.service_env(listing, "app", False)["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"


def test_requests_are_one_or_two_lists() -> None:
    master = ("/api/v1/namespaces/default/services", {"fieldSelector": "metadata.name=kubernetes"})
    assert servicelinks.requests("app", True) == [master, ("/api/v1/namespaces/app/services", {})]
    assert servicelinks.requests("app", False) == [master]
    assert servicelinks.requests("default", True) == [("/api/v1/namespaces/default/services", {})]
    assert servicelinks.requests("default", False) == [master]


def test_the_pods_env_and_env_from_win_and_may_refer_to_links() -> None:
    links = servicelinks.service_env([MASTER, service("web", "app", "10.96.0.20", {"port": 80})], "app", True)
    container = {
        "name": "main",
        "envFrom": [{"configMapRef": {"name": "cm"}}],
        "env": [
            {"name": "WEB_SERVICE_PORT", "value": "8080"},
            {"name": "URL", "value": "http://$(WEB_SERVICE_HOST):$(WEB_SERVICE_PORT)"},
        ],
    }
    configmaps = {"cm": {"WEB_PORT": "from-configmap"}}
    env = podspec.container_env(pod(), container, lambda kind, name: configmaps.get(name), base=links)
    assert env["WEB_SERVICE_HOST"] == "10.96.0.20"
    assert env["WEB_SERVICE_PORT"] == "8080"  # env over the link
    assert env["WEB_PORT"] == "from-configmap"  # envFrom over the link
    assert env["URL"] == "http://10.96.0.20:8080"  # links take part in $(VAR) expansion
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"


def test_without_a_pod_network_kubernetes_service_host_is_the_loopback_apiserver() -> None:
    links = servicelinks.service_env([MASTER], "app", True)
    account = {"KUBECONFIG": "/pods/p/serviceaccount/kubeconfig", **servicelinks.apiserver_vars("https://10.96.0.1")}
    assert servicelinks.base_env(links, account, None) == {**KUBERNETES_VARS, "KUBECONFIG": account["KUBECONFIG"]}
    loopback = servicelinks.base_env(links, {}, "https://127.0.0.1:6443")  # no token: automount false
    assert loopback == {
        **KUBERNETES_VARS,
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": "6443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "6443",
    }
    assert servicelinks.base_env({}, {}, "https://127.0.0.1:6443") == {}  # no links (the list failed): none

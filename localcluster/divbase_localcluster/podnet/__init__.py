"""The local node's pod network: one network namespace per pod, routed through one "node" namespace that holds
kube-proxy's rules, so Services, EndpointSlices and ClusterIPs work as on a real node while the host's own
networking is never touched (docs/localcluster.md, "Pod network")."""

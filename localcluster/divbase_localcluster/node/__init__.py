"""The local node agent: a small kubelet in Python that runs the pods bound to one Node as local processes.

Run as ``python -m divbase_localcluster.node --kubeconfig ... --node-name ... --state-dir ... --image-map ...``
(`divbase-localcluster up` does this). See docs/localcluster.md, section "Node agent".
"""

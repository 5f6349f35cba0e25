"""`divbase-localcluster up` / `env` print what to eval: KUBECONFIG, and PATH with the cluster's own kubectl and helm
first, then the venv's scripts (divbase-operator, kubectl-divbase, divbase-migrate)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from divbase_localcluster import cli
from divbase_localcluster.cluster import ClusterInfo


def test_exports_put_the_clusters_tools_and_the_venv_first(tmp_path: Path) -> None:
    bin_dir, scripts = tmp_path / "cache bin", tmp_path / ".venv" / "bin"
    for directory, tools in ((bin_dir, ("kubectl", "helm")), (scripts, ("kubectl-divbase",))):
        directory.mkdir(parents=True)
        for tool in tools:
            (directory / tool).write_text("#!/bin/sh\necho " + tool + " from " + directory.name + "\n")
            (directory / tool).chmod(0o755)
    info = ClusterInfo(
        state_dir=tmp_path,
        kubeconfig=tmp_path / "kube config",
        server="https://127.0.0.1:1",
        ca_file=tmp_path / "ca.crt",
        log_dir=tmp_path,
        ports={},
        bin_dir=bin_dir,
    )
    text = cli.exports(info, scripts)
    script = f'{text}\necho "$KUBECONFIG"; command -v kubectl; command -v helm; command -v kubectl-divbase'
    out = subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")},
    ).stdout.splitlines()
    assert out == [
        str(tmp_path / "kube config"),
        str(bin_dir / "kubectl"),
        str(bin_dir / "helm"),
        str(scripts / "kubectl-divbase"),
    ]


def test_scripts_dir_is_this_interpreters() -> None:
    assert (cli.scripts_dir() / "python").exists() or (cli.scripts_dir() / "python3").exists()

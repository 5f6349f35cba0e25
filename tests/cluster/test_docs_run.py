"""The docs' commands run as written (issue 13, item 7): docs/install.md's local quick start (release 1, then 2
with a Manual contract), docs/operator.md's review-and-approve, wait and status commands on it, and the teardown:
the blocks marked `<!-- doc-test: local [STEP] -->`, in one bash script with `set -euo pipefail`, from the
checkout's root.

The test gives them only what a user's shell has: PATH without the venv or the cluster's binaries (the quick
start's `eval` must put them there), no KUBECONFIG, and a state directory of their own
(DIVBASE_CLUSTER_STATE_DIR), so the cluster they start is neither the test session's nor a developer's. Whatever
the script leaves running is stopped afterwards through the same state directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from divbase_localcluster.cluster import STATE_DIR_ENV
from docblocks import scenario

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "docs" / "install.md"
OPERATOR = ROOT / "docs" / "operator.md"
LOCALCLUSTER = str(Path(sys.executable).parent / "divbase-localcluster")  # the interpreter under test's
SCRIPT_TIMEOUT = 900  # s; the blocks' own waits are 5 m each, and each ends by itself


def _user_path() -> str:
    """PATH as a user's shell has it before the quick start: no venv, no cluster binaries."""
    venv_bin = str(Path(sys.executable).parent)
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and p != venv_bin and "/localcluster/" not in p)


def test_the_local_quick_start_and_its_teardown_run_as_written(tmp_path: Path) -> None:
    state = tmp_path / "cluster"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "DIVBASE_DATABASE_URL", "VIRTUAL_ENV")}
    env |= {"PATH": _user_path(), STATE_DIR_ENV: str(state)}
    script = "set -euo pipefail\n" + scenario([INSTALL, OPERATOR], "local")
    local_yaml = ROOT / "local.yaml"
    assert not local_yaml.exists(), "the quick start writes local.yaml: move yours away first"
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=SCRIPT_TIMEOUT)
    finally:
        local_yaml.unlink(missing_ok=True)
        for args in (["postgres", "down"], ["down"]):  # no-ops when the teardown block did its job
            subprocess.run([LOCALCLUSTER, *args, "--state-dir", str(state)], capture_output=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n" \
                                 f"{proc.stderr[-4000:]}"
    # what the commands printed says they did what the doc says
    assert "divbasedatabase.divbase.io/divbase condition met" in proc.stdout, proc.stdout  # kubectl wait: 1 Ready
    assert re.search(r"approved the contract of release 2 .*\(plan [0-9a-f]{12}", proc.stdout), proc.stdout
    assert "-- contract revision" in proc.stdout, proc.stdout  # the reviewer read the plan's SQL
    assert re.search(r'^\{.*"severity":', proc.stdout, re.MULTILINE), proc.stdout  # kubectl logs: the operator's
    assert re.search(r"^1\s+2\s+Succeeded\s", proc.stdout, re.MULTILINE), proc.stdout  # history: 1 -> 2
    # the teardown stopped everything the quick start started
    status = subprocess.run([LOCALCLUSTER, "status", "--state-dir", str(state)], capture_output=True, text=True,
                            timeout=60)
    assert not status.stdout.startswith("up"), status.stdout + status.stderr

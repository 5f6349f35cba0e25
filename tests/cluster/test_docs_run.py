"""The docs' commands run as written (issue 13, item 7), each scenario's blocks (`<!-- doc-test: NAME [STEP] -->`)
in one bash script with `set -euo pipefail`, from the checkout's root:

- `local`: docs/install.md's local quick start (release 1, then 2 with a Manual contract), docs/operator.md's
  review-and-approve, wait and status commands on it, and the teardown;
- `readme`: README.md's "Using the operator" (CRDs, the operator as a process, examples/divbase.yaml, an upgrade)
  and its teardown;
- `demo`: README.md's `make demo`, the main job;
- `podnet`: docs/localcluster.md's pod network walk-through (a Service through kube-proxy) and its teardown.

The test gives them only what a user's shell has: PATH without the venv or the cluster's binaries (the quick
start's `eval` must put them there), no KUBECONFIG, and a state directory of their own
(DIVBASE_CLUSTER_STATE_DIR), so the cluster they start is neither the test session's nor a developer's. Whatever
the script leaves running is stopped afterwards through the same state directory."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from divbase_localcluster.cluster import STATE_DIR_ENV
from divbase_localcluster.podnet.netns import missing_requirements
from docblocks import SCENARIOS, scenario

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
LOCALCLUSTER = str(Path(sys.executable).parent / "divbase-localcluster")  # the interpreter under test's
SCRIPT_TIMEOUT = 900  # s; the blocks' own waits are 5 m each, and each ends by itself


def _user_path() -> str:
    """PATH as a user's shell has it before the quick start: no venv, no cluster binaries."""
    venv_bin = str(Path(sys.executable).parent)
    return os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin and "/localcluster/" not in p
    )


def _run(tmp_path: Path, name: str, writes: list[str], extra_env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The scenario in a shell of its own process group (what it starts with `&` is stopped with it), then whatever
    its teardown left: the files it writes in the checkout, the cluster and PostgreSQL of its state directory."""
    state = tmp_path / "cluster"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "DIVBASE_DATABASE_URL", "VIRTUAL_ENV")}
    env |= {"PATH": _user_path(), STATE_DIR_ENV: str(state), **(extra_env or {})}
    script = "set -euo pipefail\n" + scenario(SCENARIOS[name], name)
    for written in writes:
        assert not (ROOT / written).exists(), f"the {name} scenario writes {written}: move yours away first"
    shell = subprocess.Popen(
        ["bash", "-c", script],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = shell.communicate(timeout=SCRIPT_TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)  # a background process the script left behind
        shell.communicate()
        for written in writes:
            (ROOT / written).unlink(missing_ok=True)
        for args in (["postgres", "down"], ["down"]):  # no-ops when the teardown block did its job
            subprocess.run([LOCALCLUSTER, *args, "--state-dir", str(state)], capture_output=True, timeout=120)
    assert shell.returncode == 0, f"exit {shell.returncode}\n--- stdout\n{out[-4000:]}\n--- stderr\n{err[-4000:]}"
    # the teardown stopped everything the scenario started and removed what it wrote
    status = subprocess.run(
        [LOCALCLUSTER, "status", "--state-dir", str(state)], capture_output=True, text=True, timeout=60
    )
    assert not status.stdout.startswith("up"), status.stdout + status.stderr
    return shell.returncode, out, err


def test_the_local_quick_start_and_its_teardown_run_as_written(tmp_path: Path) -> None:
    _, out, _ = _run(tmp_path, "local", ["local.yaml"])
    # what the commands printed says they did what the doc says
    assert "divbasedatabase/divbase condition met: Ready (release 1)" in out, out  # kubectl divbase wait
    assert "divbasedatabase.divbase.io/divbase condition met" in out, out  # kubectl wait: the kstatus alternative
    assert "customresourcedefinition.apiextensions.k8s.io/divbasedatabases.divbase.io serverside-applied" in out, out
    assert re.search(r"\bNormal\s+RolloutSucceeded\b", out), out  # operator.md's Events commands
    assert re.search(r"approved the contract of release 2 .*\(plan [0-9a-f]{12}", out), out
    assert "-- contract revision" in out, out  # the reviewer read the plan's SQL
    assert re.search(r'^\{.*"severity":', out, re.MULTILINE), out  # kubectl logs: the operator's JSON lines
    assert re.search(r"^1\s+2\s+Succeeded\s", out, re.MULTILINE), out  # history: 1 -> 2
    # install.md's Uninstalling, in its order: the release and its resource, the operator, the CRD
    assert (
        out.index('release "divbase" uninstalled')
        < out.index('release "divbase-operator" uninstalled')
        < out.index('customresourcedefinition.apiextensions.k8s.io "divbasedatabases.divbase.io" deleted')
    ), out


def test_the_readmes_usage_and_its_teardown_run_as_written(tmp_path: Path) -> None:
    _, out, _ = _run(tmp_path, "readme", ["operator.log"])
    assert out.count("Ready: release 1") >= 1 and "Ready: release 2" in out, out  # both waits ended Ready
    assert 'divbasedatabase.divbase.io "divbase" deleted' in out, out


@pytest.mark.skipif(bool(missing_requirements()), reason=f"no pod network here: {'; '.join(missing_requirements())}")
def test_the_pod_network_walkthrough_runs_as_written(tmp_path: Path) -> None:
    _, out, _ = _run(tmp_path, "podnet", [])
    assert re.search(r"^web-\S+\s+IPv4\s+8080\s+10\.244\.0\.\d+,10\.244\.0\.\d+\s", out, re.MULTILINE), out
    assert re.search(r"^200$", out, re.MULTILINE), out  # the client pod's answer, through the ClusterIP
    assert re.search(r"network namespaces\s+none\s*$", out), out  # none of the cluster's is left


@pytest.mark.skipif(
    bool(missing_requirements()),
    reason=f"the demo's load goes through a Service, which needs the pod network: {'; '.join(missing_requirements())}",
)
def test_make_demo_runs_as_written(tmp_path: Path) -> None:
    # The demo and its PostgreSQL make their directories with tempfile: in a TMPDIR of the test's own, empty at the
    # end when the demo removed all it made (issue 13: it left operator.log behind). Not under tmp_path: as root the
    # server runs as `postgres`, which cannot enter pytest's root-only tree.
    tmpdir = Path(tempfile.mkdtemp(prefix="divbase-demo-tmpdir-"))
    tmpdir.chmod(0o755)
    try:
        _, out, _ = _run(tmp_path, "demo", [], extra_env={"TMPDIR": str(tmpdir)})
        left = sorted(str(p.relative_to(tmpdir)) for p in tmpdir.iterdir())
        assert not left, f"make demo left these in its TMPDIR: {left}"
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    assert re.search(
        r"^Failed requests: 0 with the operator \(\d+ if the API pods have no preStop sleep\), "
        r"[1-9]\d* stopping the world",
        out,
        re.MULTILINE,
    ), out
    assert "| operator (expand, deploy, contract) |" in out, out  # README's table has the demo's columns

"""divbase_localcluster.gitserver: git's own client clones what the server serves (smart HTTP, as go-git in Flux's
source-controller speaks it) and cannot push through it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from divbase_localcluster.gitserver import GitServer


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "protocol.version=2", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_commit_is_served_over_smart_http_and_pushes_are_refused(tmp_path: Path) -> None:
    with GitServer(tmp_path / "served") as git:
        repo = git.create("deploy")
        first = repo.commit({"prod/db.yaml": "version: 1\n", "notes.txt": "x\n"}, "one")
        second = repo.commit({"prod/db.yaml": "version: 2\n", "notes.txt": ""}, "two")
        clone = tmp_path / "clone"
        assert _git("clone", "--quiet", git.url("deploy"), str(clone)).returncode == 0
        assert _git("-C", str(clone), "rev-parse", "HEAD").stdout.strip() == second != first
        assert (clone / "prod" / "db.yaml").read_text() == "version: 2\n"
        assert not (clone / "notes.txt").exists(), "an empty text removes the file"
        (clone / "x").write_text("x")
        _git("-C", str(clone), "add", "x")
        _git("-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
        push = _git("-C", str(clone), "push", "origin", "HEAD:refs/heads/main")
        assert push.returncode != 0 and "403" in push.stderr, push.stderr
        assert _git("ls-remote", git.url("deploy"), "refs/heads/main").stdout.split()[0] == second
    assert _git("ls-remote", git.url("deploy")).returncode != 0, "closed: nothing listens"

"""divbase_localcluster.conformance: the checkers' binaries are cached by a hash of their Go module, and a warm
cache is used without calling the Go toolchain."""

from __future__ import annotations

from pathlib import Path

import pytest
from divbase_localcluster import conformance


def test_every_checker_is_a_go_module_of_its_own() -> None:
    for name in conformance.CHECKERS:
        src = conformance.source_dir(name)
        assert (src / "go.sum").is_file() and (list(src.glob("*.go")) or name in conformance.PACKAGES)
        assert (src / "go.mod").read_text().startswith(f"module divbase.local/conformance/{src.name}\n")


def test_cache_key_follows_the_module_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "gitops" / "conformance" / "kstatus"
    src.mkdir(parents=True)
    for name in ("go.mod", "go.sum", "main.go"):
        (src / name).write_text(name)
    monkeypatch.setattr(conformance, "source_dir", lambda name: src)
    monkeypatch.setenv("DIVBASE_CACHE_DIR", str(tmp_path / "cache"))
    first = conformance.cache_key("kstatus")
    assert first.startswith("kstatus-") and conformance.cache_key("kstatus") == first
    (src / "go.sum").write_text("changed")
    assert conformance.cache_key("kstatus") != first
    (src / "extra.go").write_text("package main")
    assert len({first, conformance.cache_key("kstatus")}) == 2
    second = conformance.cache_key("kstatus")
    (src / "cmd" / "tool").mkdir(parents=True)  # a second command of the module (argocd: cmd/argocd-controllers)
    (src / "cmd" / "tool" / "main.go").write_text("package main")
    assert conformance.cache_key("kstatus") not in (first, second)
    assert conformance.binary("kstatus").parent.parent == tmp_path / "cache" / "conformance"


def test_a_warm_cache_needs_no_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIVBASE_CACHE_DIR", str(tmp_path))
    cached = conformance.binary("kstatus")
    cached.parent.mkdir(parents=True)
    cached.write_text("#!/bin/sh\n")
    monkeypatch.setattr(conformance.shutil, "which", lambda _: None)
    assert conformance.build("kstatus") == cached
    (tmp_path / "other").mkdir()
    monkeypatch.setenv("DIVBASE_CACHE_DIR", str(tmp_path / "other"))
    with pytest.raises(conformance.BuildError, match="`go` toolchain is not on PATH"):
        conformance.build("kstatus")

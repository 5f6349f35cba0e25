"""The binary cache: a warm `build` runs no Go command, and the key follows the Go sources."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from divbase_localcluster import build


def test_cached_build_runs_no_go_command(monkeypatch: pytest.MonkeyPatch) -> None:
    build.build()  # make sure the cache is warm (a no-op unless the sources changed)

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a cached build ran {args!r}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    bins = build.build()  # cached: no subprocess at all (no_subprocess fails the test), whatever the clock says
    assert not bins.missing()
    assert bins["kube-apiserver"].resolve() == bins[build.MULTICALL].resolve()
    assert bins.bin_dir == build.cache_root() / "localcluster" / build.cache_key() / "bin"


def test_cache_key_names_version_and_hashes_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = build.cache_key()
    assert key.startswith(f"{build.K8S_VERSION}-") and len(key.split("-")[-1]) == 12
    src = build.go_source_dir()
    for name in build.GO_SOURCES:
        (tmp_path / name).write_bytes((src / name).read_bytes())
    monkeypatch.setattr(build, "go_source_dir", lambda: tmp_path)
    assert build.cache_key() == key
    (tmp_path / "main.go").write_text((src / "main.go").read_text() + "\n// changed\n")
    assert build.cache_key() != key

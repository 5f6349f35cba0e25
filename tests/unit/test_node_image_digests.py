"""The local node agent's image IDs (docs/localcluster.md, "Image IDs"): `repository@sha256:<hex>` of what the
reference resolves to, so a re-pushed tag (another image-map entry for it) has another digest, and a reference
pinned by digest runs exactly what that digest was computed from, whatever the map says by now."""

from __future__ import annotations

import os
import re
from pathlib import Path

from divbase_localcluster.node.images import ImageRef, ImageResolver, content_digest, content_of

MAP = """images:
  - name: divbase
    match: "*divbase"
    path: ["{venv_bin}", "/usr/bin"]
    env: {DIVBASE_RELEASE: "{tag}", EXTRA: "%s"}
    cmd: ["divbase-migrate", "--help"]
"""


def write_map(path: Path, extra: str, mtime: int) -> None:
    path.write_text(MAP % extra)
    os.utime(path, ns=(mtime, mtime))  # a new mtime even when written within the same clock tick


def resolver(tmp_path: Path, extra: str = "one") -> ImageResolver:
    write_map(tmp_path / "images.yaml", extra, 1_000_000_000)
    return ImageResolver(tmp_path / "images.yaml", tmp_path / "store", venv_bin="/venv/bin")


def test_image_id_is_the_repository_by_content_digest(tmp_path: Path) -> None:
    images = resolver(tmp_path)
    pulled = images.pull("registry.example/divbase:2")
    assert pulled.resolved is not None and pulled.resolved.env["DIVBASE_RELEASE"] == "2"
    assert re.fullmatch(r"registry\.example/divbase@sha256:[0-9a-f]{64}", pulled.image_id), pulled.image_id
    expected = content_digest(content_of(ImageRef.parse("registry.example/divbase:2"), pulled.resolved))
    assert pulled.image_id.endswith("@" + expected)
    assert images.pull("registry.example/divbase:2").image_id == pulled.image_id, "the same content, the same ID"
    assert images.pull("registry.example/divbase:3").image_id != pulled.image_id, "another tag, other content"


def test_a_repushed_tag_has_another_digest_and_the_old_digest_still_runs_the_old_content(tmp_path: Path) -> None:
    images = resolver(tmp_path)
    first = images.pull("divbase:2")
    write_map(tmp_path / "images.yaml", "two", 2_000_000_000)  # "re-push" divbase:2
    second = images.pull("divbase:2")
    assert second.resolved is not None and second.resolved.env["EXTRA"] == "two", "the changed map is read again"
    assert second.image_id != first.image_id
    pinned = images.pull(first.image_id)
    assert pinned.resolved == first.resolved and pinned.image_id == first.image_id
    assert pinned.resolved is not None and pinned.resolved.env == {"DIVBASE_RELEASE": "2", "EXTRA": "one"}
    again = ImageResolver(tmp_path / "images.yaml", tmp_path / "store", venv_bin="/venv/bin")  # agent restarted
    assert again.pull(first.image_id).resolved == first.resolved, "the record outlives the agent process"


def test_an_unknown_or_foreign_digest_does_not_pull(tmp_path: Path) -> None:
    images = resolver(tmp_path)
    unknown = images.pull("divbase@sha256:" + "ab" * 32)
    assert unknown.resolved is None and unknown.reason == "ErrImagePull"
    assert "is not a digest this node reported for divbase" in unknown.message
    reported = images.pull("divbase:2").image_id.split("@", 1)[1]
    assert images.pull(f"other/divbase@{reported}").reason == "ErrImagePull", "a digest names one repository's image"
    record = next((tmp_path / "store" / "sha256").iterdir())
    record.write_text(record.read_text().replace('"2"', '"9"'))  # a record edited on disk no longer matches
    assert images.pull(f"divbase@{reported}").reason == "ErrImagePull"


def test_an_unmapped_image_and_a_broken_map(tmp_path: Path) -> None:
    images = resolver(tmp_path)
    assert images.pull("nginx:1").reason == "ImageNotMapped"
    (tmp_path / "images.yaml").write_text("images: nope\n")
    os.utime(tmp_path / "images.yaml", ns=(3_000_000_000, 3_000_000_000))
    assert images.pull("divbase:2").resolved is not None, "a map that no longer loads keeps the last good one"

"""The image map: which local programs stand in for a container image (see images.yaml and docs/localcluster.md).

There is no container engine here, so an image reference only chooses a PATH, extra environment and an optional
default entrypoint/cmd; the container's own `command`/`args` then run as a local process. The first entry whose
glob matches the image's repository wins. `ImageResolver` adds what a registry-backed runtime has: the map read
again when it changes, image IDs that are content digests, and references by digest that run exactly what was
recorded for that digest.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import re
import string
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
PLACEHOLDERS = {"venv_bin", "tag", "digest", "repository", "image"}


@dataclass(frozen=True)
class ImageRef:
    """An image reference split like a container runtime would: repository, tag (default latest), digest."""

    image: str
    repository: str
    tag: str
    digest: str

    @classmethod
    def parse(cls, image: str) -> ImageRef:
        name, _, digest = image.partition("@")
        last = name.rsplit("/", 1)[-1]
        tag = ""
        if ":" in last:
            name, tag = name.rsplit(":", 1)
        if not tag and not digest:
            tag = "latest"
        return cls(image=image, repository=name, tag=tag, digest=digest)


@dataclass(frozen=True)
class Resolved:
    """What running a container of this image means here: PATH, extra env and default entrypoint/cmd."""

    entry: str
    path: str
    env: dict[str, str]
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Entry:
    name: str
    match: tuple[str, ...]
    path: tuple[str, ...]
    env: dict[str, str]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]


def _check_template(text: str, where: str) -> None:
    for _, name, _, _ in string.Formatter().parse(text):
        if name is not None and name not in PLACEHOLDERS:
            raise ValueError(f"{where}: unknown placeholder {{{name}}} (known: {', '.join(sorted(PLACEHOLDERS))})")


def _entry(item: dict[str, Any], where: str) -> Entry:
    """One validated images.yaml entry (`where` names it in errors): globs to match, templates with known
    placeholders only."""
    match = item.get("match")
    match = [match] if isinstance(match, str) else match
    if not match or not all(isinstance(m, str) for m in match):
        raise ValueError(f"{where}: `match` must be a glob or a list of globs")
    texts = {key: [str(v) for v in item.get(key) or []] for key in ("path", "entrypoint", "cmd")}
    env = {str(k): str(v) for k, v in (item.get("env") or {}).items()}
    for key, values in texts.items():
        for v in values:
            _check_template(v, f"{where}.{key}")
    for k, v in env.items():
        _check_template(v, f"{where}.env.{k}")
    return Entry(
        name=str(item.get("name") or match[0]),
        match=tuple(match),
        path=tuple(texts["path"]),
        env=env,
        entrypoint=tuple(texts["entrypoint"]),
        cmd=tuple(texts["cmd"]),
    )


class ImageMap:
    """Loaded, validated images.yaml; `resolve(image)` returns None for an image no entry matches."""

    def __init__(self, entries: list[Entry], venv_bin: str) -> None:
        self.entries = entries
        self.venv_bin = venv_bin

    @classmethod
    def load(cls, path: Path, venv_bin: str | None = None) -> ImageMap:
        doc = yaml.safe_load(path.read_text()) or {}
        raw = doc.get("images")
        if not isinstance(raw, list):
            raise ValueError(f"{path}: expected a top-level `images:` list")
        entries = [_entry(item, f"{path}: images[{i}]") for i, item in enumerate(raw)]
        return cls(entries, venv_bin or str(Path(sys.executable).parent))

    def resolve(self, image: str) -> Resolved | None:
        ref = ImageRef.parse(image)
        values = {
            "venv_bin": self.venv_bin,
            "tag": ref.tag,
            "digest": ref.digest,
            "repository": ref.repository,
            "image": ref.image,
        }
        for e in self.entries:
            if any(fnmatch.fnmatchcase(ref.repository, m) for m in e.match):
                return Resolved(
                    entry=e.name,
                    path=":".join(p.format_map(values) for p in e.path),
                    env={k: v.format_map(values) for k, v in e.env.items()},
                    entrypoint=[a.format_map(values) for a in e.entrypoint],
                    cmd=[a.format_map(values) for a in e.cmd],
                )
        return None


# -- image IDs: content digests, like a registry-backed runtime's `repository@sha256:...` ----------------------------
def content_of(ref: ImageRef, resolved: Resolved) -> dict[str, object]:
    """What a reference resolves to, as the agent runs it: the map entry after placeholder expansion, with the tag.
    Its digest is the image ID: another map entry for the same tag (a "re-push") has another digest."""
    return {
        "repository": ref.repository,
        "tag": ref.tag,
        "entry": resolved.entry,
        "path": resolved.path,
        "env": dict(sorted(resolved.env.items())),
        "entrypoint": list(resolved.entrypoint),
        "cmd": list(resolved.cmd),
    }


def content_digest(content: dict[str, object]) -> str:
    """`sha256:<hex>` of the canonical JSON of `content` (sorted keys, no whitespace)."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def resolved_of(content: dict[str, object]) -> Resolved:
    """The Resolved a recorded `content_of` stands for."""
    env, entrypoint, cmd = content.get("env"), content.get("entrypoint"), content.get("cmd")
    return Resolved(
        entry=str(content.get("entry")),
        path=str(content.get("path")),
        env={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
        entrypoint=[str(a) for a in entrypoint] if isinstance(entrypoint, list) else [],
        cmd=[str(a) for a in cmd] if isinstance(cmd, list) else [],
    )


@dataclass(frozen=True)
class Pulled:
    """An image reference resolved for a container: what to run and its `imageID`, or why it cannot run
    (`reason`/`message` of a waiting container: ImageNotMapped, ErrImagePull)."""

    resolved: Resolved | None
    image_id: str = ""
    reason: str = ""
    message: str = ""


class ImageResolver:
    """The image map (read again when its file changes) plus a content-addressed record, under `store`, of every
    digest reported as an imageID: `repo@sha256:<hex>` resolves to exactly the content that digest was computed
    from, whatever the map says by now, like a registry serving a manifest by digest."""

    def __init__(self, map_path: Path, store: Path, venv_bin: str | None = None) -> None:
        self.map_path = map_path
        self.store = store
        self.venv_bin = venv_bin
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self.images = self._load()

    def _load(self) -> ImageMap:
        stat = self.map_path.stat()
        images = ImageMap.load(self.map_path, self.venv_bin)
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        return images

    def current(self) -> ImageMap:
        """The map, loaded again when the file's mtime or size changed; a map that no longer loads keeps the last
        good one (logged)."""
        with self._lock:
            try:
                stat = self.map_path.stat()
                if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                    self.images = self._load()
                    log.info("image map %s changed: loaded again", self.map_path)
            except (OSError, ValueError, yaml.YAMLError) as e:
                log.warning("image map %s: %s (keeping the map loaded before)", self.map_path, e)
            return self.images

    def _record_path(self, digest: str) -> Path:
        return self.store / "sha256" / f"{digest.removeprefix('sha256:')}.json"

    def record(self, content: dict[str, object]) -> str:
        digest = content_digest(content)
        path = self._record_path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(content, sort_keys=True, indent=1))
            tmp.replace(path)
        return digest

    def lookup(self, digest: str) -> dict[str, object] | None:
        if not DIGEST.fullmatch(digest):
            return None
        try:
            content = json.loads(self._record_path(digest).read_text())
        except (OSError, ValueError):
            return None
        return content if isinstance(content, dict) and content_digest(content) == digest else None

    def pull(self, image: str) -> Pulled:
        ref = ImageRef.parse(image)
        if ref.digest:
            content = self.lookup(ref.digest)
            if content is None or content.get("repository") != ref.repository:
                return Pulled(
                    None,
                    reason="ErrImagePull",
                    message=(
                        f'failed to pull image "{image}": {ref.digest} is not a digest this node reported for '
                        f"{ref.repository} (the node agent resolves a digest only to content it ran and recorded "
                        f"under {self.store}; see docs/localcluster.md)"
                    ),
                )
            resolved = resolved_of(content)
            return Pulled(resolved, image_id=f"{ref.repository}@{ref.digest}")
        images = self.current()
        resolved = images.resolve(image)
        if resolved is None:
            return Pulled(
                None,
                reason="ImageNotMapped",
                message=(
                    f'image "{image}" matches no entry of the node agent\'s image map {self.map_path} '
                    f"(see docs/localcluster.md)"
                ),
            )
        return Pulled(resolved, image_id=f"{ref.repository}@{self.record(content_of(ref, resolved))}")

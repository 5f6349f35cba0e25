"""The image map: which local programs stand in for a container image (see images.yaml and docs/localcluster.md).

There is no container engine here, so an image reference only chooses a PATH, extra environment and an optional
default entrypoint/cmd; the container's own `command`/`args` then run as a local process. The first entry whose
glob matches the image's repository wins.
"""

from __future__ import annotations

import fnmatch
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

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
        entries = []
        for i, item in enumerate(raw):
            where = f"{path}: images[{i}]"
            match = item.get("match")
            match = [match] if isinstance(match, str) else match
            if not match or not all(isinstance(m, str) for m in match):
                raise ValueError(f"{where}: `match` must be a glob or a list of globs")
            texts = {
                "path": [str(p) for p in item.get("path") or []],
                "entrypoint": [str(a) for a in item.get("entrypoint") or []],
                "cmd": [str(a) for a in item.get("cmd") or []],
            }
            env = {str(k): str(v) for k, v in (item.get("env") or {}).items()}
            for key, values in texts.items():
                for v in values:
                    _check_template(v, f"{where}.{key}")
            for k, v in env.items():
                _check_template(v, f"{where}.env.{k}")
            entries.append(Entry(
                name=str(item.get("name") or match[0]), match=tuple(match), path=tuple(texts["path"]), env=env,
                entrypoint=tuple(texts["entrypoint"]), cmd=tuple(texts["cmd"]),
            ))  # fmt: skip
        return cls(entries, venv_bin or str(Path(sys.executable).parent))

    def resolve(self, image: str) -> Resolved | None:
        ref = ImageRef.parse(image)
        values = {"venv_bin": self.venv_bin, "tag": ref.tag, "digest": ref.digest, "repository": ref.repository,
                  "image": ref.image}  # fmt: skip
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

"""The shell blocks of the docs that CI runs as written (issue 13, item 7).

A fenced `sh` block is run when the line before its fence is `<!-- doc-test: SCENARIO [STEP] -->`; a scenario is
its blocks ordered by STEP (default 50), then by the order of the files given, then in document order, run as one
bash script, so what a block exports (`eval "$(... up)"`) reaches the next. STEP lets a scenario thread through
several documents: install.md's quick start, then operator.md's commands on what it started, then the teardown.
Nothing is rewritten: the test supplies only the environment (a state directory, a clean PATH) around the text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Every scenario CI runs (tests/cluster/test_docs_run.py), with the documents its blocks come from, in order.
SCENARIOS: dict[str, list[Path]] = {
    "local": [ROOT / "docs" / "install.md", ROOT / "docs" / "operator.md"],
    "readme": [ROOT / "README.md"],
    "demo": [ROOT / "README.md"],
    "podnet": [ROOT / "docs" / "localcluster.md"],
}
MARKER = re.compile(r"^<!--\s*doc-test:\s*([a-z0-9-]+)(?:\s+(\d+))?\s*-->\s*$")
DEFAULT_STEP = 50
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the first line of code, 1-based
    scenario: str
    code: str
    step: int = DEFAULT_STEP


class DocError(ValueError):
    """A marker that marks no shell block, or a fence left open: a doc test that would silently not run."""


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        marker = MARKER.match(lines[index])
        if not marker:
            index += 1
            continue
        fence = FENCE.match(lines[index + 1]) if index + 1 < len(lines) else None
        if not fence or fence.group(1) not in ("sh", "bash"):
            raise DocError(f"{path}:{index + 1}: doc-test marker not followed by a ```sh block")
        start = index + 2
        end = next((i for i in range(start, len(lines)) if lines[i].strip() == "```"), None)
        if end is None:
            raise DocError(f"{path}:{index + 2}: the block is never closed")
        step = int(marker.group(2)) if marker.group(2) else DEFAULT_STEP
        found.append(Block(path, start + 1, marker.group(1), "\n".join(lines[start:end]) + "\n", step))
        index = end + 1
    return found


def scenario(paths: list[Path], name: str) -> str:
    """The scenario's blocks as one script, each headed by where it comes from (bash's errors then point there)."""
    chosen = sorted(
        (b for path in paths for b in blocks(path) if b.scenario == name),
        key=lambda b: (b.step, paths.index(b.path), b.line),
    )
    if not chosen:
        raise DocError(f"no block of scenario {name!r} in {', '.join(map(str, paths))}")
    return "".join(f"# --- {b.path.name}:{b.line}\n{b.code}" for b in chosen)

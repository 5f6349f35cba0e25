"""The Alembic side: configuration for our script directory, and the two branch chains read from it."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory

from .releases import BRANCHES, MANIFEST, Applied, Chains, Manifest, ManifestError, branch_of, load_manifest

PACKAGE_DIR = Path(__file__).resolve().parent
ALEMBIC_INI = PACKAGE_DIR / "alembic.ini"


def alembic_config(**attributes: Any) -> Config:
    """Our Alembic config; `attributes` reach env.py (`connection` online, `url` offline)."""
    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(PACKAGE_DIR / "alembic"))
    cfg.attributes.update(attributes)
    return cfg


@cache
def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def chains_from(script: ScriptDirectory) -> Chains:
    """Each branch as a list, oldest first; refuses anything but one linear chain per labelled branch."""
    result: dict[str, tuple[str, ...]] = {}
    heads = script.get_heads()
    for branch in BRANCHES:
        branch_heads = [h for h in heads if branch_of(h) == branch]
        if len(branch_heads) != 1:
            raise ManifestError(f"the {branch} branch must have exactly one head, found {branch_heads or 'none'}")
        chain: list[str] = []
        revision = script.get_revision(branch_heads[0])
        while revision is not None:
            if branch_of(revision.revision) != branch:
                raise ManifestError(f"revision {revision.revision} sits in the {branch} branch; its id must start "
                                    f"with {branch[0]!r}")
            chain.append(revision.revision)
            down = revision.down_revision  # dependencies (`depends_on`) are not part of the chain
            downs = (down,) if isinstance(down, str) else tuple(down or ())
            if len(downs) > 1:
                raise ManifestError(f"revision {revision.revision} merges {downs}: branches must stay linear")
            revision = script.get_revision(downs[0]) if downs else None
        result[branch] = tuple(reversed(chain))
    unknown = [h for h in heads if branch_of(h) is None]
    if unknown:
        raise ManifestError(f"heads {unknown} belong to neither branch (ids start with 'e' or 'c')")
    return Chains(expand=result["expand"], contract=result["contract"])


def load(manifest_path: Path = MANIFEST) -> Manifest:
    return load_manifest(chains_from(script_directory()), manifest_path)


def _as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


def applied_from_heads(heads: Sequence[str], chains: Chains, script: ScriptDirectory | None = None) -> Applied:
    """The newest applied revision of each branch, from the rows of `alembic_version`.

    Alembic keeps only heads, and a contract revision's `depends_on` absorbs the expand head it depends on (the
    table may hold just `c0004`, meaning e0005 is applied too), so the answer is found by walking ancestors and
    dependencies. A head this code does not know (written by a newer release) counts by its id's branch."""
    script = script or script_directory()
    known = set(chains.expand) | set(chains.contract)
    applied: set[str] = set()
    unknown: dict[str, str] = {}
    todo = list(heads)
    while todo:
        revision = todo.pop()
        if revision in applied:
            continue
        if revision not in known:
            branch = branch_of(revision)
            if branch is None:
                raise ManifestError(f"alembic_version holds {revision!r}, which belongs to neither branch")
            unknown[branch] = revision
            continue
        applied.add(revision)
        script_rev = script.get_revision(revision)
        todo.extend(_as_tuple(script_rev.down_revision) + _as_tuple(script_rev.dependencies))

    def newest(branch: str) -> str | None:
        if branch in unknown:
            return unknown[branch]
        chain = chains.of(branch)
        return next((r for r in reversed(chain) if r in applied), None)

    return Applied(newest("expand"), newest("contract"))

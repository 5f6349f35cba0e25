"""The Alembic side: configuration for our script directory, and the two branch chains read from it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory

from .contract import ENV_MIGRATE_CONFIG
from .releases import (
    BRANCHES,
    CONTRACT,
    EXPAND,
    MANIFEST,
    Applied,
    Baseline,
    BehindBaseline,
    Chains,
    Manifest,
    ManifestError,
    UnknownRevision,
    load_manifest,
)

PACKAGE_DIR = Path(__file__).resolve().parent
ALEMBIC_INI = PACKAGE_DIR / "alembic.ini"
ENV_CONFIG = ENV_MIGRATE_CONFIG  # another Alembic project's alembic.ini: its revisions, env.py and manifest


def project_ini() -> Path | None:
    """The alembic.ini of the project to migrate, when it is not ours (`--config` or $DIVBASE_MIGRATE_CONFIG)."""
    configured = os.environ.get(ENV_CONFIG)
    return Path(configured).resolve() if configured else None


def default_manifest() -> Path:
    """The project's `releases.toml` beside its alembic.ini, or ours."""
    ini = project_ini()
    return ini.parent / "releases.toml" if ini else MANIFEST


def alembic_config(**attributes: Any) -> Config:
    """Our Alembic config; `attributes` reach env.py (`connection` online, `url` offline)."""
    ini = project_ini()
    cfg = Config(str(ini or ALEMBIC_INI))
    if ini is None:
        cfg.set_main_option("script_location", str(PACKAGE_DIR / "alembic"))
    cfg.attributes.update(attributes)
    return cfg


def script_directory() -> ScriptDirectory:
    """The revisions of the project to migrate (ours, or the one `--config`/$DIVBASE_MIGRATE_CONFIG names)."""
    return _script_directory(project_ini())


@cache
def _script_directory(ini: Path | None) -> ScriptDirectory:
    """Read once per alembic.ini: a process that switches projects (a test, a tool) never gets another's."""
    return ScriptDirectory.from_config(alembic_config())


def chains_from(script: ScriptDirectory) -> Chains:
    """Each branch as a list, oldest first, read from Alembic's graph: the revisions from the head of the branch
    labelled `expand` (`contract`) down to the trunk revision it forks from (the baseline, element 0 of both).
    Refuses anything but one linear chain per branch, both forking from the same trunk revision, and heads that
    belong to neither branch. A project with no `expand`/`contract` label yet (its history is one trunk, before its
    first pair) gets both chains started at its single head: status and check work, and a release at that head
    has nothing of either branch to apply."""
    if not any(set(r.branch_labels or ()) & set(BRANCHES) for r in script.walk_revisions()):
        heads = script.get_heads()
        if len(heads) == 1:
            return Chains(expand=(heads[0],), contract=(heads[0],), baseline=heads[0])
    result: dict[str, tuple[str, ...]] = {}
    forks: dict[str, str | None] = {}
    for branch in BRANCHES:
        result[branch], forks[branch] = _branch_chain(script, branch)
    if forks["expand"] != forks["contract"]:
        raise ManifestError(
            f"the expand branch forks from {forks['expand']} but the contract branch from "
            f"{forks['contract']}: both must start at the same baseline"
        )
    baseline = forks["expand"]
    members = set(result["expand"]) | set(result["contract"])
    stray = [h for h in script.get_heads() if h not in members]
    if stray:
        raise ManifestError(
            f"heads {stray} belong to neither branch (no `expand` or `contract` label in their "
            f"history): every revision after the baseline goes on one of the two branches"
        )
    lead = (baseline,) if baseline else ()
    return Chains(expand=lead + result["expand"], contract=lead + result["contract"], baseline=baseline)


def _branch_chain(script: ScriptDirectory, branch: str) -> tuple[tuple[str, ...], str | None]:
    """(the branch's revisions oldest first, the trunk revision it forks from): walked down from its one head
    while the revisions carry its label; a merge on the way is refused."""
    try:
        head = script.get_revision(f"{branch}@head")
    except Exception as exc:  # alembic raises several kinds for an unknown label or several heads
        raise ManifestError(
            f"the {branch} branch must have exactly one head (a revision with "
            f"branch_labels = ({branch!r},) starts it): {exc}"
        ) from None
    chain: list[str] = []
    revision = head
    while revision is not None:
        if branch not in (revision.branch_labels or ()):
            break  # left the branch: this is the trunk revision it forks from
        chain.append(revision.revision)
        downs = _as_tuple(revision.down_revision)  # dependencies (`depends_on`) are not part of the chain
        if len(downs) > 1:
            raise ManifestError(f"revision {revision.revision} merges {downs}: branches must stay linear")
        revision = script.get_revision(downs[0]) if downs else None
    return tuple(reversed(chain)), (revision.revision if revision is not None else None)


def load(manifest_path: Path | None = None) -> Manifest:
    return load_manifest(chains_from(script_directory()), manifest_path or default_manifest())


def _as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


def applied_from_heads(
    heads: Sequence[str],
    chains: Chains,
    script: ScriptDirectory | None = None,
    logged: Mapping[str, str] | None = None,
    baseline: Baseline | None = None,
) -> Applied:
    """The newest applied revision of each branch, from the rows of `alembic_version`.

    Alembic keeps only heads, and a contract revision's `depends_on` absorbs the expand head it depends on (the
    table may hold just `c0004`, meaning e0005 is applied too), so the answer is found by walking ancestors and
    dependencies, down to the baseline and no further: the trunk below it (a real project's own history, e.g.
    DivBase's ten revisions before 9885301b9073) is implied by it. A head this code does not know was applied by a
    newer release: `logged` (revision -> branch, from divbase_migration_log) places it. A head on the trunk below
    the baseline (a revision of this script directory, or one named in the baseline's history) is an older
    database: BehindBaseline."""
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
            branch = (logged or {}).get(revision)
            if branch in (EXPAND, CONTRACT):
                unknown[branch] = revision
                continue
            older = _older_than_baseline(revision, chains, script, baseline)
            if older is not None:
                raise older
            raise UnknownRevision(revision)
        applied.add(revision)
        if revision == chains.baseline:
            continue  # what lies below the baseline is the trunk's own history: applied, not walked
        script_rev = script.get_revision(revision)
        todo.extend(_as_tuple(script_rev.down_revision) + _as_tuple(script_rev.dependencies))

    def newest(branch: str) -> str | None:
        if branch in unknown:
            return unknown[branch]
        chain = chains.of(branch)
        return next((r for r in reversed(chain) if r in applied), None)

    return Applied(newest(EXPAND), newest(CONTRACT))


def _older_than_baseline(
    revision: str, chains: Chains, script: ScriptDirectory, baseline: Baseline | None
) -> BehindBaseline | None:
    """BehindBaseline when `revision` is on the trunk below the baseline: named in the manifest's history, or an
    ancestor of the baseline in the script directory (compared by full id: Alembic would resolve a prefix)."""
    if chains.baseline is None:
        return None
    fork = baseline or Baseline(chains.baseline)
    if revision in fork.history:
        return BehindBaseline(revision, fork.history[revision], fork.revision, fork.upgrade_hint)
    below = {r.revision: r for r in script.walk_revisions(base="base", head=chains.baseline)}
    if revision in below and revision != chains.baseline:
        description = (below[revision].doc or "").strip().splitlines()
        return BehindBaseline(
            revision, description[0] if description else "an older trunk revision", fork.revision, fork.upgrade_hint
        )
    return None

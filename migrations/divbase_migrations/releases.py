"""The release manifest and the compatibility rule between a release's code and a database's schema.

Pure logic over revision ids and the branch chains, so it is unit-tested without a database. Which branch a
revision belongs to comes from Alembic's graph (its `expand` / `contract` branch labels), never from its id. Both
branches fork from a baseline on the trunk (DivBase's own history, up to the revision its production database holds),
which is the first element of both chains. A revision this code has never seen (applied by a newer release) is
placed by the branch `divbase-migrate` recorded for it in `divbase_migration_log`."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .contract import EXIT_PRECONDITION, EXIT_USAGE
from .release_version import InvalidRelease, same_release, sort_key

MANIFEST = Path(__file__).resolve().parent / "releases.toml"
EXPAND, CONTRACT, TRUNK = "expand", "contract", "trunk"
BRANCHES = (EXPAND, CONTRACT)


class ManifestError(ValueError):
    """The manifest is unreadable or disagrees with the revisions; the message names the entry and field."""


class UnknownRelease(LookupError):
    def __init__(self, version: str, known: Sequence[str]) -> None:
        super().__init__(f"release {version!r} is not in the manifest (known: {', '.join(known) or 'none'})")
        self.version = version


class RevisionError(ValueError):
    """`alembic_version` holds something this code cannot place; `exit_code` is divbase-migrate's."""

    exit_code = EXIT_USAGE


class UnknownRevision(RevisionError):
    def __init__(self, revision: str) -> None:
        super().__init__(
            f"alembic_version holds {revision!r}: not a revision of this image's migrations, not in DivBase's history, "
            f"and divbase_migration_log has no record of it (a newer release's revision is recorded there when "
            f"divbase-migrate applies it); nothing was changed"
        )
        self.revision = revision


class BehindBaseline(RevisionError):
    """The database is at an older revision of the trunk's own history: finish that history's upgrade first."""

    exit_code = EXIT_PRECONDITION

    def __init__(self, revision: str, description: str, baseline: str, hint: str) -> None:
        super().__init__(
            f"the database is at revision {revision} ({description}), older than the baseline "
            f"{baseline} this image starts from: {hint}; nothing was changed"
        )
        self.revision = revision


@dataclass(frozen=True)
class Baseline:
    """The trunk revision both branches fork from, and what an adopted database at it must look like."""

    revision: str
    schema: Path | None = None  # normalized snapshot (schema_snapshot) of the schema at `revision`
    ignore_tables: tuple[str, ...] = ()  # tables of others in the same database (e.g. Celery's)
    upgrade_hint: str = "bring it to the baseline with its own migrations first"
    history: dict[str, str] = field(default_factory=dict)  # older trunk revisions: id -> description


@dataclass(frozen=True)
class Release:
    version: str
    expand: str
    contract: str
    summary: str = ""


@dataclass(frozen=True)
class Chains:
    """Each branch's revisions, oldest first (both branches are linear: one head each)."""

    expand: tuple[str, ...]
    contract: tuple[str, ...]
    baseline: str | None = None  # the trunk revision both forks start from: element 0 of both chains

    def of(self, branch: str) -> tuple[str, ...]:
        return self.expand if branch == EXPAND else self.contract

    def branch_of(self, revision: str) -> str | None:
        """expand, contract or trunk (the baseline), by membership in the chains read from Alembic's graph."""
        if revision == self.baseline:
            return TRUNK
        if revision in self.expand:
            return EXPAND
        if revision in self.contract:
            return CONTRACT
        return None


@dataclass(frozen=True)
class Manifest:
    releases: tuple[Release, ...]
    chains: Chains
    baseline: Baseline | None = None

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(r.version for r in self.releases)

    def release(self, version: str) -> Release:
        """By PEP 440 sameness, so `--release v0.1.0a9` (DivBase's tag) finds the manifest's `0.1.0a9`."""
        for release in self.releases:
            if same_release(release.version, version):
                return release
        raise UnknownRelease(version, self.versions)

    def latest(self) -> Release:
        return self.releases[-1]


def load_manifest(chains: Chains, path: Path = MANIFEST) -> Manifest:
    """Read and check the manifest against the revision chains; every problem is reported by entry and field."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: release manifest not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid TOML: {exc}") from None
    entries = data.get("release")
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{path}: needs at least one [[release]] table")
    releases: list[Release] = []
    last_index = {EXPAND: -1, CONTRACT: -1}  # per branch: the previous release's place in the chain
    for number, entry in enumerate(entries, start=1):
        releases.append(_release(entry, f"{path.name}: release #{number}", path, releases, chains, last_index))
    return Manifest(tuple(releases), chains, _baseline(data.get("baseline"), chains, path))


def _release(
    entry: object, where: str, path: Path, releases: list[Release], chains: Chains, last_index: dict[str, int]
) -> Release:
    """One [[release]] table: a new version, listed after the older ones, each branch at or past the previous."""
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: must be a table")
    version = entry.get("version")
    if not isinstance(version, str) or not version.strip():
        raise ManifestError(f"{where}: `version` must be a non-empty string")
    where = f"{path.name}: release {version!r}"
    if any(same_release(r.version, version) for r in releases):
        raise ManifestError(f"{where}: listed twice")
    if releases and _out_of_order(releases[-1].version, version):
        raise ManifestError(f"{where}: listed after {releases[-1].version!r}, an older release comes first")
    revisions = {branch: _branch_revision(entry, branch, where, version, chains, last_index) for branch in BRANCHES}
    summary = entry.get("summary", "")
    return Release(version, revisions[EXPAND], revisions[CONTRACT], str(summary))


def _branch_revision(
    entry: dict[str, object], branch: str, where: str, version: str, chains: Chains, last_index: dict[str, int]
) -> str:
    """The release's revision of `branch`: one of the branch's chain, not older than the previous release's."""
    revision = entry.get(branch)
    if not isinstance(revision, str) or not revision:
        raise ManifestError(f"{where}: `{branch}` must name a revision")
    chain = chains.of(branch)
    if revision not in chain:
        first = (
            f" (the project has no expand/contract revisions yet: write the first pair with "
            f"`divbase-migrate revision -m MESSAGE --release {version}`, or name the baseline "
            f"{chain[0]!r})"
            if len(chain) == 1
            else ""
        )
        raise ManifestError(f"{where}: `{branch}` = {revision!r} is not a revision of the {branch} branch{first}")
    index = chain.index(revision)
    if index < last_index[branch]:
        raise ManifestError(f"{where}: `{branch}` = {revision!r} is older than the previous release's")
    last_index[branch] = index
    return revision


def _baseline(raw: object, chains: Chains, path: Path) -> Baseline | None:
    if raw is None:
        return Baseline(chains.baseline) if chains.baseline else None
    where = f"{path.name}: [baseline]"
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: must be a table")
    revision = raw.get("revision")
    if revision != chains.baseline:
        raise ManifestError(f"{where}: `revision` = {revision!r}, but the branches fork from {chains.baseline!r}")
    schema = raw.get("schema")
    if schema is not None and not isinstance(schema, str):
        raise ManifestError(f"{where}: `schema` must be a path relative to the manifest")
    ignore = raw.get("ignore_tables", [])
    history = raw.get("history", {})
    if not isinstance(ignore, list) or not all(isinstance(t, str) for t in ignore):
        raise ManifestError(f"{where}: `ignore_tables` must be a list of table names")
    if not isinstance(history, dict) or not all(isinstance(v, str) for v in history.values()):
        raise ManifestError(f"{where}: `history` must map revision ids to descriptions")
    hint = raw.get("upgrade_hint", Baseline.upgrade_hint)
    return Baseline(revision, path.parent / schema if schema else None, tuple(ignore), str(hint), dict(history))


def _out_of_order(previous: str, version: str) -> bool:
    """Releases are listed oldest first (`latest()` is the last); versions that are not PEP 440 are not ordered."""
    try:
        return sort_key(version) < sort_key(previous)
    except InvalidRelease:
        return False


@dataclass(frozen=True)
class Applied:
    """What `alembic_version` says: the head of each branch (None: nothing of that branch applied)."""

    expand: str | None
    contract: str | None

    def of(self, branch: str) -> str | None:
        return self.expand if branch == EXPAND else self.contract

    def as_dict(self) -> dict[str, str | None]:
        """The form in logs, `status` and the termination summary (the operator reads `to` from it)."""
        return {EXPAND: self.expand, CONTRACT: self.contract}


@dataclass(frozen=True)
class Position:
    """Where a branch stands relative to the chain this code knows: index, or beyond it (a newer release)."""

    index: int  # -1: nothing applied
    unknown: bool = False  # applied revision not in this code's chain: written by a newer release

    @classmethod
    def of(cls, chains: Chains, branch: str, revision: str | None) -> Position:
        if revision is None:
            return cls(-1)
        chain = chains.of(branch)
        if revision in chain:
            return cls(chain.index(revision))
        return cls(len(chain), unknown=True)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    missing: tuple[str, ...] = field(default=())  # expand revisions still to apply before the release can run


def compatibility(manifest: Manifest, release: Release, applied: Applied) -> Verdict:
    """Can `release`'s code run against a database at `applied`? The one rule of the product, in one place."""
    chains = manifest.chains
    expand = Position.of(chains, EXPAND, applied.expand)
    contract = Position.of(chains, CONTRACT, applied.contract)
    need = chains.expand.index(release.expand)
    tolerate = chains.contract.index(release.contract)
    if contract.unknown:
        return Verdict(
            False,
            f"contract revision {applied.contract} (from a newer release) may have removed what "
            f"release {release.version} uses",
        )
    if contract.index > tolerate:
        return Verdict(
            False,
            f"contract revision {applied.contract} removed what release {release.version} uses "
            f"(it tolerates up to {release.contract}); downgrades past a contract are not supported",
        )
    if expand.index < need:
        missing = chains.expand[expand.index + 1 : need + 1]
        return Verdict(
            False,
            f"release {release.version} needs expand revision {release.expand}; the database is at "
            f"{applied.expand or 'nothing'} (run `divbase-migrate expand --release "
            f"{release.version}`)",
            missing,
        )
    newer = " (plus expand revisions of a newer release, which only add)" if expand.unknown else ""
    return Verdict(
        True,
        f"release {release.version} can run: expand at {applied.expand}, contract at "
        f"{applied.contract or 'nothing'}{newer}",
    )


def servable(manifest: Manifest, applied: Applied) -> list[str]:
    return [r.version for r in manifest.releases if compatibility(manifest, r, applied).ok]


def pending(chains: Chains, branch: str, applied: str | None, target: str) -> tuple[str, ...]:
    """Revisions of `branch` between `applied` (exclusive) and `target` (inclusive); empty when at or past it."""
    chain = chains.of(branch)
    current = Position.of(chains, branch, applied)
    end = chain.index(target)
    return chain[current.index + 1 : end + 1] if current.index < end else ()

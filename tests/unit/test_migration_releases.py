"""The release manifest and the compatibility rule, without a database."""

from __future__ import annotations

from pathlib import Path

import pytest
from divbase_migrations import revisions
from divbase_migrations.releases import (
    Applied,
    ManifestError,
    UnknownRelease,
    compatibility,
    load_manifest,
    pending,
    servable,
)

MANIFEST = revisions.load()
CHAINS = MANIFEST.chains


def test_one_linear_chain_per_branch_and_ids_carry_their_branch() -> None:
    script = revisions.script_directory()
    heads = sorted(script.get_heads())
    assert heads == sorted([CHAINS.expand[-1], CHAINS.contract[-1]])
    assert all(r.startswith("e") for r in CHAINS.expand) and all(r.startswith("c") for r in CHAINS.contract)
    assert script.get_revision(CHAINS.expand[0]).branch_labels == {"expand"}
    assert script.get_revision(CHAINS.contract[0]).branch_labels == {"contract"}


def test_files_are_named_by_date_and_slug() -> None:
    files = sorted(p.name for p in (revisions.PACKAGE_DIR / "alembic" / "versions").glob("*.py"))
    assert files and all(__import__("re").fullmatch(r"\d{4}-\d{2}-\d{2}_[a-z0-9_]+\.py", f) for f in files), files


def test_every_contract_revision_depends_on_an_expand_revision() -> None:
    script = revisions.script_directory()
    for revision in CHAINS.contract:
        deps = script.get_revision(revision).dependencies
        deps = (deps,) if isinstance(deps, str) else tuple(deps or ())
        assert deps and all(d in CHAINS.expand for d in deps), revision


def test_four_releases_each_needing_the_split() -> None:
    assert MANIFEST.versions == ("1", "2", "3", "4")
    contracts = [r.contract for r in MANIFEST.releases]
    assert len(set(contracts)) == 4  # every later release removes or tightens something


@pytest.mark.parametrize("version", ["1", "2", "3", "4"])
def test_a_release_runs_on_its_own_schema_and_on_the_next_expand(version: str) -> None:
    release = MANIFEST.release(version)
    assert compatibility(MANIFEST, release, Applied(release.expand, release.contract)).ok
    following = MANIFEST.releases[MANIFEST.versions.index(version) + 1:]
    if following:
        nxt = following[0]
        assert compatibility(MANIFEST, release, Applied(nxt.expand, release.contract)).ok
        verdict = compatibility(MANIFEST, release, Applied(nxt.expand, nxt.contract))
        assert not verdict.ok and "removed what release" in verdict.reason


def test_a_release_needs_its_expand() -> None:
    verdict = compatibility(MANIFEST, MANIFEST.release("3"), Applied(CHAINS.expand[1], CHAINS.contract[1]))
    assert not verdict.ok
    assert verdict.missing == CHAINS.expand[2:4]
    assert "divbase-migrate expand --release 3" in verdict.reason


def test_unknown_revisions_of_a_newer_release() -> None:
    r4 = MANIFEST.release("4")
    # a newer release expanded: still servable (expand only adds)
    assert compatibility(MANIFEST, r4, Applied("e0099_future", r4.contract)).ok
    # a newer release contracted: refuse, it may have removed what we use
    assert not compatibility(MANIFEST, r4, Applied("e0099_future", "c0099_future")).ok


def test_servable_releases_move_with_the_schema() -> None:
    assert servable(MANIFEST, Applied(None, None)) == []
    assert servable(MANIFEST, Applied(CHAINS.expand[1], CHAINS.contract[0])) == ["1", "2"]
    assert servable(MANIFEST, Applied(CHAINS.expand[-1], CHAINS.contract[1])) == ["2", "3", "4"]
    assert servable(MANIFEST, Applied(CHAINS.expand[-1], CHAINS.contract[-1])) == ["4"]


def test_pending_revisions() -> None:
    assert pending(CHAINS, "expand", None, CHAINS.expand[1]) == CHAINS.expand[:2]
    assert pending(CHAINS, "expand", CHAINS.expand[-1], CHAINS.expand[1]) == ()
    assert pending(CHAINS, "contract", CHAINS.contract[0], CHAINS.contract[2]) == CHAINS.contract[1:3]
    assert pending(CHAINS, "expand", "e0099_future", CHAINS.expand[-1]) == ()


def test_heads_absorbed_by_dependencies_are_resolved() -> None:
    # Alembic may keep only `c0004` in alembic_version: its depends_on makes e0005 applied too
    applied = revisions.applied_from_heads([CHAINS.contract[-1]], CHAINS)
    assert applied == Applied(CHAINS.expand[-1], CHAINS.contract[-1])
    assert revisions.applied_from_heads([CHAINS.expand[2], CHAINS.contract[0]], CHAINS) == Applied(
        CHAINS.expand[2], CHAINS.contract[0])
    with pytest.raises(ManifestError, match="neither branch"):
        revisions.applied_from_heads(["zz_bogus"], CHAINS)


def test_unknown_release_names_the_known_ones() -> None:
    with pytest.raises(UnknownRelease, match=r"release '9' is not in the manifest \(known: 1, 2, 3, 4\)"):
        MANIFEST.release("9")


@pytest.mark.parametrize(("content", "message"), [
    ("[[release]\nversion = ", "not valid TOML"),
    ("title = 'no releases'", r"at least one \[\[release\]\]"),
    ("[[release]]\nexpand = 'e0001_initial_schema'\ncontract = 'c0001_contract_base'", "`version` must be"),
    ("[[release]]\nversion = '1'\nexpand = 'e0404_missing'\ncontract = 'c0001_contract_base'",
     "release '1': `expand` = 'e0404_missing' is not a revision of the expand branch"),
    ("[[release]]\nversion = '1'\nexpand = 'e0001_initial_schema'", "release '1': `contract` must name a revision"),
    ("[[release]]\nversion = '1'\nexpand = 'e0002_user_display_name'\ncontract = 'c0001_contract_base'\n"
     "[[release]]\nversion = '2'\nexpand = 'e0001_initial_schema'\ncontract = 'c0001_contract_base'",
     "release '2': `expand` = 'e0001_initial_schema' is older than the previous release's"),
    ("[[release]]\nversion = '1'\nexpand = 'e0001_initial_schema'\ncontract = 'c0001_contract_base'\n"
     "[[release]]\nversion = '1'\nexpand = 'e0001_initial_schema'\ncontract = 'c0001_contract_base'",
     "release '1': listed twice"),
])
def test_corrupt_manifests_are_rejected_by_entry_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "releases.toml"
    path.write_text(content)
    with pytest.raises(ManifestError, match=message):
        load_manifest(CHAINS, path)

"""The release manifest and the compatibility rule, without a database."""

from __future__ import annotations

from pathlib import Path

import pytest
from divbase_migrations import revisions
from divbase_migrations.releases import (
    Applied,
    BehindBaseline,
    Manifest,
    ManifestError,
    UnknownRelease,
    UnknownRevision,
    compatibility,
    load_manifest,
    pending,
    servable,
)

MANIFEST = revisions.load()
CHAINS = MANIFEST.chains


BASELINE = "9885301b9073"  # DivBase's head at 4438d792 (releases v0.1.0a6 to v0.1.0a9)
EXAMPLES = ("1", "2", "3", "4")


def test_both_branches_fork_from_divbase_s_own_head_revision() -> None:
    script = revisions.script_directory()
    assert sorted(script.get_heads()) == sorted([CHAINS.expand[-1], CHAINS.contract[-1]])
    assert CHAINS.baseline == BASELINE == CHAINS.expand[0] == CHAINS.contract[0]
    assert script.get_revision(BASELINE).down_revision is None
    assert script.get_revision(CHAINS.expand[1]).down_revision == BASELINE
    assert script.get_revision(CHAINS.contract[1]).down_revision == BASELINE
    assert "expand" in script.get_revision(CHAINS.expand[1])._orig_branch_labels
    assert "contract" in script.get_revision(CHAINS.contract[1])._orig_branch_labels


def test_branch_membership_comes_from_the_graph_not_the_id() -> None:
    assert CHAINS.branch_of(BASELINE) == "trunk"  # the real first revision c5a18386f0b6 is no contract either
    assert [CHAINS.branch_of(r) for r in CHAINS.expand[1:]] == ["expand"] * (len(CHAINS.expand) - 1)
    assert [CHAINS.branch_of(r) for r in CHAINS.contract[1:]] == ["contract"] * (len(CHAINS.contract) - 1)
    assert CHAINS.branch_of("c5a18386f0b6") is None and CHAINS.branch_of("e_not_ours") is None


def test_files_are_named_by_date_and_slug() -> None:
    files = sorted(p.name for p in (revisions.PACKAGE_DIR / "alembic" / "versions").glob("*.py"))
    assert files and all(__import__("re").fullmatch(r"\d{4}-\d{2}-\d{2}_[a-z0-9_]+\.py", f) for f in files), files


def test_every_contract_revision_depends_on_an_expand_revision() -> None:
    script = revisions.script_directory()
    for revision in CHAINS.contract[1:]:
        deps = script.get_revision(revision).dependencies
        deps = (deps,) if isinstance(deps, str) else tuple(deps or ())
        assert deps and all(d in CHAINS.expand for d in deps), revision


def test_divbase_releases_at_the_baseline_then_four_example_releases_each_needing_the_split() -> None:
    assert MANIFEST.versions == ("0.1.0a6", "0.1.0a7", "0.1.0a8", "0.1.0a9", *EXAMPLES)
    for version in ("0.1.0a6", "0.1.0a9", "1"):
        assert (MANIFEST.release(version).expand, MANIFEST.release(version).contract) == (BASELINE, BASELINE)
    contracts = [MANIFEST.release(v).contract for v in EXAMPLES]
    assert len(set(contracts)) == 4  # every later release removes or tightens something


def test_divbase_s_older_revisions_are_named_with_what_to_run_first() -> None:
    baseline = MANIFEST.baseline
    assert baseline is not None and baseline.schema is not None and baseline.schema.is_file()
    assert len(baseline.history) == 10  # DivBase's eleven revisions, the last being the baseline itself
    with pytest.raises(
        BehindBaseline,
        match=r"427a022ebccf .*older than the baseline 9885301b9073.*alembic upgrade "
        r"9885301b9073",
    ) as caught:
        revisions.applied_from_heads(["427a022ebccf"], CHAINS, baseline=baseline)
    assert caught.value.exit_code == 5


@pytest.mark.parametrize("version", EXAMPLES)
def test_a_release_runs_on_its_own_schema_and_on_the_next_expand(version: str) -> None:
    release = MANIFEST.release(version)
    assert compatibility(MANIFEST, release, Applied(release.expand, release.contract)).ok
    following = MANIFEST.releases[MANIFEST.versions.index(version) + 1 :]
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
    at_baseline = ["0.1.0a6", "0.1.0a7", "0.1.0a8", "0.1.0a9", "1"]
    assert servable(MANIFEST, Applied(BASELINE, BASELINE)) == at_baseline
    assert servable(MANIFEST, Applied(CHAINS.expand[1], CHAINS.contract[0])) == [*at_baseline, "2"]
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
        CHAINS.expand[2], CHAINS.contract[0]
    )
    with pytest.raises(UnknownRevision, match="'zz_bogus': not a revision of this image's migrations") as caught:
        revisions.applied_from_heads(["zz_bogus"], CHAINS)
    assert caught.value.exit_code == 2
    # a newer release's revision is placed by the branch divbase-migrate recorded for it, whatever its id
    applied = revisions.applied_from_heads(["zz_future", CHAINS.contract[1]], CHAINS, logged={"zz_future": "expand"})
    assert applied == Applied("zz_future", CHAINS.contract[1])


def test_unknown_release_names_the_known_ones() -> None:
    known = r"0\.1\.0a6, 0\.1\.0a7, 0\.1\.0a8, 0\.1\.0a9, 1, 2, 3, 4"
    with pytest.raises(UnknownRelease, match=rf"release '9' is not in the manifest \(known: {known}\)"):
        MANIFEST.release("9")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[release]\nversion = ", "not valid TOML"),
        ("title = 'no releases'", r"at least one \[\[release\]\]"),
        ("[[release]]\nexpand = 'e0002_user_display_name'\ncontract = 'c0002_user_display_name'", "`version` must be"),
        (
            "[[release]]\nversion = '1'\nexpand = 'e0404_missing'\ncontract = 'c0002_user_display_name'",
            "release '1': `expand` = 'e0404_missing' is not a revision of the expand branch",
        ),
        (
            "[[release]]\nversion = '1'\nexpand = 'e0002_user_display_name'",
            "release '1': `contract` must name a revision",
        ),
        (
            "[[release]]\nversion = '1'\nexpand = 'e0003_skip_reason'\n"
            "contract = 'c0002_user_display_name'\n"
            "[[release]]\nversion = '2'\n"
            "expand = 'e0002_user_display_name'\ncontract = 'c0002_user_display_name'",
            "release '2': `expand` = 'e0002_user_display_name' is older than the previous release's",
        ),
        (
            "[[release]]\nversion = '1'\nexpand = 'e0002_user_display_name'\n"
            "contract = 'c0002_user_display_name'\n"
            "[[release]]\nversion = '1'\n"
            "expand = 'e0002_user_display_name'\ncontract = 'c0002_user_display_name'",
            "release '1': listed twice",
        ),
        (
            "[[release]]\nversion = '0.1.0a9'\nexpand = 'e0002_user_display_name'\n"
            "contract = 'c0002_user_display_name'\n"
            "[[release]]\nversion = 'v0.1.0a9'\n"
            "expand = 'e0002_user_display_name'\ncontract = 'c0002_user_display_name'",
            "release 'v0.1.0a9': listed twice",
        ),
        (
            "[[release]]\nversion = '0.1.0a10'\nexpand = 'e0002_user_display_name'\n"
            "contract = 'c0002_user_display_name'\n"
            "[[release]]\nversion = '0.1.0a9'\n"
            "expand = 'e0002_user_display_name'\ncontract = 'c0002_user_display_name'",
            "release '0.1.0a9': listed after '0.1.0a10', an older release comes first",
        ),
    ],
)
def test_corrupt_manifests_are_rejected_by_entry_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "releases.toml"
    path.write_text(content)
    with pytest.raises(ManifestError, match=message):
        load_manifest(CHAINS, path)


def _divbase_manifest(tmp_path: Path) -> Manifest:
    """Two releases named the way DivBase tags them (without the `v` in the manifest)."""
    path = tmp_path / "releases.toml"
    path.write_text(
        "[[release]]\nversion = '0.1.0a9'\nexpand = '9885301b9073'\ncontract = '9885301b9073'\n"
        "[[release]]\nversion = '0.1.0a10'\nexpand = 'e0002_user_display_name'\n"
        "contract = '9885301b9073'\n"
    )
    return load_manifest(CHAINS, path)


@pytest.mark.parametrize(
    ("asked", "found"),
    [
        ("v0.1.0a9", "0.1.0a9"),
        ("0.1.0a9", "0.1.0a9"),
        ("0.1.0-a9", "0.1.0a9"),
        ("v0.1.0a10", "0.1.0a10"),
    ],
)
def test_a_release_is_found_by_its_tag(tmp_path: Path, asked: str, found: str) -> None:
    assert _divbase_manifest(tmp_path).release(asked).version == found


def test_a_tag_of_another_release_is_unknown(tmp_path: Path) -> None:
    manifest = _divbase_manifest(tmp_path)
    for asked in ("v0.1.0a1", "0.1.0", "0.1.0a90", "latest"):
        with pytest.raises(UnknownRelease, match=r"known: 0\.1\.0a9, 0\.1\.0a10\)"):
            manifest.release(asked)
    assert manifest.latest().version == "0.1.0a10"


# --- the verdict's words: what `check`, the runner's refusals and the API's startup show -------------------------
def test_every_verdict_says_why_in_so_many_words() -> None:
    r2, r4 = MANIFEST.release("2"), MANIFEST.release("4")
    ok = compatibility(MANIFEST, r2, Applied(r2.expand, r2.contract))
    assert ok.ok is True and ok.missing == ()
    assert ok.reason == f"release 2 can run: expand at {r2.expand}, contract at {r2.contract}"
    newer = compatibility(MANIFEST, r4, Applied("e0099_future", r4.contract))
    assert newer.ok is True
    assert newer.reason.endswith(
        f"contract at {r4.contract} (plus expand revisions of a newer release, which only add)"
    )
    empty = compatibility(MANIFEST, MANIFEST.release("1"), Applied(None, None))
    assert empty.ok is False and empty.missing == (BASELINE,)
    assert "the database is at nothing (run `divbase-migrate expand --release 1`)" in empty.reason
    unknown = compatibility(MANIFEST, r4, Applied("e0099_future", "c0099_future"))
    assert unknown.ok is False and unknown.missing == ()
    assert unknown.reason == (
        "contract revision c0099_future (from a newer release) may have removed what release 4 uses"
    )
    past = compatibility(MANIFEST, r2, Applied(r4.expand, r4.contract))
    assert past.ok is False and past.missing == ()
    assert past.reason.startswith(
        f"contract revision {r4.contract} removed what release 2 uses (it tolerates up to {r2.contract})"
    )


def test_a_contract_revision_of_a_newer_release_is_placed_beyond_the_chain() -> None:
    from divbase_migrations.releases import Position

    assert Position.of(CHAINS, "contract", "c0099_future") == Position(len(CHAINS.contract), unknown=True)
    assert Position.of(CHAINS, "contract", CHAINS.contract[1]) == Position(1, unknown=False)
    assert Position.of(CHAINS, "expand", None) == Position(-1, unknown=False)


def test_versions_that_are_not_pep_440_are_listed_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "releases.toml"
    path.write_text(
        "[[release]]\nversion = 'latest-stable'\nexpand = 'e0002_user_display_name'\n"
        "contract = 'c0002_user_display_name'\n"
        "[[release]]\nversion = 'green'\nexpand = 'e0002_user_display_name'\n"
        "contract = 'c0002_user_display_name'\n"
    )
    assert load_manifest(CHAINS, path).versions == ("latest-stable", "green")


def test_a_project_whose_branches_do_not_share_a_baseline_reports_an_empty_contract() -> None:
    from divbase_migrations.releases import Chains, Release

    chains = Chains(expand=("e1", "e2"), contract=("c1",))
    manifest = Manifest((Release("1", "e1", "c1"),), chains)
    verdict = compatibility(manifest, manifest.release("1"), Applied("e2", None))
    assert verdict.ok is True and verdict.reason == "release 1 can run: expand at e2, contract at nothing"


DIVBASE_LIKE = Path(__file__).resolve().parents[1] / "fixtures" / "divbase_like" / "alembic.ini"


def test_a_trunk_with_its_own_history_is_walked_down_to_the_baseline_only() -> None:
    """DivBase's shape: the baseline has a down_revision. A database at it (or past it) is placed without walking
    its history; one at an older trunk revision is BehindBaseline, even when the manifest lists no history."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from divbase_migrations.releases import Chains

    script = ScriptDirectory.from_config(Config(str(DIVBASE_LIKE)))
    chains = revisions.chains_from(script)
    assert chains == Chains((BASELINE,), (BASELINE,), BASELINE)  # no pair yet: both branches start at the head
    assert revisions.applied_from_heads([BASELINE], chains, script) == Applied(BASELINE, BASELINE)
    with pytest.raises(BehindBaseline, match=r"427a022ebccf \(Stand-in for DivBase's 427a022ebccf") as caught:
        revisions.applied_from_heads(["427a022ebccf"], chains, script)
    assert caught.value.exit_code == 5
    with pytest.raises(UnknownRevision):  # a prefix of a real id is no id (Alembic would resolve it)
        revisions.applied_from_heads(["427a022e"], chains, script)

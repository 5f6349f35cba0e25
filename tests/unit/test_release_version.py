"""DivBase's release versions (PEP 440, optional `v`): parsing, order, sameness and the CRD's pattern."""

from __future__ import annotations

import random
import re

import pytest
from divbase_migrations import release_version as rv
from packaging.version import InvalidVersion, Version

ORDERED = ["0.1.0a9", "0.1.0a10", "0.1.0b1", "0.1.0rc1", "0.1.0", "1", "2", "10"]


@pytest.mark.parametrize(
    "text",
    [
        "v0.1.0a9",
        "0.1.0a9",
        "1.2.3",
        "2",
        "1.4.0rc1",
        "1.0.0.post1",
        "1.0.dev3",
        "0.1.0-a9",
        "0.1.0.rc1",
        "1.0.0-post2",
        "v10.20.30b4.post5.dev6",
        "1.4.0-rc.1",
        "2.0.0-b-1",
    ],
)
def test_accepted(text: str) -> None:
    assert rv.check(text) == Version(text)
    assert rv.is_valid(text)
    assert re.fullmatch(rv.PATTERN, text)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("latest", "'latest' is not a PEP 440 version"),
        ("1.2.3.x", "'1.2.3.x' is not a PEP 440 version"),
        ("", "is empty"),
        ("   ", "is empty"),
        (" 1.2", "whitespace"),
        ("1.0+build.7", "local label"),
        ("1!2.0", "epoch"),
        ("1.0RC1", "write it e.g. as '1.0rc1'"),
        ("V0.1.0A9", "write it e.g. as 'v0.1.0a9'"),
        ("1.0a", "write it e.g. as '1.0a0'"),
        ("1" + ".0" * 20, "longer than 40"),
        (2, "got int 2, not a string"),
        (None, "not a string"),
    ],
)
def test_refused_with_what_is_wrong(text: object, says: str) -> None:
    with pytest.raises(rv.InvalidRelease, match=re.escape(says)):
        rv.check(text)
    assert not rv.is_valid(text)
    if isinstance(text, str):
        assert not re.fullmatch(rv.PATTERN, text) or len(text) > rv.MAX_LENGTH


def test_expected_names_the_examples() -> None:
    assert rv.EXPECTED == "a release like v0.1.0a9, 0.1.0a9 or 2 (PEP 440, optional leading v)"


def test_parse_is_packaging_with_an_optional_v() -> None:
    assert rv.parse("v1.0+local.7") == Version("1.0+local.7")  # parse accepts what packaging does
    with pytest.raises(ValueError, match="not a PEP 440"):
        rv.parse("1.2.3.x")


def test_pep_440_order() -> None:
    shuffled = ORDERED[::-1]
    random.Random(1).shuffle(shuffled)
    assert sorted(shuffled, key=rv.sort_key) == ORDERED
    assert sorted(["v2", "10", "v0.1.0a10", "0.1.0a9"], key=rv.sort_key) == ["0.1.0a9", "v0.1.0a10", "v2", "10"]
    assert rv.sort_key("0.1.0a10") > rv.sort_key("0.1.0a9")  # not string order
    assert rv.sort_key("1.0.0.post1") > rv.sort_key("1.0.0") > rv.sort_key("1.0.0.dev1")


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("v0.1.0a9", "0.1.0a9", True),
        ("0.1.0-a9", "0.1.0a9", True),
        ("0.1.0.a9", "v0.1.0a9", True),
        ("2", "2.0.0", True),
        ("1.4.0rc1", "1.4.0c1", True),
        ("0.1.0a9", "0.1.0a10", False),
        ("0.1.0a9", "0.1.0", False),
        ("not-a-version", "not-a-version", True),
        ("not-a-version", "v1", False),
    ],
)
def test_same_release(a: str, b: str, same: bool) -> None:
    assert rv.same_release(a, b) is same
    assert rv.same_release(b, a) is same


def test_everything_the_pattern_matches_packaging_parses() -> None:
    """The CRD's pattern must never admit what the operator then cannot order: random strings over the alphabet of
    versions, kept when the pattern matches, must all parse (and pass `check`)."""
    alphabet = "v0123456789.-_abrcpostdev+!A"
    rng = random.Random(440)
    matched = 0
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        if re.fullmatch(rv.PATTERN, text):
            matched += 1
            Version(text)  # raises InvalidVersion if the pattern is too loose
            assert rv.check(text) == Version(text)
    assert matched > 50, "the sample should exercise the pattern"


def test_pattern_refuses_what_packaging_refuses() -> None:
    for text in ("latest", "1.2.3.x", "", "v", "1..2", "1.", ".1", "1.0-", "vv1"):
        with pytest.raises(InvalidVersion):
            Version(text)
        assert not re.fullmatch(rv.PATTERN, text), text

"""DivBase release versions: PEP 440 with an optional leading `v`, as DivBase tags them (`v0.1.0a9`).

One module for both sides: the operator validates and orders `spec.version` with it, the runner finds a release
of its manifest with it, so `--release v0.1.0a9` and the manifest's `0.1.0a9` are the same release everywhere.
Ordering and equality are PEP 440's (packaging's), never string comparison: `0.1.0a10` is after `0.1.0a9`.

`PATTERN` is the stricter form a resource's `spec.version` must have, because the version as written is also
an image tag and a label value: no epoch (`1!`), no local label (`+abc`), lower case, numbered pre-, post- and
dev-releases. Everything it matches, packaging parses."""

from __future__ import annotations

import re
from typing import Final

from packaging.version import InvalidVersion, Version

MAX_LENGTH: Final = 40  # also the CRD's maxLength: the version is part of label values (63) and image tags
EXAMPLES: Final = ("v0.1.0a9", "0.1.0a9", "2")
EXPECTED: Final = f"a release like {', '.join(EXAMPLES[:-1])} or {EXAMPLES[-1]} (PEP 440, optional leading v)"

_SEP = "[-_.]?"  # the separators PEP 440 allows around a pre-, post- or dev-release's signifier (1.4.0-rc.1)
PATTERN: Final = (
    r"^v?[0-9]+(\.[0-9]+)*"
    rf"({_SEP}(a|b|rc){_SEP}[0-9]+)?"
    rf"({_SEP}post{_SEP}[0-9]+)?"
    rf"({_SEP}dev{_SEP}[0-9]+)?$"
)
_STRICT = re.compile(PATTERN)


class InvalidRelease(ValueError):
    """Not a release version; the message says what is wrong (callers add EXPECTED and the field's name)."""


def parse(text: object) -> Version:
    """Any PEP 440 version, with or without a leading `v` (packaging's own rule, local labels included)."""
    if not isinstance(text, str):
        raise InvalidRelease(f"got {type(text).__name__} {text!r}, not a string")
    if not text.strip():
        raise InvalidRelease("is empty")
    try:
        return Version(text)
    except InvalidVersion:
        raise InvalidRelease(f"{text!r} is not a PEP 440 version") from None


def check(text: object) -> Version:
    """A version usable as `spec.version`: matches PATTERN (see the module docstring for why it is stricter)."""
    if isinstance(text, str) and text.strip() and any(c.isspace() for c in text):
        raise InvalidRelease(f"{text!r} contains whitespace")
    version = parse(text)
    assert isinstance(text, str)
    if len(text) > MAX_LENGTH:
        raise InvalidRelease(f"{text!r} is longer than {MAX_LENGTH} characters")
    if version.local is not None:
        raise InvalidRelease(
            f"{text!r} has a local label ('+{version.local}'): '+' cannot be part of an image "
            "tag or a Kubernetes label value"
        )
    if version.epoch:
        raise InvalidRelease(f"{text!r} has an epoch ('{version.epoch}!'), which cannot be part of an image tag")
    if not _STRICT.match(text):
        spelled = ("v" if text[:1] in "vV" else "") + str(version)
        raise InvalidRelease(
            f"{text!r} is PEP 440 but not in the accepted spelling (lower case; numbered a, b, "
            f"rc, post, dev): write it e.g. as {spelled!r}"
        )
    return version


def is_valid(text: object) -> bool:
    try:
        check(text)
    except InvalidRelease:
        return False
    return True


def sort_key(text: str) -> Version:
    """Orders releases as PEP 440 does: 0.1.0a9 < 0.1.0a10 < 0.1.0b1 < 0.1.0rc1 < 0.1.0 < 1 < 2 < 10."""
    return parse(text)


def same_release(a: str, b: str) -> bool:
    """True when both name one release after packaging's normalisation: v0.1.0a9 = 0.1.0a9 = 0.1.0-a9, and
    2 = 2.0 (missing release segments count as zeros). An unparseable string only equals itself."""
    if a == b:
        return True
    try:
        return parse(a) == parse(b)
    except InvalidRelease:
        return False

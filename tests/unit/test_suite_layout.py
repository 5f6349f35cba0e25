"""The suite collects as one run: `make test` runs every folder in one pytest session, where the default import
mode ("prepend", no `__init__.py` in the folders) refuses two test modules of the same basename. Running a folder
alone does not show it, so this unit test does."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_has_a_basename_of_its_own() -> None:
    places: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if "__pycache__" not in path.parts and "fixtures" not in path.parts:
            places[path.name].append(str(path.relative_to(TESTS)))
    shared = {name: paths for name, paths in places.items() if len(paths) > 1 and name != "conftest.py"}
    assert not shared, f"test modules sharing a basename (rename one): {shared}"

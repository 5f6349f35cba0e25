"""The reader of the docs' runnable blocks: what it takes, and that a marker which would run nothing is an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from docblocks import SCENARIOS, DocError, blocks, scenario

ROOT = Path(__file__).resolve().parents[2]
DOC = """# Title

<!-- doc-test: quick -->
```sh
echo one
export X=1
```

```sh
echo not marked
```

<!-- doc-test: quick -->
```bash
echo "$X"
```
"""


def test_marked_blocks_form_one_script_in_document_order(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    found = blocks(doc)
    assert [(b.line, b.scenario) for b in found] == [(5, "quick"), (15, "quick")]
    assert scenario([doc], "quick") == '# --- doc.md:5\necho one\nexport X=1\n# --- doc.md:15\necho "$X"\n'


def test_steps_thread_a_scenario_through_several_documents(tmp_path: Path) -> None:
    first, second = tmp_path / "install.md", tmp_path / "operator.md"
    first.write_text("<!-- doc-test: s -->\n```sh\nup\n```\n<!-- doc-test: s 90 -->\n```sh\ndown\n```\n")
    second.write_text(
        "<!-- doc-test: s 60 -->\n```sh\nuse\n```\n<!-- doc-test: s 60 -->\n```sh\nuse again\n```\n"
        "<!-- doc-test: s -->\n```sh\nalso up\n```\n"
    )
    script = scenario([first, second], "s")
    assert [line for line in script.splitlines() if not line.startswith("#")] == [
        "up",
        "also up",
        "use",
        "use again",
        "down",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "<!-- doc-test: a -->\n\n```sh\necho\n```\n",
        "<!-- doc-test: a -->\n```yaml\nk: v\n```\n",
        "<!-- doc-test: a -->\n```sh\necho\n",
    ],
    ids=["gap", "not-shell", "unclosed"],
)
def test_a_marker_that_would_run_nothing_is_an_error(tmp_path: Path, text: str) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    with pytest.raises(DocError):
        blocks(doc)


def test_an_unknown_scenario_is_an_error(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    with pytest.raises(DocError, match="no block of scenario 'other'"):
        scenario([doc], "other")


def test_every_marked_block_in_the_docs_parses_and_belongs_to_a_scenario_ci_runs() -> None:
    """A marker with a misspelt scenario, or in a document its scenario does not read, would never run."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for doc in docs:
        for block in blocks(doc):
            assert block.scenario in SCENARIOS, f"{doc.name}:{block.line}: unknown scenario {block.scenario!r}"
            assert doc in SCENARIOS[block.scenario], f"{doc.name}:{block.line}: {block.scenario} does not read it"
    for name in SCENARIOS:
        assert scenario(SCENARIOS[name], name)  # each has blocks


def test_the_readmes_demo_table_has_the_columns_the_demo_prints() -> None:
    """README shows one run of `make demo`: its header and alignment row are the demo's own (issue 13 found 5 of 8
    columns), so a column added to the demo fails here until README's table has it."""
    from divbase_app.demo import table

    printed = table({}).splitlines()
    readme = (ROOT / "README.md").read_text().splitlines()
    at = next((i for i, line in enumerate(readme) if line.startswith("| | requests |")), None)
    assert at is not None, "README.md has no demo table (a line starting '| | requests |')"
    assert readme[at : at + 2] == printed[:2]

"""docs/runner-contract.md and divbase_migrations.contract say the same: every exit code, environment variable and
summary key of the module is in the page's tables and nothing else is; `divbase-migrate --help` lists them too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from divbase_migrations import cli, contract

DOC = Path(__file__).resolve().parents[2] / "docs" / "runner-contract.md"


def table(section: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table under `## <section>`, without its header and rule."""
    text = DOC.read_text()
    match = re.search(rf"(?ms)^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text)
    assert match, f"no section {section!r} in {DOC.name}"
    block: list[str] = []
    for line in match.group(1).splitlines():  # the first contiguous table only
        if line.startswith("|"):
            block.append(line)
        elif block:
            break
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in block]
    assert len(rows) > 2 and set(rows[1][0]) <= set("-: "), f"{section}: not a table"
    return rows[2:]


def names(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def module_env() -> set[str]:
    return {value for name, value in vars(contract).items() if name.startswith("ENV_") and isinstance(value, str)}


def test_every_exit_code_is_documented_with_what_the_job_does() -> None:
    rows = table("Exit codes")
    documented = {int(row[0]) for row in rows}
    constants = {value for name, value in vars(contract).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert documented == set(contract.EXIT_MEANINGS) == constants
    fails_at_once = {int(row[0]) for row in rows if "fails at once" in row[2]}
    assert fails_at_once == set(contract.NON_RETRYABLE_EXIT_CODES)


def test_every_environment_variable_is_documented() -> None:
    documented = set().union(*(names(row[0]) for row in table("Environment")))
    assert documented == module_env()
    assert contract.ENV_MIGRATE_CONFIG == "DIVBASE_MIGRATE_CONFIG"


def test_every_summary_key_is_documented_with_its_type() -> None:
    summary = table("The summary")
    plan = table("What a plan returns")
    documented = set().union(*(names(row[0]) for row in summary + plan))
    constants = {
        value
        for name, value in vars(contract).items()
        if name.startswith("SUMMARY_") and name != "SUMMARY_KEYS" and isinstance(value, str)
    }
    assert documented == set(contract.SUMMARY_KEYS) == constants
    kinds = {
        "string": contract._STRING_KEYS,
        "int": contract._INT_KEYS,
        "list": contract._LIST_KEYS,
        "object": contract._REVISION_MAP_KEYS,
    }
    for row in summary:
        for key in names(row[0]):
            if row[1] in kinds:
                assert key in kinds[row[1]], f"`{key}` is documented as {row[1]}"


@pytest.mark.parametrize(
    "command", [None, "expand", "contract", "status", "check", "plan", "lint", "releases", "revision"]
)
def test_every_help_lists_the_exit_codes_and_the_environment(
    command: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args([command, "--help"] if command else ["--help"])
    shown = capsys.readouterr().out
    for code in contract.EXIT_MEANINGS:
        assert re.search(rf"(?m)^  {code}  \S", shown), (command, code)
    for variable in module_env():
        assert variable in shown, (command, variable)

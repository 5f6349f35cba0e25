"""`lint`: an expand revision may only add or backfill. Static checks over the revision files (AST, no database).

Forbidden in expand: dropping anything, renaming, changing a column's type, making a column NOT NULL, adding a
NOT NULL column without a server default to an existing table, building an index on an existing table without
CONCURRENTLY. The same rules are applied to SQL strings passed to `op.execute`. Contract revisions are not
restricted (that is where removals belong). A finding names the file, line and operation.

In every revision of either branch, a `# DIVBASE-TODO` line (what `divbase-migrate revision` writes where it
could not place a change safely) is a finding until someone writes the change by hand and deletes the marker.

A reviewed exception carries `# divbase-lint: allow <reason>` on the operation's first line (e.g. dropping an
INVALID index left by a failed CONCURRENTLY build, to make the revision re-runnable); a marker without a reason
is itself a finding."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .releases import BRANCHES, EXPAND, TRUNK, Chains
from .revisions import PACKAGE_DIR, chains_from, script_directory
from .splitter import TODO_MARKER

VERSIONS_DIR = PACKAGE_DIR / "alembic" / "versions"

DROP_OPS = {"drop_table", "drop_column", "drop_constraint", "drop_index", "drop_table_comment", "drop_column_comment"}
RENAME_OPS = {"rename_table"}
ALLOW = re.compile(r"#\s*divbase-lint:\s*allow\b(.*)$")
SQL_RULES = (
    (re.compile(r"\bDROP\s+(TABLE|COLUMN|INDEX|TYPE|CONSTRAINT|VIEW|SCHEMA|FUNCTION|TRIGGER)\b", re.I), "drops {0}"),
    (re.compile(r"\bRENAME\b", re.I), "renames"),
    (re.compile(r"\bALTER\s+COLUMN\s+\S+\s+(SET\s+DATA\s+)?TYPE\b", re.I), "changes a column type"),
    (re.compile(r"\bSET\s+NOT\s+NULL\b", re.I), "makes a column NOT NULL"),
    (re.compile(r"\bCREATE\s+(UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY)", re.I), "builds an index without CONCURRENTLY"),
    (re.compile(r"\bTRUNCATE\b", re.I), "truncates"),
)


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    op: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}: {self.op}: {self.problem}"


def _const(node: ast.AST | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """Module-level string constants (`revision`, SQL passed to op.execute by name), first assignment wins."""
    found: dict[str, str] = {}
    for node in tree.body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        )
        if isinstance(target, ast.Name) and target.id not in found:
            value = _const(node.value)
            if isinstance(value, str):
                found[target.id] = value
    return found


def _upgrade(tree: ast.Module) -> ast.FunctionDef | None:
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"), None)


def _op_calls(func: ast.AST) -> Iterator[tuple[str, ast.Call]]:
    for node in ast.walk(func):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "op"
        ):
            yield node.func.attr, node


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _arg(call: ast.Call, index: int, name: str) -> ast.expr | None:
    return call.args[index] if len(call.args) > index else _kw(call, name)


def _string_values(node: ast.AST | None, module_strings: dict[str, str]) -> list[str]:
    """Literal SQL of an op.execute argument: constants, f-strings (their constant parts) and module constants."""
    if node is None:
        return []
    if isinstance(node, ast.Call) and node.args:  # sa.text("...")
        return _string_values(node.args[0], module_strings)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return ["".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)]
    if isinstance(node, ast.BinOp):
        return ["".join(_string_values(node.left, module_strings) + _string_values(node.right, module_strings))]
    if isinstance(node, ast.Name) and node.id in module_strings:
        return [module_strings[node.id]]
    return []


@dataclass(frozen=True)
class Header:
    revision: str | None
    down_revision: str | None
    labels: tuple[str, ...]


def _header(tree: ast.Module) -> Header:
    strings = _module_strings(tree)
    labels: tuple[str, ...] = ()
    for node in tree.body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        )
        if isinstance(target, ast.Name) and target.id == "branch_labels" and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = None
            labels = (value,) if isinstance(value, str) else tuple(value or ())
    return Header(strings.get("revision"), strings.get("down_revision"), labels)


def place(headers: dict[str, Header], chains: Chains) -> dict[str, str | None]:
    """Each revision's branch from the graph: its own branch label, else the branch of its down_revision (among
    the linted files or our revisions). A revision right on the trunk without a label is on no branch (None)."""
    placed: dict[str, str | None] = {}

    def branch(revision: str, seen: frozenset[str] = frozenset()) -> str | None:
        if revision in placed:
            return placed[revision]
        header = headers.get(revision)
        result: str | None = chains.branch_of(revision)  # one of our revisions: the graph has placed it
        if result is None and header is not None:
            labelled = [label for label in header.labels if label in BRANCHES]
            if labelled:
                result = labelled[0]
            elif header.down_revision and header.down_revision not in seen:
                below = branch(header.down_revision, seen | {revision})
                result = below if below in BRANCHES else None
        placed[revision] = result
        return result

    for revision in headers:
        branch(revision)
    return placed


def lint_file(path: Path, branch: str | None) -> list[Finding]:
    """The findings of one revision file on `branch`: TODO markers in every branch, forbidden operations in expand."""
    text = path.read_text()
    tree = ast.parse(text, filename=str(path))
    module_strings = _module_strings(tree)
    revision = module_strings.get("revision")
    if revision is None:
        return [Finding(path, 1, "revision", 'no `revision = "..."` found')]
    if branch == TRUNK:
        return []  # the baseline: DivBase's own history, not a step of ours
    if branch is None:
        return [
            Finding(
                path,
                1,
                "revision",
                f"revision {revision!r} is on neither branch: give the first revision "
                f"of a branch branch_labels = ('expand',) or ('contract',), and "
                f"every later one a down_revision on that branch",
            )
        ]
    todos = _todos(path, text)
    if branch != EXPAND:
        return todos
    upgrade = _upgrade(tree)
    if upgrade is None:
        return [*todos, Finding(path, 1, "upgrade", "no upgrade() function")]
    return [*todos, *_expand_findings(path, upgrade, module_strings, text.splitlines())]


def _todos(path: Path, text: str) -> list[Finding]:
    """A finding for each TODO_MARKER line `divbase-migrate revision` left."""
    return [
        Finding(
            path,
            number,
            TODO_MARKER,
            line.split(TODO_MARKER, 1)[1].lstrip(": ").strip()
            + " (left by `divbase-migrate revision`: write it by hand, then delete the marker)",
        )
        for number, line in enumerate(text.splitlines(), start=1)
        if TODO_MARKER in line
    ]


def _expand_findings(
    path: Path, upgrade: ast.FunctionDef, module_strings: dict[str, str], lines: list[str]
) -> list[Finding]:
    """What an expand revision's upgrade() must not do, unless its line carries an allow marker with a reason."""
    created = {_const(_arg(call, 0, "table_name")) for name, call in _op_calls(upgrade) if name == "create_table"}
    findings: list[Finding] = []
    for name, call in _op_calls(upgrade):
        table = _const(_arg(call, 0 if name != "create_index" else 1, "table_name"))
        for op, problem in _expand_problems(name, call, table, table not in created, module_strings):
            finding = _unless_allowed(path, lines, call, op, problem)
            if finding is not None:
                findings.append(finding)
    return findings


def _unless_allowed(path: Path, lines: list[str], call: ast.Call, op: str, problem: str) -> Finding | None:
    """None when the call's first line allows it with a reason; a marker without one is named in the finding."""
    allow = ALLOW.search(lines[call.lineno - 1])
    if allow and allow.group(1).strip():
        return None
    if allow:
        problem += " (an allow marker needs a reason)"
    return Finding(path, call.lineno, op, problem)


def _expand_problems(
    name: str, call: ast.Call, table: object, existing: bool, module_strings: dict[str, str]
) -> Iterator[tuple[str, str]]:
    """(operation, problem) for each rule one op.<name>(...) call of an expand revision breaks."""
    if name in DROP_OPS:
        yield f"op.{name}", "expand revisions must not drop; move it to the contract branch"
    elif name in RENAME_OPS:
        yield f"op.{name}", "expand revisions must not rename; add the new name, backfill, drop the old in a contract"
    elif name == "alter_column":
        yield from (("op.alter_column", problem) for problem in _alter_column_problems(call))
    elif name == "add_column" and existing:
        if _adds_not_null_without_default(call):
            yield "op.add_column", f"adds a NOT NULL column without a server default to existing table {table!r}"
    elif name == "create_index" and existing and _const(_kw(call, "postgresql_concurrently")) is not True:
        yield (
            "op.create_index",
            (f"builds an index on existing table {table!r} without postgresql_concurrently=True (blocks writes)"),
        )
    elif name == "execute":
        yield from (("op.execute", problem) for problem in _sql_problems(call, module_strings))


def _alter_column_problems(call: ast.Call) -> Iterator[str]:
    if _kw(call, "new_column_name") is not None:
        yield "renames a column; add a new column and backfill instead"
    if _kw(call, "type_") is not None:
        yield "changes a column type; add a new column and backfill instead"
    if _const(_kw(call, "nullable")) is False:
        yield "makes a column NOT NULL; add CHECK (...) NOT VALID here and VALIDATE + SET NOT NULL in a contract"


def _adds_not_null_without_default(call: ast.Call) -> bool:
    """op.add_column(table, sa.Column(..., nullable=False)) without server_default: old code's inserts fail."""
    column = _arg(call, 1, "column")
    if not isinstance(column, ast.Call):
        return False
    return _const(_kw(column, "nullable")) is False and _kw(column, "server_default") is None


def _sql_problems(call: ast.Call, module_strings: dict[str, str]) -> Iterator[str]:
    """SQL_RULES over the literal SQL an op.execute runs."""
    for sql in _string_values(_arg(call, 0, "sqltext"), module_strings):
        for pattern, problem in SQL_RULES:
            match = pattern.search(sql)
            if match:
                detail = problem.format(*(g or "" for g in match.groups())).strip()
                yield f"SQL {detail}: {match.group(0).strip()!r}"


def lint(paths: Iterable[Path] | None = None) -> list[Finding]:
    versions = Path(script_directory().versions) if paths is None else VERSIONS_DIR
    files = (
        sorted(versions.glob("*.py"))
        if paths is None
        else [f for p in paths for f in (sorted(p.glob("*.py")) if p.is_dir() else [p])]
    )
    trees = {path: ast.parse(path.read_text(), filename=str(path)) for path in files}
    headers = {path: _header(tree) for path, tree in trees.items()}
    chains = chains_from(script_directory())
    placed = place({h.revision: h for h in headers.values() if h.revision}, chains)
    return [finding for path in files for finding in lint_file(path, placed.get(headers[path].revision or "", None))]

"""The code's shape in figures: module sizes, complexity, maintainability, import cycles, repeated helpers.

Issue 19 (one shape for the operator) is judged on these figures before and after, so they come from one script
anyone can rerun rather than from numbers copied into a note. Cyclomatic complexity and the maintainability index
are radon's (`pip install radon`: the `shape` extra); import cycles are found from the modules' own `import`
statements (a cycle is a strongly connected group of modules within one package); the formatter figure is what
`ruff format --check` would change.

    .venv/bin/python -m bench.shape [--label before] [--out bench/results/shape.json]
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "divbase_operator": ROOT / "operator" / "divbase_operator",
    "divbase_localcluster": ROOT / "localcluster" / "divbase_localcluster",
    "divbase_migrations": ROOT / "migrations" / "divbase_migrations",
    "divbase_testsupport": ROOT / "testsupport" / "divbase_testsupport",
}
COMPLEX = 15  # radon's rank C starts at 11; the issue counts functions above 15
# Helpers the issue counts: each should be defined once in the tree.
HELPERS = ("wait_for", "wait_until", "free_port", "get_condition")


def modules(package: str, root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports_of(name: str, path: Path, is_package: bool) -> set[str]:
    """The modules of the same top-level package that `name` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def cycles(package: str, root: Path) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm), the package's own imports only."""
    mods = dict(modules(package, root))
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = imports_of(name, path, path.name == "__init__.py")
        # `from x import y` names a module when x.y is one; a package's __init__ is not counted as an edge target
        # (importing a submodule runs it, but it rarely imports back).
        graph[name] = {t for t in targets if t in mods and t != name and t != package}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            visit(node)
    return groups


def radon_json(command: str, paths: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "radon", command, "-j", *paths], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


def complexity(paths: list[str]) -> list[dict[str, Any]]:
    rows = []
    for file, blocks in radon_json("cc", paths).items():
        for block in blocks:
            if isinstance(block, dict) and block.get("complexity", 0) > COMPLEX:
                owner = f"{block['classname']}." if block.get("classname") else ""
                rows.append({"file": file, "function": owner + block["name"], "complexity": block["complexity"]})
    return sorted(rows, key=lambda r: -r["complexity"])


def definitions(paths: list[Path]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {h: [] for h in HELPERS}
    for base in paths:
        for path in sorted(base.rglob("*.py")):
            if ".venv" in path.parts or "build" in path.relative_to(ROOT).parts[:1]:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in found:
                    found[node.name].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def sys_path_edits(paths: list[Path]) -> list[str]:
    pattern = re.compile(r"sys\.path\.(insert|append)")
    return [
        f"{p.relative_to(ROOT)}" for base in paths for p in sorted(base.rglob("*.py")) if pattern.search(p.read_text())
    ]


def unformatted() -> int:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ruff"), "format", "--check", "."], cwd=ROOT, capture_output=True, text=True
    )
    found = re.search(r"(\d+) files? would be reformatted", result.stdout + result.stderr)
    return int(found.group(1)) if found else 0


def measure() -> dict[str, Any]:
    code = [str(p.relative_to(ROOT)) for p in PACKAGES.values() if p.is_dir()]
    sizes, statements = {}, {}
    for package, root in PACKAGES.items():
        if not root.is_dir():  # before the test-support package existed
            continue
        for name, path in modules(package, root):
            sizes[name] = sum(1 for _ in path.open())
            # statements do not change when a formatter splits or joins lines, so sizes before and after compare
            statements[name] = sum(isinstance(n, ast.stmt) for n in ast.walk(ast.parse(path.read_text())))
    mi = {file: round(v["mi"], 2) for file, v in radon_json("mi", code).items()}
    complex_functions = complexity(code)
    return {
        "largest_modules": dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:8]),
        "largest_modules_statements": dict(sorted(statements.items(), key=lambda kv: -kv[1])[:8]),
        "functions_above_cc15": len(complex_functions),
        "worst_functions": complex_functions[:10],
        "modules_mi_below_10": {f: v for f, v in sorted(mi.items(), key=lambda kv: kv[1]) if v < 10},
        "import_cycles": {p: cycles(p, root) for p, root in PACKAGES.items() if root.is_dir()},
        "helper_definitions": definitions(
            [ROOT / d for d in ("operator", "localcluster", "migrations", "testsupport", "tests", "bench", "examples")]
        ),
        "sys_path_edits": sys_path_edits([ROOT / "tests", ROOT / "bench"]),
        "files_ruff_format_would_change": unformatted(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="now", help="the name of this measurement in the results file")
    parser.add_argument("--out", type=Path, help="merge the figures into this JSON file under --label")
    args = parser.parse_args()
    figures = measure()
    print(json.dumps(figures, indent=2))
    if args.out:
        results = json.loads(args.out.read_text()) if args.out.exists() else {}
        results[args.label] = figures
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

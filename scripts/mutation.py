"""`make mutation`: mutmut over the decision functions of the gates, reported in bench/results/mutation.md.

mutmut 3 expects its sources under `src/` (it derives module names from paths), so the packages and the tests are
staged in build/mutation/ with this repository's pyproject.toml plus a [tool.mutmut] section, and mutmut runs there
on exactly the functions scripts/mutation.toml names. The run fails (exit 1) when a mutant survives that is not
listed as equivalent there, by its name and its diff, with a reason; when a function got no mutant (a stale name);
or when a listed equivalent is stale: no longer generated, killed by a test, or its name now shows another diff
(mutmut numbers mutants by position, so a function's change renumbers them). Not part of `make test`: it takes
minutes.

    .venv/bin/python scripts/mutation.py [--max-children 2] [--gate "retry token"] [--keep]"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCOPE = REPO / "scripts" / "mutation.toml"
STAGE = REPO / "build" / "mutation"
RESULTS = REPO / "bench" / "results"
PACKAGES = {
    "divbase_operator": REPO / "operator" / "divbase_operator",
    "divbase_migrations": REPO / "migrations" / "divbase_migrations",
}
LEFT_OUT = {".git", "build", "tests", "pyproject.toml"}  # staged by this script, or not for tests
KEEP = "<!-- kept by scripts/mutation.py: hand-written below -->"
SEPARATOR = "ǁ"  # mutmut's separator in the mangled names of methods
# mutmut's exit codes of a mutant's test run, as its `results` command names them
KILLED, SURVIVED, NO_TESTS, TIMEOUT = "killed", "survived", "no tests", "timeout"
STATUS = {
    1: KILLED,
    3: KILLED,
    0: SURVIVED,
    5: NO_TESTS,
    33: NO_TESTS,
    34: "skipped",
    36: TIMEOUT,
    37: KILLED,
    -24: TIMEOUT,
    24: TIMEOUT,
    152: TIMEOUT,
    255: TIMEOUT,
}


@dataclass
class Gate:
    name: str
    module: str
    functions: list[str]
    mutants: dict[str, str] = field(default_factory=dict)  # mutant name -> status

    def pattern(self, function: str) -> str:
        cls, _, method = function.rpartition(".")
        mangled = f"x{SEPARATOR}{cls}{SEPARATOR}{method}" if cls else f"x_{method}"
        return f"{self.module}.{mangled}__mutmut_*"

    def owns(self, mutant: str) -> str | None:
        return next((f for f in self.functions if re.fullmatch(re.escape(self.pattern(f)[:-1]) + r"\d+", mutant)), None)


@dataclass(frozen=True)
class Equivalent:
    """A survivor explained: it holds only for the mutant of that name whose diff is `diff`."""

    mutant: str
    diff: str
    why: str


def same_diff(a: str, b: str) -> bool:
    """Diffs compared line by line, whitespace runs aside (mutmut's output is indented as the source)."""

    def lines(diff: str) -> list[str]:
        return [" ".join(line.split()) for line in diff.splitlines() if line.strip()]

    return lines(a) == lines(b)


def load_scope(only: list[str]) -> tuple[dict[str, Any], list[Gate], dict[str, Equivalent]]:
    scope = tomllib.loads(SCOPE.read_text())
    gates = [Gate(g["name"], g["module"], list(g["functions"])) for g in scope["gate"]]
    if only:
        unknown = set(only) - {g.name for g in gates}
        if unknown:
            sys.exit(f"unknown gate(s) {sorted(unknown)}; known: {[g.name for g in gates]}")
        gates = [g for g in gates if g.name in only]
    equivalent: dict[str, Equivalent] = {}
    for entry in scope.get("equivalent", []):
        if not isinstance(entry, dict) or set(entry) != {"mutant", "diff", "why"} or not entry["diff"].strip():
            sys.exit(f"{SCOPE}: each [[equivalent]] needs exactly mutant, diff (non-empty) and why: {entry}")
        if entry["mutant"] in equivalent:
            sys.exit(f"{SCOPE}: {entry['mutant']} is listed twice")
        equivalent[entry["mutant"]] = Equivalent(entry["mutant"], entry["diff"].strip("\n"), entry["why"])
    return scope, gates, equivalent


def stage(tests: list[str], gates: list[Gate], skip_lines: list[str], rev: str | None) -> None:
    """The packages and tests of the work tree, or of the git revision `rev` (for before/after figures)."""
    shutil.rmtree(STAGE, ignore_errors=True)
    STAGE.mkdir(parents=True)
    root = REPO
    if rev:
        root = STAGE / "rev"
        root.mkdir()
        archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name, source in PACKAGES.items():
        shutil.copytree(root / source.relative_to(REPO), STAGE / "src" / name, ignore=ignore)
    shutil.copytree(root / "tests", STAGE / "tests", ignore=ignore)
    missing = [t for t in tests if not t.startswith("-") and not (STAGE / t).exists()]
    if missing:
        sys.exit(f"no such test path(s) in {rev or 'the work tree'}: {missing}")
    # tests read the repository's other files (charts, crds, gitops, docs) next to tests/: mutmut runs them in
    # build/mutation/mutants/, so those are linked there (read only; the mutated packages are under src/)
    (STAGE / "mutants").mkdir()
    entries = {e.name: e for e in REPO.iterdir()} | ({e.name: e for e in root.iterdir()} if rev else {})
    for name, entry in sorted(entries.items()):  # a revision's own files; the work tree's .venv
        if name not in LEFT_OUT:
            (STAGE / "mutants" / name).symlink_to(entry)
    modules = sorted({g.module for g in gates})
    only = [f"src/{m.replace('.', '/')}.py" for m in modules]
    section = (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {json.dumps(only)}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
        "use_git_change_detection = false\n"
        f"do_not_mutate_patterns = {json.dumps(skip_lines)}\n"
    )
    (STAGE / "pyproject.toml").write_text((root / "pyproject.toml").read_text() + section)


def run_mutmut(gates: list[Gate], max_children: int, log_path: Path) -> None:
    patterns = [g.pattern(f) for g in gates for f in g.functions]
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *patterns]
    with log_path.open("w") as log:
        proc = subprocess.run(
            command,
            cwd=STAGE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            check=False,
        )
    if proc.returncode != 0:
        sys.stdout.write(log_path.read_text()[-4000:])
        sys.exit(f"mutmut run failed (exit {proc.returncode}); log: {log_path}")


def collect(gates: list[Gate]) -> None:
    for gate in gates:
        meta = STAGE / "mutants" / "src" / (gate.module.replace(".", "/") + ".py.meta")
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        for mutant, code in codes.items():
            if gate.owns(mutant):
                gate.mutants[mutant] = STATUS.get(code, "suspicious") if code is not None else "not checked"


@functools.cache
def diff_of(mutant: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", mutant], cwd=STAGE, capture_output=True, text=True, check=False
    ).stdout
    diff = "\n".join(
        line for line in out.splitlines() if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
    )
    if not diff:
        sys.exit(f"`mutmut show {mutant}` printed no diff (run kept? see --keep)")
    return diff


def stale_equivalents(gates: list[Gate], equivalent: dict[str, Equivalent]) -> tuple[set[str], list[str]]:
    """(survivors the list explains, problems): an entry explains a survivor only when name and diff both match;
    an entry whose name shows another diff, whose mutant is killed, or that is no longer generated is stale."""
    status = {m: s for g in gates for m, s in g.mutants.items()}
    explained, problems = set(), []
    for name, entry in sorted(equivalent.items()):
        gate = next((g for g in gates if g.owns(name)), None)
        if gate is None:
            continue  # a gate not run this time (--gate)
        if name not in status:
            problems.append(f"listed as equivalent but not generated any more: {name}")
        elif not same_diff(diff_of(name), entry.diff):
            function = gate.owns(name)
            now = [m for m, s in gate.mutants.items() if gate.owns(m) == function and same_diff(diff_of(m), entry.diff)]
            problems.append(
                f"listed as equivalent, but {name} is now another mutant (names are positional):\n"
                f"  listed:\n    {entry.diff.strip().replace(chr(10), chr(10) + '    ')}\n"
                f"  now:\n    {diff_of(name).replace(chr(10), chr(10) + '    ')}\n"
                f"  the listed diff is now {', '.join(now) if now else 'no mutant'}"
                + (f" ({', '.join(status[m] for m in now)})" if now else "")
            )
        elif status[name] in (KILLED, TIMEOUT):
            problems.append(f"listed as equivalent but a test kills it now ({status[name]}): drop {name}")
        else:
            explained.add(name)
    return explained, problems


def report(
    gates: list[Gate], equivalent: dict[str, Equivalent], seconds: float, max_children: int, out: Path
) -> list[str]:
    """Writes the report; returns the problems that fail the run."""
    rows, sections, figures = [], [], {}
    explained_names, problems = stale_equivalents(gates, equivalent)
    for gate in gates:
        counts = Counter(gate.mutants.values())
        missing = [f for f in gate.functions if not any(gate.owns(m) == f for m in gate.mutants)]
        problems += [f"{gate.name}: no mutant of {gate.module}.{f} (renamed or removed?)" for f in missing]
        alive = sorted(
            (m for m, s in gate.mutants.items() if s not in (KILLED, TIMEOUT)),
            key=lambda m: (gate.owns(m) or "", int(m.rpartition("_")[2])),
        )
        explained = [m for m in alive if m in explained_names]
        unexplained = [m for m in alive if m not in explained_names]
        problems += [f"{gate.name}: {m} {gate.mutants[m]}" for m in unexplained]
        figures[gate.name] = {
            "mutants": len(gate.mutants),
            "killed": counts[KILLED],
            "timeout": counts[TIMEOUT],
            "survived": len(alive),
            "no_tests": counts[NO_TESTS],
            "equivalent": len(explained),
            "unexplained": len(unexplained),
        }
        rows.append(
            f"| {gate.name} | {len(gate.mutants)} | {counts[KILLED]} | {counts[TIMEOUT]} | {len(alive)} | "
            f"{counts[NO_TESTS]} | {len(explained)} | {len(unexplained)} |"
        )
        for mutant in alive:
            why = (
                equivalent[mutant].why
                if mutant in explained_names
                else f"**NOT EXPLAINED** ({gate.mutants[mutant]}"
                + (", listed as equivalent with another diff)" if mutant in equivalent else ")")
            )
            sections.append(f"#### `{mutant}`\n\n{why}\n\n```diff\n{diff_of(mutant)}\n```\n")
    total = {k: sum(f[k] for f in figures.values()) for k in next(iter(figures.values()), {})}
    lines = [
        "# Mutation testing of the gates (`make mutation`)",
        "",
        "mutmut 3 over the decision functions named in `scripts/mutation.toml`, judged by `tests/unit` and the "
        "in-process PostgreSQL tests of the runner (`tests/integration/test_runner_inprocess.py`). Killed: a test "
        "failed; timeout: the mutant hung (also detected); survived: every test passed; equivalent: a survivor that "
        "cannot change what the function decides, with the reason below (from `scripts/mutation.toml`, where each is "
        "listed by its name and its diff). Generated by "
        "`scripts/mutation.py`, which keeps the hand-written part at the end (before/after figures, what was done).",
        "",
        f"Run: {time.strftime('%Y-%m-%d')}, {seconds:.0f} s with {max_children} worker(s).",
        "",
        "| gate | mutants | killed | timeout | survived | of which no test reached | equivalent | unexplained |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        f"| **all** | {total.get('mutants', 0)} | {total.get('killed', 0)} | {total.get('timeout', 0)} | "
        f"{total.get('survived', 0)} | {total.get('no_tests', 0)} | {total.get('equivalent', 0)} | "
        f"{total.get('unexplained', 0)} |",
        "",
        "## Survivors",
        "",
        *(sections or ["None."]),
    ]
    out.mkdir(parents=True, exist_ok=True)
    kept = "\n"
    if (out / "mutation.md").exists() and f"\n{KEEP}\n" in (out / "mutation.md").read_text():
        kept = (out / "mutation.md").read_text().partition(f"\n{KEEP}\n")[2]
    (out / "mutation.md").write_text("\n".join(lines).rstrip() + f"\n\n{KEEP}\n" + kept)
    (out / "mutation.json").write_text(
        json.dumps({"gates": figures, "total": total, "seconds": round(seconds), "workers": max_children}, indent=2)
        + "\n"
    )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--gate", action="append", default=[], help="only this gate (repeatable)")
    parser.add_argument("--tests", nargs="+", help="judge with these tests instead of the scope's")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where mutation.md and mutation.json go")
    parser.add_argument(
        "--rev",
        help="mutate and test this git revision instead of the work tree (e.g. main); its "
        "tests import the work tree's localcluster and app packages (not staged: they find their "
        "Go module and data next to themselves)",
    )
    parser.add_argument("--ignore", action="append", default=[], help="a test file to leave out (repeatable)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only write the report again from the last run kept (after editing [equivalent])",
    )
    parser.add_argument("--keep", action="store_true", help="keep build/mutation for `mutmut show`/`browse`")
    args = parser.parse_args(argv)
    scope, gates, equivalent = load_scope(args.gate)
    if not args.report_only:
        started = time.monotonic()
        tests = args.tests or [str(t) for t in scope["tests"]]
        skip_lines = [str(p) for p in scope.get("do_not_mutate_patterns", [])]
        stage(tests + [f"--ignore={path}" for path in args.ignore], gates, skip_lines, args.rev)
        run_mutmut(gates, args.max_children, STAGE / "mutmut.log")
        (STAGE / "run.json").write_text(
            json.dumps({"seconds": time.monotonic() - started, "workers": args.max_children})
        )
    elif not (STAGE / "run.json").exists():
        sys.exit("--report-only needs the results of a run made with --keep (build/mutation)")
    run = json.loads((STAGE / "run.json").read_text())
    collect(gates)
    problems = report(gates, equivalent, run["seconds"], run["workers"], args.out)
    if not args.keep and not args.report_only:
        shutil.rmtree(STAGE / "mutants", ignore_errors=True)
    print((args.out / "mutation.md").read_text())
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

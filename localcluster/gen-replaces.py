#!/usr/bin/env python3
"""Regenerate the `replace` block of localcluster/go.mod for one Kubernetes version.

k8s.io/kubernetes is not meant to be imported: its go.mod points every k8s.io/* staging module at
./staging/src/..., which does not exist in the module zip. Each staging module is published on its own as
v0.<minor>.<patch>, so we read the upstream go.mod (through the Go module proxy) and pin each staging module
to the matching published version. Run: `python3 localcluster/gen-replaces.py v1.36.3 > /tmp/replaces`
or with `--write` to rewrite localcluster/go.mod between the BEGIN/END markers.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

BEGIN = "// BEGIN generated replaces (gen-replaces.py)"
END = "// END generated replaces"


def staging_replaces(k8s_version: str) -> list[tuple[str, str]]:
    """Return (module, published version) for every staging replace in k8s.io/kubernetes@k8s_version."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{k8s_version}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    gomod = Path(json.loads(out)["GoMod"]).read_text()
    m = re.fullmatch(r"v1\.(\d+)\.(\d+)", k8s_version)
    if not m:
        raise SystemExit(f"expected a release version like v1.36.3, got {k8s_version}")
    staging_version = f"v0.{m.group(1)}.{m.group(2)}"
    mods = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/src/", gomod, flags=re.M)
    return [(mod, staging_version) for mod in sorted(set(mods))]


def render(k8s_version: str) -> str:
    lines = [BEGIN, f"// k8s.io/kubernetes {k8s_version}", "replace ("]
    lines += [f"\t{mod} => {mod} {ver}" for mod, ver in staging_replaces(k8s_version)]
    lines += [")", END]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    block = render(args[0])
    if "--write" not in argv:
        sys.stdout.write(block)
        return 0
    gomod = Path(__file__).with_name("go.mod")
    text = gomod.read_text()
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _m: block.rstrip("\n"), text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    gomod.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

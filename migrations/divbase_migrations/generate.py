"""`divbase-migrate revision`: an expand/contract pair of revisions generated from the models.

A scratch database is created on the configured server (DIVBASE_DATABASE_URL or the DIVBASE_DB_* parts: the
database named there is only used to create and drop the scratch one), upgraded to the head of both branches,
compared with the target models by Alembic's autogenerate through the project's own env.py (its `include_object`,
`compare_type`, `compare_server_default`), and dropped. `splitter.split` places each difference; this module writes
the two files (`YYYY-MM-DD_<slug>_expand.py`, `..._contract.py`, the contract `depends_on` the expand) into the
project's versions directory and points release V of the manifest at them."""

from __future__ import annotations

import ast
import importlib
import re
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import produce_migrations
from alembic.operations import ops
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from . import releases as releases_mod
from .release_version import same_release
from .releases import CONTRACT, EXPAND, ManifestError, load_manifest
from .revisions import alembic_config, chains_from, default_manifest
from .splitter import EnumChange, Rename, Split, enum_changes, split

ENUMS_SQL = """
SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)
FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = current_schema() GROUP BY t.typname
"""


class GenerateError(ValueError):
    """The request cannot be generated (bad --models, unknown rename, release not the newest...)."""


@dataclass(frozen=True)
class Generated:
    expand_path: Path
    contract_path: Path
    expand_id: str
    contract_id: str
    split: Split
    manifest: Path


def load_models(spec: str) -> sa.MetaData:
    """`module:attribute`, the attribute a MetaData, a declarative base (its `.metadata`) or a function
    returning either."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise GenerateError(f"--models {spec!r}: expected module:attribute (e.g. myapp.models:Base)")
    cwd = str(Path.cwd())
    if cwd not in sys.path:  # as alembic's prepend_sys_path: the developer's own package, run from its checkout
        sys.path.insert(0, cwd)
    try:
        value: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise GenerateError(f"--models {spec!r}: {exc}") from None
    if callable(value) and not isinstance(value, type) and not isinstance(value, sa.MetaData):
        value = value()
    value = getattr(value, "metadata", value)
    if not isinstance(value, sa.MetaData):
        raise GenerateError(f"--models {spec!r} is not a MetaData, a declarative base or a function returning one")
    return value


def slugify(message: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:limit].strip("_")
    if not slug:
        raise GenerateError(f"-m {message!r}: the message needs letters or digits (it names the files)")
    return slug


def next_ids(chains: releases_mod.Chains, slug: str) -> tuple[str, str]:
    """e<NNNN>_<slug> and c<NNNN>_<slug>, one past the highest number used on each branch."""

    def number(chain: Sequence[str], prefix: str) -> int:
        used = [int(m.group(1)) for r in chain if (m := re.fullmatch(prefix + r"(\d{4})_.*", r))]
        return max(used, default=1) + 1

    return f"e{number(chains.expand, 'e'):04d}_{slug}", f"c{number(chains.contract, 'c'):04d}_{slug}"


@dataclass
class Comparison:
    upgrade_ops: ops.UpgradeOps
    enums: dict[str, list[str]]
    metadata: sa.MetaData


def compare(
    cfg_factory: Any, script: ScriptDirectory, connection: sa.Connection, metadata: sa.MetaData | None
) -> Comparison:
    """Run the project's env.py on `connection` (so its include_object and compare options apply) and autogenerate
    the differences between that database and `metadata` (default: env.py's target_metadata)."""
    result: dict[str, Any] = {}

    def fn(rev: Any, context: Any) -> list[Any]:
        target = metadata if metadata is not None else context.opts.get("target_metadata")
        if target is None:
            raise GenerateError("env.py configures no target_metadata: pass --models module:attribute")
        result["metadata"] = target
        result["ops"] = produce_migrations(context, target).upgrade_ops
        return []

    cfg = cfg_factory(connection=connection)
    with EnvironmentContext(cfg, script, fn=fn, as_sql=False):
        script.run_env()
    enums = {name: list(labels) for name, labels in connection.execute(sa.text(ENUMS_SQL))}
    return Comparison(result["ops"], enums, result["metadata"])


class ScratchDatabase:
    """A database created for one comparison on the configured server, dropped afterwards whatever happens."""

    def __init__(self, url: URL) -> None:
        self.admin_url = url
        self.name = f"divbase_scratch_{secrets.token_hex(6)}"
        self.admin = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")

    def __enter__(self) -> URL:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        return self.admin_url.set(database=self.name)

    def __exit__(self, *exc: object) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


def generate(
    url: URL,
    message: str,
    release: str,
    renames: Sequence[Rename] = (),
    models: str | sa.MetaData | None = None,
    manifest_path: Path | None = None,
    today: datetime | None = None,
) -> Generated:
    """Write the pair and update the manifest (see the module); `models` is a `module:attribute` or a MetaData."""
    metadata = load_models(models) if isinstance(models, str) else models
    manifest_path = manifest_path or default_manifest()
    script = ScriptDirectory.from_config(alembic_config())
    chains = chains_from(script)  # a trunk-only project gets both branches started from its head
    manifest = load_manifest(chains, manifest_path)
    existing = next((r for r in manifest.releases if same_release(r.version, release)), None)
    if existing is not None and existing is not manifest.latest():
        raise GenerateError(
            f"release {release!r} is not the newest in {manifest_path.name} "
            f"({manifest.latest().version} is): new revisions go to the newest release or a new one"
        )
    slug = slugify(message)
    expand_id, contract_id = next_ids(chains, slug)
    now = (today or datetime.now(UTC)).replace(microsecond=0)
    versions = Path(script.versions)
    paths = (versions / f"{now:%Y-%m-%d}_{slug}_expand.py", versions / f"{now:%Y-%m-%d}_{slug}_contract.py")
    for path in paths:
        if path.exists():
            raise GenerateError(f"{path} exists already: choose another message")
    found = _compare_on_scratch(url, script, metadata)
    changes: list[EnumChange] = enum_changes(found.enums, found.metadata)
    result = split(found.upgrade_ops, renames, changes, existing_enums=found.enums, metadata=found.metadata)
    if not result.placements:
        raise GenerateError("the models and the migrated schema agree: nothing to generate")
    heads = {branch: chains.of(branch)[-1] for branch in (EXPAND, CONTRACT)}
    texts = {
        EXPAND: render_revision(result, EXPAND, expand_id, heads[EXPAND], chains, message, release, now, None),
        CONTRACT: render_revision(
            result, CONTRACT, contract_id, heads[CONTRACT], chains, message, release, now, expand_id
        ),
    }
    _check_parses(texts)
    _write_pair(
        paths,
        texts,
        manifest_path,
        partial(
            update_manifest,
            release=release,
            expand_id=expand_id,
            contract_id=contract_id,
            message=message,
            exists=existing is not None,
        ),
    )
    return Generated(paths[0], paths[1], expand_id, contract_id, result, manifest_path)


def _compare_on_scratch(url: URL, script: ScriptDirectory, metadata: sa.MetaData | None) -> Comparison:
    """Autogenerate's comparison of the models with a scratch database upgraded to the heads (then dropped)."""
    with ScratchDatabase(url) as scratch_url:
        engine = sa.create_engine(scratch_url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                command.upgrade(alembic_config(connection=conn), "heads")
                conn.commit()
            with engine.connect() as conn:
                found = compare(alembic_config, script, conn, metadata)
                conn.rollback()
        finally:
            engine.dispose()
    return found


def _check_parses(texts: dict[str, str]) -> None:
    for branch, text in texts.items():
        try:
            ast.parse(text)
        except SyntaxError as exc:  # a bug of the generator: show what it wrote
            raise GenerateError(f"the generated {branch} revision does not parse ({exc}):\n{text}") from None


def _write_pair(
    paths: tuple[Path, Path], texts: dict[str, str], manifest_path: Path, updated: Callable[[str], str]
) -> None:
    """Write both revisions and the manifest (`updated` of its text), then read them back as a project; on any error
    leave the files as they were (no half-written pair)."""
    old_manifest = manifest_path.read_text()
    written: list[Path] = []
    try:
        for path, branch in zip(paths, (EXPAND, CONTRACT), strict=True):
            path.write_text(texts[branch])
            written.append(path)
        manifest_path.write_text(updated(old_manifest))
        load_manifest(chains_from(ScriptDirectory.from_config(alembic_config())), manifest_path)
    except Exception:
        for path in written:
            path.unlink(missing_ok=True)
        manifest_path.write_text(old_manifest)
        raise


def update_manifest(text: str, release: str, expand_id: str, contract_id: str, message: str, exists: bool) -> str:
    """Point release V at the new revisions: its [[release]] table's `expand` and `contract` lines, or a new table
    at the end (releases are listed oldest first)."""
    if not exists:
        summary = message.replace("\\", "\\\\").replace('"', '\\"')
        return text.rstrip("\n") + (
            f'\n\n[[release]]\nversion = "{release}"\nexpand = "{expand_id}"\n'
            f'contract = "{contract_id}"\nsummary = "{summary}"\n'
        )
    starts = [m.start() for m in re.finditer(r"(?m)^\[\[release\]\]\s*$", text)]
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        chunk = text[start:end]
        version = re.search(r'(?m)^version\s*=\s*"([^"]*)"', chunk)
        if version and same_release(version.group(1), release):
            chunk = re.sub(r'(?m)^expand\s*=\s*"[^"]*"', f'expand = "{expand_id}"', chunk, count=1)
            chunk = re.sub(r'(?m)^contract\s*=\s*"[^"]*"', f'contract = "{contract_id}"', chunk, count=1)
            return text[:start] + chunk + text[end:]
    raise ManifestError(f"release {release!r} not found in the manifest's text")


def _py(value: str | tuple[str, ...] | None) -> str:
    """Revision ids as the hand-written revisions spell them: "id", ("expand",), None."""
    if isinstance(value, tuple):
        return "(" + ", ".join(_py(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return "None" if value is None else '"' + value + '"'


def _literal(sql: str) -> str:
    if '"""' in sql or "\\" in sql or sql.endswith('"'):
        return repr(sql)
    return '"""\n' + sql + '\n"""'


def _placed_list(result: Split, branch: str) -> str:
    placed = [p for p in result.placements if p.branch == branch]
    return "\n".join(f"- {p.kind} {p.target}" + (f" ({p.note})" if p.note else "") for p in placed) or "- nothing"


def _import_lines(imports: set[str], code: str) -> list[str]:
    """The revision's imports: sqlalchemy and the renderer's extra imports only when `code` uses them."""
    used = sorted(i for i in imports if i.split()[-1] + "." in code)
    lines = ["from __future__ import annotations", "", "from collections.abc import Sequence", ""]
    if "sa." in code:
        lines.append("import sqlalchemy as sa")
    lines.append("from alembic import op")
    lines.extend(used)
    return lines


def render_revision(
    result: Split,
    branch: str,
    revision: str,
    down: str,
    chains: releases_mod.Chains,
    message: str,
    release: str,
    now: datetime,
    depends_on: str | None,
) -> str:
    """The revision file of `branch`: a docstring listing what was placed there, the imports its code uses, its
    SQL constants, upgrade() and downgrade(). The first revision of a branch carries the branch's label."""
    body = result.expand if branch == EXPAND else result.contract
    first = down == chains.baseline
    labels = (branch,) if first else None
    what = _placed_list(result, branch)
    role = (
        "Old code keeps working: this only adds, relaxes and backfills."
        if branch == EXPAND
        else "Runs once no pod of the release before remains: removals and tightening."
    )
    todo_note = (
        f"\n\n{len(body.todos)} change(s) could not be placed safely: the marked TODO lines below say what "
        f"to write by hand; `divbase-migrate lint` refuses this file until they are gone."
        if body.todos
        else ""
    )
    upgrade, downgrade = body.upgrade_code(), body.downgrade_code()
    header_imports = _import_lines(body.imports, upgrade + downgrade + "".join(body.constants.values()))
    constants = "".join(f"{name} = {_literal(sql)}\n\n" for name, sql in body.constants.items())
    return (
        f'"""{message} ({branch}, release {release}), generated by `divbase-migrate revision`.\n\n'
        f"Revision ID: {revision}\nRevises: {down}\nCreate Date: {now.isoformat(' ')}\n\n"
        f"{role} Generated from the models' differences with the schema at the head of both branches:\n"
        f'{what}{todo_note}\n"""\n\n' + "\n".join(header_imports) + "\n\n"
        f"revision: str = {_py(revision)}\n"
        f"down_revision: str | Sequence[str] | None = {_py(down)}\n"
        f"branch_labels: str | Sequence[str] | None = {_py(labels)}\n"
        f"depends_on: str | Sequence[str] | None = {_py(depends_on)}\n\n"
        + (f"{constants}" if constants else "")
        + f"\ndef upgrade() -> None:\n{upgrade}\n\n\ndef downgrade() -> None:\n{downgrade}\n"
    )

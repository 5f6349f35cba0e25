"""Place each operation Alembic's autogenerate found on the expand or the contract branch (pure: no database).

`split(upgrade_ops, ...)` takes what `alembic.autogenerate.produce_migrations` compared (the models against a
database at the head of both branches), the renames the developer declared (`--rename table.old:new`) and the enum
label changes (which autogenerate does not see), and returns two revision bodies: what old code tolerates
(`expand`) and what only the new code tolerates (`contract`). The rules, each with a working downgrade:

- new table (with its indexes and enum types): expand.
- new column, nullable or with a constant server default: expand. NOT NULL without a server default: added
  nullable in expand; the contract gets a TODO (backfill what old code wrote, then NOT NULL).
- new index: expand, CREATE INDEX CONCURRENTLY IF NOT EXISTS in an autocommit block (an INVALID leftover of a
  failed build dropped first). A new unique index: the same in the contract (old code may still write duplicates).
- new enum label: expand, ALTER TYPE ... ADD VALUE IF NOT EXISTS outside a transaction.
- new foreign key: expand ADD CONSTRAINT ... NOT VALID (no scan); contract VALIDATE CONSTRAINT.
- column made NOT NULL: expand (SET DEFAULT committed alone and a batched backfill, when the models give it a
  server default, then) CHECK (c IS NOT NULL) NOT VALID; contract VALIDATE, SET NOT NULL, drop the check.
- column made nullable, server default set or changed, comment, type widened (varchar longer, to text): expand.
- type narrowed (varchar shorter, text to varchar(n)): contract (rewrites under ACCESS EXCLUSIVE).
- dropped column, table, index, constraint, or server default: contract.
- declared rename (`--rename t.old:new`): expand adds the new column, a sync trigger, a batched backfill (and a NOT
  VALID check when NOT NULL); contract validates, sets NOT NULL, drops the trigger and the old column.

What it cannot place safely is written as a `# DIVBASE-TODO` line (`TODO_MARKER`), which `divbase-migrate lint`
refuses: a table-rewriting type change, a volatile server default on a new column, a dropped-and-added column pair
that may be an undeclared rename, a dropped enum label (rows need a mapping), a new unique constraint."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate.api import AutogenContext
from alembic.autogenerate.render import render_op_text
from alembic.operations import ops
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql

EXPAND, CONTRACT = "expand", "contract"
TODO_MARKER = "DIVBASE-TODO"
BATCH = 10_000
MAX_NAME = 63  # PostgreSQL's identifier length
_DIALECT = postgresql.dialect()
_QUOTE = _DIALECT.identifier_preparer.quote
# Functions whose default a new column gets without a table rewrite (PostgreSQL 11+: non-volatile defaults).
STABLE_DEFAULTS = re.compile(
    r"^(now\(\)|current_timestamp|current_date|localtimestamp|statement_timestamp\(\)|"
    r"transaction_timestamp\(\))$",
    re.I,
)
_LITERAL = re.compile(r"^\(?\s*('([^']|'')*'|-?\d+(\.\d+)?|true|false|null)\s*\)?(::[\w\s\".\[\]()]+)?$", re.I)
ALLOW_INVALID_DROP = "# divbase-lint: allow drops only an INVALID leftover of a failed build (re-run safety)"


class SplitError(ValueError):
    """The input is contradictory (e.g. a declared rename whose columns autogenerate did not report)."""


@dataclass(frozen=True)
class Rename:
    table: str
    old: str
    new: str

    @classmethod
    def parse(cls, text: str) -> Rename:
        """`table.old:new`."""
        match = re.fullmatch(r"\s*([\w$]+)\.([\w$]+):([\w$]+)\s*", text)
        if not match:
            raise SplitError(f"--rename {text!r}: expected table.old_column:new_column")
        return cls(*match.groups())


@dataclass(frozen=True)
class EnumChange:
    """An enum type of the database whose labels differ from the models'; `columns` use it (table, column)."""

    name: str
    before: tuple[str, ...]
    after: tuple[str, ...]
    columns: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Placement:
    """Where one change went: `branch` is expand, contract or todo (written as a marked TODO)."""

    kind: str
    target: str
    branch: str
    note: str = ""


@dataclass
class Block:
    """Upgrade lines and the downgrade lines that undo them; `autocommit` runs both outside Alembic's transaction."""

    up: list[str]
    down: list[str] = field(default_factory=list)
    autocommit: bool = False


@dataclass
class RevisionBody:
    blocks: list[Block] = field(default_factory=list)
    constants: dict[str, str] = field(default_factory=dict)  # module-level SQL, by name
    imports: set[str] = field(default_factory=set)
    todos: list[str] = field(default_factory=list)

    def add(self, up: Iterable[str], down: Iterable[str] = (), autocommit: bool = False) -> None:
        self.blocks.append(Block(list(up), list(down), autocommit))

    def constant(self, stem: str, sql: str) -> str:
        name = re.sub(r"\W+", "_", stem).upper().strip("_")
        base, n = name, 2
        while name in self.constants and self.constants[name] != sql:
            name, n = f"{base}_{n}", n + 1
        self.constants[name] = sql
        return name

    def todo(self, text: str) -> None:
        self.todos.append(text)
        self.add([f"# {TODO_MARKER}: {line}" for line in text.splitlines()])

    @property
    def empty(self) -> bool:
        return not self.blocks

    def upgrade_code(self) -> str:
        return _code([(b.up, b.autocommit) for b in self.blocks])

    def downgrade_code(self) -> str:
        return _code([(b.down, b.autocommit) for b in reversed(self.blocks) if b.down])


def _code(parts: Sequence[tuple[list[str], bool]]) -> str:
    lines: list[str] = []
    inside = False  # in an autocommit block: the next autocommit part joins it
    for body, autocommit in parts:
        if not body:
            continue
        if autocommit and any(not line.lstrip().startswith("#") for line in body):
            if not inside:
                lines.append("with op.get_context().autocommit_block():")
            lines.extend("    " + line if line else line for line in body)
            inside = True
        else:
            lines.extend(body)
            inside = False
    if not any(line.strip() and not line.lstrip().startswith("#") for line in lines):
        lines.append("pass")
    return "\n".join("    " + line if line else line for line in lines)


@dataclass
class Split:
    expand: RevisionBody
    contract: RevisionBody
    placements: list[Placement]

    @property
    def todos(self) -> list[str]:
        return self.expand.todos + self.contract.todos


# -- helpers ---------------------------------------------------------------------------------------------------------


def name_for(*parts: str) -> str:
    """A PostgreSQL identifier from parts, cut to 63 characters."""
    return "_".join(parts)[:MAX_NAME]


def lit(sql: str) -> str:
    """A Python literal of `sql` that reads like the SQL (no escaped quotes where it can be helped)."""
    if "'" not in sql or "\\" in sql or "\n" in sql:
        return repr(sql)
    if '"' not in sql:
        return '"' + sql + '"'
    if '"""' not in sql and not sql.endswith('"'):
        return '"""' + sql + '"""'
    return repr(sql)


def q(name: str) -> str:
    return _QUOTE(name)


def default_sql(default: Any) -> str | None:
    """The SQL of a server default (a model's or a reflected one)."""
    if default is None:
        return None
    if isinstance(default, sa.DefaultClause):
        default = default.arg
    if isinstance(default, str):
        return "'" + default.replace("'", "''") + "'"
    if isinstance(default, sa.TextClause):
        return default.text
    if isinstance(default, sa.sql.ClauseElement):
        return str(default.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True}))
    return None


def is_cheap_default(default: Any) -> bool:
    """A default PostgreSQL 11+ stores once in the catalog: a literal, or now() and its kin (not volatile)."""
    sql = default_sql(default)
    return sql is not None and bool(_LITERAL.match(sql.strip()) or STABLE_DEFAULTS.match(sql.strip()))


def type_change(old: Any, new: Any) -> str:
    """'widen' (no rewrite, no scan), 'narrow' (a scan or rewrite that only fails on values that no longer fit)
    or 'rewrite' (a different type: the table is rewritten, and old code may write what the new type refuses)."""
    old_t = old if isinstance(old, sa.types.TypeEngine) else sa.types.NullType()
    new_t = new if isinstance(new, sa.types.TypeEngine) else sa.types.NullType()
    if _plain_string(old_t) and _plain_string(new_t):
        old_len, new_len = old_t.length, new_t.length
        if new_len is None or (old_len is not None and new_len >= old_len):
            return "widen"
        return "narrow"
    if _numeric_widens(old_t, new_t):
        return "widen"
    return "rewrite"


def _plain_string(type_: sa.types.TypeEngine[Any]) -> bool:
    """A string type that is not an enum (SQLAlchemy's Enum is a String)."""
    return isinstance(type_, sa.String) and not isinstance(type_, sa.Enum)


def _numeric_widens(old_t: sa.types.TypeEngine[Any], new_t: sa.types.TypeEngine[Any]) -> bool:
    """NUMERIC(p, s) to the same kind with the same scale and at least its precision (not a float)."""
    return (
        isinstance(old_t, sa.Numeric)
        and isinstance(new_t, sa.Numeric)
        and not isinstance(old_t, sa.Float)
        and type(old_t._type_affinity) is type(new_t._type_affinity)
        and old_t.scale == new_t.scale
        and bool(old_t.precision)
        and (new_t.precision or 0) >= old_t.precision
    )


def ddl_type(type_: Any) -> str:
    """The type as PostgreSQL spells it (a reflected VARCHAR(100) and a model's String(100) are the same)."""
    try:
        return str(type_.compile(dialect=_DIALECT))
    except Exception:  # a type without a PostgreSQL spelling
        return repr(type_)


def _enum_names(type_: Any) -> list[str]:
    if isinstance(type_, sa.Enum) and type_.name:
        return [type_.name]
    return []


class _Renderer:
    """Alembic's own renderer, for PostgreSQL, collecting the imports the rendered code needs."""

    def __init__(self) -> None:
        context = MigrationContext.configure(dialect=_DIALECT, opts={})
        self.context = AutogenContext(
            context,
            opts={
                "sqlalchemy_module_prefix": "sa.",
                "alembic_module_prefix": "op.",
                "render_as_batch": False,
                "render_item": self._item,
                "user_module_prefix": None,
            },
        )
        self.context.imports = set()
        self.created_enums: set[str] = set()  # created by an explicit, re-runnable step: columns must not again

    def _item(self, kind: str, obj: Any, context: AutogenContext) -> str | bool:
        if kind == "type" and isinstance(obj, sa.Enum) and obj.name in self.created_enums:
            context.imports.add("from sqlalchemy.dialects import postgresql")
            return f"{self.enum(obj)[:-1]}, create_type=False)"
        return False

    @staticmethod
    def enum(type_: sa.Enum) -> str:
        labels = ", ".join(repr(v) for v in type_.enums)
        return f"postgresql.ENUM({labels}, name={type_.name!r})"

    def create_enum(self, type_: sa.Enum) -> str:
        """A new enum type, created unless it exists (create_table would fail on a re-run); plain SQL, so that
        `divbase-migrate plan --sql` renders it offline too."""
        self.created_enums.add(str(type_.name))
        labels = ", ".join("'" + v.replace("'", "''") + "'" for v in type_.enums)
        sql = (
            f"DO $$ BEGIN CREATE TYPE {q(str(type_.name))} AS ENUM ({labels}); "
            f"EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        return f"op.execute({lit(sql)})"

    def __call__(self, op: ops.MigrateOperation) -> list[str]:
        return render_op_text(self.context, op).splitlines()

    @property
    def imports(self) -> set[str]:
        return set(self.context.imports)


# -- SQL pieces ------------------------------------------------------------------------------------------------------


def guarded_constraint(name: str, table: str, ddl: str) -> str:
    """ADD CONSTRAINT only when it is not there yet: a retried revision finds it."""
    return (
        f"DO $$ BEGIN\n    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = '{name}') THEN\n"
        f"        ALTER TABLE {q(table)} ADD CONSTRAINT {q(name)} {ddl};\n    END IF;\nEND $$"
    )


def batched_update(table: str, assignment: str, where: str, pk: str | None) -> str:
    """An UPDATE in batches, each committed (run it in an autocommit block): no lock outlives one batch. By ranges
    of an integer primary key when there is one, else by ctid batches."""
    t = q(table)
    if pk is not None:
        return (
            f"DO $$\nDECLARE\n    lo bigint;\n    hi bigint;\n    batch constant integer := {BATCH};\nBEGIN\n"
            f"    SELECT min({q(pk)}), max({q(pk)}) INTO lo, hi FROM {t} WHERE {where};\n"
            f"    WHILE lo IS NOT NULL AND lo <= hi LOOP\n"
            f"        UPDATE {t} SET {assignment} WHERE {where} AND {q(pk)} >= lo AND {q(pk)} < lo + batch;\n"
            f"        COMMIT;\n        lo := lo + batch;\n    END LOOP;\nEND $$"
        )
    return (
        f"DO $$\nDECLARE\n    n integer;\nBEGIN\n    LOOP\n"
        f"        UPDATE {t} SET {assignment} WHERE ctid IN (SELECT ctid FROM {t} WHERE {where} LIMIT {BATCH});\n"
        f"        GET DIAGNOSTICS n = ROW_COUNT;\n        COMMIT;\n        EXIT WHEN n = 0;\n    END LOOP;\nEND $$"
    )


def sync_function(name: str, old: str, new: str) -> str:
    """Release 2's trigger: whichever of the two columns a writer set is copied to the other."""
    o, n = q(old), q(new)
    return (
        f"CREATE OR REPLACE FUNCTION {q(name)}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
        f"    IF TG_OP = 'UPDATE' THEN\n"
        f"        IF NEW.{n} IS DISTINCT FROM OLD.{n} AND NEW.{o} IS NOT DISTINCT FROM OLD.{o} THEN\n"
        f"            NEW.{o} := NEW.{n};\n"
        f"        ELSIF NEW.{o} IS DISTINCT FROM OLD.{o} AND NEW.{n} IS NOT DISTINCT FROM OLD.{n} THEN\n"
        f"            NEW.{n} := NEW.{o};\n        END IF;\n    END IF;\n"
        f"    NEW.{n} := COALESCE(NEW.{n}, NEW.{o});\n    NEW.{o} := COALESCE(NEW.{o}, NEW.{n});\n"
        f"    RETURN NEW;\nEND $$"
    )


def enum_swap(name: str, labels: Sequence[str], columns: Sequence[tuple[str, str]], refuse: Sequence[str]) -> str:
    """Replace enum type `name` with one of `labels` (PostgreSQL cannot drop a label), refusing while any row still
    holds a label of `refuse`."""
    values = ", ".join("'" + v.replace("'", "''") + "'" for v in labels)
    lines = ["DO $$ BEGIN"]
    for table, column in columns:
        for label in refuse:
            lines.append(
                f"    IF EXISTS (SELECT 1 FROM {q(table)} WHERE {q(column)}::text = '{label}') THEN\n"
                f"        RAISE EXCEPTION '{table}.{column} still holds {label}: map those rows first';\n"
                f"    END IF;"
            )
    for table, _ in columns:
        lines.append(f"    LOCK TABLE {q(table)} IN ACCESS EXCLUSIVE MODE;")
    lines.append(f"    ALTER TYPE {q(name)} RENAME TO {q(name + '_old')};")
    lines.append(f"    CREATE TYPE {q(name)} AS ENUM ({values});")
    for table, column in columns:
        lines.append(
            f"    ALTER TABLE {q(table)} ALTER COLUMN {q(column)} TYPE {q(name)} USING {q(column)}::text::{q(name)};"
        )
    lines.append(f"    DROP TYPE {q(name + '_old')};")
    lines.append("END $$")
    return "\n".join(lines)


# -- the splitter ----------------------------------------------------------------------------------------------------


@dataclass
class _Table:
    """What the ops of one existing table say, gathered before placing them (renames pair a drop with an add)."""

    adds: dict[str, ops.AddColumnOp] = field(default_factory=dict)
    drops: dict[str, ops.DropColumnOp] = field(default_factory=dict)
    other: list[ops.MigrateOperation] = field(default_factory=list)


def _flatten(upgrade_ops: ops.UpgradeOps) -> tuple[list[ops.MigrateOperation], dict[str, _Table]]:
    top: list[ops.MigrateOperation] = []
    tables: dict[str, _Table] = {}
    for op in upgrade_ops.ops:
        if isinstance(op, ops.ModifyTableOps):
            entry = tables.setdefault(op.table_name, _Table())
            for inner in op.ops:
                if isinstance(inner, ops.AlterColumnOp) and not _alters(inner):
                    continue
                if isinstance(inner, ops.AddColumnOp):
                    entry.adds[inner.column.name] = inner
                elif isinstance(inner, ops.DropColumnOp):
                    entry.drops[inner.column_name] = inner
                else:
                    entry.other.append(inner)
        else:
            top.append(op)
    return top, tables


def _alters(op: ops.AlterColumnOp) -> bool:
    """Alembic's "unchanged" values: None for nullable, type and name; False for server default and comment."""
    return (
        op.modify_nullable is not None
        or op.modify_type is not None
        or op.modify_name is not None
        or op.modify_server_default is not False
        or op.modify_comment is not False
    )


def _int_pk(table: sa.Table | None) -> str | None:
    if table is None:
        return None
    pk = list(table.primary_key.columns)
    if len(pk) == 1 and isinstance(pk[0].type, sa.Integer):
        return pk[0].name
    return None


def _neighbours(labels: Sequence[str], label: str, present: Sequence[str]) -> tuple[str | None, str | None]:
    """The nearest labels before and after `label` in `labels` that the type has already (None: there is none)."""
    i = labels.index(label)
    after = next((x for x in reversed(labels[:i]) if x in present), None)
    before = next((x for x in labels[i + 1 :] if x in present), None)
    return after, before


class _Splitter:
    def __init__(self, metadata: sa.MetaData | None, existing_enums: Iterable[str]) -> None:
        self.metadata = metadata
        self.existing_enums = set(existing_enums)
        self.render = _Renderer()
        self.expand = RevisionBody()
        self.contract = RevisionBody()
        self.placements: list[Placement] = []
        # blocks by phase, so that each revision runs its parts in a safe order whatever autogenerate's order was
        self.phases: dict[tuple[str, int], list[Block]] = {}
        self.todo_text: dict[str, list[str]] = {EXPAND: [], CONTRACT: []}

    def place(self, kind: str, target: str, branch: str, note: str = "") -> None:
        self.placements.append(Placement(kind, target, branch, note))

    def block(
        self, branch: str, phase: int, up: Iterable[str], down: Iterable[str] = (), autocommit: bool = False
    ) -> None:
        self.phases.setdefault((branch, phase), []).append(Block(list(up), list(down), autocommit))

    def todo(self, branch: str, kind: str, target: str, text: str) -> None:
        self.todo_text[branch].append(text)
        self.place(kind, target, "todo", text)

    def body(self, branch: str) -> RevisionBody:
        return self.expand if branch == EXPAND else self.contract

    def pk_of(self, table: str) -> str | None:
        return _int_pk(self.metadata.tables.get(table) if self.metadata is not None else None)

    # -- per kind ----------------------------------------------------------------------------------------------------
    def create_table(self, op: ops.CreateTableOp, indexes: list[ops.CreateIndexOp]) -> None:
        op.if_not_exists = True
        new_types = {
            c.type.name: c.type
            for c in op.columns
            if isinstance(c, sa.Column)
            for n in _enum_names(c.type)
            if n not in self.existing_enums
        }
        new_enums = list(new_types)
        self.existing_enums.update(new_enums)
        up = [self.render.create_enum(t) for t in new_types.values()] + self.render(op)
        for index in indexes:
            index.if_not_exists = True
            up += self.render(index)
        down = [f"op.drop_table({op.table_name!r}, if_exists=True)"]
        down += [f"op.execute({lit(f'DROP TYPE IF EXISTS {q(n)}')})" for n in new_enums]
        self.block(EXPAND, 20, up, down)
        self.place("create_table", op.table_name, EXPAND)

    def drop_table(self, op: ops.DropTableOp, indexes: Sequence[ops.DropIndexOp] = ()) -> None:
        """Dropping the table drops its indexes; the downgrade builds them again with it."""
        op.if_exists = True
        reverse = op.reverse()
        reverse.if_not_exists = True
        down = self.render(reverse)
        for index in indexes:
            again = index.reverse()
            again.if_not_exists = True
            down += self.render(again)
        self.block(CONTRACT, 60, self.render(op), down)
        self.place("drop_table", op.table_name, CONTRACT)

    def add_column(self, table: str, op: ops.AddColumnOp) -> None:
        column = op.column
        target = f"{table}.{column.name}"
        pre: list[str] = []
        post_down: list[str] = []
        for name in _enum_names(column.type):
            if name not in self.existing_enums:
                self.existing_enums.add(name)
                pre.append(self.render.create_enum(column.type))
                post_down.append(f"op.execute({lit(f'DROP TYPE IF EXISTS {q(name)}')})")
        if column.server_default is not None and not is_cheap_default(column.server_default):
            self.todo(
                EXPAND,
                "add_column",
                target,
                f"{target}: server default {default_sql(column.server_default)} is volatile, adding the column "
                f"rewrites {table!r} under ACCESS EXCLUSIVE: add it without the default, then SET DEFAULT and "
                f"backfill in batches",
            )
            return
        op.if_not_exists = True
        if column.nullable or column.server_default is not None:
            self.block(
                EXPAND,
                30,
                pre + self.render(op),
                [f"op.drop_column({table!r}, {column.name!r}, if_exists=True)", *post_down],
            )
            self.place("add_column", target, EXPAND)
            return
        # NOT NULL without a default: old code inserts rows without it, so it is nullable until the contract
        relaxed = column._copy()
        relaxed.nullable = True
        loose = ops.AddColumnOp(table, relaxed, if_not_exists=True)
        self.block(
            EXPAND,
            30,
            pre + self.render(loose),
            [f"op.drop_column({table!r}, {column.name!r}, if_exists=True)", *post_down],
        )
        self.place("add_column", target, EXPAND, "added nullable")
        self.todo(
            CONTRACT,
            "set_not_null",
            target,
            f"{target} is NOT NULL in the models but has no server default: rows written by the previous "
            f"release have no value. Backfill them here, then make it NOT NULL with a CHECK ... NOT VALID, "
            f"VALIDATE CONSTRAINT, SET NOT NULL (see the example release 3's revisions)",
        )

    def drop_column(self, table: str, op: ops.DropColumnOp) -> None:
        op.if_exists = True
        target = f"{table}.{op.column_name}"
        column = op.to_column()
        self.block(CONTRACT, 50, self.render(op), self._readd(table, column))
        self.place("drop_column", target, CONTRACT)

    def _readd(self, table: str, column: sa.Column[Any]) -> list[str]:
        """The downgrade of a dropped column: back as the expand left it (nullable, NOT NULL as a NOT VALID check,
        unless a server default fills the rows)."""
        if column.nullable or column.server_default is not None:
            return self.render(ops.AddColumnOp(table, column._copy(), if_not_exists=True))
        relaxed = column._copy()
        relaxed.nullable = True
        check = name_for("ck", table, column.name, "not_null")
        name = self.contract.constant(
            f"readd_check_{table}_{column.name}",
            guarded_constraint(check, table, f"CHECK ({q(column.name)} IS NOT NULL) NOT VALID"),
        )
        return [*self.render(ops.AddColumnOp(table, relaxed, if_not_exists=True)), f"op.execute({name})"]

    def create_index(self, op: ops.CreateIndexOp) -> None:
        index = op.index_name or name_for("ix", op.table_name, *[str(c) for c in op.columns])
        op.index_name = index
        op.if_not_exists = True
        op.kw["postgresql_concurrently"] = True
        branch = CONTRACT if op.unique else EXPAND
        leftover = self.body(CONTRACT if op.unique else EXPAND).constant(
            f"drop_invalid_{index}",
            (
                f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                f"WHERE c.relname = '{index}' AND NOT i.indisvalid) "
                f"THEN EXECUTE 'DROP INDEX {q(index)}'; END IF; END $$"
            ),
        )
        drop_invalid = f"op.execute({leftover})  {ALLOW_INVALID_DROP}"
        down = [f"op.drop_index({index!r}, table_name={op.table_name!r}, postgresql_concurrently=True, if_exists=True)"]
        self.block(
            branch,
            70 if branch == EXPAND else 15,
            [*drop_invalid.splitlines(), *self.render(op)],
            down,
            autocommit=True,
        )
        self.place("create_index", index, branch, "unique: old code may still write duplicates" if op.unique else "")

    def drop_index(self, op: ops.DropIndexOp) -> None:
        reverse = op.reverse()
        reverse.if_not_exists = True
        reverse.kw["postgresql_concurrently"] = True
        op.if_exists = True
        op.kw["postgresql_concurrently"] = True
        self.block(CONTRACT, 40, self.render(op), self.render(reverse), autocommit=True)
        self.place("drop_index", op.index_name or "?", CONTRACT)

    def create_fk(self, op: ops.CreateForeignKeyOp) -> None:
        name = op.constraint_name or name_for(op.source_table, *op.local_cols, "fkey")
        local = ", ".join(q(c) for c in op.local_cols)
        remote = ", ".join(q(c) for c in op.remote_cols)
        actions = "".join(
            f" ON {sql} {op.kw[word]}"
            for word, sql in (("ondelete", "DELETE"), ("onupdate", "UPDATE"))
            if op.kw.get(word)
        )
        ddl = f"FOREIGN KEY ({local}) REFERENCES {q(op.referent_table)} ({remote}){actions} NOT VALID"
        const = self.expand.constant(f"add_{name}", guarded_constraint(name, op.source_table, ddl))
        alter = f"ALTER TABLE {q(op.source_table)}"
        drop = f"op.execute({lit(f'{alter} DROP CONSTRAINT IF EXISTS {q(name)}')})"
        self.block(EXPAND, 60, [f"op.execute({const})  # NOT VALID: no scan; checks new rows only"], [drop])
        self.block(CONTRACT, 10, [f"op.execute({lit(f'{alter} VALIDATE CONSTRAINT {q(name)}')})"])
        self.place("create_foreign_key", name, EXPAND, "NOT VALID")
        self.place("validate_foreign_key", name, CONTRACT)

    def drop_constraint(self, op: ops.DropConstraintOp) -> None:
        """DROP CONSTRAINT IF EXISTS (a re-run finds it gone); the downgrade adds it back unless it is there."""
        if op.constraint_name and op.constraint_type in ("unique", "foreignkey") and op._reverse is not None:
            table, name = op.table_name, op.constraint_name
            added = str(sa.schema.AddConstraint(op.reverse().to_constraint()).compile(dialect=_DIALECT))
            prefix = f"ALTER TABLE {q(table)} ADD CONSTRAINT {q(name)} "
            if added.startswith(prefix):
                readd = self.contract.constant(f"readd_{name}", guarded_constraint(name, table, added[len(prefix) :]))
                drop = f"ALTER TABLE {q(table)} DROP CONSTRAINT IF EXISTS {q(name)}"
                self.block(CONTRACT, 35, [f"op.execute({lit(drop)})"], [f"op.execute({readd})"])
                self.place("drop_constraint", name, CONTRACT)
                return
        if op.constraint_type == "unique" or op.constraint_type == "foreignkey" or op.constraint_type is None:
            reverse = op.reverse() if op._reverse is not None else None
            self.block(CONTRACT, 35, self.render(op), self.render(reverse) if reverse is not None else [])
            self.place("drop_constraint", op.constraint_name or "?", CONTRACT)
        else:
            self.todo(CONTRACT, "drop_constraint", op.constraint_name or "?", f"drop constraint {op.constraint_name}")

    def add_constraint(self, op: ops.AddConstraintOp) -> None:
        name = getattr(op, "constraint_name", None) or "?"
        self.todo(
            CONTRACT,
            "add_constraint",
            name,
            f"new {type(op).__name__} {name} on {getattr(op, 'table_name', '?')}: build a unique index "
            f"CONCURRENTLY, then ALTER TABLE ... ADD CONSTRAINT ... USING INDEX (old code may still violate "
            f"it until the contract)",
        )

    def alter_column(self, table: str, op: ops.AlterColumnOp) -> None:
        """One column's changes, each placed on its own: type, server default, nullability, comment."""
        column = op.column_name
        target = f"{table}.{column}"
        if op.modify_name:
            self.todo(
                EXPAND,
                "rename_column",
                target,
                f"{target} renamed to {op.modify_name}: declare it with --rename {table}.{column}:{op.modify_name}",
            )
            return
        existing_type = op.existing_type
        if op.modify_type is not None:
            self._alter_type(table, op)
            existing_type = op.modify_type
        self._alter_default(table, op)
        if op.modify_nullable is True:
            self._alter(EXPAND, table, column, existing_type, "nullable=True", "nullable=False")
            self.place("drop_not_null", target, EXPAND)
        elif op.modify_nullable is False:
            backfill = None
            if op.modify_server_default is not False and op.modify_server_default is not None:
                backfill = f"{q(column)} = DEFAULT"
            self.not_null(table, column, existing_type, backfill)
        if op.modify_comment is not False and op.modify_comment is not None:
            self._alter(
                EXPAND,
                table,
                column,
                existing_type,
                f"comment={op.modify_comment!r}",
                f"comment={op.existing_comment!r}",
            )
            self.place("comment", target, EXPAND)

    def _alter(self, branch: str, table: str, column: str, type_: Any, up: str, down: str) -> None:
        """An op.alter_column pair (phase 25) that changes one keyword and its downgrade that changes it back."""
        self.block(
            branch,
            25,
            [f"op.alter_column({table!r}, {column!r}, existing_type={self._type(type_)}, {up})"],
            [f"op.alter_column({table!r}, {column!r}, existing_type={self._type(type_)}, {down})"],
        )

    def _alter_type(self, table: str, op: ops.AlterColumnOp) -> None:
        """Widened: expand; narrowed: contract; another type: a TODO (a rewrite old code may not survive)."""
        column, existing_type = op.column_name, op.existing_type
        target = f"{table}.{column}"
        kind = type_change(existing_type, op.modify_type)
        if kind == "rewrite":
            self.todo(
                EXPAND,
                "alter_type",
                target,
                f"{target}: {existing_type} -> {op.modify_type} rewrites {table!r} and old code may write "
                f"what the new type refuses: add a new column, keep it in sync with a trigger, backfill in "
                f"batches, switch the code, drop the old column in a contract (--rename shows the pattern)",
            )
            return
        branch = EXPAND if kind == "widen" else CONTRACT
        allow = "  # divbase-lint: allow widening: no rewrite, old values all fit" if kind == "widen" else ""
        up = (
            f"op.alter_column({table!r}, {column!r}, existing_type={self._type(existing_type)}, "
            f"type_={self._type(op.modify_type)}){allow}"
        )
        down = (
            f"op.alter_column({table!r}, {column!r}, existing_type={self._type(op.modify_type)}, "
            f"type_={self._type(existing_type)})"
        )
        self.block(branch, 25 if branch == EXPAND else 55, [up], [down])
        self.place("alter_type", target, branch, kind)

    def _alter_default(self, table: str, op: ops.AlterColumnOp) -> None:
        """A default set or changed: expand, committed alone; a default dropped: contract."""
        if op.modify_server_default is False:
            return
        column, new_default = op.column_name, op.modify_server_default
        target = f"{table}.{column}"
        alter = f"ALTER TABLE {q(table)} ALTER COLUMN {q(column)}"
        if new_default is not None:
            up = f"{alter} SET DEFAULT {default_sql(new_default)}"
            old = default_sql(op.existing_server_default)
            down = f"{alter} " + (f"SET DEFAULT {old}" if old else "DROP DEFAULT")
            # committed alone (release 3): SET DEFAULT's ACCESS EXCLUSIVE lock must not last through a backfill
            self.block(EXPAND, 35, [f"op.execute({lit(up)})"], [f"op.execute({lit(down)})"], autocommit=True)
            self.place("set_default", target, EXPAND)
        elif op.existing_server_default is not None:
            old = default_sql(op.existing_server_default)
            self.block(
                CONTRACT,
                45,
                [f"op.execute({lit(f'{alter} DROP DEFAULT')})"],
                [f"op.execute({lit(f'{alter} SET DEFAULT {old}')})"],
            )
            self.place("drop_default", target, CONTRACT)

    def not_null(self, table: str, column: str, type_: Any, backfill: str | None) -> None:
        """Expand: (backfill NULL rows in batches,) CHECK NOT VALID; contract: VALIDATE, SET NOT NULL, drop check."""
        target = f"{table}.{column}"
        check = name_for("ck", table, column, "not_null")
        up: list[str] = []
        if backfill is not None:
            name = self.expand.constant(
                f"backfill_{table}_{column}", batched_update(table, backfill, f"{q(column)} IS NULL", self.pk_of(table))
            )
            up.append(f"op.execute({name})  # batches, each committed")
        add = self.expand.constant(
            f"add_{check}", guarded_constraint(check, table, f"CHECK ({q(column)} IS NOT NULL) NOT VALID")
        )
        up.append(f"op.execute({add})  # NOT VALID: no scan; new rows only")
        drop = f"ALTER TABLE {q(table)} DROP CONSTRAINT IF EXISTS {q(check)}"
        self.block(EXPAND, 50, up, [f"op.execute({lit(drop)})"], autocommit=True)
        self.place("not_null_check", target, EXPAND, "CHECK NOT VALID" + (", backfilled" if backfill else ""))
        t = self._type(type_)
        readd = self.contract.constant(
            f"readd_{check}", guarded_constraint(check, table, f"CHECK ({q(column)} IS NOT NULL) NOT VALID")
        )
        validate = self.contract.constant(
            f"validate_{check}",
            (
                f"DO $$ BEGIN\n    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = '{check}') THEN\n"
                f"        ALTER TABLE {q(table)} VALIDATE CONSTRAINT {q(check)};\n    END IF;\nEND $$"
            ),
        )
        self.block(
            CONTRACT,
            20,
            [
                f"op.execute({validate})  # writes go on; a re-run finds the check gone",
                f"op.alter_column({table!r}, {column!r}, existing_type={t}, nullable=False)  # uses the valid check: "
                f"no scan",
                f"op.execute({lit(drop)})",
            ],
            [f"op.alter_column({table!r}, {column!r}, existing_type={t}, nullable=True)", f"op.execute({readd})"],
        )
        self.place("set_not_null", target, CONTRACT, "VALIDATE, SET NOT NULL")

    def rename(self, rename: Rename, add: ops.AddColumnOp, drop: ops.DropColumnOp) -> None:
        table, old, new = rename.table, rename.old, rename.new
        target = f"{table}.{old}->{new}"
        old_col, new_col = drop.to_column(), add.column
        old_type, new_type = ddl_type(old_col.type), ddl_type(new_col.type)
        if old_type != new_type:
            self.todo(
                EXPAND,
                "rename_column",
                target,
                f"{target}: the type changes too ({old_type} -> {new_type}): "
                f"the sync trigger copies values as they are; write it by hand",
            )
            return
        relaxed = new_col._copy()
        relaxed.nullable = True
        function = name_for("divbase", table, old, "sync")
        fn_sql = self.expand.constant(f"sync_{table}_{old}", sync_function(function, old, new))
        trigger = (
            f"CREATE OR REPLACE TRIGGER {q(function)} BEFORE INSERT OR UPDATE ON {q(table)} "
            f"FOR EACH ROW EXECUTE FUNCTION {q(function)}()"
        )
        drop_trigger = f"DROP TRIGGER IF EXISTS {q(function)} ON {q(table)}"
        drop_function = f"DROP FUNCTION IF EXISTS {q(function)}()"
        # column, function and trigger commit together (metadata only), then the backfill batch by batch
        self.block(
            EXPAND,
            40,
            [
                *self.render(ops.AddColumnOp(table, relaxed, if_not_exists=True)),
                f"op.execute({fn_sql})",
                f"op.execute({lit(trigger)})",
            ],
            [
                f"op.execute({lit(drop_trigger)})",
                f"op.execute({lit(drop_function)})",
                f"op.drop_column({table!r}, {new!r}, if_exists=True)",
            ],
        )
        backfill = self.expand.constant(
            f"backfill_{table}_{new}",
            batched_update(
                table, f"{q(new)} = {q(old)}", f"{q(new)} IS NULL AND {q(old)} IS NOT NULL", self.pk_of(table)
            ),
        )
        self.block(EXPAND, 45, [f"op.execute({backfill})  # batches, each committed"], autocommit=True)
        self.place("rename_column", target, EXPAND, "new column, sync trigger, batched backfill")
        if not new_col.nullable and new_col.server_default is None:
            self.not_null(table, new, new_col.type, None)
        # contract: the trigger and the old column go (after the NOT NULL steps, phase 20)
        fn_copy = self.contract.constant(f"sync_{table}_{old}", sync_function(function, old, new))
        self.block(
            CONTRACT,
            50,
            [
                f"op.execute({lit(drop_trigger)})",
                f"op.execute({lit(drop_function)})",
                f"op.drop_column({table!r}, {old!r}, if_exists=True)",
            ],
            [*self._readd_renamed(table, old_col, new), f"op.execute({fn_copy})", f"op.execute({lit(trigger)})"],
        )
        self.place("drop_column", f"{table}.{old}", CONTRACT, "renamed away")

    def _readd_renamed(self, table: str, column: sa.Column[Any], new: str) -> list[str]:
        relaxed = column._copy()
        relaxed.nullable = True
        lines = self.render(ops.AddColumnOp(table, relaxed, if_not_exists=True))
        lines.append(f"op.execute({lit(f'UPDATE {q(table)} SET {q(column.name)} = {q(new)}')})")
        if not column.nullable:
            lines.append(
                f"op.alter_column({table!r}, {column.name!r}, existing_type={self._type(column.type)}, nullable=False)"
            )
        return lines

    def enum(self, change: EnumChange) -> None:
        """New labels: expand (each placed where the models have it); dropped labels: a TODO (rows need a map)."""
        added = [label for label in change.after if label not in change.before]
        removed = [label for label in change.before if label not in change.after]
        if added:
            self._add_labels(change, added)
        if removed:
            self.todo(
                CONTRACT,
                "drop_enum_value",
                f"{change.name}: {', '.join(removed)}",
                f"enum {change.name} loses {', '.join(removed)}: rows holding them need a mapping; then swap "
                f"the type (see the example release 4's contract, c0004_announcement_caution)",
            )

    def _add_labels(self, change: EnumChange, added: list[str]) -> None:
        """ADD VALUE ... AFTER/BEFORE a label already there, outside a transaction; the downgrade swaps the type
        back to the old labels (PostgreSQL cannot drop one)."""
        present = list(change.before)
        lines = []
        for label in added:
            after, before = _neighbours(change.after, label, present)
            where = f" AFTER '{after}'" if after else (f" BEFORE '{before}'" if before else "")
            sql = f"ALTER TYPE {q(change.name)} ADD VALUE IF NOT EXISTS '{label}'{where}"
            lines.append(f"op.execute({lit(sql)})")
            present.insert(present.index(after) + 1 if after else (present.index(before) if before else 0), label)
            self.place("add_enum_value", f"{change.name}.{label}", EXPAND)
        swap = self.expand.constant(
            f"restore_{change.name}",
            enum_swap(change.name, [x for x in present if x not in added], change.columns, added),
        )
        self.block(EXPAND, 10, lines, [f"op.execute({swap})  # refuses while a row holds a new label"], autocommit=True)

    def _type(self, type_: Any) -> str:
        from alembic.autogenerate.render import _repr_type

        return _repr_type(type_, self.render.context)

    # -- all ---------------------------------------------------------------------------------------------------------
    def run(self, upgrade_ops: ops.UpgradeOps, renames: Sequence[Rename], enum_changes: Sequence[EnumChange]) -> Split:
        """Place every operation, in an order that keeps the output stable: enum labels, whole tables, declared
        renames, then each existing table's columns and other changes; the phases order the revision's steps."""
        top, tables = _flatten(upgrade_ops)
        created = {op.table_name for op in top if isinstance(op, ops.CreateTableOp)}
        dropped = {op.table_name for op in top if isinstance(op, ops.DropTableOp)}
        for change in enum_changes:  # a new table's columns are gone when the label's downgrade runs
            self.enum(
                EnumChange(
                    change.name, change.before, change.after, tuple(c for c in change.columns if c[0] not in created)
                )
            )
        for op in top:
            self._top_level(op, tables)
        if created and dropped:
            self.todo(
                EXPAND,
                "rename_table",
                f"{sorted(dropped)} -> {sorted(created)}",
                f"tables {sorted(dropped)} dropped and {sorted(created)} created: if this is a rename, write "
                f"it by hand (a view or a sync trigger), the generator cannot prove one",
            )
        for rename in renames:
            self._declared_rename(rename, tables)
        for table, entry in tables.items():
            self._possible_renames(table, entry)
            self._table_ops(table, entry)
        return self._assemble()

    def _top_level(self, op: ops.MigrateOperation, tables: dict[str, _Table]) -> None:
        """An operation outside any table's ModifyTableOps: a whole table (with its indexes) or an index."""
        if isinstance(op, ops.CreateTableOp):
            entry = tables.pop(op.table_name, _Table())
            indexes = [o for o in entry.other if isinstance(o, ops.CreateIndexOp)]
            self.create_table(op, indexes)
            for other in entry.other:
                if not isinstance(other, ops.CreateIndexOp):
                    self.todo(EXPAND, type(other).__name__, op.table_name, f"unexpected {other!r} on new table")
        elif isinstance(op, ops.DropTableOp):
            entry = tables.pop(op.table_name, _Table())
            self.drop_table(op, [o for o in entry.other if isinstance(o, ops.DropIndexOp)])
        elif isinstance(op, ops.CreateIndexOp):
            self.create_index(op)
        elif isinstance(op, ops.DropIndexOp):
            self.drop_index(op)
        else:
            self.todo(EXPAND, type(op).__name__, "?", f"autogenerate reported {type(op).__name__}: not placed")

    def _declared_rename(self, rename: Rename, tables: dict[str, _Table]) -> None:
        """Take the drop and the add a `--rename` pairs out of its table's ops; refuse one autogenerate did not see."""
        entry = tables.get(rename.table)
        add = entry.adds.pop(rename.new, None) if entry else None
        drop = entry.drops.pop(rename.old, None) if entry else None
        if add is None or drop is None:
            raise SplitError(
                f"--rename {rename.table}.{rename.old}:{rename.new}: autogenerate does not report "
                f"{rename.old!r} dropped and {rename.new!r} added on {rename.table!r}"
            )
        self.rename(rename, add, drop)

    def _possible_renames(self, table: str, entry: _Table) -> None:
        """A TODO for each dropped column with an added twin of the same type: it may be an undeclared rename."""
        if not (entry.adds and entry.drops):
            return
        for dropped_col, dop in entry.drops.items():
            twins = [n for n, a in entry.adds.items() if ddl_type(a.column.type) == ddl_type(dop.to_column().type)]
            if twins:
                self.todo(
                    EXPAND,
                    "rename_column",
                    f"{table}.{dropped_col}",
                    f"{table}.{dropped_col} is dropped and {', '.join(twins)} added with the same type: "
                    f"if that is a rename, run again with "
                    + " or ".join(f"--rename {table}.{dropped_col}:{t}" for t in twins)
                    + "; if not, delete this line (the drop stays in the contract)",
                )

    def _table_ops(self, table: str, entry: _Table) -> None:
        """An existing table's changes: added columns, dropped columns, then the rest in autogenerate's order."""
        for add in entry.adds.values():
            self.add_column(table, add)
        for drop in entry.drops.values():
            self.drop_column(table, drop)
        for op in entry.other:
            self._table_op(table, op)

    def _table_op(self, table: str, op: ops.MigrateOperation) -> None:
        # CreateForeignKeyOp is an AddConstraintOp: it is tested first
        if isinstance(op, ops.AlterColumnOp):
            self.alter_column(table, op)
        elif isinstance(op, ops.CreateIndexOp):
            self.create_index(op)
        elif isinstance(op, ops.DropIndexOp):
            self.drop_index(op)
        elif isinstance(op, ops.CreateForeignKeyOp):
            self.create_fk(op)
        elif isinstance(op, ops.DropConstraintOp):
            self.drop_constraint(op)
        elif isinstance(op, ops.AddConstraintOp):
            self.add_constraint(op)
        else:
            self.todo(
                EXPAND, type(op).__name__, table, f"autogenerate reported {type(op).__name__} on {table}: not placed"
            )

    def _assemble(self) -> Split:
        """Each branch's body: its TODOs first, then its blocks by phase; the imports the rendered code needs."""
        for branch in (EXPAND, CONTRACT):
            body = self.body(branch)
            for text in self.todo_text[branch]:
                body.todo(text)
            for key in sorted(k for k in self.phases if k[0] == branch):
                body.blocks.extend(self.phases[key])
            body.imports |= self.render.imports
        return Split(self.expand, self.contract, self.placements)


def split(
    upgrade_ops: ops.UpgradeOps,
    renames: Sequence[Rename] = (),
    enum_changes: Sequence[EnumChange] = (),
    existing_enums: Iterable[str] = (),
    metadata: sa.MetaData | None = None,
) -> Split:
    """Place autogenerate's operations (see the module's table). `existing_enums`: enum types the database has
    (a new column's type not among them is created first); `metadata`: the target models (batched backfills go by
    a table's integer primary key when it has one)."""
    return _Splitter(metadata, existing_enums).run(upgrade_ops, renames, enum_changes)


def enum_changes(reflected: dict[str, Sequence[str]], metadata: sa.MetaData) -> list[EnumChange]:
    """Enum types present in both the database (`reflected`: name -> labels in order) and the models whose labels
    differ; with the columns of existing tables that use them."""
    wanted: dict[str, tuple[str, ...]] = {}
    users: dict[str, list[tuple[str, str]]] = {}
    for table in metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, sa.Enum) and column.type.name:
                wanted.setdefault(column.type.name, tuple(column.type.enums))
                users.setdefault(column.type.name, []).append((table.name, column.name))
    return [
        EnumChange(name, tuple(reflected[name]), labels, tuple(users[name]))
        for name, labels in sorted(wanted.items())
        if name in reflected and tuple(reflected[name]) != labels
    ]

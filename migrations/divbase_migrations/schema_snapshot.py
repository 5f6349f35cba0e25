"""A normalized, comparable description of a live schema, read from PostgreSQL's catalog.

One function reads it (`take`), one compares two (`diff`). Used three ways: the committed snapshot of a database
built by DivBase's own revisions (scripts/divbase-schema-snapshot.py), the tests that prove our models and our
baseline revision build exactly that, and the runner's drift check before the first expand of an adopted database.

The catalog's own renderings (`format_type`, `pg_get_constraintdef`, `pg_get_indexdef`) are the normal form: they
are what PostgreSQL would dump, so two schemas that print alike are alike. Column order is not compared (a column
added by a later revision sits at the end of a real table), nor are NOT NULL constraints that PostgreSQL 18 lists
in pg_constraint (nullability is compared per column)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

FORMAT = 1
# Sequences Celery's result backend creates beside its tables.
FOREIGN_SEQUENCES = frozenset({"task_id_sequence", "taskset_id_sequence"})

_ENUMS = """
SELECT t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
  FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = :schema GROUP BY t.typname"""
_TABLES = """
SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')"""
_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
       a.attidentity::text, a.attgenerated::text
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = :oid AND a.attnum > 0 AND NOT a.attisdropped"""
_CONSTRAINTS = """
SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint
 WHERE conrelid = :oid AND contype <> 'n'"""
_INDEXES = """
SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = :oid"""
_TRIGGERS = """
SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = :oid AND NOT tgisinternal"""
_SEQUENCES = """
SELECT c.relname, format_type(s.seqtypid, NULL), dep.refobjid::regclass::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid
  LEFT JOIN pg_depend dep ON dep.objid = c.oid AND dep.classid = 'pg_class'::regclass AND dep.deptype IN ('a', 'i')
 WHERE n.nspname = :schema AND c.relkind = 'S'"""
_FUNCTIONS = """
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', md5(p.prosrc)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = :schema AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"""


def take(connection: Connection, exclude_tables: Iterable[str] = (), schema: str = "public") -> dict[str, Any]:
    """The schema as plain data: enums, tables (columns, constraints, indexes, triggers), sequences, functions."""
    excluded = set(exclude_tables)

    def rows(sql: str, **params: Any) -> list[Any]:
        return list(connection.execute(text(sql), {"schema": schema, **params}))

    tables = {name: _table(rows, oid) for oid, name in rows(_TABLES) if name not in excluded}
    sequences = {
        name: {"type": type_, **({"owned_by": owner} if owner else {})}
        for name, type_, owner in rows(_SEQUENCES)
        if name not in FOREIGN_SEQUENCES and (owner or "").strip('"') not in excluded
    }
    return {
        "format": FORMAT,
        "enums": {name: list(labels) for name, labels in rows(_ENUMS)},
        "tables": tables,
        "sequences": sequences,
        "functions": {name: digest for name, digest in rows(_FUNCTIONS)},
    }


def _table(rows: Callable[..., list[Any]], oid: int) -> dict[str, Any]:
    """One table's columns, constraints, indexes and triggers. The rare keys (identity, generated, an invalid
    constraint or index) are written only when present: the snapshots on disk are compared key by key."""
    return {
        "columns": {
            col: _column(type_, notnull, default, identity, generated)
            for col, type_, notnull, default, identity, generated in rows(_COLUMNS, oid=oid)
        },
        "constraints": {con: _definition(definition, valid) for con, definition, valid in rows(_CONSTRAINTS, oid=oid)},
        "indexes": {idx: _definition(definition, valid) for idx, definition, valid in rows(_INDEXES, oid=oid)},
        "triggers": {trg: definition for trg, definition in rows(_TRIGGERS, oid=oid)},
    }


def _column(type_: str, notnull: bool, default: str | None, identity: str, generated: str) -> dict[str, Any]:
    return {
        "type": type_,
        "nullable": not notnull,
        "default": default,
        **({"identity": identity} if identity else {}),
        **({"generated": generated} if generated else {}),
    }


def _definition(definition: str, valid: bool) -> dict[str, Any]:
    return {"definition": definition, **({} if valid else {"valid": False})}


def diff(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Every difference, one line each, named by object ('table "user": column "email": type ...')."""
    out: list[str] = []
    _diff_maps(
        out,
        "enum",
        expected.get("enums", {}),
        actual.get("enums", {}),
        lambda where, e, a: out.append(f"{where}: labels {a}, expected {e}") if e != a else None,
    )
    _diff_maps(
        out,
        "table",
        expected.get("tables", {}),
        actual.get("tables", {}),
        lambda where, e, a: _diff_table(out, where, e, a),
    )
    _diff_maps(out, "sequence", expected.get("sequences", {}), actual.get("sequences", {}), _leaf(out))
    _diff_maps(out, "function", expected.get("functions", {}), actual.get("functions", {}), _leaf(out, "body"))
    return out


def _leaf(out: list[str], what: str = "definition") -> Any:
    def compare(where: str, expected: Any, actual: Any) -> None:
        if expected != actual:
            out.append(f"{where}: {what} {_show(actual)}, expected {_show(expected)}")

    return compare


def _diff_table(out: list[str], where: str, expected: dict[str, Any], actual: dict[str, Any]) -> None:
    def column(col_where: str, e: dict[str, Any], a: dict[str, Any]) -> None:
        for key in sorted(set(e) | set(a)):
            if e.get(key) != a.get(key):
                out.append(f"{col_where}: {key} {_show(a.get(key))}, expected {_show(e.get(key))}")

    _diff_maps(out, f"{where}: column", expected["columns"], actual["columns"], column)
    for part in ("constraint", "index", "trigger"):
        key = {"index": "indexes"}.get(part, part + "s")
        _diff_maps(out, f"{where}: {part}", expected.get(key, {}), actual.get(key, {}), _leaf(out))


def _diff_maps(out: list[str], kind: str, expected: dict[str, Any], actual: dict[str, Any], compare: Any) -> None:
    for name in sorted(set(expected) | set(actual)):
        where = f'{kind} "{name}"'
        if name not in actual:
            out.append(f"{where}: missing")
        elif name not in expected:
            out.append(f"{where}: unexpected ({_show(actual[name])})")
        else:
            compare(where, expected[name], actual[name])


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else repr(value)


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: schema snapshot format {data.get('format')!r}, this code reads {FORMAT}")
    return data


def dump(snapshot: dict[str, Any], path: Path, source: dict[str, Any] | None = None) -> None:
    data = {**({"source": source} if source else {}), **snapshot}
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")

"""`divbase_migrations.splitter`: where each autogenerate operation goes (no database), one test per rule, and the
pieces of `divbase-migrate revision` that need none (ids, slugs, the manifest edit, the rendered file, lint)."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.operations import ops
from divbase_migrations.generate import next_ids, render_revision, slugify, update_manifest
from divbase_migrations.lint import lint_file
from divbase_migrations.releases import Chains
from divbase_migrations.splitter import (
    CONTRACT,
    EXPAND,
    TODO_MARKER,
    EnumChange,
    Rename,
    Split,
    SplitError,
    enum_changes,
    is_cheap_default,
    split,
    type_change,
)


def metadata() -> sa.MetaData:
    md = sa.MetaData()
    sa.Table(
        "user",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100)),
        sa.Column("email", sa.String(200), nullable=False),
        sa.Column("bio", sa.String(100)),
    )
    sa.Table(
        "note",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer),
        sa.Column("level", sa.Enum("INFO", "WARN", name="notelevel")),
    )
    return md


MD = metadata()


def modify(table: str, *inner: ops.MigrateOperation) -> ops.ModifyTableOps:
    return ops.ModifyTableOps(table, list(inner))


def add(table: str, column: sa.Column) -> ops.AddColumnOp:
    return ops.AddColumnOp(table, column)


def drop(table: str, column: sa.Column) -> ops.DropColumnOp:
    sa.Table(table, sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), column)
    return ops.DropColumnOp.from_column_and_tablename(None, table, column)


def run(*top: ops.MigrateOperation, **kw: object) -> Split:
    return split(ops.UpgradeOps(ops=list(top)), metadata=MD, existing_enums={"notelevel"}, **kw)


def where(result: Split) -> set[tuple[str, str, str]]:
    return {(p.kind, p.target, p.branch) for p in result.placements}


def compiles(result: Split) -> None:
    """Both bodies, up and down, are valid Python."""
    for body in (result.expand, result.contract):
        constants = "".join(f"{name} = {sql!r}\n" for name, sql in body.constants.items())
        ast.parse(f"{constants}def upgrade():\n{body.upgrade_code()}\ndef downgrade():\n{body.downgrade_code()}\n")


def test_new_table_goes_to_expand_with_its_indexes_and_new_enum_types() -> None:
    md = sa.MetaData()
    table = sa.Table(
        "widget",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.Enum("A", "B", name="widgetkind")),
    )
    index = sa.Index("ix_widget_kind", table.c.kind)
    result = run(ops.CreateTableOp.from_table(table), modify("widget", ops.CreateIndexOp.from_index(index)))
    assert where(result) == {("create_table", "widget", EXPAND)}
    up, down = result.expand.upgrade_code(), result.expand.downgrade_code()
    assert "op.create_table('widget'" in up and "if_not_exists=True" in up and "create_index('ix_widget_kind'" in up
    assert "drop_table('widget'" in down and "DROP TYPE IF EXISTS widgetkind" in down
    assert result.contract.empty
    compiles(result)


def test_nullable_column_and_constant_default_go_to_expand() -> None:
    result = run(
        modify(
            "user",
            add("user", sa.Column("nick", sa.String(50))),
            add("user", sa.Column("karma", sa.Integer, nullable=False, server_default="0")),
            add("user", sa.Column("seen", sa.DateTime, nullable=False, server_default=sa.func.now())),
        )
    )
    assert where(result) == {("add_column", f"user.{c}", EXPAND) for c in ("nick", "karma", "seen")}
    assert "drop_column('user', 'nick'" in result.expand.downgrade_code()
    assert result.contract.empty
    compiles(result)


def test_volatile_default_is_a_todo() -> None:
    result = run(
        modify(
            "user",
            add("user", sa.Column("token", sa.String(36), nullable=False, server_default=sa.text("gen_random_uuid()"))),
        )
    )
    assert where(result) == {("add_column", "user.token", "todo")}
    assert TODO_MARKER in result.expand.upgrade_code()


def test_not_null_column_without_default_is_added_nullable_and_tightened_by_hand() -> None:
    result = run(modify("user", add("user", sa.Column("org", sa.String(50), nullable=False))))
    assert ("add_column", "user.org", EXPAND) in where(result)
    assert ("set_not_null", "user.org", "todo") in where(result)
    assert "nullable=True" in result.expand.upgrade_code()
    assert TODO_MARKER in result.contract.upgrade_code()


def test_new_index_is_concurrent_in_an_autocommit_block() -> None:
    index = sa.Index("ix_user_bio", MD.tables["user"].c.bio)
    result = run(modify("user", ops.CreateIndexOp.from_index(index)))
    assert where(result) == {("create_index", "ix_user_bio", EXPAND)}
    up = result.expand.upgrade_code()
    assert up.lstrip().startswith("with op.get_context().autocommit_block():")
    assert "postgresql_concurrently=True" in up and "if_not_exists=True" in up and "divbase-lint: allow" in up
    assert "postgresql_concurrently=True" in result.expand.downgrade_code()
    compiles(result)


def test_new_unique_index_waits_for_the_contract() -> None:
    index = sa.Index("uq_user_email", MD.tables["user"].c.email, unique=True)
    result = run(modify("user", ops.CreateIndexOp.from_index(index)))
    assert where(result) == {("create_index", "uq_user_email", CONTRACT)}
    assert result.expand.empty


def test_enum_label_is_added_outside_a_transaction_and_its_downgrade_swaps_the_type() -> None:
    change = EnumChange("notelevel", ("INFO", "WARN"), ("INFO", "NOTICE", "WARN"), (("note", "level"),))
    result = run(enum_changes=[change])
    assert where(result) == {("add_enum_value", "notelevel.NOTICE", EXPAND)}
    up = result.expand.upgrade_code()
    assert "autocommit_block" in up and "ADD VALUE IF NOT EXISTS 'NOTICE' AFTER 'INFO'" in up
    swap = next(iter(result.expand.constants.values()))
    assert "CREATE TYPE notelevel AS ENUM ('INFO', 'WARN')" in swap and "still holds NOTICE" in swap
    compiles(result)


def test_dropped_enum_label_is_a_todo() -> None:
    result = run(enum_changes=[EnumChange("notelevel", ("INFO", "WARN"), ("INFO",), (("note", "level"),))])
    assert where(result) == {("drop_enum_value", "notelevel: WARN", "todo")}
    assert TODO_MARKER in result.contract.upgrade_code()


def test_enum_changes_are_read_from_the_models() -> None:
    md = metadata()
    md.tables["note"].c.level.type = sa.Enum("INFO", "NOTICE", "WARN", name="notelevel")
    assert enum_changes({"notelevel": ["INFO", "WARN"], "other": ["X"]}, md) == [
        EnumChange("notelevel", ("INFO", "WARN"), ("INFO", "NOTICE", "WARN"), (("note", "level"),))
    ]


def test_new_foreign_key_is_not_valid_in_expand_and_validated_in_contract() -> None:
    fk = ops.CreateForeignKeyOp(None, "note", "user", ["user_id"], ["id"], ondelete="CASCADE")
    result = run(modify("note", fk))
    assert where(result) == {
        ("create_foreign_key", "note_user_id_fkey", EXPAND),
        ("validate_foreign_key", "note_user_id_fkey", CONTRACT),
    }
    sql = next(iter(result.expand.constants.values()))
    assert 'FOREIGN KEY (user_id) REFERENCES "user" (id) ON DELETE CASCADE NOT VALID' in sql
    assert "VALIDATE CONSTRAINT note_user_id_fkey" in result.contract.upgrade_code()
    compiles(result)


def test_not_null_is_a_not_valid_check_then_validate_and_set_not_null() -> None:
    alter = ops.AlterColumnOp(
        "user", "bio", existing_type=sa.String(100), existing_nullable=True, modify_nullable=False
    )
    result = run(modify("user", alter))
    assert where(result) == {("not_null_check", "user.bio", EXPAND), ("set_not_null", "user.bio", CONTRACT)}
    assert "CHECK (bio IS NOT NULL) NOT VALID" in "".join(result.expand.constants.values())
    contract = result.contract.upgrade_code()
    assert contract.index("VALIDATE_CK_USER_BIO") < contract.index("nullable=False") < contract.index("DROP CONSTRAINT")
    assert "IF EXISTS" in result.contract.constants["VALIDATE_CK_USER_BIO_NOT_NULL"]
    assert "nullable=True" in result.contract.downgrade_code()
    compiles(result)


def test_not_null_with_a_new_default_sets_it_alone_then_backfills_in_batches() -> None:
    alter = ops.AlterColumnOp(
        "user",
        "bio",
        existing_type=sa.String(100),
        existing_nullable=True,
        modify_nullable=False,
        modify_server_default=sa.text("'none'"),
    )
    result = run(modify("user", alter))
    assert ("set_default", "user.bio", EXPAND) in where(result)
    up = result.expand.upgrade_code()
    assert up.index("SET DEFAULT 'none'") < up.index("BACKFILL_USER_BIO") < up.index("ADD_CK_USER_BIO_NOT_NULL")
    backfill = result.expand.constants["BACKFILL_USER_BIO"]
    assert "SET bio = DEFAULT" in backfill and "COMMIT" in backfill and "id >= lo" in backfill
    compiles(result)


def test_dropped_column_table_and_index_go_to_contract_with_downgrades() -> None:
    user = MD.tables["user"]
    index = sa.Index("ix_user_name", user.c.name)
    gone = sa.Table("old", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    result = run(
        modify("user", drop("user", sa.Column("bio", sa.String(100))), ops.DropIndexOp.from_index(index)),
        ops.DropTableOp.from_table(gone),
    )
    assert where(result) == {
        ("drop_column", "user.bio", CONTRACT),
        ("drop_index", "ix_user_name", CONTRACT),
        ("drop_table", "old", CONTRACT),
    }
    assert result.expand.empty
    down = result.contract.downgrade_code()
    assert "add_column('user'" in down and "create_index('ix_user_name'" in down and "create_table('old'" in down
    compiles(result)


def test_dropped_foreign_key_and_unique_constraint_go_to_contract_re_runnable() -> None:
    """DROP CONSTRAINT IF EXISTS (a retried contract finds it gone); the downgrade adds each back unless present."""
    md = sa.MetaData()
    sa.Table("user", md, sa.Column("id", sa.Integer, primary_key=True))
    note = sa.Table(
        "note",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("user.id", ondelete="CASCADE", name="note_user_id_fkey")),
        sa.Column("slug", sa.String(20)),
        sa.UniqueConstraint("slug", name="uq_note_slug"),
    )
    fk = next(iter(note.foreign_key_constraints))
    unique = next(c for c in note.constraints if isinstance(c, sa.UniqueConstraint))
    result = run(modify("note", ops.DropConstraintOp.from_constraint(fk), ops.DropConstraintOp.from_constraint(unique)))
    assert where(result) == {
        ("drop_constraint", "note_user_id_fkey", CONTRACT),
        ("drop_constraint", "uq_note_slug", CONTRACT),
    }
    assert result.expand.empty
    up, down = result.contract.upgrade_code(), result.contract.downgrade_code()
    assert "DROP CONSTRAINT IF EXISTS note_user_id_fkey" in up and "DROP CONSTRAINT IF EXISTS uq_note_slug" in up
    readd = result.contract.constants
    assert 'FOREIGN KEY(user_id) REFERENCES "user" (id) ON DELETE CASCADE;' in readd["READD_NOTE_USER_ID_FKEY"]
    assert "IF NOT EXISTS" in readd["READD_UQ_NOTE_SLUG"] and "UNIQUE (slug)" in readd["READD_UQ_NOTE_SLUG"]
    assert "op.execute(READD_NOTE_USER_ID_FKEY)" in down
    compiles(result)


def test_dropped_not_null_column_comes_back_nullable_with_a_not_valid_check() -> None:
    result = run(modify("user", drop("user", sa.Column("email", sa.String(200), nullable=False))))
    down = result.contract.downgrade_code() + "".join(result.contract.constants.values())
    assert "nullable=True" in down and "CHECK (email IS NOT NULL) NOT VALID" in down


def test_type_widening_is_expand_narrowing_contract_rewrite_todo() -> None:
    def alter(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> Split:
        return run(modify("user", ops.AlterColumnOp("user", "bio", existing_type=old, modify_type=new)))

    assert where(alter(sa.String(100), sa.String(200))) == {("alter_type", "user.bio", EXPAND)}
    assert "divbase-lint: allow" in alter(sa.String(100), sa.Text()).expand.upgrade_code()
    assert where(alter(sa.String(100), sa.String(10))) == {("alter_type", "user.bio", CONTRACT)}
    assert where(alter(sa.String(100), sa.Integer())) == {("alter_type", "user.bio", "todo")}
    assert type_change(sa.Numeric(10, 2), sa.Numeric(12, 2)) == "widen"
    assert type_change(sa.Integer(), sa.BigInteger()) == "rewrite"


def test_relaxing_not_null_and_dropping_a_default() -> None:
    relax = ops.AlterColumnOp("user", "email", existing_type=sa.String(200), modify_nullable=True)
    undefault = ops.AlterColumnOp(
        "user", "bio", existing_type=sa.String(100), existing_server_default=sa.text("'x'"), modify_server_default=None
    )
    result = run(modify("user", relax, undefault))
    assert where(result) == {("drop_not_null", "user.email", EXPAND), ("drop_default", "user.bio", CONTRACT)}
    compiles(result)


def test_declared_rename_is_trigger_and_backfill_then_drop() -> None:
    result = run(
        modify(
            "user",
            add("user", sa.Column("display_name", sa.String(100), nullable=False)),
            drop("user", sa.Column("name", sa.String(100), nullable=False)),
        ),
        renames=[Rename.parse("user.name:display_name")],
    )
    assert where(result) == {
        ("rename_column", "user.name->display_name", EXPAND),
        ("not_null_check", "user.display_name", EXPAND),
        ("set_not_null", "user.display_name", CONTRACT),
        ("drop_column", "user.name", CONTRACT),
    }
    sql = "".join(result.expand.constants.values())
    assert "NEW.display_name := COALESCE(NEW.display_name, NEW.name)" in sql and "COMMIT" in sql
    assert "CREATE OR REPLACE TRIGGER divbase_user_name_sync" in result.expand.upgrade_code()
    contract = result.contract.upgrade_code()
    assert contract.index("VALIDATE_CK") < contract.index("DROP TRIGGER") < contract.index("drop_column('user', 'name'")
    assert "CREATE OR REPLACE TRIGGER" in result.contract.downgrade_code()
    compiles(result)


def test_undeclared_rename_is_a_todo_and_a_declared_one_must_exist() -> None:
    result = run(
        modify("user", add("user", sa.Column("title", sa.String(100))), drop("user", sa.Column("name", sa.String(100))))
    )
    assert ("rename_column", "user.name", "todo") in where(result)
    assert "--rename user.name:title" in result.expand.upgrade_code()
    both = run(
        modify(
            "user",
            add("user", sa.Column("title", sa.String(100))),
            add("user", sa.Column("alias", sa.String(100))),
            drop("user", sa.Column("name", sa.String(100))),
        )
    )
    assert "--rename user.name:title or --rename user.name:alias" in both.expand.upgrade_code()
    with pytest.raises(SplitError, match="does not report"):
        run(renames=[Rename("user", "a", "b")])
    with pytest.raises(SplitError):
        Rename.parse("user.name")


def test_cheap_defaults() -> None:
    for cheap in ("0", "'x'", sa.text("'a'::character varying"), sa.text("false"), sa.func.now(), sa.text("now()")):
        assert is_cheap_default(cheap), cheap
    for costly in (sa.text("gen_random_uuid()"), sa.text("random()"), sa.text("clock_timestamp()")):
        assert not is_cheap_default(costly), costly


def test_ids_slugs_and_manifest_edit() -> None:
    chains = Chains(("b", "e0002_x", "e0005_y"), ("b", "c0004_z"), "b")
    assert next_ids(chains, "widget") == ("e0006_widget", "c0005_widget")
    assert next_ids(Chains(("b",), ("b",), "b"), "w") == ("e0002_w", "c0002_w")
    assert slugify("Add the Widget table!") == "add_the_widget_table"
    text = '[[release]]\nversion = "4"\nexpand = "e1"\ncontract = "c1"\n'
    assert 'version = "5"\nexpand = "e2"\ncontract = "c2"' in update_manifest(text, "5", "e2", "c2", "m", False)
    edited = update_manifest(text, "v4", "e2", "c2", "m", True)
    assert 'expand = "e2"' in edited and 'contract = "c2"' in edited and edited.count("[[release]]") == 1


def test_rendered_revisions_parse_and_lint_judges_them(tmp_path: Path) -> None:
    index = sa.Index("ix_user_bio", MD.tables["user"].c.bio)
    good = run(
        modify(
            "user",
            add("user", sa.Column("nick", sa.String(50))),
            ops.CreateIndexOp.from_index(index),
            drop("user", sa.Column("name", sa.String(100))),
        )
    )
    chains = Chains(("b", "e0005_y"), ("b", "c0004_z"), "b")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    expand = render_revision(good, EXPAND, "e0006_w", "e0005_y", chains, "w", "5", now, None)
    contract = render_revision(good, CONTRACT, "c0005_w", "c0004_z", chains, "w", "5", now, "e0006_w")
    for name, text in (("e.py", expand), ("c.py", contract)):
        (tmp_path / name).write_text(text)
        ast.parse(text)
    assert 'depends_on: str | Sequence[str] | None = "e0006_w"' in contract
    assert lint_file(tmp_path / "e.py", EXPAND) == [] and lint_file(tmp_path / "c.py", CONTRACT) == []
    bad = run(modify("user", ops.AlterColumnOp("user", "bio", existing_type=sa.String(100), modify_type=sa.Integer())))
    (tmp_path / "todo.py").write_text(render_revision(bad, EXPAND, "e0006_w", "e0005_y", chains, "w", "5", now, None))
    findings = lint_file(tmp_path / "todo.py", EXPAND)
    assert findings and all(f.op == TODO_MARKER for f in findings)
    (tmp_path / "todo_c.py").write_text(
        render_revision(
            run(enum_changes=[EnumChange("notelevel", ("A", "B"), ("A",))]),
            CONTRACT,
            "c0005_w",
            "c0004_z",
            chains,
            "w",
            "5",
            now,
            "e",
        )
    )
    assert [f.op for f in lint_file(tmp_path / "todo_c.py", CONTRACT)][:1] == [TODO_MARKER]


def test_revision_help_documents_every_flag() -> None:
    from divbase_migrations.cli import parser

    sub = next(a for a in parser()._actions if a.dest == "command").choices["revision"]
    flags = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    assert {f.option_strings[0] for f in flags} == {
        "--config",
        "--manifest",
        "--termination-log",
        "-m",
        "--release",
        "--rename",
        "--models",
    }
    assert all(f.help for f in flags), [f.option_strings for f in flags if not f.help]
    shown = sub.format_help()
    assert all(f.option_strings[0] in shown for f in flags)
    assert all(f"{name} " in shown for name in ("DIVBASE_MIGRATE_CONFIG", "DIVBASE_DATABASE_URL", "DIVBASE_RELEASE"))
    docs = (Path(__file__).resolve().parents[2] / "docs" / "migrations.md").read_text()
    assert all(flag in docs for flag in ("--release", "--rename", "--models", "-m ", "--config", "--manifest"))
    # the global options work after the subcommand too, the later one winning
    after = parser().parse_args(
        ["--config", "a.ini", "revision", "--config", "b.ini", "--manifest", "m.toml", "-m", "x"]
    )
    assert (after.config, after.manifest) == (Path("b.ini"), Path("m.toml"))
    before = parser().parse_args(["--config", "a.ini", "revision", "-m", "x"])
    assert (before.config, before.manifest, before.termination_log) == (Path("a.ini"), None, None)
    with pytest.raises(SystemExit):
        parser().parse_args(["revision", "-m", "x", "--rename", "no-dot"])

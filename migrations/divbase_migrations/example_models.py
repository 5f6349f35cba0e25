"""The schema at the head of both branches: DivBase's models (`models.py`) with this repository's example releases
2 to 4 applied on top. Autogenerate (env.py) and the model-versus-DDL tests compare with it.

The example releases demonstrate kinds of change (a rename with a sync trigger, NOT NULL via NOT VALID/VALIDATE, a
concurrent index, an enum label swap); they are not DivBase's plans. Each change below names its release, so a
reader sees the models of DivBase and the examples' edits apart."""

from __future__ import annotations

from sqlalchemy import Column, DefaultClause, Enum, Index, MetaData, String, Table, text

from .models import Base


def _user_with_display_name(metadata: MetaData) -> Table:
    """Release 2: `name` (and its index) replaced by `display_name`."""
    user = Base.metadata.tables["user"]
    columns = [column._copy() for column in user.columns if column.name != "name"]
    return Table("user", metadata, *columns, Column("display_name", String(100), nullable=False))


def head_metadata() -> MetaData:
    metadata = MetaData()
    for table in Base.metadata.sorted_tables:
        if table.name == "user":
            _user_with_display_name(metadata)
        else:
            table.to_metadata(metadata)
    # Release 3: every skipped VCF file has a reason; rows of older pods get the default.
    skip_reason = metadata.tables["skipped_vcf_files"].c.skip_reason
    skip_reason.nullable = False
    skip_reason.server_default = DefaultClause(text("'unspecified'"))
    skip_reason.server_default.column = skip_reason
    # Release 3: the history of a user's tasks, newest first, without a sort.
    task_history = metadata.tables["task_history"]
    Index("ix_task_history_user_id_created_at", task_history.c.user_id, task_history.c.created_at)
    # Release 4: announcement level WARNING replaced by CAUTION.
    metadata.tables["announcement"].c.level.type = Enum(
        "INFO", "SUCCESS", "CAUTION", "DANGER", name="announcementlevel"
    )
    return metadata

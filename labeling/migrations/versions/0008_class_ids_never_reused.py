"""celebrity_class ids are never handed out twice, on SQLite as on PostgreSQL

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 06:10:00.000000

Undoing "add class" deletes the class row. SQLite without AUTOINCREMENT then gives the next new
class the same id (max + 1), and a class id is an identity elsewhere: the audit log's keys
(`class:N`, so the new class's history would show the undone one's events) and an earlier
export's mapping (`--previous` would hand the new class the old one's index). PostgreSQL's
sequence never reuses an id; AUTOINCREMENT makes SQLite do the same.

SQLite cannot switch AUTOINCREMENT on in place: batch mode copies the table (the caller,
labeling.db.migrate, turns foreign keys off around the upgrade, as SQLite's own procedure for
rebuilding a table asks, and the copy keeps every id so the references stay right; the
upgrade checks them before it ends). The counter then starts above every id the audit log has
ever named, so ids deleted before this migration are not reused either.
"""
import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

HIGHEST_EVER = """
    SELECT MAX(n) FROM (
        SELECT MAX(id) AS n FROM celebrity_class
        UNION ALL
        SELECT MAX(CAST(SUBSTR(key, 7) AS INTEGER)) FROM audit_entity WHERE key LIKE 'class:%'
    ) AS ids
"""


def _rebuild(autoincrement: bool) -> None:
    with op.batch_alter_table('celebrity_class', recreate='always',
                              table_kwargs={'sqlite_autoincrement': autoincrement}):
        pass
    broken = op.get_bind().execute(sa.text("PRAGMA foreign_key_check")).all()
    if broken:
        raise RuntimeError(f"rebuilding celebrity_class broke {len(broken)} references: {broken[:5]}")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    _rebuild(autoincrement=True)
    highest = bind.execute(sa.text(HIGHEST_EVER)).scalar()
    bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'celebrity_class'"))
    if highest is not None:
        bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('celebrity_class', :n)"),
                     {"n": int(highest)})


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(autoincrement=False)

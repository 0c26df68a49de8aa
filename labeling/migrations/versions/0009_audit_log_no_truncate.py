"""audit_event and audit_entity cannot be truncated on PostgreSQL

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 08:00:00.000000

0007 made the audit log append-only with row triggers, but PostgreSQL's TRUNCATE removes every
row without firing a row trigger: `TRUNCATE audit_event, audit_entity` emptied the log that
"nothing can delete". Statement triggers BEFORE TRUNCATE refuse it, on each of the two tables
(truncating one also takes the other when named with CASCADE; each refuses on its own). SQLite
has no TRUNCATE (its "DELETE FROM t" without a WHERE is refused by 0007's delete triggers): nothing
to do there.
"""
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

MESSAGE = "the audit log is append-only: it cannot be truncated"
TABLES = ("audit_event", "audit_entity")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"""CREATE FUNCTION audit_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'integrity_constraint_violation';
        END $$""")
    for table in TABLES:
        op.execute(f"""CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION audit_no_truncate()""")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
    op.execute("DROP FUNCTION audit_no_truncate()")

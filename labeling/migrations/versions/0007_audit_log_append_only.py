"""audit_event and audit_entity are append-only in the database itself

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 04:10:00.000000

The audit log is the record of who decided what: the code only ever inserts into it, and sets an
event's undone_by_id once, when the event is undone. Triggers make the database refuse anything
else (a delete, an edit of an event, a second undo mark), whoever connects, so the log can be
trusted without trusting every client. SQLite: RAISE(ABORT) triggers; PostgreSQL: one plpgsql
function that compares the row without undone_by_id.
"""
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

MESSAGE = "the audit log is append-only: events are never changed or deleted, only marked undone once"
EVENT_COLUMNS = ("id", "at", "editor", "operation", "summary", "n_entities", "before", "after", "undo_of_id")
SQLITE = [
    f"""CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
    f"""CREATE TRIGGER audit_event_only_undone_by BEFORE UPDATE ON audit_event
        WHEN NOT (OLD.undone_by_id IS NULL AND {' AND '.join(f'NEW.{c} IS OLD.{c}' for c in EVENT_COLUMNS)})
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
    f"""CREATE TRIGGER audit_entity_no_delete BEFORE DELETE ON audit_entity
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
    f"""CREATE TRIGGER audit_entity_no_update BEFORE UPDATE ON audit_entity
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
]
POSTGRES = [
    f"""CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND TG_TABLE_NAME = 'audit_event' THEN  -- nested: audit_entity has no undone_by_id
                IF OLD.undone_by_id IS NULL AND (to_jsonb(NEW) - 'undone_by_id') = (to_jsonb(OLD) - 'undone_by_id') THEN
                    RETURN NEW;
                END IF;
            END IF;
            RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'integrity_constraint_violation';
        END $$""",
    """CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event
        FOR EACH ROW EXECUTE FUNCTION audit_append_only()""",
    """CREATE TRIGGER audit_entity_append_only BEFORE UPDATE OR DELETE ON audit_entity
        FOR EACH ROW EXECUTE FUNCTION audit_append_only()""",
]


def upgrade() -> None:
    for statement in POSTGRES if op.get_bind().dialect.name == "postgresql" else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_entity_append_only ON audit_entity")
        op.execute("DROP TRIGGER audit_event_append_only ON audit_event")
        op.execute("DROP FUNCTION audit_append_only()")
    else:
        for name in ("audit_event_no_delete", "audit_event_only_undone_by", "audit_entity_no_delete",
                     "audit_entity_no_update"):
            op.execute(f"DROP TRIGGER {name}")

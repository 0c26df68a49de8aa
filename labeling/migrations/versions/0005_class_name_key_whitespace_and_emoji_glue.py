"""celebrity_class.name_key: whitespace runs and emoji glue no longer make names distinct

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 17:40:00.000000

The uniqueness key now collapses runs of whitespace and drops the zero-width joiner and the emoji
variation selector (labeling.validation.class_name_key), so "Brad  Pitt" and "Brad\u200dPitt" can no
longer be a second "Brad Pitt". Keys written before are recomputed; a row whose new key another
class already holds keeps its old key (the two stay distinct until an editor merges them), because
a migration must not pick which of two editors' classes survives.
"""
from alembic import op
import sqlalchemy as sa

from labeling.validation import class_name_key


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    table = sa.table('celebrity_class', sa.column('id', sa.Integer), sa.column('name', sa.String),
                     sa.column('name_key', sa.String))
    rows = conn.execute(sa.select(table.c.id, table.c.name, table.c.name_key)).all()
    taken = {key for _, _, key in rows}
    for class_id, name, key in rows:
        new = class_name_key(name)
        if new != key and new not in taken:
            conn.execute(table.update().where(table.c.id == class_id).values(name_key=new))
            taken.discard(key)
            taken.add(new)


def downgrade() -> None:
    pass  # the old keys are a subset of the distinctions the new ones make: nothing to undo

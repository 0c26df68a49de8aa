"""track predictions: one celebrity prediction per face track (per GIF person)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00.000000

Additive only: nullable columns on `track`, so stores written by 0002 upgrade in place.

Plain ALTER TABLE ADD COLUMN, never batch mode: on SQLite a batch copy of `track` drops the
old table, and with foreign keys on that runs ON DELETE SET NULL on face_embedding.track_id,
so every face would lose its track. For the same reason `predicted_class_id` is an indexed
integer, not a foreign key (SQLite can only add one by copying the table); class rows are
never deleted (they are retired), and readers join on it.
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

COLUMNS = (
    ('predicted_class_id', sa.Integer()),
    ('predicted_confidence', sa.Float()),
    ('predicted_distance', sa.Float()),
    ('predicted_top', sa.JSON()),
    ('prediction_method', sa.String(length=16)),
    ('model_version', sa.String(length=64)),
    ('predicted_at', sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    for name, type_ in COLUMNS:
        op.add_column('track', sa.Column(name, type_, nullable=True))
    op.create_index(op.f('ix_track_predicted_class_id'), 'track', ['predicted_class_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_track_predicted_class_id'), table_name='track')
    for name, _ in reversed(COLUMNS):
        op.drop_column('track', name)  # SQLite 3.35+ drops a column in place, without copying the table

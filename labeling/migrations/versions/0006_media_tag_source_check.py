"""media_tag.source: the database refuses a source outside the known ones, as face_label.source does

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 04:00:00.000000

The code already refuses other sources (labeling.tags.apply_tags); the constraint makes the store
refuse them too, whatever writes to it. Rows written before hold only known sources, for the same
reason, so nothing needs rewriting. SQLite cannot add a constraint in place: batch mode copies the
table.
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

SOURCES = "source IN ('uploader', 'model', 'experts_voting', 'editor', 'import')"


def upgrade() -> None:
    with op.batch_alter_table('media_tag', schema=None) as batch_op:
        batch_op.create_check_constraint(batch_op.f('ck_media_tag_source'), SOURCES)


def downgrade() -> None:
    with op.batch_alter_table('media_tag', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_media_tag_source'), type_='check')

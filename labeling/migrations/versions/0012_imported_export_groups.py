"""imported_group: the group of an imported export each of its crops came from

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 12:00:00.000000

`giflens import raw-dataset` of an export ingests every face crop as a media item of its own, so the
crops of one multi-frame GIF look like unrelated stills to the store that imported them, and an export
of that store split one clip across train and validation. The export's split.csv says which crops were
one group; the import now records it here (labeling.schema.ImportedGroup) and every export joins media
sharing a key. A new table, nothing rewritten; stores written before it have no rows (their imported
crops are grouped as before: import the export again to record its groups, nothing else changes).
Downgrade drops the table: the code before this revision never reads it.
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('imported_group',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('media_id', sa.Integer(), nullable=False),
    sa.Column('group_key', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_imported_group_media_id_media'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_imported_group')),
    sa.UniqueConstraint('media_id', 'group_key', name=op.f('uq_imported_group_media_id'))
    )
    with op.batch_alter_table('imported_group', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_imported_group_media_id'), ['media_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_imported_group_group_key'), ['group_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('imported_group', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_imported_group_group_key'))
        batch_op.drop_index(batch_op.f('ix_imported_group_media_id'))
    op.drop_table('imported_group')

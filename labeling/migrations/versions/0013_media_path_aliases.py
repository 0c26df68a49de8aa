"""media_path: every path a media item's bytes were ingested from

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 12:00:00.000000

Media are one row per content (unique sha256). Before this revision a byte-identical re-upload under
another name moved the row's path to the copy: the original's name was forgotten, `giflens import tags`
said it was "not ingested", and `giflens dupes` never showed the copy. The ingest now keeps the first
path on the media row and records every path here (labeling.schema.MediaPath). The upgrade backfills one
row per media item from media.path (its first_seen: the media's created_at); nothing else is rewritten.
A store upgraded from 0012 so knows each item's current path only: the names of copies met before the
upgrade were never stored (the old code moved the row to the last of them). Ingesting the media folders
again records them (a copy's bytes are found stored, its name is recorded); until then a tags row naming
such a copy finds it only by content (the file found from the tags file's folder), and `giflens dupes`
does not list it.
Idempotent: a store that has the table already (one set back to an older revision by hand) keeps it,
and only media without a row for their path get one. Downgrade drops the table: the code before this
revision never reads it.
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if not sa.inspect(bind).has_table('media_path'):
        op.create_table('media_path',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('media_id', sa.Integer(), nullable=False),
        sa.Column('path', sa.Text(), nullable=False),
        sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_media_path_media_id_media'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_media_path')),
        sa.UniqueConstraint('media_id', 'path', name=op.f('uq_media_path_media_id'))
        )
        with op.batch_alter_table('media_path', schema=None) as batch_op:
            batch_op.create_index(batch_op.f('ix_media_path_media_id'), ['media_id'], unique=False)
    if 'ix_media_path_path' not in {i['name'] for i in sa.inspect(bind).get_indexes('media_path')}:
        # by path: storing content at a path takes that name from any other item that held it
        op.create_index(op.f('ix_media_path_path'), 'media_path', ['path'], unique=False)
    op.execute(sa.text(
        "INSERT INTO media_path (media_id, path, first_seen) "
        "SELECT m.id, m.path, COALESCE(m.created_at, CURRENT_TIMESTAMP) FROM media m WHERE m.path IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM media_path p WHERE p.media_id = m.id AND p.path = m.path)"))


def downgrade() -> None:
    with op.batch_alter_table('media_path', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_media_path_path'))
        batch_op.drop_index(batch_op.f('ix_media_path_media_id'))
    op.drop_table('media_path')

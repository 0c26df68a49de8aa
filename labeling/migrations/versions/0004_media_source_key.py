"""media.source_key: which cache entries a media item's stored rows came from

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 14:40:00.000000

A re-ingest of files already stored from the same cache entries has nothing to write; with the
key on the row it is recognised by one lookup instead of re-reading and comparing every face,
track and embedding row. Additive, nullable (rows written before it are compared the long way
once, then keyed); plain ADD COLUMN for the reason given in 0003.
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('media', sa.Column('source_key', sa.String(length=200), nullable=True))


def downgrade() -> None:
    op.drop_column('media', 'source_key')

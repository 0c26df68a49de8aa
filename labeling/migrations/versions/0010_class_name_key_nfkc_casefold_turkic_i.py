"""celebrity_class.name_key: normalised after case folding, Turkic dotted and dotless i folded to "i"

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 12:00:00.000000

The uniqueness key (labeling.validation.class_name_key) is now NFKC again after casefold, so "Παΐσιος"
and "ΠΑΪ́ΣΙΟΣ" fold to the same code points, and folds "ı" and "i" + U+0307 (what "İ" folds to) to
"i", so "Barış Manço" and "BARIŞ MANÇO" are one name. Keys written before are recomputed as 0005
did; a row whose new key another class already holds keeps its old key (the two stay distinct until
an editor merges them), because a migration must not pick which of two editors' classes survives.
"""
import unicodedata
from typing import Callable

from alembic import op
import sqlalchemy as sa

from labeling.validation import class_name_key


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def _recompute(key_of: Callable[[str], str]) -> None:
    """Every class's name_key set to key_of(name), unless another class holds that key already."""
    conn = op.get_bind()
    table = sa.table('celebrity_class', sa.column('id', sa.Integer), sa.column('name', sa.String),
                     sa.column('name_key', sa.String))
    rows = conn.execute(sa.select(table.c.id, table.c.name, table.c.name_key).order_by(table.c.id)).all()
    taken = {key for _, _, key in rows}
    for class_id, name, key in rows:
        new = key_of(name)
        if new != key and new not in taken:
            conn.execute(table.update().where(table.c.id == class_id).values(name_key=new))
            taken.discard(key)
            taken.add(new)


def _key_before_0010(name: str) -> str:
    """The key as code before this revision computed it (what it looks names up by after a downgrade)."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return " ".join("".join(c for c in folded if c not in "\u200d\ufe0f").split())


def upgrade() -> None:
    _recompute(class_name_key)


def downgrade() -> None:
    _recompute(_key_before_0010)

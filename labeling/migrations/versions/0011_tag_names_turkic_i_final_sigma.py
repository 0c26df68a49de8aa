"""tag.name: Turkic dotted and dotless i folded to "i", NFC, a word's last sigma "ς"; tags now alike merged

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 12:00:00.000000

Tag names are stored as labeling.validation.fold_tag_name computes them (clean_tag_name): before this
revision "İstanbul" was stored "i̇stanbul" (a stray U+0307), "ıstanbul" apart from "istanbul", and "Σοφός"
as "σοφόσ". Every stored name is recomputed. Tags whose names now fold alike are one tag: the one with the
highest id survives (SQLite, without AUTOINCREMENT on tag, hands the highest id + 1 to the next tag: a
deleted highest id would come back as a new tag that inherits the merged tag's audit history); each media tag row of the others moves to it, and where a media carries both, the
row kept is the active one over a suggestion over a rejection, then the higher confidence (the survivor's
on a tie), the other deleted; the emptied tags are deleted. Unlike class names (0010), where a migration
must not pick which of two editors' classes survives, two tags with one name are one word: nothing an
editor decided is lost but a duplicate row on the same media.

The audit log is append-only (0007: triggers refuse UPDATE and DELETE of audit_event) and is not
touched: events keep the media_tag keys of the merged-away tags as history. Undoing such an event now
finds its row moved or gone and is refused ("changed since"), never applied to another tag's row.

Downgrade is a no-op: the merges cannot be taken back (which rows were whose tag, and how each name was
first typed, is recorded nowhere but the audit log, which a migration does not rewrite). Code before this
revision keeps working on the folded names: a name typed as stored ("istanbul", "σοφος") is found; one it
folds otherwise ("İstanbul" with U+0307, "Σοφός" as "σοφόσ") is created again beside it, the duplicate
that code made before this revision, nothing lost or refused.
"""
import sqlalchemy as sa
from alembic import op

from labeling.validation import fold_tag_name


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

STATUS_RANK = {"active": 0, "suggested": 1, "rejected": 2}
TAG = sa.table('tag', sa.column('id', sa.Integer), sa.column('name', sa.String))
MEDIA_TAG = sa.table('media_tag', sa.column('id', sa.Integer), sa.column('media_id', sa.Integer),
                     sa.column('tag_id', sa.Integer), sa.column('status', sa.String),
                     sa.column('confidence', sa.Float), sa.column('version', sa.Integer))


def _rank(status: str, confidence: float) -> tuple[int, float]:
    """Lower is kept: active over suggested over rejected, then the higher confidence."""
    return STATUS_RANK.get(status, len(STATUS_RANK)), -confidence


def _merge(conn, survivor: int, other: int) -> None:
    """Every media tag row of tag `other` moved to `survivor`, one row kept where a media has both."""
    cols = (MEDIA_TAG.c.id, MEDIA_TAG.c.media_id, MEDIA_TAG.c.status, MEDIA_TAG.c.confidence, MEDIA_TAG.c.version)
    kept = {media: (row_id, status, conf, version) for row_id, media, status, conf, version
            in conn.execute(sa.select(*cols).where(MEDIA_TAG.c.tag_id == survivor))}
    for row_id, media, status, conf, version in conn.execute(sa.select(*cols).where(MEDIA_TAG.c.tag_id == other)).all():
        mine = kept.get(media)
        if mine is None:
            conn.execute(MEDIA_TAG.update().where(MEDIA_TAG.c.id == row_id).values(tag_id=survivor))
        elif _rank(status, conf) < _rank(mine[1], mine[2]):
            # the other row wins: it takes the survivor's key, under a version above both, so an edit based on
            # the version an editor saw of either row is a conflict, not a silent overwrite
            conn.execute(MEDIA_TAG.delete().where(MEDIA_TAG.c.id == mine[0]))
            conn.execute(MEDIA_TAG.update().where(MEDIA_TAG.c.id == row_id)
                         .values(tag_id=survivor, version=max(version, mine[3]) + 1))
        else:
            conn.execute(MEDIA_TAG.delete().where(MEDIA_TAG.c.id == row_id))
    conn.execute(TAG.delete().where(TAG.c.id == other))


def upgrade() -> None:
    conn = op.get_bind()
    groups: dict[str, list[tuple[int, str]]] = {}
    for tag_id, name in conn.execute(sa.select(TAG.c.id, TAG.c.name).order_by(TAG.c.id)):
        groups.setdefault(fold_tag_name(name), []).append((tag_id, name))
    for members in groups.values():  # merged first: a survivor's new name may be another member's
        for other, _ in members[:-1]:
            _merge(conn, members[-1][0], other)
    for name, members in groups.items():
        survivor, stored = members[-1]
        if stored != name:
            conn.execute(TAG.update().where(TAG.c.id == survivor).values(name=name))


def downgrade() -> None:
    pass

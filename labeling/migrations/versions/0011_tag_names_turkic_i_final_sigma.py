"""tag.name: Turkic dotted and dotless i folded to "i", NFC, a word's last sigma "ς"; tags now alike merged

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 12:00:00.000000

Tag names are stored as labeling.validation.fold_tag_name computes them (clean_tag_name): before this
revision "İstanbul" was stored "i̇stanbul" (a stray U+0307), "ıstanbul" apart from "istanbul", and "Σοφός"
as "σοφόσ". Every stored name is recomputed. Tags whose names now fold alike are one tag: the one with the
highest id survives (SQLite, without AUTOINCREMENT on tag, hands the highest id + 1 to the next tag: a
deleted highest id would come back as a new tag that inherits the merged tag's audit history); each
media tag row of the others moves to it, and where a media carries both, the row kept is the active one
over a suggestion over a rejection, then the higher confidence (the survivor's on a tie), the other
deleted, the kept one stamped as written by "migration 0011" (see `_merge`); the emptied tags are
deleted. A merged-away tag an editor removed from a media stays a rejection there (`_keep_removals`).
Renames run in two steps, so no order meets a name another tag still holds. Unlike class names (0010),
where a migration must not pick which of two editors' classes survives, two tags with one name are one
word: nothing an editor decided is lost but a duplicate row on the same media.

The audit log is append-only (0007: triggers refuse UPDATE and DELETE of audit_event) and is not
touched: events keep the media_tag keys of the merged-away tags as history. Undoing such an event now
finds its row moved or gone and is refused ("changed since", or for a tag merged away, naming the tag it
was merged into: `labeling.audit._check_merged_tags`), never applied to another tag's row.

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
MERGED_BY = "migration 0011"
TAG = sa.table('tag', sa.column('id', sa.Integer), sa.column('name', sa.String))
MEDIA_TAG = sa.table('media_tag', sa.column('id', sa.Integer), sa.column('media_id', sa.Integer),
                     sa.column('tag_id', sa.Integer), sa.column('status', sa.String),
                     sa.column('confidence', sa.Float), sa.column('version', sa.Integer),
                     sa.column('source', sa.String), sa.column('editor', sa.String),
                     sa.column('updated_at', sa.DateTime(timezone=True)))
AUDIT_EVENT = sa.table('audit_event', sa.column('id', sa.Integer), sa.column('editor', sa.String),
                       sa.column('operation', sa.String), sa.column('at', sa.DateTime(timezone=True)),
                       sa.column('before', sa.JSON), sa.column('after', sa.JSON),
                       sa.column('undone_by_id', sa.Integer))


def _rank(status: str, confidence: float) -> tuple[int, float]:
    """Lower is kept: active over suggested over rejected, then the higher confidence."""
    return STATUS_RANK.get(status, len(STATUS_RANK)), -confidence


def _merge(conn, survivor: int, other: int) -> None:
    """Every media tag row of tag `other` moved to `survivor`, one row kept where a media has both.

    The row kept where a media had both is stamped as written by MERGED_BY under a version above both: it
    now stands for what several operations wrote, so undoing any one of them (say the survivor's own add,
    whose row it may be, unchanged) would take away what the others wrote; the audit log sees a row changed
    since, and refuses. An edit based on the version an editor saw of either row is a conflict."""
    cols = (MEDIA_TAG.c.id, MEDIA_TAG.c.media_id, MEDIA_TAG.c.status, MEDIA_TAG.c.confidence, MEDIA_TAG.c.version)
    kept = {media: (row_id, status, conf, version) for row_id, media, status, conf, version
            in conn.execute(sa.select(*cols).where(MEDIA_TAG.c.tag_id == survivor))}
    for row_id, media, status, conf, version in conn.execute(sa.select(*cols).where(MEDIA_TAG.c.tag_id == other)).all():
        mine = kept.get(media)
        if mine is None:
            conn.execute(MEDIA_TAG.update().where(MEDIA_TAG.c.id == row_id).values(tag_id=survivor))
            continue
        stamp = {"version": max(version, mine[3]) + 1, "editor": MERGED_BY}
        if _rank(status, conf) < _rank(mine[1], mine[2]):
            conn.execute(MEDIA_TAG.delete().where(MEDIA_TAG.c.id == mine[0]))
            conn.execute(MEDIA_TAG.update().where(MEDIA_TAG.c.id == row_id).values(tag_id=survivor, **stamp))
            kept[media] = (row_id, status, conf, stamp["version"])
        else:
            conn.execute(MEDIA_TAG.delete().where(MEDIA_TAG.c.id == row_id))
            conn.execute(MEDIA_TAG.update().where(MEDIA_TAG.c.id == mine[0]).values(**stamp))
            kept[media] = (mine[0], mine[1], mine[2], stamp["version"])
    conn.execute(TAG.delete().where(TAG.c.id == other))


def _keep_removals(conn, merged_into: dict[int, int]) -> None:
    """A merged-away tag an editor removed from a media (a remove_tags still in force) is kept as a
    rejected row of the surviving tag on that media, unless the media carries the survivor.

    Why: experts voting reads such removals from the audit log by tag id (labeling.auto_tagging) and
    counts them as rejections, so the tag is not proposed again; the merged-away id names no tag any more,
    and the editor's decision would be forgotten. The row carries the removed row's confidence and source
    and the editor who removed it."""
    if not merged_into:
        return
    events = conn.execute(sa.select(AUDIT_EVENT.c.editor, AUDIT_EVENT.c.at, AUDIT_EVENT.c.before, AUDIT_EVENT.c.after)
                          .where(AUDIT_EVENT.c.operation == "remove_tags", AUDIT_EVENT.c.undone_by_id.is_(None))
                          .order_by(AUDIT_EVENT.c.id)).all()
    for editor, at, before, after in events:
        for key in after or {}:
            kind, media, tag = key.split(":")
            survivor = merged_into.get(int(tag))
            row = (before or {}).get(key)
            if kind != "media_tag" or survivor is None or not row:
                continue
            present = conn.execute(sa.select(MEDIA_TAG.c.id).where(MEDIA_TAG.c.media_id == int(media),
                                                                  MEDIA_TAG.c.tag_id == survivor)).first()
            if present is None:
                conf = float(row.get("confidence", 1.0))
                conn.execute(MEDIA_TAG.insert().values(
                    media_id=int(media), tag_id=survivor, status="rejected", confidence=min(max(conf, 0.0), 1.0),
                    source=row.get("source") or "editor", editor=editor, version=1, updated_at=at))


def upgrade() -> None:
    conn = op.get_bind()
    groups: dict[str, list[tuple[int, str]]] = {}
    for tag_id, name in conn.execute(sa.select(TAG.c.id, TAG.c.name).order_by(TAG.c.id)):
        groups.setdefault(fold_tag_name(name), []).append((tag_id, name))
    merged_into: dict[int, int] = {}
    for members in groups.values():  # merged first: a survivor's new name may be another member's
        for other, _ in members[:-1]:
            _merge(conn, members[-1][0], other)
            merged_into[other] = members[-1][0]
    _keep_removals(conn, merged_into)
    renamed = [(members[-1][0], name) for name, members in groups.items() if members[-1][1] != name]
    # in two steps: each survivor first under a name no tag has, so no order of renames meets a name
    # another survivor still holds
    for survivor, _ in renamed:
        conn.execute(TAG.update().where(TAG.c.id == survivor).values(name=f"{MERGED_BY} {survivor}"))
    for survivor, name in renamed:
        conn.execute(TAG.update().where(TAG.c.id == survivor).values(name=name))


def downgrade() -> None:
    pass

"""tag.name: emoji presentation selectors (U+FE0E, U+FE0F) dropped; tags now alike merged

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 12:00:00.000000

Tag names are stored as labeling.validation.fold_tag_name computes them, which now drops the text and
emoji presentation selectors where they select how a symbol is drawn (a stray one, after a letter, selects
nothing and stays, refused in a new name as before): before this revision "❤" and "❤️" (U+2764 U+FE0F) were two tags that look
alike, so adding "❤" to a GIF tagged "❤️" was not refused, and the Per tag box, bulk actions, experts
voting and tags.jsonl split one word in two. Every stored name is recomputed and the tags whose names now
fold alike are merged by migration 0011's steps, run again unchanged but for the stamp: the highest id
survives, each media tag row of the others moves to it, where a media carries both the row kept is the
active one over a suggestion over a rejection, then the higher confidence (the survivor's on a tie),
stamped as written by "migration 0014" under a version above both; a merged-away tag an editor removed
from a media stays a rejection there, for experts voting; renames in two steps.

The audit log is append-only and not touched, as in 0011: events keep the media_tag keys of the
merged-away tags as history, and undoing such an event (or one whose row the merge stamped) is refused
("changed since", or for a tag merged away, naming the tag it was merged into), never applied to another
tag's row. A store 0011 migrated after this fold was written
has nothing left to merge here: 0011 recomputes names with the same function.

Downgrade is a no-op: the merges cannot be taken back (which row was whose tag, and whether a name was
typed with a selector, is recorded nowhere but the audit log). Code before this revision keeps working on
the folded names: "❤" is found; "❤️" is created again beside it, the duplicate that code made before.
"""
import importlib.util
from pathlib import Path
from types import ModuleType


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

MERGED_BY = "migration 0014"
TAG_KEY_MIGRATION = Path(__file__).with_name("0011_tag_names_turkic_i_final_sigma.py")


def _tag_key_steps() -> ModuleType:
    """Migration 0011's module, loaded afresh as a copy of this revision's own, stamping MERGED_BY.

    Why not a copy of its code: the merge rules (which row is kept, how removals survive, how renames
    avoid the unique name) are one policy, and a second copy could drift from it. Why a fresh load: the
    module Alembic loaded for 0011 keeps its own stamp, "migration 0011"."""
    spec = importlib.util.spec_from_file_location("giflens_migration_0014_tag_key_steps", TAG_KEY_MIGRATION)
    steps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(steps)
    steps.MERGED_BY = MERGED_BY
    return steps


def upgrade() -> None:
    _tag_key_steps().upgrade()


def downgrade() -> None:
    pass

"""The sidebar's recent operations: Undo last above the list, each summary one short line with the whole
text on hover. An experts-voting run's summary ran to six lines, and eight entries pushed Undo last below
the fold of a 1400-pixel window."""
from __future__ import annotations

from sqlalchemy import select

from app import SIDEBAR_SUMMARY_CHARS, short_summary
from labeling.schema import Media
from labeling.tags import add_tags
from test_app_pages import app, app_store, no_exception, sign_in  # noqa: F401 - fixtures


def test_a_short_summary_is_whole_and_a_long_one_is_cut_at_a_word():
    assert short_summary("approve 3 faces") == "approve 3 faces"
    long = "added tags " + ", ".join(f"'reaction-{i:02d}'" for i in range(30)) + " to 4 media"
    cut = short_summary(long)
    assert len(cut) <= SIDEBAR_SUMMARY_CHARS and cut.endswith("…") and long.startswith(cut[:-1])
    assert long[len(cut) - 1] == " "  # cut where a word ends


def test_the_sidebar_shows_undo_last_above_short_lines(app, app_store):  # noqa: F811 - the fixtures
    tags = ["when the meeting could have been an email " * 2 + "one", "slow clap for the whole team " * 2 + "two"]
    with app_store.store() as s:
        media = s.scalars(select(Media.id).order_by(Media.id).limit(1)).all()
    event = add_tags(app_store.store, media, tags, "sidebar-editor").event_id
    sign_in(app, "sidebar-editor")
    no_exception(app)
    [line] = [c for c in app.sidebar.caption if c.value.startswith(f"**#{event}**")]
    assert line.value.endswith("…") and len(line.value) <= SIDEBAR_SUMMARY_CHARS + len(f"**#{event}** ") + 20
    assert "team two" in line.help and "team two" not in line.value  # the whole summary on hover
    blocks = list(app.sidebar)
    undo = next(i for i, b in enumerate(blocks) if getattr(b, "label", None) == "Undo last")
    first = next(i for i, b in enumerate(blocks) if str(getattr(b, "value", "")).startswith("**#"))
    assert undo < first

"""Tags: the Tags page's warnings about what another editor did meanwhile.

1. Per GIF: a press on picked suggestions of which only some were decided by another editor meanwhile
   writes nothing, names what left and who decided it, and keeps the rest picked for the next press.
2. last_change (the "who did it" of those warnings) looks up thousands of keys in a few chunked queries,
   not one query per key.
3. The times those warnings and the Overview page show are UTC, and say so, whatever the PostgreSQL
   session's time zone. Stores are the fixture store of test_queries (real photos and a GIF)."""
from __future__ import annotations

import math
import re
from datetime import timezone

import pytest
from conftest import make_faces, open_app
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import make_url
from streamlit.testing.v1 import AppTest

from labeling.audit import CHUNK
from labeling.auto_tagging import SOURCE
from labeling.db import open_store
from labeling.pages.common import last_change
from labeling.queries import media_tags_frame
from labeling.schema import AuditEvent, Media, MediaTag
from labeling.tags import add_tags, remove_tags, set_tag_status
from test_queries import GIF, build_fixture_store, session_dir
from test_tags_votes_and_removed_picks import per_gif_with_suggestions

UTC_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def gone_notes(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if "no longer waiting" in w.value]


def status_of(store, media_id: int, tag: str) -> tuple[str, str]:
    row = media_tags_frame(store, media_id=media_id).set_index("tag").loc[tag]
    return row["status"], row["editor"]


def utc_at(store, event_id: int) -> str:
    """The event's time as the page must print it: in UTC, labelled."""
    with store() as session:
        at = session.get(AuditEvent, event_id).at
    return f"{at.astimezone(timezone.utc) if at.tzinfo else at:%Y-%m-%d %H:%M:%S} UTC"


# -- 1. Per GIF: some of the picks decided meanwhile ---------------------------------------------------------
def test_a_press_on_picks_of_which_some_were_decided_meanwhile_writes_nothing_and_keeps_the_rest(
        tmp_path_factory, monkeypatch):
    fx, at, gif, picker = per_gif_with_suggestions(tmp_path_factory, monkeypatch, "tags-r12-partial")
    at.multiselect(key=picker).set_value(["happy", "smile"]).run()

    rejected = set_tag_status(fx.store, [(gif, "happy")], "rejected", "bob")  # meanwhile
    at.button(key="tags_accept").click().run()
    no_exception(at)
    note = gone_notes(at)
    assert len(note) == 1, [w.value for w in at.warning]
    assert f"'happy' rejected by bob in operation {rejected.event_id} ({utc_at(fx.store, rejected.event_id)})" in note[0]
    assert "Nothing was accepted" in note[0] and "Still picked: 'smile'" in note[0]
    assert not at.success  # nothing written, so no "Done" either
    assert status_of(fx.store, gif, "smile") == ("suggested", "model-run")
    assert at.multiselect(key=picker).value == ["smile"]  # kept for the next press

    # the editor presses again, on what is left: accepted, and no warning any more
    at.button(key="tags_accept").click().run()
    no_exception(at)
    assert not gone_notes(at)
    assert status_of(fx.store, gif, "smile") == ("active", "ann")
    assert any("accepted 1 tag suggestion" in s.value for s in at.success), [s.value for s in at.success]
    assert status_of(fx.store, gif, "happy") == ("rejected", "bob")


# -- 2. last_change over many keys: chunked ----------------------------------------------------------------
def test_last_change_over_thousands_of_keys_takes_a_few_chunked_queries(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    make_faces(store, n_media=4, faces_per_media=0)
    with store() as s:
        media = sorted(s.scalars(select(Media.id)))
    add_tags(store, media, ["reaction"], "ann")
    with store() as s:
        rows = sorted(s.execute(select(MediaTag.media_id, MediaTag.tag_id)).all())
    keys = [f"media_tag:{m}:{t}" for m, t in rows]
    removed = remove_tags(store, media[:3], ["reaction"], "bob")  # one operation over three of them
    # the rows a page drew include many that no operation ever wrote (or rows of long ago): they cost queries
    never = [f"media_tag:{10**6 + i}:1" for i in range(2 * CHUNK + 7)]
    asked = never[: CHUNK] + keys[::-1] + never[CHUNK:]

    engine = store.kw["bind"]
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        change = last_change(store, asked)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) <= math.ceil(len(asked) / CHUNK) + 3, len(statements)  # the event and its keys

    # the same answer as before: bob's removal, the first of its keys as given (media[2]'s), its rows
    assert (change.event_id, change.editor, change.operation) == (removed.event_id, "bob", removed.operation)
    assert change.after is None and change.before["media_id"] == media[2]
    assert last_change(store, keys[3:] + never).editor == "ann"  # the fourth was only added, by ann
    assert last_change(store, never) is None and last_change(store, []) is None


# -- 3. UTC on PostgreSQL in another time zone --------------------------------------------------------------
@pytest.mark.postgres
def test_the_notes_and_the_overview_say_utc_times_on_a_server_in_new_york(tmp_path_factory, monkeypatch, pg_url,
                                                                          pg_admin_url):
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{make_url(pg_url).database}" SET timezone = \'America/New_York\''))
    admin.dispose()
    fx = build_fixture_store(session_dir(tmp_path_factory, "giflens-app-data"), pg_url)
    with fx.store() as s:
        assert s.execute(text("SHOW timezone")).scalar() == "America/New_York"
    gif = fx.media[GIF]
    add_tags(fx.store, [gif], ["smile"], "model-run", confidence=0.5, source=SOURCE, status="suggested")
    at = open_app(monkeypatch, fx.data_dir, fx.url)
    at.session_state["editor"] = "ann"
    at.switch_page("labeling/pages/tags.py").run()
    at.selectbox(key="tags_media").set_value(gif).run()
    at.multiselect(key=f"tags_suggestions_{gif}").set_value(["smile"]).run()
    rejected = set_tag_status(fx.store, [(gif, "smile")], "rejected", "bob")
    at.button(key="tags_reject").click().run()
    no_exception(at)
    note = gone_notes(at)
    assert len(note) == 1, [w.value for w in at.warning]
    when = utc_at(fx.store, rejected.event_id)
    with fx.store() as s:
        local = s.get(AuditEvent, rejected.event_id).at  # as PostgreSQL hands it back: New York time
    assert local.utcoffset().total_seconds() < 0
    assert f"rejected by bob in operation {rejected.event_id} ({when})" in note[0]
    assert f"{local:%Y-%m-%d %H:%M}" not in note[0]

    # the Overview: the latest operations and the operations to undo, in UTC as well
    at.switch_page("labeling/pages/home.py").run()
    no_exception(at)
    latest = at.dataframe[0].value
    assert latest.loc[latest["event_id"] == rejected.event_id, "at"].tolist() == [when]
    options = at.selectbox(key="overview_undo_event").options
    assert any(f"#{rejected.event_id} · bob · {when} ·" in o for o in options), options
    assert all(UTC_TIME.search(o) for o in options)

    # the history tables of the pages too (Tags' history of a GIF here; Classes and Explore show theirs the same way)
    at.switch_page("labeling/pages/tags.py").run()
    no_exception(at)
    histories = [d.value for d in at.dataframe if {"event_id", "at"} <= set(d.value.columns)]
    assert histories and all(UTC_TIME.search(v) for h in histories for v in h["at"]), histories
    assert any(h.loc[h["event_id"] == rejected.event_id, "at"].tolist() == [when] for h in histories), histories

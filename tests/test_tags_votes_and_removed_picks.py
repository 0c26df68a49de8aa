"""Tags: an experts-voting run in which no expert earns a weight removes no pending
suggestion (no vote is not a vote against), and the Tags page says so when another editor took away what the
editor had chosen: the tag of the Per tag tab (removed from every media) or suggestions picked on the Per GIF
tab (accepted or rejected meanwhile). Stores are the fixture store of test_queries (real photos and a GIF,
filled from the session's embedding cache)."""
from __future__ import annotations

from conftest import open_app
from streamlit.testing.v1 import AppTest

from labeling.auto_tagging import SOURCE, autotag
from labeling.queries import media_tags_frame
from labeling.tags import add_tags, remove_tags, set_tag_status
from test_queries import GIF, new_fixture_store


def pending(store) -> set[tuple[int, str]]:
    frame = media_tags_frame(store, status="suggested")
    return set(zip(frame["media_id"].astype(int), frame["tag"]))


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def button(at: AppTest, label: str):
    found = [b for b in at.button if b.label == label]
    assert len(found) == 1, [b.label for b in at.button]
    return found[0]


def warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning]


# -- 1. a vote with no trusted expert removes nothing -------------------------------------------------------
def test_a_vote_no_expert_earned_a_weight_for_keeps_the_pending_suggestions(tmp_path_factory):
    fx = new_fixture_store(tmp_path_factory, "tags-r11-vote")
    photos = sorted(fx.largest_face)
    add_tags(fx.store, [fx.media[p] for p in photos], ["stale"], "model-run", confidence=0.4, source=SOURCE,
             status="suggested")
    before = pending(fx.store)
    assert len(before) == len(photos) + 1  # and the fixture's "happy" on the GIF

    # nothing the experts see is shared by two tagged media: every weight is 0, and nobody voted
    silent = autotag(fx.store, "bob", text=None)
    assert set(silent.weights) == {"visual", "identity"} and not any(silent.weights.values())
    assert (silent.suggested, silent.removed) == (0, 0) and "0 stale removed" in silent.summary
    assert pending(fx.store) == before

    # once the identity expert earns a weight, it votes on every media with faces: the suggestions it no
    # longer proposes there are removed, and its own stand
    add_tags(fx.store, [fx.media[photos[0]]], ["Ariel Sharon"], "ann")
    vote = autotag(fx.store, "bob", text=None)
    assert vote.weights["identity"] > 0
    after = pending(fx.store)
    assert not any(tag == "stale" for _, tag in after) and (fx.media[GIF], "happy") not in after
    assert vote.removed == len(before) and len(after) == vote.suggested > 0
    assert (fx.media[photos[1]], "ariel sharon") in after


# -- 2. Per tag: the tag left every media ------------------------------------------------------------------
def test_per_tag_says_the_chosen_tag_was_removed_from_every_media_and_who_did_it(tmp_path_factory, monkeypatch):
    fx = new_fixture_store(tmp_path_factory, "tags-r11-per-tag")
    at = open_app(monkeypatch, fx.data_dir, fx.url)
    at.session_state["editor"] = "ann"
    at.switch_page("labeling/pages/tags.py").run()
    tag = "jennifer lawrence"  # on the GIF only
    at.selectbox(key="tags_tag").set_value(tag).run()
    no_exception(at)
    nod = media_tags_frame(fx.store, tag="nod")[["media_id", "confidence", "editor"]]

    removed = remove_tags(fx.store, [fx.media[GIF]], [tag], "bob")  # meanwhile
    at.checkbox(key=f"bulk_all_{tag}").check()
    at.number_input(key=f"bulk_confidence_{tag}").set_value(0.5)
    button(at, "Set confidence").click().run()
    no_exception(at)
    shown = at.selectbox(key="tags_tag").value
    note = [w for w in warnings(at) if "no longer on any media" in w]
    assert len(note) == 1, warnings(at)
    assert f"'{tag}' is no longer on any media: removed by bob in operation {removed.event_id}" in note[0]
    assert "Nothing was done for it" in note[0] and f"The page shows '{shown}' now" in note[0]
    assert media_tags_frame(fx.store, tag=tag).empty
    assert media_tags_frame(fx.store, tag="nod")[["media_id", "confidence", "editor"]].equals(nod)

    # the editor's own removal of the last rows of a tag was reported by the operation: no warning
    at.selectbox(key="tags_tag").set_value("nod").run()
    assert not [w for w in warnings(at) if "no longer on any media" in w]
    at.checkbox(key="bulk_all_nod").check()
    button(at, "Remove tag").click().run()
    no_exception(at)
    assert media_tags_frame(fx.store, tag="nod").empty
    assert not [w for w in warnings(at) if "no longer on any media" in w], warnings(at)
    assert any("remove tag(s) 'nod'" in s.value for s in at.success)


# -- 3. Per GIF: picked suggestions decided by someone else ------------------------------------------------
def per_gif_with_suggestions(tmp_path_factory, monkeypatch, name: str):
    """A fixture store whose GIF has the experts' suggestions 'smile' and 'wave', open on the Tags page's
    Per GIF tab with "ann" signed in: (store, app, gif, the suggestions picker's key)."""
    fx = new_fixture_store(tmp_path_factory, name)
    gif = fx.media[GIF]
    add_tags(fx.store, [gif], ["smile", "wave"], "model-run", confidence=0.5, source=SOURCE, status="suggested")
    at = open_app(monkeypatch, fx.data_dir, fx.url)
    at.session_state["editor"] = "ann"
    at.switch_page("labeling/pages/tags.py").run()
    at.selectbox(key="tags_media").set_value(gif).run()
    return fx, at, gif, f"tags_suggestions_{gif}"


def test_per_gif_says_which_picked_suggestions_another_editor_decided(tmp_path_factory, monkeypatch):
    fx, at, gif, picker = per_gif_with_suggestions(tmp_path_factory, monkeypatch, "tags-r11-per-gif")

    # the editor's own accept is no news
    at.multiselect(key=picker).set_value(["wave"]).run()
    at.button(key="tags_accept").click().run()
    no_exception(at)
    assert not [w for w in warnings(at) if "no longer waiting" in w], warnings(at)
    assert media_tags_frame(fx.store, media_id=gif).set_index("tag").loc["wave", "status"] == "active"

    # bob rejects one and accepts the other of the two ann picked, then ann presses Reject
    at.multiselect(key=picker).set_value(["happy", "smile"]).run()
    rejected = set_tag_status(fx.store, [(gif, "happy")], "rejected", "bob")
    accepted = set_tag_status(fx.store, [(gif, "smile")], "active", "bob")
    at.button(key="tags_reject").click().run()
    no_exception(at)
    note = [w for w in warnings(at) if "no longer waiting" in w]
    assert len(note) == 1, warnings(at)
    assert f"'happy' rejected by bob in operation {rejected.event_id}" in note[0]
    assert f"'smile' accepted by bob in operation {accepted.event_id}" in note[0]
    assert "Nothing was rejected" in note[0]
    rows = media_tags_frame(fx.store, media_id=gif).set_index("tag")
    assert (rows.loc["happy", "status"], rows.loc["happy", "editor"]) == ("rejected", "bob")
    assert (rows.loc["smile", "status"], rows.loc["smile", "editor"]) == ("active", "bob")

    # told once: the next run starts from what is waiting now
    at.run()
    assert not [w for w in warnings(at) if "no longer waiting" in w], warnings(at)

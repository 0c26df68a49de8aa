"""Pages:

1. An upload whose name is near the file system's 255-byte limit is stored under a name cut to fit (on a
   character boundary, its extension kept, unique), not refused by the system with a traceback; a file that
   cannot be saved is listed as refused with its reason, and the rest of the batch is ingested.
2. Per tag, Set confidence / Remove tag on picked media of which some no longer carry the tag (another
   editor removed it meanwhile): nothing is written, the page names who removed it and when, and the picks
   still listed stay picked.
3. Per tag, Accept / Reject suggestions on picks of which some were decided meanwhile: the Per GIF rule
   (nothing written, who decided it named, the rest kept for another press).
Stores are the fixture store of test_queries (real photos and a GIF)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from conftest import open_app
from labeling.auto_tagging import SOURCE
from labeling.db import open_store
from labeling.pages.common import NAME_BYTES, UPLOADS, Settings, fit_name, safe_file_name, save_upload
from labeling.queries import media_frame, media_tags_frame
from labeling.tags import add_tags, remove_tags, set_tag_status
from test_app_pages import button, errors, go, no_exception
from test_queries import GIF, SHARED, new_fixture_store
from test_tags_picks_and_utc_notes import utc_at

PHOTO = SHARED / "lfw" / "Ai_Sugiyama" / "Ai_Sugiyama_0001.jpg"
OTHER_PHOTO = SHARED / "lfw" / "Hugo_Chavez" / "Hugo_Chavez_0001.jpg"


# -- 1. long upload names, and a file that cannot be saved ----------------------------------------------------
def test_long_upload_names_are_cut_on_a_character_boundary_keeping_the_extension(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'x.db'}")
    data = (SHARED / "gifs" / GIF).read_bytes()
    for name in ["a" * 250 + ".gif", "表" * 84 + ".gif", "é" * 200 + ".gif"]:  # 254, 256, 404 bytes
        path = save_upload(name, data, settings)  # was OSError: [Errno 36] File name too long
        stored = path.name
        assert path.read_bytes() == data
        assert len(f".{stored}.part".encode()) <= 255 and len(stored.encode()) <= NAME_BYTES
        assert stored.endswith(".gif") and name.startswith(stored.split("~")[0])  # a whole-character prefix
        assert len(stored.split("~")[0]) > 60  # most of the name is kept
        assert save_upload(name, data, settings) == path  # the same name and bytes are one file, as before
    # names that differ only past the cut stay apart; short names are untouched
    first, second = "b" * 260 + "1.gif", "b" * 260 + "2.gif"
    assert fit_name(first) != fit_name(second)
    assert save_upload(first, data, settings) != save_upload(second, data, settings)
    assert safe_file_name("clip.gif") == "clip.gif" and safe_file_name("x" * NAME_BYTES) == "x" * NAME_BYTES
    assert len(safe_file_name("x" * (NAME_BYTES + 1)).encode()) <= NAME_BYTES


def test_ingest_page_refuses_a_file_it_cannot_save_and_ingests_the_rest(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    url = f"sqlite:///{tmp_path / 'uploads.db'}"
    blocked = OTHER_PHOTO.read_bytes()
    # a file where the upload's folder goes: the system refuses to make the folder, even for root
    folder = data_dir / UPLOADS / hashlib.sha256(blocked).hexdigest()[:16]
    folder.parent.mkdir(parents=True)
    folder.write_bytes(b"not a folder")
    long_name = "p" * 250 + ".jpg"  # 254 bytes: was a traceback, and nothing of the batch ingested
    at = open_app(monkeypatch, data_dir, url)
    at.session_state["editor"] = "ann"
    go(at, "ingest")
    at.file_uploader(key="ingest_uploads").set_value([
        (long_name, PHOTO.read_bytes(), "image/jpeg"), (OTHER_PHOTO.name, blocked, "image/jpeg")]).run()
    button(at, "Ingest uploaded files").click().run()
    no_exception(at)
    refused = [d.value for d in at.dataframe if "reason" in d.value.columns and "path" not in d.value.columns]
    assert len(refused) == 1 and list(refused[0]["file"]) == [OTHER_PHOTO.name], refused
    assert refused[0]["reason"].iloc[0] == "could not be saved: File exists"
    assert any("1 file(s) refused before ingest" in w.value for w in at.warning)
    media = media_frame(open_store(url))
    assert list(media["status"]) == ["ok"] and media["name"].iloc[0].startswith("p" * 200)
    assert media["name"].iloc[0].endswith(".jpg") and Path(media["path"].iloc[0]).read_bytes() == PHOTO.read_bytes()


# -- 2 and 3. Per tag: picks another editor changed meanwhile ------------------------------------------------------
def _per_tag(tmp_path_factory, monkeypatch, name: str, tag: str, status: str):
    """A fixture store whose GIF and two photos carry `tag` (status active or suggested), open on the Tags
    page's Per tag tab at that tag with "ann" signed in: (store, app, [gif, photo, photo], names)."""
    fx = new_fixture_store(tmp_path_factory, name)
    photos = sorted(n for n in fx.media if n.endswith(".jpg"))[:2]
    ids = [fx.media[GIF], *(fx.media[p] for p in photos)]
    add_tags(fx.store, ids, [tag], "model-run", confidence=0.4, status=status,
             source=SOURCE if status == "suggested" else "editor")
    at = open_app(monkeypatch, fx.data_dir, fx.url)
    at.session_state["editor"] = "ann"
    go(at, "tags")
    at.selectbox(key="tags_tag").set_value(tag).run()
    no_exception(at)
    return fx, at, ids, [GIF, *photos]


def _rows(store, tag: str) -> dict[int, tuple[float, str, str]]:
    frame = media_tags_frame(store, tag=tag)
    return {int(m): (round(float(c), 2), s, e) for m, c, s, e in
            zip(frame["media_id"], frame["confidence"], frame["status"], frame["editor"])}


def _gone(at, what: str) -> list[str]:
    return [w.value for w in at.warning if what in w.value]


def test_per_tag_bulk_on_picked_media_another_editor_untagged_writes_nothing_and_says_who(
        tmp_path_factory, monkeypatch):
    fx, at, (gif, one, two), names = _per_tag(tmp_path_factory, monkeypatch, "pages-r14-bulk", "wink", "active")
    picker = "bulk_media_wink"

    # the one pick is gone: was "Choose the media first (or tick all)."
    at.multiselect(key=picker).set_value([gif])
    at.number_input(key="bulk_confidence_wink").set_value(0.9)
    removed = remove_tags(fx.store, [gif], ["wink"], "bob")  # meanwhile
    button(at, "Set confidence").click().run()
    no_exception(at)
    assert not errors(at), errors(at)
    note = _gone(at, "no longer carry 'wink'")
    assert note == [f"Media you picked no longer carry 'wink': {names[0]} (id {gif}) removed by bob in operation "
                    f"{removed.event_id} ({utc_at(fx.store, removed.event_id)}). Nothing was changed."], note
    assert _rows(fx.store, "wink") == {one: (0.4, "active", "model-run"), two: (0.4, "active", "model-run")}

    # one of two picks is gone: nothing removed (was: the other removed without a word), the other kept picked
    at.multiselect(key=picker).set_value([one, two])
    removed = remove_tags(fx.store, [one], ["wink"], "bob")
    button(at, "Remove tag").click().run()
    no_exception(at)
    note = _gone(at, "no longer carry 'wink'")
    assert len(note) == 1 and f"{names[1]} (id {one}) removed by bob in operation {removed.event_id}" in note[0]
    assert f"Nothing was removed. Still picked: {names[2]}; press again to act on those." in note[0], note
    assert not at.success
    assert _rows(fx.store, "wink") == {two: (0.4, "active", "model-run")}
    assert at.multiselect(key=picker).value == [two]

    # pressed again, on what is left: done, and no warning any more
    button(at, "Remove tag").click().run()
    no_exception(at)
    assert not _gone(at, "no longer carry")
    assert _rows(fx.store, "wink") == {}


def test_per_tag_accept_on_picks_of_which_some_were_decided_meanwhile_writes_nothing_and_keeps_the_rest(
        tmp_path_factory, monkeypatch):
    fx, at, (gif, one, two), names = _per_tag(tmp_path_factory, monkeypatch, "pages-r14-suggest", "dance",
                                              "suggested")
    picker = "bulk_suggested_dance"
    at.multiselect(key=picker).set_value([gif, one])
    rejected = set_tag_status(fx.store, [(gif, "dance")], "rejected", "bob")  # meanwhile
    button(at, "Accept suggestions").click().run()
    no_exception(at)
    note = _gone(at, "no longer waiting")
    assert note == [f"Suggestion(s) of 'dance' you picked are no longer waiting: {names[0]} (id {gif}) rejected by "
                    f"bob in operation {rejected.event_id} ({utc_at(fx.store, rejected.event_id)}). Nothing was "
                    f"accepted. Still picked: {names[1]}; press again to decide those."], note
    assert not at.success  # was "Done: accepted 1 tag suggestion(s)"
    assert _rows(fx.store, "dance") == {gif: (0.4, "rejected", "bob"), one: (0.4, "suggested", "model-run"),
                                        two: (0.4, "suggested", "model-run")}
    assert at.multiselect(key=picker).value == [one]

    button(at, "Accept suggestions").click().run()
    no_exception(at)
    assert not _gone(at, "no longer waiting")
    assert any("accepted 1 tag suggestion" in s.value for s in at.success), [s.value for s in at.success]
    assert _rows(fx.store, "dance")[one] == (0.4, "active", "ann")
    assert _rows(fx.store, "dance")[two] == (0.4, "suggested", "model-run")

    # the editor's own decisions are no news: rejecting the last one warns of nothing
    at.multiselect(key=picker).set_value([two])
    button(at, "Reject suggestions").click().run()
    no_exception(at)
    assert not _gone(at, "no longer waiting") and _rows(fx.store, "dance")[two] == (0.4, "rejected", "ann")

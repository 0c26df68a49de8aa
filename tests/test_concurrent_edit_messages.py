"""Two editors at once: what the one who loses reads.

1. A split read the class's faces unlocked and locked them only to move them: a face another editor was
   relabeling out of the class was then skipped, and the split "succeeded" with 1 of 2 faces. The faces
   are locked first; the split is refused naming the face and who moved it.
2. Accepting or rejecting a suggestion someone removed said "media 14 has no tag ..."; it names who
   removed it and when, as the confidence edit does.
3. Two classes given one name at once (rename, add, class import) met the unique key: "another editor
   saved a class of the same name at the same moment", and a whole import was refused. The second
   writer now waits (the class catalog lock) and reads the usual "a class named ... already exists";
   the import finds the class.
4. An undo meeting a tag another editor added at that moment showed the raw constraint text; it names
   the later operation, its editor and when.
5. A first tag or label saved by another editor meanwhile read "your edit was based on version 1"
   (the editor saw none); a class removed (an undo of its add) or retired meanwhile is named with
   who did it and when.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from conftest import make_faces, plain_media
from sqlalchemy import event, select, text
from sqlalchemy.orm import sessionmaker

from labeling.audit import undo_event
from labeling.classes import add_class, rename_class, retire_class, split_class
from labeling.db import make_engine, open_store
from labeling.errors import (ConcurrentWriteError, ConflictError, NotFoundError, UndoError, ValidationError,
                             utc_text)
from labeling.face_labels import relabel_faces
from labeling.importers import ImportSummary, import_classes
from labeling.schema import AuditEvent, CelebrityClass, FaceLabel, MediaTag, Tag
from labeling.tags import add_tags, remove_tags, set_tag_status
from labeling.validation import class_name_key


# -- two editors, the first paused inside its transaction ---------------------------------------------
def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - which refusal came out is the point
        return exc


def _someone_waits(monitor: sessionmaker) -> bool:
    with monitor() as s:
        return bool(s.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND wait_event_type = 'Lock'")))


def race(url: str, pause_on: str, first: Callable[[sessionmaker], Any],
         second: Callable[[sessionmaker], Any]) -> tuple[Any, Any]:
    """`first(store)` runs on an engine of its own and pauses after its first statement matching `pause_on`
    (its transaction open); then `second(store)` runs on another engine; the first goes on once the second
    waits for a lock (or is done). No clock: PostgreSQL says when. (first's outcome, second's outcome)."""
    engines = [make_engine(url) for _ in range(3)]
    first_store, second_store, monitor = (sessionmaker(e, expire_on_commit=False) for e in engines)
    paused, release, done = threading.Event(), threading.Event(), [threading.Event(), threading.Event()]
    out: dict[int, Any] = {}

    def after(conn, cursor, statement, params, context, many) -> None:
        if not paused.is_set() and re.search(pause_on, statement, re.S):
            paused.set()
            release.wait()

    event.listen(engines[0], "after_cursor_execute", after)

    def run(i: int, fn: Callable[[sessionmaker], Any], store: sessionmaker) -> None:
        out[i] = _outcome(lambda: fn(store))
        done[i].set()

    try:
        threads = [threading.Thread(target=run, args=(0, first, first_store))]
        threads[0].start()
        while not (paused.is_set() or done[0].is_set()):
            paused.wait(0.01)
        threads.append(threading.Thread(target=run, args=(1, second, second_store)))
        threads[1].start()
        while not (done[1].is_set() or _someone_waits(monitor)):
            done[1].wait(0.01)
        release.set()
        for thread in threads:
            thread.join()
    finally:
        release.set()
        for engine in engines:
            engine.dispose()
    return out[0], out[1]


def _version(store, face: int) -> int:
    with store() as s:
        return s.scalar(select(FaceLabel.version).where(FaceLabel.face_id == face)) or 0


def _class_version(store, class_id: int) -> int:
    with store() as s:
        return s.get(CelebrityClass, class_id).version


def _event(store, event_id: int) -> AuditEvent:
    with store() as s:
        return s.get(AuditEvent, event_id)


def _tag_id(store, name: str) -> int:
    with store() as s:
        return s.scalar(select(Tag.id).where(Tag.name == name))


def _faces_in_a_beside_c(url: str, n: int):
    """A store with n faces labeled class A, and an empty class C: (store, faces, A's id, C's id)."""
    store = open_store(url)
    faces = make_faces(store, 1, n)
    a, _ = add_class(store, "A", "seed")
    c, _ = add_class(store, "C", "seed")
    relabel_faces(store, faces, a, "seed")
    return store, faces, a, c


# -- 1. a split and a relabel of one of its faces --------------------------------------------------------
@pytest.mark.postgres
def test_a_split_while_a_picked_face_is_relabeled_away_names_the_face_and_who_moved_it(pg_url):
    store, faces, a, c = _faces_in_a_beside_c(pg_url, 3)
    seen = _class_version(store, a)
    annes, bobs = race(pg_url, r"FOR UPDATE.*face_label|face_label.*FOR UPDATE",  # ann holds face 0's label locked, relabeling it to C
                       lambda s: relabel_faces(s, [faces[0]], c, "ann", {faces[0]: _version(store, faces[0])}),
                       lambda s: split_class(s, a, faces[:2], "bob", new_name="N", expected_version=seen))
    assert isinstance(bobs, ValidationError), bobs  # the old code split 1 of the 2 faces and said so
    message = str(bobs)
    at = _event(store, annes.event_id).at
    assert message.startswith(f"face(s) [{faces[0]}] are not labeled 'A'"), message
    assert f"face {faces[0]} was moved out of it by ann at {utc_text(at)}" in message, message
    assert f"in operation {annes.event_id} (relabel_faces)" in message, message
    with store() as s:  # nothing of bob's: no class N, face 1 still in A
        assert s.scalar(select(CelebrityClass.id).where(CelebrityClass.name == "N")) is None
        labels = dict(s.execute(select(FaceLabel.face_id, FaceLabel.class_id).where(FaceLabel.face_id.in_(faces))).all())
    assert labels == {faces[0]: c, faces[1]: a, faces[2]: a}


def test_a_split_of_a_face_relabeled_earlier_names_who_relabeled_it(store_url):
    store, faces, a, c = _faces_in_a_beside_c(store_url, 2)
    moved = relabel_faces(store, [faces[0]], c, "ann")
    with pytest.raises(ValidationError) as refused:
        split_class(store, a, faces, "bob", target_id=c)
    assert str(refused.value).startswith(f"face(s) [{faces[0]}] are not labeled 'A'; face {faces[0]} was moved "
                                         f"out of it by ann at "), refused.value
    assert f"in operation {moved.event_id} (relabel_faces)" in str(refused.value)


def test_a_split_of_a_face_never_in_the_class_blames_nobody(store_url):
    """A face picked by mistake (labeled C all along, last written by whoever put it there) was moved out of
    A by nobody: naming its last writer and "reload and try again" sent the editor after the wrong thing."""
    store = open_store(store_url)
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "A", "seed")
    c, _ = add_class(store, "C", "seed")
    relabel_faces(store, faces[:1], a, "seed")
    relabel_faces(store, faces[1:], c, "ann")
    with pytest.raises(ValidationError) as refused:
        split_class(store, a, faces, "bob", new_name="N")
    assert str(refused.value) == f"face(s) [{faces[1]}] are not labeled 'A'", refused.value


@pytest.mark.postgres
def test_a_split_into_a_new_class_and_an_import_touching_its_source_do_not_deadlock(pg_url, tmp_path):
    """The split takes the catalog lock before the source class, as imports do: taken later (by
    create_class), the split held class A waiting for the catalog while an import filling A's external
    id held the catalog waiting for A, and one of them failed as a "concurrent write"."""
    store = open_store(pg_url)
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "A", "seed")
    relabel_faces(store, faces, a, "seed")
    csv = tmp_path / "c.csv"
    csv.write_text("Labels,Index\nA_[m.0xa],0\n")  # fills A's external id: the import locks class A
    imported, split = race(pg_url, r"pg_advisory_xact_lock",
                           lambda s: import_classes(s, csv, "ann"),
                           lambda s: split_class(s, a, faces[:1], "bob", new_name="N"))
    assert not isinstance(imported, Exception), imported
    assert not isinstance(split, Exception), split


# -- 2. accepting a suggestion someone removed ---------------------------------------------------------
def test_accepting_a_removed_suggestion_names_who_removed_it(store_url):
    store = open_store(store_url)
    media = plain_media(store, 2)
    add_tags(store, media, ["smile"], "model", confidence=0.4, source="experts_voting", status="suggested")
    tag = _tag_id(store, "smile")
    removed = remove_tags(store, media[:1], ["smile"], "bob")
    seen = {(m, tag): 1 for m in media}
    for status in ("active", "rejected"):
        with pytest.raises(ConflictError) as refused:  # was NotFoundError "media 1 has no tag 'smile'"
            set_tag_status(store, [(m, "smile") for m in media], status, "ann", expected_versions=seen)
        assert str(refused.value).startswith(f"tag 'smile' on clip0.gif (media {media[0]}) was removed by bob at "), \
            refused.value
        assert f"in operation {removed.event_id} (remove_tags)" in str(refused.value)
    with pytest.raises(NotFoundError, match=f"media {media[0]} has no tag 'smile'"):  # no version seen: as before
        set_tag_status(store, [(media[0], "smile")], "active", "ann")


# -- 3. one name given to two classes at once --------------------------------------------------------
def _refused_as_taken(outcome: Any, name: str, class_id: int) -> None:
    assert isinstance(outcome, ValidationError), outcome  # was ConcurrentWriteError "... at the same moment"
    assert str(outcome) == f"a class named {name!r} already exists (id {class_id}, active)"


@pytest.mark.postgres
def test_two_renames_to_one_name_at_once_refuse_the_second_by_name(pg_url):
    store = open_store(pg_url)
    x, _ = add_class(store, "X", "seed")
    y, _ = add_class(store, "Y", "seed")
    annes, bobs = race(pg_url, r"UPDATE celebrity_class",
                       lambda s: rename_class(s, x, "Same", "ann", expected_version=1),
                       lambda s: rename_class(s, y, "same", "bob", expected_version=1))
    assert annes.changed == 1, annes
    _refused_as_taken(bobs, "Same", x)


@pytest.mark.postgres
def test_an_add_while_a_rename_to_that_name_refuses_the_add_by_name(pg_url):
    store = open_store(pg_url)
    z, _ = add_class(store, "Z", "seed")
    annes, bobs = race(pg_url, r"UPDATE celebrity_class",
                       lambda s: rename_class(s, z, "New", "ann", expected_version=1),
                       lambda s: add_class(s, "new", "bob"))
    assert annes.changed == 1, annes
    _refused_as_taken(bobs, "New", z)


@pytest.mark.postgres
def test_two_adds_of_one_name_at_once_refuse_the_second_by_name(pg_url):
    open_store(pg_url)
    annes, bobs = race(pg_url, r"INSERT INTO celebrity_class",
                       lambda s: add_class(s, "Twin", "ann"), lambda s: add_class(s, "twin", "bob"))
    _refused_as_taken(bobs, "Twin", annes[0])


@pytest.mark.postgres
def test_a_split_into_a_new_class_while_an_add_of_its_name_refuses_the_split_by_name(pg_url):
    store = open_store(pg_url)
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "A", "seed")
    relabel_faces(store, faces, a, "seed")
    annes, bobs = race(pg_url, r"INSERT INTO celebrity_class",
                       lambda s: add_class(s, "Kid", "ann"), lambda s: split_class(s, a, faces[:1], "bob", new_name="kid"))
    _refused_as_taken(bobs, "Kid", annes[0])


@pytest.mark.postgres
def test_a_class_import_while_an_add_of_one_of_its_names_finds_that_class(pg_url, tmp_path: Path):
    store = open_store(pg_url)
    csv = tmp_path / "classes.csv"
    csv.write_text("Labels,Index\n" + "".join(f"P{i}_[m.0xtest{i}],{i}\n" for i in range(3)))
    annes, bobs = race(pg_url, r"INSERT INTO celebrity_class",
                       lambda s: add_class(s, "P1", "ann"), lambda s: import_classes(s, csv, "bob"))
    assert isinstance(bobs, ImportSummary), bobs  # was ConcurrentWriteError: the whole file refused
    assert (bobs.created, bobs.updated) == (2, 1), bobs
    with store() as s:
        rows = s.execute(select(CelebrityClass.id, CelebrityClass.external_id)
                         .where(CelebrityClass.name_key == class_name_key("P1"))).all()
    assert [tuple(r) for r in rows] == [(annes[0], "m.0xtest1")]


def _smile_removed_by_ann(url: str):
    """A media item whose tag "smile" ann removed: (store, [media], the removal, its media_tag key)."""
    store = open_store(url)
    media = plain_media(store, 1)
    add_tags(store, media, ["smile"], "seed", confidence=0.5)
    removed = remove_tags(store, media, ["smile"], "ann")
    return store, media, removed, (media[0], _tag_id(store, "smile"))


# -- 4. an undo and an add of the same tag at once ---------------------------------------------------
@pytest.mark.postgres
def test_an_undo_meeting_a_tag_added_meanwhile_names_the_add(pg_url):
    store, media, removed, key = _smile_removed_by_ann(pg_url)
    bobs, undo = race(pg_url, r"INSERT INTO media_tag",
                      lambda s: add_tags(s, media, ["smile"], "bob", confidence=0.3, expected_versions={key: 0}),
                      lambda s: undo_event(s, removed.event_id, "ann"))
    assert isinstance(undo, UndoError), undo
    message = str(undo)
    at = _event(store, bobs.event_id).at
    assert message.startswith(f"operation {removed.event_id} (remove_tags) cannot be undone"), message
    assert f"first {bobs.event_id} (add_tags) by bob at {utc_text(at)}" in message, message
    assert "constraint" not in message, message
    with store() as s:
        assert s.scalars(select(MediaTag.editor).where(MediaTag.media_id == media[0])).all() == ["bob"]
        assert s.get(AuditEvent, removed.event_id).undone_by_id is None


# -- 5. smaller: version 0, a class removed or retired meanwhile ---------------------------------------
@pytest.mark.postgres
def test_a_tag_an_undo_brought_back_meanwhile_says_the_editor_saw_none(pg_url):
    store, media, removed, key = _smile_removed_by_ann(pg_url)
    undo, bobs = race(pg_url, r"INSERT INTO media_tag", lambda s: undo_event(s, removed.event_id, "ann"),
                      lambda s: add_tags(s, media, ["smile"], "bob", confidence=0.3, expected_versions={key: 0}))
    assert isinstance(bobs, ConcurrentWriteError), bobs
    assert (bobs.expected, bobs.actual, bobs.editor) == (0, 2, "ann"), vars(bobs)
    assert str(bobs).startswith(f"tag 'smile' on clip0.gif (media {media[0]}) was changed by ann at "), bobs
    assert f"in operation {undo.event_id} (undo of operation {removed.event_id})" in str(bobs)
    assert "it is at version 2, you saw no such tag (version 0); reload" in str(bobs), bobs  # was "based on version 1"


def test_a_tag_added_since_the_editor_saw_none_says_so(store_url):
    store = open_store(store_url)
    media = plain_media(store, 1)
    add_tags(store, media, ["smile"], "model", confidence=0.4, source="experts_voting", status="suggested")
    with pytest.raises(ConflictError) as refused:
        add_tags(store, media, ["smile"], "bob", expected_versions={(media[0], _tag_id(store, "smile")): 0})
    assert "changed by model at " in str(refused.value)
    assert "it is at version 1, you saw no such tag (version 0); reload it and try again" in str(refused.value)


def test_a_relabel_into_a_class_an_undo_removed_names_the_undo(store_url):
    store = open_store(store_url)
    faces = make_faces(store, 1, 2)
    n, added = add_class(store, "N", "ann")
    undone = undo_event(store, added.event_id, "ann")
    at = _event(store, undone.event_id).at
    with pytest.raises(NotFoundError) as refused:
        relabel_faces(store, faces, n, "bob", {f: 0 for f in faces})
    assert str(refused.value) == (f"no celebrity class with id {n} (removed by ann at {utc_text(at)} "
                                  f"in operation {undone.event_id} (undo of operation {added.event_id}))")
    with pytest.raises(NotFoundError, match=rf"^no celebrity class with id {n} \(removed by ann"):
        split_class(store, n, faces, "bob", new_name="M")  # a class locked by id: the same words


def test_a_split_into_a_target_retired_meanwhile_names_who_retired_it(store_url):
    store = open_store(store_url)
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "A", "seed")
    t, _ = add_class(store, "T", "seed")
    relabel_faces(store, faces, a, "seed")
    retired = retire_class(store, t, "ann")
    at = _event(store, retired.event_id).at
    with pytest.raises(ValidationError) as refused:
        split_class(store, a, faces, "bob", target_id=t)
    assert str(refused.value) == (f"split target class is retired: 'T' (class {t}) was retired by ann at "
                                  f"{utc_text(at)} in operation {retired.event_id} (set_class_status); "
                                  "split into an active class")


@pytest.mark.postgres
def test_a_class_renamed_back_by_an_undo_while_added_anew_refuses_the_later_by_name(pg_url):
    """An undo putting a class name back takes the catalog lock too: an add of that name at the same
    moment waits for it and is refused naming the class, not met at the unique key."""
    store = open_store(pg_url)
    x, _ = add_class(store, "Old", "seed")
    renamed = rename_class(store, x, "Fresh", "ann")
    undo, bobs = race(pg_url, r"UPDATE celebrity_class", lambda s: undo_event(s, renamed.event_id, "ann"),
                      lambda s: add_class(s, "old", "bob"))
    assert undo.changed == 1, undo
    _refused_as_taken(bobs, "Old", x)


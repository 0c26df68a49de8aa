"""The store under pressure: external ids, two editors at once, conflict messages, huge splits, merges.

Each test reproduces a defect an audit found (and fails without its fix). The concurrency tests run
two editors on their own PostgreSQL connections in real threads; where a deadlock needs a particular
interleaving, each editor pauses after its first locking read until the other has locked rows too or
is waiting for a lock, so the outcome never depends on timing.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any, Callable

import psycopg
import pytest
from sqlalchemy import create_engine, event, func, insert, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from labeling import audit
from labeling.audit import merge_chain, run_operation, undo_event, undo_last
from labeling.classes import _labels_of, add_class, create_class, merge_classes, set_class_status, split_class
from labeling.db import make_engine, normalise_url, open_store, session_scope
from labeling.errors import ConcurrentWriteError, ConflictError, StoreError, UndoError, ValidationError
from labeling.face_labels import Prediction, approve_faces, record_predictions, relabel_faces
from labeling.schema import AuditEvent, CelebrityClass, Face, FaceLabel, Media, MediaTag
from labeling.tags import add_tags, remove_tags, set_tag_confidences
from labeling.validation import clean_tag_name


# -- fixtures and helpers ---------------------------------------------------------------------
@pytest.fixture
def store(store_url):
    return open_store(store_url)


def make_faces(store, n_media: int, faces_per_media: int) -> list[int]:
    """Media and face rows as ingest writes them, in bulk (a split of thousands needs thousands)."""
    with session_scope(store) as s:
        first_media = s.scalar(select(func.coalesce(func.max(Media.id), 0))) + 1
        first_face = s.scalar(select(func.coalesce(func.max(Face.id), 0))) + 1
        media = [{"id": first_media + m, "sha256": f"{first_media + m:064x}", "path": f"/data/{first_media + m}.gif",
                  "kind": "gif", "status": "ok"} for m in range(n_media)]
        s.execute(insert(Media), media)
        faces = [{"id": first_face + m * faces_per_media + i, "media_id": first_media + m, "face_index": i,
                  "frame_index": i, "x1": 0, "y1": 0, "x2": 10, "y2": 10, "probability": 0.99,
                  "landmarks": [[0, 0]] * 5} for m in range(n_media) for i in range(faces_per_media)]
        if faces:  # an empty list would insert one row of defaults
            s.execute(insert(Face), faces)
        return [f["id"] for f in faces]


def snapshot(store) -> tuple:
    """Everything an operation could have written: classes, labels, tags and the audit log's length."""
    with store() as s:
        classes = s.execute(select(CelebrityClass.id, CelebrityClass.name, CelebrityClass.external_id,
                                   CelebrityClass.status, CelebrityClass.merged_into_id, CelebrityClass.version)
                            .order_by(CelebrityClass.id)).all()
        labels = s.execute(select(FaceLabel.face_id, FaceLabel.status, FaceLabel.class_id, FaceLabel.version)
                           .order_by(FaceLabel.face_id)).all()
        tags = s.execute(select(MediaTag.media_id, MediaTag.tag_id, MediaTag.version).order_by(MediaTag.id)).all()
        return classes, labels, tags, s.scalar(select(func.count()).select_from(AuditEvent))


def class_row(store, class_id: int) -> CelebrityClass:
    with store() as s:
        return s.get(CelebrityClass, class_id)


def version_of(store, face_id: int) -> int:
    with store() as s:
        return s.scalar(select(FaceLabel.version).where(FaceLabel.face_id == face_id))


def outcome_of(fn: Callable[[], Any]) -> Any:
    """What an editor would see: the result, or the exception (raw database errors included)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the point is to see which kind came out
        return exc


def run_together(**editors: Callable[[], Any]) -> dict[str, Any]:
    """Run each editor's call in its own thread at the same time; their outcomes by name."""
    outcomes: dict[str, Any] = {}
    threads = [threading.Thread(target=lambda n=n, fn=fn: outcomes.__setitem__(n, outcome_of(fn)))
               for n, fn in editors.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def assert_no_raw_errors(outcomes: dict[str, Any]) -> None:
    """Editors may be refused (a StoreError says why), never shown a database error."""
    raw = {n: f"{type(o).__name__}: {o}" for n, o in outcomes.items() if isinstance(o, Exception)
           and not isinstance(o, StoreError)}
    assert not raw, raw


class Interleaving:
    """Two editors, each on its own PostgreSQL engine, each paused right after its first locking read
    of `table` until the other editor has also locked rows there, has finished, or waits for a lock.

    That is the interleaving in which locking the same rows in different orders deadlocks; with rows
    locked in one order the second editor waits for the first instead. No clock is involved: a paused
    editor goes on as soon as the database shows the other one waiting."""

    def __init__(self, url: str, table: str, names: tuple[str, str]) -> None:
        self.url, self.table, self.names = url, table, names
        self.locked = {n: threading.Event() for n in names}
        self.done = {n: threading.Event() for n in names}
        self.monitor = create_engine(normalise_url(url))
        self.engines: list[Any] = []

    def factory(self, name: str) -> sessionmaker:
        """The store as `name` opens it, with the pause after its first locking read."""
        engine = make_engine(self.url)
        self.engines.append(engine)
        paused = []

        def after_execute(conn, cursor, statement, parameters, context, executemany) -> None:
            if not paused and "FOR UPDATE" in statement and f"FROM {self.table}" in statement:
                paused.append(True)
                self._pause(name)

        event.listen(engine, "after_cursor_execute", after_execute)
        return sessionmaker(engine, expire_on_commit=False)

    def _pause(self, name: str) -> None:
        self.locked[name].set()
        other = next(n for n in self.names if n != name)
        while not (self.locked[other].is_set() or self.done[other].is_set() or self._someone_waits_for_a_lock()):
            time.sleep(0.005)

    def _someone_waits_for_a_lock(self) -> bool:
        with self.monitor.connect() as conn:
            return bool(conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                         "AND wait_event_type = 'Lock'")))

    def run(self, **editors: Callable[[], Any]) -> dict[str, Any]:
        def marking(name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
            def call() -> Any:
                try:
                    return fn()
                finally:
                    self.done[name].set()
            return call

        return run_together(**{n: marking(n, fn) for n, fn in editors.items()})

    def close(self) -> None:
        for engine in [*self.engines, self.monitor]:
            engine.dispose()


# -- 1. one external id, one class --------------------------------------------------------------
def test_an_external_id_already_held_by_a_class_is_refused_naming_it(store):
    faces = make_faces(store, 1, 2)
    gore, _ = add_class(store, "Al Gore", "ann", external_id="m.0d05fv")
    before = snapshot(store)
    with pytest.raises(ValidationError, match=r"external id 'm\.0d05fv' already belongs to class 'Al Gore' "
                                              rf"\(id {gore}, active\)"):
        add_class(store, "Impostor", "qa", external_id="m.0d05fv", seed_face_ids=faces)
    assert snapshot(store) == before  # no class, no label, no audit event
    # the rule is about the id only: another id, or none, is fine
    other, _ = add_class(store, "Tipper Gore", "qa", external_id="m.01m6qz")
    plain, _ = add_class(store, "Someone", "qa")
    assert (class_row(store, other).external_id, class_row(store, plain).external_id) == ("m.01m6qz", None)


def test_a_retired_class_still_holds_its_external_id(store):
    old, _ = add_class(store, "Albert Gore", "ann", external_id="m.0d05fv")
    new, _ = add_class(store, "Al Gore", "ann")
    merge_classes(store, old, new, "ann")
    with pytest.raises(ValidationError, match=r"already belongs to class 'Albert Gore' .*retired"):
        add_class(store, "Al Gore Jr", "qa", external_id="m.0d05fv")


@pytest.mark.postgres
def test_two_editors_adding_one_external_id_at_once_make_one_class(pg_url):
    """No unique constraint guards the column: the second editor must wait for the first one's
    class and then be refused, not find the id free in a snapshot taken before it was committed."""
    store = open_store(pg_url)
    watch = Interleaving(pg_url, "celebrity_class", ("ann", "bob"))
    bob_store = watch.factory("bob")
    try:
        outcomes: dict[str, Any] = {}
        with run_operation(store, "ann", "add_class") as op:
            ann_class = create_class(op, "Al Gore", external_id="m.0d05fv")
            bob = threading.Thread(target=lambda: outcomes.__setitem__(
                "bob", outcome_of(lambda: add_class(bob_store, "Impostor", "bob", external_id="m.0d05fv"))))
            bob.start()
            # ann commits only once bob has either finished or waits for her
            while not (outcomes or watch._someone_waits_for_a_lock()):
                time.sleep(0.005)
        bob.join()
    finally:
        watch.close()
    assert isinstance(outcomes["bob"], ValidationError), outcomes
    assert "already belongs to class 'Al Gore'" in str(outcomes["bob"])
    with store() as s:
        assert s.execute(select(CelebrityClass.id).where(CelebrityClass.external_id == "m.0d05fv")).scalars().all() \
            == [ann_class]


# -- 2. two editors at once: no deadlock, never a raw database error --------------------------------
@pytest.mark.postgres
def test_opposite_merges_at_once_end_with_one_merge_not_a_deadlock(pg_url):
    store = open_store(pg_url)
    faces = make_faces(store, 2, 2)
    c, _ = add_class(store, "C", "ann")
    d, _ = add_class(store, "D", "ann")
    relabel_faces(store, faces[:2], c, "ann")
    relabel_faces(store, faces[2:], d, "ann")
    seen = {c: class_row(store, c).version, d: class_row(store, d).version}  # what both editors saw
    watch = Interleaving(pg_url, "celebrity_class", ("ann", "bob"))
    ann, bob = watch.factory("ann"), watch.factory("bob")
    try:
        outcomes = watch.run(ann=lambda: merge_classes(ann, c, d, "ann", expected_versions=seen),
                             bob=lambda: merge_classes(bob, d, c, "bob", expected_versions=seen))
    finally:
        watch.close()
    assert_no_raw_errors(outcomes)
    merged = [n for n, o in outcomes.items() if not isinstance(o, Exception)]
    assert len(merged) == 1, outcomes
    refused = outcomes["bob" if merged == ["ann"] else "ann"]
    assert isinstance(refused, (ConflictError, ValidationError)), refused
    source, target = (c, d) if merged == ["ann"] else (d, c)
    assert (class_row(store, source).status, class_row(store, source).merged_into_id) == ("retired", target)
    assert (class_row(store, target).status, class_row(store, target).merged_into_id) == ("active", None)
    with store() as s:
        assert set(s.scalars(select(FaceLabel.class_id).where(FaceLabel.face_id.in_(faces)))) == {target}


@pytest.mark.postgres
def test_a_bulk_relabel_and_its_reverse_at_once_do_not_deadlock(pg_url, monkeypatch):
    """Rows are locked chunk by chunk (5,000 per chunk; 40 here so that 120 faces make three chunks):
    a selection and the same selection reversed used to lock disjoint first chunks, then each
    waited for the other's."""
    monkeypatch.setattr(audit, "CHUNK", 40)
    store = open_store(pg_url)
    faces = make_faces(store, 12, 10)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    relabel_faces(store, faces, a, "ann")
    watch = Interleaving(pg_url, "face_label", ("ann", "bob"))
    ann, bob = watch.factory("ann"), watch.factory("bob")
    try:
        outcomes = watch.run(ann=lambda: relabel_faces(ann, faces, b, "ann"),
                             bob=lambda: relabel_faces(bob, faces[::-1], a, "bob"))
    finally:
        watch.close()
    assert_no_raw_errors(outcomes)
    assert all(not isinstance(o, Exception) or isinstance(o, ConcurrentWriteError) for o in outcomes.values()), outcomes
    with store() as s:  # one editor's decision holds for every face: never half of each
        assert len(set(s.scalars(select(FaceLabel.class_id).where(FaceLabel.face_id.in_(faces))))) == 1


@pytest.mark.postgres
def test_a_deadlock_between_two_operations_is_a_concurrent_write_error(pg_url):
    """Operations that lock in two steps can still deadlock each other; PostgreSQL then stops one of
    them, and that editor reads a conflict to retry, while the other's change is saved."""
    store = open_store(pg_url)
    c, _ = add_class(store, "C", "ann")
    d, _ = add_class(store, "D", "ann")
    locked = {"ann": threading.Event(), "bob": threading.Event()}

    def lock_in_turn(name: str, first: int, second: int, other: str) -> str:
        with run_operation(store, name, "set_display_names") as op:
            rows = op.load("class", [(first,)])
            locked[name].set()
            locked[other].wait()
            rows.update(op.load("class", [(second,)]))
            op.update("class", {key: {"display_name": f"seen by {name}"} for key in rows}, rows)
        return "saved"

    outcomes = run_together(ann=lambda: lock_in_turn("ann", c, d, "bob"), bob=lambda: lock_in_turn("bob", d, c, "ann"))
    assert_no_raw_errors(outcomes)
    assert sorted(o if isinstance(o, str) else type(o).__name__ for o in outcomes.values()) == \
        ["ConcurrentWriteError", "saved"], outcomes
    stopped = next(o for o in outcomes.values() if isinstance(o, Exception))
    assert "nothing of yours was saved" in str(stopped) and "try again" in str(stopped)
    winner = next(n for n, o in outcomes.items() if o == "saved")
    assert {class_row(store, c).display_name, class_row(store, d).display_name} == {f"seen by {winner}"}


def test_a_serialization_failure_is_a_concurrent_write_error_and_other_errors_stay(store):
    before = snapshot(store)
    failure = OperationalError("UPDATE face_label ...", {}, psycopg.errors.SerializationFailure("could not serialize"))
    with pytest.raises(ConcurrentWriteError, match="try again"):
        with run_operation(store, "ann", "approve_faces") as op:
            create_class(op, "Half written")
            raise failure
    assert snapshot(store) == before
    other = OperationalError("SELECT nothing", {}, sqlite3.OperationalError("no such table: nothing"))
    with pytest.raises(OperationalError, match="no such table"):  # not a collision: not disguised as one
        with run_operation(store, "ann", "approve_faces"):
            raise other


def test_a_store_locked_past_the_busy_timeout_is_a_concurrent_write_error(tmp_path):
    """SQLite: another writer holds the store longer than the wait allows ("database is locked")."""
    path = tmp_path / "store.db"
    store = open_store(f"sqlite:///{path}")
    a, _ = add_class(store, "A", "ann")
    engine = make_engine(f"sqlite:///{path}")
    event.listen(engine, "connect", lambda dbapi_connection, _record: dbapi_connection.execute("PRAGMA busy_timeout=0"))
    impatient = sessionmaker(engine, expire_on_commit=False)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ConcurrentWriteError, match="try again"):
            add_class(impatient, "B", "bob")
        with pytest.raises(ConcurrentWriteError, match="try again"):
            undo_last(impatient, "ann")
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()
    assert class_row(store, a).name == "A"


# -- 3. conflict messages name who really changed (or removed) the entity -------------------------------
def test_a_model_refresh_is_blamed_on_the_model_not_on_the_editor_who_decided(store):
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    approve_faces(store, faces, "ann", class_id=a)
    seen = version_of(store, faces[0])
    prediction = record_predictions(store, [Prediction(faces[0], b, 0.7, [(b, 0.7)])], "v2", editor="model-run")
    with store() as s:
        at = s.get(AuditEvent, prediction.event_id).at
    with pytest.raises(ConflictError, match=rf"face {faces[0]} was changed by model-run at .* in operation "
                                            rf"{prediction.event_id} \(predict_faces\).*version {seen + 1}.*version "
                                            rf"{seen}") as refused:
        relabel_faces(store, faces, b, "bob", expected_versions={faces[0]: seen})
    assert "ann" not in str(refused.value)
    assert (refused.value.editor, refused.value.at) == ("model-run", at)


def test_a_tag_removed_since_is_named_as_removed_by_whom(store):
    make_faces(store, 1, 0)
    with store() as s:
        media = s.scalar(select(Media.id))
    add_tags(store, [media], ["smile"], "ann", confidence=0.5)
    with store() as s:
        tag_id, seen = s.execute(select(MediaTag.tag_id, MediaTag.version)).one()
    removal = remove_tags(store, [media], ["smile"], "bob")
    with pytest.raises(ConflictError, match=rf"tag 'smile' on {media}\.gif \(media {media}\) was removed by bob at .* "
                                            rf"in operation {removal.event_id} \(remove_tags\); your edit was based "
                                            rf"on version {seen} of it") as refused:
        set_tag_confidences(store, [(media, "smile", 0.9)], "ann", expected_versions={(media, tag_id): seen})
    assert "another process" not in str(refused.value) and refused.value.editor == "bob"


def test_a_label_undone_since_is_named_as_removed_by_the_undo(store):
    faces = make_faces(store, 1, 1)
    a, _ = add_class(store, "A", "ann")
    relabeled = relabel_faces(store, faces, a, "ann")
    seen = version_of(store, faces[0])
    undone = undo_event(store, relabeled.event_id, "bob")
    with pytest.raises(ConflictError, match=rf"the label of face {faces[0]} was removed by bob at .* in operation "
                                            rf"{undone.event_id} \(undo of operation {relabeled.event_id}\)"):
        approve_faces(store, faces, "ann", class_id=a, expected_versions={faces[0]: seen})
    assert version_of(store, faces[0]) is None  # nothing written


# -- 4. splits of any size ----------------------------------------------------------------------
def test_a_split_binds_at_most_one_chunk_of_face_ids_per_statement(store):
    """PostgreSQL refuses a statement with more than 65,535 parameters, so a split of 70,000 faces
    failed; here 6,000 faces (more than one chunk of 5,000) show whether the ids go in chunks."""
    faces = make_faces(store, 600, 10)
    a, _ = add_class(store, "A", "ann")
    relabel_faces(store, faces, a, "ann")
    engine, widest = store.kw["bind"], [0]

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        rows = parameters if executemany else [parameters]
        widest[0] = max(widest[0], *(len(row or ()) for row in rows))

    event.listen(engine, "before_cursor_execute", count)
    try:
        new_id, result = split_class(store, a, faces, "bob", new_name="A2")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert result.changed == len(faces) + 1
    assert widest[0] <= audit.CHUNK + 2, widest  # a chunk of ids, and the class id twice
    with store() as s:
        assert set(s.scalars(select(FaceLabel.class_id))) == {new_id}
        assert _labels_of(s, new_id, faces[::-1], chunk_size=7) == _labels_of(s, new_id) == sorted(faces)
        assert _labels_of(s, new_id, [*faces[:3], faces[0]], chunk_size=2) == sorted(faces[:3])


# -- 5. merges never make a cycle ---------------------------------------------------------------
def test_a_merged_class_made_active_again_is_no_longer_merged(store):
    b, _ = add_class(store, "B", "ann")
    c, _ = add_class(store, "C", "ann")
    merge_classes(store, b, c, "ann")
    reactivated = set_class_status(store, b, "active", "ann")
    assert (class_row(store, b).status, class_row(store, b).merged_into_id) == ("active", None)
    with store() as s:  # audited like every change, so undo can restore it
        entry = s.get(AuditEvent, reactivated.event_id)
        assert entry.before[f"class:{b}"]["merged_into_id"] == c and entry.after[f"class:{b}"]["merged_into_id"] is None
    merge_classes(store, c, b, "ann")  # the other way round now: C goes into B, and nothing goes round
    with store() as s:
        assert merge_chain(s, c) == [c, b] and merge_chain(s, b) == [b]
    before = snapshot(store)
    with pytest.raises(UndoError, match=r"would merge class 'B' into 'C' again, but 'C' has been merged into 'B' since"):
        undo_event(store, reactivated.event_id, "ann")
    assert snapshot(store) == before


def test_undoing_a_reactivation_restores_the_merge(store):
    b, _ = add_class(store, "B", "ann")
    c, _ = add_class(store, "C", "ann")
    merge_classes(store, b, c, "ann")
    reactivated = set_class_status(store, b, "proposed", "ann")
    assert class_row(store, b).merged_into_id is None
    undo_event(store, reactivated.event_id, "ann")
    assert (class_row(store, b).status, class_row(store, b).merged_into_id) == ("retired", c)


def test_a_merge_that_would_make_a_cycle_is_refused(store):
    """A store written before reactivation cleared the link may hold an active class still recorded as
    merged into another; merging that other class into it would make each point at the other."""
    b, _ = add_class(store, "B", "ann")
    c, _ = add_class(store, "C", "ann")
    with session_scope(store) as s:
        s.execute(update(CelebrityClass).where(CelebrityClass.id == b).values(merged_into_id=c))
    before = snapshot(store)
    with pytest.raises(ValidationError, match=r"class 'B' is recorded as merged into 'C' .*cycle"):
        merge_classes(store, c, b, "ann")
    assert snapshot(store) == before


# -- tags: the same hidden-character rule as class names and editors ------------------------------
@pytest.mark.parametrize("raw, reason", [
    ("smile\ud800", r"contains control characters \['0xd800'\]"),  # a lone surrogate: not UTF-8, PostgreSQL refuses it
    ("smile\x00", r"contains control characters \['0x0'\]"),
    ("evil\u202etxt", "bidirectional"),
])
def test_a_tag_with_a_hidden_character_is_refused_before_anything_is_written(store, raw, reason):
    make_faces(store, 1, 0)
    with store() as s:
        media = s.scalar(select(Media.id))
    before = snapshot(store)
    with pytest.raises(ValidationError, match=rf"^tag .*{reason}"):
        add_tags(store, [media], [raw], "ann")
    assert snapshot(store) == before
    assert clean_tag_name("ok\u200d👍") == "ok\u200d👍"  # emoji glue stays, as in class names

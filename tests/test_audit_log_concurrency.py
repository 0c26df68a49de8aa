"""The audit log under real concurrency, and the history of a track after bulk runs.

1. An undo waiting for the locks of rows another editor is relabeling used to look the later operations
   up before it waited: the other editor's operation, committed meanwhile, was then reported as a change
   "outside the audited operations" of "face:1". It is refused naming that operation, its editor and when.
2. Two editors saving the first label of the same face (both saw version 0): the second met the unique
   key and read "another editor saved a label ... at the same moment", naming nobody. It is refused as a
   stale edit is, naming who saved it, when and in which operation (still a ConcurrentWriteError).
3. A track's history extracts its faces' snapshots in SQL; the frame is what whole events gave.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pytest
from conftest import make_faces
from sqlalchemy import select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker
from test_curation import make_track

from labeling.audit import run_operation, undo_event
from labeling.classes import add_class
from labeling.db import make_engine, open_store
from labeling.errors import ConcurrentWriteError, ConflictError, UndoError
from labeling.face_labels import Prediction, apply_decision, record_predictions, relabel_faces
from labeling.queries import HISTORY_COLUMNS, track_history_frame
from labeling.schema import AuditEvent, FaceLabel
from labeling.validation import class_name_key


@contextmanager
def own_store(url: str) -> Iterator[sessionmaker]:
    """The store on an engine of its own, as another editor's process has (open_store shares one)."""
    engine = make_engine(url)
    try:
        yield sessionmaker(engine, expire_on_commit=False)
    finally:
        engine.dispose()


def outcome_of(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - which refusal came out is the point
        return exc


def wait_for_a_lock_wait(url: str) -> None:
    """Until some session of this PostgreSQL database waits for a lock (the second editor is blocked
    behind the first one's open transaction). No clock: the database says when."""
    with own_store(url) as monitor:
        while True:
            with monitor() as s:
                if s.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock'")):
                    return


def held_open(url: str, editor: str, write: Callable[[Any], None]) -> tuple[threading.Thread, threading.Event,
                                                                            threading.Event, dict[str, Any]]:
    """`write(op)` in an operation of `editor` on its own engine, held open until `release` is set:
    (thread, written, release, out) with out["result"] the OperationResult once committed."""
    written, release, out = threading.Event(), threading.Event(), {}

    def run() -> None:
        with own_store(url) as store:
            try:
                with run_operation(store, editor, "relabel_faces") as op:
                    write(op)
                    written.set()
                    release.wait()
                out["result"] = op.result
            except Exception as exc:  # noqa: BLE001
                out["result"] = exc
                written.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, written, release, out


def race(url: str, editor: str, write: Callable[[Any], None], second: Callable[[sessionmaker], Any],
         wait_for_lock: bool = True) -> tuple[Any, Any]:
    """`write` held open by `editor` (`held_open`) while `second(store)` runs on another engine, released once
    the second waits for a lock (PostgreSQL; SQLite's second transaction waits for the file lock unseen):
    (what second returned or raised, the first operation's result)."""
    thread, written, release, out = held_open(url, editor, write)
    written.wait()
    got: dict[str, Any] = {}

    def run() -> None:
        with own_store(url) as other:
            got["outcome"] = outcome_of(lambda: second(other))

    runner = threading.Thread(target=run)
    runner.start()
    if wait_for_lock:
        wait_for_a_lock_wait(url)
    release.set()
    thread.join()
    runner.join()
    return got["outcome"], out["result"]


# -- 1. an undo and an in-flight edit of the same faces ----------------------------------------------
@pytest.mark.postgres
def test_an_undo_waiting_for_an_edit_in_flight_names_that_edit(pg_url):
    store = open_store(pg_url)
    faces = make_faces(store, 1, 4)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    mine = relabel_faces(store, faces, a, "alice").event_id
    refused, bobs_result = race(pg_url, "bob", lambda op: apply_decision(op, faces, "relabel", b),
                                lambda other: undo_event(other, mine, "alice"))  # alice's undo waits for bob's faces
    bobs = bobs_result.event_id
    assert isinstance(refused, UndoError), refused
    message = str(refused)
    with store() as s:
        at = s.get(AuditEvent, bobs).at
    assert f"operation {mine} (relabel_faces) cannot be undone" in message, message
    assert f"first {bobs} (relabel_faces) by bob at" in message and f"{at:%Y-%m-%d}" in message, message
    assert f"face {faces[0]}" in message and "face:" not in message, message
    assert "outside the audited operations" not in message, message
    with store() as s:  # bob's relabel stands, alice's operation is not undone
        assert set(s.scalars(select(FaceLabel.class_id).where(FaceLabel.face_id.in_(faces)))) == {b}
        assert s.get(AuditEvent, mine).undone_by_id is None


def test_a_change_outside_the_operations_names_the_face_as_editors_know_it(store_url):
    store = open_store(store_url)
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    mine = relabel_faces(store, faces, a, "alice").event_id
    with store.begin() as s:  # a write no operation recorded (a script, a manual fix)
        s.execute(update(FaceLabel).where(FaceLabel.face_id == faces[1]).values(class_id=b))
    with pytest.raises(UndoError) as refused:
        undo_event(store, mine, "alice")
    assert str(refused.value) == (f"operation {mine} cannot be undone: face {faces[1]} changed since "
                                  "(outside the audited operations)")


# -- 2. first labels of the same faces, saved at once -------------------------------------------------
def test_a_first_label_saved_by_another_editor_meanwhile_names_them(store_url):
    """On PostgreSQL bob's insert waits for alice's and then meets the unique key; on SQLite bob's
    transaction waits for alice's and then reads her labels. Either way bob reads who saved them."""
    store = open_store(store_url)
    faces = make_faces(store, 2, 6)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    theirs, mine = faces[0:8], faces[4:12]
    refused, alices_result = race(
        store_url, "alice", lambda op: apply_decision(op, theirs, "relabel", a, {f: 0 for f in theirs}),
        lambda other: relabel_faces(other, mine, b, "bob", {f: 0 for f in mine}),
        wait_for_lock=store_url.startswith("postgresql"))  # bob's first insert waits on alice's uncommitted label
    alices = alices_result.event_id
    assert isinstance(refused, ConflictError), refused
    if store_url.startswith("postgresql"):
        assert isinstance(refused, ConcurrentWriteError), refused  # the type callers of a collision know
    with store() as s:
        at = s.get(AuditEvent, alices).at
    assert (refused.entity, refused.expected, refused.actual) == (f"face {faces[4]}", 0, 1), vars(refused)
    assert (refused.editor, refused.at) == ("alice", at)
    assert str(refused).startswith(f"face {faces[4]} was changed by alice at "), refused
    assert f"in operation {alices} (relabel_faces)" in str(refused) and "you saw no such label (version 0)" in str(refused)
    with store() as s:  # alice's labels, nothing of bob's
        got = dict(s.execute(select(FaceLabel.face_id, FaceLabel.editor).where(FaceLabel.face_id.in_(faces))).all())
    assert got == {f: "alice" for f in theirs}


@pytest.mark.postgres
def test_a_collision_whose_winner_cannot_be_found_keeps_the_general_refusal(pg_url):
    """Two new classes of one name: the class bob was creating has no key the other holds (its id is
    new), so nobody can be named; the refusal stays the one that says what both saved. (`create_class`
    takes the class catalog lock, so bob would wait and read "a class named ... already exists": alice's
    class is written here as a writer without that lock would, e.g. a script.)"""
    open_store(pg_url)  # migrated
    refused, _ = race(pg_url, "alice", lambda op: op.insert_one("class", {
                          "name": "Brad Pitt", "name_key": class_name_key("Brad Pitt"), "status": "active",
                          "created_at": op.now, "updated_by": op.editor}),
                      lambda other: add_class(other, "brad pitt", "bob"))
    assert isinstance(refused, ConcurrentWriteError), refused
    assert str(refused).startswith("another editor saved a class of the same name at the same moment"), refused
    assert (refused.editor, refused.at) == (None, None)


@pytest.mark.postgres
def test_a_collision_whose_winner_cannot_be_looked_up_is_still_a_conflict(pg_url):
    """Naming the winner reads the store once more after the rollback; when that read fails (the server
    went away, the pool is exhausted) bob still gets the conflict, not the failure of the courtesy."""
    store = open_store(pg_url)
    faces = make_faces(store, 1, 2)
    a, _ = add_class(store, "A", "ann")

    def failing_after_the_first(other: sessionmaker) -> Callable[..., Any]:
        calls = {"n": 0}

        def factory(**kwargs: Any):
            calls["n"] += 1
            if calls["n"] > 1:
                raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
            return other(**kwargs)
        return factory

    refused, _ = race(pg_url, "alice", lambda op: apply_decision(op, faces, "relabel", a, {f: 0 for f in faces}),
                      lambda other: relabel_faces(failing_after_the_first(other), faces, a, "bob", {f: 0 for f in faces}))
    assert isinstance(refused, ConcurrentWriteError), refused
    assert "at the same moment" in str(refused), refused


# -- 3. a track's history after bulk runs -------------------------------------------------------------
def expected_history(store, keys: list[str]) -> list[tuple]:
    """The track's history as whole events give it (what the frame held before keys were extracted in SQL)."""
    with store() as s:
        events = s.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).all()
        return [(e.id, e.at, e.editor, e.operation, e.summary,
                 {k: e.before[k] for k in keys if k in (e.before or {})},
                 {k: e.after[k] for k in keys if k in (e.after or {})}, e.undone_by_id)
                for e in events if set(keys) & ({*(e.before or {}), *(e.after or {})} | concerned(s, e.id))]


def concerned(session, event_id: int) -> set[str]:
    from labeling.schema import AuditEntity

    return set(session.scalars(select(AuditEntity.key).where(AuditEntity.event_id == event_id)))


def test_a_tracks_history_after_bulk_runs_is_what_whole_events_give(store_url):
    store = open_store(store_url)
    faces = make_faces(store, 3, 6)
    a, _ = add_class(store, "A", "ann")
    b, _ = add_class(store, "B", "ann")
    members = faces[6:10]
    track_id = make_track(store, members)
    relabel_faces(store, members[:2], a, "ann")  # first labels: created rows (before None)
    runs = []
    for run in range(3):
        c, o = (a, b) if run % 2 == 0 else (b, a)
        runs.append(record_predictions(store, [Prediction(f, c, 0.6, [(c, 0.6), (o, 0.4)]) for f in faces],
                                       f"m{run}", "model").event_id)
    undo_event(store, runs[-1], "ann")
    relabel_faces(store, members, b, "bob")
    relabel_faces(store, faces[:3], a, "ann")  # not the track's
    frame = track_history_frame(store, track_id)
    keys = [f"face:{f}" for f in members]
    want = expected_history(store, keys)
    assert list(frame.columns) == HISTORY_COLUMNS
    got = [tuple(None if isinstance(v, float) and v != v else v for v in row) for row in frame.itertuples(index=False)]
    assert [tuple(r) for r in got] == want
    assert len(want) == 6 and want[-1][5] == {keys[0]: None, keys[1]: None}  # created rows: None before
    assert track_history_frame(store, track_id, limit=2)["event_id"].tolist() == [w[0] for w in want[:2]]

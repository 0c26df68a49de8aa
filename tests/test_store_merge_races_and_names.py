"""Store defects, each failing without its fix: an undo racing a merge of the class
it restores (PostgreSQL), a raw-dataset import or a multi-track approval deadlocking against a merge
(PostgreSQL), recorded_versions reading every event that ever wrote a key, stale track predictions
pinning a class's creation, names of scripts that need joiners and selectors refused, names stored
before the invisible-character rule unreachable, predictions naming classes merged or retired since
the fit, and the open-set threshold's cap (said when there is none; the same in the bias audit)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_faces
from sqlalchemy import event, func, select, update

from labeling.audit import recorded_versions, undo_event
from labeling.classes import add_class, find_class, merge_classes, rename_class, retire_class
from labeling.db import open_store, session_scope
from labeling.errors import UndoError, ValidationError
from labeling.face_labels import Prediction, approve_faces, label_tracks, record_predictions, reject_faces
from labeling.schema import (CelebrityClass, Face, FaceEmbedding, FaceLabel, MediaTag, Tag, Track,
                             utcnow)
from labeling.tags import add_tags, remove_tags, set_tag_status
from models.celebrity_classifier import (UNKNOWN, CalibrationWarning, CentroidKnnClassifier,
                                         held_out_centroid_predictions, PRIOR_THRESHOLD)

import test_store_versions_and_undo_refusals
from test_store_versions_and_undo_refusals import class_row, n_events, race

store = test_store_versions_and_undo_refusals.store  # the fixture: a store on each of SQLite and PostgreSQL

DLIB = "dlib-resnet-v1"


def label(store, face_id: int) -> tuple | None:
    """(status, class id, predicted class id, source) of a face's label, None without one."""
    with store() as s:
        row = s.scalars(select(FaceLabel).where(FaceLabel.face_id == face_id)).first()
        return None if row is None else (row.status, row.class_id, row.predicted_class_id, row.source)


# -- 1. an undo racing a merge of the class it puts a decision back on ----------------------------------
@pytest.mark.postgres
def test_an_undo_racing_a_merge_of_the_class_it_restores_is_refused(pg_url):
    """ann undoes her rejection (putting the face back on Alice) while bob's merge of Alice into Bob has
    locked both classes and is about to commit. Unlocked, her undo read Alice active and the confirmed
    label landed on a class retired a moment later; locked FOR SHARE first, it waits and is refused."""
    store = open_store(pg_url)
    faces = make_faces(store, 2, 1)
    alice, _ = add_class(store, "Alice", "ed")
    bob, _ = add_class(store, "Bob", "ed")
    approve_faces(store, [faces[0]], "ed", class_id=alice)
    approve_faces(store, [faces[1]], "ann", class_id=alice)
    rejected = reject_faces(store, [faces[1]], "ann")
    merged, undone = race(pg_url, lambda merging: merge_classes(merging, alice, bob, "bob"),
                          lambda: undo_event(store, rejected.event_id, "ann"))
    assert not isinstance(merged, Exception), merged
    assert isinstance(undone, UndoError) and "merged into 'Bob'" in str(undone), undone
    assert label(store, faces[1])[:2] == ("rejected", None)
    assert label(store, faces[0])[:2] == ("approved", bob)


def test_the_undo_still_restores_a_decision_on_a_live_class(store):
    faces = make_faces(store, 1, 1)
    alice, _ = add_class(store, "Alice", "ed")
    approve_faces(store, faces, "ann", class_id=alice)
    rejected = reject_faces(store, faces, "ann")
    undo_event(store, rejected.event_id, "ann")
    assert label(store, faces[0])[:2] == ("approved", alice)


# -- 2. classes before faces: an import or a multi-track approval against a merge -------------------------
PEOPLE = ["Ariel_Sharon", "Hugo_Chavez"]


def make_raw_dataset(root: Path, lfw_dir: Path) -> Path:
    """GIPHY's layout (labels.csv + raw_dataset/<Label>/*.jpg), one LFW photo per person."""
    (root / "raw_dataset").mkdir(parents=True)
    (root / "labels.csv").write_text("Label,Index\n" + "".join(f"{p},{i}\n" for i, p in enumerate(PEOPLE)))
    for person in PEOPLE:
        (root / "raw_dataset" / person).mkdir()
        photo = sorted((lfw_dir / person).glob("*.jpg"))[0]
        (root / "raw_dataset" / person / photo.name).write_bytes(photo.read_bytes())
    return root


@pytest.mark.postgres
@pytest.mark.slow
def test_a_raw_dataset_import_racing_a_merge_of_the_faces_predicted_class_does_not_deadlock(pg_url, tmp_path, lfw_dir):
    """The model predicted the photos as Zed; the import approves them as their people while bob merges
    Zed into Wes. The import locked the faces, then (per class) the classes; the merge locks the classes,
    then the faces: a deadlock, one of them refused. Classes locked before the faces, the merge waits."""
    from labeling.importers import import_raw_dataset
    from labeling.ingest import ingest
    from models.settings import Settings

    store = open_store(pg_url)
    settings = Settings(data_dir=tmp_path / "data", database_url=pg_url)
    raw = make_raw_dataset(tmp_path / "giphy", lfw_dir)
    ingest(sorted(raw.rglob("*.jpg")), settings, store=store, editor="ed")
    with store() as s:
        faces = list(s.scalars(select(Face.id).order_by(Face.id)))
    assert len(faces) == 2
    zed, _ = add_class(store, "Zed", "ed")
    wes, _ = add_class(store, "Wes", "ed")
    record_predictions(store, [Prediction(f, zed, 0.9, [(zed, 0.9)]) for f in faces], "v1")
    imported, merged = race(pg_url, lambda importing: import_raw_dataset(importing, raw, settings, editor="importer"),
                            lambda: merge_classes(store, zed, wes, "bob"))
    assert not isinstance(imported, Exception), imported
    assert not isinstance(merged, Exception), merged
    assert imported.labels == 2
    people = {class_row(store, label(store, f)[1]).name for f in faces}
    assert people == {"Ariel Sharon", "Hugo Chavez"}
    assert all(label(store, f)[2] == wes for f in faces)  # the merge moved the guesses once the import committed


def two_tracks(store, predicted: list[int], said: list[int]) -> list[int]:
    """Two one-GIF tracks of two faces; the faces of track i predicted as predicted[i] (model v1), and the
    track itself as said[i] (what approving the track approves)."""
    faces = make_faces(store, 2, 2)
    with session_scope(store) as s:
        tracks = []
        for i in range(2):
            track = Track(media_id=i + 1, model_id=DLIB, track_index=0, n_faces=2, vector=b"\0" * 8)
            s.add(track)
            s.flush()
            for f in faces[2 * i : 2 * i + 2]:
                s.add(FaceEmbedding(face_id=f, model_id=DLIB, dim=2, vector=b"\0" * 8, track_id=track.id))
            tracks.append(track.id)
    record_predictions(store, [Prediction(f, predicted[i // 2], 0.9, [(predicted[i // 2], 0.9)])
                               for i, f in enumerate(faces)], "v1")
    with session_scope(store) as s:  # what refresh_predictions writes after the faces
        s.execute(update(Track), [{"id": t, "predicted_class_id": c, "predicted_top": [[c, 0.9]], "model_version": "v1",
                                   "predicted_at": utcnow(), "prediction_method": "mean"} for t, c in zip(tracks, said)])
    return tracks


@pytest.mark.postgres
def test_approving_two_tracks_racing_a_merge_of_their_classes_does_not_deadlock(pg_url):
    """Track 1 is Sam, track 2 Tom (Tom's class id is the lower). ann approves both while bob merges Sam
    into Tom. Per track, ann locked Sam, track 1's faces, then Tom; bob locks Tom, then Sam: a deadlock.
    Every track's classes locked up front, in id order, bob waits for ann."""
    store = open_store(pg_url)
    tom, _ = add_class(store, "Tom", "ed")
    sam, _ = add_class(store, "Sam", "ed")
    tracks = two_tracks(store, [sam, tom], [sam, tom])
    approved, merged = race(pg_url, lambda approving: label_tracks(approving, tracks, "approve", "ann"),
                            lambda: merge_classes(store, sam, tom, "bob"))
    assert not isinstance(approved, Exception), approved
    assert not isinstance(merged, Exception), merged
    with store() as s:
        rows = s.execute(select(FaceLabel.status, FaceLabel.class_id)).all()
    assert sorted(rows) == [("approved", tom)] * 4  # ann's approvals, then the merge moved Sam's to Tom


# -- 3. recorded_versions reads the latest event of each key only ----------------------------------------
def test_recorded_versions_reads_only_the_latest_event_of_each_key(store):
    """Six prediction runs over the same faces, each undone: the labels were created and removed six times.
    The next run's versions continue from 6, read from the last undo alone: reading the snapshots of every
    event that ever wrote the keys made each run slower than the one before."""
    faces = make_faces(store, 2, 5)
    alice, _ = add_class(store, "Alice", "ed")
    bob, _ = add_class(store, "Bob", "ed")
    for i in range(6):
        run = record_predictions(store, [Prediction(f, (alice, bob)[i % 2], 0.9, [(alice, 0.9)]) for f in faces], f"v{i}")
        undo_event(store, run.event_id, "ed")
    engine = store.kw["bind"]
    events_read: list[int] = []

    def spy(conn, cursor, statement, parameters, context, executemany) -> None:
        if "FROM audit_event" in statement and "before" in statement:
            events_read.append(len(parameters))

    event.listen(engine, "before_cursor_execute", spy)
    try:
        with store() as s:
            versions = recorded_versions(s, "face", [(f,) for f in faces])
    finally:
        event.remove(engine, "before_cursor_execute", spy)
    assert versions == {(f,): 6 for f in faces}
    assert events_read == [1]  # one statement, binding one event id: the last undo
    record_predictions(store, [Prediction(f, alice, 0.9, [(alice, 0.9)]) for f in faces], "v6")
    with store() as s:
        assert set(s.scalars(select(FaceLabel.version))) == {7}


# -- 4. a stale track prediction does not pin a class's creation ------------------------------------------
def test_undoing_a_class_is_not_refused_for_a_track_prediction_an_undone_refresh_left(store):
    """A refresh named Carol for a track; the refresh was undone, so the track's prediction is read
    nowhere. Undoing Carol's creation is no longer refused for it, and the stale prediction is cleared
    with the class (its id could be handed to the next class)."""
    alice, _ = add_class(store, "Alice", "ed")
    carol, created = add_class(store, "Carol (typo)", "ed")
    faces = make_faces(store, 1, 2)
    with session_scope(store) as s:
        track = Track(media_id=1, model_id=DLIB, track_index=0, n_faces=2, vector=b"\0" * 8)
        s.add(track)
        s.flush()
        for f in faces:
            s.add(FaceEmbedding(face_id=f, model_id=DLIB, dim=2, vector=b"\0" * 8, track_id=track.id))
        track_id = track.id
    refresh = record_predictions(store, [Prediction(f, carol, 0.9, [(carol, 0.9), (alice, 0.1)]) for f in faces], "v1")
    with session_scope(store) as s:
        s.execute(update(Track), [{"id": track_id, "predicted_class_id": carol, "predicted_top": [[carol, 0.9], [alice, 0.1]],
                                   "model_version": "v1", "predicted_at": utcnow(), "prediction_method": "mean"}])
    undo_event(store, refresh.event_id, "ed")
    undo_event(store, created.event_id, "ed")
    assert class_row(store, carol) is None
    with store() as s:
        track = s.get(Track, track_id)
        assert (track.predicted_class_id, track.predicted_top, track.model_version) == (None, None, None)


def test_a_current_track_prediction_still_pins_the_class(store):
    """The refresh that named Carol for the tracks stands (its faces carry its model version): her
    creation stays pinned by the tracks alone (the faces themselves were predicted Alice)."""
    alice, _ = add_class(store, "Alice", "ed")
    carol, created = add_class(store, "Carol", "ed")
    two_tracks(store, [alice, alice], [carol, carol])
    with pytest.raises(UndoError, match=r"class 'Carol' \(id \d+\) is named by the predictions of 2 face track\(s\)"):
        undo_event(store, created.event_id, "ed")


# -- 5. names of scripts that need joiners and selectors; invisible padding still refused -------------------
REAL_NAMES = {
    "Malayalam chillu": "\u0d2e\u0d4b\u0d39\u0d28\u0d4d\u200d\u0d32\u0d3e\u0d32\u0d4d\u200d",
    "Bengali ya-phala": "\u09b0\u200d\u09cd\u09af\u09be\u09af\u09bc\u09be\u09a8 \u0997\u09b8\u09b2\u09bf\u0982",
    "Japanese ideographic variant": "\u845b\U000e0100\u98fe \u5317\u658e",
    "Mongolian free variation selector": "\u182e\u180b\u1823\u1829\u182d\u1824\u182f",
    "text-style emoji": "\u263a\ufe0e Smile",
    "Arabic joining form at the end": "\u0645\u062d\u0645\u062f \u0647\u200d",
    "Persian ZWNJ": "\u0641\u0631\u0648\u063a \u0641\u0631\u062e\u200c\u0632\u0627\u062f",
    "England flag": "\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F Fans",
    "Sinhala": "\u0dc1\u0dca\u200d\u0dbb\u0dd3 Lanka",
    "family emoji": "The \U0001F468\u200d\U0001F469\u200d\U0001F467 Family",
    "keycap": "Keycap 1\ufe0f\u20e3",
}
PADDED = ["Alice\u2800", "Alice\u3164", "Ali\u034fce", "Alice\ufe00", "Alice\ufe0e", "Alice\U000E0100", "Alice\u115f",
          "smile\u200d", "smile\ufe0f", "Ali\u200dce", "Ali\u200cce", "\u200cAlice", "Alice\u180b", "Alice\U000E0067",
          "\U0001F3F4\U000E0067 Alice"]


@pytest.mark.parametrize("name", REAL_NAMES.values(), ids=REAL_NAMES.keys())
def test_real_names_with_joiners_and_selectors_are_classes_and_tags(store, name):
    class_id, _ = add_class(store, name, "ann")
    assert class_row(store, class_id).name == name
    media = 1
    make_faces(store, 1, 1)
    add_tags(store, [media], [name], "ann")
    with store() as s:
        assert s.scalar(select(func.count()).select_from(MediaTag)) == 1


@pytest.mark.parametrize("twin", PADDED)
def test_invisible_padding_is_still_refused_for_classes_and_tags(store, twin):
    make_faces(store, 1, 1)
    events = n_events(store)
    with pytest.raises(ValidationError, match=r"^class name .* contains invisible characters"):
        add_class(store, twin, "bob")
    with pytest.raises(ValidationError, match=r"^tag .* contains invisible characters"):
        add_tags(store, [1], [twin], "bob")
    assert n_events(store) == events


# -- 6. names stored before the rule stay reachable -----------------------------------------------------
def test_names_stored_before_the_invisible_character_rule_can_still_be_addressed(store):
    """A tag 'brad\\u200dpitt' and a class 'Brad\\u200dPitt' written by an older giflens: lookups (remove,
    reject, find, adding the tag elsewhere, a display-name change) work; only a new name is checked."""
    make_faces(store, 2, 1)
    with session_scope(store) as s:
        s.add(Tag(name="brad\u200dpitt", created_at=utcnow()))
        s.flush()
        tag_id = s.scalar(select(Tag.id))
        for media in (1, 2):
            s.add(MediaTag(media_id=media, tag_id=tag_id, source="uploader", status="active", confidence=1.0,
                           version=1, updated_at=utcnow()))
        s.add(CelebrityClass(name="Brad\u200dPitt", name_key="bradpitt", status="active", version=1,
                             created_at=utcnow(), updated_at=utcnow()))
    set_tag_status(store, [(1, "brad\u200dpitt")], "rejected", "ed")
    remove_tags(store, [2], ["brad\u200dpitt"], "ed")
    with store() as s:
        assert sorted(s.execute(select(MediaTag.media_id, MediaTag.status)).all()) == [(1, "rejected")]
        legacy = find_class(s, "Brad\u200dPitt")
        assert legacy is not None and legacy.name == "Brad\u200dPitt"
    rename_class(store, legacy.id, "Brad\u200dPitt", "ed", display_name="Brad")
    assert class_row(store, legacy.id).display_name == "Brad"
    with pytest.raises(ValidationError, match="invisible characters"):  # a new name is checked
        rename_class(store, legacy.id, "Brad\u200dPitt Jr", "ed")
    with pytest.raises(ValidationError, match="invisible characters"):  # so is a new tag
        add_tags(store, [2], ["angelina\u200djolie"], "ed")


# -- 7. predictions naming a class merged or retired since the fit -------------------------------------------
def test_predictions_of_a_class_merged_or_retired_since_the_fit_go_to_its_target_or_unknown(store):
    faces = make_faces(store, 1, 3)
    alice, _ = add_class(store, "Alice", "ed")
    bob, _ = add_class(store, "Bob", "ed")
    carl, _ = add_class(store, "Carl", "ed")
    approve_faces(store, [faces[0]], "ed", class_id=alice)
    merge_classes(store, alice, bob, "bob")  # a refresh fitted before this writes after it
    retire_class(store, carl, "bob")
    result = record_predictions(store, [Prediction(faces[1], alice, 0.9, [(alice, 0.9), (bob, 0.05), (carl, 0.05)]),
                                        Prediction(faces[2], carl, 0.8, [(carl, 0.8), (alice, 0.2)])], "v-before")
    assert "1 naming a class merged since the fit went to the class it was merged into" in result.summary
    assert "1 naming a class retired since the fit are unknown" in result.summary
    assert label(store, faces[1])[:3] == ("predicted", bob, bob)
    assert label(store, faces[2])[:3] == ("predicted", None, None)
    with store() as s:
        tops = dict(s.execute(select(FaceLabel.face_id, FaceLabel.predicted_top)).all())
    assert tops[faces[1]] == [[bob, 0.9]] and tops[faces[2]] == [[bob, 0.2]]
    approve_faces(store, [faces[1]], "ann")  # approving the guess works: it names an active class
    assert label(store, faces[1])[:2] == ("approved", bob)


# -- 8. the open-set threshold's cap ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_people(lfw_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every photo of two LFW people with 10+ photos (74 faces: fewer than 100 impostor distances)."""
    from bench.lfw_faces import load_lfw_faces

    faces = load_lfw_faces(lfw_dir, min_photos=10, max_people=24)
    people = sorted(set(faces.names.tolist()))[2:4]
    keep = np.isin(faces.names, people)
    return faces.vectors[keep], faces.names[keep].astype(str)


def test_a_face_model_without_a_measured_prior_says_its_threshold_is_not_capped(two_people):
    x, y = two_people
    with pytest.warns(CalibrationWarning, match=r"the threshold \d\.\d{4} is not capped \(no measured prior for "
                                                r"facenet-vggface2\)"):
        loose = CentroidKnnClassifier().fit(x, y.tolist(), "facenet-vggface2")
    with pytest.warns(CalibrationWarning, match="capped at 0.0430"):
        capped = CentroidKnnClassifier().fit(x, y.tolist(), DLIB)
    assert capped.threshold_ == PRIOR_THRESHOLD[DLIB] < loose.threshold_


def test_the_held_out_grade_caps_the_threshold_as_the_deployed_classifier_does(two_people):
    """Each face graded held out names someone exactly when the classifier deployed without that face
    would: capped at dlib's prior for a short class list. Uncapped, the grade named faces the deployed
    model leaves unknown."""
    x, y = two_people
    groups = np.arange(len(y))
    graded, measured = held_out_centroid_predictions(x, y.tolist(), groups, model_id=DLIB)
    loose, _ = held_out_centroid_predictions(x, y.tolist(), groups)
    assert measured.all()
    deployed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        for i in range(len(y)):
            rest = np.delete(groups, i)
            clf = CentroidKnnClassifier().fit(x[rest], y[rest].tolist(), DLIB)
            deployed.append(clf.predict(x[i : i + 1], DLIB)[0][0])
    deployed = np.asarray(deployed, dtype=object)
    assert ((graded != UNKNOWN) == (deployed != UNKNOWN)).all()
    assert (loose != UNKNOWN).sum() > (graded != UNKNOWN).sum()


def test_the_bias_audit_grades_with_the_face_model_of_its_faces(two_people):
    from explorer.bias_audit import held_out_grades

    x, y = two_people
    ids = np.arange(len(y))
    faces = pd.DataFrame({"face_id": ids, "class": y, "status": "approved", "predicted": y, "model_id": DLIB})
    graded = held_out_grades(faces, ids, ids, x)
    expected, _ = held_out_centroid_predictions(x, y.tolist(), ids, model_id=DLIB)
    assert (graded["predicted"].to_numpy(object) == expected).all()
    assert (graded["predicted"] == UNKNOWN).any()  # the cap left some unknown, as the deployed model does

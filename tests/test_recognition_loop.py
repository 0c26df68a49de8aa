"""The recognition loop on real LFW photos and shared GIFs: fit on confirmed labels, predictions written with
the model's version (editor decisions untouched), open-set unknown, track predictions, retrain with
before/after on a holdout, experts-voting tag suggestions, the app's Retrain and experts-voting buttons, and
bad input that is refused with nothing written. SQLite everywhere, PostgreSQL where the writes matter.

`build_loop_store` is shared with test_cli_recognition.py. The data folder (embedding cache) is shared by the
session, so the networks run once per file and every later store is filled from the cache.
"""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import open_app, session_dir
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from labeling.audit import undo_event
from labeling.auto_tagging import (ORIGINAL_SOURCES, SOURCE, autotag, identity_names, new_suggestions,
                                   original_confidences, untrusted_experts_hint)
from labeling.db import open_store, session_scope
from labeling.errors import ValidationError
from labeling.face_labels import mark_unknown, reject_faces, relabel_faces
from labeling.importers import import_raw_dataset, import_tags
from labeling.ingest import ingest
from labeling.queries import faces_frame, media_tags_frame
from labeling.recognition import (TRACK_PREDICTION_COLUMNS, fit_classifier, load_predictor, predict_track,
                                  predict_tracks, read_snapshot, refresh_predictions, replaced_other_models, retrain,
                                  stratified_holdout, track_predictions_frame)
from labeling.schema import AuditEvent, CelebrityClass, Face, FaceEmbedding, FaceLabel, Media, MediaTag, Track
from labeling.tags import add_tags, remove_tags, set_tag_confidences, set_tag_status
from models.settings import Settings

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LFW = SHARED / "lfw"
FACE_MODEL = "dlib-resnet-v1"
# Confirmed through GIPHY's training layout (approved, source import): 4 classes of 6 photos, one of 1 photo.
PEOPLE = {"Ariel_Sharon": 6, "Hugo_Chavez": 6, "Serena_Williams": 6, "Colin_Powell": 6, "Junichiro_Koizumi": 1}
EXTRA = ["Ariel_Sharon/Ariel_Sharon_0007.jpg", "Serena_Williams/Serena_Williams_0007.jpg"]  # known people, unlabeled
STRANGERS = ["Vladimir_Putin/Vladimir_Putin_0001.jpg", "Vladimir_Putin/Vladimir_Putin_0002.jpg",
             "Vladimir_Putin/Vladimir_Putin_0003.jpg"]  # nobody's class
CALVIN_1, CALVIN_2 = "calvin-hobbes-dont-knock-smock-1.gif", "calvin-hobbes-dont-knock-smock-2.gif"
GIFS = [CALVIN_1, CALVIN_2, "jlaw-nods.gif", "zoey-nods-no-biggie.gif", "waiting.gif", "cake-is-a-lie.gif"]
UNTAGGED_GIFS = {CALVIN_2}  # its twin carries the uploader tags


@dataclass
class LoopStore:
    data_dir: Path
    url: str
    store: sessionmaker[Session]
    media: dict[str, int]  # file name -> media id
    faces: dict[str, list[int]]  # file name -> its face ids (largest first for photos)
    classes: dict[str, int]  # class name -> id
    settings: Settings = field(repr=False, default=None)

    def face(self, name: str) -> int:
        return self.faces[name][0]


def raw_dataset(folder: Path, people: dict[str, int]) -> Path:
    """GIPHY's training layout of the first N photos of each person (written once per session)."""
    key = "-".join(f"{p}{n}" for p, n in people.items())
    raw = folder / f"raw-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    if (raw / "labels.csv").is_file():
        return raw
    for person, n in people.items():
        (raw / "raw_dataset" / person).mkdir(parents=True, exist_ok=True)
        for photo in sorted((LFW / person).glob("*.jpg"))[:n]:
            shutil.copy(photo, raw / "raw_dataset" / person / photo.name)
    (raw / "labels.csv").write_text("Labels,Index\n" + "".join(f"{p},{i}\n" for i, p in enumerate(people)))
    return raw


def gif_tags_csv(folder: Path, gifs: list[str]) -> Path:
    """The shared uploader tags of the given GIFs (gifs.csv rows), for import_tags."""
    rows = {r["file"]: r["uploader_tags"] for r in csv.DictReader((SHARED / "gifs.csv").open(encoding="utf-8"))}
    path = folder / "gif-tags.csv"
    path.write_text("file,uploader_tags\n" + "".join(f"{g},{rows[g]}\n" for g in gifs if rows.get(g)), encoding="utf-8")
    return path


def build_loop_store(data_dir: Path, url: str, people: dict[str, int] = PEOPLE, extra: list[str] = EXTRA,
                     strangers: list[str] = STRANGERS, gifs: list[str] = GIFS) -> LoopStore:
    settings = Settings(data_dir=data_dir, database_url=url)
    store = open_store(url)
    if people:
        import_raw_dataset(store, raw_dataset(data_dir, people), settings, "importer")
    others = [LFW / p for p in [*extra, *strangers]] + [SHARED / "gifs" / g for g in gifs]
    if others:
        ingest(others, settings, store=store)
    tagged = [g for g in gifs if g not in UNTAGGED_GIFS]
    if tagged:
        import_tags(store, gif_tags_csv(data_dir, tagged))
    with store() as s:
        media = {Path(p).name: i for i, p in s.execute(select(Media.id, Media.path).where(Media.status == "ok"))}
        rows = s.execute(select(Face.id, Face.media_id, Face.x1, Face.y1, Face.x2, Face.y2)).all()
        classes = dict(s.execute(select(CelebrityClass.name, CelebrityClass.id)).all())
    by_media = {m: sorted((r for r in rows if r.media_id == m), key=lambda r: -(r.x2 - r.x1) * (r.y2 - r.y1))
                for m in media.values()}
    faces = {name: [r.id for r in by_media[m]] for name, m in media.items()}
    return LoopStore(data_dir, url, store, media, faces, classes, settings)


@pytest.fixture(scope="session")
def loop_data_dir(tmp_path_factory) -> Path:
    """Embedding cache shared by this file and test_cli_recognition.py."""
    return session_dir(tmp_path_factory, "giflens-recognition-data")


@pytest.fixture
def loop(loop_data_dir, store_url) -> LoopStore:
    return build_loop_store(loop_data_dir, store_url)


@pytest.fixture
def loop_sqlite(loop_data_dir, tmp_path) -> LoopStore:
    return build_loop_store(loop_data_dir, f"sqlite:///{tmp_path / 'loop.db'}")


def count(store, model, *where) -> int:
    with store() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def labels(store) -> dict[int, FaceLabel]:
    with store() as s:
        return {r.face_id: r for r in s.scalars(select(FaceLabel))}


def models_written(data_dir: Path) -> set[Path]:
    return set((data_dir / "models").rglob("*")) if (data_dir / "models").exists() else set()


# -- pure pieces ------------------------------------------------------------------------------------
def test_holdout_is_stratified_keeps_two_per_class_and_whole_groups():
    classes = np.array([1] * 10 + [2] * 3 + [3] * 2)
    groups = np.array([10, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20, 21, 22, 30, 31], dtype=object)
    held = stratified_holdout(classes, groups, 0.3, seed=1)
    assert held[classes == 3].sum() == 0  # two faces: both train
    assert held[classes == 2].sum() == 1 and held[classes == 1].sum() == 3
    assert held[0] == held[1]  # one group, one side
    assert np.array_equal(held, stratified_holdout(classes, groups, 0.3, seed=1))
    with pytest.raises(ValidationError, match="holdout share"):
        stratified_holdout(classes, groups, 1.0)


def test_suggestions_leave_every_other_row_alone():
    predicted = {"1": [("cat", 0.9), ("dog", 0.8), ("funny", 0.5), ("cute", 0.4)], "2": [("cat", 1.2), ("dog", 0.0)]}
    existing = {(1, "cat"): ("editor", "active"), (1, "dog"): ("experts_voting", "rejected"),
                (1, "funny"): ("experts_voting", "suggested"), (2, "cat"): ("import", "suggested")}
    items, rejected = new_suggestions(predicted, existing, top=5)
    assert items == [(1, "funny", 0.5), (1, "cute", 0.4)] and rejected == 1
    assert new_suggestions(predicted, {}, top=1)[0] == [(1, "cat", 0.9), (2, "cat", 1.0)]


def test_original_confidences_pick_active_uploader_and_import_tags_only():
    predicted = {"1": [("cat", 1.0), ("funny", 0.8), ("dog", 0.7), ("cute", 0.7), ("meme", 0.7)], "2": [("Cat", 0.7)]}
    existing = {(1, "cat"): ("uploader", "active"), (1, "dog"): ("import", "active"),
                (1, "cute"): ("editor", "active"), (1, "meme"): ("uploader", "rejected"),
                (1, "funny"): ("experts_voting", "suggested"), (2, "cat"): ("import", "active")}
    assert original_confidences(predicted, existing) == [(1, "cat", 1.0), (1, "dog", 0.7), (2, "cat", 0.7)]
    assert original_confidences(predicted, {}) == []


def test_replacing_another_embedding_models_predictions_is_said(tmp_path):
    """A face keeps one prediction, the latest run's: a run on other embeddings replaces those of a
    classifier the data folder knows was trained on another model, and says so; its own earlier
    versions and classifiers it cannot look up are not worth a note."""
    for version, model in (("centroid-knn-aaaaaaaaaaaa", "facenet-vggface2"), ("centroid-knn-bbbbbbbbbbbb", FACE_MODEL)):
        folder = tmp_path / "models" / "celebrity" / version
        folder.mkdir(parents=True)
        (folder / "classifier.json").write_text(json.dumps({"model_id": model}), encoding="utf-8")
    faces = pd.DataFrame({"model_version": ["centroid-knn-aaaaaaaaaaaa"] * 3 + ["centroid-knn-bbbbbbbbbbbb",
                                                                               "centroid-knn-gone", None]})
    notes = replaced_other_models(faces, tmp_path, FACE_MODEL, "centroid-knn-new")
    assert notes == ["3 face(s) had predictions of centroid-knn-aaaaaaaaaaaa (a classifier of facenet-vggface2 "
                     f"embeddings): replaced by this run's on {FACE_MODEL} (a face keeps one prediction, the latest)"]
    assert replaced_other_models(faces, None, FACE_MODEL, "centroid-knn-new") == []


def test_identity_names_prefer_decisions_and_cover_media_with_faces():
    names = identity_names({1: "Ariel Sharon", 2: "Brad_Pitt_[m.0c6qh]"},
                           [(10, "approved", 1), (10, "predicted", 2), (11, "rejected", None), (12, "unknown", None),
                            (13, "predicted", None)], [(13, 2), (14, None)])
    assert names == {10: ["ariel sharon", "brad pitt"], 11: [], 12: [], 13: ["brad pitt"], 14: []}


# -- fitting and predicting on a real store ------------------------------------------------------------
@pytest.mark.slow
def test_fit_on_confirmed_labels_reports_small_classes_and_writes_nothing(loop):
    events = count(loop.store, AuditEvent)
    fit = fit_classifier(loop.store)
    clf, data = fit.classifier, fit.data
    assert data.model_id == FACE_MODEL and clf.model_id_ == FACE_MODEL
    wanted = {loop.classes[n] for n in ("Ariel Sharon", "Hugo Chavez", "Serena Williams", "Colin Powell")}
    assert set(data.class_names) == wanted and sorted(clf.classes_.tolist()) == sorted(map(str, wanted))
    assert len(data.face_ids) == 24 and set(data.face_ids.tolist()) == {
        loop.face(f"{p}_{i:04d}.jpg") for p in PEOPLE if PEOPLE[p] == 6 for i in range(1, 7)}
    assert any("'Junichiro Koizumi'" in n and "1 confirmed face(s), needs 2" in n for n in data.notes)
    assert fit.artifact is None and count(loop.store, AuditEvent) == events


@pytest.mark.slow
def test_refresh_writes_versioned_predictions_and_never_overwrites_decisions(loop):
    ariel, serena, hugo = (loop.classes[n] for n in ("Ariel Sharon", "Serena Williams", "Hugo Chavez"))
    # editors decided: an unlabeled Serena photo relabeled to her class, a stranger marked unknown, a second
    # face in an LFW photo rejected (the import approved the rest)
    relabel_faces(loop.store, [loop.face("Serena_Williams_0007.jpg")], serena, "ann")
    mark_unknown(loop.store, [loop.face("Vladimir_Putin_0001.jpg")], "ann")
    background = next(fs[1] for name, fs in loop.faces.items() if name.endswith(".jpg") and len(fs) > 1)
    reject_faces(loop.store, [background], "ann")
    before = labels(loop.store)
    decided = {f: (r.status, r.class_id, r.source, r.editor, r.version) for f, r in before.items()
               if r.status != "predicted"}

    seen: list[tuple[int, int]] = []
    result = refresh_predictions(loop.store, FACE_MODEL, data_dir=loop.data_dir, editor="bob",
                                 on_progress=lambda d, t: seen.append((d, t)))
    version = result.model_version
    assert version.startswith("centroid-knn-") and result.artifact == loop.data_dir / "models" / "celebrity" / version
    assert load_predictor(result.artifact).version == version
    assert json.loads((result.artifact / "classes.json").read_text())[str(ariel)] == "Ariel Sharon"
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] == result.faces + result.tracks

    after = labels(loop.store)
    frame = faces_frame(loop.store, FACE_MODEL)
    assert result.faces == len(frame) == len(after) and result.kept == len(decided)
    for face_id, row in after.items():
        assert row.model_version == version and row.predicted_at is not None
        assert 1 <= len(row.predicted_top) <= 5 and all(0.0 <= c <= 1.0 for _, c in row.predicted_top)
        assert 0.0 <= row.predicted_confidence <= 1.0
        if face_id in decided:  # the decision and who made it are untouched; only prediction columns moved
            assert (row.status, row.class_id, row.source, row.editor) == decided[face_id][:4]
        else:
            assert (row.status, row.source, row.editor, row.class_id) == ("predicted", "model", "bob",
                                                                          row.predicted_class_id)
    serena_7 = after[loop.face("Serena_Williams_0007.jpg")]
    assert (serena_7.class_id, serena_7.status, serena_7.source, serena_7.editor) == (serena, "relabeled", "editor",
                                                                                     "ann")
    assert after[loop.face("Hugo_Chavez_0002.jpg")].predicted_class_id == hugo
    assert after[loop.face("Ariel_Sharon_0007.jpg")].predicted_class_id == ariel  # unlabeled photos are named
    assert after[loop.face("Vladimir_Putin_0002.jpg")].class_id is None  # ... strangers are not
    with loop.store() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.operation == "predict_faces")).one()
    assert event.editor == "bob" and version in event.summary and result.event_ids == [event.id]

    again = refresh_predictions(loop.store, FACE_MODEL, data_dir=loop.data_dir, editor="bob")
    assert again.model_version == version  # same labels, same model, same version


@pytest.mark.slow
def test_open_set_unknown_and_track_predictions(loop_sqlite):
    loop = loop_sqlite
    result = refresh_predictions(loop.store, data_dir=loop.data_dir)
    after = labels(loop.store)
    for stranger in ("Vladimir_Putin_0001.jpg", "Vladimir_Putin_0002.jpg", "Vladimir_Putin_0003.jpg"):
        row = after[loop.face(stranger)]
        assert (row.status, row.class_id, row.predicted_class_id) == ("predicted", None, None)  # open-set: unknown
        assert row.predicted_top and row.predicted_confidence > 0  # whom the face resembled most is still shown
    assert result.unknown >= 3 and result.named >= 26

    tracks = track_predictions_frame(loop.store, FACE_MODEL)
    assert list(tracks.columns) == TRACK_PREDICTION_COLUMNS
    assert len(tracks) == count(loop.store, Track) == result.tracks
    assert set(tracks["model_version"]) == {result.model_version} and set(tracks["prediction_method"]) == {"mean"}
    assert tracks["predicted_confidence"].between(0, 1).all()
    jlaw = tracks[tracks["media_id"] == loop.media["jlaw-nods.gif"]]
    assert len(jlaw) >= 1 and jlaw["predicted_class_id"].isna().all()  # Jennifer Lawrence has no class
    ariel = tracks[tracks["media_id"] == loop.media["Ariel_Sharon_0007.jpg"]].iloc[0]
    assert ariel["predicted_class_name"] == "Ariel Sharon" and ariel["predicted_top"][0][0] == loop.classes["Ariel Sharon"]

    # all tracks in one pass give what the classifier answers track by track
    clf, snapshot = load_predictor(result.artifact), read_snapshot(loop.store)
    tracked = snapshot.faces["track_id"].notna().to_numpy()
    track_of = snapshot.faces["track_id"].to_numpy()[tracked].astype(np.int64)
    for method in ("mean", "product"):
        batch = predict_tracks(clf, track_of, snapshot.vectors[tracked], FACE_MODEL, method)
        assert len(batch) == len(tracks)
        for track_id, answer in batch.items():
            one = clf.predict_track(snapshot.vectors[tracked][track_of == track_id], FACE_MODEL, method=method)
            assert (answer.label, [c for c, _ in answer.top]) == (one.label, [c for c, _ in one.top])
            assert answer.confidence == pytest.approx(one.confidence, abs=1e-5)
            assert answer.distance == pytest.approx(one.distance, abs=1e-5)

    product = refresh_predictions(loop.store, data_dir=loop.data_dir, track_method="product", faces="undecided")
    # the tracks holding an undecided face are rewritten; a track every face of which is decided keeps its
    # prediction (none of its faces would carry the new one: labeling.queries.current_track_prediction)
    rewritten = track_predictions_frame(loop.store).set_index("track_id")["prediction_method"]
    with loop.store() as s:
        open_tracks = set(s.scalars(select(FaceEmbedding.track_id).join(FaceLabel, FaceLabel.face_id == FaceEmbedding.face_id)
                                    .where(FaceLabel.status == "predicted", FaceEmbedding.track_id.is_not(None))))
    assert product.tracks == len(open_tracks) and set(rewritten[sorted(open_tracks)]) == {"product"}
    assert set(rewritten.drop(sorted(open_tracks))) == {"mean"}
    assert product.kept == 0 and product.faces == result.faces - result.kept

    # a re-ingest of the same files keeps the tracks, their ids and their predictions
    before = track_predictions_frame(loop.store).sort_values("track_id").reset_index(drop=True)
    with loop.store() as s:
        paths = [Path(p) for p in s.scalars(select(Media.path).where(Media.status == "ok"))]
    ingest(paths, loop.settings, store=loop.store)
    after = track_predictions_frame(loop.store).sort_values("track_id").reset_index(drop=True)
    assert after.equals(before) and after["predicted_at"].notna().all()
    with pytest.raises(ValidationError, match="track method"):
        refresh_predictions(loop.store, track_method="median")


# -- bad input: refused with a clear message, nothing written ----------------------------------------
def _nothing_written(store, data_dir: Path, events: int, models: set[Path]) -> None:
    assert count(store, AuditEvent) == events
    assert count(store, FaceLabel, FaceLabel.model_version.is_not(None)) == 0
    assert models_written(data_dir) == models


@pytest.mark.slow
def test_bad_input_is_refused_and_writes_nothing(store_url, loop_data_dir, tmp_path):
    empty = open_store(store_url)
    with pytest.raises(ValidationError, match="no face embeddings: ingest media with faces first"):
        refresh_predictions(empty, data_dir=tmp_path)
    with pytest.raises(ValidationError, match="no face embeddings"):
        retrain(empty, tmp_path)
    assert not (tmp_path / "models").exists() and count(empty, AuditEvent) == 0

    # one class of 3 faces and one of 1 face: a classifier needs two usable classes
    small = build_loop_store(loop_data_dir, store_url, people={"Ariel_Sharon": 3, "Junichiro_Koizumi": 1}, extra=[],
                             strangers=STRANGERS[:1], gifs=[])
    events, models = count(small.store, AuditEvent), models_written(loop_data_dir)
    for action in (lambda: refresh_predictions(small.store, data_dir=loop_data_dir),
                   lambda: retrain(small.store, loop_data_dir)):
        with pytest.raises(ValidationError) as refused:
            action()
        message = str(refused.value)
        assert "at least 2 classes with 2+ confirmed faces" in message and "usable: 'Ariel Sharon'" in message
        assert "class 'Junichiro Koizumi'" in message and "1 confirmed face(s), needs 2" in message
        _nothing_written(small.store, loop_data_dir, events, models)

    # a second face model in the store: never mixed, never guessed
    with session_scope(small.store) as s:
        for row in s.scalars(select(FaceEmbedding)).all():
            s.add(FaceEmbedding(face_id=row.face_id, model_id="facenet-vggface2", dim=row.dim, vector=row.vector))
    with pytest.raises(ValidationError, match=r"face embeddings of 2 models \(.*dlib-resnet-v1.*facenet-vggface2"):
        refresh_predictions(small.store, data_dir=loop_data_dir)
    with pytest.raises(ValidationError, match="no face embeddings of model 'nope'"):
        fit_classifier(small.store, "nope")
    _nothing_written(small.store, loop_data_dir, events, models)


# -- retraining ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_retrain_compares_on_a_holdout_saves_artifacts_and_predicts_undecided_faces(loop_sqlite):
    loop = loop_sqlite
    first = refresh_predictions(loop.store, data_dir=loop.data_dir)
    mark_unknown(loop.store, [loop.face("Vladimir_Putin_0001.jpg")], "ann")
    before = labels(loop.store)
    seen: list[tuple[int, int]] = []
    result = retrain(loop.store, loop.data_dir, center_loss_lambda=0.05, epochs=30, holdout_share=0.34,
                     on_progress=lambda d, t: seen.append((d, t)))
    assert result.classes == 4 and result.holdout_faces == 8 and result.train_faces == 16
    assert result.holdout_unknown_faces == 0  # the only face marked unknown is kept to calibrate on
    assert 0.0 <= result.before <= 1.0 and 0.0 <= result.after <= 1.0 and result.after >= result.before
    assert result.before == result.comparison["centroid_accuracy"]
    assert result.deployed in ("head", "centroid") and result.line().endswith(
        f"before={result.before:.4f} after={result.after:.4f}")
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # artifacts: both models (refitted on every confirmed label) and the report
    assert (result.head_artifact / "meta.json").is_file() and (result.centroid_artifact / "classifier.json").is_file()
    assert result.artifact == (result.head_artifact if result.deployed == "head" else result.centroid_artifact)
    assert load_predictor(result.artifact).version == result.model_version
    head = load_predictor(result.head_artifact)
    assert head.params.center_loss_lambda == 0.05 and head.params.epochs == 30
    # the head is recalibrated on the face marked unknown like the centroid classifier, so the comparison
    # (which calibrates both on the training split's side) compares the rules that get deployed
    assert head.calibration_["impostor"] == result.train_faces + result.holdout_faces + 1
    report = json.loads(result.report.read_text())
    assert (report["before"], report["after"], report["model_version"]) == (result.before, result.after,
                                                                          result.model_version)
    # only faces nobody decided got the new model's predictions
    after = labels(loop.store)
    undecided = {f for f, r in before.items() if r.status == "predicted"}
    assert result.refresh.faces == len(undecided) and result.refresh.kept == 0
    for face_id, row in after.items():
        expected = result.model_version if face_id in undecided else first.model_version
        assert row.model_version == expected
        assert (row.status, row.class_id) == (before[face_id].status, before[face_id].class_id) or face_id in undecided
    assert after[loop.face("Vladimir_Putin_0002.jpg")].predicted_class_id is None
    assert after[loop.face("Ariel_Sharon_0007.jpg")].predicted_class_id == loop.classes["Ariel Sharon"]

    # the head answers for a GIF track like the classifier does (same rules, its own probabilities)
    snapshot = read_snapshot(loop.store)
    jlaw = snapshot.faces["media_id"].to_numpy() == loop.media["jlaw-nods.gif"]
    ariel = snapshot.faces["face_id"].isin(loop.faces["Ariel_Sharon_0007.jpg"][:1]).to_numpy()
    for method in ("mean", "product"):
        assert predict_track(head, snapshot.vectors[jlaw], FACE_MODEL, method).label == "unknown"
        p = predict_track(head, snapshot.vectors[ariel], FACE_MODEL, method)
        assert p.label == str(loop.classes["Ariel Sharon"]) and 0 <= p.confidence <= 1 and len(p.top) == 4

    with pytest.raises(ValidationError, match="center_loss_lambda must be a finite number >= 0"):
        retrain(loop.store, loop.data_dir, center_loss_lambda=-1)


# -- experts voting -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_autotag_stores_suggestions_and_keeps_editor_and_import_tags(loop):
    refresh_predictions(loop.store, data_dir=loop.data_dir)  # identity: the GIFs' and photos' people
    ariel = [loop.media[f"Ariel_Sharon_{i:04d}.jpg"] for i in range(1, 4)]
    add_tags(loop.store, ariel, ["Ariel Sharon", "politician"], "ann")
    add_tags(loop.store, [loop.media["Hugo_Chavez_0001.jpg"]], ["politician"], "ann")
    # an editor already rejected one suggestion, and tagged the twin GIF with one word of their own
    add_tags(loop.store, [loop.media["Ariel_Sharon_0004.jpg"]], ["ariel sharon"], "ann", confidence=0.3,
             source=SOURCE, status="suggested")
    set_tag_status(loop.store, [(loop.media["Ariel_Sharon_0004.jpg"], "ariel sharon")], "rejected", "ann")
    add_tags(loop.store, [loop.media[CALVIN_2]], ["calvin"], "ann", confidence=0.9)
    untouched = media_tags_frame(loop.store).query(
        "(source != @SOURCE and source not in @ORIGINAL_SOURCES) or status == 'rejected'")
    uploaded = len(media_tags_frame(loop.store).query("source == 'uploader'"))

    result = autotag(loop.store, "bob", text=None, k=3, min_frequency=0.3)
    assert set(result.weights) == {"visual", "identity"} and all(0 <= w <= 1 for w in result.weights.values())
    assert result.weights["identity"] > 0 and result.media == len(loop.media) and result.suggested > 0
    assert result.rejected == 1 and result.event_id is not None
    tags = media_tags_frame(loop.store)
    ours = tags[tags["source"] == SOURCE]
    suggested = ours[ours["status"] == "suggested"]
    assert len(suggested) == result.suggested and suggested["confidence"].between(0, 1).all()
    assert (suggested["editor"] == "bob").all()
    assert suggested.groupby("media_id").size().max() <= 5
    # the GIFs' uploader tags are confirmed (1.0) or lowered (0.7), by the same operation
    originals = tags[tags["source"] == "uploader"]
    assert len(originals) == uploaded and set(originals["confidence"]) <= {1.0, 0.7}
    assert result.originals_confirmed == (originals["confidence"] == 1.0).sum() > 0
    assert result.originals_lowered == (originals["confidence"] == 0.7).sum() > 0
    assert result.originals_changed == result.originals_lowered  # the import wrote them all at 1.0
    # nothing else changed: editor and model rows, and the rejected suggestion
    keep = ["media_id", "tag", "confidence", "source", "status", "editor", "version"]
    now = tags.merge(untouched[["media_id", "tag"]])
    assert now[keep].sort_values(keep[:2]).reset_index(drop=True).equals(
        untouched[keep].sort_values(keep[:2]).reset_index(drop=True))
    pairs = set(zip(suggested["media_name"], suggested["tag"]))
    assert ("Ariel_Sharon_0005.jpg", "ariel sharon") in pairs  # identity expert: a confirmed class's photo
    assert ("Ariel_Sharon_0004.jpg", "ariel sharon") not in pairs  # rejected stays rejected
    assert ("Ariel_Sharon_0007.jpg", "ariel sharon") in pairs  # ... and the classifier's prediction
    assert any(name == CALVIN_2 and tag in ("hobbes", "knock", "smock") for name, tag in pairs)  # visual twin
    assert not any(name == CALVIN_2 and tag == "calvin" for name, tag in pairs)  # the editor's tag stays theirs

    # a re-run refreshes rather than piles up; an editor's accept turns a suggestion into a tag kept as such
    accepted = (loop.media["Ariel_Sharon_0005.jpg"], "ariel sharon")
    set_tag_status(loop.store, [accepted], "active", "ann")
    again = autotag(loop.store, "bob", text=None, k=3, min_frequency=0.3)
    tags2 = media_tags_frame(loop.store)
    assert again.suggested == len(tags2[tags2["status"] == "suggested"]) and again.changed < again.suggested
    row = tags2[(tags2["media_id"] == accepted[0]) & (tags2["tag"] == accepted[1])].iloc[0]
    assert (row["status"], row["editor"]) == ("active", "ann")
    # a tag the editor removed (the row is gone) is not proposed again, until someone adds it back
    remove_tags(loop.store, [accepted[0]], [accepted[1]], "ann")
    autotag(loop.store, "bob", text=None, k=3, min_frequency=0.3)
    assert media_tags_frame(loop.store, media_id=accepted[0]).query("tag == @accepted[1]").empty


@pytest.mark.slow
def test_autotag_confirms_or_lowers_original_tags_and_undo_restores_them(loop):
    """GIPHY's rule reaches the store: uploader / import tags at 1.0 when an expert confirms them, else 0.7;
    editor and rejected rows untouched; a re-run writes nothing; undoing the vote restores the confidences."""
    calvin_1, calvin_2, cake = loop.media[CALVIN_1], loop.media[CALVIN_2], loop.media["cake-is-a-lie.gif"]
    ariel = [loop.media[f"Ariel_Sharon_{i:04d}.jpg"] for i in range(1, 4)]
    # the twin's editor tag confirms "calvin"; an editor took the "hobbes" uploader tag over (both were uploader
    # tags: an editor changes one by setting its confidence, adding it again is refused)
    set_tag_confidences(loop.store, [(calvin_2, "calvin", 0.9), (calvin_1, "hobbes", 0.4)], "ann")
    set_tag_status(loop.store, [(calvin_1, "knock")], "rejected", "ann")  # ... and rejected this one
    add_tags(loop.store, ariel, ["ariel sharon"], "importer", confidence=0.5, source="import")  # identity confirms
    add_tags(loop.store, [cake], ["dessert"], "importer", confidence=1.0, source="import")  # nobody else has it
    before = media_tags_frame(loop.store)

    def row(frame, media_id: int, tag: str):
        return frame[(frame["media_id"] == media_id) & (frame["tag"] == tag)].iloc[0]

    result = autotag(loop.store, "bob", text=None, k=3, min_frequency=0.3)
    after = media_tags_frame(loop.store)
    assert result.weights["visual"] > 0 and result.weights["identity"] > 0
    assert row(after, calvin_1, "calvin")["confidence"] == 1.0  # confirmed by the visual twin
    assert row(after, calvin_1, "smock")[["confidence", "source", "editor"]].tolist() == [0.7, "uploader", "bob"]
    assert row(after, cake, "cake")["confidence"] == row(after, cake, "dessert")["confidence"] == 0.7
    for media_id in ariel:
        assert row(after, media_id, "ariel sharon")[["confidence", "source"]].tolist() == [1.0, "import"]
    # editor rows (the twin's "calvin", the taken-over "hobbes") and the rejected uploader tag are as they were
    for media_id, tag in [(calvin_2, "calvin"), (calvin_1, "hobbes"), (calvin_1, "knock")]:
        assert row(after, media_id, tag).equals(row(before, media_id, tag))
    assert (row(after, calvin_1, "knock")["status"], row(after, calvin_1, "knock")["confidence"]) == ("rejected", 1.0)

    # the counts say what the store now holds; exactly the rows whose confidence changed got a new version
    originals = after[after["source"].isin(ORIGINAL_SOURCES) & (after["status"] == "active")]
    assert set(originals["confidence"]) == {1.0, 0.7}
    assert result.originals_confirmed == (originals["confidence"] == 1.0).sum()
    assert result.originals_lowered == (originals["confidence"] == 0.7).sum()
    assert (f"original tags: {result.originals_confirmed} confirmed (1.0), {result.originals_lowered} lowered (0.7), "
            f"{result.originals_changed} written") in result.summary
    assert f"originals_confirmed={result.originals_confirmed} originals_lowered={result.originals_lowered}" in result.line()
    was = originals.merge(before, on=["media_id", "tag"], suffixes=("", "_before"))
    moved = was[was["confidence"] != was["confidence_before"]]
    assert result.originals_changed == len(moved) > 0
    assert (moved["version"] == moved["version_before"] + 1).all()
    assert (was.drop(moved.index)["version"] == was.drop(moved.index)["version_before"]).all()
    with loop.store() as s:
        event = s.get(AuditEvent, result.event_id)
        assert event.operation == "experts_voting" and event.summary == result.summary
    smock_key = f"media_tag:{calvin_1}:{row(after, calvin_1, 'smock')['tag_id']}"
    assert (event.before[smock_key]["confidence"], event.after[smock_key]["confidence"]) == (1.0, 0.7)

    # the same vote again: nothing to write, not even an audit event
    again = autotag(loop.store, "bob", text=None, k=3, min_frequency=0.3)
    assert (again.originals_confirmed, again.originals_lowered, again.originals_changed) == (
        result.originals_confirmed, result.originals_lowered, 0)
    assert (again.changed, again.removed, again.event_id) == (0, 0, None)
    assert media_tags_frame(loop.store).drop(columns="updated_at").equals(after.drop(columns="updated_at"))

    # undo puts back every original confidence (and removes the suggestions) in one operation
    undo_event(loop.store, result.event_id, "bob")
    restored = media_tags_frame(loop.store)
    cols = ["media_id", "tag", "confidence", "source", "status", "editor"]
    assert restored[cols].reset_index(drop=True).equals(before[cols].reset_index(drop=True))
    assert row(restored, calvin_1, "smock")["confidence"] == 1.0
    assert row(restored, ariel[0], "ariel sharon")["confidence"] == 0.5


@pytest.mark.slow
def test_autotag_with_the_text_expert_and_bad_input(loop_sqlite, tmp_path):
    loop = loop_sqlite
    with pytest.raises(ValidationError, match="no ingested media"):
        autotag(open_store(f"sqlite:///{tmp_path / 'empty.db'}"), "bob")
    bare = build_loop_store(loop.data_dir, f"sqlite:///{tmp_path / 'bare.db'}", people={}, extra=[], strangers=[],
                            gifs=[CALVIN_2])
    with pytest.raises(ValidationError, match="no media carries an active tag"):
        autotag(bare.store, "bob")
    assert count(bare.store, AuditEvent) == 0
    with pytest.raises(ValidationError, match="text must be one of"):
        autotag(loop.store, "bob", text="titles")
    for bad in ({"k": 0}, {"min_frequency": 1.5}, {"k": True}):
        with pytest.raises(ValidationError, match="experts voting: (k|min_frequency) must"):
            autotag(open_store(f"sqlite:///{tmp_path / 'never-read.db'}"), "bob", **bad)

    # two GIFs share "nods": the visual expert earns a weight at the default bound, none when all ten must agree
    nods = build_loop_store(loop.data_dir, f"sqlite:///{tmp_path / 'nods.db'}", people={}, extra=[], strangers=[],
                            gifs=["zoey-nods-no-biggie.gif", "waiting.gif", "jlaw-nods.gif"])
    trusted = autotag(nods.store, "bob", text=None)
    assert trusted.weights["visual"] > 0 and trusted.suggested > 0 and not trusted.notes
    strict = autotag(nods.store, "bob", text=None, min_frequency=1.0)
    assert not any(strict.weights.values()) and strict.suggested == 0 and strict.removed == 0
    # no vote is not a vote against: the trusted run's suggestions stay pending
    assert count(nods.store, MediaTag, MediaTag.source == SOURCE, MediaTag.status == "suggested") == trusted.suggested
    # nobody voted, so no uploader tag was voted down: they keep what the trusted run gave them
    assert (strict.originals_confirmed, strict.originals_lowered, strict.originals_changed) == (0, 0, 0)
    assert trusted.originals_confirmed + trusted.originals_lowered > 0
    # the hint counts the neighbours a tagged media item has (3 tagged: 2), not k
    assert strict.notes[0] == untrusted_experts_hint(10, 1.0, strict.tagged)
    assert "needs 2 of a media item's 2 nearest" in strict.notes[0] and "min_frequency 0.50" in strict.notes[0]
    assert strict.notes[1].startswith(f"nothing new suggested: {trusted.suggested} earlier suggestion(s) kept")
    assert "single neighbour" not in untrusted_experts_hint(10, 0.1)

    add_tags(loop.store, [loop.media[f"Serena_Williams_{i:04d}.jpg"] for i in range(1, 4)], ["tennis"], "ann")
    result = autotag(loop.store, "bob", text="tags")
    assert set(result.weights) == {"visual", "text", "identity"}
    # weighed leave-one-tag-out: only media with 2+ active tags have a tag left to ask with
    assert result.coverage["text"] == sum(1 for m in loop.media.values()
                                          if len(media_tags_frame(loop.store, media_id=m, status="active")) >= 2)
    weak = autotag(loop.store, "bob", text="weak_labels")
    assert set(weak.weights) == {"visual", "text", "identity"} and weak.line().startswith(f"media={weak.media} ")
    assert count(loop.store, MediaTag, MediaTag.source == SOURCE, MediaTag.status == "suggested") == weak.suggested


@pytest.mark.slow
def test_a_vote_replaces_more_than_a_thousand_stale_suggestions(loop_sqlite):
    """SQLite refuses expression trees deeper than 1000; (media, tag) keys are loaded in chunks below that."""
    loop = loop_sqlite
    photos = [loop.media[f"Colin_Powell_{i:04d}.jpg"] for i in range(1, 4)]
    add_tags(loop.store, photos, [f"stale {i}" for i in range(400)], "ann", confidence=0.5, source=SOURCE,
             status="suggested")
    add_tags(loop.store, photos[:1], ["colin powell"], "ann")
    assert count(loop.store, MediaTag, MediaTag.status == "suggested") == 1200
    result = autotag(loop.store, "bob", text=None)
    assert result.removed == 1200
    left = media_tags_frame(loop.store, status="suggested")
    assert not left["tag"].str.startswith("stale").any() and len(left) == result.suggested


# -- the app: Retrain on the Export page, Run experts voting on the Tags page ------------------------------
@pytest.fixture
def loop_app(loop_sqlite, monkeypatch):
    at = open_app(monkeypatch, loop_sqlite.data_dir, loop_sqlite.url, timeout=900)
    return at, loop_sqlite


def _button(at, label: str):
    found = [b for b in at.button if b.label == label]
    assert len(found) == 1, [b.label for b in at.button]
    return found[0]


def _sign_in(at, name: str) -> None:
    at.sidebar.text_input(key="sign_in_name").input(name)
    _button(at, "Sign in").click().run()


@pytest.mark.slow
def test_app_retrain_and_experts_voting(loop_app):
    at, loop = loop_app
    at.switch_page("labeling/pages/export.py").run()
    assert not at.exception
    _button(at, "Retrain").click().run()
    assert any("editor name is required" in e.value for e in at.error)
    assert count(loop.store, AuditEvent, AuditEvent.operation == "predict_faces") == 0

    _sign_in(at, "ann")
    at.switch_page("labeling/pages/export.py").run()
    at.number_input(key="retrain_center_loss").set_value(0.02)
    _button(at, "Retrain").click().run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    report = json.loads(max((loop.data_dir / "models" / "retrain").glob("*.json"), key=lambda p: p.stat().st_mtime)
                        .read_text())
    assert metrics["Holdout accuracy before"] == f"{report['before']:.4f}"
    assert metrics["Holdout accuracy after"] == f"{report['after']:.4f}"
    assert report["model_version"].endswith(f"-{metrics['Model version']}")  # the hash; the kind is in the message
    assert any(report["model_version"] in m.value for m in at.success), [m.value for m in at.success]
    with loop.store() as s:
        assert s.scalars(select(AuditEvent.editor).where(AuditEvent.operation == "predict_faces")).all() == ["ann"]

    at.switch_page("labeling/pages/tags.py").run()
    add_tags(loop.store, [loop.media["Serena_Williams_0001.jpg"]], ["Serena Williams"], "ann")
    at.number_input(key="tags_experts_k").set_value(3)
    at.number_input(key="tags_experts_min_frequency").set_value(0.5)
    _button(at, "Run experts voting").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(m.value.startswith("Done: experts voting over") and "weights" in m.value for m in at.success)
    assert not at.warning  # the identity expert is trusted: no hint about empty votes
    with loop.store() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.operation == "experts_voting")).one()
    assert event.editor == "ann"
    assert count(loop.store, MediaTag, MediaTag.source == SOURCE, MediaTag.status == "suggested") > 0
    same = autotag(loop.store, "ann", k=3, min_frequency=0.5)  # the app voted with the editor's k and bound
    assert (same.changed, same.removed) == (0, 0)
    other = autotag(loop.store, "ann")
    assert (other.changed, other.removed) != (0, 0)

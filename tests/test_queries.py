"""Read-side queries (labeling/queries.py) on a store built from real photos and a GIF, SQLite and PostgreSQL.

`build_fixture_store` is also what the app tests (test_app_pages.py) open the app on. The data
folder (embedding cache, face crops) is shared by the whole session, so the networks run once
and every later store is filled from the cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import session_dir
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from labeling.classes import add_class, rename_class
from labeling.audit import CHUNK
from labeling.db import open_store
from labeling.errors import ConflictError
from labeling.face_labels import Prediction, mark_unknown, record_predictions, relabel_faces
from labeling.ingest import IngestSummary, ingest
from labeling.queries import (CLASS_COLUMNS, FACE_COLUMNS, MEDIA_COLUMNS, MEDIA_TAG_COLUMNS,
                              NOT_PREDICTED, TRACK_COLUMNS, UNKNOWN_OPEN_SET, UNLABELED, prediction_text,
                              classes_frame, events_frame, face_models, faces_frame, history_frame, media_frame,
                              media_tags_frame, search_classes, store_overview, tag_counts_frame, tracks_frame)
from labeling.schema import (CelebrityClass, Face, FaceEmbedding, FaceLabel, Media, MediaTag, Track, bytes_to_vector)
from labeling.tags import add_tags
from models.settings import Settings

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PEOPLE = {"Ariel_Sharon": "Ariel Sharon", "Serena_Williams": "Serena Williams"}
GIF = "jlaw-nods.gif"
EDITOR = "fixture"


@dataclass
class FixtureStore:
    data_dir: Path
    url: str
    store: sessionmaker[Session]
    summary: IngestSummary
    media: dict[str, int]  # file name -> media id (ingested ones)
    largest_face: dict[str, int]  # photo file name -> its largest face
    classes: dict[str, int]  # class name -> id
    gif_faces: list[int]


def fixture_paths(scratch: Path) -> list[Path]:
    """Two photos each of two LFW people, one reaction GIF with a face, and one broken 'GIF'."""
    photos = [p for person in PEOPLE for p in sorted((SHARED / "lfw" / person).glob("*.jpg"))[:2]]
    scratch.mkdir(parents=True, exist_ok=True)
    broken = scratch / "broken.gif"
    broken.write_text("GIF89a but then plain text\n")
    return [*photos, SHARED / "gifs" / GIF, broken]


def build_fixture_store(data_dir: Path, url: str) -> FixtureStore:
    """Ingest the fixture media into the store at url and curate them through the operations:
    two classes seeded with each photo's largest face, model predictions on the GIF's faces,
    active tags and one experts-voting suggestion."""
    settings = Settings(data_dir=data_dir, database_url=url)
    summary = ingest(fixture_paths(data_dir / "scratch"), settings)
    store = open_store(url)
    with store() as s:
        media = {Path(p).name: i for i, p in s.execute(select(Media.id, Media.path).where(Media.status == "ok"))}
        faces = s.execute(select(Face.id, Face.media_id, Face.x1, Face.y1, Face.x2, Face.y2)).all()
    largest: dict[str, int] = {}
    for name, media_id in media.items():
        own = [f for f in faces if f.media_id == media_id]
        if name.endswith(".jpg") and own:
            largest[name] = max(own, key=lambda f: (f.x2 - f.x1) * (f.y2 - f.y1)).id
    classes = {}
    attrs = {"Ariel Sharon": {"gender": "male", "country": "Israel"},
             "Serena Williams": {"gender": "female", "birth_year": 1981}}
    for person, name in PEOPLE.items():
        seeds = [f for photo, f in largest.items() if photo.startswith(person)]
        classes[name], _ = add_class(store, name, EDITOR, attributes=attrs[name], seed_face_ids=seeds)
    gif_faces = sorted(f.id for f in faces if f.media_id == media[GIF])
    record_predictions(store, [Prediction(f, classes["Serena Williams"], 0.55, [(classes["Serena Williams"], 0.55)])
                               for f in gif_faces], "fixture-model-v1")
    add_tags(store, [media[GIF]], ["nod", "Jennifer Lawrence"], EDITOR, confidence=0.8)
    first_photo = sorted(largest)[0]
    add_tags(store, [media[first_photo]], ["nod"], EDITOR, confidence=0.3)
    add_tags(store, [media[GIF]], ["happy"], EDITOR, confidence=0.6, source="experts_voting", status="suggested")
    return FixtureStore(data_dir, url, store, summary, media, largest, classes, gif_faces)


def new_fixture_store(tmp_path_factory, label: str) -> FixtureStore:
    """A fixture store in a fresh SQLite file, filled from the session's shared embedding cache."""
    db = tmp_path_factory.mktemp(label) / "giflens.db"
    return build_fixture_store(session_dir(tmp_path_factory, "giflens-app-data"), f"sqlite:///{db}")


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory) -> Path:
    """One data folder (cache and crops) for every fixture store of the session."""
    return session_dir(tmp_path_factory, "giflens-app-data")


@pytest.fixture
def fx(store_url, shared_data_dir) -> FixtureStore:
    return build_fixture_store(shared_data_dir, store_url)


def _count(store, model, *where) -> int:
    with store() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


# -- faces -------------------------------------------------------------------------------
def test_faces_frame_matches_the_store(fx: FixtureStore):
    frame = faces_frame(fx.store)
    assert list(frame.columns) == FACE_COLUMNS
    assert len(frame) == _count(fx.store, Face) == fx.summary.faces
    assert frame["face_id"].is_unique and frame["face_id"].is_monotonic_increasing
    with fx.store() as s:
        labels = {r.face_id: r for r in s.scalars(select(FaceLabel))}
        names = dict(s.execute(select(CelebrityClass.id, CelebrityClass.name)).all())
        model = s.scalar(select(FaceEmbedding.model_id).limit(1))
    assert set(frame["model_id"]) == {model}
    for row in frame.itertuples():
        label = labels.get(row.face_id)
        if label is None:
            assert (row.label_status, row.version) == (UNLABELED, 0) and pd_missing(row.class_id)
        else:
            assert (row.label_status, row.version, row.source) == (label.status, label.version, label.source)
            assert none(row.class_id) == label.class_id
            assert none(row.class_name) == names.get(label.class_id)
            assert none(row.predicted_class_name) == names.get(label.predicted_class_id)
        assert (fx.data_dir / row.crop_path).is_file()
        assert row.x2 > row.x1 and row.y2 > row.y1 and 0 < row.probability <= 1
    # the seeded faces carry their class and its attributes
    for photo, face_id in fx.largest_face.items():
        row = frame.set_index("face_id").loc[face_id]
        person = PEOPLE["_".join(photo.split("_")[:2])]
        assert (row.class_name, row.label_status, row.editor) == (person, "relabeled", EDITOR)
        assert row.media_path.endswith(photo)
    serena = frame[frame["class_name"] == "Serena Williams"]
    assert set(serena["gender"]) == {"female"} and set(serena["birth_year"]) == {1981}
    # GIF faces: predicted, with the model's confidence, and grouped into tracks
    gif = frame[frame["face_id"].isin(fx.gif_faces)]
    assert len(gif) == len(fx.gif_faces) > 0
    assert set(gif["label_status"]) == {"predicted"} and np.allclose(gif["predicted_confidence"], 0.55)
    assert gif["track_id"].notna().all()


def pd_missing(value) -> bool:
    return value is None or pd.isna(value)


def none(value):
    """pandas (3) shows a missing value as NA / NaN; the store as None."""
    return None if pd_missing(value) else value


def test_faces_frame_vectors_and_filters(fx: FixtureStore):
    frame, vectors = faces_frame(fx.store, with_vectors=True)
    assert vectors.dtype == np.float32 and vectors.shape[0] == len(frame) == _count(fx.store, FaceEmbedding)
    with fx.store() as s:
        stored = {f: bytes_to_vector(v) for f, v in s.execute(select(FaceEmbedding.face_id, FaceEmbedding.vector))}
    assert vectors.shape[1] == len(next(iter(stored.values())))
    for i, face_id in enumerate(frame["face_id"]):
        np.testing.assert_array_equal(vectors[i], stored[face_id])
    # class filter: current or predicted class
    serena = fx.classes["Serena Williams"]
    by_class = faces_frame(fx.store, class_id=serena)
    expected = {f for f, c, p in zip(frame["face_id"], frame["class_id"], frame["predicted_class_id"])
                if serena in (none(c), none(p))}
    assert set(by_class["face_id"]) == expected and len(expected) > len(fx.gif_faces)
    assert set(faces_frame(fx.store, media_id=fx.media[GIF])["face_id"]) == set(fx.gif_faces)
    # track filter: in SQL for a short list, in pandas past CHUNK ids; the same rows and vectors either way
    track = int(frame.loc[frame["face_id"] == fx.gif_faces[0], "track_id"].iloc[0])
    members = set(frame.loc[frame["track_id"] == track, "face_id"])
    assert set(faces_frame(fx.store, track_ids=[track])["face_id"]) == members
    long_list = [track, *range(10**6, 10**6 + CHUNK)]
    many, many_vectors = faces_frame(fx.store, track_ids=long_list, with_vectors=True)
    assert set(many["face_id"]) == members and len(many_vectors) == len(many)
    np.testing.assert_array_equal(many_vectors, vectors[frame["face_id"].isin(members).to_numpy()])
    assert faces_frame(fx.store, track_ids=[]).empty
    # an unknown model id has no embedding: the face rows remain, their crops and vectors do not
    other = faces_frame(fx.store, model_id="no-such-model")
    assert len(other) == len(frame) and other["crop_path"].isna().all()
    empty, no_vectors = faces_frame(fx.store, model_id="no-such-model", with_vectors=True)
    assert len(empty) == 0 and no_vectors.shape[0] == 0
    assert list(face_models(fx.store)["faces"]) == [len(frame)]


def test_face_versions_drive_optimistic_locking(fx: FixtureStore):
    frame = faces_frame(fx.store).set_index("face_id")
    face = fx.gif_faces[0]
    seen = {face: int(frame.loc[face, "version"])}
    relabel_faces(fx.store, [face], fx.classes["Ariel Sharon"], "ann", expected_versions=seen)
    after = faces_frame(fx.store).set_index("face_id").loc[face]
    assert (after.class_name, after.label_status, after.editor) == ("Ariel Sharon", "relabeled", "ann")
    assert after.version == seen[face] + 1
    with pytest.raises(ConflictError, match="changed by ann"):
        mark_unknown(fx.store, [face], "bob", expected_versions=seen)  # bob saw the old version


# -- classes -----------------------------------------------------------------------------
def test_classes_frame_counts_and_versions(fx: FixtureStore):
    frame = classes_frame(fx.store)
    assert list(frame.columns) == CLASS_COLUMNS
    assert list(frame["name"]) == sorted(PEOPLE.values(), key=str.casefold)
    with fx.store() as s:
        per_class = dict(s.execute(select(FaceLabel.class_id, func.count()).group_by(FaceLabel.class_id)).all())
        relabeled = dict(s.execute(select(FaceLabel.class_id, func.count()).where(FaceLabel.status == "relabeled")
                                   .group_by(FaceLabel.class_id)).all())
        predicted_by = dict(s.execute(select(FaceLabel.predicted_class_id, func.count())
                                      .group_by(FaceLabel.predicted_class_id)).all())
    for row in frame.itertuples():
        assert row.faces == per_class.get(row.class_id, 0)
        assert row.relabeled == relabeled.get(row.class_id, 0)
        assert row.confirmed == row.approved + row.relabeled
        assert row.faces == row.confirmed + row.predicted
        assert row.predicted_by_model == predicted_by.get(row.class_id, 0)
        assert row.status == "active" and row.version == 1 and row.updated_by == EDITOR
    serena = frame.set_index("name").loc["Serena Williams"]
    assert serena.predicted == len(fx.gif_faces) and serena.gender == "female" and serena.birth_year == 1981
    # a rename shows up with a new version, and the catalog stays sorted by name
    rename_class(fx.store, fx.classes["Ariel Sharon"], "Zeev Ariel", "ann", expected_version=1)
    renamed = classes_frame(fx.store)
    assert list(renamed["name"]) == ["Serena Williams", "Zeev Ariel"]
    row = renamed.set_index("class_id").loc[fx.classes["Ariel Sharon"]]
    assert (row["name"], row["version"], row["updated_by"]) == ("Zeev Ariel", 2, "ann")
    assert history_frame(fx.store, f"class:{fx.classes['Ariel Sharon']}")["operation"].iloc[0] == "rename_class"
    assert list(search_classes(renamed, "zeev")["name"]) == ["Zeev Ariel"]
    assert list(search_classes(renamed, "ＳＥＲＥＮＡ", ["active"])["name"]) == ["Serena Williams"]  # width, case
    assert len(search_classes(renamed, "", ["retired"])) == 0 and len(search_classes(renamed)) == 2
    ann = events_frame(fx.store, "ann")
    assert list(ann["operation"]) == ["rename_class"] and ann["summary"].iloc[0].endswith("'Zeev Ariel'")


# -- media, tags, tracks -------------------------------------------------------------------
def test_media_frame(fx: FixtureStore):
    frame = media_frame(fx.store)
    assert list(frame.columns) == MEDIA_COLUMNS
    assert len(frame) == fx.summary.ingested + fx.summary.cached + fx.summary.failed
    failed = frame[frame["status"] == "failed"]
    assert list(failed["name"]) == ["broken.gif"] and failed["error"].iloc[0]
    assert list(failed["name"]) == [Path(p).name for p, _ in fx.summary.failures]
    faces = faces_frame(fx.store).groupby("media_id").size()
    for row in frame.itertuples():
        assert row.faces == faces.get(row.media_id, 0)
        assert row.tags == _count(fx.store, MediaTag, MediaTag.media_id == row.media_id, MediaTag.status == "active")
        assert row.tracks == _count(fx.store, Track, Track.media_id == row.media_id)
    gif = frame.set_index("name").loc[GIF]
    assert (gif.kind, gif.status) == ("gif", "ok") and gif.total_frames > 1 and gif.faces == len(fx.gif_faces)


def test_media_tags_frame(fx: FixtureStore):
    everything = media_tags_frame(fx.store)
    assert list(everything.columns) == MEDIA_TAG_COLUMNS
    assert len(everything) == _count(fx.store, MediaTag)
    gif = media_tags_frame(fx.store, media_id=fx.media[GIF])
    assert list(gif["tag"]) == ["jennifer lawrence", "nod", "happy"]  # by confidence (0.8, 0.8, 0.6), then name
    assert list(gif["status"]) == ["active", "active", "suggested"]
    assert gif.set_index("tag").loc["happy", "source"] == "experts_voting"
    nod = media_tags_frame(fx.store, tag="  NOD ")  # any spelling of the tag
    assert list(nod["confidence"]) == sorted(nod["confidence"], reverse=True) and len(nod) == 2
    assert list(nod["media_id"]) == [fx.media[GIF], fx.media[sorted(fx.largest_face)[0]]]
    assert list(media_tags_frame(fx.store, media_id=fx.media[GIF], status="suggested")["tag"]) == ["happy"]
    counts = tag_counts_frame(fx.store).set_index("tag")
    assert counts.loc["nod", "active"] == 2 and counts.loc["happy", "suggested"] == 1
    assert counts.loc["nod", "mean_confidence"] == pytest.approx(nod["confidence"].mean())
    assert len(media_tags_frame(fx.store, tag="no such tag")) == 0


def test_tracks_frame_puts_undecided_first(fx: FixtureStore):
    frame = tracks_frame(fx.store)
    assert list(frame.columns) == TRACK_COLUMNS
    assert len(frame) == _count(fx.store, Track)
    undecided = frame[~frame["has_decision"]]
    assert len(undecided) > 0 and not frame["has_decision"].iloc[0]
    assert list(frame["has_decision"]) == sorted(frame["has_decision"])  # False before True
    labels = faces_frame(fx.store)
    for row in frame.itertuples():
        members = labels[labels["track_id"] == row.track_id]
        assert len(members) == row.n_faces == row.decided + row.undecided
        assert row.decided == members["label_status"].isin(["approved", "rejected", "relabeled", "unknown"]).sum()
        assert row.representative_face_id in set(members["face_id"])
        assert (fx.data_dir / row.representative_crop_path).is_file()
    gif_tracks = frame[frame["media_id"] == fx.media[GIF]]
    assert set(gif_tracks["predicted_class_name"]) == {"Serena Williams"} and not gif_tracks["has_decision"].any()
    # a decision on one face of a track moves it behind the undecided ones
    track = int(gif_tracks["track_id"].iloc[0])
    face = int(labels[labels["track_id"] == track]["face_id"].iloc[0])
    mark_unknown(fx.store, [face], "ann")
    after = tracks_frame(fx.store).set_index("track_id").loc[track]
    assert after.has_decision and after.decided == 1


def test_overview_and_empty_store(fx: FixtureStore, tmp_path):
    overview = store_overview(fx.store)
    assert overview["media_failed"] == fx.summary.failed and overview["faces"] == fx.summary.faces
    assert overview["labels"]["predicted"] == len(fx.gif_faces) and overview["tags_suggested"] == 1
    assert overview["faces_unlabeled"] == _count(fx.store, Face) - _count(fx.store, FaceLabel)
    empty = open_store(f"sqlite:///{tmp_path / 'empty.db'}")
    for query, columns in [(faces_frame, FACE_COLUMNS), (classes_frame, CLASS_COLUMNS), (media_frame, MEDIA_COLUMNS),
                           (media_tags_frame, MEDIA_TAG_COLUMNS), (tracks_frame, TRACK_COLUMNS)]:
        frame = query(empty)
        assert len(frame) == 0 and list(frame.columns) == columns, query.__name__
    frame, vectors = faces_frame(empty, with_vectors=True)
    assert len(frame) == 0 and vectors.shape[0] == 0


def test_prediction_text_tells_an_open_set_refusal_from_no_prediction() -> None:
    names = pd.Series(["Ariel Sharon", None, None], index=[7, 8, 9])
    confidences = pd.Series([0.91, 0.12, np.nan], index=[7, 8, 9])
    text = prediction_text(names, confidences)
    assert text.tolist() == ["Ariel Sharon", UNKNOWN_OPEN_SET, NOT_PREDICTED]
    assert text.index.tolist() == [7, 8, 9]

"""The loop that turns editors' decisions into better predictions: fit, predict, retrain.

Editors approve and relabel faces; those confirmed labels (CONFIRMED_STATUSES) are the only
training data. `fit_classifier` builds the centroid + kNN classifier from them (classes with
too few confirmed faces are skipped and reported, never silently dropped), `refresh_predictions`
writes a prediction for every face (top-5 with confidences; open-set unknown is class None)
through `record_predictions`, which never overwrites an editor's decision, and one prediction
per face track (per person in a GIF) onto the track. `retrain` trains the retraining head,
measures it against the centroid classifier on held-out confirmed faces, keeps the better one
and refreshes the faces nobody has decided yet.

What an ML engineer can rely on:
- One face embedding model per run. Distances between two models' vectors mean nothing, so a
  store holding several models must be told which (`model_id`); it is never guessed.
- Labels given to the models are class ids as strings: renaming a class changes nothing, and
  the artifacts carry an id -> name map (`classes.json`) for people reading them.
- Faces editors marked "unknown" (real people outside the class list) calibrate the open-set
  threshold of the centroid classifier: with a short class list the leave-one-out calibration
  has too few impostors (CalibrationWarning), and those faces are exactly the ones that must
  come out unknown.
- Artifacts are versioned folders under `<data_dir>/models/`: `celebrity/<version>/` (centroid
  classifier), `head/<version>/` (retrained head), `retrain/<time>-<version>.json` (the report).
- Track predictions are derived data, like the track vectors: rewritten by every refresh and
  by a re-ingest of the GIF, not audited one by one (the face predictions of the same refresh
  carry the audit event). So an undo of that refresh restores the faces' predictions and leaves
  the track's: every reader goes through `current_track_prediction`, which counts a track's
  prediction only while one of its faces still carries a prediction of the same model version
  (a refresh writes its version onto the faces of every track it predicts), so an undone model
  never names a track. The track method defaults to "mean" (classify the normalised mean
  embedding) rather than GIPHY's per-frame "product". bench/recognition.py on LFW tracks of 3-5
  photos (2026-11-26): top-1 is equal (0.987 / 1.000 / 1.000 at k = 1 / 3 / 5 reference photos),
  open-set accuracy mean 0.956 / 0.982 / 0.979 vs product 0.820 / 0.980 / 0.988. Product only
  wins by 0.009 once a class has 5 references and loses by 0.136 with one: multiplying
  probabilities makes every track confident, so with few references impostor tracks are named.
"""
from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import pandas as pd
from sqlalchemy import func, null, select, update
from sqlalchemy.orm import Session, sessionmaker

from labeling.db import session_scope
from labeling.errors import ValidationError
from labeling.face_labels import Prediction, mapped_prediction, prediction_targets, record_predictions
# current_class_targets, current_top: the rule lives in queries (tracks_frame reads it too), re-exported here
from labeling.queries import (DECIDED_STATUSES, current_class_targets, current_top, current_track_prediction, face_models,
                              faces_frame)
from labeling.schema import CONFIRMED_STATUSES, CelebrityClass, FaceEmbedding, FaceLabel, Media, Track, utcnow
from models.celebrity_classifier import (LOG_FLOOR, TRACK_METHODS, UNKNOWN, CalibrationWarning, CentroidKnnClassifier,
                                         ClassifierError, TrackPrediction, as_embeddings, distances_to, softmax_rows,
                                         top_pairs)
from models.retrain_head import OnStep  # the one stage-callback type (autotag's too)

DEFAULT_TRACK_METHOD = "mean"
DEFAULT_TOP = 5
MODELS_DIR = "models"
CELEBRITY_DIR = "celebrity"
HEAD_DIR = "head"
REPORTS_DIR = "retrain"
CLASSES_FILE = "classes.json"
WRITE_BATCH = 5000  # faces per prediction batch and per write chunk of the run's one operation: paces the progress bar
HEAD_VERSION_PREFIX = "head-"  # models.retrain_head.HeadModel.version: the model versions a retrain head writes
NO_CLASS = "no-class"  # holdout label of faces editors marked unknown (any string that is not a class id)
FACE_SCOPES = ("all", "undecided")

Progress = Callable[[int, int], None]
# A face of a retrain's refresh (predicted, then written) takes about as long as this many faces take through one
# epoch of the head's training: the refresh of 2,072 faces took 0.4 s, an epoch over 3,432 faces 0.2 s (a
# 6,000-face store), so about 3, rounded up for the writes of a refresh that changes its predictions
REFRESH_FACE_EPOCHS = 5
EPOCH_FLOOR_FACES = 1000  # an epoch's time is at least this many faces' worth: its fixed cost (measured with few faces)


class Predictor(Protocol):
    """What CentroidKnnClassifier and HeadModel share, and all the refresh needs."""

    classes_: np.ndarray
    centroids_: np.ndarray
    threshold_: float
    false_accept_rate_: float  # share of calibration impostors accepted at threshold_ (NaN: none to measure)
    model_id_: str

    @property
    def version(self) -> str: ...
    def predict(self, vectors: Any, model_id: str) -> tuple[np.ndarray, np.ndarray]: ...
    def predict_proba(self, vectors: Any, model_id: str) -> np.ndarray: ...
    def predict_top(self, vectors: Any, model_id: str, top: int = 5) -> list[list[tuple[str, float]]]: ...


# -- reading the store -------------------------------------------------------------------------
def resolve_face_model(store: sessionmaker[Session], model_id: str | None = None) -> str:
    """The face embedding model to work on: the one given, or the store's only one."""
    models = face_models(store)
    if models.empty:
        raise ValidationError("the store has no face embeddings: ingest media with faces first")
    known = dict(zip(models["model_id"], models["faces"]))
    listed = ", ".join(f"{m} ({n} faces)" for m, n in known.items())
    if model_id is None:
        if len(known) > 1:
            raise ValidationError(f"the store holds face embeddings of {len(known)} models ({listed}); their "
                                  "distances cannot be compared, so name the one to use (--face-model)")
        return str(models["model_id"].iloc[0])
    if model_id not in known:
        raise ValidationError(f"the store has no face embeddings of model {model_id!r} (it has {listed})")
    return model_id


@dataclass
class Snapshot:
    """Every face with an embedding of one model, its label, and the class catalog, read once."""

    model_id: str
    faces: pd.DataFrame  # labeling.queries.faces_frame rows
    vectors: np.ndarray  # aligned with `faces`
    classes: dict[int, tuple[str, str]]  # class id -> (name, status)
    confirmed_without_embedding: int  # confirmed faces that have no embedding of this model


def read_snapshot(store: sessionmaker[Session], model_id: str | None = None) -> Snapshot:
    model_id = resolve_face_model(store, model_id)
    frame, vectors = faces_frame(store, model_id, with_vectors=True)
    with store() as session:
        classes = {cid: (name, status) for cid, name, status in
                   session.execute(select(CelebrityClass.id, CelebrityClass.name, CelebrityClass.status))}
        embedded = select(FaceEmbedding.face_id).where(FaceEmbedding.model_id == model_id)
        missing = session.scalar(select(func.count()).select_from(FaceLabel).where(
            FaceLabel.status.in_(CONFIRMED_STATUSES), FaceLabel.face_id.not_in(embedded)))
    return Snapshot(model_id, frame, vectors, classes, int(missing or 0))


# -- the training set (pure) --------------------------------------------------------------------
@dataclass
class TrainingSet:
    """Confirmed faces of usable classes: rows aligned across the arrays."""

    model_id: str
    face_ids: np.ndarray
    media_ids: np.ndarray
    class_ids: np.ndarray
    vectors: np.ndarray
    class_names: dict[int, str]
    notes: list[str] = field(default_factory=list)  # what was skipped, and why

    @property
    def labels(self) -> list[str]:
        return [str(c) for c in self.class_ids.tolist()]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def subset(self, mask: np.ndarray) -> tuple[np.ndarray, list[str]]:
        return self.vectors[mask], [str(c) for c in self.class_ids[mask].tolist()]


def training_set(snapshot: Snapshot, min_faces_per_class: int = 2) -> TrainingSet:
    """Confirmed labels of active or proposed classes; refuses when fewer than 2 classes are usable.

    Classes with fewer than `min_faces_per_class` confirmed faces are skipped and named in
    `notes`: one photo is not a centroid, and it leaves nothing to calibrate the open-set
    threshold on.
    """
    if min_faces_per_class < 2:
        raise ValidationError(f"min_faces_per_class must be at least 2, got {min_faces_per_class}")
    f = snapshot.faces
    confirmed = f["label_status"].isin(CONFIRMED_STATUSES).to_numpy() & f["class_id"].notna().to_numpy()
    notes: list[str] = []
    if snapshot.confirmed_without_embedding:
        notes.append(f"{snapshot.confirmed_without_embedding} confirmed face(s) have no {snapshot.model_id} "
                     "embedding and are not used")
    class_ids = f["class_id"].fillna(-1).to_numpy(np.int64)
    usable = np.zeros(len(f), dtype=bool)
    names: dict[int, str] = {}
    found, counts = np.unique(class_ids[confirmed], return_counts=True)
    for cid, n in zip(found.tolist(), counts.tolist()):
        name, status = snapshot.classes.get(cid, (f"#{cid}", "retired"))
        if status == "retired":
            notes.append(f"class {name!r} (id {cid}) is retired: its {n} confirmed face(s) are not used")
        elif n < min_faces_per_class:
            notes.append(f"class {name!r} (id {cid}) skipped: {n} confirmed face(s), needs {min_faces_per_class}")
        else:
            names[cid] = name
            usable |= confirmed & (class_ids == cid)
    if len(names) < 2:
        if not confirmed.any():
            why = (f"no confirmed labels (approved or relabeled faces) with {snapshot.model_id} embeddings: "
                   "approve or relabel some faces first")
        else:
            have = ", ".join(f"{n!r}" for n in names.values()) or "none"
            why = (f"a classifier needs at least 2 classes with {min_faces_per_class}+ confirmed faces each; "
                   f"usable: {have}")
        raise ValidationError("; ".join([why, *notes]))
    return TrainingSet(snapshot.model_id, f["face_id"].to_numpy(np.int64)[usable],
                       f["media_id"].to_numpy(np.int64)[usable], class_ids[usable],
                       snapshot.vectors[usable], names, notes)


def _unknown_rows(snapshot: Snapshot) -> np.ndarray:
    return (snapshot.faces["label_status"] == "unknown").to_numpy()


def unknown_faces(snapshot: Snapshot) -> np.ndarray:
    """Vectors of faces editors marked unknown: people outside the class list."""
    return snapshot.vectors[_unknown_rows(snapshot)]


def calibration_set(vectors: np.ndarray, labels: list[str], unknown: np.ndarray | None
                    ) -> tuple[np.ndarray, list[str]] | None:
    """What a model's open-set threshold is recalibrated on: its training faces plus the faces editors
    marked unknown (as impostors), or None when there are no such faces (the leave-one-out calibration
    stands). One definition for the deployed models and the ones retrain compares."""
    if unknown is None or not len(unknown):
        return None
    return np.concatenate([vectors, unknown]), list(labels) + [NO_CLASS] * len(unknown)


# -- fitting ------------------------------------------------------------------------------------
def _quietly(notes: list[str], fn: Callable[[], Any]) -> Any:
    """Run fn, turning CalibrationWarnings into notes (once each) instead of stderr noise."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationWarning)
        out = fn()
    for w in caught:
        if issubclass(w.category, CalibrationWarning) and str(w.message) not in notes:
            notes.append(str(w.message))
    return out


def _superseded(notes: list[str], calibrated: bool, fn: Callable[[], Any]) -> Any:
    """Run fn (a fit whose threshold a calibrate() may replace): its CalibrationWarnings become notes
    only when no calibration follows.

    Why: a fit on a short class list warns that its threshold is capped (far=nan); calibrate() then
    replaces that threshold, so the note would contradict the summary's threshold and far (predict
    printed "capped at 0.0430" beside threshold=0.0723 far=0.0100). Only calibrate()'s warnings
    speak for the threshold deployed."""
    return _quietly([] if calibrated else notes, fn)


def calibrated_note(unknown_faces: int) -> str:
    """What a model calibrated on the faces editors marked unknown says of its threshold (the centroid
    classifier's fit and the retrained head alike)."""
    return f"open-set threshold calibrated with {unknown_faces} face(s) editors marked unknown"


def fit_centroid(data: TrainingSet, unknown: np.ndarray | None = None,
                 **params: Any) -> CentroidKnnClassifier:
    """CentroidKnnClassifier on the training set; unknown-marked faces recalibrate its threshold.

    Genuine distances hold out each face's whole media item (the frames of one GIF track are nearly one
    face), so the genuine-accept rate it reports is not flattered by a track's other frames."""
    try:
        calibration = calibration_set(data.vectors, data.labels, unknown)
        clf = _superseded(data.notes, calibration is not None,
                          lambda: CentroidKnnClassifier(**params).fit(data.vectors, data.labels, data.model_id,
                                                                         groups=data.media_ids))
        if calibration is not None:
            _quietly(data.notes, lambda: clf.calibrate(*calibration, data.model_id, training=True))
            data.notes.append(calibrated_note(len(unknown)))
    except ClassifierError as exc:
        raise ValidationError(str(exc)) from exc
    return clf


@dataclass
class FitResult:
    classifier: CentroidKnnClassifier
    data: TrainingSet
    artifact: Path | None = None


def fit_classifier(store: sessionmaker[Session], model_id: str | None = None, *, data_dir: Path | None = None,
                   min_faces_per_class: int = 2, calibrate_unknown: bool = True,
                   snapshot: Snapshot | None = None, **classifier_params: Any) -> FitResult:
    """The centroid classifier of the store's confirmed labels; saved under data_dir when given. Writes
    nothing to the store."""
    snapshot = snapshot or read_snapshot(store, model_id)
    data = training_set(snapshot, min_faces_per_class)
    clf = fit_centroid(data, unknown_faces(snapshot) if calibrate_unknown else None,
                       min_faces_per_class=min_faces_per_class, **classifier_params)
    artifact = save_classifier(clf, data_dir, data.class_names) if data_dir is not None else None
    return FitResult(clf, data, artifact)


# -- artifacts ----------------------------------------------------------------------------------
def models_dir(data_dir: Path) -> Path:
    return Path(data_dir) / MODELS_DIR


def _write_classes(folder: Path, class_names: dict[int, str]) -> None:
    (folder / CLASSES_FILE).write_text(json.dumps({str(k): v for k, v in sorted(class_names.items())}, indent=2,
                                                  ensure_ascii=False), encoding="utf-8")


def save_classifier(clf: CentroidKnnClassifier, data_dir: Path, class_names: dict[int, str]) -> Path:
    """`<data_dir>/models/celebrity/<version>/` plus classes.json (class id -> name when trained)."""
    folder = clf.save(models_dir(data_dir) / CELEBRITY_DIR / clf.version)
    _write_classes(folder, class_names)
    return folder


def save_head(head: Any, data_dir: Path, class_names: dict[int, str]) -> Path:
    """`<data_dir>/models/head/<version>/` plus classes.json."""
    folder = head.save(models_dir(data_dir) / HEAD_DIR)
    _write_classes(folder, class_names)
    return folder


def trained_on(data_dir: Path, version: str) -> str | None:
    """The embedding model a saved classifier or head of this version was trained on (None when its
    folder is not in this data folder): read from the artifact, which records it."""
    for meta in (models_dir(data_dir) / CELEBRITY_DIR / version / "classifier.json",
                 models_dir(data_dir) / HEAD_DIR / version / "meta.json"):
        if meta.is_file():
            try:
                return json.loads(meta.read_text(encoding="utf-8")).get("model_id")
            except (OSError, ValueError):
                return None
    return None


def is_head_version(version: str) -> bool:
    """Whether a model version names a retrained head (models.retrain_head.HeadModel.version)."""
    return str(version).startswith(HEAD_VERSION_PREFIX)


def replaced_other_models(faces: pd.DataFrame, data_dir: Path | None, model_id: str, version: str) -> list[str]:
    """Notes on predictions this run replaces that a classifier of another embedding model made, or
    that a head `giflens retrain` deployed when this run's model is not a head.

    Why: a face holds one prediction, the latest run's; predicting with a second embedding model
    replaces the first one's predictions of the faces both embed, and `giflens predict` (the centroid
    classifier) replaces the deployed head's, which retrain chose because it beat that classifier on
    the holdout. Both are allowed (an editor may switch models, or go back), never silent."""
    if faces.empty:
        return []
    notes = []
    for old, n in faces["model_version"].dropna().value_counts().items():
        if old == version:
            continue
        other = trained_on(data_dir, str(old)) if data_dir is not None else None
        if other is not None and other != model_id:
            notes.append(f"{n} face(s) had predictions of {old} (a classifier of {other} embeddings): replaced by "
                         f"this run's on {model_id} (a face keeps one prediction, the latest)")
        elif is_head_version(old) and not is_head_version(version):
            notes.append(f"{n} face(s) had predictions of {old} (deployed by retrain): replaced by {version} "
                         "(a face keeps one prediction, the latest)")
    return notes


def load_predictor(folder: Path) -> Predictor:
    """A saved centroid classifier or head, from its version folder."""
    folder = Path(folder)
    if (folder / "classifier.json").is_file():
        return CentroidKnnClassifier.load(folder)
    from models.retrain_head import HeadModel

    return HeadModel.load(folder)


# -- predicting (pure) --------------------------------------------------------------------------
def _class_id(label: str) -> int | None:
    return None if label == UNKNOWN else int(label)


def predict_faces(predictor: Predictor, face_ids: Sequence[int], vectors: np.ndarray, model_id: str,
                  top: int = DEFAULT_TOP) -> list[Prediction]:
    """One Prediction per face: the open-set answer (None = unknown), its confidence, the top classes."""
    if not len(face_ids):
        return []
    labels, confidences = predictor.predict(vectors, model_id)
    tops = predictor.predict_top(vectors, model_id, top)
    return [Prediction(int(f), _class_id(str(label)), float(np.clip(c, 0.0, 1.0)),
                       [(int(name), float(np.clip(p, 0.0, 1.0))) for name, p in row])
            for f, label, c, row in zip(face_ids, labels, confidences, tops)]


def predict_tracks(predictor: Predictor, track_ids: np.ndarray, vectors: np.ndarray, model_id: str,
                   method: str = DEFAULT_TRACK_METHOD, top: int = DEFAULT_TOP) -> dict[int, TrackPrediction]:
    """One answer per track from its faces' rows (track_ids aligned with vectors), all tracks in one pass.

    The rules of CentroidKnnClassifier.predict_track, for any predictor: "mean" classifies the
    normalised mean embedding; "product" multiplies the faces' probabilities (log space) and takes
    the faces' mean distance to the winner's centroid. The open-set distance is always to the
    embedding centroid. A track whose faces cancel out (no mean direction) gets no answer.
    """
    if method not in TRACK_METHODS:
        raise ValidationError(f"track method must be one of {', '.join(TRACK_METHODS)}, got {method!r}")
    track_ids = np.asarray(track_ids, dtype=np.int64)
    if not len(track_ids):
        return {}
    order = np.argsort(track_ids, kind="stable")
    ids, starts, counts = np.unique(track_ids[order], return_index=True, return_counts=True)
    x = as_embeddings(vectors[order], predictor.centroids_.shape[1])
    if method == "mean":
        sums = np.add.reduceat(x.astype(np.float64), starts, axis=0)
        norms = np.linalg.norm(sums, axis=1)
        keep = norms > 1e-6 * counts
        ids, means = ids[keep], (sums[keep] / norms[keep, None]).astype(np.float32)
        if not len(ids):
            return {}
        proba = predictor.predict_proba(means, model_id)
        best = proba.argmax(axis=1)
        best_distance = distances_to(means, predictor.centroids_, best)
    else:
        p = predictor.predict_proba(x, model_id)
        proba = softmax_rows(np.add.reduceat(np.log(np.maximum(p, LOG_FLOOR)), starts, axis=0))
        best = proba.argmax(axis=1)
        per_face = distances_to(x, predictor.centroids_, np.repeat(best, counts))
        best_distance = np.add.reduceat(per_face, starts) / counts
    rows = np.arange(len(best))
    tops = top_pairs(proba, predictor.classes_, top)
    return {int(t): TrackPrediction(str(predictor.classes_[b]) if d <= predictor.threshold_ else UNKNOWN,
                                    float(proba[r, b]), float(d), tops[r])
            for t, r, b, d in zip(ids.tolist(), rows.tolist(), best.tolist(), best_distance.tolist())}


def predict_track(predictor: Predictor, vectors: np.ndarray, model_id: str, method: str = DEFAULT_TRACK_METHOD,
                  top: int = DEFAULT_TOP) -> TrackPrediction:
    """One track's answer (see predict_tracks)."""
    found = predict_tracks(predictor, np.zeros(len(vectors), dtype=np.int64), vectors, model_id, method, top)
    if not found:
        raise ValidationError("the track's faces cancel out: their mean embedding has no direction")
    return found[0]


# -- refreshing the store -----------------------------------------------------------------------
@dataclass
class RefreshResult:
    model_id: str
    model_version: str
    faces: int = 0  # faces predicted
    named: int = 0  # ... naming a class
    unknown: int = 0  # ... open-set unknown (class None)
    kept: int = 0  # faces an editor or an import decided: their decision kept, prediction columns refreshed
    changed: int = 0  # face labels written: the others held the same prediction already
    tracks: int = 0
    tracks_named: int = 0
    # The open-set cut the predictions used (cosine distance to the class centroid; farther is unknown)
    # and the false-accept rate it implies on the calibration impostors: the two figures that say how
    # often a stranger gets a celebrity's name. NaN when the model could not measure it: no impostors,
    # or fewer than 1 / target_far (then the threshold is capped at the face model's prior, and a note
    # says so: models.celebrity_classifier.open_set_threshold).
    threshold: float = float("nan")
    far: float = float("nan")
    event_ids: list[int] = field(default_factory=list)  # the run's audit event (one); empty when nothing changed
    artifact: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def event_id(self) -> int | None:
        return self.event_ids[-1] if self.event_ids else None

    def event_phrase(self) -> str:
        """"event=12" (the number `giflens undo` takes), "event=none" when the run changed nothing."""
        return f"event={self.event_id if self.event_id is not None else 'none'}"

    @property
    def summary(self) -> str:
        return (f"predictions of {self.model_version}: {self.faces} faces ({self.named} named, {self.unknown} unknown, "
                f"{self.kept} decisions kept, {self.changed} changed), {self.tracks} tracks ({self.tracks_named} named); open-set threshold "
                f"{self.threshold:.4f} ({self._far_phrase()})")

    def _far_phrase(self) -> str:
        return ("false-accept rate not measured: too few impostors" if math.isnan(self.far)
                else f"false-accept rate {self.far:.4f}")

    def line(self) -> str:
        return (f"model={self.model_version} face_model={self.model_id} faces={self.faces} changed={self.changed} "
                f"named={self.named} "
                f"unknown={self.unknown} kept={self.kept} tracks={self.tracks} tracks_named={self.tracks_named}"
                + (f" artifact={self.artifact}" if self.artifact else "")
                + f" {self.event_phrase()} threshold={self.threshold:.4f} far={self.far:.4f}")


def _track_rows(predictor: Predictor, snapshot: Snapshot, method: str, top: int,
                chosen: np.ndarray) -> list[dict[str, Any]]:
    """Track update rows (by primary key) from the snapshot's faces grouped by track, for the tracks
    holding a face this refresh predicts (`chosen` rows of the snapshot); each from all its faces.

    Why not every track: a track's prediction counts only while one of its faces carries the same
    model version (`current_track_prediction`), and a refresh of the undecided faces writes none
    onto a track every face of which an editor decided: predicting it would be discarded unread."""
    track_ids = snapshot.faces["track_id"].fillna(-1).to_numpy(np.int64)
    member = np.isin(track_ids, np.unique(track_ids[chosen & (track_ids >= 0)]))
    answers = predict_tracks(predictor, track_ids[member], snapshot.vectors[member], snapshot.model_id, method, top)
    rows, now = [], utcnow()
    for track_id, p in answers.items():
        rows.append({"id": track_id, "predicted_class_id": _class_id(p.label),
                     "predicted_confidence": float(np.clip(p.confidence, 0.0, 1.0)),
                     "predicted_distance": float(p.distance),
                     "predicted_top": [[int(c), round(float(np.clip(s, 0.0, 1.0)), 6)] for c, s in p.top],
                     "prediction_method": method, "model_version": predictor.version, "predicted_at": now})
    return rows


def _current_classes(session: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Track rows naming each class's current target (`prediction_targets`: the end of its merge chain,
    None for a class retired without a merge), so approving the track never meets a retired class."""
    named = {r["predicted_class_id"] for r in rows} | {c for r in rows for c, _ in r["predicted_top"]}
    named.discard(None)
    targets = prediction_targets(session, named) if named else {}
    out = []
    for r in rows:
        p = mapped_prediction(Prediction(r["id"], r["predicted_class_id"], r["predicted_confidence"],
                                         [(c, s) for c, s in r["predicted_top"]]), targets)
        out.append({**r, "predicted_class_id": p.class_id, "predicted_top": [[c, s] for c, s in p.top]})
    return out


def _check_refresh_params(faces: str, top: int, track_method: str) -> None:
    if faces not in FACE_SCOPES:
        raise ValidationError(f"faces must be one of {', '.join(FACE_SCOPES)}, got {faces!r}")
    if track_method not in TRACK_METHODS:
        raise ValidationError(f"track method must be one of {', '.join(TRACK_METHODS)}, got {track_method!r}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValidationError(f"top must be a positive number of classes, got {top!r}")


def refresh_predictions(store: sessionmaker[Session], model_id: str | None = None, predictor: Predictor | None = None,
                        *, data_dir: Path | None = None, faces: str = "all", top: int = DEFAULT_TOP,
                        track_method: str = DEFAULT_TRACK_METHOD, editor: str = "model",
                        on_progress: Progress | None = None, batch_size: int = WRITE_BATCH,
                        snapshot: Snapshot | None = None) -> RefreshResult:
    """Predict faces of one embedding model and every track of it, and write the predictions.

    predictor None fits the centroid classifier from the confirmed labels (saved under data_dir
    when given). faces="all" refreshes every face (decisions are kept by record_predictions;
    only the prediction columns beside them change); "undecided" only faces without a decision.
    Faces are predicted and written `batch_size` at a time, all in one audited operation
    (model_version = predictor.version), so `giflens undo` takes the whole run back; a face whose
    prediction is unchanged is not written, and a run that changes nothing writes no audit event.
    on_progress(done, total): total is faces + tracks; each face counts half when predicted and
    half when written (done = (predicted + written) // 2, then + tracks written), so the bar moves
    while the model runs (minutes at 50k faces) and while rows are written. done never goes down,
    never exceeds total, and ends at total.
    """
    _check_refresh_params(faces, top, track_method)
    if batch_size < 1:
        raise ValidationError(f"batch_size must be a positive number of faces, got {batch_size}")
    if predictor is not None and model_id is not None and predictor.model_id_ != model_id:
        raise ValidationError(f"the model was trained on {predictor.model_id_!r} embeddings, not {model_id!r}")
    snapshot = snapshot or read_snapshot(store, model_id or (predictor.model_id_ if predictor else None))
    result_notes: list[str] = []
    artifact = None
    if predictor is None:
        fitted = fit_classifier(store, snapshot.model_id, data_dir=data_dir, snapshot=snapshot)
        predictor, artifact, result_notes = fitted.classifier, fitted.artifact, fitted.data.notes
    elif predictor.model_id_ != snapshot.model_id:
        raise ValidationError(f"the model was trained on {predictor.model_id_!r} embeddings, not {snapshot.model_id!r}")
    version = predictor.version
    f = snapshot.faces
    decided = f["label_status"].isin(DECIDED_STATUSES).to_numpy()
    chosen = np.ones(len(f), dtype=bool) if faces == "all" else ~decided
    face_ids = f["face_id"].to_numpy(np.int64)[chosen]
    vectors = snapshot.vectors[chosen]
    track_rows = _track_rows(predictor, snapshot, track_method, top, chosen) if len(f) else []
    total = len(face_ids) + len(track_rows)
    far = getattr(predictor, "false_accept_rate_", None)
    result_notes = [*result_notes, *replaced_other_models(f[chosen], data_dir, snapshot.model_id, version)]
    result = RefreshResult(snapshot.model_id, version, artifact=artifact, notes=list(result_notes),
                           threshold=float(predictor.threshold_), far=float("nan") if far is None else float(far))
    def faces_progress(predicted: int, written: int) -> None:
        if on_progress is not None:
            on_progress((predicted + written) // 2, total)

    faces_progress(0, 0)
    # predicted batch by batch (bounded score matrices), written as one operation so one undo takes
    # the whole run back; the write transaction is not held while the model runs
    predictions: list[Prediction] = []
    for start in range(0, len(face_ids), batch_size):
        predictions += predict_faces(predictor, face_ids[start:start + batch_size], vectors[start:start + batch_size],
                                     snapshot.model_id, top)
        faces_progress(len(predictions), 0)
    if predictions:
        op = record_predictions(store, predictions, version, editor=editor, chunk_size=batch_size,
                                on_chunk=lambda written: faces_progress(len(predictions), written))
        if op.event_id is not None:
            result.event_ids.append(op.event_id)
        result.changed = op.changed
    result.faces = len(predictions)
    result.named = sum(p.class_id is not None for p in predictions)
    result.unknown = result.faces - result.named
    result.kept = int((decided & chosen).sum())
    if track_rows:
        with session_scope(store) as session:
            # as record_predictions does for faces: a class merged since the fit is named by its target
            track_rows = _current_classes(session, track_rows)
            for start in range(0, len(track_rows), batch_size):
                session.execute(update(Track), track_rows[start:start + batch_size])
        result.tracks = len(track_rows)
        result.tracks_named = sum(r["predicted_class_id"] is not None for r in track_rows)
    if on_progress is not None:
        on_progress(total, total)
    return result


# -- retraining ---------------------------------------------------------------------------------
def _holdout_budget(share: float, n: int, min_train: int) -> int:
    """Faces of an n-face class a holdout of `share` may take: the rounded share, leaving min_train to train."""
    return min(int(np.floor(share * n + 0.5)), n - min_train)


def stratified_holdout(class_ids: np.ndarray, groups: np.ndarray, share: float, seed: int = 0,
                       min_train: int = 2) -> np.ndarray:
    """Boolean mask of held-out rows: about `share` of each class, whole groups at a time.

    Groups are near-duplicate media groups: frames of one GIF (or a re-upload of it) on both
    sides would make the holdout a memory test. Each class keeps at least `min_train` rows for
    training; a class that cannot spare a whole group holds nothing out. Deterministic for a seed.
    """
    if not 0.0 < share < 1.0:
        raise ValidationError(f"the holdout share must be in (0, 1), got {share}")
    held = np.zeros(len(class_ids), dtype=bool)
    for cid in sorted(set(class_ids.tolist())):
        rows = np.flatnonzero(class_ids == cid)
        budget = _holdout_budget(share, len(rows), min_train)
        by_group: dict[Any, list[int]] = {}
        for r in rows.tolist():
            by_group.setdefault(groups[r], []).append(r)
        keys = sorted(by_group, key=str)
        rng = np.random.default_rng([seed, int(cid)])
        taken = 0
        for k in (keys[i] for i in rng.permutation(len(keys))):
            if taken + len(by_group[k]) <= budget:
                held[by_group[k]] = True
                taken += len(by_group[k])
    return held


def smallest_holdout_share(class_ids: np.ndarray, groups: np.ndarray, min_train: int = 2) -> float | None:
    """The smallest share (in hundredths) for which `stratified_holdout` holds out at least one face, or
    None when no class can spare a whole group at any share.

    Why: a share that rounds to no face in any class (0.05 of 5 faces) holds nothing out, and the
    editor needs the share that works, not the rule for class sizes, which their classes already meet."""
    best: int | None = None
    for cid in set(class_ids.tolist()):
        rows = np.flatnonzero(class_ids == cid)
        smallest = min(Counter(groups[r] for r in rows.tolist()).values())
        if smallest > len(rows) - min_train:
            continue  # no share spares a whole group of this class
        hundredths = max(1, math.ceil((smallest - 0.5) * 100 / len(rows)))
        while _holdout_budget(hundredths / 100, len(rows), min_train) < smallest:  # float rounding at the edge
            hundredths += 1
        best = hundredths if best is None else min(best, hundredths)
    return None if best is None or best >= 100 else best / 100


def empty_holdout_reason(class_ids: np.ndarray, groups: np.ndarray, share: float) -> str:
    """Why `stratified_holdout` held nothing out: the share is too small for the classes' sizes (and the
    smallest one that works), or no class has faces in enough media to spare any."""
    works = smallest_holdout_share(class_ids, groups)
    if works is None:
        return ("nothing to hold out: retraining needs a class with at least 3 confirmed faces in 2+ different "
                "media (each class keeps 2 for training)")
    largest = int(np.unique(class_ids, return_counts=True)[1].max())
    return (f"nothing to hold out: a holdout share of {share:g} rounds to no whole face or media group in any "
            f"class (the largest has {largest} confirmed faces); the smallest share that holds faces out is "
            f"{works:.2f}")


def unknown_holdout(media_ids: np.ndarray, groups_of: dict[int, Any], share: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of the faces editors marked unknown that are held out to score the open-set rule.

    Why split them: the models compared are recalibrated on these faces as the deployed ones are,
    and a threshold calibrated on a face refuses that face by construction, so scoring it would
    flatter the model. About `share` of them, whole near-duplicate groups at a time (one GIF's
    faces of a stranger are one person), and at least one is kept to calibrate on.
    """
    groups = np.array([groups_of[m] for m in media_ids.tolist()], dtype=object)
    return stratified_holdout(np.zeros(len(media_ids), dtype=np.int64), groups, share, seed, min_train=1)


def media_groups(store: sessionmaker[Session], faces: Sequence[tuple[Any, int, np.ndarray]],
                 model_id: str) -> dict[int, Any]:
    """media id -> copy group of the media holding `faces` (class, media id, vector of `model_id`):
    the export's grouping (`labeling.export.copy_groups`: frame pHashes, and faces (of any classes) this
    model places on one photo), so a mirrored or cropped copy of a photo never sits on both sides of
    the holdout, as it never straddles the export's split. Faces editors marked unknown come as
    class NO_CLASS: two copies of one stranger's photo are one group too. The groups an imported export
    gave its crops join and keep apart as in the export (`labeling.export.apart_labels`): crops of one clip
    are one group, and crops of different clips of one export are not joined by their hashes alone, or the
    holdout would join what the export keeps apart."""
    from labeling.export import apart_labels, copy_groups, same_photo_threshold
    from labeling.import_groups import group_key_pairs, recorded_groups

    ids = sorted({int(m) for _, m, _ in faces})
    hashes: dict[int, Any] = {}
    with store() as session:
        for start in range(0, len(ids), 5000):
            hashes.update(session.execute(select(Media.id, Media.frame_hashes)
                                          .where(Media.id.in_(ids[start:start + 5000]))).all())
        imported = recorded_groups(session, ids)  # the groups an imported export gave these media's crops
    groups, _ = copy_groups({m: hashes.get(m) for m in ids}, ((c, int(m), v) for c, m, v in faces),
                            same_photo_threshold(model_id), joined=group_key_pairs(imported),
                            apart=apart_labels(imported))
    return groups


def unknown_holdout_note(media_ids: np.ndarray, groups_of: dict[int, Any], held: np.ndarray) -> str | None:
    """A note when editors marked faces unknown but none is held out (all in one copy group, which
    is kept to calibrate on): the open-set accuracies then score no stranger, and without the note
    they would read as a measured open-set rule."""
    if not len(media_ids) or held.any():
        return None
    n_groups = len({groups_of[m] for m in media_ids.tolist()})
    where = ("one media item and its copies" if n_groups == 1
             else f"{n_groups} groups of media, each too large for the holdout share")
    return (f"none of the {len(media_ids)} face(s) editors marked unknown is held out (they come from {where}, "
            "kept to calibrate the open-set threshold): the open-set accuracies score known faces only; mark "
            "strangers unknown in more GIFs to measure the open-set rule")


@dataclass
class RetrainResult:
    """Holdout comparison, the artifacts written and the refresh of undecided faces.

    before: closed-set top-1 accuracy, on the held-out confirmed faces, of the centroid classifier
        (what `giflens predict` deploys) fitted on the training split only: the baseline.
    after: the same accuracy of the model retrain deployed (the head when it beat the baseline,
        else the centroid classifier), fitted on the same split and scored on the same faces.
    Both compared models are recalibrated, as the deployed ones are, on the training split plus the
    faces editors marked unknown that are not held out (`unknown_holdout`); the held-out ones
    (`holdout_unknown_faces`) must come out unknown in the open-set accuracies of `comparison`.
    Why not the predictions already in the store: a refresh also predicts decided faces with a
    model trained on them, so their stored predictions overstate accuracy. The deployed artifact
    is refitted on every confirmed label once the holdout has picked the recipe; its version is
    `model_version` (the holdout models' versions are in `comparison`). `notes` say what was
    skipped, and when no face marked unknown could be held out (`unknown_holdout_note`).
    """

    model_id: str
    classes: int
    train_faces: int
    holdout_faces: int
    holdout_unknown_faces: int
    before: float
    after: float
    deployed: str  # "head" | "centroid"
    model_version: str
    artifact: Path
    centroid_artifact: Path
    head_artifact: Path
    report: Path
    comparison: dict[str, Any]
    params: dict[str, Any]
    refresh: RefreshResult
    notes: list[str] = field(default_factory=list)

    @property
    def event_id(self) -> int | None:
        return self.refresh.event_id

    @property
    def decision(self) -> str:
        """One sentence on why this model was deployed: both candidates' closed-set / open-set accuracies on
        the held-out faces and the rule (the head must beat the centroid classifier, closed-set first, open-set
        breaking a tie; a full tie keeps the centroid classifier). Why: before= and after= alone do not say
        why a head with the same closed-set accuracy was not deployed."""
        c = self.comparison
        head = (c["head_accuracy"], c["head_open_set_accuracy"])
        centroid = (c["centroid_accuracy"], c["centroid_open_set_accuracy"])
        unknown = f" ({self.holdout_unknown_faces} of them marked unknown)" if self.holdout_unknown_faces else ""
        if self.deployed == "head":
            on = "closed-set" if head[0] > centroid[0] else "open-set accuracy at equal closed-set"
            outcome = f"the head is deployed (it beat the centroid classifier on {on})"
        else:
            outcome = ("the centroid classifier stays (a tie keeps it)" if head == centroid
                       else "the centroid classifier stays (the head did not beat it)")
        faces = c.get("holdout_faces", self.holdout_faces + self.holdout_unknown_faces)
        return (f"head {head[0]:.4f} closed-set / {head[1]:.4f} open-set vs centroid {centroid[0]:.4f} / "
                f"{centroid[1]:.4f} on {faces} held-out faces{unknown}: {outcome}")

    @property
    def summary(self) -> str:
        return (f"retrained on {self.train_faces} faces of {self.classes} classes: deployed {self.deployed} "
                f"{self.model_version}, holdout accuracy {self.before:.4f} -> {self.after:.4f}; "
                f"{self.refresh.faces} undecided faces predicted ({self.refresh.changed} changed)")

    def line(self) -> str:
        """key=value pairs, the refresh named as `giflens predict` names it (`faces=` looked at, `changed=`
        written: a count of faces looked at alone reads as rewritten ones), ending with before= after=.

        Both candidates' holdout closed-set accuracies are on the line (`centroid_accuracy=`,
        `head_accuracy=`) beside their open-set ones: before= and after= show the head's only when it
        was deployed (else after = before), and the report alone held the score it lost with."""
        return (f"classes={self.classes} train={self.train_faces} holdout={self.holdout_faces} "
                f"deployed={self.deployed} model={self.model_version} "
                f"centroid_accuracy={self.comparison['centroid_accuracy']:.4f} "
                f"head_accuracy={self.comparison['head_accuracy']:.4f} "
                f"centroid_open_set={self.comparison['centroid_open_set_accuracy']:.4f} "
                f"head_open_set={self.comparison['head_open_set_accuracy']:.4f} "
                f"faces={self.refresh.faces} changed={self.refresh.changed} {self.refresh.event_phrase()} "
                f"before={self.before:.4f} after={self.after:.4f}")

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "refresh"}
        out["refresh"] = {k: v for k, v in asdict(self.refresh).items() if k not in ("notes",)}
        out["decision"] = self.decision
        return json.loads(json.dumps(out, default=str))


def _notes_taken(notes: list[str], fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    """fn()'s result and the notes it appended to `notes`, taken back out of them. Why: retrain fits both
    candidates but deploys one; only the deployed model's calibration note may reach the editor."""
    before = len(notes)
    out = fn()
    added = notes[before:]
    del notes[before:]
    return out, added


def retrain_steps(epochs: int, train_faces: int, refresh_items: int) -> tuple[int, int]:
    """(training steps, refresh steps) of a retrain's progress, each step about an epoch's time: the two
    trainings' epochs, a step after each (scoring; fitting and saving both models), then the refresh's faces
    and tracks as the epochs they take the time of (`REFRESH_FACE_EPOCHS`), at least one step. Why weighted:
    counted a step each, the refresh's 2,000 faces made 96% of the bar, which ran through in a second after
    minutes of training at 0-2% with hours "left". An epoch costs at least `EPOCH_FLOOR_FACES` faces' time
    (its fixed overhead dominates a small training set), and the refresh never outweighs the trainings: 12
    confirmed faces and 5,988 undecided made the refresh 97% of the bar, run through in a second of ten."""
    trained = 2 * int(epochs) + 2
    refresh = max(1, math.ceil(REFRESH_FACE_EPOCHS * refresh_items / max(train_faces, EPOCH_FLOOR_FACES)))
    return trained, min(refresh, trained)


def _fit_deployable_head(data: TrainingSet, unknown: np.ndarray, head_params: dict[str, Any],
                         on_epoch: Callable[[int], None]) -> tuple[Any, list[str]]:
    """The head trained on every confirmed label, calibrated as the centroid classifier is (on the faces
    editors marked unknown, when any), and its own notes: the fit's warnings only when no calibration
    supersedes them, then calibrate()'s."""
    from models.retrain_head import train_head

    notes: list[str] = []
    calibration = calibration_set(data.vectors, data.labels, unknown)
    head = _superseded(notes, calibration is not None,
                       lambda: train_head(data.vectors, data.labels, model_id=data.model_id, **head_params,
                                          on_epoch=on_epoch, groups=data.media_ids))
    if calibration is not None:
        _quietly(notes, lambda: head.calibrate(*calibration, data.model_id, training=True))
        notes.append(calibrated_note(len(unknown)))
    return head, notes


def retrain(store: sessionmaker[Session], data_dir: Path, model_id: str | None = None, *,
            center_loss_lambda: float = 0.01, hidden: int | None = None, epochs: int = 40,
            holdout_share: float = 0.2, seed: int = 0, top: int = DEFAULT_TOP,
            track_method: str = DEFAULT_TRACK_METHOD, editor: str = "model",
            on_progress: Progress | None = None, on_step: OnStep | None = None) -> RetrainResult:
    """Train the head on confirmed labels, compare it with the centroid classifier on a stratified
    holdout, save both (refitted on every confirmed label), and predict the undecided faces with
    the better one. See RetrainResult for what before and after measure.

    on_progress(done, total): steps of about an epoch's time each (`retrain_steps`): both head trainings
    epoch by epoch (the holdout one, then the refit on every confirmed label), a step after each, then the
    refresh's faces and tracks mapped onto the steps they take the time of. on_step(text) says the stage
    under way: "reading the store", "fitting the centroid classifier on the training split", "training the
    head on the holdout split, epoch k/N", "refitting ... on all confirmed labels", "predicting the undecided
    faces". A head whose training diverges (non-finite loss or weights) refuses the run before anything is saved."""
    from models.retrain_head import HeadParams, compare_on_holdout, epoch_steps

    step = on_step or (lambda doing: None)

    _check_refresh_params("undecided", top, track_method)
    if not math.isfinite(float(center_loss_lambda)):  # NaN passes a ">= 0" check and trains a head of NaNs
        raise ValidationError(f"center_loss_lambda must be a finite number >= 0, got {center_loss_lambda}")
    try:  # refused before anything is read, trained or written
        HeadParams(hidden=hidden, center_loss_lambda=float(center_loss_lambda), epochs=epochs, seed=seed).check()
    except ClassifierError as exc:
        raise ValidationError(str(exc)) from exc
    if not 0.0 < holdout_share < 1.0:
        raise ValidationError(f"the holdout share must be in (0, 1), got {holdout_share}")
    step("reading the store")
    snapshot = read_snapshot(store, model_id)
    data = training_set(snapshot)
    unknown = unknown_faces(snapshot)
    unknown_media = snapshot.faces["media_id"].to_numpy(np.int64)[_unknown_rows(snapshot)]
    groups_of = media_groups(store, [*zip(data.class_ids.tolist(), data.media_ids.tolist(), data.vectors),
                                     *((NO_CLASS, m, v) for m, v in zip(unknown_media.tolist(), unknown))],
                             data.model_id)
    groups = np.array([groups_of[m] for m in data.media_ids.tolist()], dtype=object)
    held = stratified_holdout(data.class_ids, groups, holdout_share, seed)
    if not held.any():
        raise ValidationError(empty_holdout_reason(data.class_ids, groups, holdout_share))
    held_unknown = unknown_holdout(unknown_media, groups_of, holdout_share, seed)
    if (note := unknown_holdout_note(unknown_media, groups_of, held_unknown)) is not None:
        data.notes.append(note)
    x_train, y_train = data.subset(~held)
    x_hold, y_hold = data.subset(held)
    x_eval = np.concatenate([x_hold, unknown[held_unknown]])
    y_eval = y_hold + [NO_CLASS] * int(held_unknown.sum())
    calibration = calibration_set(x_train, y_train, unknown[~held_unknown])
    head_params = {"hidden": hidden, "center_loss_lambda": float(center_loss_lambda), "epochs": int(epochs),
                   "seed": int(seed)}
    undecided_rows = ~snapshot.faces["label_status"].isin(DECIDED_STATUSES)
    undecided = int(undecided_rows.sum())
    n_tracks = int(snapshot.faces.loc[undecided_rows, "track_id"].dropna().nunique())  # tracks the refresh predicts
    # steps: the holdout head's epochs, scoring the comparison (1), the refitted head's epochs, fitting
    # and saving both models (1), then the refresh. Why per epoch: the two trainings are most of a
    # retrain's time, and a bar standing still through them reads as a hung command
    n_epochs = int(epochs)
    trained, refresh_steps = retrain_steps(n_epochs, len(data.class_ids), undecided + n_tracks)
    total = trained + refresh_steps

    def progress(done: int) -> None:
        if on_progress is not None:
            on_progress(done, total)

    progress(0)
    try:
        # the holdout models' calibration warnings are not kept: they speak of models fitted on the training
        # split only (fewer impostor distances than the deployed one's), so beside the deployed model's note
        # they read as a second, conflicting count
        comparison = _quietly([], lambda: compare_on_holdout(
            (x_train, y_train), (x_eval, y_eval), model_id=data.model_id, head_params=head_params,
            calibration=calibration, on_epoch=progress, on_step=on_step))
        progress(n_epochs + 1)
        head_wins = ((comparison["head_accuracy"], comparison["head_open_set_accuracy"])
                     > (comparison["centroid_accuracy"], comparison["centroid_open_set_accuracy"]))
        step("refitting the centroid classifier on all confirmed labels")
        centroid, centroid_notes = _notes_taken(data.notes, lambda: fit_centroid(data, unknown))
        head, head_notes = _fit_deployable_head(
            data, unknown, head_params, epoch_steps("refitting the head on all confirmed labels", n_epochs,
                                                    lambda done: progress(n_epochs + 1 + done), on_step))
        data.notes.extend(n for n in (head_notes if head_wins else centroid_notes) if n not in data.notes)
    except ClassifierError as exc:
        raise ValidationError(str(exc)) from exc
    step("saving both models")
    centroid_dir = save_classifier(centroid, data_dir, data.class_names)
    head_dir = save_head(head, data_dir, data.class_names)
    deployed: Predictor = head if head_wins else centroid
    progress(trained)
    step(f"predicting the {undecided} undecided faces" + (f" and {n_tracks} tracks" if n_tracks else ""))
    refresh = refresh_predictions(store, data.model_id, deployed, data_dir=data_dir, faces="undecided", top=top,
                                  track_method=track_method, editor=editor, snapshot=snapshot,
                                  on_progress=lambda d, t: progress(trained + (d * refresh_steps // t if t else 0)))
    before = float(comparison["centroid_accuracy"])
    after = float(comparison["head_accuracy"] if head_wins else comparison["centroid_accuracy"])
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")  # runs deploying one version never collide
    report = models_dir(data_dir) / REPORTS_DIR / f"{stamp}-{deployed.version}.json"
    result = RetrainResult(
        model_id=data.model_id, classes=data.n_classes, train_faces=int((~held).sum()), holdout_faces=int(held.sum()),
        holdout_unknown_faces=int(held_unknown.sum()), before=before, after=after,
        deployed="head" if head_wins else "centroid", model_version=deployed.version,
        artifact=head_dir if head_wins else centroid_dir, centroid_artifact=centroid_dir, head_artifact=head_dir,
        report=report, comparison=comparison,
        params={**head_params, "holdout_share": holdout_share, "top": top, "track_method": track_method},
        refresh=refresh, notes=[*data.notes, *(n for n in refresh.notes if n not in data.notes)])
    report.parent.mkdir(parents=True, exist_ok=True)
    tmp = report.with_name(f".{report.name}.part")
    tmp.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(report)
    progress(total)
    return result


# -- reading track predictions ------------------------------------------------------------------
TRACK_PREDICTION_COLUMNS = ["track_id", "media_id", "model_id", "track_index", "n_faces", "predicted_class_id",
                            "predicted_class_name", "predicted_confidence", "predicted_distance", "predicted_top",
                            "prediction_method", "model_version", "predicted_at", "stale"]
_STALE_CLEARED = ["predicted_class_id", "predicted_class_name", "predicted_confidence", "predicted_distance",
                  "predicted_top", "prediction_method", "model_version", "predicted_at"]


def track_predictions_frame(store: sessionmaker[Session], model_id: str | None = None,
                            media_id: int | None = None) -> pd.DataFrame:
    """One row per face track with its prediction (None class: unknown, or not predicted yet when
    model_version is None), ordered by media and track index. Columns: TRACK_PREDICTION_COLUMNS.

    A stored prediction none of the track's faces' current predictions comes from (its refresh was
    undone: `current_track_prediction`) reads as not predicted, with `stale` True. A class merged or
    retired since the refresh reads as its current target, in the class and the top list alike."""
    stmt = (select(Track.id, Track.media_id, Track.model_id, Track.track_index, Track.n_faces,
                   Track.predicted_class_id, null(), Track.predicted_confidence,  # the name: of the current target, below
                   Track.predicted_distance, Track.predicted_top, Track.prediction_method, Track.model_version,
                   Track.predicted_at, Track.model_version.is_not(None) & ~current_track_prediction()))
    if model_id is not None:
        stmt = stmt.where(Track.model_id == model_id)
    if media_id is not None:
        stmt = stmt.where(Track.media_id == media_id)
    with store() as session:
        rows = session.execute(stmt.order_by(Track.media_id, Track.track_index, Track.id)).all()
        targets = current_class_targets(session) if rows else {}
        names = dict(session.execute(select(CelebrityClass.id, CelebrityClass.name)).all()) if rows else {}
    frame = pd.DataFrame([tuple(r) for r in rows], columns=TRACK_PREDICTION_COLUMNS)
    # classes merged or retired since the refresh: read as their current target (`current_class_targets`)
    frame["predicted_class_id"] = [None if pd.isna(c) else targets.get(int(c)) for c in frame["predicted_class_id"]]
    frame["predicted_class_name"] = [None if c is None else names.get(c) for c in frame["predicted_class_id"]]
    frame["predicted_top"] = [None if top is None else current_top(top, targets) for top in frame["predicted_top"]]
    frame["stale"] = frame["stale"].astype(bool)
    frame.loc[frame["stale"], _STALE_CLEARED] = None
    frame["predicted_class_id"] = frame["predicted_class_id"].astype("Int64")
    for col in ("predicted_confidence", "predicted_distance"):
        frame[col] = frame[col].astype(float)
    return frame

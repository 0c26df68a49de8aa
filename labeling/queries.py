"""Read-side queries: plain functions from the store to pandas DataFrames.

Pages and figure builders read through these; nothing here writes. Every frame has a fixed
set of columns (listed in each docstring) even when the store is empty, so callers can
filter and plot without special cases. `version` columns are what the curation operations
take as `expected_version(s)` for optimistic locking (0: no row yet).
"""
from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from labeling.audit import CHUNK, entity_events, snapshots_of  # CHUNK: ids bound in one IN (...) list
from labeling.schema import (AuditEvent, CelebrityClass, Export, Face, FaceEmbedding, FaceLabel, Media, MediaTag, Tag, Track,
                             bytes_to_vector)
from labeling.validation import clean_tag_name, search_key

UNLABELED = "unlabeled"  # label status of a face that has no face_label row (no prediction, no decision)
# the class group of a face whose prediction an editor turned down (it has no class any more)
TURNED_DOWN = {"rejected": "rejected", "unknown": "marked unknown"}
DECIDED_STATUSES = ("approved", "rejected", "relabeled", "unknown")  # an editor (or an import) decided
ATTRIBUTE_COLUMNS = ("gender", "ethnicity", "birth_year", "country")
UNKNOWN_OPEN_SET = "unknown (open set)"  # the model's best guess was refused by the open-set threshold
NOT_PREDICTED = "not predicted yet"  # no prediction was ever recorded (no classifier run since ingest)

FACE_COLUMNS = [
    "face_id", "media_id", "media_path", "media_kind", "frame_index", "face_index", "x1", "y1", "x2", "y2",
    "probability", "model_id", "crop_path", "track_id", "label_status", "class_id", "class_name",
    "predicted_class_id", "predicted_class_name", "predicted_confidence", "model_version", "source", "editor",
    "version", *ATTRIBUTE_COLUMNS,
]
CLASS_COLUMNS = [
    "class_id", "name", "display_name", "status", "external_id", *ATTRIBUTE_COLUMNS, "faces", "approved",
    "relabeled", "predicted", "confirmed", "predicted_by_model", "merged_into_id", "merged_into_name",
    "created_at", "updated_at", "updated_by", "version",
]
MEDIA_COLUMNS = [
    "media_id", "path", "name", "kind", "status", "error", "size_bytes", "width", "height", "total_frames",
    "duration_s", "faces", "tracks", "tags", "created_at", "updated_at", "version",
]
MEDIA_TAG_COLUMNS = [
    "media_id", "media_path", "media_name", "tag_id", "tag", "confidence", "source", "status", "editor",
    "updated_at", "version",
]
TRACK_COLUMNS = [
    "track_id", "media_id", "media_path", "media_kind", "model_id", "track_index", "n_faces", "representative_face_id",
    "representative_crop_path", "decided", "undecided", "has_decision", "predicted_class_id",
    "predicted_class_name", "predicted_confidence",
]
EXPORT_COLUMNS = ["export_id", "at", "editor", "out_dir", "on_disk", "classes", "faces", "train", "val",
                  "media_with_tags"]
HISTORY_COLUMNS = ["event_id", "at", "editor", "operation", "summary", "before", "after", "undone_by"]


def prediction_text(names: pd.Series, confidences: pd.Series) -> pd.Series:
    """What an editor reads in a "predicted" column: the class name, or why there is none.

    A prediction with no class but a confidence is an open-set refusal; one with neither was never
    made. Both are None in the frames, and telling them apart says whether running the classifier
    would help.
    """
    reason = pd.Series(np.where(confidences.notna(), UNKNOWN_OPEN_SET, NOT_PREDICTED), index=names.index)
    return names.astype(object).where(names.notna(), reason)


def _frame(rows: list[Any], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame([tuple(r) for r in rows], columns=columns)


def face_models(store: sessionmaker[Session]) -> pd.DataFrame:
    """Face embedding models in the store: model_id, faces, dim; the most used first."""
    with store() as session:
        rows = session.execute(select(FaceEmbedding.model_id, func.count(), func.max(FaceEmbedding.dim))
                               .group_by(FaceEmbedding.model_id).order_by(func.count().desc(), FaceEmbedding.model_id)).all()
    return _frame(rows, ["model_id", "faces", "dim"])


def _default_face_model(session: Session) -> str | None:
    return session.scalars(select(FaceEmbedding.model_id).group_by(FaceEmbedding.model_id)
                           .order_by(func.count().desc(), FaceEmbedding.model_id).limit(1)).first()


def faces_frame(store: sessionmaker[Session], model_id: str | None = None, *, class_id: int | None = None,
                media_id: int | None = None, track_ids: Sequence[int] | None = None,
                with_vectors: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, np.ndarray]:
    """One row per detected face, ordered by face id.

    Columns: face_id, media_id, media_path, media_kind, frame_index, face_index, x1, y1, x2, y2 (the box),
    probability, model_id, crop_path (relative to the data folder), track_id, label_status ("unlabeled"
    when the face has neither a prediction nor a decision), class_id / class_name (current label),
    predicted_class_id / predicted_class_name, predicted_confidence, model_version, source, editor,
    version (of the face label; 0 when there is none), and the current class's gender, ethnicity,
    birth_year, country.

    model_id chooses the face embedding (crop, track, vector); None takes the model with the most
    embeddings in the store. class_id keeps faces whose current or predicted class is that class;
    media_id keeps one media item's faces; track_ids the faces of those tracks (of model_id).

    with_vectors=True returns (frame, vectors): vectors is a float32 (n, d) array aligned with the
    rows, and only faces that have an embedding of that model are kept (a face without one cannot
    be placed in the embedding space).
    """
    current = aliased(CelebrityClass)
    predicted = aliased(CelebrityClass)
    with store() as session:
        if model_id is None:
            model_id = _default_face_model(session)
        join = (FaceEmbedding.face_id == Face.id) & (FaceEmbedding.model_id == model_id)
        columns = [Face.id, Face.media_id, Media.path, Media.kind, Face.frame_index, Face.face_index, Face.x1, Face.y1,
                   Face.x2, Face.y2, Face.probability, FaceEmbedding.model_id, FaceEmbedding.crop_path,
                   FaceEmbedding.track_id, FaceLabel.status, FaceLabel.class_id, current.name,
                   FaceLabel.predicted_class_id, predicted.name, FaceLabel.predicted_confidence, FaceLabel.model_version,
                   FaceLabel.source, FaceLabel.editor, FaceLabel.version,
                   *(getattr(current, c) for c in ATTRIBUTE_COLUMNS)]
        if with_vectors:
            columns.append(FaceEmbedding.vector)
        stmt = select(*columns).join(Media, Media.id == Face.media_id)
        stmt = stmt.join(FaceEmbedding, join) if with_vectors else stmt.outerjoin(FaceEmbedding, join)
        stmt = (stmt.outerjoin(FaceLabel, FaceLabel.face_id == Face.id)
                .outerjoin(current, current.id == FaceLabel.class_id)
                .outerjoin(predicted, predicted.id == FaceLabel.predicted_class_id))
        if class_id is not None:
            stmt = stmt.where((FaceLabel.class_id == class_id) | (FaceLabel.predicted_class_id == class_id))
        if media_id is not None:
            stmt = stmt.where(Face.media_id == media_id)
        if track_ids is not None and len(track_ids) <= CHUNK:  # else filtered below
            stmt = stmt.where(FaceEmbedding.track_id.in_([int(t) for t in track_ids]))
        rows = session.execute(stmt.order_by(Face.id)).all()
    vectors = None
    if with_vectors:
        blobs = [r[-1] for r in rows]
        rows = [r[:-1] for r in rows]
        vectors = (np.stack([bytes_to_vector(b) for b in blobs]) if blobs else np.zeros((0, 0), dtype=np.float32))
    frame = _frame(rows, FACE_COLUMNS)
    frame["label_status"] = frame["label_status"].fillna(UNLABELED)
    frame["version"] = frame["version"].fillna(0).astype(int)
    for col in ("class_id", "predicted_class_id", "track_id", "birth_year"):
        frame[col] = frame[col].astype("Int64")
    frame["predicted_confidence"] = frame["predicted_confidence"].astype(float)
    if track_ids is not None and len(track_ids) > CHUNK:  # too many for one IN list: read all, keep some
        keep = frame["track_id"].isin([int(t) for t in track_ids]).to_numpy()
        frame = frame[keep].reset_index(drop=True)
        vectors = vectors[keep] if with_vectors else None
    if with_vectors:
        return frame, vectors
    return frame


def classes_frame(store: sessionmaker[Session]) -> pd.DataFrame:
    """The class catalog, ordered by name.

    Columns: class_id, name, display_name, status, external_id, gender, ethnicity, birth_year, country,
    faces (labeled with the class now), approved, relabeled, predicted (faces per label status),
    confirmed (approved + relabeled: what export and training read), predicted_by_model (faces
    whose latest prediction is the class, whatever the decision), merged_into_id / merged_into_name,
    created_at, updated_at, updated_by, version.
    """
    target = aliased(CelebrityClass)
    with store() as session:
        rows = session.execute(
            select(CelebrityClass.id, CelebrityClass.name, CelebrityClass.display_name, CelebrityClass.status,
                   CelebrityClass.external_id, *(getattr(CelebrityClass, c) for c in ATTRIBUTE_COLUMNS),
                   CelebrityClass.merged_into_id, target.name, CelebrityClass.created_at, CelebrityClass.updated_at,
                   CelebrityClass.updated_by, CelebrityClass.version)
            .outerjoin(target, target.id == CelebrityClass.merged_into_id)).all()
        counts = session.execute(select(FaceLabel.class_id, FaceLabel.status, func.count())
                                 .where(FaceLabel.class_id.is_not(None))
                                 .group_by(FaceLabel.class_id, FaceLabel.status)).all()
        by_model = dict(session.execute(select(FaceLabel.predicted_class_id, func.count())
                                        .where(FaceLabel.predicted_class_id.is_not(None))
                                        .group_by(FaceLabel.predicted_class_id)).all())
    per_status: dict[int, dict[str, int]] = {}
    for cid, status, n in counts:
        per_status.setdefault(cid, {})[status] = n
    out = []
    for r in rows:
        (cid, name, display, status, ext, gender, ethnicity, birth_year, country, merged_id, merged_name,
         created, updated, updated_by, version) = r
        n = per_status.get(cid, {})
        approved, relabeled, predicted = n.get("approved", 0), n.get("relabeled", 0), n.get("predicted", 0)
        out.append((cid, name, display, status, ext, gender, ethnicity, birth_year, country, sum(n.values()),
                    approved, relabeled, predicted, approved + relabeled, by_model.get(cid, 0), merged_id, merged_name,
                    created, updated, updated_by, version))
    frame = _frame(out, CLASS_COLUMNS)
    frame["birth_year"] = frame["birth_year"].astype("Int64")
    frame["merged_into_id"] = frame["merged_into_id"].astype("Int64")
    return frame.iloc[name_order(frame["name"], frame["class_id"])].reset_index(drop=True)


@lru_cache(maxsize=1 << 17)
def name_order_key(name: str) -> str:
    """The key names are listed by: `search_key` (accents removed, "_" read as a space, case folded), so
    "Élodie" and "Émile" sort among the E's. Sorting on str.casefold put every name starting with an
    accented letter after "Z" ("é" comes after "z" in code points). Cached: 30 µs a name, and a page
    sorts every class (or media item) on every run."""
    return search_key(name)


def name_order(names: pd.Series, ids: pd.Series) -> np.ndarray:
    """Positions listing `names` in reading order: by `name_order_key`, then case folded (accents
    then tell "Cafe" from "Café"), then by id, so every item keeps its place between runs."""
    text = names.fillna("").astype(str).tolist()
    keys = pd.DataFrame({"loose": [name_order_key(t) for t in text], "folded": [t.casefold() for t in text],
                         "id": ids.to_numpy()})
    return keys.sort_values(["loose", "folded", "id"], kind="stable").index.to_numpy()


def media_frame(store: sessionmaker[Session]) -> pd.DataFrame:
    """Ingested media (failures included), ordered by id.

    Columns: media_id, path, name (file name), kind, status ("ok" / "failed"), error, size_bytes, width,
    height, total_frames, duration_s, faces, tracks (face tracks of any model), tags (active tags),
    created_at, updated_at, version.
    """
    faces = select(Face.media_id, func.count().label("n")).group_by(Face.media_id).subquery()
    tracks = select(Track.media_id, func.count().label("n")).group_by(Track.media_id).subquery()
    tags = (select(MediaTag.media_id, func.count().label("n")).where(MediaTag.status == "active")
            .group_by(MediaTag.media_id).subquery())
    with store() as session:
        rows = session.execute(
            select(Media.id, Media.path, Media.kind, Media.status, Media.error, Media.size_bytes, Media.width,
                   Media.height, Media.total_frames, Media.duration_s, func.coalesce(faces.c.n, 0),
                   func.coalesce(tracks.c.n, 0), func.coalesce(tags.c.n, 0), Media.created_at, Media.updated_at,
                   Media.version)
            .outerjoin(faces, faces.c.media_id == Media.id).outerjoin(tracks, tracks.c.media_id == Media.id)
            .outerjoin(tags, tags.c.media_id == Media.id).order_by(Media.id)).all()
    out = [(r[0], r[1], Path(r[1]).name, *r[2:]) for r in rows]
    frame = _frame(out, MEDIA_COLUMNS)
    for col in ("size_bytes", "width", "height", "total_frames"):
        frame[col] = frame[col].astype("Int64")
    return frame


def media_tags_frame(store: sessionmaker[Session], media_id: int | None = None, tag: str | None = None,
                     status: str | None = None) -> pd.DataFrame:
    """Tags on media, every status ("active", "suggested", "rejected") unless status is given.

    Columns: media_id, media_path, media_name, tag_id, tag, confidence, source, status, editor, updated_at,
    version. Ordered by media, then confidence (highest first), then tag; with tag given (any spelling
    the tag vocabulary normalises to it), by confidence first: the GIFs that carry the tag most surely.
    """
    stmt = (select(MediaTag.media_id, Media.path, Tag.id, Tag.name, MediaTag.confidence, MediaTag.source,
                   MediaTag.status, MediaTag.editor, MediaTag.updated_at, MediaTag.version)
            .join(Media, Media.id == MediaTag.media_id).join(Tag, Tag.id == MediaTag.tag_id))
    if media_id is not None:
        stmt = stmt.where(MediaTag.media_id == media_id)
    if tag is not None:
        stmt = stmt.where(Tag.name == clean_tag_name(tag))
        stmt = stmt.order_by(MediaTag.confidence.desc(), MediaTag.media_id)
    else:
        stmt = stmt.order_by(MediaTag.media_id, MediaTag.confidence.desc(), Tag.name)
    if status is not None:
        stmt = stmt.where(MediaTag.status == status)
    with store() as session:
        rows = session.execute(stmt).all()
    out = [(r[0], r[1], Path(r[1]).name, *r[2:]) for r in rows]
    frame = _frame(out, MEDIA_TAG_COLUMNS)
    frame["confidence"] = frame["confidence"].astype(float)
    return frame


def tag_counts_frame(store: sessionmaker[Session]) -> pd.DataFrame:
    """The tag vocabulary in use: tag_id, tag, active, suggested, rejected (media per status), mean_confidence
    (of active ones); the most used first."""
    with store() as session:
        rows = session.execute(select(Tag.id, Tag.name, MediaTag.status, func.count(), func.avg(MediaTag.confidence))
                               .join(MediaTag, MediaTag.tag_id == Tag.id).group_by(Tag.id, Tag.name, MediaTag.status)).all()
    per: dict[tuple[int, str], dict[str, Any]] = {}
    for tag_id, name, status, n, mean in rows:
        entry = per.setdefault((tag_id, name), {"active": 0, "suggested": 0, "rejected": 0, "mean_confidence": None})
        entry[status] = n
        if status == "active":
            entry["mean_confidence"] = float(mean)
    out = [(tid, name, e["active"], e["suggested"], e["rejected"], e["mean_confidence"]) for (tid, name), e in per.items()]
    frame = _frame(out, ["tag_id", "tag", "active", "suggested", "rejected", "mean_confidence"])
    frame["mean_confidence"] = frame["mean_confidence"].astype(float)
    return frame.sort_values(["active", "suggested", "tag"], ascending=[False, False, True], ignore_index=True)


def current_track_prediction() -> ColumnElement[bool]:
    """SQL condition on `Track`: it holds a prediction that one of its faces' current predictions
    shares the model version of. False for a track never predicted, and for one whose prediction an
    undo left behind.

    Why: a refresh writes the track's prediction outside the audited operation (derived data) and
    its model version onto the faces of every track it predicts, inside it; undoing the refresh
    restores the faces' earlier predictions and leaves the track's. Read without this condition,
    approving the track (or the identity tag expert) would take the undone model's word for it.
    Use it wherever a track's prediction is read: `current_track_predictions`, the identity expert
    of labeling/auto_tagging.py, `track_predictions_frame`, `tracks_frame`, `label_tracks`."""
    return exists(select(FaceEmbedding.id).join(FaceLabel, FaceLabel.face_id == FaceEmbedding.face_id)
                  .where(FaceEmbedding.track_id == Track.id, FaceLabel.model_version == Track.model_version)
                  .correlate(Track))


def current_class_targets(session: Session) -> dict[int, int | None]:
    """class id -> the class a prediction naming it stands for now, read without locks: itself while not
    retired, the end of its merge chain when merged away, None (unknown) when retired without a merge,
    or when its merge chain ends at a class retired since without one. Ids of no class are left out
    (`.get` reads them as None).

    Why at read time: a class merged or retired after `predict` still sits in the stored predictions
    (the faces', the tracks', and their top lists), and a reader must not offer, nor approving a track
    label its faces as, a class merged away or retired. The one rule of every reader (tracks, top lists,
    the identity tag expert); `labeling.face_labels.prediction_targets` applies it under locks for the
    writes it guards. One read of the class table (thousands of rows), not a query per merge step."""
    rows = {cid: (status, merged) for cid, status, merged in
            session.execute(select(CelebrityClass.id, CelebrityClass.status, CelebrityClass.merged_into_id))}
    return {class_id: current_target(class_id, rows.get) for class_id in rows}


def current_target(class_id: int, row_of: Callable[[int], tuple[str, int | None] | None]) -> int | None:
    """The class a prediction naming `class_id` stands for now: the first class of its merge chain that is
    not retired, None when the chain ends at a retired class, at a class that does not exist, or comes
    back on itself (a cycle an older giflens left). row_of(class id) -> (status, merged_into_id), or None
    for no such class: read from a table already loaded (`current_class_targets`) or under locks
    (`labeling.face_labels.prediction_targets`), one rule either way."""
    current: int | None = class_id
    seen: set[int] = set()
    while current is not None and current not in seen:
        seen.add(current)
        row = row_of(current)
        if row is None:
            return None
        status, merged_into = row
        if status != "retired":
            return current
        current = merged_into
    return None


def current_top(top: Sequence[Sequence[Any]] | None, targets: dict[int, int | None]) -> list[list[Any]]:
    """A stored top list ([[class id, score], ...]) naming each class's current target
    (`current_class_targets`) once, at its best score; classes retired without a merge are dropped."""
    from labeling.face_labels import Prediction, mapped_prediction  # face_labels imports this module

    p = mapped_prediction(Prediction(0, None, 0.0, [(int(c), float(s)) for c, s in top or []]),
                          {int(c): targets.get(int(c)) for c, _ in top or []})
    return [[c, s] for c, s in p.top]


def current_track_predictions(session: Session, track_ids: Sequence[int]
                              ) -> dict[int, tuple[int | None, datetime | None]]:
    """track id -> (predicted class, predicted_at) as the model's answer for the whole track stands
    now; (None, None) for a track never predicted or whose prediction was undone
    (`current_track_prediction`), so a caller falls back to each face's own prediction, as for a
    track never predicted. A class merged away since is read as the class it went to, one retired
    since (or whose merge chain ends at a retired class) as None, the model saying unknown
    (`current_class_targets`): `label_tracks` then refuses to approve it. Tracks that do not exist
    are left out."""
    ids = sorted({int(t) for t in track_ids})
    found: dict[int, tuple[int | None, datetime | None]] = {}
    for start in range(0, len(ids), CHUNK):
        stmt = select(Track.id, Track.predicted_class_id, Track.predicted_at, current_track_prediction()).where(
            Track.id.in_(ids[start:start + CHUNK]))
        for track_id, class_id, at, current in session.execute(stmt):
            found[track_id] = (class_id, at) if current else (None, None)
    targets = current_class_targets(session) if any(c is not None for c, _ in found.values()) else {}
    return {t: (targets.get(c) if c is not None else None, at) for t, (c, at) in found.items()}


def tracks_frame(store: sessionmaker[Session], model_id: str | None = None) -> pd.DataFrame:
    """Face tracks (one person in one GIF), tracks without any decision first, then the largest.

    Columns: track_id, media_id, media_path, media_kind ("image" for a photo: one face, one track),
    model_id, track_index, n_faces, representative_face_id,
    representative_crop_path, decided (faces with an editor or import decision), undecided,
    has_decision, predicted_class_id / predicted_class_name / predicted_confidence. model_id None:
    every model's tracks.

    The prediction is the track's own (`giflens predict` names the person of the whole track; a class
    merged away since reads as the class it went to, one retired since as None, unknown:
    `current_class_targets`), which
    is also what approving the track approves; for a track not predicted yet (or whose prediction an
    undo took back: `current_track_prediction`) it is the most frequent
    prediction among its faces, with their mean confidence. A class of None with a confidence is the
    open-set threshold refusing the best guess; with neither, nothing was predicted.
    """
    rep = aliased(FaceEmbedding)
    with store() as session:
        stmt = (select(Track.id, Track.media_id, Media.path, Media.kind, Track.model_id, Track.track_index, Track.n_faces,
                       Track.representative_face_id, rep.crop_path, Track.predicted_class_id,
                       Track.predicted_confidence, Track.predicted_at, current_track_prediction())
                .join(Media, Media.id == Track.media_id)
                .outerjoin(rep, (rep.face_id == Track.representative_face_id) & (rep.model_id == Track.model_id)))
        if model_id is not None:
            stmt = stmt.where(Track.model_id == model_id)
        tracks = session.execute(stmt.order_by(Track.id)).all()
        member_stmt = (select(FaceEmbedding.track_id, FaceLabel.status, FaceLabel.predicted_class_id,
                              FaceLabel.predicted_confidence)
                       .outerjoin(FaceLabel, FaceLabel.face_id == FaceEmbedding.face_id)
                       .where(FaceEmbedding.track_id.is_not(None)))
        if model_id is not None:
            member_stmt = member_stmt.where(FaceEmbedding.model_id == model_id)
        members = session.execute(member_stmt).all()
        names = dict(session.execute(select(CelebrityClass.id, CelebrityClass.name)).all())
        targets = current_class_targets(session) if tracks else {}
    stats: dict[int, dict[str, Any]] = {}
    for track_id, status, pred, conf in members:
        s = stats.setdefault(track_id, {"decided": 0, "faces": 0, "preds": {}, "conf": []})
        s["faces"] += 1
        s["decided"] += status in DECIDED_STATUSES
        if pred is not None:
            s["preds"][pred] = s["preds"].get(pred, 0) + 1
        if conf is not None:
            s["conf"].append(conf)
    out = []
    for *t, track_pred, track_conf, predicted_at, current in tracks:
        s = stats.get(t[0], {"decided": 0, "faces": 0, "preds": {}, "conf": []})
        if predicted_at is not None and current:
            pred, conf = targets.get(track_pred), track_conf
        else:
            pred = max(s["preds"].items(), key=lambda kv: (kv[1], -kv[0]))[0] if s["preds"] else None
            conf = float(np.mean(s["conf"])) if s["conf"] else None
        out.append((*t, s["decided"], s["faces"] - s["decided"], s["decided"] > 0, pred, names.get(pred), conf))
    frame = _frame(out, TRACK_COLUMNS)
    frame["predicted_class_id"] = frame["predicted_class_id"].astype("Int64")
    frame["representative_face_id"] = frame["representative_face_id"].astype("Int64")
    frame["predicted_confidence"] = frame["predicted_confidence"].astype(float)
    frame["has_decision"] = frame["has_decision"].astype(bool)
    return frame.sort_values(["has_decision", "n_faces", "track_id"], ascending=[True, False, True], ignore_index=True)


def exports_frame(store: sessionmaker[Session]) -> pd.DataFrame:
    """Past exports, newest first: export_id, at (as the store hands it back: a page shows it through
    `history_table`, as UTC text), editor, out_dir, on_disk and the manifest's counts.

    on_disk: whether out_dir still holds that export, whole (`labeling.export.intact_export`: a stat per file,
    the answer cached until the export's folders change; which exports a new one may follow is
    `followable_export`'s). Why: a folder replaced by a later export, moved or edited by
    hand is listed all the same, and an editor looking for the dataset must know which rows are still there."""
    from labeling.export import intact_export  # lazily: labeling.export is heavy and imports the store's modules

    with store() as session:
        rows = session.execute(select(Export.id, Export.at, Export.editor, Export.out_dir, Export.manifest)
                               .order_by(Export.id.desc())).all()
    out = []
    for export_id, at, editor, out_dir, manifest in rows:
        counts = (manifest or {}).get("counts", {})
        on_disk = intact_export(Path(out_dir), (manifest or {}).get("manifest_sha256"))
        out.append((export_id, at, editor, out_dir, on_disk, counts.get("classes"), counts.get("faces"),
                    counts.get("train"), counts.get("val"), counts.get("media_with_tags")))
    frame = _frame(out, EXPORT_COLUMNS)
    frame["on_disk"] = frame["on_disk"].astype(bool)
    return frame


def audit_stamp(session: Session) -> tuple[int, int]:
    """(number of audit events, newest event id): changes whenever an operation commits, an undo too.

    Why the count as well: on PostgreSQL an event's id is drawn before its transaction commits, so an
    operation that commits after a later one does not raise the newest id, and a page keyed on it alone
    kept showing the store as it was (its presses then refused as conflicts, a reload did not help)."""
    count, newest = session.execute(select(func.count(AuditEvent.id), func.max(AuditEvent.id))).one()
    return int(count or 0), int(newest or 0)


def events_frame(store: sessionmaker[Session], editor: str | None = None, limit: int = 50) -> pd.DataFrame:
    """Recent audit events, newest first: event_id, at, editor, operation, summary, n_entities, undone_by,
    undo_of."""
    from labeling.audit import recent_events

    events = recent_events(store, editor, limit)
    return _frame([(e.id, e.at, e.editor, e.operation, e.summary, e.n_entities, e.undone_by_id, e.undo_of_id)
                   for e in events],
                  ["event_id", "at", "editor", "operation", "summary", "n_entities", "undone_by", "undo_of"])


def model_candidates(store: sessionmaker[Session], face_id: int | None = None, track_id: int | None = None) -> list[tuple[int, str, float]]:
    """The model's top classes for a face (or a face track), best first: (class id, name, score).

    Why: a face the open-set threshold turned down shows no class at all; the classes it nearly
    matched are what an editor needs to relabel it (and the natural default for "Relabel to")."""
    model, key = (FaceLabel, FaceLabel.face_id == face_id) if face_id is not None else (Track, Track.id == track_id)
    with store() as session:
        # a class merged or retired since the prediction is offered as the class it went to, or not at all
        top = current_top(session.scalar(select(model.predicted_top).where(key)) or [], current_class_targets(session))
        names = dict(session.execute(select(CelebrityClass.id, CelebrityClass.name)
                                     .where(CelebrityClass.id.in_([int(c) for c, _ in top]))).all()) if top else {}
    return [(int(c), names[int(c)], float(p)) for c, p in top if int(c) in names]


def history_frame(store: sessionmaker[Session], key: str, limit: int = 200, editor: str | None = None) -> pd.DataFrame:
    """The audit history of one entity ("face:12", "class:3", "media:7"), newest first: event_id, at,
    editor, operation, summary, before, after, undone_by (only `editor`'s operations when given)."""
    from labeling.audit import history

    entries = history(store, key, limit, editor)
    return _frame([(h.event_id, h.at, h.editor, h.operation, h.summary, h.before, h.after, h.undone_by)
                   for h in entries], HISTORY_COLUMNS)


def entities_history_frame(store: sessionmaker[Session], keys: Sequence[str], limit: int = 200) -> pd.DataFrame:
    """The audit history of several entities together, newest first, each event once: the columns of
    `history_frame`, but before / after map each of the given entities the event wrote to its state
    then ({"face:12": {...}, "face:13": {...}}; empty when the event only concerned them).

    Why: some things an editor looks at have no audit key of their own. A GIF's person track is
    decided through its member faces (`label_tracks` writes and audits "face:<id>" rows), so its
    history is the union of theirs; one bulk event over several members is one row, not one per face."""
    wanted = list(dict.fromkeys(keys))
    if not wanted or limit <= 0:
        return _frame([], HISTORY_COLUMNS)
    with store() as session:
        heads = entity_events(session, wanted, limit)
        before, after = snapshots_of(session, [h[0] for h in heads], wanted)
    return _frame([(*head[:5], before.get(head[0], {}), after.get(head[0], {}), head[5]) for head in heads],
                  HISTORY_COLUMNS)


def track_history_frame(store: sessionmaker[Session], track_id: int, limit: int = 200) -> pd.DataFrame:
    """The audit history of a GIF's person track: every operation on any of its faces (a track has
    no audit key of its own; see `entities_history_frame`), newest first, columns of `history_frame`."""
    with store() as session:
        face_ids = session.scalars(select(FaceEmbedding.face_id).where(FaceEmbedding.track_id == int(track_id))
                                   .order_by(FaceEmbedding.face_id)).all()
    return entities_history_frame(store, [f"face:{f}" for f in face_ids], limit)


def face_count(store: sessionmaker[Session]) -> int:
    """Faces in the store: the size of the set Explore opens on, which decides how UMAP is warmed up."""
    with store() as session:
        return int(session.scalar(select(func.count()).select_from(Face)) or 0)


def store_overview(store: sessionmaker[Session]) -> dict[str, Any]:
    """Headline counts: media (ok / failed), faces, classes (active), labels per status, tags, events."""
    with store() as session:
        media = dict(session.execute(select(Media.status, func.count()).group_by(Media.status)).all())
        labels = dict(session.execute(select(FaceLabel.status, func.count()).group_by(FaceLabel.status)).all())
        classes = dict(session.execute(select(CelebrityClass.status, func.count()).group_by(CelebrityClass.status)).all())
        faces = session.scalar(select(func.count()).select_from(Face))
        tags = session.scalar(select(func.count()).select_from(MediaTag).where(MediaTag.status == "active"))
        suggested = session.scalar(select(func.count()).select_from(MediaTag).where(MediaTag.status == "suggested"))
    return {"media_ok": media.get("ok", 0), "media_failed": media.get("failed", 0), "faces": faces,
            "faces_unlabeled": faces - sum(labels.values()), "labels": labels,
            "classes_active": classes.get("active", 0), "classes": sum(classes.values()),
            "tags_active": tags, "tags_suggested": suggested}


def search_classes(catalog: pd.DataFrame, text: str = "", statuses: Any = None) -> pd.DataFrame:
    """Rows of classes_frame whose name, display name or external id contains text, and whose status is
    one of statuses (None: any).

    Text matches ignoring case and compatibility forms ("ＢＥＹＯＮＣＥ", `class_name_key`), and also
    ignoring accents with "_" read as a space (`search_key`): GIPHY's list imported "Beyonce" and
    "Celine Dion", which "Beyoncé", "Céline Dion" and the CSV / folder form "Celine_Dion" must find, or
    the editor is told no class matches and adds the same person again. A label as GIPHY writes it,
    "Brad_Pitt_[m.0c6qh]", finds the classes named so and the class of that external id."""
    from labeling.validation import class_name_key, search_key

    out = catalog
    if statuses is not None:
        out = out[out["status"].isin(list(statuses))]
    needle = class_name_key(text or "")
    if needle:
        fields = [out[c].fillna("").astype(str) for c in ("name", "display_name", "external_id")]
        hay = (fields[0] + "\n" + fields[1] + "\n" + fields[2]).map(class_name_key)
        found = hay.str.contains(needle, regex=False)
        name, external = _split_label_id(needle)
        loose = search_key(name)
        if loose:  # each field on its own: a match must not run from a name into its display name
            bare = fields[0].map(search_key) + "\n" + fields[1].map(search_key) + "\n" + fields[2].map(search_key)
            found |= bare.str.contains(loose, regex=False)
        if external is not None:
            found |= fields[2].map(class_name_key) == external
        out = out[found]
    return out.reset_index(drop=True)


def _split_label_id(key: str) -> tuple[str, str | None]:
    """A search text (as `class_name_key` folds it) ending in a bracketed external id, as GIPHY's labels
    and the raw dataset's folders do ("brad_pitt_[m.0c6qh]", "brad pitt [m.0c6qh]"): (the name part, the
    id); any other text: (the text, None)."""
    import re

    match = re.fullmatch(r"(?P<name>.+?)[_ ]?\[(?P<id>[^\[\]]+)\]", key)
    return (match["name"].strip(" _"), match["id"].strip()) if match else (key, None)

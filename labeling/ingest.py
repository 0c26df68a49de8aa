"""Write ingest results to the SQL store: one transaction per media item.

Media are keyed by content hash, so the same bytes under two paths are one item and a
re-run updates rows in place instead of duplicating them. The item keeps the first path it was
ingested from (while that file is there; a moved file's item follows it), and every path its bytes
were met under is recorded (`MediaPath`), for tag imports and `giflens dupes`. Face rows are kept when the
detections did not change, and matched by box when they did (`_reconcile_faces`), so the labels
that point at them survive re-ingests.

An ingest an editor runs (the CLI, the Ingest page, a raw-dataset import) is audited like any
other change, but as ONE summary event per batch (operation "ingest": the counts and the
media ids and paths), not one entity snapshot per row: a batch can hold thousands of files,
and what an editor needs to know is who added which files when. The event is written in the
transaction that follows the batch's last media item (or the interruption that ended it); a
batch that changed nothing writes none, as a curation operation that changes nothing does. The event cannot be undone: removing
media is not what undo means (see `record_ingest_event`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
import logging
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from sqlalchemy import delete, event, exists, insert, inspect, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from embeddings.cache import sha256_file
from embeddings.pipeline import IngestPipeline, MediaResult, OnRead, discover, may_be_escaped, path_text
from labeling.audit import _chunks
from labeling.db import open_store, write_scope
from labeling.schema import (TRACK_PREDICTION_FIELDS, UNDECIDED_STATUSES, AuditEntity, AuditEvent, Face, FaceEmbedding,
                             FaceLabel, Media, MediaEmbedding, MediaPath, MediaTag, Track, utcnow, vector_to_bytes)
from labeling.validation import check_editor
from models.settings import Settings

log = logging.getLogger(__name__)
INGEST_OPERATION = "ingest"  # the audit event's operation name; such events are not undoable


@dataclass
class IngestSummary:
    ingested: int = 0
    cached: int = 0
    failed: int = 0
    faces: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    # every file of the batch as stored: {"id", "path", "status"} (+ "error" when it failed)
    media: list[dict[str, Any]] = field(default_factory=list)
    event_id: int | None = None  # the audit event; None without an editor or when nothing changed
    notes: list[str] = field(default_factory=list)  # what an editor should know that is no failure
    # failed rows an ok file at their path replaced (`_drop_stale_failures`): {"id", "path"}
    removed: list[dict[str, Any]] = field(default_factory=list)
    _counted: set[str] = field(default_factory=set, repr=False)  # sha256 of the media whose faces are counted
    # of `ingested`: items computed (not in this data folder's cache) that the store already held as they
    # are, e.g. a teammate's media on a shared store: the store is unchanged, only the cache was filled
    already_stored: int = 0
    # files whose bytes an earlier file of this batch had (computed or cached then): stored once, the same
    # count on every run. ingested + cached + failed + copies is the number of files.
    copies: int = 0
    # named folders that gave no file to ingest (`Discovery.empty`), also among `notes`: shown as a warning
    empty: list[str] = field(default_factory=list)

    def add(self, result: MediaResult) -> None:
        if result.status != "ok":
            self.failed += 1
            self.failures.append((path_text(result.path), result.error or result.reason or "failed"))
            return
        first = result.sha256 not in self._counted  # the same bytes under two names are one item: its faces once
        if not first and result.sha256 is not None:
            # Why not "cached": on a first run the pipeline hands a copy the result it computed for the first
            # name (in the same chunk, `from_cache` set) or finds the entries that run just wrote (a later
            # chunk); counted as a cache hit, a first run into an empty data folder said "cached 5". Why
            # cached first names too: a re-run then says the same "(1 copy ...)" as the first run, not
            # "cached 5" for 4 items and a copy.
            self.copies += 1
        elif result.from_cache:
            self.cached += 1
        else:
            self.ingested += 1
        if first:
            self._counted.add(result.sha256)
            self.faces += result.face_count

    def line(self) -> str:
        """The four counts (scripts and the README read them), then what `copies` and `already_stored`
        say when any: "ingested" counts cache misses, which on a store shared by editors with their own
        data folders may add nothing to the store."""
        line = f"ingested {self.ingested}, cached {self.cached}, failed {self.failed}, faces {self.faces}"
        if self.copies:
            line += f" ({self.copies} {'copy' if self.copies == 1 else 'copies'} of other files in this batch, stored once)"
        if self.already_stored:
            line += f" ({self.already_stored} already in the store: computed again for this data folder's cache)"
        return line


def _find_media(session: Session, result: MediaResult) -> Media | None:
    """The item's row (by content, or by path for a file never hashed), locked for this transaction
    on PostgreSQL (FOR UPDATE; SQLite's write scope holds the whole database): two ingests storing the
    same file at once then update it one after the other instead of interleaving their face rows."""
    if result.sha256 is not None:
        query = select(Media).where(Media.sha256 == result.sha256)
    else:
        query = select(Media).where(Media.path == path_text(result.path), Media.sha256.is_(None))
    return session.scalar(query.with_for_update())


def _same_detections(session: Session, faces: list[Face], result: MediaResult) -> bool:
    """Whether the stored faces are the result's detections (same frames and boxes, in order), followed
    only by faces an editor decided that an earlier re-ingest did not detect again (`_reconcile_faces`
    keeps those after the detected ones, out of any track): then there is nothing to reconcile.

    Why the kept faces are left out of the comparison: they are no detection, so counted in, every
    re-run would reconcile again, rewriting the rows and writing an audit event for nothing. One that
    is no longer decided (its decision undone) is a stale detection, reconciled away."""
    ordered = sorted(faces, key=lambda f: f.face_index)
    detected, kept = ordered[: len(result.faces)], ordered[len(result.faces) :]
    if len(detected) != len(result.faces):
        return False
    for row, rec in zip(detected, result.faces):
        if row.frame_index != rec.frame_index:
            return False
        if not np.allclose([row.x1, row.y1, row.x2, row.y2], rec.box, atol=0.5):
            return False
    return not kept or len(_decided(session, kept)) == len(kept)


def _decided(session: Session, faces: list[Face]) -> set[int]:
    """The ids of these faces that an editor or an import decided (a label no longer undecided)."""
    if not faces:
        return set()
    return set(session.scalars(select(FaceLabel.face_id).where(
        FaceLabel.face_id.in_([f.id for f in faces]), FaceLabel.status.not_in(UNDECIDED_STATUSES))))


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


Size = tuple[int | None, int | None]


def _stored_frame(stored: Size, new: Size) -> tuple[int, int] | None:
    """The (width, height) of the frames the stored boxes were found in, or None when they need no scaling
    (the same size, or a size unknown).

    Why turned: before the display-aspect decode a rotated video stored its coded size though its boxes
    were found in the turned frames. So the stored size turned a quarter is the boxes' frame when it is
    the new one, or differs from it along one side only (the display aspect stretches one side), and the
    stored size itself is not; else the stored size is (same orientation as `_shown_size` decides)."""
    (w, h), (new_w, new_h) = stored, new
    if not (w and h and new_w and new_h) or (w, h) == (new_w, new_h):
        return None
    straight, turned = w == new_w or h == new_h, h == new_w or w == new_h
    if turned and not straight:
        return h, w
    if straight or w == h or (w > h) == (new_w > new_h):
        return w, h
    return h, w


def _scale_face(face: Face, sx: float, sy: float) -> None:
    """A stored face's box and landmarks moved to frames `sx` x `sy` times the size they were found in."""
    face.x1, face.y1, face.x2, face.y2 = face.x1 * sx, face.y1 * sy, face.x2 * sx, face.y2 * sy
    if face.landmarks:
        face.landmarks = [[x * sx, y * sy] for x, y in face.landmarks]


def _rescale_stored(existing: list[Face], stored: Size, result: MediaResult) -> None:
    """Put the stored faces in the coordinates of the new decode when it shows the media at another size.

    Why: a decoder change can change the size the media is shown at (non-square video pixels now
    stretched to their display aspect), and every box with it; compared unscaled, no face would be
    found again, so each decided face would stay with a box in the wrong place beside a new undecided
    twin of it. Scaled, the same faces match (`_match_faces`) and keep their rows and labels."""
    frame = _stored_frame(stored, (result.width, result.height))
    if frame is not None:
        sx, sy = result.width / frame[0], result.height / frame[1]
        for face in existing:
            _scale_face(face, sx, sy)


def _match_faces(existing: list[Face], result: MediaResult, min_iou: float = 0.5) -> dict[int, Face]:
    """Position in result.faces -> the stored face it is (same frame, boxes overlapping by min_iou or
    more, the best overlaps first): the same person found again with a slightly different box."""
    pairs = sorted(((_iou((f.x1, f.y1, f.x2, f.y2), r.box), i, f.id) for i, r in enumerate(result.faces)
                    for f in existing if f.frame_index == r.frame_index), reverse=True)
    by_id = {f.id: f for f in existing}
    matched: dict[int, Face] = {}
    taken: set[int] = set()
    for overlap, i, face_id in pairs:
        if overlap < min_iou:
            break
        if i not in matched and face_id not in taken:
            matched[i] = by_id[face_id]
            taken.add(face_id)
    return matched


def _reconcile_faces(session: Session, media: Media, existing: list[Face], result: MediaResult,
                     stored: Size = (None, None)) -> list[Face]:
    """The item's faces after a re-ingest that detected differently (other frames sampled, another
    detector setting, another display size: `stored` is the (width, height) the faces were stored at),
    in result order, without losing an editor's work.

    Why not delete and insert: a face's label (the editor's decision, its audit history) hangs on the
    face row and would go with it. A face found again keeps its row and id, with the new box; a new
    face gets a row; a stored face not found again is deleted only when nobody decided it: one an
    editor or an import decided stays (after the new ones, out of any track), with its label, and the
    transaction's notes get a line saying so (`_notes`)."""
    _rescale_stored(existing, stored, result)
    matched = _match_faces(existing, result)
    found_again = {f.id for f in matched.values()}
    gone = [f for f in existing if f.id not in found_again]
    decided = _decided(session, gone)
    for face in gone:
        if face.id not in decided:
            session.delete(face)
    kept = [f for f in gone if f.id in decided]
    target = {face.id: result.faces[i].face_index for i, face in matched.items()}
    target.update({face.id: len(result.faces) + k for k, face in enumerate(kept)})
    _reindex(session, [*matched.values(), *kept], target)
    faces = []
    for i, r in enumerate(result.faces):
        face = matched.get(i) or Face(media_id=media.id, face_index=r.face_index)
        face.frame_index = r.frame_index
        face.x1, face.y1, face.x2, face.y2 = r.box
        face.probability, face.landmarks = r.probability, r.landmarks
        session.add(face)
        faces.append(face)
    if kept:
        session.execute(update(FaceEmbedding).where(FaceEmbedding.face_id.in_([f.id for f in kept]))
                        .values(track_id=None))
        _notes(session).append(f"{media.path}: {len(kept)} face(s) an editor decided were not detected again; "
                               "kept with their labels")
    session.flush()
    return faces


def _notes(session: Session) -> list[str]:
    """What an editor should know of the items a write transaction stores (kept in the session's `info`,
    so `store_result` keeps its signature); the batch reports them as notes once the transaction
    commits (`_store_once`), never those of one rolled back."""
    return session.info.setdefault("ingest_notes", [])


def _reindex(session: Session, faces: list[Face], target: dict[int, int]) -> None:
    """Give stored faces their new face_index (`target`, by face id), touching only those whose index
    changes: a row set to its own index is no write (`_watch_writes`). Those move out of the way of the
    unique (media, face_index) first; the faces keeping theirs hold indexes no other face targets. The
    flush also deletes the faces deleted before it, before any new face takes their index."""
    moving = [face for face in faces if face.face_index != target[face.id]]
    for face in moving:
        face.face_index = -face.id
    session.flush()
    for face in moving:
        face.face_index = target[face.id]


def _upsert_tracks(session: Session, media_id: int, model: str, result: MediaResult, faces: list[Face]) -> list[Track]:
    """The media item's tracks for this face model, updated in place by track index.

    A re-ingest of the same file rebuilds the same tracks: keeping their rows keeps their ids (the
    Explore page's cached projections) and their celebrity predictions. A track whose members changed
    (another vector or representative) loses its prediction, which described other faces."""
    old = {t.track_index: t for t in session.scalars(
        select(Track).where(Track.media_id == media_id, Track.model_id == model))}
    tracks = []
    for t in result.tracks:
        vector, representative = vector_to_bytes(t.vector), faces[t.representative_face_index].id
        row = old.pop(t.track_index, None)
        if row is None:
            row = Track(media_id=media_id, model_id=model, track_index=t.track_index)
            session.add(row)
        elif (row.vector, row.representative_face_id, row.n_faces) != (vector, representative, len(t.face_indices)):
            for column in TRACK_PREDICTION_FIELDS:
                setattr(row, column, None)
        row.n_faces, row.representative_face_id, row.vector = len(t.face_indices), representative, vector
        tracks.append(row)
    for row in old.values():
        session.delete(row)
    session.flush()
    return tracks


def _still_there(path: str) -> bool:
    """Whether the file a stored path names is on this machine. A text that may be an escaped non-UTF-8 name
    (`may_be_escaped`) names no file as written: it counts as gone, so such an item follows its file."""
    return not may_be_escaped(path) and os.path.exists(path)


def _kept_path(media: Media, result: MediaResult) -> str:
    """The path the item's row keeps after storing `result`: its first name while that file is still there.

    Why: a byte-identical re-upload under another name is the same row (one per content); moving the row to
    the copy's name forgot the original's, so a tags file naming it found "no such media" and `giflens dupes`
    never showed the copy. The copy's name is recorded beside it instead (`_record_path`). A file that is gone
    from its stored path was moved or renamed: the row follows it. A failed row (or a failure replacing an ok
    row) names the last file that failed, as before."""
    new = path_text(result.path)
    if media.id is None or media.path == new or media.status != "ok" or result.status != "ok":
        return new
    return media.path if _holds_bytes(media.path, media.sha256) else new


def _holds_bytes(path: str, sha256: str | None) -> bool:
    """Whether the file a stored path names is on this machine and still holds these bytes.

    Why the hash and not only the file being there: a kept name overwritten with another clip is no longer
    this item's file; keeping the item there named the new clip as it (`_kept_path`), and the copy notes
    said "same content as" a file holding other bytes (`_holds`). Only hashed when another name of the
    same bytes is met, so a warm re-run reads nothing more."""
    if sha256 is None or not _still_there(path):
        return False
    try:
        return sha256_file(Path(path)) == sha256
    except OSError:  # unreadable now: no file to keep the item on
        return False


def _claim_path(session: Session, media_id: int, path: str) -> None:
    """Forget the other media items' recorded names at `path`: the file there now holds this item's bytes.

    Why: a name recorded for an item (`MediaPath`) stays after the file was renamed away or overwritten;
    when another clip later takes that name, a tags row naming it tagged the old item too, and `giflens
    dupes` listed the new clip as an identical copy of it. No ORM flush: not a change of this item."""
    session.execute(delete(MediaPath).where(MediaPath.path == path, MediaPath.media_id != media_id)
                    .execution_options(synchronize_session=False))


def _record_path(session: Session, media_id: int, path: str) -> bool:
    """Record `path` among the paths the item's bytes were ingested from (`MediaPath`); True when it is new.

    Why: the row keeps one path (`_kept_path`); a tags import and `giflens dupes` need every name the same
    bytes were met under. A new name is a write (`_watch_writes`): the batch's event names the item."""
    known = session.scalar(select(MediaPath.id).where(MediaPath.media_id == media_id, MediaPath.path == path))
    if known is not None:
        return False
    session.add(MediaPath(media_id=media_id, path=path))
    session.flush()
    _new_paths(session).append(path)
    return True


def _new_paths(session: Session) -> list[str]:
    """The paths this write transaction recorded as new names of its item (`_record_path`), kept in the
    session's `info` like `_notes`: the batch checks them for replaced files (`_replaced_notes`)."""
    return session.info.setdefault("ingest_new_paths", [])


def _took_path(session: Session, media_id: int, path: str, hashed: bool = True) -> bool:
    """The item's bytes were just read at `path`: record that name (`_record_path`; True when it is new) and,
    when the bytes are known (`hashed`), take it from the other items that had it recorded (`_claim_path`)."""
    if hashed:
        _claim_path(session, media_id, path)
    return _record_path(session, media_id, path)


def store_result(session: Session, result: MediaResult, media: Media | None) -> Media:
    """Upsert one media item with its faces, embeddings and tracks (caller owns the transaction).

    `media` is the item's row as `_find_media` found it, None for a new item: the caller looks
    it up anyway (to tell what the batch changed), so it is not looked up twice. What an editor should
    know of the item (decided faces not detected again) goes to the transaction's notes (`_notes`)."""
    if media is None:
        media = Media(sha256=result.sha256, path=path_text(result.path))
        session.add(media)
    media.path = _kept_path(media, result)
    media.status = result.status
    media.error = result.error
    media.size_bytes = result.size_bytes
    if result.status != "ok":
        if media.kind is None:
            media.kind = result.kind
        session.flush()
        _took_path(session, media.id, path_text(result.path), hashed=result.sha256 is not None)
        return media  # a failure never deletes what an earlier good run stored
    media.kind = result.kind
    stored = (media.width, media.height)  # what the stored faces' boxes are relative to
    media.width, media.height = result.width, result.height
    media.total_frames = result.total_frames
    media.sampled_frames = result.sampled_frames
    media.frame_hashes = result.frame_hashes
    media.duration_s = result.duration_s
    media.source_key = result.source_key
    session.flush()
    _took_path(session, media.id, path_text(result.path), hashed=result.sha256 is not None)

    existing = list(session.scalars(select(Face).where(Face.media_id == media.id)))
    if not _same_detections(session, existing, result):  # a first ingest too: nothing stored, every face new
        existing = _reconcile_faces(session, media, existing, result, stored)
    faces = sorted(existing, key=lambda f: f.face_index)

    if result.face_model is not None:
        model = result.face_model
        tracks = _upsert_tracks(session, media.id, model, result, faces)
        by_face = {e.face_id: e for e in session.scalars(
            select(FaceEmbedding).where(FaceEmbedding.face_id.in_([f.id for f in faces]), FaceEmbedding.model_id == model))}
        for face, rec in zip(faces, result.faces):
            row = by_face.get(face.id) or FaceEmbedding(face_id=face.id, model_id=model)
            row.dim = int(rec.embedding.shape[0])
            row.vector = vector_to_bytes(rec.embedding)
            row.crop_path = rec.crop_path
            row.track_id = tracks[rec.track_index].id if rec.track_index >= 0 else None
            session.add(row)

    if result.gif_model is not None and result.gif_embedding is not None:
        row = session.scalar(select(MediaEmbedding).where(
            MediaEmbedding.media_id == media.id, MediaEmbedding.model_id == result.gif_model))
        row = row or MediaEmbedding(media_id=media.id, model_id=result.gif_model)
        row.dim = int(result.gif_embedding.shape[0])
        row.vector = vector_to_bytes(result.gif_embedding)
        row.top_labels = [[label, p] for label, p in result.top_labels]
        session.add(row)
    session.flush()
    return media


def _unworked_failure() -> list[Any]:
    """Conditions on Media for a failed row nobody worked on (no faces, no tags): the rows
    `_drop_stale_failures` may delete. Shared with the warm re-run's look-up (`_StaleFailures`)."""
    return [Media.status == "failed", ~exists().where(Face.media_id == Media.id),
            ~exists().where(MediaTag.media_id == Media.id)]


def _may_be_this_file(path: str, sha256: str | None) -> bool:
    """Whether a failed row at `path` (the text of an ok item's path) may be that very file's: see
    `_drop_stale_failures`. The one test both the write path and the warm path apply."""
    return sha256 is not None or not may_be_escaped(path)


def _drop_stale_failures(session: Session, media: Media, paths: Iterable[str]) -> list[dict[str, Any]]:
    """Delete the failed rows at `paths`, where an ok item's bytes are now (the path it keeps and the path
    it was just read from); return them ({"id", "path"}).

    Why: a file that failed (a download cut short) and was fixed in place has new bytes, so a new
    row; the old failed one would stay forever, listed as a failure of a file that is fine. Only a
    row nobody worked on goes: one with faces or tags (an item that was ok once) is kept.

    A failed row at the same text may be another file's: a name that is not UTF-8 is stored escaped
    (`path_text`), and a Latin-1 café.jpg then reads like a file literally named caf\\xe9.jpg. Such a
    name fails before it is hashed, so its row has no sha256: when this path's text could be an escaped
    one (`may_be_escaped`), only failed rows with a sha256 go, which were hashed and so were this
    very file (`_may_be_this_file`). (A sha-less failure of this file, unreadable once, then stays:
    listed, never lost.)

    Why the path read too, not only the one kept: a file that failed and was then replaced by bytes stored
    under another name is a copy of that item, which keeps its first name (`_kept_path`); matched on the
    kept name only, the copy's failed row stayed forever."""
    paths = list(dict.fromkeys(paths))
    rows = session.execute(select(Media.id, Media.path, Media.sha256).where(
        *_unworked_failure(), Media.path.in_(paths), Media.id != media.id).order_by(Media.id))
    stale = [(m, path) for m, path, sha256 in rows if _may_be_this_file(path, sha256)]
    if stale:
        session.execute(delete(Media).where(Media.id.in_([m for m, _ in stale])))
    return [{"id": m, "path": path} for m, path in stale]


@dataclass
class _Stored:
    """One media item as its transaction committed it."""

    media_id: int
    path_before: str | None  # None: a new row
    path_after: str
    error: str | None
    wrote: bool
    removed: list[dict[str, Any]]
    kept_ok: bool = False  # a failure that says nothing of the content left the ok row as it was
    notes: list[str] = field(default_factory=list)  # what `store_result` noted, as committed
    new_paths: list[str] = field(default_factory=list)  # names of the item recorded by this transaction


# Failures that say nothing about the file's content: an unexpected error in the decoder or the model
# (a bug, memory running out), or the store step refusing a value. They never replace a row stored ok
# from the same bytes (`_store_once`): the item would drop out of tag imports and raw-dataset label
# matching for a fault of the run, not of the file. A failure the content explains (truncated, over a
# limit, an unknown codec) does replace it: the same bytes fail the same way on every run.
_FAULT_OF_THE_RUN = frozenset({"error", "inference", "store"})


# The store itself failing (locked past the busy timeout, the server gone): every further file would
# fail the same way, so the batch stops (audited for what it stored) instead of failing each file.
_STORE_DOWN = (OperationalError, InterfaceError)


def _store_once(store: sessionmaker, result: MediaResult) -> _Stored:
    """Store one result in its own write transaction (BEGIN IMMEDIATE on SQLite: a second ingest
    waits for the lock instead of failing with "database is locked" when it starts writing)."""
    with write_scope(store) as session:
        known = _find_media(session, result)
        path_before = known.path if known is not None else None  # store_result rewrites this very row
        if known is not None and known.status == "ok" and result.status != "ok" and result.reason in _FAULT_OF_THE_RUN:
            # Rows are one per content (unique sha256), so this path's failure has no row of its own:
            # the batch reports it (failures, a note), the ok row keeps its status, faces and path.
            return _Stored(known.id, path_before, known.path, result.error, False, [], kept_ok=True)
        wrote = _watch_writes(session)
        media = store_result(session, result, known)
        removed = (_drop_stale_failures(session, media, [media.path, path_text(result.path)])
                   if result.status == "ok" else [])
        stored = _Stored(media.id, path_before, media.path, media.error, wrote[0] or bool(removed), removed,
                         notes=list(_notes(session)), new_paths=list(_new_paths(session)))
    return stored


def _store_file(store: sessionmaker, result: MediaResult) -> _Stored:
    """`_store_once`, tried again once when another ingest inserted the same bytes between this one's
    look-up and its insert (PostgreSQL: the unique key on sha256 refuses the second row): the retry
    finds that row and updates it, as if it had been stored before."""
    try:
        return _store_once(store, result)
    except IntegrityError:
        log.info("%s: stored meanwhile by another ingest; storing again over it", path_text(result.path))
        return _store_once(store, result)


def _changed(obj: object) -> bool:
    """Whether a loaded row really changed, a media item's path aside (see `_watch_writes`)."""
    for attr in inspect(obj).attrs:
        if isinstance(obj, Media) and attr.key == "path":
            continue
        if attr.history.has_changes():
            return True
    return False


def _watch_writes(session: Session) -> list[bool]:
    """A flag that turns True when a flush of this session inserts, deletes or really changes a row.

    `store_result` rewrites every column of a known file; only a net change counts, so a re-run
    over the same files is recognised as changing nothing and writes no audit event (a re-import
    stays idempotent). A media item's path is left to the batch (`ingest`): the same bytes under
    two names in one batch move the path back and forth, which is no change once the batch ends."""
    wrote = [False]

    def before_flush(s: Session, _context: Any, _instances: Any) -> None:
        if s.new or s.deleted or any(_changed(obj) for obj in s.dirty):
            wrote[0] = True

    event.listen(session, "before_flush", before_flush)
    return wrote


@dataclass
class _Ledger:
    """Which media rows a batch changed: those with any write but a path change, plus those whose
    path at the end of the batch differs from the one before it."""

    written: dict[int, None] = field(default_factory=dict)  # ordered set
    origin: dict[int, str] = field(default_factory=dict)  # media id -> path before the batch
    final: dict[int, str] = field(default_factory=dict)  # media id -> path now

    def note(self, media_id: int, path_before: str | None, path_after: str, wrote: bool) -> None:
        """One committed media item (path_before None: a new row)."""
        if path_before is not None:
            self.origin.setdefault(media_id, path_before)
        self.final[media_id] = path_after
        if wrote:
            self.written[media_id] = None

    def changed(self) -> list[int]:
        moved = [m for m, path in self.final.items() if m in self.origin and self.origin[m] != path]
        return list(dict.fromkeys([*self.written, *moved]))

    def to_audit(self, session: Session) -> list[int]:
        """What the batch's event names: the rows it changed, and rows it found as they are that no
        audit event names yet. Why the second: a run killed outright (SIGKILL, power) stores items
        but never writes its event; the re-run that finds them is the first record of who ingested
        them, or they would be in no one's history."""
        changed = self.changed()
        changed_set = set(changed)
        unchanged = [m for m in self.final if m not in changed_set]
        audited: set[str] = set()
        for chunk in _chunks([f"media:{m}" for m in unchanged]):
            audited.update(session.scalars(select(AuditEntity.key).where(AuditEntity.key.in_(chunk))))
        return [*changed, *(m for m in unchanged if f"media:{m}" not in audited)]


def record_ingest_event(session: Session, editor: str, summary: IngestSummary, written: Iterable[int],
                        interrupted: bool = False) -> int:
    """Insert the batch's one audit event (caller owns the transaction) and return its id.

    `Operation` is not used: it snapshots entity rows so that undo can restore them, and an
    ingest's rows are files, not editor decisions to restore. `after` holds the counts and the
    batch's media; `before` is empty. The media rows the batch changed are indexed as entities
    ("media:<id>") so a GIF's history shows when it was ingested and by whom. Undoing such an
    event must be refused (labeling/audit.py decides that; deleting media is never an undo)."""
    written = list(dict.fromkeys(written))
    after = {"ingested": summary.ingested, "cached": summary.cached, "failed": summary.failed,
             "copies": summary.copies, "faces": summary.faces, "media": summary.media}
    if summary.removed:  # failed rows of files since fixed in place (`_drop_stale_failures`)
        after["removed"] = summary.removed
    text = f"ingest: {summary.line()}" + (" (interrupted: the rest of the batch was not stored)" if interrupted else "")
    if interrupted:
        after["interrupted"] = True
    row = AuditEvent(at=utcnow(), editor=editor, operation=INGEST_OPERATION, summary=text, n_entities=len(written),
                     before={}, after=after)
    session.add(row)
    session.flush()
    if written:
        session.execute(insert(AuditEntity.__table__),
                        [{"event_id": row.id, "key": f"media:{m}", "written": True} for m in written])
    return row.id


def _replaced_notes(session: Session, placed: dict[str, set[int]]) -> list[str]:
    """Paths the batch stored an item at (`placed`: path -> those items, new rows and rows moved there)
    where other items were ingested from: the file was replaced by other content.

    Why a note and not a change: those items keep their faces, labels and tags (editors' work, and
    their crops and embeddings are in the cache by content), but the file they point at is now
    another one, which the app would play for them; the editor decides what to do. Checked once the
    batch is stored, so a file renamed and replaced in one batch (its old content found under its
    new name) is no replacement. Why moved rows too: a file overwritten with content the store holds
    under another name moves that item to it (a copy of b.jpg over a.jpg), and the item of a.jpg's
    old content still points at it, also when the moved item went back to its own name later in
    the batch (b.jpg met after a.jpg)."""
    older: dict[str, list[int]] = {}
    for chunk in _chunks(list(placed)):
        rows = session.execute(select(Media.path, Media.id).where(Media.path.in_(chunk), Media.status == "ok")
                               .order_by(Media.id))
        for path, media_id in rows:
            if media_id not in placed[path]:
                older.setdefault(path, []).append(media_id)
    return [f"{path}: the file now holds other content than when it was ingested as media "
            f"{', '.join(map(str, older[path]))}; they keep their faces, labels and tags, "
            "but their file is now this one"
            for path in placed if path in older]


@dataclass
class _Names:
    """The names one media item's bytes were found under in a batch (ok results only), in order."""

    sha256: str
    paths: dict[str, None] = field(default_factory=dict)  # ordered set


def _is_link(path: str, kept: str) -> bool:
    """Whether `path` is `kept` itself under another name (a hard link, or a symbolic link): no copy, so
    `_copy_notes` names it neither among the batch's names nor as the name before the batch (one rule for
    both). Why: a link is the file the store keeps, not a second file that could change or go on its own
    (a tag import naming it is still told which media has its content). False when either name is gone."""
    try:
        return os.path.samefile(path, kept)
    except OSError:
        return False


def _holds(path: str, sha256: str, kept: str) -> bool:
    """Whether `path` is another file than `kept` (no link to it) that still holds these bytes, `kept` holding
    them too (`_holds_bytes`: a kept name overwritten with another clip is no original to be a copy of)."""
    try:
        return _holds_bytes(kept, sha256) and not _is_link(path, kept) and sha256_file(Path(path)) == sha256
    except OSError:  # gone (a move) or unreadable: no copy to name; nor when the kept file itself is gone
        return False


def _copy_notes(names: dict[int, _Names], ledger: _Ledger) -> list[str]:
    """Files whose bytes the store holds under another name: `"{copy}: same content as {path} (media N);
    stored once"`, `path` being the name the item keeps.

    Why: media are one row per content, so of two files with the same bytes only one name is the item's
    (the first it was ingested from, `_kept_path`; the others are recorded as its other names, `MediaPath`):
    the editor should know the two files are one item (one set of labels and tags). The copies are the other names this batch met, and the item's name before the batch
    when that file still holds the same bytes (a copy ingested later is no move: the original is there);
    a link to the kept file is no copy in either case (`_is_link`)."""
    notes = []
    for media_id, seen in names.items():
        kept = ledger.final[media_id]
        copies = [path for path in seen.paths if path != kept and not _is_link(path, kept)]
        before = ledger.origin.get(media_id)
        if before is not None and before != kept and before not in seen.paths and _holds(before, seen.sha256, kept):
            copies.append(before)
        notes += [f"{copy}: same content as {kept} (media {media_id}); stored once" for copy in copies]
    return notes


def interruption(exc: BaseException) -> BaseException | None:
    """The Ctrl-C or SIGTERM (a KeyboardInterrupt or SystemExit, `labeling.cli.Terminated`) an error while
    storing was raised in handling of, if any.

    Why: the signal handler raises wherever Python is, also inside SQLAlchemy's commit; its rollback then
    fails ("This transaction is closed") and that error, an ordinary Exception, replaces the interruption.
    Caught as the file's failure, it turned a stopped ingest into "failed ...: could not be stored" and a
    batch that went on and exited 0 instead of "interrupted: ..." and 143."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if not isinstance(link, Exception):
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None


def _store_and_note(store: sessionmaker, result: MediaResult, ledger: _Ledger, summary: IngestSummary,
                    placed: dict[str, set[int]]) -> tuple[int | None, str | None]:
    """Store one result and note what its committed transaction changed; (media id, error).

    An unexpected error while storing (a value the database refuses, a bug) fails this file only:
    its transaction is rolled back, the result becomes a failure with the error's type and message,
    and the batch goes on. The store itself failing (`_STORE_DOWN`) stops the batch."""
    try:
        stored = _store_file(store, result)
    except _STORE_DOWN:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded as the file's failure
        if (stop := interruption(exc)) is not None:
            raise stop from exc
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            raise
        return None, _failed_to_store(result, exc)
    if stored.kept_ok:  # nothing written: the batch names no row for this file, as for a file not stored
        log.warning("%s: %s; media %d (the same content) is kept as it was", path_text(result.path), result.error,
                    stored.media_id)
        summary.notes.append(f"{path_text(result.path)}: not recorded as failed ({result.reason}): media "
                             f"{stored.media_id}, the same content at {stored.path_after}, stays ok")
        return None, stored.error
    ledger.note(stored.media_id, stored.path_before, stored.path_after, stored.wrote)  # only what committed counts
    if result.status == "ok" and not result.from_cache and stored.path_before is not None and not stored.wrote:
        summary.already_stored += 1  # a cache miss the store held already (`IngestSummary.line`)
    _note_removed(ledger, summary, stored.removed)
    summary.notes += stored.notes
    if result.status == "ok":  # a new row, one moved, or a new name of a known row (a copy of its bytes)
        for path in ([stored.path_after] if stored.path_before != stored.path_after else []) + stored.new_paths:
            placed.setdefault(path, set()).add(stored.media_id)
    return stored.media_id, stored.error


def _note_removed(ledger: _Ledger, summary: IngestSummary, removed: list[dict[str, Any]]) -> None:
    """Failed rows the batch deleted ({"id", "path"}): named by its event, like the rows it changed."""
    for row in removed:
        ledger.written[row["id"]] = None
    summary.removed += removed


@dataclass
class _Warm:
    """An item a warm re-run found stored as it is (`ingest`'s is_stored)."""

    media_id: int
    path: str
    known: set[str] | None = None  # the item's recorded names (`MediaPath`), read when a copy of it is met


class _StaleFailures:
    """The failed rows nobody worked on, read once per batch (on first use): the paths where
    `_drop_stale_failures` would delete one for an ok item there (the warm path's check), and the
    rows of folders that could not be read (`_drop_folder_failures`).

    Why not one query per file: a warm re-run asks for every file, and `media.path` has no index, so
    each question scanned the failed rows (20,000 of them made a 500-file warm run 7x slower). Rows
    failing during the batch may be in it or not (it is read on first use): either way they are this
    batch's own files, at other paths than its ok items and the folders it read."""

    def __init__(self, store: sessionmaker) -> None:
        self._store = store
        self._rows: list[tuple[int, str, str | None]] | None = None
        self._paths: set[str] = set()

    def _read(self) -> list[tuple[int, str, str | None]]:
        if self._rows is None:
            with self._store() as session:
                self._rows = [tuple(row) for row in session.execute(
                    select(Media.id, Media.path, Media.sha256).where(*_unworked_failure()))]
            self._paths = {p for _, p, sha256 in self._rows if _may_be_this_file(p, sha256)}
        return self._rows

    def at(self, path: str) -> bool:
        self._read()
        return path in self._paths

    def dropped(self, paths: Iterable[str]) -> None:
        """These paths' rows were deleted (`_drop_stale_failures`): not asked for again in this batch."""
        self._paths.difference_update(paths)

    def without_content_at(self, paths: set[str]) -> list[int]:
        """The ids of rows never hashed (a folder's, a file's that could not be read) at these paths, but
        not at a text that may be another name's escaped one (`_may_be_this_file`)."""
        return [m for m, p, sha256 in self._read() if sha256 is None and p in paths and _may_be_this_file(p, None)]


def _known_names(store: sessionmaker, warm: _Warm) -> set[str]:
    """The warm item's recorded names, read once per item and batch (only for an item met under a second
    name: a warm re-run of files without copies reads nothing more)."""
    if warm.known is None:
        with store() as session:
            warm.known = set(session.scalars(select(MediaPath.path).where(MediaPath.media_id == warm.media_id)))
    return warm.known


def _settle_warm(store: sessionmaker, warm: _Warm, path: str,
                 failures: _StaleFailures) -> tuple[list[dict[str, Any]], bool]:
    """The warm path's writes for a file whose bytes the store holds as they are (the item's own file, or a
    copy of it met in the same chunk, which gets that file's result): record the copy's name when it is new
    (`_took_path`), and delete the failed rows nobody worked on at either
    path (`_drop_stale_failures`: a file that failed, then was restored to, or replaced by, bytes already
    stored). Returns (the failed rows deleted, whether the name is new).

    Why here: such a file goes through no `store_result`, so a copy added beside an ingested file was noted
    as "same content" but never recorded (a tags row naming it found no media, `dupes` never listed it),
    and a failure replaced by a copy stayed forever. The write lock is taken only when there is something to
    write: a re-run of the same batch writes nothing (and so has no audit event)."""
    new_name = path != warm.path and path not in _known_names(store, warm)
    stale = [p for p in dict.fromkeys([warm.path, path]) if failures.at(p)]
    if not new_name and not stale:
        return [], False
    with write_scope(store) as session:
        media = session.get(Media, warm.media_id)
        if media is None:  # deleted meanwhile by another session: nothing of it to record
            return [], False
        if new_name:
            new_name = _took_path(session, media.id, path)
        removed = _drop_stale_failures(session, media, stale) if stale else []
    failures.dropped(stale)
    _known_names(store, warm).add(path)
    return removed, new_name


def _drop_folder_failures(store: sessionmaker, failures: _StaleFailures,
                          folders: Sequence[Path]) -> list[dict[str, Any]]:
    """Delete the failed rows of folders the batch read (`Discovery.folders`); return them ({"id", "path"}).

    Why: a folder that could not be read (no permission) is recorded as failed, a row without content
    (no sha256) at the folder's path, so the batch says its media were not looked at. Once the folder
    is read its files are stored as they are, and that row would stay forever, counted and listed among
    the failures. Only a row nobody worked on goes (`_StaleFailures.without_content_at`); the write lock
    is taken only when there is one, as most batches have none."""
    candidates = failures.without_content_at({path_text(folder) for folder in folders}) if folders else []
    if not candidates:
        return []
    unworked = [*_unworked_failure(), Media.sha256.is_(None)]
    stale = []
    with write_scope(store) as session:
        for chunk in _chunks(candidates):
            rows = session.execute(select(Media.id, Media.path).where(Media.id.in_(chunk), *unworked)).all()
            session.execute(delete(Media).where(Media.id.in_([m for m, _ in rows])))
            stale += rows
    return [{"id": m, "path": path} for m, path in stale]


def _anchored(path: Path | str) -> Path:
    """An absolute path keeping the names given (symbolic links included), its ".." applied as the system
    applies them: after a symbolic link, to the parent of the link's target.

    Why not os.path.abspath: it drops "name/.." by name, so link/../photo.jpg became the photo beside
    the link, another file or none, while the system (and the CLI's check that the path exists) opens
    the one beside the link's target. Why not resolve: the path keeps the links the editor named."""
    out = Path.cwd()  # joined with an absolute path's root, that root
    for part in Path(path).parts:
        if part == os.pardir:
            out = Path(os.path.realpath(out) if out.is_symlink() else out).parent
        else:
            out = out / part
    return out


def _failed_to_store(result: MediaResult, exc: Exception) -> str:
    """Turn a result its store step refused into a failure; return the message."""
    log.exception("%s: could not be stored", path_text(result.path))
    result.fail("store", f"{path_text(result.path)}: could not be stored: {type(exc).__name__}: {exc}")
    return result.error


def ingest(
    paths: Iterable[Path | str],
    settings: Settings,
    on_start: Callable[[int], None] | None = None,
    on_result: Callable[[MediaResult], None] | None = None,
    pipeline: IngestPipeline | None = None,
    store: sessionmaker | None = None,
    editor: str | None = None,
    keep_outputs: bool = False,
    on_read: OnRead | None = None,
) -> IngestSummary:
    """Ingest files and folders into the cache and the store; a bad file never stops the batch.

    Each media item is stored in its own transaction, so a run killed half-way keeps what it
    stored and a re-run resumes from the cache. With an `editor` (the CLI, the Ingest page, an
    import) the batch is audited by one summary event, written after the last item; without
    one (fixtures, benchmarks: nobody's decision) it is not audited. A batch interrupted by an
    error still gets its event, for what it stored, before the error propagates, carrying the batch's
    summary so far as its `summary` attribute (Ctrl-C, the cache or the store failing: the caller
    reports what was stored before the stop). keep_outputs: paths named in the folders giflens writes in
    the data folder are ingested too (`discover`), for an import that chose them itself. on_read(path, batch):
    each file as soon as it is read, before its result (`OnRead`, for a progress display); on_result counts
    the files done."""
    editor = check_editor(editor) if editor is not None else None  # a bad name is refused before any work
    # Absolute paths (`_anchored`): the store outlives the working directory this ran in, and the app reads a
    # relative media path under the data folder, so "../shared/data/gifs" would point nowhere.
    # In the data folder a walk enters only its uploads: the rest (the cache's and exports' face crops, model
    # artifacts) is giflens's own output, which would come back as media, more of it every run.
    found = discover([_anchored(p) for p in paths], skip=[settings.cache_dir], data_dir=settings.data_dir,
                     keep_outputs=keep_outputs)
    files = found.files
    if on_start is not None:
        on_start(len(files))
    pipeline = pipeline or IngestPipeline(settings)
    store = store or open_store(settings.resolved_database_url)
    summary = IngestSummary(notes=list(found.notes) + found.empty, empty=list(found.empty))
    ledger = _Ledger()
    interrupted = True

    stored_ids: dict[str, _Warm] = {}  # sha256 -> the row of an item stored as it is
    stale_failures = _StaleFailures(store)
    lookup = select(Media.id, Media.status, Media.source_key, Media.path, Media.kind)

    def is_stored(sha256: str, source_key: str, path: Path) -> str | None:
        """The stored kind when the row holds exactly this result (same bytes, path and cache entries,
        stored ok), else None. Cache entries are content-addressed and never change (a pipeline that
        computes otherwise, the import's border retry, keys a namespace of its own: `import_pipeline`),
        so the same key means the same faces, tracks and embeddings: a warm re-run neither reads them from the cache
        nor compares them row by row (the pipeline still checks the entries are on disk, see
        `IngestPipeline.run`)."""
        with store() as session:  # one plain read, no ORM objects: this runs for every file of a warm batch
            row = session.execute(lookup.where(Media.sha256 == sha256)).first()
        if row is None or (row.status, row.source_key, row.path) != ("ok", source_key, path_text(path)):
            return None
        stored_ids[sha256] = _Warm(row.id, row.path)
        return row.kind

    placed: dict[str, set[int]] = {}  # path -> rows created or moved there: checked at the end for replaced files
    names: dict[int, _Names] = {}  # media id -> the names its bytes had in this batch: checked at the end for copies
    try:
        for result in pipeline.run(files, is_stored=is_stored, on_read=on_read):
            if result.stored_faces is not None:  # nothing to write but a stale failed row, nothing changed
                # A copy (the same bytes under another name) is no move either: the row keeps its path.
                warm, error = stored_ids[result.sha256], None
                media_id = warm.media_id
                removed, new_name = _settle_warm(store, warm, path_text(result.path), stale_failures)
                ledger.note(media_id, warm.path, warm.path, bool(removed) or new_name)
                _note_removed(ledger, summary, removed)
                if new_name:  # its file may have been another item's: checked at the end (`_replaced_notes`)
                    placed.setdefault(path_text(result.path), set()).add(media_id)
            else:
                media_id, error = _store_and_note(store, result, ledger, summary, placed)
            summary.add(result)
            if media_id is not None and result.sha256:  # a failed copy shares its bytes' failed row: noted too
                names.setdefault(media_id, _Names(result.sha256)).paths[path_text(result.path)] = None
            entry = {"id": media_id, "path": path_text(result.path), "status": result.status}
            summary.media.append(entry if result.status == "ok" else {**entry, "error": error})
            if on_result is not None:
                on_result(result)
        interrupted = False
        _note_removed(ledger, summary, _drop_folder_failures(store, stale_failures, found.folders))
        with store() as session:
            summary.notes += _replaced_notes(session, placed)
        summary.notes += _copy_notes(names, ledger)
    except BaseException as exc:  # Ctrl-C, the cache or the store failing: what the batch did goes with it
        exc.summary = summary  # type: ignore[attr-defined]
        raise
    finally:  # an interrupted batch is audited too, for what it stored, before the error propagates
        if editor is not None and (ledger.final or ledger.written):
            try:
                with write_scope(store) as session:
                    if ids := ledger.to_audit(session):
                        summary.event_id = record_ingest_event(session, editor, summary, ids, interrupted)
            except Exception:
                if not interrupted:
                    raise
                log.exception("could not record the audit event of an interrupted ingest")  # report the original
    return summary

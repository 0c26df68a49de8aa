"""Editor decisions on faces: approve, reject, relabel, mark unknown (one face or thousands),
whole GIF tracks, and the model's predictions, which never overwrite a decision."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import Row, select
from sqlalchemy.orm import Session, sessionmaker

from labeling.audit import (Key, Operation, OperationResult, _chunks, last_write, lock_classes, merge_chain,
                            run_operation, written_count)
from labeling.errors import NotFoundError, ValidationError
from labeling.queries import current_target, current_track_predictions
from labeling.schema import UNDECIDED_STATUSES, CelebrityClass, Face, FaceEmbedding, FaceLabel, Track
from labeling.validation import check_confidence, check_id, refuse_hidden_characters

DECISIONS = {"approve": "approved", "reject": "rejected", "relabel": "relabeled", "unknown": "unknown"}
# How a summary tells what a decision did ("approved 3 face(s)", "marked 3 face(s) unknown"): the
# sidebar, Overview's undo list and `giflens history` show it as the record of what happened.
DECISION_VERBS = {"approve": ("approved", ""), "reject": ("rejected", ""), "relabel": ("relabeled", ""),
                  "unknown": ("marked", " unknown")}
UNDECIDED = UNDECIDED_STATUSES
SCORE_TOLERANCE = 1e-6  # a stored confidence this close to the new one is the same (top scores keep 6 decimals)


def _existing_faces(session: Session, face_ids: Sequence[int]) -> dict[int, int]:
    """face id -> media id; unknown ids are an error naming them."""
    found: dict[int, int] = {}
    for chunk in _chunks(list(face_ids)):
        found.update(session.execute(select(Face.id, Face.media_id).where(Face.id.in_(chunk))).all())
    missing = [f for f in face_ids if f not in found]
    if missing:
        raise NotFoundError(f"no face with id {', '.join(map(str, missing[:10]))}" + (" ..." if len(missing) > 10 else ""))
    return found


def class_writer_phrase(session: Session | None, class_id: int) -> str:
    """" by ann at ... in operation 12 (set_class_status)": who last wrote the class, or nothing."""
    writer = last_write(session, f"class:{class_id}") if session is not None else None
    return f" {writer.phrase()}" if writer is not None else ""


def gone_class_phrase(session: Session | None, class_id: int) -> str:
    """" (removed by ann at ... in operation 45 (undo of operation 44))" for a class an audited operation
    wrote and that is gone now (an undo of the add that created it), or nothing (no such class ever was).
    Why: an editor who picked the class on a page read "no celebrity class with id 18", as if mistyped."""
    phrase = class_writer_phrase(session, class_id)
    return f" (removed{phrase})" if phrase else ""


def _check_labelable(locked: dict[int, Row], class_id: int, session: Session | None = None) -> None:
    """A class labels may be added to: it exists and is not retired."""
    cls = locked.get(class_id)
    if cls is None:
        raise NotFoundError(f"no celebrity class with id {class_id}" + gone_class_phrase(session, class_id))
    if cls.status == "retired":
        target = f"; it was merged into class {cls.merged_into_id}" if cls.merged_into_id else ""
        raise ValidationError(f"class {cls.name!r} is retired{target}: labels cannot be added to it")


def _current_classes(session: Session, face_ids: Sequence[int]) -> set[int]:
    """The classes the faces' labels name now (decided or predicted), read without a lock: the classes an
    approval without a class may take, to lock before the faces (`lock_classes`)."""
    found: set[int] = set()
    for chunk in _chunks(list(face_ids)):
        for class_id, predicted in session.execute(select(FaceLabel.class_id, FaceLabel.predicted_class_id)
                                                   .where(FaceLabel.face_id.in_(chunk))):
            found.update(c for c in (class_id, predicted) if c is not None)
    return found


def lock_classes_before_faces(session: Session, face_ids: Sequence[int], class_ids: Iterable[int | None]) -> dict[int, Row]:
    """Lock (`lock_classes`) the classes faces are about to take: `class_ids` and the classes their labels
    name now, before the faces are locked. For an operation that locks faces and then decides them in
    parts (`apply_decision` once per class or track): each part would lock its classes after the faces
    of the parts before, while a merge locks classes and then faces, a deadlock. Locked up front, the
    parts find their classes held already."""
    return lock_classes(session, {*class_ids, *_current_classes(session, face_ids)})


def class_phrase(session: Session, class_id: int | None, word: str = "to") -> str:
    """" to 'Brad Pitt' (class 3)": an editor reads the name in the confirmation and the audit log."""
    if class_id is None:
        return ""
    cls = session.get(CelebrityClass, class_id)
    return f" {word} {cls.name!r} (class {class_id})" if cls is not None else f" {word} class {class_id}"


def decided_class_phrase(op: Operation, decision: str, class_id: int | None) -> str:
    """The class a decision's summary names: the one given (" to 'B' (class 2)"), or for an approval
    without one the class every face written took (" as 'A' (class 1)"), the model's guess confirmed.

    Why: "approved 2 face(s)" said nothing of who they were confirmed as; faces that took several
    classes name none here (`giflens history face:ID` shows each face's class)."""
    if decision != "approve":
        return class_phrase(op.session, class_id)
    if class_id is None:
        taken = {after.get("class_id") for text, after in op.after.items() if text.startswith("face:") and after}
        class_id = taken.pop() if len(taken) == 1 else None
    return class_phrase(op.session, class_id, "as")


def optional_class_id(class_id: Any) -> int | None:
    """A class id as callers pass it (int, numpy integer from a dataframe), or None for no class."""
    return None if class_id is None else check_id(class_id, "class")


def _face_ids(face_ids: Sequence[int]) -> list[int]:
    ids = list(dict.fromkeys(check_id(f, "face") for f in face_ids))
    if not ids:
        raise ValidationError("no faces given")
    return ids


def apply_decision(op: Operation, face_ids: Sequence[int], decision: str, class_id: int | None = None,
                   expected_versions: dict[int, int] | None = None, source: str = "editor",
                   proposed_class: int | None = None) -> int:
    """The core of every face decision, inside an open operation (so classes ops can reuse it); the
    number of labels written (a face already so decided is not).
    `proposed_class`: what the model proposed for these faces together (a track's prediction), so
    confirming it is an approval even where a face's own prediction differed."""
    if decision not in DECISIONS:
        raise ValidationError(f"unknown decision {decision!r}; one of {', '.join(DECISIONS)}")
    class_id, proposed_class = optional_class_id(class_id), optional_class_id(proposed_class)
    ids = _face_ids(face_ids)
    media_of = _existing_faces(op.session, ids)
    if decision == "relabel" and class_id is None:
        raise ValidationError("relabel needs the class to move the faces to")
    if class_id is not None and decision in ("reject", "unknown"):
        raise ValidationError(f"{decision} takes no class")
    # classes before faces, as a merge locks them: an approval may take each face's own class
    guessed = _current_classes(op.session, ids) if decision == "approve" else set()
    locked = lock_classes(op.session, {class_id, proposed_class, *guessed})
    if class_id is not None:
        _check_labelable(locked, class_id, op.session)
    rows = op.load("face", [(f,) for f in ids])
    op.check_versions("face", rows, expected_versions)
    changes: dict[Key, dict[str, Any]] = {}
    implied: dict[int, int] = {}  # class an approval takes from the face's own label -> one such face
    touched_media, touched_classes = set(), {class_id}
    for (face_id,), row in rows.items():
        current_class = row["class_id"] if row else None
        if decision == "approve":
            # a face rejected or marked unknown has no current class, but still the model's prediction
            new_class = next((c for c in (class_id, current_class, row and row["predicted_class_id"]) if c is not None),
                             None)
            if new_class is None:
                raise ValidationError(f"face {face_id} has no predicted class to approve; relabel it to a class instead")
            if new_class != class_id:
                implied.setdefault(new_class, face_id)
            agreed = (proposed_class, *((row["predicted_class_id"], current_class) if row else ()))
            status = "approved" if row is None or new_class in agreed else "relabeled"
        elif decision == "relabel":
            new_class, status = class_id, "relabeled"
        else:
            new_class, status = None, DECISIONS[decision]
        values = {"status": status, "class_id": new_class, "source": source, "editor": op.editor}
        if row is not None and all(row[c] == v for c, v in values.items()):
            continue  # the same decision again (a second click): no new version, nothing to undo
        changes[(face_id,)] = values
        touched_media.add(media_of[face_id])
        touched_classes.add(current_class)
        touched_classes.add(new_class)
    # a label may have changed between the unlocked read and the faces' lock: lock what is new (rare)
    locked.update(lock_classes(op.session, [c for c in implied if c not in locked]))
    for implied_class, face_id in implied.items():  # a given class_id was checked above
        try:
            _check_labelable(locked, implied_class)
        except ValidationError as exc:
            raise ValidationError(f"face {face_id}: {exc}; relabel it to another class instead") from None
    op.concern(*(f"media:{m}" for m in touched_media), *(f"class:{c}" for c in touched_classes if c is not None))
    op.update("face", changes, rows)
    return len(changes)


def decision_summary(decision: str, what: str, to_class: str = "") -> str:
    """"approved 3 face(s)", "marked track 4 (6 faces) unknown", "relabeled 2 face(s) to 'B' (class 2)"."""
    verb, suffix = DECISION_VERBS.get(decision, (decision, ""))
    return f"{verb} {what}{suffix}{to_class}"


def decide_faces(factory: sessionmaker[Session], face_ids: Sequence[int], decision: str, editor: str,
                 class_id: int | None = None, expected_versions: dict[int, int] | None = None,
                 source: str = "editor") -> OperationResult:
    class_id = optional_class_id(class_id)
    with run_operation(factory, editor, f"{decision}_faces") as op:
        n, unchanged = written_count(apply_decision(op, face_ids, decision, class_id, expected_versions, source),
                                     len(_face_ids(face_ids)))
        op.summary = decision_summary(decision, f"{n} face(s)", decided_class_phrase(op, decision, class_id)) + unchanged
    return op.result


def approve_faces(factory, face_ids, editor, class_id=None, expected_versions=None, source="editor") -> OperationResult:
    """Confirm the current (predicted) class, or the given one."""
    return decide_faces(factory, face_ids, "approve", editor, class_id, expected_versions, source)


def reject_faces(factory, face_ids, editor, expected_versions=None) -> OperationResult:
    """The predicted class is wrong and no better one is known."""
    return decide_faces(factory, face_ids, "reject", editor, None, expected_versions)


def relabel_faces(factory, face_ids, class_id, editor, expected_versions=None) -> OperationResult:
    return decide_faces(factory, face_ids, "relabel", editor, class_id, expected_versions)


def mark_unknown(factory, face_ids, editor, expected_versions=None) -> OperationResult:
    """A real face of someone who has no class (yet)."""
    return decide_faces(factory, face_ids, "unknown", editor, None, expected_versions)


def tracks_face_ids(session: Session, track_ids: Sequence[int]) -> dict[int, list[int]]:
    """track id -> its face ids, for many tracks in a few queries; unknown or empty tracks are an
    error naming them (a bulk decision on a selection must not silently skip part of it)."""
    ids = list(dict.fromkeys(int(t) for t in track_ids))
    if not ids:
        raise ValidationError("no tracks given")
    found: dict[int, list[int]] = {}
    for chunk in _chunks(ids):
        found.update((t, []) for t in session.scalars(select(Track.id).where(Track.id.in_(chunk))))
    missing = [t for t in ids if t not in found]
    if missing:
        raise NotFoundError(f"no face track with id {', '.join(map(str, missing[:10]))}" + (" ..." if len(missing) > 10 else ""))
    for chunk in _chunks(ids):
        stmt = (select(FaceEmbedding.track_id, FaceEmbedding.face_id).where(FaceEmbedding.track_id.in_(chunk))
                .order_by(FaceEmbedding.track_id, FaceEmbedding.face_id))
        for track_id, face_id in session.execute(stmt):
            found[track_id].append(face_id)
    empty = [t for t in ids if not found[t]]
    if empty:
        raise ValidationError(f"track {', '.join(map(str, empty[:10]))} has no faces")
    return {t: found[t] for t in ids}


def _faces_by_track_class(faces: dict[int, list[int]], predicted: dict[int, int | None]) -> dict[int | None, list[int]]:
    """class a track approval gives -> the distinct faces taking it, each face once.

    Why: one face may sit in several tracks (tracks of two face models over one GIF). Approved track by
    track it would be written twice, and the second write would find its own first one as a change since
    the version the editor saw. A track never predicted (None) leaves each face its own class, which a
    named track holding the same face overrides; two tracks naming different classes for one face are
    contradictory, refused."""
    class_of: dict[int, int | None] = {}
    for track_id, members in faces.items():
        for face_id in members:
            named = predicted[track_id]
            before = class_of.setdefault(face_id, named)
            if named is None or before == named:
                continue
            if before is not None:
                tracks = [t for t, m in faces.items() if face_id in m]
                raise ValidationError(f"face {face_id} is in tracks {', '.join(map(str, tracks))}, which the model "
                                      f"names as different classes ({before} and {named}); approve them one at a time "
                                      "or relabel the face")
            class_of[face_id] = named
    grouped: dict[int | None, list[int]] = {}
    for face_id, class_id in class_of.items():
        grouped.setdefault(class_id, []).append(face_id)
    return grouped


def _why_unnamed(session: Session, track_ids: Sequence[int]) -> str:
    """Why tracks read as naming no one: the model said unknown, or the class it named was retired since
    (on its own or after a merge into a class retired since), which an editor would otherwise take for
    the model's doubt."""
    stored = session.execute(select(Track.id, CelebrityClass.name).join(
        CelebrityClass, CelebrityClass.id == Track.predicted_class_id).where(Track.id.in_(list(track_ids)))).all()
    if not stored:
        return "the model says unknown"
    return "the model named " + ", ".join(f"{name!r} for track {t}" for t, name in stored[:5]) + ", retired since"


def label_tracks(factory: sessionmaker[Session], track_ids: Sequence[int], decision: str, editor: str,
                 class_id: int | None = None, expected_versions: dict[int, int] | None = None) -> OperationResult:
    """One decision for every face of the given GIF person tracks: one transaction, one audit event.

    Why one event: an editor who ticks ten tracks and presses Approve made one decision, and
    "Undo last" must take all of it back. expected_versions (face id -> face label version the
    editor saw, as in `decide_faces`) refuses the whole decision with a ConflictError when any of
    those faces changed since. The faces are read inside the same transaction that writes them.
    A face in several of the tracks is decided once and counted once.
    """
    ids = list(dict.fromkeys(check_id(t, "track") for t in track_ids))
    class_id = optional_class_id(class_id)
    with run_operation(factory, editor, f"{decision}_track" if len(ids) == 1 else f"{decision}_tracks") as op:
        faces = tracks_face_ids(op.session, ids)
        distinct = list(dict.fromkeys(f for members in faces.values() for f in members))
        if decision == "approve" and class_id is None:
            # Approving a track approves the person the model named for the whole track, so every face
            # gets that class; a track the model called unknown has nothing to approve. Tracks never
            # predicted, or whose prediction an undo took back, fall back to each face's own class.
            predicted = current_track_predictions(op.session, ids)
            unnamed = [t for t in ids if predicted[t][1] is not None and predicted[t][0] is None]
            if unnamed:
                raise ValidationError(f"track {', '.join(map(str, unnamed[:10]))} has no predicted class to approve "
                                      f"({_why_unnamed(op.session, unnamed)}); relabel it to a class or mark it "
                                      "unknown, and approve the other tracks on their own")
            by_class = _faces_by_track_class(faces, {t: predicted[t][0] for t in ids})
            # every track's classes before any track's faces: one apply_decision per class locks faces
            lock_classes_before_faces(op.session, distinct, by_class)
            # the versions the editor saw, checked once before any part writes (a part's own write is no conflict)
            op.check_versions("face", op.load("face", [(f,) for f in distinct]), expected_versions)
            written = sum(apply_decision(op, members, decision, proposed, None, proposed_class=proposed)
                          for proposed, members in by_class.items())
        else:
            written = apply_decision(op, distinct, decision, class_id, expected_versions)
        # the faces written, "; 4 unchanged" for those already so decided, as `decide_faces` words it
        n, unchanged = written_count(written, len(distinct))
        which = f"track {next(iter(faces))}" if len(faces) == 1 else f"{len(faces)} tracks"
        op.summary = decision_summary(decision, f"{which} ({n} faces{unchanged})",
                                      decided_class_phrase(op, decision, class_id))
    return op.result


def label_track(factory: sessionmaker[Session], track_id: int, decision: str, editor: str,
                class_id: int | None = None, expected_versions: dict[int, int] | None = None) -> OperationResult:
    """One decision for every face of a GIF's person track (the one-track case of `label_tracks`)."""
    return label_tracks(factory, [track_id], decision, editor, class_id, expected_versions)


@dataclass(frozen=True)
class Prediction:
    face_id: int
    class_id: int | None  # None: the model says unknown
    confidence: float
    top: list[tuple[int, float]]


def _checked_ids(p: Prediction) -> Prediction:
    """The prediction with plain int ids (a recognizer hands numpy integers over from its arrays)."""
    return Prediction(check_id(p.face_id, "face"), optional_class_id(p.class_id), p.confidence,
                      [(check_id(c, "class"), score) for c, score in p.top])


def _concern_predicted(op: Operation, media_of: dict[int, int], changes: dict[Key, dict[str, Any]]) -> None:
    """A prediction run is part of the history of the GIFs of its faces and of the classes it predicted
    or predicted no more, as decisions are (`apply_decision`): the label's class and every class of the
    old and the new prediction, top list included.

    Why the top list: a class named only there (second best) is still named by the label, so undoing the
    class's creation is refused until the run is undone, and that refusal finds the run through the
    class ("class:<id>", labeling/audit.py `_label_events_naming`); the class's history must show it too.
    The old label is the row as the operation first loaded it (`op.loaded`), not the rows `op.update` was
    given: it has put the new values there already, which hid the classes the run took out of the label."""
    classes: set[int | None] = set()
    for key, values in changes.items():
        row = op.loaded.get(f"face:{key[0]}") or {}
        classes.update((row.get("class_id"), row.get("predicted_class_id"), values["predicted_class_id"]))
        classes.update(int(c) for c, _ in [*(row.get("predicted_top") or []), *values["predicted_top"]])
    op.concern(*(f"media:{m}" for m in sorted({media_of[f] for (f,) in changes})),
               *(f"class:{c}" for c in sorted(c for c in classes if c is not None)))


def prediction_targets(session: Session, class_ids: set[int]) -> dict[int, int | None]:
    """class id a model named -> the class its predictions go to now: itself while not retired, the end of
    its merge chain when it was merged away since the model was fitted, None (unknown) when it was
    retired without a merge. The classes are locked (`lock_classes`, FOR SHARE, before the faces), so a
    merge committing meanwhile is waited for and seen. Unknown ids are a NotFoundError."""
    chains = {c: merge_chain(session, c) for c in class_ids}  # unlocked: which classes to lock
    locked = lock_classes(session, {c for chain in chains.values() for c in chain})
    missing = sorted(class_ids - set(locked))
    if missing:
        raise NotFoundError(f"predictions name unknown classes {missing[:10]}")

    def row_of(class_id: int) -> tuple[str, int | None] | None:
        row = locked.get(class_id) or lock_classes(session, [class_id]).get(class_id)  # merged on since the read
        return None if row is None else (row.status, row.merged_into_id)

    return {class_id: current_target(class_id, row_of) for class_id in class_ids}


def mapped_prediction(p: Prediction, targets: dict[int, int | None]) -> Prediction:
    """The prediction naming each class's current target (`prediction_targets`); the top list keeps each
    target once, at its best score, and drops classes retired without a merge."""
    top: dict[int, float] = {}
    for c, score in p.top:
        target = targets[c]
        if target is not None and target not in top:
            top[target] = score
    class_id = targets[p.class_id] if p.class_id is not None else None
    return Prediction(p.face_id, class_id, p.confidence, list(top.items()))


def unique_predictions(predictions: Iterable[Prediction]) -> dict[int, Prediction]:
    """face id -> its prediction (plain ids); the same prediction given twice counts once.

    Why refuse two different ones: which should stand is a guess either way (the last one silently
    won before), and a caller handing them over has a bug worth seeing before anything is written."""
    out: dict[int, Prediction] = {}
    for p in map(_checked_ids, predictions):
        seen = out.setdefault(p.face_id, p)
        if seen != p:
            raise ValidationError(f"face {p.face_id} is given two different predictions in one call "
                                  f"(class {seen.class_id} at {seen.confidence} and class {p.class_id} at "
                                  f"{p.confidence}); nothing was written")
    return out


def _close(old: Any, new: float) -> bool:
    return old is not None and math.isclose(float(old), new, rel_tol=0.0, abs_tol=SCORE_TOLERANCE)


def same_prediction(row: dict[str, Any] | None, values: dict[str, Any]) -> bool:
    """Whether a label already holds the prediction `values` would write (class, confidence, top list,
    model version; and for an undecided label its status, class and source).

    Why: a re-run of the same model over the same data must leave such a label alone. A new version
    for a prediction nobody can tell from the old one would make an editor working on the face reload
    (a ConflictError on the version they saw) and fill the audit log with runs that changed nothing.
    Confidences read back from the database are compared within SCORE_TOLERANCE, not bit for bit."""
    if row is None or row["model_version"] != values["model_version"] \
            or row["predicted_class_id"] != values["predicted_class_id"] \
            or not _close(row["predicted_confidence"], values["predicted_confidence"]):
        return False
    old_top, new_top = row["predicted_top"] or [], values["predicted_top"]
    if len(old_top) != len(new_top) or any(int(oc) != nc or not _close(os, ns)
                                           for (oc, os), (nc, ns) in zip(old_top, new_top)):
        return False
    return all(row[c] == values[c] for c in ("status", "class_id", "source") if c in values)


@dataclass
class PredictionCounts:
    """What a prediction run wrote, for its summary."""

    written: int = 0  # labels given a new prediction
    decided: int = 0  # ... of which an editor or an import had decided: their decision kept
    unchanged: int = 0  # labels that held the same prediction already: not written
    merged: int = 0  # predictions naming a class merged since the fit, moved to its target
    retired: int = 0  # predictions naming a class retired since the fit, made unknown

    def summary(self, model_version: str) -> str:
        return (f"predictions of {model_version} for {self.written} face(s) ({self.decided} already decided kept)"
                + (f"; {self.unchanged} face(s) unchanged" if self.unchanged else "")
                + (f"; {self.merged} naming a class merged since the fit went to the class it was merged into"
                   if self.merged else "")
                + (f"; {self.retired} naming a class retired since the fit are unknown" if self.retired else ""))


def _write_predictions(op: Operation, preds: dict[int, Prediction], model_version: str,
                       counts: PredictionCounts) -> None:
    """Write one chunk of predictions (already mapped to the classes' current targets) inside `op`."""
    media_of = _existing_faces(op.session, list(preds))
    rows = op.load("face", [(f,) for f in preds])
    changes: dict[Key, dict[str, Any]] = {}
    for (face_id,), row in rows.items():
        p = preds[face_id]
        values: dict[str, Any] = {
            "predicted_class_id": p.class_id, "predicted_confidence": check_confidence(p.confidence),
            "predicted_top": [[int(c), round(check_confidence(s), 6)] for c, s in p.top],
            "model_version": model_version,
        }
        if row is None or row["status"] in UNDECIDED:
            values.update(status="predicted", class_id=p.class_id, source="model")
        if same_prediction(row, values):
            counts.unchanged += 1
            continue
        values["predicted_at"] = op.now
        if "status" in values:
            values["editor"] = op.editor
        else:
            counts.decided += 1
        changes[(face_id,)] = values
    counts.written += len(changes)
    op.update("face", changes, rows)
    _concern_predicted(op, media_of, changes)


def record_predictions(factory: sessionmaker[Session], predictions: Sequence[Prediction], model_version: str,
                       editor: str = "model", *, chunk_size: int = 5000,
                       on_chunk: Callable[[int], None] | None = None) -> OperationResult:
    """Write the model's predictions: one operation (one audit event, one undo) however many faces.
    Faces an editor (or an import) decided keep their decision; only the prediction columns beside
    it are refreshed. A label that holds the same prediction already is left alone (`same_prediction`),
    so a run that changes nothing writes no audit event.

    The faces are read and written `chunk_size` at a time, `on_chunk(faces done)` after each (a
    progress bar), all in one transaction: a run split over several events could be undone only in part,
    leaving the store with two models' predictions.

    A class merged away since the model was fitted is predicted as the class it was merged into, and
    a class retired without a merge as unknown (the summary counts both): a label predicting a retired
    class could be neither approved (it takes no labels) nor exported."""
    if not isinstance(model_version, str) or not model_version.strip():
        raise ValidationError("model_version is required")
    if len(model_version) > 64:
        raise ValidationError("model_version is longer than 64 characters")
    refuse_hidden_characters(model_version, "model_version", line_breaks=False)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValidationError(f"chunk_size must be a positive number of faces, got {chunk_size!r}")
    preds = unique_predictions(predictions)
    counts = PredictionCounts()
    with run_operation(factory, editor, "predict_faces") as op:
        class_ids = {p.class_id for p in preds.values()} | {c for p in preds.values() for c, _ in p.top}
        class_ids.discard(None)
        targets = prediction_targets(op.session, class_ids)  # classes locked before the faces
        counts.merged = sum(1 for p in preds.values()
                            if p.class_id is not None and targets[p.class_id] not in (p.class_id, None))
        counts.retired = sum(1 for p in preds.values() if p.class_id is not None and targets[p.class_id] is None)
        if any(targets[c] != c for c in class_ids):
            preds = {f: mapped_prediction(p, targets) for f, p in preds.items()}
        face_ids = list(preds)
        for start in range(0, len(face_ids), chunk_size):
            chunk = face_ids[start:start + chunk_size]
            _write_predictions(op, {f: preds[f] for f in chunk}, model_version, counts)
            if on_chunk is not None:
                on_chunk(start + len(chunk))
        op.summary = counts.summary(model_version)
    return op.result

"""What the Explore page plots: one table of points (plus their vectors) per view, filters over it,
projections that reuse the cache and place new points with `transform`, and nearest neighbours.

The page only wires widgets to these functions, so everything it shows can be rebuilt from Python.
Views: faces (one point per detected face), face tracks (one per person in a GIF, the track's mean
vector), GIFs (EfficientNet-Lite0 media embeddings) and class centroids (mean of each class's faces,
confirmed ones when the class has any). Every table has the same columns, so one figure builder
and one set of filters serve all four.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

import numpy as np
import pandas as pd
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from explorer.bias_audit import decade, groups_of
from explorer.figures import FIXED_COLORS
from explorer.projection import (Projection, ProjectionError, ProjectionParams, cache_entry, fingerprint, load_cached,
                                 project)
from labeling.audit import _chunks
from labeling.queries import (ATTRIBUTE_COLUMNS, DECIDED_STATUSES, TURNED_DOWN, UNLABELED, classes_frame,
                              current_class_targets, current_track_predictions, faces_frame, media_frame, media_tags_frame, tracks_frame)
from labeling.schema import (CONFIRMED_STATUSES, UNDECIDED_STATUSES, CelebrityClass, FaceLabel, MediaEmbedding, Track,
                             bytes_to_vector)
from labeling.validation import class_name_key
from models.index_store import index_folder

VIEWS = ("Faces", "Face tracks", "GIFs", "Class centroids")
POINT_COLUMNS = ["id", "kind", "class",
                 "class_name",  # "class" as stored: without group_safe's suffix, what the class search matches
                 "status", "confidence", "source", "gender", "ethnicity", "decade", "country",
                 "media_id", "media_name", "crop_path", "media_path", "n",
                 "version",  # a face label's (else 0)
                 "nameable",  # Approve has a class to confirm: see nameable_faces, nameable_tracks
                 "approve_class",  # the class id Approve sends (None: none needed), see track_approve_classes
                 "approves",  # the one class Approve gives every face of the point (None: none, or several)
                 "predicted_confidence"]  # the model's own guess's (NaN: no prediction stored), see named_no_one
COLOR_OPTIONS = {"class": "class", "label status": "status", "confidence": "confidence", "source": "source",
                 "gender": "gender", "ethnicity": "ethnicity", "birth decade": "decade", "country": "country"}
HOVER = ["class", "status", "confidence", "media_name"]  # the figures leave out the one the traces are coloured by
# The names Explore gives groups of points that are no class: faces nobody labelled or editors turned down,
# GIFs without a tag, and the figures' "other" (classes past the top N) and "unknown" (no value). A class or
# tag may be named so (labeling.validation allows it), so its points are shown under `group_safe`'s name.
GROUP_NAMES = frozenset(FIXED_COLORS)
LATEST = "latest.json"  # per view and parameters: the last fitted projection, for extending with new points
# Views whose points have stable ids (store primary keys) and vectors that change only on ingest:
# their nearest-neighbour index is worth saving. Class centroids (numbered by class id) move with
# every label decision, so a saved index of them would never be reused.
INDEXED_VIEWS = {"Faces": "faces", "Face tracks": "tracks", "GIFs": "gifs"}
# numba's default threading layer (workqueue) is not safe for parallel kernels launched from two
# threads at once: two editors opening Explore together hung the app. One UMAP at a time per
# process; the second editor waits, then finds the first one's result in the cache.
_FIT_LOCK = threading.Lock()


def _text(values: pd.Series, missing: str = "unknown") -> pd.Series:
    return values.astype(object).where(values.notna(), missing).astype(str)


def attribute_groups(values: pd.Series, attribute: str) -> pd.Series:
    """A demographic attribute as the Bias audit groups it (`bias_audit._group`): placeholders ("n/a",
    "none", "-", ...; "NA" stays a country) are "unknown", case, spaces and Unicode forms folded. Why: a
    legend of "Female", "female " and "N/A" beside an audit of "female" and "unknown" counts other groups."""
    # a multi-valued value is its groups joined, in one order however the parts were typed
    return values.astype(object).map(lambda v: "; ".join(sorted(groups_of(v, attribute)))).astype(str)


CONFIDENCE_RULE = ("Confidence: the model's probability for the class each point shows: for a decided point the "
                   "editors' class (blank when the model's top classes leave it out, or the point was rejected or "
                   "marked unknown), for an undecided one the model's own guess.")


def class_confidence(status: pd.Series, class_id: pd.Series, predicted: pd.Series,
                     tops: Sequence[Any], targets: Mapping[int, int | None]) -> pd.Series:
    """Per point, the confidence Explore colours and filters by (`CONFIDENCE_RULE`). Undecided points: the
    model's own (`predicted`). Decided ones: the model's probability for the class they carry now, read from
    its stored top list (`tops`, classes merged or retired since mapped by `current_top`), NaN when the
    class is not in it or the point was rejected / marked unknown. Why: the prediction's confidence is the
    model's faith in the class an editor moved the face away from (0.95 on a face relabelled or rejected)."""
    out = predicted.astype(float).to_numpy(copy=True)
    for i, (state, klass, top) in enumerate(zip(status, class_id, tops)):
        if state not in DECIDED_STATUSES:
            continue
        out[i] = np.nan if state in TURNED_DOWN or pd.isna(klass) else _score_for(top, int(klass), targets)
    return pd.Series(out, index=predicted.index, dtype=float)


def _score_for(top: Any, class_id: int, targets: Mapping[int, int | None]) -> float:
    """The best score a stored top list gives `class_id`, each listed class read as its target now (as
    `current_top` maps them: merged into another, or dropped when retired), NaN when none maps to it.
    Inline, not through current_top: at 50,000 faces its per-row copies took 2.6 s of each Explore read."""
    scores = [float(p) for c, p in top or () if targets.get(int(c)) == class_id]
    return max(scores) if scores else np.nan


def _stored_tops(store: sessionmaker[Session], column: Any, key: Any, ids: Sequence[int],
                 status: Sequence[Any] | None = None) -> tuple[list[Any], dict[int, int | None]]:
    """The stored top lists (`column`, keyed by `key`) of `ids`, in their order (None for ids whose `status`
    is no decision: only decided points read theirs), and the class targets now."""
    found: dict[int, Any] = {}
    wanted = [int(i) for n, i in enumerate(ids) if status is None or status[n] in DECIDED_STATUSES]
    with store() as session:
        for chunk in _chunks(wanted, 900):
            found.update(session.execute(select(key, column).where(key.in_(chunk))).all())
        targets = current_class_targets(session)
    return [found.get(int(i)) for i in ids], targets


def group_safe(names: pd.Series, noun: str = "class") -> pd.Series:
    """Class (or tag) names as Explore shows them: a name equal to a group's (`GROUP_NAMES`) gets
    " (class)" (" (tag)"), so faces approved as class "rejected" are not drawn, filtered, greyed or averaged
    as the faces editors rejected, and a class "other" is not folded into the figures' "other".
    A name that is already a group's name plus such suffixes gets one more, so no two names meet: "rejected
    (class)" the class stays apart from "rejected" the class. Missing names stay missing."""
    suffix = f" ({noun})"

    def shown(name: Any) -> Any:
        if not isinstance(name, str):
            return name
        base = name
        while base.endswith(suffix):
            base = base[: -len(suffix)]
        return name + suffix if base in GROUP_NAMES else name

    return names.map(shown).astype(object)  # all missing: object still, so fillna with a name stays quiet


def _shown(stored: pd.Series, grouped: pd.Series) -> pd.Series:
    """Points' class names as stored -> as shown (`group_safe`), except where `grouped`: the name is the grey
    group's own (faces editors turned down), not a class's."""
    return group_safe(stored).where(~grouped, stored)


def _empty() -> tuple[pd.DataFrame, np.ndarray]:
    return pd.DataFrame(columns=POINT_COLUMNS), np.zeros((0, 0), dtype=np.float32)


def own_classes(faces: pd.DataFrame) -> pd.Series:
    """Per face (a faces_frame), the class approving it without a class gives it (`apply_decision`): its
    label's class, else the model's prediction; NA for neither."""
    return faces["class_id"].astype("Int64").fillna(faces["predicted_class_id"].astype("Int64"))


def retired_classes(store: sessionmaker[Session]) -> set[int]:
    """The ids of retired classes (merged away or not): the store refuses labels naming them, an approval
    included, so an Approve that would give one is not offered."""
    with store() as session:
        return set(session.scalars(select(CelebrityClass.id).where(CelebrityClass.status == "retired")))


def nameable_faces(faces: pd.DataFrame, retired: Collection[int] = ()) -> np.ndarray:
    """Per face (a faces_frame), whether approving it has a class to confirm: its label's class, else
    the model's prediction (`own_classes`), and that class is not retired (retired: `retired_classes`).
    A face with neither can only be relabelled, and the store refuses a retired class, so Approve is
    disabled for it."""
    own = own_classes(faces)
    return (own.notna() & ~own.isin(list(retired))).to_numpy(dtype=bool)


def named_no_one(own: pd.Series, confidence: pd.Series) -> np.ndarray:
    """Per face, whether the model predicted it but named no one (below the open-set threshold): no class
    to approve (own: `own_classes`, or the points' "approves") though a prediction is stored (confidence:
    the prediction's, which every stored prediction carries, "unknown" included). Such a face has a
    prediction, so `unnameable_help` must not say it has none."""
    return (own.isna() & confidence.notna()).to_numpy(dtype=bool)


NO_ONE_FACES = "have no class, and the model names no one for them (below the open-set threshold)"


def unnameable_help(unnamed: Sequence[int], remedy: str, retired_names: Sequence[str] = (),
                    retired_faces: Collection[int] | None = None, no_one: Collection[int] = ()) -> str | None:
    """The help of an Approve disabled by faces with nothing to approve (see `nameable_faces`): how
    many, which (the first ten), and `remedy`, what to do instead; None when there are none.
    retired_faces: those of `unnamed` whose class is retired (retired_names: those classes, as shown).
    no_one: those of `unnamed` the model predicted but named no one for (`named_no_one`).
    Why apart: "neither a class nor a prediction" is false of a face whose class is retired, and of one
    the model left unknown, so each group is worded on its own. Without retired_faces (a caller that
    cannot tell them apart) the retired classes are only named as a possible cause."""
    if not unnamed:
        return None
    no_one_set = set(no_one)
    unsure = [f for f in unnamed if f in no_one_set]
    head = [_faces_phrase(unsure, NO_ONE_FACES)] if unsure else []
    if retired_faces is None:
        bare = [f for f in unnamed if f not in no_one_set]
        parts = head + ([_faces_phrase(bare, "have neither a class nor a prediction to approve")] if bare else [])
        return (f"{'; '.join(parts)}: {remedy}"
                f"{'; or their class is retired' * bool(retired_names)}{retired_list(retired_names)}")
    retired_set = set(retired_faces)
    gone = [f for f in unnamed if f in retired_set]
    bare = [f for f in unnamed if f not in retired_set and f not in no_one_set]
    parts = head + ([_faces_phrase(bare, "have neither a class nor a prediction to approve")] if bare else []) + (
        [_faces_phrase(gone, f"are of retired class{'es' * (len(retired_names) > 1)} {', '.join(retired_names[:5])}")]
        if gone else [])
    return f"{'; '.join(parts)}: {remedy}"


def _faces_phrase(faces: Sequence[int], what: str) -> str:
    """"2 of the faces <what> (faces 5, 8)", the first ten named."""
    return (f"{len(faces)} of the faces {what} (faces {', '.join(map(str, faces[:10]))}"
            f"{' ...' * (len(faces) > 10)})")


# Why Approve is not offered for a track (`track_refusals`), worded for the help of a disabled Approve.
NO_ONE, UNCLASSED, MIXED, RETIRED = "no one", "unclassed", "mixed", "retired"
TRACK_REFUSALS = {NO_ONE: "the model names no one for {which}",
                  UNCLASSED: "some faces of {which} have neither a class nor a prediction",
                  MIXED: "the faces of {which} are predicted as different classes (relabel the track instead)",
                  RETIRED: "the class {which} would get is retired"}


def unnameable_tracks_help(unnamed: Sequence[int], remedy: str, retired_names: Sequence[str] = (),
                           reasons: Mapping[int, str] | None = None) -> str:
    """The help of an Approve disabled by tracks with nothing to approve (see `nameable_tracks`), in Explore
    and Review alike: which (the first ten), why, and `remedy`. reasons: per track its `track_refusals`
    reason, so each cause is said of the tracks it holds for; without them every possible cause is named."""
    if reasons is None or not any(reasons.get(t) in TRACK_REFUSALS for t in unnamed):  # none known: every cause
        head = f"Nothing to approve for track(s) {', '.join(map(str, unnamed[:10]))}{' ...' * (len(unnamed) > 10)}: "
        return (f"{head}the model names no one for them (or some of their faces have neither a class nor a "
                "prediction, or are predicted as different classes), or the class they would get "
                f"is retired{retired_list(retired_names)}; {remedy}")
    causes = []
    for reason, wording in TRACK_REFUSALS.items():
        held = [t for t in unnamed if reasons.get(t) == reason]
        if held:
            which = f"track(s) {', '.join(map(str, held[:10]))}{' ...' * (len(held) > 10)}"
            causes.append(wording.format(which=which) + (retired_list(retired_names) if reason == RETIRED else ""))
    return f"Nothing to approve for {len(unnamed)} track(s): {'; '.join(causes)}; {remedy}"


def track_refusal_help(reason: str | None) -> str:
    """The help of one track's disabled Approve (Explore's point details), for a `track_refusals` reason
    (RETIRED's help names the class instead); every cause for one the store changed since the point was read."""
    cause = (TRACK_REFUSALS[reason].format(which="this track") if reason in TRACK_REFUSALS else
             "the model names no one for this track, or its faces have no class or different ones")
    return f"Nothing to approve: {cause}; relabel it or mark it unknown"


def retired_list(names: Sequence[str]) -> str:
    """" (retired: 'A', 'B')" for the names as they are to be shown (quoted, escaped), "" for none."""
    return f" (retired: {', '.join(names[:5])})" if names else ""


def face_points(store: sessionmaker[Session], model_id: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """One point per face with an embedding; its class is the current label, else the prediction.

    A face an editor rejected or marked unknown has no class: it is drawn in its own group
    ("rejected", "marked unknown") instead of in the colour of the prediction the editor turned
    down, so a cluster shows what the catalog now says; colour by status shows both."""
    faces, vectors = faces_frame(store, model_id, with_vectors=True)
    if faces.empty:
        return _empty()
    turned_down = faces["label_status"].map(TURNED_DOWN)
    stored = faces["class_name"].where(faces["class_name"].notna(),
                                       turned_down.where(turned_down.notna(), faces["predicted_class_name"]))
    klass = _shown(stored, faces["class_name"].isna() & turned_down.notna())
    points = pd.DataFrame({
        "id": faces["face_id"].astype(int), "kind": "face", "class": _text(klass, UNLABELED),
        "class_name": _text(stored, UNLABELED),
        "status": faces["label_status"].astype(str),
        "confidence": class_confidence(faces["label_status"], faces["class_id"], faces["predicted_confidence"],
                                       *_stored_tops(store, FaceLabel.predicted_top, FaceLabel.face_id,
                                                     faces["face_id"].tolist(), faces["label_status"].tolist())),
        "source": _text(faces["source"], "none"), "gender": attribute_groups(faces["gender"], "gender"),
        "ethnicity": attribute_groups(faces["ethnicity"], "ethnicity"),
        "decade": faces["birth_year"].map(decade).astype(str),
        "country": attribute_groups(faces["country"], "country"), "media_id": faces["media_id"].astype(int),
        "media_name": faces["media_path"].map(lambda p: Path(p).name), "crop_path": faces["crop_path"],
        "media_path": faces["media_path"], "n": 1, "version": faces["version"].astype(int),
        "nameable": nameable_faces(faces, retired_classes(store)),
        "approve_class": pd.Series(pd.NA, index=faces.index, dtype="Int64"), "approves": own_classes(faces),
        "predicted_confidence": faces["predicted_confidence"].astype(float),
    })
    return points, vectors


DECISION_COLUMNS = ["label_status", "class_id", "class_name", "source"]


def track_faces(store: sessionmaker[Session], tracks: pd.DataFrame) -> pd.DataFrame:
    """The faces (a faces_frame) of the tracks (a tracks_frame), of every face model among them."""
    if tracks.empty:
        return faces_frame(store).iloc[0:0]
    faces = pd.concat([faces_frame(store, model) for model in tracks["model_id"].unique()], ignore_index=True)
    return faces[faces["track_id"].isin(tracks["track_id"])]


def track_decisions(store: sessionmaker[Session], tracks: pd.DataFrame,
                    faces: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per track (a tracks_frame) with an editor's or an import's decision on one of its faces, the decision
    most of its decided faces carry: label_status, class_id, class_name (None when turned down) and source,
    indexed by track id. Ties go to the first in status and class order, so the point stays put.
    faces: the tracks' faces (`track_faces`) when the caller has read them already."""
    if tracks.empty:
        return pd.DataFrame(columns=DECISION_COLUMNS, index=pd.Index([], name="track_id"))
    faces = track_faces(store, tracks) if faces is None else faces
    decided = faces[faces["track_id"].isin(tracks["track_id"]) & faces["label_status"].isin(DECIDED_STATUSES)]
    counts = (decided.assign(class_id=decided["class_id"].astype("Int64"))
              .groupby(["track_id", *DECISION_COLUMNS], dropna=False, sort=True).size().rename("n").reset_index())
    counts = counts.sort_values(["track_id", "n"], ascending=[True, False], kind="stable")
    return counts.drop_duplicates("track_id").set_index("track_id")[DECISION_COLUMNS]


def track_predictions(store: sessionmaker[Session], tracks: pd.DataFrame) -> dict[int, tuple[int | None, Any]]:
    """The model's standing answer per track (a tracks_frame): `current_track_predictions`."""
    with store() as session:
        return current_track_predictions(session, tracks["track_id"].astype(int).tolist())


def track_approve_classes(standing: Mapping[int, tuple[int | None, Any]], tracks: pd.DataFrame,
                          decision: pd.DataFrame, faces: pd.DataFrame) -> list[int | None]:
    """Per track (a tracks_frame; decision: `track_decisions` aligned with it; faces: its faces), the class
    Explore's Approve must name to confirm what the track's point shows: the class an editor decided
    (approved or relabelled) unless approving without a class gives every face that class already (the
    model's standing prediction for the whole track is it, or, with none standing, every face's own class,
    else its prediction, is it); None otherwise (an undecided or turned-down track: `label_tracks` without a
    class approves the model's person). Why: given no class, approving a predicted track gives every face
    the model's person, which would overwrite the editor's relabel the point shows, as a face's Approve
    confirms its current label; and sending no class where it changes nothing lets such tracks be
    approved together with undecided ones. standing: `current_track_predictions` of the tracks."""
    confirmed = decision["label_status"].isin(CONFIRMED_STATUSES) & decision["class_id"].notna()
    only = track_own_class(faces)
    out: list[int | None] = []
    for track, ok, chosen in zip(tracks["track_id"], confirmed, decision["class_id"]):
        if not ok:
            out.append(None)
            continue
        named, at = standing.get(int(track), (None, None))
        given = named if at is not None else only.get(track, pd.NA)
        out.append(None if not pd.isna(given) and int(given) == int(chosen) else int(chosen))
    return out


def track_own_class(faces: pd.DataFrame) -> pd.Series:
    """Per track id of the faces (a faces_frame), the one class every face's `own_classes` is, NA when
    a face has none or they differ: what approving a track without a standing prediction gives. Grouped
    counts, not a Python function per track: 5,000 tracks took 2 s that way, 0.01 s this way."""
    g = own_classes(faces).groupby(faces["track_id"])
    return g.min().where((g.count() == g.size()) & (g.nunique() == 1)).astype("Int64")


def track_approves(standing: Mapping[int, tuple[int | None, Any]], tracks: pd.DataFrame, faces: pd.DataFrame,
                   approve_classes: Sequence[int | None]) -> pd.Series:
    """Per track (a tracks_frame), the one class Explore's Approve gives every face of it: the class it
    sends (approve_classes, `track_approve_classes`), else the model's standing person for the track,
    else (none standing) the one class of its faces (`track_own_class`); NA when none or several. Why:
    a lasso of tracks that all come out as one class is one approval of that class, whichever way each
    track reaches it (an editor's relabel, the model's name)."""
    only = track_own_class(faces)
    out: list[Any] = []
    for track, sent in zip(tracks["track_id"], approve_classes):
        named, at = standing.get(int(track), (None, None))
        out.append(sent if sent is not None else named if at is not None else only.get(track, pd.NA))
    return pd.Series(out, index=tracks.index, dtype="Int64")


def nameable_tracks(store: sessionmaker[Session], tracks: pd.DataFrame, faces: pd.DataFrame,
                    approve_classes: Sequence[int | None] | None = None,
                    standing: Mapping[int, tuple[int | None, Any]] | None = None,
                    retired: Collection[int] | None = None) -> np.ndarray:
    """Per track (a tracks_frame; faces: its faces, `track_faces`), whether approving it succeeds and gives
    what its point shows, as Explore's Approve buttons send it: `track_refusals` finds no reason against.
    Why: an Approve the store refuses is as misleading as one disabled that works. standing:
    `track_predictions`, retired: `retired_classes`, when the caller has read them."""
    standing = track_predictions(store, tracks) if standing is None else standing
    retired = retired_classes(store) if retired is None else retired
    return np.array([r is None for r in track_refusals(tracks, faces, approve_classes, standing, retired)], dtype=bool)


def track_refusals(tracks: pd.DataFrame, faces: pd.DataFrame, approve_classes: Sequence[int | None] | None,
                   standing: Mapping[int, tuple[int | None, Any]], retired: Collection[int]) -> list[str | None]:
    """Per track (a tracks_frame; faces: its faces), why Approve is not offered (NO_ONE, UNCLASSED, MIXED,
    RETIRED), None where it is. A track given its decided class (approve_classes, from
    `track_approve_classes`; None where no class is sent) has that class to confirm unless it was retired
    since. Given no class, `label_tracks` approves the person the model names for the whole track while that
    prediction stands (`current_track_predictions`: a retired one reads as unknown), so a track the model
    called unknown has nothing to approve (NO_ONE). A track without one (never predicted, or its prediction
    undone) gives each face its own class, else its prediction (`own_classes`): it is offered only when they
    all come out as one class (`track_own_class`), as its point shows that one class; a face with none is
    UNCLASSED, faces of different classes MIXED (approving would give face 7 Alice and face 8 Bob under a
    point saying Alice), one retired class RETIRED (the store refuses it)."""
    given = list(approve_classes) if approve_classes is not None else [None] * len(tracks)
    retired = set(retired)
    own = own_classes(faces).groupby(faces["track_id"])
    unclassed = own.count() < own.size()
    mixed = own.nunique() > 1
    only = track_own_class(faces)
    out: list[str | None] = []
    for track, sent in zip(tracks["track_id"], given):
        named, at = standing.get(int(track), (None, None))
        if sent is not None:
            out.append(RETIRED if sent in retired else None)
        elif at is not None:
            out.append(NO_ONE if named is None else RETIRED if named in retired else None)
        elif track not in unclassed.index or unclassed[track]:  # a track without faces: refused
            out.append(UNCLASSED)
        elif mixed[track]:
            out.append(MIXED)
        else:
            out.append(RETIRED if int(only[track]) in retired else None)
    return out


def undecided_track_status(tracks: pd.DataFrame, faces: pd.DataFrame) -> pd.Series:
    """Per track (a tracks_frame; faces: its faces), the label status its point shows while nobody decided
    it, in the faces view's words, so one colour-by-status legend and one status filter serve both views:
    "predicted" when the model predicted any of its faces (its guess may be "unknown"), else UNLABELED."""
    predicted = set(faces.loc[faces["label_status"].isin(UNDECIDED_STATUSES), "track_id"])
    return tracks["track_id"].map(lambda t: UNDECIDED_STATUSES[0] if t in predicted else UNLABELED)


def track_points(store: sessionmaker[Session], model_id: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """One point per face track (a person in one GIF) at the track's mean embedding.

    Its class follows the faces view's rule: a track an editor (or an import) decided shows that decision
    (the one most of its decided faces carry, and its label status: approved, relabeled, or the grey groups
    "rejected" and "marked unknown"), an undecided one the person the model names for the whole track, with
    the faces view's status for no decision ("predicted", or "unlabeled" before any prediction)."""
    tracks = tracks_frame(store, model_id)
    if tracks.empty:
        return _empty()
    with store() as session:
        blobs = dict(session.execute(select(Track.id, Track.vector).where(Track.id.in_(tracks["track_id"].tolist()))).all())
    tracks = tracks[tracks["track_id"].isin(list(blobs))].reset_index(drop=True)
    vectors = np.stack([bytes_to_vector(blobs[t]) for t in tracks["track_id"]]).astype(np.float32)
    faces = track_faces(store, tracks)
    decision = track_decisions(store, tracks, faces).reindex(tracks["track_id"]).reset_index(drop=True)
    decided = decision["label_status"].notna()
    standing = track_predictions(store, tracks)
    approve = track_approve_classes(standing, tracks, decision, faces)
    turned_down = decision["label_status"].map(TURNED_DOWN)
    stored = decision["class_name"].where(decision["class_name"].notna(), turned_down
                                          ).where(decided, tracks["predicted_class_name"])
    klass = _shown(stored, decided & decision["class_name"].isna() & turned_down.notna())
    person_id = decision["class_id"].astype("Int64").where(decided, tracks["predicted_class_id"].astype("Int64"))
    # a track's demographic attributes are those of the person it shows
    people = classes_frame(store).set_index("class_id")[list(ATTRIBUTE_COLUMNS)]
    person = people.reindex(person_id).reset_index(drop=True)
    points = pd.DataFrame({
        "id": tracks["track_id"].astype(int), "kind": "track", "class": _text(klass, UNLABELED),
        "class_name": _text(stored, UNLABELED),
        "status": decision["label_status"].where(decided, undecided_track_status(tracks, faces)).astype(str),
        "confidence": class_confidence(decision["label_status"], decision["class_id"],
                                       tracks["predicted_confidence"],
                                       *_stored_tops(store, Track.predicted_top, Track.id, tracks["track_id"].tolist(),
                                                     decision["label_status"].tolist())),
        "source": decision["source"].where(decided, "model").astype(str),
        "gender": attribute_groups(person["gender"], "gender"),
        "ethnicity": attribute_groups(person["ethnicity"], "ethnicity"),
        "decade": person["birth_year"].map(decade).astype(str), "country": attribute_groups(person["country"], "country"),
        "media_id": tracks["media_id"].astype(int), "media_name": tracks["media_path"].map(lambda p: Path(p).name),
        "crop_path": tracks["representative_crop_path"], "media_path": tracks["media_path"],
        "n": tracks["n_faces"].astype(int), "version": 0,
        "nameable": nameable_tracks(store, tracks, faces, approve, standing),
        "approve_class": pd.Series(approve, dtype="Int64"),
        "approves": track_approves(standing, tracks, faces, approve),
        "predicted_confidence": tracks["predicted_confidence"].astype(float),
    })
    return points, vectors


def gif_model(store: sessionmaker[Session]) -> str | None:
    """The GIF embedding model the GIFs view shows: the one most media items were embedded with
    (ties: the first by name); None before any GIF is embedded."""
    with store() as session:
        row = session.execute(select(MediaEmbedding.model_id).group_by(MediaEmbedding.model_id)
                              .order_by(func.count().desc(), MediaEmbedding.model_id).limit(1)).first()
    return None if row is None else str(row[0])


def gif_points(store: sessionmaker[Session], model_id: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """One point per media item with a GIF embedding; its 'class' is its most confident active tag."""
    with store() as session:
        stmt = select(MediaEmbedding.media_id, MediaEmbedding.model_id, MediaEmbedding.vector).order_by(MediaEmbedding.media_id)
        if model_id is not None:
            stmt = stmt.where(MediaEmbedding.model_id == model_id)
        rows = session.execute(stmt).all()
    if not rows:
        return _empty()
    model = model_id or gif_model(store)
    rows = [r for r in rows if r[1] == model]
    media = media_frame(store).set_index("media_id")
    tags = media_tags_frame(store, status="active")
    top_tag = tags.sort_values("confidence", ascending=False).drop_duplicates("media_id").set_index("media_id")
    ids = [int(r[0]) for r in rows]
    item, tag = media.reindex(ids), top_tag.reindex(ids)  # aligned with the vectors; missing rows are NaN
    points = pd.DataFrame({
        "id": ids, "kind": "gif", "class": group_safe(tag["tag"], "tag").fillna("untagged").astype(str).to_numpy(),
        "class_name": tag["tag"].astype(object).fillna("untagged").astype(str).to_numpy(),
        "status": item["status"].fillna("ok").astype(str).to_numpy(),
        "confidence": tag["confidence"].astype(float).to_numpy(), "source": tag["source"].fillna("none").astype(str).to_numpy(),
        "gender": "unknown", "ethnicity": "unknown", "decade": "unknown", "country": "unknown",
        "media_id": ids, "media_name": item["name"].fillna("").astype(str).to_numpy(),
        "crop_path": None, "media_path": item["path"].fillna("").astype(str).to_numpy(),
        "n": item["faces"].fillna(0).astype(int).to_numpy(), "version": 0, "nameable": False,
        "approve_class": pd.Series(pd.NA, index=range(len(ids)), dtype="Int64"),
        "approves": pd.Series(pd.NA, index=range(len(ids)), dtype="Int64"), "predicted_confidence": np.nan,
    })
    return points, np.stack([bytes_to_vector(r[2]) for r in rows]).astype(np.float32)


def centroid_points(faces: pd.DataFrame, vectors: np.ndarray,
                    class_ids: Mapping[str, int]) -> tuple[pd.DataFrame, np.ndarray]:
    """Class centroids from face points: the mean of a class's confirmed faces when it has any
    (what training reads), else of every face labelled or predicted with it; re-normalised.

    A centroid's id is its class's id (`class_ids`: name -> class id, the catalog's; a class not in it is
    left out), not its position: a class added or retired shifts the positions, and the page remembers a
    selected centroid, its projection and its history (`class:<id>`) by id.

    A face's class is read by id and status, not by the name shown: the class Approve gives it ("approves")
    unless an editor turned it down. Why: a class may be named "rejected" or "unlabeled" like the groups
    of faces that have none, and comparing names dropped it, or averaged rejected faces into it."""
    own = faces["approves"].astype("Int64")
    labelled = own.notna() & ~faces["status"].isin(list(TURNED_DOWN))
    if not labelled.any():
        return _empty()
    catalog = set(class_ids.values())
    rows, centres = [], []
    for point_id, part in faces[labelled].groupby(own[labelled], sort=False):
        if int(point_id) not in catalog:  # added or removed between the two reads: right on the next run
            continue
        name = part["class"].iloc[0]
        confirmed = part["status"].isin(CONFIRMED_STATUSES)
        members = part[confirmed] if confirmed.any() else part
        centre = vectors[members.index.to_numpy()].mean(axis=0)
        centres.append(centre / (np.linalg.norm(centre) or 1.0))
        first = members.iloc[0]
        rows.append({"id": int(point_id), "kind": "class", "class": name, "class_name": part["class_name"].iloc[0],
                     "status": "confirmed" if confirmed.any() else "predicted only",
                     "confidence": float(part["confidence"].mean()), "source": "centroid",
                     "gender": first["gender"], "ethnicity": first["ethnicity"], "decade": first["decade"],
                     "country": first["country"], "media_id": int(first["media_id"]), "media_name": first["media_name"],
                     "crop_path": first["crop_path"], "media_path": first["media_path"], "n": int(len(members)),
                     "version": 0, "nameable": True, "approve_class": pd.NA, "approves": pd.NA,
                     "predicted_confidence": np.nan})
    if not rows:
        return _empty()
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["class"], rows[i]["id"]))  # by name, as before
    return (pd.DataFrame([rows[i] for i in order], columns=POINT_COLUMNS),
            np.stack([centres[i] for i in order]).astype(np.float32))


NOTHING_YET = "Nothing to show yet: ingest GIFs or photos on the Ingest page (or `giflens ingest`)."


def empty_view_message(view: str, has_media: bool, has_faces: bool, media_count: int | None = None,
                       face_statuses: Collection[str] = ()) -> str:
    """Why a view has no point, and what fills it: ingesting more photos fills neither the GIFs view
    (GIF embeddings are made for GIFs and videos only) nor the class centroids (classes need faces),
    and ingesting more of the same media fills no face view when none of it held a face.
    media_count, when given, is the number of media items stored (said in that last case).
    face_statuses: the label status of every face of the view's model (the Faces view's "status"), so
    empty centroids over faces that editors all rejected or marked unknown say that, not "no class has
    faces yet" (which sends the editor to add classes that exist)."""
    if view == "GIFs" and has_media:
        return ("No GIF or video has a GIF embedding yet: photos are shown in the Faces view; "
                "ingest GIFs or videos to see them here.")
    statuses = pd.Series(list(face_statuses), dtype=object)
    if view == "Class centroids" and len(statuses) and statuses.isin(list(TURNED_DOWN)).all():
        return (f"All {len(statuses):,} face(s) are rejected or marked unknown, so no class has a face to average: "
                "approve or relabel faces (Faces view, Review page) to see their classes here.")
    if view == "Class centroids" and has_faces:
        return ("No class has faces yet: add or import classes on the Classes page (seeded with faces), "
                "or label faces with a class in the Faces view or on the Review page.")
    if has_media and not has_faces:  # faces, face tracks and class centroids all need a detected face
        items = f" ({media_count} item{'' if media_count == 1 else 's'})" if media_count is not None else ""
        return (f"No face was found in the ingested media{items}: ingesting more of the same adds none. GIFs and "
                "videos are shown in the GIFs view; the Ingest page (or `giflens ingest`) lists the files that "
                "failed. Ingest media with visible faces to fill this view.")
    return NOTHING_YET


def decided_since_prediction(store: sessionmaker[Session]) -> set[int]:
    """The faces an editor decided after the model's last prediction for them, or decided with no
    prediction at all (an approval before any `giflens predict`, a class's seed faces): the review queues
    have nothing left to ask about them. A prediction run stamps both predicted_at and updated_at of the
    labels it refreshes, so a decision made before it (updated_at == predicted_at) is one the new model
    may disagree with: such faces stay in the queue. So do the labels an import wrote: no editor weighed
    them, and a mislabelled training photo is what the queue's "neighbours disagree" is there to catch."""
    with store() as session:
        rows = session.scalars(select(FaceLabel.face_id).where(
            FaceLabel.status.in_(DECIDED_STATUSES), FaceLabel.source == "editor",
            or_(FaceLabel.predicted_at.is_(None), FaceLabel.updated_at > FaceLabel.predicted_at)))
        return {int(f) for f in rows}


def view_points(store: sessionmaker[Session], view: str, model_id: str | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """The points of one view and their vectors, rows aligned, index 0..n-1."""
    if view == "Faces":
        return face_points(store, model_id)
    if view == "Face tracks":
        return track_points(store, model_id)
    if view == "GIFs":
        return gif_points(store)
    if view == "Class centroids":
        catalog = classes_frame(store)
        return centroid_points(*face_points(store, model_id), dict(zip(catalog["name"], catalog["class_id"])))
    raise ValueError(f"unknown view {view!r}; one of {', '.join(VIEWS)}")


def matching_classes(names: Collection[str], search: str) -> list[str]:
    """The names containing search, compared as `class_name_key` compares (any case, compatibility forms,
    composed or decomposed accents, runs of whitespace), as the Classes page searches: "JOSE\u0301" as a
    macOS paste gives it, or a doubled space, finds "José"; every name for an empty search."""
    needle = class_name_key(search)
    return [n for n in names if needle in class_name_key(n)]


def searched_classes(points: pd.DataFrame, search: str) -> list[str]:
    """The classes (as shown: "class") of the points whose stored name ("class_name") the search finds, as
    `matching_classes` compares; every class for an empty search. Why the stored name: the " (class)" suffix
    `group_safe` gives a class named like a group is Explore's, not the class's, and "class" must not find
    "rejected (class)". A frame without "class_name" (no group-named class) is searched by "class"."""
    if not search.strip():
        return points["class"].unique().tolist()
    stored = points["class_name"] if "class_name" in points else points["class"]
    found = stored.isin(matching_classes(stored.unique(), search))
    return points.loc[found, "class"].unique().tolist()  # first-seen order, as dict.fromkeys, without a Python loop


def filter_points(points: pd.DataFrame, classes: Sequence[str] = (), statuses: Sequence[str] = (),
                  confidence: tuple[float, float] | None = None, media_id: int | None = None,
                  search: str = "", keep_ids: Sequence[Any] | None = None) -> pd.Series:
    """A boolean mask over points. Empty choices keep everything; a confidence range keeps points
    without a confidence only when it is the full [0, 1]; search matches the names as stored
    (`searched_classes`)."""
    mask = pd.Series(True, index=points.index)
    if classes:
        mask &= points["class"].isin(list(classes))
    if statuses:
        mask &= points["status"].isin(list(statuses))
    if confidence is not None and tuple(confidence) != (0.0, 1.0):
        lo, hi = confidence
        mask &= points["confidence"].between(lo, hi)
    if media_id is not None:
        mask &= points["media_id"] == media_id
    if class_name_key(search):
        mask &= points["class"].isin(searched_classes(points, search))
    if keep_ids is not None:
        mask &= points["id"].isin(list(keep_ids))
    return mask


def filter_summary(classes: Sequence[str] = (), statuses: Sequence[str] = (),
                   confidence: tuple[float, float] | None = None, media_name: str | None = None,
                   search: str = "", isolated: int | None = None, present: Collection[str] = (),
                   media_present: bool = True, found: Collection[str] | None = None) -> str:
    """The active filters of `filter_points` in words ("search 'serena' · classes Al Gore (outside the
    search)"), "" when none is. Filters stay set across views and while the Filters expander is closed,
    so the page says which ones hide points; a chosen class the search or the view leaves out is named
    as such rather than dropped. `present`: the classes of the view's points; media_present: whether any
    point of the view is of the chosen GIF (a GIF chosen in another view stays chosen, and hides them all);
    found: the classes the search finds (`searched_classes`), by default those whose shown name it matches."""
    needle = class_name_key(search)

    def why_empty(name: str) -> str:
        # `found` knows only this view's classes: one chosen in another view is matched by its name
        outside = (name not in found if found is not None and (not present or name in present)
                   else not matching_classes([name], search))
        if needle and outside:
            return " (outside the search)"
        return " (none in this view)" if present and name not in present else ""

    parts = []
    if needle:
        parts.append(f"search {search.strip()!r}")
    if classes:
        parts.append("classes " + ", ".join(f"{c}{why_empty(c)}" for c in classes))
    if statuses:
        parts.append("status " + ", ".join(statuses))
    if confidence is not None and tuple(confidence) != (0.0, 1.0):
        parts.append(f"confidence {confidence[0]:.2f}-{confidence[1]:.2f}")
    if media_name is not None:
        parts.append(f"GIF {media_name}{'' if media_present else ' (none in this view)'}")
    if isolated is not None:
        parts.append(f"isolated 2D selection of {isolated}")
    return " · ".join(parts)


def index_dir_for(data_dir: Path | str, view: str, model_id: str | None) -> Path | None:
    """Where the nearest-neighbour index of a view's points is saved (`<data_dir>/indexes/faces-<model>`
    for faces, which Review's suspect queue uses); None for views not worth a saved index (see
    INDEXED_VIEWS) or without a model."""
    if view not in INDEXED_VIEWS and view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; one of {', '.join(VIEWS)}")
    if view not in INDEXED_VIEWS or not model_id:
        return None
    return index_folder(data_dir, f"{INDEXED_VIEWS[view]}-{model_id}")


def nearest(vectors: np.ndarray, row: int, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the k nearest neighbours of `row` by cosine distance (itself excluded), and the distances.

    One exact scan of the (unit) vectors: 1.3 ms at 50,000 points, cheaper per click in Explore
    than checking a saved index's fingerprint (Review's suspect queue, which queries every face,
    is what the saved indexes are for).
    """
    if len(vectors) < 2:
        return np.zeros(0, dtype=int), np.zeros(0)
    dist = 1.0 - vectors @ vectors[row]
    dist[row] = np.inf
    k = min(k, len(vectors) - 1)
    rows = np.argpartition(dist, k - 1)[:k]
    rows = rows[np.argsort(dist[rows])]
    return rows, dist[rows]


def _latest_file(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"{key}-{LATEST}"


def projection_for(vectors: np.ndarray, ids: Sequence[Any], cache_dir: Path | str, key: str, *, method: str = "umap",
                   model_id: str = "", on_progress: Callable[[str, float], None] | None = None) -> tuple[Projection, str]:
    """The projection of these points, and how it was obtained: "cache" (the same set and parameters
    before), "extended" (the last projection of this view covers a subset: only the new points are
    placed, with UMAP's transform, so the map editors know does not move), or "fitted".

    `key` names the view and model (e.g. "faces-dlib-resnet-v1"); sets too small for UMAP raise
    ProjectionError and the caller falls back to PCA."""
    cache_dir = Path(cache_dir)
    params = ProjectionParams(method, 3, "cosine", 15, 0.1, 42)
    hit = load_cached(vectors, ids, cache_dir, model_id=model_id, method=method)
    if hit is not None:
        return hit, "cache"
    with _FIT_LOCK:
        return _extend_or_fit(vectors, ids, cache_dir, key, params, model_id, on_progress)


def _extend_or_fit(vectors: np.ndarray, ids: Sequence[Any], cache_dir: Path, key: str, params: ProjectionParams,
                   model_id: str, on_progress: Callable[[str, float], None] | None) -> tuple[Projection, str]:
    method = params.method
    hit = load_cached(vectors, ids, cache_dir, model_id=model_id, method=method)
    if hit is not None:  # computed by another session while this one waited for the lock
        return hit, "cache"
    latest = _latest_file(cache_dir, f"{key}-{params.key()}")
    base = _load_latest(latest)
    ids_arr = np.asarray(list(ids))
    if base is not None and base.can_extend and len(base):
        known = set(base.ids.tolist())
        new_rows = np.array([i for i, v in enumerate(ids_arr.tolist()) if v not in known], dtype=int)
        if set(ids_arr.tolist()) >= known and 0 < len(new_rows):
            if on_progress:
                on_progress("transform", 0.5)
            extended = base.extend(vectors[new_rows], ids_arr[new_rows])
            order = {v: i for i, v in enumerate(extended.ids.tolist())}
            coords = extended.coords[[order[v] for v in ids_arr.tolist()]]
            proj = Projection(ids=ids_arr, coords=coords, params=params,
                              fingerprint=fingerprint(vectors, ids_arr, model_id), model_id=model_id,
                              reducer=extended.reducer, fit_seconds=0.0)
            folder = proj.save(cache_entry(cache_dir, proj.fingerprint, params))
            _write_latest(latest, folder)
            return proj, "extended"
    try:
        proj = project(vectors, ids_arr, method=method, cache_dir=cache_dir, model_id=model_id,
                       on_progress=on_progress)
    except BaseException:
        # An editor who left the page mid-fit (Streamlit's stop) still gets the finished fit saved
        # by `project`; point "latest" at it too, so the next new points extend it, not refit.
        entry = cache_entry(cache_dir, fingerprint(vectors, ids_arr, model_id), params)
        if entry.is_dir():
            _write_latest(latest, entry)
        raise
    _write_latest(latest, cache_entry(cache_dir, proj.fingerprint, params))
    return proj, "fitted"


def _write_latest(latest: Path, folder: Path) -> None:
    latest.parent.mkdir(parents=True, exist_ok=True)
    tmp = latest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"entry": str(Path(folder).name)}))
    tmp.replace(latest)


def _load_latest(latest: Path) -> Projection | None:
    try:
        entry = latest.parent / json.loads(latest.read_text())["entry"]
        return Projection.load(entry)
    except (OSError, ValueError, KeyError, ProjectionError):
        return None

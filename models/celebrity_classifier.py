"""Celebrity classifier over face embeddings: class centroids plus a kNN vote, with an open-set threshold.

Why this shape: editors curate a handful of approved faces per celebrity, and a new class must
work the moment it is approved, without retraining. A centroid (normalised mean of the class's
faces) is the most stable prototype when a class has 3-5 faces; a distance-weighted kNN vote over
all reference faces keeps classes whose faces fall into several looks (beard, no beard). Both are
turned into distributions over classes and mixed with `centroid_weight`.

Most faces in GIFs belong to nobody in the class list, so a face is only named when it is close
enough to its best class: the cosine distance to the predicted class's centroid must not exceed
`threshold_`. The threshold is calibrated at fit time, leave-one-out on the training set: genuine
distances are each face to its own class centroid computed without it (without its whole media item,
when fit is given each face's media: a GIF track's frames are nearly one face); impostor distances are
each face to the nearest centroid of any other class, i.e. what the face would look like if its
class did not exist. The threshold accepts `target_far` of the impostors; with too few impostors to
resolve that target it is capped at a per-model prior (PRIOR_THRESHOLD) and the rate is NaN. On LFW the centroid
distance separated unknown people better than the nearest-reference distance (bench/recognition.py).

Per GIF track, GIPHY's detector multiplied per-frame class probabilities; `predict_track` does that
in log space ("product") or classifies the normalised mean embedding ("mean"), and
`compare_track_methods` measures both on labelled tracks.

Every prediction call names the embedding model of its vectors: distances between embeddings of
two different models are meaningless numbers, so a mismatch is an error, never a silent guess.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from models.atomic_folder import atomic_folder

UNKNOWN = "unknown"
# Per face model: the open-set threshold a large calibration gives, the cap of one calibrated on too few
# impostors to resolve its target (see `open_set_threshold`). dlib-resnet-v1: bench/recognition.py
# (2026-12, 5 draws) on LFW, 119 enrolled people x 5 reference photos (595 impostors, target_far 0.01):
# threshold 0.0432 +- 0.0022, measured false-accept rate 0.0047 on 39 unenrolled people and 0.0042 on
# the never-enrolled people with 5-9 photos. Another model's distances mean something else: a model
# not listed gets no cap.
PRIOR_THRESHOLD = {"dlib-resnet-v1": 0.043}
LOG_FLOOR = 1e-12  # probabilities are floored here before logs, so one zero never vetoes a class forever
_CHUNK = 2048  # query rows per block: bounds the (rows, references) similarity matrix in memory


# -- errors -------------------------------------------------------------------------------

class ClassifierError(ValueError):
    """Base of every refusal by a classifier or head: bad input, bad parameters, bad state."""


class InvalidVectorsError(ClassifierError):
    """Empty, ragged, non-finite or zero vectors, or vectors of the wrong dimension."""


class InvalidLabelsError(ClassifierError):
    """Labels that are missing, not strings, of the wrong count, or reserved ("unknown")."""


class TooFewFacesError(ClassifierError):
    """Classes with fewer faces than the minimum; `.classes` maps each to its face count."""

    def __init__(self, classes: dict[str, int], minimum: int) -> None:
        listed = ", ".join(f"{name} ({n})" for name, n in sorted(classes.items()))
        super().__init__(f"{len(classes)} classes have fewer than {minimum} faces: {listed}")
        self.classes, self.minimum = classes, minimum


class CalibrationWarning(UserWarning):
    """Too few impostor distances to calibrate the open-set threshold to the target false-accept rate."""


class NotFittedError(ClassifierError):
    """Prediction, saving or calibration before fit."""


class ModelMismatchError(ClassifierError):
    """Vectors from another embedding model than the one the classifier was trained on."""


# -- input checks shared with the retraining head -----------------------------------------

def as_embeddings(vectors: Any, dim: int | None = None) -> np.ndarray:
    """Rows as L2-normalised float32; one 1-d vector counts as one row.

    Refuses what would otherwise give nonsense distances: ragged rows, NaN / inf, all-zero
    rows (no direction), and rows of another dimension than the fitted one.
    """
    try:
        x = np.asarray(vectors, dtype=np.float32)
    except ValueError as exc:  # ragged nested lists
        lengths = sorted({len(v) for v in vectors}) if isinstance(vectors, Sequence) else "?"
        raise InvalidVectorsError(f"vectors have mixed dimensions {lengths}") from exc
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidVectorsError(f"expected a non-empty (n, d) matrix of vectors, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise InvalidVectorsError(f"vectors have {x.shape[1]} dimensions, the model was fitted on {dim}")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise InvalidVectorsError(f"{len(bad)} vectors contain NaN or infinity (rows {bad[:5].tolist()})")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        bad = np.flatnonzero(norms[:, 0] == 0)
        raise InvalidVectorsError(f"{len(bad)} vectors are all zeros (rows {bad[:5].tolist()})")
    return x / norms


def as_labels(labels: Any, n: int) -> np.ndarray:
    """Class names as a unicode array of length n; "unknown" is reserved for the open-set answer."""
    values = list(labels) if not isinstance(labels, str) else None
    if values is None:
        raise InvalidLabelsError("labels must be a sequence of class names, got one string")
    if len(values) != n:
        raise InvalidLabelsError(f"{n} vectors but {len(values)} labels")
    not_str = [v for v in values if not isinstance(v, str)]
    if not_str:
        raise InvalidLabelsError(f"labels must be class names (str); got {type(not_str[0]).__name__} {not_str[0]!r}")
    if any(not v.strip() for v in values):
        raise InvalidLabelsError("labels must not be empty")
    if UNKNOWN in values:
        raise InvalidLabelsError(f"{UNKNOWN!r} is reserved for faces of nobody in the class list")
    return np.asarray(values, dtype=str)


def check_training_set(vectors: Any, labels: Any, min_faces_per_class: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(normalised vectors, labels, sorted classes, class index per row); refuses small classes, listing them all."""
    x = as_embeddings(vectors)
    y = as_labels(labels, len(x))
    classes, index, counts = np.unique(y, return_inverse=True, return_counts=True)
    small = {str(c): int(n) for c, n in zip(classes, counts) if n < min_faces_per_class}
    if small:
        raise TooFewFacesError(small, min_faces_per_class)
    if len(classes) < 2:
        raise InvalidLabelsError(f"need at least 2 classes to tell faces apart, got {len(classes)}")
    return x, y, classes, index


def check_model_id(expected: str, got: str) -> None:
    if got != expected:
        raise ModelMismatchError(f"fitted on {expected!r} embeddings, got {got!r} vectors; "
                                 "embed the faces with the same model or retrain")


# -- centroids and the open-set threshold -------------------------------------------------

def _class_sums(x: np.ndarray, index: np.ndarray, n_classes: int) -> np.ndarray:
    sums = np.zeros((n_classes, x.shape[1]), dtype=np.float64)
    np.add.at(sums, index, x)
    return sums


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _other_class_distances(x: np.ndarray, index: np.ndarray, centroids: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Blocks of (rows, cosine distance of each row to every centroid, its own class set to inf).

    Why blocks: at 50k faces x 2,300 classes the full matrix would take ~0.9 GB.
    """
    for start in range(0, len(x), _CHUNK):
        rows = slice(start, start + _CHUNK)
        d = 1.0 - x[rows].astype(np.float64) @ centroids.T
        d[np.arange(len(d)), index[rows]] = np.inf
        yield rows, d


def distances_to(x: np.ndarray, centroids: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """Cosine distance (float64) of each row of `x` to one centroid each, `centroids[cls[i]]`.

    This is what the open-set rule compares, at calibration and at prediction alike. Why float64: a
    float64 threshold compared with float32 distances is rounded to float32 first, which can put it
    back onto the closest impostor's distance and accept it. Why row by row and not a column of a
    matrix product: BLAS sums a row's products in an order that depends on the batch's shape, so a
    face scored alone and the same face scored in a batch can differ in the last bit, which is the
    step between the calibrated threshold and the closest impostor.
    """
    rows = np.ascontiguousarray(x, dtype=np.float64)
    targets = np.ascontiguousarray(np.asarray(centroids)[np.asarray(cls, dtype=np.int64)], dtype=np.float64)
    return 1.0 - np.einsum("ij,ij->i", rows, targets)


def calibration_distances(x: np.ndarray, centroids: np.ndarray, classes: np.ndarray,
                          labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) distances of labelled faces to fitted centroids, as `predict` measures them.

    Faces of a class give a genuine distance (to their own centroid) and an impostor distance (to
    the nearest other centroid); faces whose label is no class give an impostor distance (nearest
    centroid). Both through `distances_to`, so a face calibrated on is judged on the same bits later.
    """
    position = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
    own = np.array([position.get(label, -1) for label in np.asarray(labels).tolist()], dtype=np.int64)
    known = own >= 0
    nearest = np.empty(len(x), dtype=np.int64)
    c64 = np.asarray(centroids, dtype=np.float64)
    for start in range(0, len(x), _CHUNK):
        rows = slice(start, start + _CHUNK)
        d = 1.0 - np.asarray(x[rows], dtype=np.float64) @ c64.T
        mine = np.flatnonzero(known[rows])
        d[mine, own[rows][mine]] = np.inf
        nearest[rows] = d.argmin(axis=1)
    genuine = distances_to(x[known], centroids, own[known])
    return genuine, distances_to(x, centroids, nearest)


def calibration_set(vectors: Any, labels: Sequence[str] | None, centroids: np.ndarray,
                    classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings, labels, genuine, impostor) of a separate calibration set, for `calibrate` of the
    classifier and of the retrained head alike (one open-set rule). `labels` None: every face is of
    nobody in the class list (background faces), so all give impostor distances."""
    x = as_embeddings(vectors, np.asarray(centroids).shape[1])
    y = np.full(len(x), UNKNOWN) if labels is None else as_labels(labels, len(x))
    return (x, y, *calibration_distances(x, centroids, classes, y))


def class_centroids(x: np.ndarray, index: np.ndarray, n_classes: int) -> np.ndarray:
    """Normalised mean of each class's (normalised) faces."""
    return _unit_rows(_class_sums(x, index, n_classes)).astype(np.float32)


def require_held_out(genuine: np.ndarray | None) -> np.ndarray:
    """The fit's held-out genuine distances, for calibrate(training=True). They are not saved: a loaded model
    has none, and falling back to the training faces' own distances would report the flattered rate unasked."""
    if genuine is None:
        raise ClassifierError("calibrate(training=True) needs the held-out genuine distances of this model's fit; "
                              "a loaded model has none: refit it, or calibrate on a separate set")
    return genuine


def group_index(groups: Sequence[Any], n: int) -> np.ndarray:
    """Groups (media ids, group names: anything with a str) as 0..g-1 per row; refuses a count other than n."""
    _, group = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    if len(group) != n:
        raise ClassifierError(f"{n} vectors but {len(group)} groups")
    return group


def _as_group_index(groups: Sequence[Any], n: int) -> np.ndarray:
    """`group_index`, except that groups already numbered (a fit's `TrainingSet.group`) are used as they are."""
    if isinstance(groups, np.ndarray) and groups.dtype.kind in "iu" and len(groups) == n and groups.min(initial=0) >= 0:
        return groups
    return group_index(groups, n)


def held_out_genuine(x: np.ndarray, index: np.ndarray, group: np.ndarray,
                     sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance of each row to its class centroid recomputed without every row of its group, whether the
    row's class keeps rows outside its group: only those distances mean anything). `sums`: the class sums.

    One computation for the calibration of `fit` and the held-out grade (`held_out_centroid_predictions`).
    """
    pair = index.astype(np.int64) * (int(group.max()) + 1) + group
    _, pair_row = np.unique(pair, return_inverse=True)
    pair_sums = _class_sums(x, pair_row, int(pair_row.max()) + 1)
    measured = np.bincount(index, minlength=len(sums))[index] > np.bincount(pair_row)[pair_row]
    own = _unit_rows(sums[index] - pair_sums[pair_row])
    return 1.0 - np.einsum("ij,ij->i", own, x.astype(np.float64)), measured


def leave_one_out_distances(x: np.ndarray, index: np.ndarray, n_classes: int,
                            groups: Sequence[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) cosine distances for the open-set threshold, without refitting per face.

    genuine: each face to its own class centroid recomputed without it, or, given `groups` (the media
    item of each face), without every face of its media (faces whose class has no face outside it give
    none). Why media: the frames of one GIF track are nearly one face, so a frame measured against a
    centroid holding its siblings lies near 0 and the genuine-accept rate reads far better than a new
    GIF of the person would get. impostor: each face to the nearest centroid among the other classes
    (whole centroids: the face is another person's, whatever its media).
    """
    sums = _class_sums(x, index, n_classes)
    group = np.arange(len(x)) if groups is None else _as_group_index(groups, len(x))
    genuine, measured = held_out_genuine(x, index, group, sums)
    impostor = np.empty(len(x), dtype=np.float64)
    for rows, d in _other_class_distances(x, index, _unit_rows(sums)):
        impostor[rows] = d.min(axis=1)
    return genuine[measured], impostor


def held_out_centroid_predictions(vectors: Any, labels: Sequence[str], groups: Sequence[Any],
                                  target_far: float = 0.01, model_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(class name per row, or UNKNOWN; measured per row): the centroid rule and open-set threshold
    of the classifier, each row graded with its whole group held out of its class.

    Why: grading a model on the faces it was fitted on measures its memory (a kNN vote finds the
    face itself), and grading it on frames of a GIF whose other frames it was fitted on is nearly
    as flattering. Groups are media items (or near-duplicate groups): a row's class centroid is
    recomputed without every face of its group. A row is measured when its class keeps faces
    outside the group; other classes' centroids stay whole (their faces are other people). The
    threshold is calibrated as `fit` does, on these held-out genuine distances and the nearest
    other centroid as impostor, at `target_far`, and capped as `fit` caps it (`prior_capped`) for the
    face model `model_id`, so that a short class list is graded by the rule the classifier deploys, not
    by a looser one. Nothing is measured with fewer than two classes; a row not measured is UNKNOWN.
    """
    x = as_embeddings(vectors)
    classes, index = np.unique(np.asarray(list(labels), dtype=str), return_inverse=True)
    if len(index) != len(x):
        raise InvalidLabelsError(f"{len(x)} vectors but {len(index)} labels")
    group = group_index(groups, len(x))
    n, n_classes = len(x), len(classes)
    predicted, measured = np.full(n, UNKNOWN, dtype=object), np.zeros(n, dtype=bool)
    if n_classes < 2:
        return predicted, measured
    sums = _class_sums(x, index, n_classes)
    genuine, measured = held_out_genuine(x, index, group, sums)
    impostor, best, best_distance = np.empty(n), np.empty(n, dtype=np.int64), np.empty(n)
    for rows, d in _other_class_distances(x, index, _unit_rows(sums)):
        impostor[rows] = d.min(axis=1)
        at = (np.arange(len(d)), index[rows])
        d[at] = np.where(measured[rows], genuine[rows], np.inf)
        best[rows] = d.argmin(axis=1)
        best_distance[rows] = d[at[0], best[rows]]
    if not measured.any():
        return predicted, measured
    threshold, _ = prior_capped(threshold_for_far(impostor, target_far), len(impostor), target_far, model_id)
    named = measured & (best_distance <= threshold)
    predicted[named] = classes[best[named]]
    return predicted, measured


def threshold_for_far(impostor: np.ndarray, target_far: float) -> float:
    """A distance threshold that accepts at most `target_far` of the impostor distances.

    Faces at distance <= threshold are accepted. The first impostor to refuse is the one at rank
    `allowed`, and with it every impostor at the same distance: a threshold between two equal
    distances would accept them all (three impostors tied at 0.2 with two allowed: three accepted).
    The threshold sits halfway between the last accepted and the first refused distance so that it
    does not sit on a training point; with none accepted, one float64 step below the first refused.
    The step is safe because the open-set rule compares float64 distances computed the same way
    at calibration and at prediction (`distances_to`).
    """
    s = np.sort(np.asarray(impostor, dtype=np.float64))
    if len(s) == 0:
        raise ClassifierError("no impostor distances to calibrate on")
    allowed = int(np.floor(target_far * len(s) + 1e-9))
    if allowed >= len(s):
        return float(s[-1])
    refused = s[allowed]
    accepted = int(np.searchsorted(s, refused, side="left"))  # impostors strictly closer than the tie run
    below = np.nextafter(refused, -np.inf)
    if accepted == 0:
        return float(below)
    return float(min((s[accepted - 1] + refused) / 2, below))  # two adjacent floats' mean can round up


def prior_capped(threshold: float, n_impostor: int, target_far: float, model_id: str | None) -> tuple[float, float | None]:
    """(threshold, the face model's prior or None when it has no measured one): a threshold calibrated on
    fewer impostors than 1 / target_far is capped at PRIOR_THRESHOLD[model_id]; a threshold calibrated
    on enough, or for a model without a measured prior, is returned as it is.

    Why one function: `fit` (through `open_set_threshold`) and the held-out grade of the bias audit
    (`held_out_centroid_predictions`) must apply the same rule, or the audit grades another model."""
    prior = PRIOR_THRESHOLD.get(model_id) if model_id is not None else None
    if n_impostor * target_far >= 1 or prior is None:
        return threshold, prior
    return min(threshold, prior), prior


def open_set_threshold(genuine: np.ndarray, impostor: np.ndarray, target_far: float,
                       fixed: float | None = None, stacklevel: int = 4,
                       model_id: str | None = None) -> tuple[float, float, float]:
    """(threshold, false-accept rate, genuine-accept rate): `fixed` if given, else calibrated for `target_far`.

    With fewer impostor distances than 1 / target_far the target is below the resolution: the
    threshold lands just under the closest impostor, wherever that is (2 LFW classes of 8 photos:
    0.156, and 19 of 20 photos of 4 other people named; with 6 classes 0.058). Then the threshold is
    capped at the face model's PRIOR_THRESHOLD (when `model_id` names a measured one: `prior_capped`),
    the false-accept rate is NaN (0 of 16 accepted measures nothing at a 1% target) and a
    CalibrationWarning says so, and says when the model has no measured prior, so that its threshold
    is not capped (as loose as the few impostors leave it). `stacklevel` points the warning at the
    caller's fit line.
    """
    if fixed is not None:
        threshold = float(fixed)
        return (threshold, *accept_rates(genuine, impostor, threshold))
    calibrated = threshold_for_far(impostor, target_far)
    if len(impostor) * target_far >= 1:
        return (calibrated, *accept_rates(genuine, impostor, calibrated))
    threshold, prior = prior_capped(calibrated, len(impostor), target_far, model_id)
    if prior is None:
        cap = (f"; the threshold {threshold:.4f} is not capped (no measured prior for "
               f"{model_id or 'an unnamed face model'})")
    elif threshold < calibrated:
        cap = f"; the threshold is capped at {prior:.4f}, what {model_id} gets from a large calibration"
    else:
        cap = ""
    warnings.warn(f"only {len(impostor)} impostor distances: a false-accept rate of {target_far} needs at least "
                  f"{int(np.ceil(1 / target_far))}, so the rate is not measured (far=nan){cap}; to measure it, confirm "
                  "faces of more classes, or mark faces of people outside the class list unknown in Review",
                  CalibrationWarning,
                  stacklevel=stacklevel)
    return threshold, float("nan"), accept_rates(genuine, impostor, threshold)[1]


def accept_rates(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> tuple[float, float]:
    """(false-accept rate, genuine-accept rate) at a threshold; NaN when a side has no distances."""
    far = float(np.mean(impostor <= threshold)) if len(impostor) else float("nan")
    gar = float(np.mean(genuine <= threshold)) if len(genuine) else float("nan")
    return far, gar


def _row_digests(x: np.ndarray, y: np.ndarray) -> list[bytes]:
    return [hashlib.sha256(label.encode() + b"\0" + np.ascontiguousarray(v, dtype=np.float32).tobytes()).digest()
            for v, label in zip(x, y.tolist())]


def canonical_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row order by (label, content hash): the same faces give the same order whatever order they came in."""
    digests = _row_digests(x, y)
    return np.array(sorted(range(len(y)), key=lambda i: (y[i], digests[i])), dtype=np.int64)


class TrainingSet(NamedTuple):
    """A checked labelled set in canonical row order, with what fitting and calibrating read off it."""

    x: np.ndarray
    y: np.ndarray
    classes: np.ndarray
    index: np.ndarray  # class index per row
    group: np.ndarray | None  # group (media item) per row, or None: every face its own


def ordered_training_set(vectors: Any, labels: Sequence[str], min_faces_per_class: int,
                         groups: Sequence[Any] | None = None) -> TrainingSet:
    """`check_training_set`, then one canonical row order (`canonical_order`) for rows and groups alike.

    Why one place: float sums depend on order, and a model (threshold included) must be the same bits
    for the same faces however the caller listed them; the centroid classifier and the retraining head
    both fit on it, and the groups must follow the rows they belong to."""
    x, y, _, _ = check_training_set(vectors, labels, min_faces_per_class)
    group = None if groups is None else group_index(groups, len(x))
    order = canonical_order(x, y)
    x, y = x[order], y[order]
    classes, index = np.unique(y, return_inverse=True)
    return TrainingSet(x, y, classes, index, None if group is None else group[order])


def data_digest(x: np.ndarray, y: np.ndarray) -> str:
    """Hash of a labelled set that ignores row order (the fitted model does not depend on it)."""
    rows = sorted(_row_digests(x, y))
    h = hashlib.sha256()
    for r in rows:
        h.update(r)
    return h.hexdigest()


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_pairs(proba: np.ndarray, classes: np.ndarray, top: int) -> list[list[tuple[str, float]]]:
    """Best `top` (class, probability) pairs per row, most likely first; ties broken by class order."""
    if top < 1:
        raise ClassifierError(f"top must be at least 1, got {top}")
    top = min(top, proba.shape[1])
    order = np.argsort(-proba, axis=1, kind="stable")[:, :top]
    return [[(str(classes[j]), float(p[j])) for j in row] for p, row in zip(proba, order)]


# -- track predictions --------------------------------------------------------------------

TRACK_METHODS = ("product", "mean")


@dataclass(frozen=True)
class TrackPrediction:
    """One GIF track's answer: `label` is UNKNOWN when `distance` exceeds the classifier's threshold."""

    label: str
    confidence: float  # probability of the best class, whether or not the open-set rule accepted it
    distance: float  # cosine distance to the best class's centroid (mean over faces for "product")
    top: list[tuple[str, float]]


# -- the classifier -----------------------------------------------------------------------

class CentroidKnnClassifier:
    """Centroid + kNN celebrity classifier with a calibrated open-set threshold.

    Parameters
    ----------
    k: neighbours in the vote (capped at the number of reference faces).
    centroid_weight: share of the centroid distribution in the confidences; the rest is the kNN vote.
    unknown_threshold: fixed open-set cosine distance; None calibrates it on the training set.
    target_far: false-accept rate the calibrated threshold aims for (share of impostors accepted).
    temperature: cosine-distance scale of both distributions (softmax of -distance / temperature).
        dlib same-person distances are ~0.02-0.06 and other people's ~0.09+; on LFW (158 people,
        3-5 references each) 0.005 gave the lowest held-out log loss of 0.003-0.02, i.e. the most
        honest confidences.
    min_faces_per_class: classes with fewer faces are refused; with one face a class has no
        genuine pair to calibrate on and a centroid that is just one photo.
    """

    def __init__(self, k: int = 10, centroid_weight: float = 0.5, unknown_threshold: float | None = None,
                 target_far: float = 0.01, temperature: float = 0.005, min_faces_per_class: int = 2) -> None:
        self.k = k
        self.centroid_weight = centroid_weight
        self.unknown_threshold = unknown_threshold
        self.target_far = target_far
        self.temperature = temperature
        self.min_faces_per_class = min_faces_per_class

    # -- parameters ------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {"k": self.k, "centroid_weight": self.centroid_weight, "unknown_threshold": self.unknown_threshold,
                "target_far": self.target_far, "temperature": self.temperature,
                "min_faces_per_class": self.min_faces_per_class}

    def _check_params(self) -> None:
        if not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ClassifierError(f"k must be a positive integer, got {self.k!r}")
        if not 0.0 <= self.centroid_weight <= 1.0:
            raise ClassifierError(f"centroid_weight must be in [0, 1], got {self.centroid_weight}")
        if self.unknown_threshold is not None and not 0.0 <= self.unknown_threshold <= 2.0:
            raise ClassifierError(f"unknown_threshold is a cosine distance in [0, 2], got {self.unknown_threshold}")
        if not 0.0 < self.target_far < 1.0:
            raise ClassifierError(f"target_far must be in (0, 1), got {self.target_far}")
        if not self.temperature > 0:
            raise ClassifierError(f"temperature must be positive, got {self.temperature}")
        if not isinstance(self.min_faces_per_class, (int, np.integer)) or self.min_faces_per_class < 1:
            raise ClassifierError(f"min_faces_per_class must be a positive integer, got {self.min_faces_per_class!r}")

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, vectors: Any, labels: Sequence[str], model_id: str,
            groups: Sequence[Any] | None = None) -> "CentroidKnnClassifier":
        """Store centroids and reference faces, and calibrate the open-set threshold leave-one-out.

        `groups` (the media item of each face; None: every face its own) makes the genuine distances
        leave one media item out, not one face (`leave_one_out_distances`): what the genuine-accept rate
        reports. The threshold comes from impostor distances alone, so it, the version and every
        prediction are the same with or without groups."""
        self._check_params()
        if not isinstance(model_id, str) or not model_id:
            raise ClassifierError("model_id must name the embedding model of the vectors")
        x, y, classes, index, group = ordered_training_set(vectors, labels, self.min_faces_per_class, groups)
        self.model_id_ = model_id
        self.classes_ = classes
        self.reference_vectors_ = x
        self.reference_labels_ = y
        self.reference_index_ = index.astype(np.int64)
        self.centroids_ = class_centroids(x, index, len(classes))
        self.data_digest_ = data_digest(x, y)
        genuine, impostor = leave_one_out_distances(x, index, len(classes), group)
        self.held_out_genuine_ = genuine  # for calibrate(training=True); not saved: a loaded model has none
        self._set_threshold(genuine, impostor)
        return self

    def calibrate(self, vectors: Any, labels: Sequence[str] | None, model_id: str,
                  training: bool = False) -> "CentroidKnnClassifier":
        """Recalibrate the open-set threshold on a separate set, replacing the leave-one-out calibration.

        Why: a short class list gives too few impostors to calibrate on (see CalibrationWarning), and
        the faces that must come out unknown are of people outside the list. Faces of known classes
        give a genuine distance (to their own centroid) and an impostor distance (nearest other
        centroid); faces whose label is no class, or all faces when `labels` is None (background
        faces of nobody in the list), give an impostor distance (nearest centroid). A fixed
        `unknown_threshold` stays fixed; only the rates are re-measured.

        `training`: the set holds the faces fitted on (plus faces marked unknown, recognition.calibration_set).
        Their distances to centroids that contain them would flatter the genuine-accept rate, so the fit's
        held-out genuine distances stand (`fit`'s groups: a whole media held out); only impostors come from
        the set. The threshold comes from impostors either way.
        """
        self._check_fitted(model_id)
        _, _, genuine, impostor = calibration_set(vectors, labels, self.centroids_, self.classes_)
        self._set_threshold(require_held_out(getattr(self, "held_out_genuine_", None)) if training else genuine,
                            impostor)
        return self

    def _set_threshold(self, genuine: np.ndarray, impostor: np.ndarray) -> None:
        self.threshold_, self.false_accept_rate_, self.genuine_accept_rate_ = open_set_threshold(
            genuine, impostor, self.target_far, self.unknown_threshold, model_id=self.model_id_)
        self.calibration_sizes_ = {"genuine": int(len(genuine)), "impostor": int(len(impostor))}

    # -- state -----------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "centroids_")

    def _check_fitted(self, model_id: str) -> None:
        if not self.is_fitted:
            raise NotFittedError("this classifier is not fitted yet: call fit(vectors, labels, model_id) first")
        check_model_id(self.model_id_, model_id)

    @property
    def version(self) -> str:
        """Stable id of the trained model: training data (in any order), params, model id and threshold."""
        if not self.is_fitted:
            raise NotFittedError("an unfitted classifier has no version")
        payload = json.dumps({"data": self.data_digest_, "params": self.get_params(), "model_id": self.model_id_,
                              "threshold": float(self.threshold_).hex()}, sort_keys=True)
        return f"centroid-knn-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"

    # -- predicting ------------------------------------------------------------------------
    def _centroid_distances(self, x: np.ndarray) -> np.ndarray:
        """(rows, classes) float64 distances for the probabilities; the open-set rule uses `distances_to`."""
        return 1.0 - x.astype(np.float64) @ self.centroids_.T.astype(np.float64)

    def _references64(self) -> np.ndarray:
        """The reference faces in float64, converted once per fitted (or loaded) set of references.

        Why float64: a float32 product sums each row in an order that depends on the batch's shape,
        so one face scored alone, in a subset or in the whole store differed by up to ~1e-5 once
        divided by the temperature: enough for a re-run of the same model to write new versions and
        audit events (labeling.face_labels.SCORE_TOLERANCE). In float64 the difference is ~1e-16.
        """
        cached = getattr(self, "_references64_cache", None)
        if cached is None or cached[0] is not self.reference_vectors_:
            cached = (self.reference_vectors_, np.asarray(self.reference_vectors_, dtype=np.float64))
            self._references64_cache = cached
        return cached[1]

    def _proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, C) for normalised rows, float64 throughout (see `_references64`)."""
        t = float(self.temperature)
        n_classes = len(self.classes_)
        d_cen = self._centroid_distances(x)
        p_cen = softmax_rows(-d_cen / t)
        references = self._references64()
        k = min(int(self.k), len(references))
        sims = x.astype(np.float64) @ references.T
        # the k largest without a negated copy of the (rows, references) float64 block
        near = (np.argpartition(sims, sims.shape[1] - k, axis=1)[:, -k:] if k < sims.shape[1]
                else np.tile(np.arange(k), (len(x), 1)))
        d_near = 1.0 - np.take_along_axis(sims, near, axis=1)
        w = np.exp(-(d_near - d_near.min(axis=1, keepdims=True)) / t)
        p_knn = np.zeros((len(x), n_classes))
        np.add.at(p_knn, (np.repeat(np.arange(len(x)), k), self.reference_index_[near].ravel()), w.ravel())
        p_knn /= p_knn.sum(axis=1, keepdims=True)
        a = float(self.centroid_weight)
        return a * p_cen + (1.0 - a) * p_knn

    def _blocks(self, vectors: Any, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(class probabilities, float64 distance of each face to its best class's centroid)."""
        self._check_fitted(model_id)
        x = as_embeddings(vectors, self.centroids_.shape[1])
        proba = np.concatenate([self._proba(x[start:start + _CHUNK]) for start in range(0, len(x), _CHUNK)])
        return proba, distances_to(x, self.centroids_, proba.argmax(axis=1))

    def predict_proba(self, vectors: Any, model_id: str) -> np.ndarray:
        """(n, n_classes) probabilities, columns in `classes_` order; closed-set (no unknown column)."""
        return self._blocks(vectors, model_id)[0]

    def predict_top(self, vectors: Any, model_id: str, top: int = 5) -> list[list[tuple[str, float]]]:
        """Best `top` (class, confidence) pairs per face, closed-set: what an editor reviews."""
        return top_pairs(self.predict_proba(vectors, model_id), self.classes_, top)

    def best_distance(self, vectors: Any, model_id: str) -> np.ndarray:
        """Cosine distance of each face to its best class's centroid: what the open-set rule compares."""
        return self._blocks(vectors, model_id)[1]

    def predict(self, vectors: Any, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(labels, confidences): the best class, or UNKNOWN when the face is too far from that class.

        The confidence is the best class's probability in every row, so an editor can still see
        whom an unknown face resembled most.
        """
        proba, distance = self._blocks(vectors, model_id)
        best = proba.argmax(axis=1)
        labels = np.where(distance <= self.threshold_, self.classes_[best], UNKNOWN).astype(object)
        return labels, proba[np.arange(len(best)), best]

    def predict_track(self, face_vectors: Any, model_id: str, method: str = "product", top: int = 5) -> TrackPrediction:
        """One person track of a GIF (its faces, one per frame) -> one answer.

        product: per-face probabilities multiplied (summed in log space, then renormalised), as
        GIPHY's detector did per frame; the distance is the faces' mean distance to the winner's centroid.
        mean: the normalised mean embedding classified as one face.
        """
        if method not in TRACK_METHODS:
            raise ClassifierError(f"method must be one of {TRACK_METHODS}, got {method!r}")
        self._check_fitted(model_id)
        x = as_embeddings(face_vectors, self.centroids_.shape[1])
        if method == "mean":
            mean = x.mean(axis=0)
            norm = np.linalg.norm(mean)
            if norm < 1e-6:
                raise InvalidVectorsError("the track's faces cancel out: their mean embedding has no direction")
            x = (mean / norm)[None, :]
            proba = self._proba(x)[0]
        else:
            proba = softmax_rows(np.log(np.maximum(self._proba(x), LOG_FLOOR)).sum(axis=0, keepdims=True))[0]
        best = int(proba.argmax())
        distance = float(distances_to(x, self.centroids_, np.full(len(x), best)).mean())
        label = str(self.classes_[best]) if distance <= self.threshold_ else UNKNOWN
        return TrackPrediction(label, float(proba[best]), distance, top_pairs(proba[None, :], self.classes_, top)[0])

    # -- persistence -----------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        """`folder/classifier.npz` (reference faces, labels) + `folder/classifier.json` (params, threshold, version).

        No pickle: arrays are plain numeric / unicode. Written beside the target and renamed over it.
        """
        if not self.is_fitted:
            raise NotFittedError("nothing to save: the classifier is not fitted")
        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            np.savez(tmp / "classifier.npz", vectors=self.reference_vectors_, labels=self.reference_labels_)
            meta = {"kind": "centroid-knn", "version": self.version, "model_id": self.model_id_,
                    "params": self.get_params(), "threshold": self.threshold_,
                    "false_accept_rate": self.false_accept_rate_, "genuine_accept_rate": self.genuine_accept_rate_,
                    "calibration_sizes": self.calibration_sizes_, "classes": self.classes_.tolist()}
            (tmp / "classifier.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: Path) -> "CentroidKnnClassifier":
        """Rebuild a saved classifier; the stored version must match the one recomputed from the files."""
        folder = Path(folder)
        if not (folder / "classifier.json").is_file() or not (folder / "classifier.npz").is_file():
            raise ClassifierError(f"no saved classifier in {folder}")
        meta = json.loads((folder / "classifier.json").read_text(encoding="utf-8"))
        with np.load(folder / "classifier.npz", allow_pickle=False) as data:
            vectors, labels = data["vectors"], data["labels"]
        model = cls(**meta["params"])
        _, y, classes, index = check_training_set(vectors, labels.tolist(), model.min_faces_per_class)
        x = np.asarray(vectors, dtype=np.float32)  # already normalised at fit: dividing again could flip bits
        model.model_id_, model.classes_ = meta["model_id"], classes
        model.reference_vectors_, model.reference_labels_, model.reference_index_ = x, y, index.astype(np.int64)
        model.centroids_ = class_centroids(x, index, len(classes))
        model.data_digest_ = data_digest(x, y)
        model.threshold_ = float(meta["threshold"])
        model.false_accept_rate_, model.genuine_accept_rate_ = meta["false_accept_rate"], meta["genuine_accept_rate"]
        model.calibration_sizes_ = meta["calibration_sizes"]
        if model.version != meta["version"]:
            raise ClassifierError(f"{folder} is damaged: its files give version {model.version}, "
                                  f"its metadata says {meta['version']}")
        return model


def compare_track_methods(classifier: CentroidKnnClassifier, tracks: Sequence[Any], labels: Sequence[str],
                          model_id: str) -> dict[str, dict[str, float]]:
    """Product vs mean aggregation on labelled tracks.

    Per method: `accuracy` (best class right, tracks of known classes only), `open_set_accuracy`
    (known tracks named right and tracks of people outside the class list answered UNKNOWN),
    `mean_confidence` of the best class over known tracks, and the track counts.
    """
    if len(tracks) != len(labels) or not len(tracks):
        raise ClassifierError(f"need one label per track and at least one track; got {len(tracks)} tracks, "
                              f"{len(labels)} labels")
    known_classes = set(classifier.classes_.tolist()) if classifier.is_fitted else set()
    out: dict[str, dict[str, float]] = {}
    for method in TRACK_METHODS:
        preds = [classifier.predict_track(t, model_id, method=method) for t in tracks]
        known = [(p, y) for p, y in zip(preds, labels) if y in known_classes]
        unknown = [p for p, y in zip(preds, labels) if y not in known_classes]
        right = sum(p.top[0][0] == y for p, y in known)
        open_right = sum(p.label == y for p, y in known) + sum(p.label == UNKNOWN for p in unknown)
        out[method] = {
            "accuracy": right / len(known) if known else float("nan"),
            "open_set_accuracy": open_right / len(preds),
            "mean_confidence": float(np.mean([p.confidence for p, _ in known])) if known else float("nan"),
            "known_tracks": len(known), "unknown_tracks": len(unknown),
        }
    return out

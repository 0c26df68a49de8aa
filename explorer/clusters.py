"""Cluster statistics for reviewing celebrity classes: which classes are impure, spread out,
full of outliers, or confusable with another class; which faces look mislabelled.

Everything here is a pure function of vectors (n, d) and labels (n,), computed in the
embedding space (cosine geometry of unit vectors), never in the 2D/3D projection: UMAP
distorts distances, so a point that looks far away in the plot may not be, and vice versa.

Why leave-one-out centroids for purity: a member is part of its own class centroid, so in a
class of 3 photos each photo pulls the centroid a third of the way towards itself and even a
mislabelled photo looks "pure". Comparing each member with the centroid of the *other*
members of its class removes that bias.

Why a robust outlier rule: a class with a few mislabelled faces has an inflated mean and
standard deviation of distances, which hides exactly those faces. The median and the median
absolute deviation (MAD) are not moved by them (Iglewicz & Hoaglin's modified z-score > 3.5).

Why the scale of that z has a floor (`_outlier_scale`): the MAD of the 5 or 6 photos most classes
hold is often tiny by chance. Five correct LFW photos of Angela Merkel lie within 0.0011 cosine of
their median distance (MAD 0.00016), so a face 0.0011 farther than the median scored z 4.5, and 5
of 28 real LFW classes showed a correct photo as an outlier (also queued as "far from centroid").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "ClusterError",
    "class_members",
    "class_stats",
    "face_distances",
    "lookalike_pairs",
    "members_by_distance",
    "neighbour_depth",
    "neighbour_rows",
    "suspect_faces",
    "suspect_queue",
]

OUTLIER_Z = 3.5
MIN_CLASS_FOR_OUTLIERS = 5  # the MAD of fewer distances says nothing
SCALE_OF_MEDIAN = 0.3  # the z's scale is at least this share of the class's median distance (_outlier_scale)
MIN_SCALE = 0.01  # and at least this cosine distance
_CHUNK = 4096


class ClusterError(ValueError):
    """Inputs that cannot be analysed; the message says what is wrong."""


# -- inputs --------------------------------------------------------------------------------
def _unit(vectors: Any) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ClusterError(f"vectors must be a non-empty (n, d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ClusterError("vectors hold NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ClusterError("vectors hold zero rows (no direction)")
    return np.ascontiguousarray(x / norms)


def _missing(values: np.ndarray) -> np.ndarray:
    """None, NaN and empty strings mean "no label"."""
    return np.array([v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and v == "")
                     for v in values.tolist()], dtype=bool)


def _labels(labels: Sequence[Any], n: int, what: str = "labels") -> np.ndarray:
    arr = np.asarray(list(labels) if not isinstance(labels, (np.ndarray, pd.Series)) else labels, dtype=object)
    if arr.ndim != 1 or len(arr) != n:
        raise ClusterError(f"{what} must be one per vector: {len(arr)} {what} for {n} vectors")
    return arr


def _ids(ids: Sequence[Any] | None, n: int) -> np.ndarray:
    if ids is None:
        return np.arange(n)
    arr = np.asarray(list(ids) if not isinstance(ids, (np.ndarray, pd.Series)) else ids)
    if len(arr) != n:
        raise ClusterError(f"{len(arr)} ids for {n} vectors")
    return arr


class _Classes:
    """Class codes, sums and unit centroids of the labelled rows (one pass, reused everywhere)."""

    def __init__(self, x: np.ndarray, labels: np.ndarray) -> None:
        self.labelled = ~_missing(labels)
        if not self.labelled.any():
            raise ClusterError("no labelled vectors: every label is missing")
        names, codes = np.unique(labels[self.labelled].astype(str), return_inverse=True)
        self.names = names
        self.code = np.full(len(labels), -1, dtype=np.int64)
        self.code[self.labelled] = codes
        k, d = len(names), x.shape[1]
        self.sizes = np.bincount(codes, minlength=k)
        sums = np.zeros((k, d), np.float64)
        np.add.at(sums, codes, x[self.labelled].astype(np.float64))
        self.sums = sums
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        self.centroids = (sums / np.where(norms == 0, 1, norms)).astype(np.float32)

    def index(self, cls: Any) -> int:
        hit = np.flatnonzero(self.names == str(cls))
        if not len(hit):
            raise ClusterError(f"no class {cls!r} among the labels")
        return int(hit[0])


def _outlier_scale(median: np.ndarray, mad: np.ndarray) -> np.ndarray:
    """The scale of a face's robust z in its class: max(1.4826 * MAD, SCALE_OF_MEDIAN * median, MIN_SCALE).

    1.4826 * MAD alone is the standard deviation's robust estimate, but of 5 or 6 distances it is often
    near zero by chance, and a correct photo a hair farther than the others became an outlier (module
    docstring). The floors say how far from its class centroid a correct photo of the same person may be:

    - MIN_SCALE 0.01 cosine distance: a face is an outlier (z > 3.5) no nearer than 0.035 beyond its
      class's median distance. With dlib's embeddings a correct photo lies 0.01 to 0.04 from its class
      centroid, and two photos of different people are rarely under 0.086 apart (1st percentile). On
      110 LFW people with 5 to 12 photos (730 photos), classes showing a correct photo as an outlier
      fell from 31 to 1, while a photo of another person put into a class is still flagged in 96 of
      100 random trials (98 before); the photo of Al Sharpton filed under Angela Bassett (0.147 from
      a median of 0.019) keeps z 12.8.
    - SCALE_OF_MEDIAN 0.3: the same guard for a face model whose distances are larger (facenet's are
      about ten times dlib's), where a fixed distance says little: an outlier lies beyond 2.05 times
      its class's median distance. On the LFW people above, 99% of correct photos lie within 2.24
      times their class's median, a photo of another person at 4.6 times it (median of the trials).
    The MAD rule is kept wherever the class's own spread is wider than these floors."""
    return np.maximum.reduce([1.4826 * mad, SCALE_OF_MEDIAN * median, np.full_like(mad, MIN_SCALE)])


def _per_face(x: np.ndarray, classes: _Classes, outlier_z: float) -> pd.DataFrame:
    """Distances of every labelled face to its own (full and leave-one-out) centroid and to the
    nearest other centroid, and a robust z-score of its distance within its class."""
    n = len(x)
    code = classes.code
    dist = np.full(n, np.nan, np.float32)
    loo = np.full(n, np.nan, np.float32)
    nearest = np.full(n, -1, np.int64)        # nearest centroid, own class judged leave-one-out
    nearest_other = np.full(n, -1, np.int64)  # nearest centroid of another class
    other_dist = np.full(n, np.nan, np.float32)
    rows = np.flatnonzero(classes.labelled)
    for start in range(0, len(rows), _CHUNK):
        r = rows[start:start + _CHUNK]
        c = code[r]
        sims = x[r] @ classes.centroids.T  # (m, k)
        own = sims[np.arange(len(r)), c]
        dist[r] = 1.0 - own
        # Leave-one-out: the centroid of the other members of the class (undefined for singletons).
        rest = classes.sums[c] - x[r].astype(np.float64)
        rest_norm = np.linalg.norm(rest, axis=1)
        has_rest = classes.sizes[c] > 1
        loo_sim = np.where(has_rest, np.einsum("md,md->m", rest, x[r]) / np.where(rest_norm == 0, 1, rest_norm), np.nan)
        loo[r] = 1.0 - loo_sim
        sims[np.arange(len(r)), c] = -np.inf
        if sims.shape[1] > 1:
            best_other = sims.argmax(axis=1)
            nearest_other[r] = best_other
            other_dist[r] = 1.0 - sims[np.arange(len(r)), best_other]
            nearest[r] = np.where(has_rest & (loo_sim >= sims[np.arange(len(r)), best_other]), c, best_other)
        else:
            nearest[r] = c
    # Robust z within each class: (d - median) / scale, the scale 1.4826 * MAD with a floor.
    robust_z = np.full(n, np.nan, np.float32)
    df = pd.DataFrame({"code": code, "distance": dist})
    lab = df[df.code >= 0]
    med = lab.groupby("code")["distance"].transform("median").to_numpy()
    mad = (lab["distance"] - med).abs().groupby(lab["code"]).transform("median").to_numpy()
    ok = classes.sizes[lab.code.to_numpy()] >= MIN_CLASS_FOR_OUTLIERS
    z = np.where(ok, (lab["distance"].to_numpy() - med) / _outlier_scale(med, mad), np.nan)
    robust_z[lab.index.to_numpy()] = z
    names = np.append(classes.names, None)  # code -1 -> None
    return pd.DataFrame({
        "label": names[code],
        "distance": dist,
        "loo_distance": loo,
        "robust_z": robust_z,
        "is_outlier": np.nan_to_num(robust_z, nan=-np.inf) > outlier_z,
        "nearest_class": names[nearest],
        "nearest_other_class": names[nearest_other],
        "nearest_other_distance": other_dist,
    })


# -- public functions ----------------------------------------------------------------------
def face_distances(vectors: Any, labels: Sequence[Any], ids: Sequence[Any] | None = None,
                   outlier_z: float = OUTLIER_Z) -> pd.DataFrame:
    """One row per face: id, label, cosine distance to its class centroid (full and
    leave-one-out), robust z of that distance within the class, is_outlier, the nearest
    centroid (own class judged leave-one-out) and the nearest other class with its distance.
    Unlabelled faces (None/NaN/"") get NaN distances and no class."""
    x = _unit(vectors)
    lab = _labels(labels, len(x))
    out = _per_face(x, _Classes(x, lab), outlier_z)
    out.insert(0, "id", _ids(ids, len(x)))
    return out


def class_stats(vectors: Any, labels: Sequence[Any], outlier_z: float = OUTLIER_Z) -> pd.DataFrame:
    """One row per class, worst first: size, purity (share of members whose nearest centroid,
    own class judged leave-one-out, is their own class; NaN for singletons), spread (mean
    cosine distance to the class centroid), outliers (members with robust z > outlier_z;
    only for classes of 5 or more) and confused_with (the class that most of its
    misassigned members are nearest to)."""
    x = _unit(vectors)
    lab = _labels(labels, len(x))
    classes = _Classes(x, lab)
    faces = _per_face(x, classes, outlier_z)
    faces = faces[classes.labelled]
    singleton = classes.sizes[classes.code[classes.labelled]] == 1
    faces = faces.assign(own=np.where(singleton, np.nan, (faces["nearest_class"] == faces["label"]).astype(float)))
    g = faces.groupby("label", sort=True)
    stats = pd.DataFrame({
        "size": g.size(),
        "purity": g["own"].mean(),
        "spread": g["distance"].mean().astype(float),
        "outliers": g["is_outlier"].sum().astype(int),
    })
    wrong = faces[(faces["own"] == 0)]
    confused = wrong.groupby("label")["nearest_class"].agg(lambda s: s.value_counts().index[0]) if len(wrong) else pd.Series(dtype=object)
    stats["confused_with"] = confused.reindex(stats.index)
    stats.index.name = "class"
    stats = stats.reset_index()
    # Worst first: lowest purity, then widest spread; singletons (purity unknown) last.
    return stats.sort_values(["purity", "spread"], ascending=[True, False], na_position="last", kind="stable").reset_index(drop=True)


def members_by_distance(vectors: Any, labels: Sequence[Any], cls: Any, ids: Sequence[Any] | None = None,
                        farthest_first: bool = True, outlier_z: float = OUTLIER_Z) -> pd.DataFrame:
    """The members of one class ordered by cosine distance to the class centroid, farthest first
    by default: the review order in which mislabelled faces come up first."""
    return class_members(face_distances(vectors, labels, ids, outlier_z), cls, farthest_first)


def class_members(per_face: pd.DataFrame, cls: Any, farthest_first: bool = True) -> pd.DataFrame:
    """`members_by_distance` from `face_distances`' frame: a page that keeps that frame (computed
    over every face, once per change of the labels) opens any class without computing it again."""
    members = per_face[per_face["label"] == str(cls)]
    if members.empty:
        raise ClusterError(f"no class {cls!r} among the labels")
    return members.sort_values("distance", ascending=not farthest_first, kind="stable").reset_index(drop=True)


def _neighbour_labels(x: np.ndarray, codes: np.ndarray, k: int, ids: np.ndarray | None = None,
                      raw: np.ndarray | None = None, index_dir: Path | str | None = None,
                      model_id: str | None = None, nearest: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Majority class code among each face's k nearest labelled neighbours (itself excluded) and
    the share of neighbours that hold it. Uses the project's KnnIndex (exact below a few
    thousand points, HNSW above), the one nearest-neighbour implementation of giflens.

    Without index_dir the index covers the labelled faces and lives for this call. With it, the
    saved index of every face (`raw` vectors, stable `ids`) is reused: labels change with every
    decision, the faces only on ingest, so it is indexed regardless of labels and each face's
    neighbours are read until k labelled ones are found. `nearest` (from `neighbour_rows`, labels
    ignored) spares that search: only faces with fewer than k labelled faces among them search further."""
    labelled = np.flatnonzero(codes >= 0)
    majority = np.full(len(x), -1, np.int64)
    share = np.full(len(x), np.nan, np.float32)
    if len(labelled) < 2:
        return majority, share
    k = min(k, len(labelled) - 1)
    if index_dir is None:
        from models.knn_index import KnnIndex

        index = KnnIndex("explorer-suspects").fit(x[labelled], labelled)
        found, _ = index.query(x, k + 1)
        found = np.asarray(found, np.int64)
        neighbours = _first_k(found, found != np.arange(len(x))[:, None], k)
    else:
        neighbours = _labelled_neighbours(codes, k, ids, raw, index_dir, model_id, nearest)
    return _neighbour_votes(neighbours, codes)


def _first_k(rows: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """(n, k) the first k `rows` of each line where `keep` holds, in order, padded with -1 (vectorised:
    a Python loop over 20,000 faces cost more than the vote)."""
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(keep, order, axis=1)
    out = np.where(kept, np.take_along_axis(rows, order, axis=1), -1)
    if out.shape[1] < k:
        out = np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=-1)
    return out


def _neighbour_votes(neighbours: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_neighbour_vote` for every face at once: neighbours (n, k) rows of labelled faces, nearest
    first, -1 padding. Returns (winning code or -1, its share or NaN) per face."""
    n = len(neighbours)
    valid = neighbours >= 0
    votes = np.where(valid, codes[np.where(valid, neighbours, 0)], -1)
    counts = np.zeros(votes.shape, np.int64)  # per neighbour: how many neighbours hold its class
    for start in range(0, n, _CHUNK * 16):  # (rows, k, k) booleans at a time
        v, ok = votes[start:start + _CHUNK * 16], valid[start:start + _CHUNK * 16]
        counts[start:start + len(v)] = ((v[:, :, None] == v[:, None, :]) & ok[:, None, :]).sum(axis=2) * ok
    top = counts.max(axis=1, initial=0)
    own = ((votes == codes[:, None]) & valid).sum(axis=1)
    first_top = np.argmax(counts == top[:, None], axis=1)
    best = np.where(own == top, codes, votes[np.arange(n), first_top])
    size = valid.sum(axis=1)
    voted = size > 0
    majority = np.where(voted, best, -1).astype(np.int64)
    share = np.where(voted, top / np.maximum(size, 1), np.nan).astype(np.float32)
    return majority, share


def _neighbour_vote(neighbour_codes: np.ndarray, own: int) -> tuple[int, float]:
    """(winning class code, its share) among one face's labelled neighbours, nearest first.

    A tie is no majority against the face: when its own label is among the most frequent, its own
    label wins, so a 50/50 split never reads "neighbours disagree" (before, the class first in name
    order won, and the same faces were flagged or not depending on what the classes were called).
    A tie among other classes goes to the one with the nearest member, not to the alphabet.
    (The rule as written for one face; `_neighbour_votes` applies it to all faces at once.)
    """
    counts = np.bincount(neighbour_codes)
    tied = np.flatnonzero(counts == counts.max())
    if own in tied:
        best = own
    else:
        best = int(next(c for c in neighbour_codes.tolist() if c in tied))
    return best, float(counts[best] / len(neighbour_codes))


NEIGHBOUR_DEPTH_CAP = 256  # at most this many neighbours kept per face: 50,000 faces hold 51 MB (int32)


def neighbour_depth(k: int, n: int, labelled: int, margin: int = 2, cap: int = NEIGHBOUR_DEPTH_CAP) -> int:
    """How many nearest faces `neighbour_rows` should keep so that each face is expected to find k
    labelled ones among them: k+1 scaled by the unlabelled share, times `margin`, so that decisions
    that take a few faces' labels away still leave enough (a face left short searches on its own).

    At most `cap`: with few faces labelled the scaled depth reaches every face (1 labelled of 6,000: a
    6,000 x 5,999 search, 2.8 GB, kept in the page's cache); beyond the cap the faces left short search
    further on their own, as before the rows were kept."""
    if n < 2:
        return 0
    return min(n - 1, int(cap), margin * int(np.ceil((k + 1) * n / max(1, labelled))))


def neighbour_rows(vectors: Any, ids: Sequence[Any], index_dir: Path | str, model_id: str, depth: int) -> np.ndarray:
    """(n, depth) rows (positions in `vectors`) of each face's nearest other faces, nearest first,
    labelled or not, from the saved index of every face in `index_dir`.

    Why apart from the vote: the neighbours depend on the vectors alone, which change only on ingest,
    while the labels change with every decision. A caller keeps these rows as long as the vectors stay
    (explorer/pages/review.py caches them under a fingerprint of ids and vectors) and passes them to
    `suspect_faces(nearest=...)`, which then only votes with the labels of the moment."""
    from models.index_store import stored_index

    raw = np.asarray(vectors, np.float32)
    id_list = _ids(ids, len(raw)).tolist()
    n = len(id_list)
    depth = min(int(depth), n - 1)
    if depth < 1:
        return np.zeros((n, 0), np.int64)
    index, _ = stored_index(index_dir, raw, id_list, model_id)
    found, _ = index.query_ids(id_list, depth)
    rows = _positions(id_list, found)
    return rows.astype(np.int32) if n < np.iinfo(np.int32).max else rows  # half the memory a page keeps


def _positions(id_list: list, found: np.ndarray) -> np.ndarray:
    """Ids the index answered, as rows of `id_list`."""
    if not found.size:
        return np.zeros((len(found), 0), np.int64)
    position = {v: i for i, v in enumerate(id_list)}
    return np.vectorize(position.__getitem__, otypes=[np.int64])(found)


def _labelled_neighbours(codes: np.ndarray, k: int, ids: np.ndarray | None, raw: np.ndarray | None,
                         index_dir: Path | str, model_id: str | None,
                         nearest: np.ndarray | None = None) -> np.ndarray:
    """(n, k) rows of each face's k nearest labelled faces, -1 padded, from the saved index of all
    faces. Asks for enough neighbours that k labelled ones are expected (k+1 scaled by the unlabelled
    share), then four times more for the faces still short, until every face has k or has seen every
    face. With `nearest` (`neighbour_rows`) the first ask is already answered: only the faces short of
    k labelled ones among those rows search further."""
    if ids is None or not model_id or raw is None:
        raise ClusterError("a saved index needs the faces' ids and their embedding model id")
    id_list = ids.tolist()
    n = len(id_list)
    if nearest is not None and len(nearest) != n:
        raise ClusterError(f"{len(nearest)} rows of neighbours for {n} faces")
    index = None
    ask = min(n - 1, int(np.ceil((k + 1) * n / max(1, int((codes >= 0).sum())))))
    if nearest is None:
        from models.index_store import stored_index

        index, _ = stored_index(index_dir, raw, id_list, model_id)
        found, _ = index.query_ids(id_list, ask)
        nearest = _positions(id_list, found)
    result = _first_k(nearest, codes[nearest] >= 0, k)
    ask = nearest.shape[1]
    pending = np.flatnonzero((result < 0).any(axis=1)) if ask < n - 1 else np.zeros(0, np.int64)
    while len(pending):
        if index is None:
            from models.index_store import stored_index

            index, _ = stored_index(index_dir, raw, id_list, model_id)
        ask = min(n - 1, max(1, ask) * 4)
        found, _ = index.query_ids([id_list[i] for i in pending], ask)
        rows = _positions(id_list, found)
        result[pending] = _first_k(rows, codes[rows] >= 0, k)
        short = (result[pending] < 0).any(axis=1)
        pending = pending[short] if ask < n - 1 else np.zeros(0, np.int64)
    return result


def suspect_faces(vectors: Any, labels: Sequence[Any], predicted: Sequence[Any], confidences: Sequence[float],
                  ids: Sequence[Any] | None = None, k: int = 10, min_confidence: float | None = 0.5,
                  min_neighbour_share: float = 0.5, outlier_z: float = OUTLIER_Z,
                  index_dir: Path | str | None = None, model_id: str | None = None,
                  nearest: np.ndarray | None = None) -> pd.DataFrame:
    """Faces an editor should look at, each with the reasons why, most suspicious first.

    Reasons: "model disagrees" (prediction differs from the label; a prediction of None with a
    confidence is the open-set threshold saying unknown), "neighbours disagree" (the majority of
    its k nearest labelled faces carry another label, with at least min_neighbour_share of the
    votes; a tie that includes the face's own label is no majority against it), "low confidence"
    (< min_confidence) and "far from centroid" (robust z of its distance to the class centroid >
    outlier_z). Faces with no reason are not listed. Unlabelled faces can
    only be suspect for low confidence. A NaN confidence means no prediction was made yet: such a
    face is neither low-confidence nor disagreed with by a model that never saw it.

    index_dir None: the neighbours come from an index built for this call. With index_dir (e.g.
    explorer.views.index_dir_for(data_dir, "Faces", model_id)), the `ids` of the faces and the
    `model_id` of their embeddings, the index saved there is reused and kept up to date instead of
    rebuilt on every run (models/index_store.py); the suspects are the same. `nearest`: that index's
    answer kept from an earlier call (`neighbour_rows`, which depends on the vectors only), so a call
    after a decision votes with the new labels without searching again.

    min_confidence None: no threshold yet. Every face is returned, in face order, with one boolean
    column per reason but "low confidence": `suspect_queue(frame, min_confidence)` then makes the
    queue suspect_faces would have given, so a move of the threshold recomputes nothing else.
    """
    x = _unit(vectors)
    lab = _labels(labels, len(x))
    pred = _labels(predicted, len(x), "predictions")
    conf = np.asarray(confidences, dtype=np.float64)
    if conf.shape != (len(x),):
        raise ClusterError(f"confidences must be one per vector: got shape {conf.shape} for {len(x)} vectors")
    classes = _Classes(x, lab)
    faces = _per_face(x, classes, outlier_z)
    face_ids = _ids(ids, len(x)) if ids is not None else None
    maj, share = _neighbour_labels(x, classes.code, k, face_ids, np.asarray(vectors, np.float32), index_dir, model_id,
                                   nearest)
    names = np.append(classes.names, None)
    labelled = classes.labelled
    pred_missing = _missing(pred)
    pred_str = np.where(pred_missing, None, pred.astype(str))
    predicted_yet = ~np.isnan(conf)
    signals = pd.DataFrame({
        "id": _ids(ids, len(x)),
        "label": faces["label"].to_numpy(),
        "predicted": pred_str,
        "confidence": conf,
        "neighbour_label": names[maj],
        "neighbour_share": share,
        "distance": faces["distance"].to_numpy(),
        "robust_z": faces["robust_z"].to_numpy(),
        "model disagrees": labelled & (predicted_yet | ~pred_missing) & (pred_str != faces["label"].to_numpy()),
        "neighbours disagree": labelled & (maj >= 0) & (maj != classes.code) & (np.nan_to_num(share) >= min_neighbour_share),
        "far from centroid": faces["is_outlier"].to_numpy(),
    })
    return signals if min_confidence is None else suspect_queue(signals, min_confidence)


REASONS = ("model disagrees", "neighbours disagree", "low confidence", "far from centroid")  # in the reasons' text order
SUSPECT_COLUMNS = ["id", "label", "predicted", "confidence", "neighbour_label", "neighbour_share", "distance",
                   "robust_z", "n_reasons", "reasons"]


def suspect_queue(signals: pd.DataFrame, min_confidence: float = 0.5) -> pd.DataFrame:
    """The suspect faces of `suspect_faces(..., min_confidence=None)`'s frame for one threshold: the faces
    with a reason, "low confidence" (< min_confidence, a NaN confidence never) added, most suspicious first.

    Apart from suspect_faces so that the Review page's "Low confidence below" slider only filters: the
    geometry and the neighbours' vote behind the other reasons do not depend on it."""
    conf = signals["confidence"].to_numpy(np.float64)
    low = ~np.isnan(conf) & (conf < min_confidence)
    flags = np.column_stack([low if r == "low confidence" else signals[r].to_numpy(bool) for r in REASONS])
    keep = flags.any(axis=1)
    text = np.array(["; ".join(r for r, f in zip(REASONS, row) if f) for row in flags[keep]], dtype=object)
    out = signals.loc[keep, SUSPECT_COLUMNS[:-2]].reset_index(drop=True)
    out["n_reasons"] = flags[keep].sum(axis=1)
    out["reasons"] = text
    return out.sort_values(["n_reasons", "confidence", "distance"], ascending=[False, True, False],
                           kind="stable").reset_index(drop=True)


def lookalike_pairs(vectors: Any, labels: Sequence[Any], top: int = 20, min_size: int = 1) -> pd.DataFrame:
    """The top class pairs with the closest centroids (cosine distance): look-alikes the model may
    confuse, or duplicate classes of one person to merge. Classes smaller than min_size are
    skipped (a single photo's centroid is noisy)."""
    x = _unit(vectors)
    lab = _labels(labels, len(x))
    classes = _Classes(x, lab)
    keep = np.flatnonzero(classes.sizes >= min_size)
    columns = ["class_a", "class_b", "distance", "size_a", "size_b"]
    if len(keep) < 2 or top <= 0:
        return pd.DataFrame(columns=columns)
    c = classes.centroids[keep]
    best_d: list[np.ndarray] = []
    best_ij: list[np.ndarray] = []
    for start in range(0, len(c), _CHUNK):
        sims = c[start:start + _CHUNK] @ c.T
        i = np.arange(start, start + len(sims))
        sims[np.arange(len(sims))[:, None] >= (np.arange(len(c))[None, :] - start)] = -np.inf  # keep j > i only
        flat = sims.ravel()
        m = min(top, int(np.isfinite(flat).sum()))
        if m == 0:
            continue
        pick = np.argpartition(-flat, m - 1)[:m]
        best_d.append(1.0 - flat[pick])
        best_ij.append(np.column_stack([i[pick // len(c)], pick % len(c)]))
    d = np.concatenate(best_d)
    ij = np.concatenate(best_ij)
    order = np.argsort(d, kind="stable")[:top]
    a, b = keep[ij[order, 0]], keep[ij[order, 1]]
    return pd.DataFrame({"class_a": classes.names[a], "class_b": classes.names[b], "distance": d[order].astype(float),
                         "size_a": classes.sizes[a], "size_b": classes.sizes[b]})

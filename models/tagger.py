"""Tag suggestions by "experts voting", the method behind GIPHY's AutoTagging dataset.

Each modality is an expert. A kNN expert (visual: the pipeline's mean-pooled EfficientNet
GIF embedding; text: MiniLM over a GIF's words; identity without a classifier: the GIF's
face-track embeddings) finds the `k` nearest other GIFs and proposes the tags those
neighbours carry, each with its frequency (the share of the neighbours carrying it).
Frequencies under `min_frequency` are dropped; the default 0.2 asks two of ten neighbours to
agree, because one neighbour in ten is as likely chance as evidence. On a small library where
no tag is on more than two GIFs, a bound above 1/k hides everything (see bench/tagging.py).
A direct identity expert (`identity_tags`: the celebrity classes predicted for the GIF's
tracks) proposes its names with frequency 1.

Experts are not equally reliable, and how reliable depends on the library, so each one is
weighted by the share of tagged GIFs it covers for which it proposes at least one of their
tags, measured at fit time leave-one-out (a GIF's own tags never vote for it). With
`shared_share` (SHARED_SHARE unless None is given), a tag on that share or more of the
tagged GIFs an expert covers ("reaction", "gif", "person") is no hit: every neighbour carries it, so
any expert proposes it for every GIF, and counting it gave the visual expert weight 1.0 on a library
whose other tags it never got right (see `shared_tags`). The combined
score of a tag is the weighted mean of its frequencies over the experts that cover the GIF,
which lies in [0, 1] by construction and keeps its meaning across GIFs (a per-GIF max
normalisation would crown a tag carried by one neighbour in ten with 1.0). Uploader tags
are kept: confidence `confirmed_confidence` (1.0) when some expert with a positive weight
proposes them, else `unconfirmed_confidence` (0.7), on media some expert with a positive weight
covers; media only zero-weight experts cover (or none) got no vote, and their uploader tags are
left out rather than lowered. Tag names are spelled as the store spells them (NFKC, case-folded);
a tag the store would refuse (over-long, hidden characters) is left out with a SkippedTagWarning.

Choices worth knowing:
- A modality may hold several vectors per GIF (ids repeat, e.g. one per face track); two
  GIFs are as close as their closest pair of vectors (same person in both clips).
- GIFs without tags are not neighbours: they have nothing to vote, and counting them would
  read "not tagged yet" as evidence against every tag.
- A modality covers a GIF when it has an entry for it (vectors, or an `identity_tags` key,
  even an empty list: "looked, named no one"). Experts that do not cover a GIF neither vote
  nor dilute its scores.
- `max_distance` (cosine, per modality) turns an expert into "neighbours that are really
  alike": for face identity, a track farther than the same-person distance is someone else.
- Text for a GIF whose tags are held out: its title when it is not made of its tags,
  otherwise its ImageNet weak labels from ingest (see bench/tagging.py); never the held-out
  tags themselves, which would be the answer.
"""
from __future__ import annotations

import re
import reprlib
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

IDENTITY = "identity"
_CHUNK = 1024  # query media per block: bounds the (query rows, reference rows) similarity matrix
_EPS = 1e-9
SHARED_SHARE = 0.9  # a tag on this share of the tagged media an expert covers counts as shared (`shared_tags`)
SHARED_MIN_MEDIA = 10  # ... among at least this many tagged media (`shared_tags`)

ModalityInput = tuple[Sequence[str], Any]  # (media ids, one vector per id; ids may repeat)


# -- errors -------------------------------------------------------------------------------

class TaggerError(ValueError):
    """Base of every refusal by the tagger: bad input, bad parameters, bad state."""


class EmptyModalityError(TaggerError):
    """A modality with no vectors (or no identity tags) at all, or no modality given."""


class IdsMismatchError(TaggerError):
    """Vectors of media without a tags entry, tags of media in no modality, or unknown ids."""


class DimensionMismatchError(TaggerError):
    """Vectors of mixed lengths within a modality, or of another length than at fit time."""


class InvalidVectorsError(TaggerError):
    """Non-finite or all-zero vectors, or ids and vectors of different counts."""


class NotFittedError(TaggerError):
    """Prediction before fit."""


class SkippedTagWarning(UserWarning):
    """Tags the store would refuse (over-long, hidden characters) were left out of a tag list; the
    warning names each one's media and tag."""


# -- tags ---------------------------------------------------------------------------------

def normalise_tag(tag: str) -> str:
    """One spelling per tag, the store's: NFKC, case-folded, single spaces, no surrounding blanks; "" if blank.

    Why the store's normaliser (labeling.validation.clean_tag_name, what labeling.tags writes names
    with) and not str.lower(): votes are matched to stored tags by name, and "Straße" lowers to
    "straße" but is stored as "strasse", and a decomposed "Zoë" only equals the stored one after NFKC.
    """
    # imported here: labeling.validation pulls in the store's schema (SQLAlchemy), seconds the
    # tagger's other users (bench/tagging.py) need not pay
    from labeling.errors import ValidationError
    from labeling.validation import clean_tag_name

    text = str(tag)
    if not text.split():
        return ""
    try:
        return clean_tag_name(text)
    except ValidationError as exc:  # control characters, over-long: the store would refuse it too
        raise TaggerError(str(exc)) from exc


def class_name_to_tag(name: str) -> str:
    """A celebrity class name as a tag: `Brad_Pitt_[m.0c6qh]` -> `brad pitt`."""
    name = re.sub(r"_?\[[^\]]*\]$", "", name)
    return normalise_tag(name.replace("_", " "))


def tag_lists(mapping: Mapping[str, Iterable[str]], what: str, stacklevel: int = 2) -> dict[str, list[str]]:
    """Normalised, de-duplicated tag lists in their given order; refuses a bare string or a non-string tag.

    A tag the store would refuse (over 100 characters, control characters) is left out with a
    SkippedTagWarning naming its media and the tag, not raised: such a tag can never be stored, so
    it can neither be suggested nor confirm a stored one, and one bad uploader tag among thousands
    must not stop a fit (bench/tagging.py over gifs.csv). `stacklevel` points the warning at the
    caller's line."""
    if not isinstance(mapping, Mapping):
        raise TaggerError(f"{what} must be a mapping of media id to a list of tags")
    out: dict[str, list[str]] = {}
    skipped: list[str] = []
    for media_id, raw in mapping.items():
        if isinstance(raw, str):
            raise TaggerError(f"{what}[{media_id!r}] must be a list of tags, not one string ({raw!r})")
        if not isinstance(raw, Iterable):
            raise TaggerError(f"{what}[{media_id!r}] must be a list of tags, not {type(raw).__name__}")
        seen: dict[str, None] = {}
        for tag in raw:
            if not isinstance(tag, str):
                raise TaggerError(f"{what}[{media_id!r}] holds a non-string tag {tag!r}")
            try:
                t = normalise_tag(tag)
            except TaggerError as exc:
                skipped.append(f"media {media_id!r}, tag {reprlib.repr(tag)} ({exc})")
                continue
            if t:
                seen[t] = None
        out[str(media_id)] = list(seen)
    if skipped:
        warnings.warn(f"{what}: left out {len(skipped)} tag(s) the store would refuse: {'; '.join(skipped[:10])}"
                      f"{' ...' * (len(skipped) > 10)}", SkippedTagWarning, stacklevel=stacklevel)
    return out


def shared_tags(words: Mapping[Any, Iterable[str]], share: float = SHARED_SHARE) -> frozenset[str]:
    """Tags (nearly) every media item of `words` carries, on at least `share` of them: they say nothing
    about a media item, and a hit on one measures nothing.

    Why: a kNN expert proposes what its neighbours carry, so a tag on every tagged media item is
    proposed for every media item, right or wrong neighbours alike. Counted as a hit, "reaction" on
    every GIF of gifs.csv gave the visual expert weight 1.0 (0.16 without it), and with that weight
    it lowered all 118 uploader tags it did not confirm to 0.7. The text expert over tags met the same
    tag held out (64 LFW photos tagged `<name>;person`: weight 0.63 earned by `person`, then another
    person's name suggested on all 64). "Nearly": one media item without it (a photo tagged with a
    name only) was enough to bring the whole inflated weight back. Fewer than SHARED_MIN_MEDIA media
    items: none. In a new library of a few GIFs a tag on all of them ("cat" on 3 cat GIFs) is its
    subject, not noise, and leaving it out gave every expert weight 0 and suggested nothing at all."""
    lists = [set(tags) for tags in words.values()]
    if len(lists) < SHARED_MIN_MEDIA:
        return frozenset()
    counts = Counter(t for tags in lists for t in tags)
    return frozenset(t for t, n in counts.items() if n >= share * len(lists))


# -- vectors ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Rows:
    """One modality's vectors, rows grouped by media (`starts` are each media's first row)."""

    ids: list[str]
    vectors: np.ndarray  # (rows, dim), L2-normalised float32, grouped by media in `ids` order
    starts: np.ndarray  # (len(ids),) row offsets for np.maximum.reduceat

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def block(self, lo: int, hi: int) -> "_Rows":
        end = int(self.starts[hi]) if hi < len(self.ids) else len(self.vectors)
        start = int(self.starts[lo])
        return _Rows(self.ids[lo:hi], self.vectors[start:end], self.starts[lo:hi] - start)


def _as_rows(name: str, data: Any, dim: int | None = None) -> _Rows:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TaggerError(f"modality {name!r} must be an (ids, vectors) pair")
    ids, vectors = data
    if isinstance(ids, str):
        raise TaggerError(f"modality {name!r}: ids must be a sequence of media ids, not one string")
    ids = [str(i) for i in ids]
    if not isinstance(vectors, np.ndarray):
        lengths = sorted({int(np.size(v)) for v in vectors})
        if len(lengths) > 1:
            raise DimensionMismatchError(f"modality {name!r} mixes embedding dimensions {lengths}")
    x = np.asarray(vectors, dtype=np.float32)
    if x.size == 0 or not ids:
        raise EmptyModalityError(f"modality {name!r} has no vectors")
    if x.ndim == 1 and len(ids) == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise DimensionMismatchError(f"modality {name!r}: vectors must be 2-d (rows, dim), got shape {x.shape}")
    if len(ids) != len(x):
        raise InvalidVectorsError(f"modality {name!r}: {len(ids)} ids for {len(x)} vectors")
    if dim is not None and x.shape[1] != dim:
        raise DimensionMismatchError(f"modality {name!r}: vectors have {x.shape[1]} dimensions, fitted with {dim}")
    if not np.isfinite(x).all():
        raise InvalidVectorsError(f"modality {name!r} has non-finite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms <= 1e-12).any():
        zero = np.flatnonzero(norms[:, 0] <= 1e-12)[:5].tolist()
        raise InvalidVectorsError(f"modality {name!r} has all-zero vectors (rows {zero})")
    x = x / norms
    order: dict[str, list[int]] = {}
    for row, media_id in enumerate(ids):
        order.setdefault(media_id, []).append(row)
    grouped = [row for rows in order.values() for row in rows]
    counts = np.array([len(rows) for rows in order.values()])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return _Rows(list(order), np.ascontiguousarray(x[grouped]), starts)


def _media_similarity(query: _Rows, refs: _Rows) -> np.ndarray:
    """(query media, reference media) cosine similarity of each pair's closest vectors."""
    sims = query.vectors @ refs.vectors.T
    sims = np.maximum.reduceat(sims, refs.starts, axis=1)
    return np.maximum.reduceat(sims, query.starts, axis=0)


# -- the estimator ------------------------------------------------------------------------

class ExpertsVotingTagger:
    """kNN experts per modality, weighted by how often each proposes a correct tag.

    `fit(modalities, tags, identity_tags=None)` then `predict(media_ids)` for fitted GIFs
    (leave-one-out) or `predict(modalities=..., identity_tags=..., tags=...)` for new ones.
    """

    def __init__(self, k: int = 10, min_frequency: float = 0.2, confirmed_confidence: float = 1.0,
                 unconfirmed_confidence: float = 0.7, max_distance: Mapping[str, float] | None = None,
                 shared_share: float | None = SHARED_SHARE) -> None:
        self.k = k
        self.min_frequency = min_frequency
        self.confirmed_confidence = confirmed_confidence
        self.unconfirmed_confidence = unconfirmed_confidence
        self.max_distance = max_distance
        self.shared_share = shared_share  # None: every tag counts as a hit, a tag on every GIF too (see `shared_tags`)

    def get_params(self) -> dict[str, Any]:
        return {"k": self.k, "min_frequency": self.min_frequency, "confirmed_confidence": self.confirmed_confidence,
                "unconfirmed_confidence": self.unconfirmed_confidence,
                "max_distance": dict(self.max_distance) if self.max_distance else None,
                "shared_share": self.shared_share}

    def _check_params(self) -> None:
        if not isinstance(self.k, (int, np.integer)) or isinstance(self.k, bool) or self.k < 1:
            raise TaggerError(f"k must be a positive integer, got {self.k!r}")
        if not 0.0 <= float(self.min_frequency) <= 1.0:
            raise TaggerError(f"min_frequency must be in [0, 1], got {self.min_frequency!r}")
        if not 0.0 <= float(self.unconfirmed_confidence) <= float(self.confirmed_confidence) <= 1.0:
            raise TaggerError("need 0 <= unconfirmed_confidence <= confirmed_confidence <= 1, got "
                              f"{self.unconfirmed_confidence!r} and {self.confirmed_confidence!r}")
        for name, d in (self.max_distance or {}).items():
            if not 0.0 <= float(d) <= 2.0:
                raise TaggerError(f"max_distance[{name!r}] is a cosine distance in [0, 2], got {d!r}")
        if self.shared_share is not None and not 0.0 < float(self.shared_share) <= 1.0:
            raise TaggerError(f"shared_share must be in (0, 1] or None, got {self.shared_share!r}")

    # -- fit ------------------------------------------------------------------------------
    def fit(self, modalities: Mapping[str, ModalityInput], tags: Mapping[str, Iterable[str]],
            identity_tags: Mapping[str, Iterable[str]] | None = None) -> "ExpertsVotingTagger":
        """Store the experts' references and measure each expert's weight leave-one-out.

        `tags` needs an entry (possibly empty) for every media id of every modality.
        """
        self._check_params()
        tags_ = tag_lists(tags, "tags", stacklevel=3)
        if not modalities and identity_tags is None:
            raise EmptyModalityError("fit needs at least one modality or identity_tags")
        if identity_tags is not None and IDENTITY in modalities:
            raise TaggerError(f"identity is given twice: as vectors (modality {IDENTITY!r}) and as identity_tags")
        rows = {name: _as_rows(name, data) for name, data in modalities.items()}
        identity = None
        if identity_tags is not None:
            identity = tag_lists(identity_tags, "identity_tags", stacklevel=3)
            if not identity:
                raise EmptyModalityError("identity_tags is empty")
        covered: set[str] = set()
        for name, ids in [*((n, r.ids) for n, r in rows.items()), *([(IDENTITY, list(identity))] if identity else [])]:
            missing = [i for i in ids if i not in tags_]
            if missing:
                raise IdsMismatchError(f"modality {name!r} has {len(missing)} media without a tags entry "
                                       f"(e.g. {missing[:3]}); give them an empty list if they have no tags")
            covered.update(ids)
        orphans = [i for i in tags_ if i not in covered]
        if orphans:
            raise IdsMismatchError(f"{len(orphans)} tagged media are in no modality (e.g. {orphans[:3]})")
        unknown_limits = set(self.max_distance or {}) - set(rows)
        if unknown_limits:
            raise TaggerError(f"max_distance names no vector modality: {sorted(unknown_limits)}")

        self.tags_ = tags_
        self.modalities_ = list(rows) + ([IDENTITY] if identity is not None else [])
        self._rows = rows
        self._identity = identity
        # references: each modality's tagged media, in the modality's own order
        self._refs = {name: _subset(r, [j for j, m in enumerate(r.ids) if tags_[m]]) for name, r in rows.items()}
        self.dims_ = {name: r.dim for name, r in rows.items()}

        votes = self._votes_for(list(tags_), None, None)
        self.weights_, self.coverage_, self.hits_, self.shared_, self.unevaluated_ = {}, {}, {}, {}, {}
        for name in self.modalities_:
            self._measure(name, votes[name])
        return self

    def _measure(self, name: str, votes: Mapping[str, Mapping[str, float]]) -> None:
        """One expert's weight: the share of the tagged media it covers that it proposes one of their
        tags for, leave-one-out, tags shared by (nearly) all of them left out of both the hits and the
        media counted.

        Fitted per expert: `shared_` (the tags left out), `unevaluated_` (tagged media it covers whose
        tags are all shared: nothing of theirs could be a hit, so counting them as misses would punish
        the expert for the library), `coverage_` (media measured), `hits_`, `weights_`."""
        tagged = {m: self.tags_[m] for m in votes if self.tags_[m]}
        shared = shared_tags(tagged, float(self.shared_share)) if self._shared_rule_applies(name) else frozenset()
        own = {m: set(tags) - shared for m, tags in tagged.items()}
        evaluated = [m for m, tags in own.items() if tags]
        hits = sum(1 for m in evaluated if set(votes[m]) & own[m])
        self.shared_[name] = shared
        self.unevaluated_[name] = len(tagged) - len(evaluated)
        self.coverage_[name] = len(evaluated)
        self.hits_[name] = hits
        self.weights_[name] = hits / len(evaluated) if evaluated else 0.0

    def _shared_rule_applies(self, name: str) -> bool:
        """Whether shared tags are left out of this expert's weight (see `shared_tags`, which also spares
        small libraries). Not for the direct identity expert: it proposes the person it recognised in that
        very GIF, not what its neighbours carry, so naming the one person of a one-person library is a hit."""
        direct = name == IDENTITY and self._identity is not None
        return self.shared_share is not None and not direct

    def is_fitted(self) -> bool:
        return hasattr(self, "weights_")

    def _check_fitted(self) -> None:
        if not self.is_fitted():
            raise NotFittedError("this ExpertsVotingTagger is not fitted yet: call fit(modalities, tags) first")

    # -- voting ---------------------------------------------------------------------------
    def _knn_votes(self, name: str, query: _Rows) -> dict[str, dict[str, float]]:
        """Tag frequencies among each query's k nearest tagged media, never itself."""
        refs = self._refs[name]
        out: dict[str, dict[str, float]] = {}
        limit = (self.max_distance or {}).get(name)
        if not refs.ids:
            return {media_id: {} for media_id in query.ids}
        ref_array = np.array(refs.ids, dtype=object)
        for lo in range(0, len(query.ids), _CHUNK):
            block = query.block(lo, min(lo + _CHUNK, len(query.ids)))
            sims = _media_similarity(block, refs)
            for qi, media_id in enumerate(block.ids):
                s = sims[qi].astype(np.float64)
                s[ref_array == media_id] = -np.inf  # leave-one-out by id
                if limit is not None:
                    s[1.0 - s > limit + _EPS] = -np.inf
                order = np.argsort(-s, kind="stable")[: self.k]
                neighbours = [refs.ids[j] for j in order if np.isfinite(s[j])]
                out[media_id] = self._frequencies(neighbours)
        return out

    def _frequencies(self, neighbours: list[str]) -> dict[str, float]:
        """{tag: share of the neighbours carrying it}, kept above the bound, ordered best first.

        Equal shares are common (every tag of one neighbour in ten is 0.1), so ties go to the
        tag whose nearest carrier is nearer, not to the alphabet. Neighbours come nearest first.
        """
        if not neighbours:
            return {}
        counts = Counter(t for n in neighbours for t in self.tags_[n])  # insertion order = nearest carrier first
        shares = [(t, c / len(neighbours)) for t, c in counts.items()]
        kept = [(t, f) for t, f in shares if f >= float(self.min_frequency) - _EPS]
        return dict(sorted(kept, key=lambda tf: -tf[1]))  # stable: ties keep nearest-carrier order

    def _votes_for(self, media_ids: list[str] | None, new_rows: dict[str, _Rows] | None,
                   new_identity: dict[str, list[str]] | None) -> dict[str, dict[str, dict[str, float]]]:
        """modality -> media id -> {tag: frequency}; a media id is present when the modality covers it."""
        votes: dict[str, dict[str, dict[str, float]]] = {}
        for name in self.modalities_:
            if name == IDENTITY and self._identity is not None:
                source = self._identity if new_rows is None else (new_identity or {})
                wanted = source if media_ids is None else {m: source[m] for m in media_ids if m in source}
                votes[name] = {m: {t: 1.0 for t in ts} for m, ts in wanted.items()}
                continue
            if new_rows is None:
                query = self._rows[name]
                if set(media_ids) != set(query.ids):
                    idx = [i for i, m in enumerate(query.ids) if m in set(media_ids)]
                    query = _subset(query, idx)
            elif name in new_rows:
                query = new_rows[name]
            else:
                votes[name] = {}
                continue
            votes[name] = self._knn_votes(name, query) if query.ids else {}
        return votes

    def _inputs(self, media_ids: Sequence[str] | None, modalities: Mapping[str, ModalityInput] | None,
                identity_tags: Mapping[str, Iterable[str]] | None, tags: Mapping[str, Iterable[str]] | None,
                ) -> tuple[list[str], dict[str, dict[str, dict[str, float]]], dict[str, list[str]]]:
        """Validate either fitted ids or new inputs; return query ids, votes and original tags."""
        self._check_fitted()
        if media_ids is not None:
            if modalities is not None or identity_tags is not None or tags is not None:
                raise TaggerError("give either media_ids (fitted media) or new modalities/identity_tags/tags, not both")
            if isinstance(media_ids, str):
                raise TaggerError("media_ids must be a sequence of ids, not one string")
            ids = list(dict.fromkeys(str(m) for m in media_ids))
            unknown = [m for m in ids if m not in self.tags_]
            if unknown:
                raise IdsMismatchError(f"{len(unknown)} media ids were not fitted (e.g. {unknown[:3]}); "
                                       "pass their vectors as modalities=... instead")
            return ids, self._votes_for(ids, None, None), {m: self.tags_[m] for m in ids}
        if not modalities and identity_tags is None:
            raise EmptyModalityError("predict needs media_ids, or new modalities and/or identity_tags")
        modalities = modalities or {}
        unknown = [n for n in modalities if n not in self._rows]
        if unknown:
            raise TaggerError(f"modalities {unknown} were not fitted; fitted: {self.modalities_}")
        if identity_tags is not None and self._identity is None:
            raise TaggerError("identity_tags given but the tagger was fitted without them")
        new_rows = {n: _as_rows(n, d, self.dims_[n]) for n, d in modalities.items()}
        new_identity = tag_lists(identity_tags, "identity_tags", stacklevel=4) if identity_tags is not None else None
        ids = list(dict.fromkeys([*(m for r in new_rows.values() for m in r.ids), *(new_identity or {})]))
        originals = tag_lists(tags, "tags", stacklevel=4) if tags is not None else {}
        stray = [m for m in originals if m not in set(ids)]
        if stray:
            raise IdsMismatchError(f"tags given for {len(stray)} media in no modality (e.g. {stray[:3]})")
        votes = self._votes_for(None, new_rows, new_identity)
        return ids, votes, {m: originals.get(m, []) for m in ids}

    def predict_votes(self, media_ids: Sequence[str] | None = None, *,
                      modalities: Mapping[str, ModalityInput] | None = None,
                      identity_tags: Mapping[str, Iterable[str]] | None = None,
                      ) -> dict[str, dict[str, dict[str, float]]]:
        """Each expert's proposals: modality -> media id -> {tag: frequency >= min_frequency}.

        A media id appears under a modality only when that modality covers it; each dict is
        in the expert's order (frequency, then nearest carrier first).
        """
        return self._inputs(media_ids, modalities, identity_tags, None)[1]

    def covering_weight(self, votes: Mapping[str, Mapping[str, Mapping[str, float]]], media_id: str) -> float:
        """Summed weight of the experts that cover a media item: 0 means nobody trusted voted on it."""
        return float(sum(self.weights_[n] for n in self.modalities_ if media_id in votes.get(n, {})))

    def combine(self, votes: Mapping[str, Mapping[str, Mapping[str, float]]], media_id: str) -> dict[str, float]:
        """Weighted mean of the covering experts' frequencies, in [0, 1]; empty when their weights sum to 0."""
        covering = [n for n in self.modalities_ if media_id in votes.get(n, {})]
        total = self.covering_weight(votes, media_id)
        if total <= 0:
            return {}
        scores: dict[str, float] = {}
        for n in covering:
            w = self.weights_[n]
            for tag, f in votes[n][media_id].items():
                scores[tag] = scores.get(tag, 0.0) + w * f
        return {t: s / total for t, s in scores.items() if s > 0}

    def _positions(self, votes: Mapping[str, Mapping[str, Mapping[str, float]]], media_id: str) -> dict[str, int]:
        """Each tag's best place in the order of the positively weighted experts proposing it."""
        best: dict[str, int] = {}
        for n in self.modalities_:
            if self.weights_[n] > 0:
                for i, tag in enumerate(votes.get(n, {}).get(media_id, {})):
                    best[tag] = min(best.get(tag, i), i)
        return best

    def predict(self, media_ids: Sequence[str] | None = None, *,
                modalities: Mapping[str, ModalityInput] | None = None,
                identity_tags: Mapping[str, Iterable[str]] | None = None,
                tags: Mapping[str, Iterable[str]] | None = None,
                top: int | None = 10) -> dict[str, list[tuple[str, float]]]:
        """Media id -> [(tag, confidence)], best first, at most `top` (None: all).

        Original tags come at `confirmed_confidence` or `unconfirmed_confidence` only on media that
        some expert with a positive weight covers; on the others nobody trusted voted, and no vote is
        not a vote against, so their original tags are not listed (there is no confidence to give).
        Ties go to the tag ranked higher by some expert with a positive weight (its nearest
        carrier is nearer), then to the alphabet.

        Fitted media by id (their fit-time tags are the originals), or new media by their
        vectors per modality, `identity_tags` and optional original `tags`.
        """
        if top is not None and (not isinstance(top, (int, np.integer)) or isinstance(top, bool) or top < 1):
            raise TaggerError(f"top must be a positive integer or None, got {top!r}")
        ids, votes, originals = self._inputs(media_ids, modalities, identity_tags, tags)
        out: dict[str, list[tuple[str, float]]] = {}
        for media_id in ids:
            scores = self.combine(votes, media_id)
            merged = dict(scores)
            judged = originals[media_id] if self.covering_weight(votes, media_id) > 0 else []
            for tag in judged:
                merged[tag] = float(self.confirmed_confidence if scores.get(tag, 0.0) > 0
                                    else self.unconfirmed_confidence)
            position = self._positions(votes, media_id)
            ranked = sorted(merged.items(), key=lambda kv: (-kv[1], position.get(kv[0], len(position)), kv[0]))
            out[media_id] = [(t, float(c)) for t, c in (ranked if top is None else ranked[:top])]
        return out


def _subset(rows: _Rows, media_index: list[int]) -> _Rows:
    """The given media only, rows still grouped by media."""
    ends = np.append(rows.starts[1:], len(rows.vectors))
    pieces = [np.arange(rows.starts[i], ends[i]) for i in media_index]
    counts = np.array([len(p) for p in pieces], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(pieces) else np.zeros(0, np.int64)
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    return _Rows([rows.ids[i] for i in media_index], rows.vectors[flat], starts)

"""Tag suggestions for every ingested media item by experts voting (models/tagger.py), from the store.

Three experts, as in bench/tagging.py:
- visual: the pipeline's GIF embedding (EfficientNet-Lite0 frame features, mean-pooled; MediaEmbedding,
  which ingest computes for animated media: GIFs and videos, not still photos);
- identity: the celebrities of the media's faces as tags ("Ariel Sharon" -> "ariel sharon"): the
  editors' confirmed classes first, else the model's accepted predictions (face labels and
  track predictions). Media with faces but nobody named are covered with no names ("looked,
  named no one"); media without faces are not covered by this expert;
- text: MiniLM over words the media already has. `text="tags"` (the default): its existing
  active tags, for media that have some; it proposes tags that travel with the ones already
  there. Its weight is measured without the answer in the question (`text_weight_without_own_tags`):
  each media with 2+ tags holds one out and queries with the rest, and a hit is the held-out tag
  proposed as a novel suggestion (not among the tags left); media with one tag have nothing left to
  query with and are not counted. A tag every tagged media carries is never held out, nor counted
  among the 2: the expert can never suggest it (64 LFW photos tagged `<name>;person` earned 0.63 by
  proposing the held-out `person`, then suggested another person's name on all 64). (Measured on
  the query text of all its own tags, the weight read how often tag-alike neighbours share a tag:
  1.00 on the 11 tagged LFW photos of the tests, which it answered with other people's names.)
  `text="weak_labels"`: the ImageNet weak labels from ingest (what bench/tagging.py measured):
  every animated media has them, and they never contain the answer, so the tagger's own
  leave-one-out weight is honest. `text=None` leaves the expert out (and MiniLM unloaded).

The tagger weighs each expert by how often it proposes a correct tag, leave-one-out, on the
media that already carry tags (active tags of any source: uploader, import, editor, and accepted
suggestions). A tag (nearly) every tagged media item an expert covers carries (`shared_tags`:
"reaction" on every GIF) is no correct tag: every neighbour proposes it, so it earned the visual
expert weight 1.0 and every uploader tag the expert did not confirm was lowered to 0.7. Media whose
tags are all shared are not measured; a note names the tags left out (`shared_tags_notes`).
Results are written as media_tag rows with source "experts_voting" and status
"suggested", in one audited operation, and never over anything else: an active tag is not
suggested again, and a suggestion an editor rejected, or a tag an editor removed, stays so. Earlier experts-voting
suggestions of the media voted on are refreshed, or removed when the vote no longer proposes them
(suggestions are the latest vote, not a pile). A media item is voted on when some expert with a positive
weight covers it: a run in which no expert earned a weight removes no suggestion (no vote is not a vote against).

The same operation applies GIPHY's rule for original tags: an active tag with source "uploader"
or "import" on a media item voted on gets confidence 1.0 when at least one expert with a positive
weight proposes it, else 0.7 (the tagger's confirmed / unconfirmed confidences), so the store says
how sure the dataset is of what the uploader typed. Only the confidence (and the row's editor) is
written, only when it changes, so a re-run with the same vote writes nothing, and undoing the run
restores the old confidences. Editor rows are never touched (an editor's decision outranks a
model), nor rejected rows, nor model rows; media no expert with a positive weight covers keep
their tags as they are, and so does every media item when no expert earned a weight (no vote is
not a vote against).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from labeling.audit import Operation, _chunks, run_operation
from labeling.errors import ValidationError
from labeling.queries import current_class_targets, current_track_prediction
from labeling.schema import (CONFIRMED_STATUSES, UNDECIDED_STATUSES, AuditEvent, CelebrityClass, Face, FaceEmbedding,
                             FaceLabel, Media, MediaEmbedding, MediaTag, Tag, Track, bytes_to_vector)
from labeling.tags import apply_tags, tag_ids
from labeling.validation import clean_tag_name, quoted
from models.retrain_head import OnStep  # the one stage-callback type (retrain's too)
from models.tagger import SHARED_SHARE, shared_tags  # the rule lives in the tagger: every expert's weight

SOURCE = "experts_voting"
ORIGINAL_SOURCES = ("uploader", "import")  # tags a media item came with: the vote confirms or lowers them
VISUAL, IDENTITY, TEXT = "visual", "identity", "text"
TEXT_SOURCES = ("tags", "weak_labels")
DEFAULT_TOP = 5
PREDICT_CHUNK = 256  # media per tagger.predict call: paces the progress bar

Progress = Callable[[int, int], None]
# on_step (`OnStep`): what a long step is doing while the count cannot move ("loading the text model"), as
# ingest's bar says "loading models, then detecting faces": reading the store, MiniLM and the text embeddings
# took 30-40 s in which the bar said only "0/12".


# -- reading the store ---------------------------------------------------------------------------
@dataclass
class TaggingInputs:
    """What the experts see, keyed by media id (ok media only)."""

    gif_model: str | None
    media_ids: list[int]
    visual: dict[int, np.ndarray]  # media -> GIF embedding
    weak_labels: dict[int, list[str]]  # media -> ImageNet labels of its GIF embedding, most likely first
    tags: dict[int, list[str]]  # media -> active tags (the truth the weights are measured on)
    identity: dict[int, list[str]]  # media with faces -> celebrity names as tags
    existing: dict[tuple[int, str], tuple[str, str]]  # (media, tag) -> (source, status) of every row


def resolve_gif_model(session: Session, gif_model: str | None) -> str | None:
    """The GIF embedding model: the one given, or the store's only one (None: the store has none)."""
    counts = dict(session.execute(select(MediaEmbedding.model_id, func.count()).group_by(MediaEmbedding.model_id)).all())
    listed = ", ".join(f"{m} ({n} media)" for m, n in sorted(counts.items()))
    if gif_model is None:
        if len(counts) > 1:
            raise ValidationError(f"the store holds GIF embeddings of {len(counts)} models ({listed}); "
                                  "name the one to use (gif_model)")
        return next(iter(counts), None)
    if gif_model not in counts:
        raise ValidationError(f"the store has no GIF embeddings of model {gif_model!r} (it has {listed or 'none'})")
    return gif_model


def identity_names(class_names: Mapping[int, str], labels: list[tuple[int, str | None, int | None]],
                   track_classes: list[tuple[int, int | None]]) -> dict[int, list[str]]:
    """media -> celebrity tags, from (media, label status, class) per face and (media, class) per track.

    A face's confirmed class, or the model's accepted prediction (status "predicted" with a class);
    faces rejected or marked unknown name nobody. A track's prediction counts only for tracks no
    editor decided a face of (the caller leaves the others out): their faces speak for themselves,
    and a person an editor turned down must not come back as a tag. Every media with a face gets an
    entry. A class whose name cannot be a tag (class names may be twice as long as tag names) gives
    none, rather than stopping the run for every other media item.
    """
    from models.tagger import TaggerError, class_name_to_tag

    def tag_of(class_id: int) -> str:
        try:
            return class_name_to_tag(class_names[class_id])
        except TaggerError:
            return ""

    out: dict[int, dict[str, None]] = {}
    for media_id, status, class_id in labels:
        names = out.setdefault(media_id, {})
        if class_id is not None and class_id in class_names and (status in CONFIRMED_STATUSES or status == "predicted"):
            names[tag_of(class_id)] = None
    for media_id, class_id in track_classes:
        names = out.setdefault(media_id, {})
        if class_id is not None and class_id in class_names:
            names[tag_of(class_id)] = None
    return {m: [t for t in names if t] for m, names in out.items()}


def read_inputs(store: sessionmaker[Session], gif_model: str | None = None) -> TaggingInputs:
    with store() as session:
        gif_model = resolve_gif_model(session, gif_model)
        media_ids = list(session.scalars(select(Media.id).where(Media.status == "ok").order_by(Media.id)))
        ok = set(media_ids)
        visual: dict[int, np.ndarray] = {}
        weak: dict[int, list[str]] = {}
        if gif_model is not None:
            for media_id, blob, top_labels in session.execute(
                    select(MediaEmbedding.media_id, MediaEmbedding.vector, MediaEmbedding.top_labels)
                    .where(MediaEmbedding.model_id == gif_model)):
                if media_id in ok:
                    visual[media_id] = bytes_to_vector(blob)
                    weak[media_id] = [str(label) for label, _ in (top_labels or [])]
        tags: dict[int, list[str]] = {}
        existing: dict[tuple[int, str], tuple[str, str]] = {}
        for media_id, name, source, status in session.execute(
                select(MediaTag.media_id, Tag.name, MediaTag.source, MediaTag.status)
                # by name, not confidence: the vote writes confidences, and an order it changed would
                # change the next vote's ties and text (a re-run on unchanged data must change nothing)
                .join(Tag, Tag.id == MediaTag.tag_id).order_by(MediaTag.media_id, Tag.name)):
            existing[(media_id, name)] = (source, status)
            if status == "active" and media_id in ok:
                tags.setdefault(media_id, []).append(name)
        # A tag an editor removed has no row left, but proposing it again would undo their decision:
        # it counts as rejected until someone adds it back (which writes a row again).
        tag_names = None
        for (after,) in session.execute(select(AuditEvent.after).where(AuditEvent.operation == "remove_tags",
                                                                       AuditEvent.undone_by_id.is_(None))):
            tag_names = tag_names if tag_names is not None else dict(session.execute(select(Tag.id, Tag.name)).all())
            for key in after or {}:
                _, media_id, tag_id = key.split(":")
                name = tag_names.get(int(tag_id))
                if name is not None:
                    existing.setdefault((int(media_id), name), ("editor", "rejected"))
        class_names = dict(session.execute(select(CelebrityClass.id, CelebrityClass.name)
                                           .where(CelebrityClass.status != "retired")).all())
        labels = session.execute(select(Face.media_id, FaceLabel.status, FaceLabel.class_id)
                                 .outerjoin(FaceLabel, FaceLabel.face_id == Face.id)).all()
        decided_tracks = set(session.scalars(
            select(FaceEmbedding.track_id).join(FaceLabel, FaceLabel.face_id == FaceEmbedding.face_id)
            .where(FaceEmbedding.track_id.is_not(None), FaceLabel.status.not_in(UNDECIDED_STATUSES)).distinct()))
        # a track's prediction counts only while its faces carry that model's predictions (an undone
        # refresh leaves the track's behind: labeling.queries.current_track_prediction)
        # a class merged since the prediction counts as the class it went to (a retired one as unknown)
        targets = current_class_targets(session)
        tracks = [(m, targets.get(c))
                  for t, m, c in session.execute(select(Track.id, Track.media_id, Track.predicted_class_id)
                                                 .where(current_track_prediction()))
                  if t not in decided_tracks]
    identity = identity_names(class_names, [tuple(r) for r in labels if r[0] in ok],
                              [tuple(r) for r in tracks if r[0] in ok])
    return TaggingInputs(gif_model, media_ids, visual, weak, tags, identity, existing)


# -- the experts (pure, but for the text model) -----------------------------------------------------
def build_modalities(inputs: TaggingInputs, text_embedder: Any | None = None, text: str | None = "tags"
                     ) -> tuple[dict[str, tuple[list[str], np.ndarray]], dict[str, list[str]], dict[str, list[str]] | None]:
    """(vector modalities, tags of every covered media, identity tags or None) in the tagger's terms (str ids).

    The text expert is built when `text` names its source and a text_embedder is given."""
    modalities: dict[str, tuple[list[str], np.ndarray]] = {}
    if inputs.visual:
        ids = sorted(inputs.visual)
        modalities[VISUAL] = ([str(m) for m in ids], np.stack([inputs.visual[m] for m in ids]))
    words = text_sources(inputs, text)
    if text_embedder is not None and words:
        ids = sorted(words)
        modalities[TEXT] = ([str(m) for m in ids],
                            np.asarray(text_embedder.embed([", ".join(words[m]) for m in ids]), dtype=np.float32))
    identity = {str(m): names for m, names in inputs.identity.items()} or None
    tags = {str(m): list(inputs.tags.get(m, [])) for m in covered_media(inputs, text)}
    return modalities, tags, identity


def covered_media(inputs: TaggingInputs, text: str | None) -> list[int]:
    """The media some expert covers (a GIF embedding, words for the text expert, faces), sorted: those voted
    on, known as soon as the store is read (the progress bar's total, before MiniLM loads)."""
    return sorted(set(inputs.visual) | set(text_sources(inputs, text)) | set(inputs.identity))


def text_sources(inputs: TaggingInputs, text: str | None) -> dict[int, list[str]]:
    """media -> the words its text expert embeds (only media that have some)."""
    if text is None:
        return {}
    if text not in TEXT_SOURCES:
        raise ValidationError(f"text must be one of {', '.join(TEXT_SOURCES)} or None, got {text!r}")
    source = inputs.tags if text == "tags" else inputs.weak_labels
    return {m: words for m, words in source.items() if words}


def _first_tags(tags: list[str], shown: int = 3) -> str:
    """"'reaction', 'funny', 'lol' ...": the first tags of a sorted list, as the notes name shared tags."""
    return ", ".join(quoted(t) for t in tags[:shown]) + (" ..." if len(tags) > shown else "")


def unmeasured_text_note(words: Mapping[int, list[str]]) -> str:
    """Why the text expert's weight is 0 of 0 though it covers tagged media: no media item has 2 tags
    it could lack (`held_out_tag_queries`), so nothing was measured; the weight line alone read as an
    expert that covers nothing."""
    shared = sorted(shared_tags(words))
    besides = f" besides {_first_tags(shared)} (on {SHARED_SHARE:.0%} or more of them)" if shared else ""
    return (f"text expert not measured: none of the {len(words)} tagged media items it covers has 2 tags"
            f"{besides} to hold one out, so its weight is 0")


def shared_tags_notes(tagger: Any, remeasured: Iterable[str] = (), said: Iterable[str] = ()) -> list[str]:
    """One note per expert whose weight was measured without shared tags: which tags, and why.

    Why: the weight lines print "N of M tagged media it covers", and M no longer counts the media
    whose tags are all shared; without the note a run on gifs.csv plus "reaction" would print a
    weight unexplained by the tags the editor sees on every GIF. `remeasured`: experts whose weight
    was measured again outside the tagger (text over tags, `text_weight_without_own_tags`, which never
    holds a shared tag out): their media counts are not the tagger's. `said`: experts another note
    already explains (the text expert that measured nothing)."""
    remeasured = set(remeasured)
    notes = []
    for name in tagger.modalities_:
        shared = sorted(tagger.shared_.get(name, ()))
        if not shared or name in said:
            continue
        names = _first_tags(shared)
        covered = "" if name in remeasured else f" {tagger.coverage_[name] + tagger.unevaluated_[name]}"
        note = (f"weight {name} measured without {names} (on {float(tagger.shared_share):.0%} or more of the{covered} tagged media "
                "it covers: every neighbour proposes such a tag, so proposing it says nothing)")
        left = 0 if name in remeasured else tagger.unevaluated_[name]
        if left:
            note += f"; {left} media with only such tags not measured"
        notes.append(note)
    return notes


def held_out_tag_queries(words: Mapping[int, list[str]], shared: Iterable[str] = ()
                         ) -> dict[int, tuple[str, list[str]]]:
    """media -> (the tag held out, the tags left as its text), for every media with 2+ tags it could lack.

    A tag in `shared` (see `shared_tags`) is never held out, and does not count towards the 2: a
    media item whose other tags are all shared has nothing to ask with that tells it from the rest.
    Which tag is held out rotates with the media id (deterministic, and not always the first by
    name, which would favour tags early in the alphabet)."""
    shared = frozenset(shared)
    out: dict[int, tuple[str, list[str]]] = {}
    for media_id, tags in words.items():
        own = [t for t in tags if t not in shared]
        if len(own) >= 2:
            held = own[media_id % len(own)]
            out[media_id] = (held, [t for t in tags if t != held])
    return out


def text_weight_without_own_tags(tagger: Any, words: Mapping[int, list[str]], text_embedder: Any
                                 ) -> tuple[float, int, int]:
    """(weight, media measured, hits) of the text expert over tags, leave-one-tag-out.

    Why: with text="tags" a media item's text is its own tags, so the tagger's leave-one-out weight
    asks neighbours of the answer for the answer. Here each media with 2+ tags it could lack queries
    the fitted references (the other media's full tags; itself excluded by id) with its tags but one,
    and a hit is the held-out tag among the expert's novel proposals (not among the tags left in the
    query): what the expert is used for, proposing tags that travel with the ones a media item has.
    Only tags a suggestion could be are held out: a tag every media item carries (`shared_tags`) is
    never missing, so proposing it measures nothing the expert would ever write."""
    from models.tagger import normalise_tag

    queries = held_out_tag_queries(words, shared_tags(words))
    if not queries:
        return 0.0, 0, 0
    ids = sorted(queries)
    vectors = np.asarray(text_embedder.embed([", ".join(queries[m][1]) for m in ids]), dtype=np.float32)
    votes = tagger.predict_votes(modalities={TEXT: ([str(m) for m in ids], vectors)}).get(TEXT, {})

    def hit(media_id: int) -> bool:
        held, left = queries[media_id]
        novel = set(votes.get(str(media_id), {})) - {normalise_tag(t) for t in left}
        return normalise_tag(held) in novel

    hits = sum(1 for m in ids if hit(m))
    return hits / len(ids), len(ids), hits


def new_suggestions(predicted: Mapping[str, list[tuple[str, float]]], existing: Mapping[tuple[int, str], tuple[str, str]],
                    top: int, min_confidence: float = 0.0) -> tuple[list[tuple[int, str, float]], int]:
    """(media, tag, confidence) to write, at most `top` per media, best first, and how many proposals an
    editor had already rejected (kept rejected). Tags the media has in any other row (active, or a
    suggestion from another source) are not proposals: only experts-voting suggestions are rewritten."""
    out: list[tuple[int, str, float]] = []
    rejected = 0
    for media_key, ranked in predicted.items():
        media_id = int(media_key)
        kept = 0
        for tag, confidence in ranked:
            name = clean_tag_name(tag)
            row = existing.get((media_id, name))
            if row is not None and row != (SOURCE, "suggested"):
                rejected += row[1] == "rejected"
                continue
            confidence = round(float(np.clip(confidence, 0.0, 1.0)), 6)
            if confidence <= 0 or confidence < min_confidence or kept >= top:
                continue
            out.append((media_id, name, confidence))
            kept += 1
    return out, rejected


def _is_original(source: str, status: str) -> bool:
    """An active tag the media item came with: what the vote confirms (1.0) or lowers (0.7)."""
    return source in ORIGINAL_SOURCES and status == "active"


def original_confidences(predicted: Mapping[str, list[tuple[str, float]]],
                         existing: Mapping[tuple[int, str], tuple[str, str]]) -> list[tuple[int, str, float]]:
    """(media, tag, confidence) for the active uploader / import tags of the media voted on.

    The tagger already ranks a media item's original tags at its confirmed (1.0) or unconfirmed
    (0.7) confidence, and leaves them out on media no expert with a positive weight covers, so this
    only picks them out: the rule lives in one place (models/tagger.py).
    Editor, model and experts-voting rows, and rejected ones, are not originals to rewrite."""
    out: list[tuple[int, str, float]] = []
    for media_key, ranked in predicted.items():
        media_id = int(media_key)
        for tag, confidence in ranked:
            name = clean_tag_name(tag)
            row = existing.get((media_id, name))
            if row is not None and _is_original(*row):
                out.append((media_id, name, float(confidence)))
    return out


# -- the run ---------------------------------------------------------------------------------------
@dataclass
class AutotagResult:
    weights: dict[str, float]
    coverage: dict[str, int]  # tagged media each expert covers (what its weight is measured on)
    hits: dict[str, int]
    media: int  # media voted on
    tagged: int  # media with active tags
    suggested: int  # experts-voting suggestions standing after this vote
    changed: int  # ... of which rows written (new, or a new confidence)
    removed: int  # earlier experts-voting suggestions the vote no longer proposes (on media a trusted expert covers)
    rejected: int  # proposals an editor had rejected on that media: they stay rejected
    originals_confirmed: int = 0  # active uploader / import tags of the media voted on, now at 1.0 ...
    originals_lowered: int = 0  # ... and at 0.7 (no expert confirms them)
    originals_changed: int = 0  # ... of which rows written (their confidence changed)
    kept: int = 0  # earlier experts-voting suggestions left pending that this vote did not restate
    event_id: int | None = None  # the run's audit event (the number `giflens undo` takes); None: nothing written
    notes: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        weights = ", ".join(f"{n} {w:.2f}" for n, w in self.weights.items())
        return (f"experts voting over {self.media} media: {self.suggested} suggestion(s) ({self.changed} written, "
                f"{self.removed} stale removed); original tags: {self.originals_confirmed} confirmed (1.0), "
                f"{self.originals_lowered} lowered (0.7), {self.originals_changed} written; weights {weights}")

    def line(self) -> str:
        """The counts, then "event=12" ("event=none" when nothing was written), then the weights: the
        event where `giflens predict` puts it, so a run can be undone without looking it up in history."""
        return " ".join([f"media={self.media}", f"tagged={self.tagged}", f"suggested={self.suggested}",
                         f"changed={self.changed}", f"removed={self.removed}", f"rejected_kept={self.rejected}",
                         f"originals_confirmed={self.originals_confirmed}",
                         f"originals_lowered={self.originals_lowered}",
                         f"originals_changed={self.originals_changed}",
                         f"event={self.event_id if self.event_id is not None else 'none'}",
                         *(f"weight_{n}={w:.4f}" for n, w in self.weights.items())])


def _at_most(x: float) -> str:
    """x in [0, 1] written with two decimals, more when those would read 0.00, rounded down: a bound
    printed as advice must not round up past the value that works (1/7 is 0.14, 1/500 is 0.002)."""
    for places in range(2, 10):
        scale = 10 ** places
        shown = math.floor(x * scale + 1e-9) / scale
        if shown > 0:
            return f"{shown:.{places}f}"
    return f"{x:.2g}"


def _fraction(x: float) -> str:
    """A min_frequency as given: two decimals unless that would change it (0.005 is not 0.01)."""
    return f"{x:.2f}" if math.isclose(round(x, 2), x, abs_tol=1e-12) else f"{x:g}"


def untrusted_experts_hint(k: int, min_frequency: float, tagged: int | None = None) -> str:
    """Why a vote comes back empty when every weight is 0, and the knobs that change it: the experts
    learn only from tags several GIFs share, and the bound decides how many neighbours must agree.

    tagged: the media with tags. Leave-one-out, a tagged media item has at most tagged - 1 tagged
    neighbours, and the tagger divides by the neighbours it found, not by k: with k=10 and three
    tagged GIFs a tag needs min_frequency x 2 of them, and the bound that lets one neighbour vote is 1/2."""
    n = k if tagged is None else max(1, min(k, tagged - 1))
    need = max(1, math.ceil(min_frequency * n - 1e-9))
    nearest = f"{n} nearest tagged media" + (f" (k={k}, but only {tagged} media are tagged)" if n < k else "")
    hint = ("no suggestion: every expert's weight is 0 (none proposed a correct tag for a tagged media item, "
            f"leave-one-out); experts learn from tags several media share, and with k={k} and min_frequency "
            f"{_fraction(min_frequency)} a tag needs {need} of a media item's {nearest}")
    if need > 1:
        hint += f"; min_frequency {_at_most(1 / n)} lets a single neighbour vote"
    return hint


def kept_suggestions_note(kept: int) -> str:
    """Why a run that suggests nothing new leaves suggestions pending: they are an earlier run's, on
    media no expert with a weight covers, and no vote is not a vote against."""
    return (f"nothing new suggested: {kept} earlier suggestion(s) kept, pending review (no expert with a weight "
            "covers their media this time, and no vote is not a vote against)")


def trusted_media(tagger: Any, modalities: Mapping[str, tuple[list[str], np.ndarray]],
                  identity: Mapping[str, list[str]] | None) -> set[int]:
    """The media some expert with a positive weight covers: the only ones the vote had a say on.

    Why: a suggestion left from an earlier run is removed when the vote no longer proposes it, but an
    expert with weight 0 proposes nothing, so counting the media it covers would read its silence as a
    vote against (every pending suggestion deleted by a run in which no expert earned a weight). An
    expert covers every media item it has a row for (vector modalities) or faces for (identity), so the
    coverage is read from the inputs rather than from a second kNN pass over them."""
    coverage: dict[str, dict[str, dict[str, float]]] = {
        name: dict.fromkeys(media_ids, {}) for name, (media_ids, _) in modalities.items()}
    if identity is not None:
        coverage[IDENTITY] = dict.fromkeys(identity, {})
    covered = {m for media_ids in coverage.values() for m in media_ids}
    return {int(m) for m in covered if tagger.covering_weight(coverage, m) > 0}


def autotag(store: sessionmaker[Session], editor: str, *, gif_model: str | None = None, text: str | None = "tags",
            text_embedder: Any | None = None, k: int = 10, min_frequency: float = 0.2, top: int = DEFAULT_TOP,
            min_confidence: float = 0.0, on_progress: Progress | None = None,
            on_step: OnStep | None = None) -> AutotagResult:
    """Fit the experts on the store's tagged media, vote for every ok media item, store the suggestions
    and set the original (uploader / import) tags' confidences to 1.0 or 0.7, in one audited operation.

    text: "tags", "weak_labels" or None (no text expert, MiniLM not loaded; see the module docstring);
    text_embedder reuses a loaded MiniLM.
    on_progress(done, total) counts media voted on, the count the result and its operation report (a bar
    that also counted fitting and writing as steps read "68 / 68" beside "experts voting over 66 media");
    on_step(text) says what is being done meanwhile: "reading the store", "loading the text model (MiniLM)",
    "embedding the tags of 12 media", "fitting the experts", "voting on 12 media", "writing the suggestions".
    """
    from models.tagger import ExpertsVotingTagger, TaggerError

    step = on_step or (lambda doing: None)
    if not isinstance(top, int) or top < 1:
        raise ValidationError(f"top must be a positive number of suggestions per media, got {top!r}")
    if not 0.0 <= float(min_confidence) <= 1.0:
        raise ValidationError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
    try:  # bad parameters are refused before the store is read or MiniLM is loaded (seconds)
        ExpertsVotingTagger(k=k, min_frequency=min_frequency)._check_params()
    except (TaggerError, TypeError, ValueError) as exc:
        raise ValidationError(f"experts voting: {exc}") from exc
    step("reading the store")
    inputs = read_inputs(store, gif_model)
    if not inputs.visual and not inputs.identity:
        raise ValidationError("no ingested media with GIF embeddings or faces: ingest media first")
    if not any(inputs.tags.values()):
        raise ValidationError("no media carries an active tag: experts voting learns from tagged media; "
                              "import or add some tags first")
    ids = [str(m) for m in covered_media(inputs, text)]
    total = len(ids)
    if on_progress is not None:  # the total as soon as it is known: the steps below take seconds
        on_progress(0, total)
    words = text_sources(inputs, text)
    if words and text_embedder is None:
        from models.registry import create_model

        step("loading the text model (MiniLM)")
        text_embedder = create_model("minilm-l6-v2")
    if words:
        step(f"embedding the {'tags' if text == 'tags' else 'weak labels'} of {len(words)} media")
    modalities, tags, identity = build_modalities(inputs, text_embedder, text)
    step("fitting the experts")
    notes: list[str] = []
    try:
        tagger = ExpertsVotingTagger(k=k, min_frequency=min_frequency).fit(
            modalities, tags, identity_tags=identity)
        remeasured: set[str] = set()
        said: set[str] = set()
        if text == "tags" and TEXT in tagger.weights_:  # its fit-time weight saw the answer: measure it without
            step("measuring the text expert without each media's own tags")
            weight, measured, hits = text_weight_without_own_tags(tagger, words, text_embedder)
            tagger.weights_[TEXT], tagger.coverage_[TEXT], tagger.hits_[TEXT] = weight, measured, hits
            remeasured.add(TEXT)
            if not measured and words:
                notes.append(unmeasured_text_note(words))  # names the shared tags itself
                said.add(TEXT)
        notes += shared_tags_notes(tagger, remeasured, said)
        step(f"voting on {len(ids)} media")
        predicted: dict[str, list[tuple[str, float]]] = {}
        for start in range(0, len(ids), PREDICT_CHUNK):
            predicted.update(tagger.predict(ids[start:start + PREDICT_CHUNK], top=None))
            if on_progress is not None:
                on_progress(min(start + PREDICT_CHUNK, total), total)
    except TaggerError as exc:
        raise ValidationError(f"experts voting refused the store's data: {exc}") from exc
    items, rejected = new_suggestions(predicted, inputs.existing, top, float(min_confidence))
    # Only media some trusted expert (weight > 0) covers had a vote: the tagger lists no original tags for
    # the others (nor for any media when every weight is 0), so they keep their confidences. Lowering
    # them to 0.7 would read as a vote against them; no vote is not a vote against.
    originals = original_confidences(predicted, inputs.existing)
    voted = trusted_media(tagger, modalities, identity)  # stale suggestions are dropped only where a vote was cast
    result = AutotagResult(dict(tagger.weights_), dict(tagger.coverage_), dict(tagger.hits_), len(ids),
                           sum(1 for t in inputs.tags.values() if t), 0, 0, 0, rejected)
    step("writing the suggestions")
    with run_operation(store, editor, "experts_voting") as op:
        result.suggested, result.changed, result.removed = _store_suggestions(op, items, voted)
        result.originals_confirmed, result.originals_lowered, result.originals_changed = _store_original_confidences(
            op, originals, float(tagger.confirmed_confidence))
        pending = op.session.scalar(select(func.count()).select_from(MediaTag).where(
            MediaTag.source == SOURCE, MediaTag.status == "suggested"))
        result.kept = max(0, int(pending or 0) - result.suggested)
        op.summary = result.summary
    result.event_id = op.result.event_id
    result.notes += notes
    if not any(result.weights.values()):
        result.notes.append(untrusted_experts_hint(k, float(min_frequency), result.tagged))
    if result.changed == 0 and result.kept:
        result.notes.append(kept_suggestions_note(result.kept))
    if on_progress is not None:
        on_progress(total, total)
    return result


def _store_suggestions(op: Operation, items: list[tuple[int, str, float]], voted: set[int]) -> tuple[int, int, int]:
    """Write the suggestions and drop the stale ones, re-reading the rows under the operation's lock so a
    tag an editor added meanwhile is never overwritten; returns (suggestions standing, rows written, removed)."""
    ids = tag_ids(op.session, {t for _, t, _ in items})
    current = {}
    for chunk in _chunks([(m, ids[t]) for m, t, _ in items]):
        current.update(op.load("media_tag", chunk))
    ours = [(m, t, c) for m, t, c in items
            if (row := current[(m, ids[t])]) is None or (row["source"], row["status"]) == (SOURCE, "suggested")]
    written = apply_tags(op, ours, SOURCE, "suggested", keep_editor_tags=True) if ours else 0
    keep = {(m, ids[t]) for m, t, _ in ours}
    old = []
    voted_ids = sorted(voted)
    for chunk in _chunks(voted_ids):
        old += op.session.execute(select(MediaTag.media_id, MediaTag.tag_id).where(
            MediaTag.media_id.in_(chunk), MediaTag.source == SOURCE, MediaTag.status == "suggested")).all()
    stale = [tuple(k) for k in old if tuple(k) not in keep]
    rows = {}
    for chunk in _chunks(stale):
        rows.update(op.load("media_tag", chunk))
    doomed = {k: r for k, r in rows.items() if r is not None and (r["source"], r["status"]) == (SOURCE, "suggested")}
    if doomed:
        op.delete("media_tag", doomed)
        for m, _ in doomed:
            op.concern(f"media:{m}")
    return len(ours), written, len(doomed)


def _store_original_confidences(op: Operation, items: list[tuple[int, str, float]],
                                confirmed_confidence: float) -> tuple[int, int, int]:
    """Set the original tags' confidences, re-reading the rows under the operation's lock: a row an
    editor took over (source "editor"), rejected or removed since the vote read the store is left
    alone. Only rows whose confidence changes are written (each a new version, with before / after in
    the audit event, so undo restores the old confidence). Returns (confirmed, lowered, rows written)."""
    if not items:
        return 0, 0, 0
    ids = tag_ids(op.session, {t for _, t, _ in items}, create=False)
    wanted = {(m, ids[t]): c for m, t, c in items}
    current = op.load("media_tag", list(wanted))
    confirmed = lowered = 0
    changes: dict[tuple[int, int], dict[str, Any]] = {}
    for key, confidence in wanted.items():
        row = current[key]
        if row is None or not _is_original(row["source"], row["status"]):
            continue
        if confidence >= confirmed_confidence:
            confirmed += 1
        else:
            lowered += 1
        if not math.isclose(float(row["confidence"]), confidence, abs_tol=1e-9):
            changes[key] = {"confidence": confidence, "editor": op.editor}
            op.concern(f"media:{key[0]}")
    if changes:
        op.update("media_tag", changes, current)
    return confirmed, lowered, len(changes)

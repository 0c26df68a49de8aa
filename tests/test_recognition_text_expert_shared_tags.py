"""Regression tests of audited bugs in recognition and tagging.

1. The text expert over tags earned its weight on a tag every media shares: 64 LFW photos tagged
   `<name>;person` gave text 0.6250 (40 of 64, all from holding out `person`, which every neighbour
   carries) and 64 suggestions, each another person's name. A suggestion is a tag the media lacks.
2. fit_centroid kept the first fit's CalibrationWarning ("far=nan ... capped at 0.0430") after
   calibrate() had replaced that threshold: predict printed a note contradicting its summary.
3. retrain refreshed predictions without the data folder, so replacing another face model's
   predictions went unsaid (predict says it).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import session_dir

from labeling.auto_tagging import TEXT, held_out_tag_queries, shared_tags, text_weight_without_own_tags
from labeling.ingest import ingest
from labeling.recognition import TrainingSet, fit_centroid, refresh_predictions, retrain
from models.celebrity_classifier import CalibrationWarning, CentroidKnnClassifier
from models.settings import Settings
from models.tagger import ExpertsVotingTagger
from test_recognition_loop import LFW, build_loop_store

DLIB = "dlib-resnet-v1"
FACENET = "facenet-vggface2"


@pytest.fixture(scope="session")
def loop_data_dir(tmp_path_factory) -> Path:
    """The embedding cache test_recognition_loop.py fills (same folder: each file is inferred once per session)."""
    return session_dir(tmp_path_factory, "giflens-recognition-data")


# -- 1. the text expert is not weighed on a tag it could never suggest ----------------------------------
def test_a_tag_every_media_carries_is_never_held_out():
    words = {1: ["ann", "person"], 2: ["bob", "person"], 3: ["cy", "person", "tennis"], 4: ["dee", "person", "golf"]}
    assert shared_tags(words) == set()  # four media: a tag on all of them is the library's subject (SHARED_MIN_MEDIA)
    assert shared_tags({**words, **{i: [f"x{i}", "person"] for i in range(5, 11)}}) == {"person"}  # ten: shared
    assert held_out_tag_queries(words, frozenset({"person"})) == {3: ("tennis", ["cy", "person"]),
                                                               4: ("dee", ["person", "golf"])}
    assert held_out_tag_queries(words) == {1: ("person", ["ann"]), 2: ("bob", ["person"]),  # the old rule
                                           3: ("cy", ["person", "tennis"]), 4: ("person", ["dee", "golf"])}


def test_a_tag_nearly_every_media_carries_is_shared_too():
    """One media item without the shared tag (a photo tagged with a name only, or another's `dog`) brought
    the whole inflated weight back when only a tag on every media counted as shared."""
    from labeling.auto_tagging import unmeasured_text_note

    words = {m: [f"name-{m // 8}", "person"] for m in range(1, 65)}
    words[65] = ["someone-else", "dog"]
    assert shared_tags(words) == {"person"}  # 64 of 65
    assert set(held_out_tag_queries(words, shared_tags(words))) == {65}
    words[64] = ["name-8"]
    assert shared_tags(words) == {"person"}  # 63 of 65
    assert shared_tags({1: ["a", "b"], 2: ["a", "c"], 3: ["c", "d"]}) == frozenset()  # 2 of 3 is no "nearly"
    note = unmeasured_text_note({m: [f"name-{m}", "reaction"] for m in range(1, 64)})
    assert note == ("text expert not measured: none of the 63 tagged media items it covers has 2 tags besides "
                    "'reaction' (on 90% or more of them) to hold one out, so its weight is 0")


@pytest.mark.slow
def test_a_name_plus_a_shared_tag_earns_the_text_expert_no_weight():
    """The auditor's tags: 8 LFW people x 8 photos, each `<name>;person`. Holding out `person` (what every
    neighbour carries) was a hit on every media that held it out: weight 0.625, and the expert then
    suggested another person's name on every photo. With only the name left to miss, a photo has
    nothing left to ask with: nothing is measured and the weight is 0 (so nothing is written)."""
    from models.registry import create_model

    minilm = create_model("minilm-l6-v2")
    people = sorted(p.name for p in LFW.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 10)[:8]
    names = [p.lower().replace("_", "-") for p in people]
    words = {i * 8 + j + 1: [name, "person"] for i, name in enumerate(names) for j in range(8)}
    ids = sorted(words)
    vectors = np.asarray(minilm.embed([", ".join(words[m]) for m in ids]), dtype=np.float32)
    tagger = ExpertsVotingTagger(k=10, min_frequency=0.1).fit({TEXT: ([str(m) for m in ids], vectors)},
                                                             {str(m): words[m] for m in ids})
    assert tagger.weights_[TEXT] == 1.0  # asked with its own tags, every photo finds its own name
    assert text_weight_without_own_tags(tagger, words, minilm) == (0.0, 0, 0)  # was (0.625, 64, 40)
    words[1] = [names[0]]  # one photo without `person`: still no weight (was 0.619 with "every media" shared)
    vectors[0] = minilm.embed([names[0]])[0]
    tagger = ExpertsVotingTagger(k=10, min_frequency=0.1).fit({TEXT: ([str(m) for m in ids], vectors)},
                                                             {str(m): words[m] for m in ids})
    assert text_weight_without_own_tags(tagger, words, minilm) == (0.0, 0, 0)

    # a tag that travels with others still earns its weight where a media has two tags it could lack
    sport = {1: ["tennis", "serena williams", "person"], 2: ["tennis", "venus williams", "person"],
             3: ["golf", "tiger woods", "person"], 4: ["golf", "phil mickelson", "person"]}
    ids = sorted(sport)
    vectors = np.asarray(minilm.embed([", ".join(sport[m]) for m in ids]), dtype=np.float32)
    tagger = ExpertsVotingTagger(k=1, min_frequency=1.0).fit({TEXT: ([str(m) for m in ids], vectors)},
                                                            {str(m): sport[m] for m in ids})
    weight, measured, hits = text_weight_without_own_tags(tagger, sport, minilm)
    assert measured == 4 and hits == 2 and weight == 0.5  # the sport, proposed for the media holding it out


# -- 2. a calibrated threshold carries no note of the fit it replaced -----------------------------------
def _few_classes(seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """3 classes of 6 faces (30 impostor distances: the fit warns and caps) and 120 faces of strangers."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3 + 40, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def around(c: np.ndarray, n: int) -> np.ndarray:
        v = c + 0.05 * rng.normal(size=(n, 128))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    x = np.concatenate([around(c, 6) for c in centres[:3]])
    y = [str(i) for i in range(3) for _ in range(6)]
    unknown = np.concatenate([around(c, 3) for c in centres[3:]])
    return x, y, unknown


def _training_set(x: np.ndarray, y: list[str]) -> TrainingSet:
    n = len(y)
    classes = np.array([int(c) + 1 for c in y])
    return TrainingSet(DLIB, np.arange(1, n + 1), np.arange(1, n + 1), classes, x,
                       {int(c): f"person {c}" for c in set(classes.tolist())})


def test_fit_centroid_keeps_only_the_calibration_notes_when_it_calibrates():
    x, y, unknown = _few_classes()
    with pytest.warns(CalibrationWarning, match="far=nan"):
        CentroidKnnClassifier().fit(x, y, DLIB)  # the first fit alone warns
    data = _training_set(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)  # nothing reaches stderr either
        clf = fit_centroid(data, unknown)
    assert not np.isnan(clf.false_accept_rate_)  # calibrate() measured the rate
    assert not any("far=nan" in n or "impostor distances" in n for n in data.notes), data.notes
    assert data.notes == [f"open-set threshold calibrated with {len(unknown)} face(s) editors marked unknown"]

    uncalibrated = _training_set(x, y)
    fit_centroid(uncalibrated, None)  # no calibration: the fit's threshold stands, and so does its note
    assert len(uncalibrated.notes) == 1 and "far=nan" in uncalibrated.notes[0]


# -- 3. retrain says whose predictions it replaces, as predict does -------------------------------------
@pytest.mark.slow
def test_retrain_says_it_replaced_another_face_models_predictions(loop_data_dir, tmp_path):
    """Faces embedded by dlib and by facenet (random weights: only the bookkeeping is tested). The facenet
    classifier predicts the undecided faces; retrain on dlib then replaces those predictions (a face keeps
    one) and says so, as `giflens predict` does; it said nothing, having no data folder to look them up in."""
    import torch

    from models.registry import create_model

    people = {"Ariel_Sharon": 6, "Hugo_Chavez": 6, "Colin_Powell": 6}
    extra = ["Ariel_Sharon/Ariel_Sharon_0007.jpg", "Hugo_Chavez/Hugo_Chavez_0007.jpg",
             "Colin_Powell/Colin_Powell_0007.jpg", "Vladimir_Putin/Vladimir_Putin_0001.jpg"]
    loop = build_loop_store(loop_data_dir, f"sqlite:///{tmp_path / 'two.db'}", people=people, extra=extra,
                            strangers=[], gifs=[])
    data = tmp_path / "data"  # this store's models (the cache folder is the session's)
    data.mkdir()
    torch.manual_seed(0)
    weights = tmp_path / "vggface2-random.pt"
    torch.save(create_model(FACENET, pretrained=False)._net.state_dict(), weights)
    facenet = Settings(data_dir=data, database_url=loop.url, face_model=FACENET, facenet_weights=weights)
    # the same photos (the same media, by content), embedded by the second model
    ingest([*(p for person in people for p in sorted((LFW / person).glob("*.jpg"))[:6]), *(LFW / e for e in extra)],
           facenet, store=loop.store)

    first = refresh_predictions(loop.store, FACENET, data_dir=data, editor="bob")
    assert first.faces > 0
    result = retrain(loop.store, data, DLIB, editor="bob", epochs=2)
    replaced = [n for n in result.notes if f"(a classifier of {FACENET} embeddings): replaced" in n]
    assert len(replaced) == 1, result.notes
    assert replaced[0].endswith(f"replaced by this run's on {DLIB} (a face keeps one prediction, the latest)")
    assert result.refresh.notes == replaced
